//! The address of a registry shard that counts its mailbox: every send through it adds one to
//! the registry's [`MailboxDepth`] and the shard's handler subtracts one, since ractor's
//! unbounded mailbox does not tell its length. `ractor::call_t!` accepts a [`ShardRef`] as it
//! accepts an `ActorRef`, so call sites read the same.

use ractor::{rpc::CallResult, ActorRef, MessagingErr, RpcReplyPort};

use crate::{metrics::MailboxDepth, registry::RegistryMessage};

/// A registry shard's address with its mailbox depth counted.
pub(crate) struct ShardRef {
    actor: ActorRef<RegistryMessage>,
    depth: MailboxDepth,
}

impl ShardRef {
    pub(crate) fn new(actor: ActorRef<RegistryMessage>, depth: MailboxDepth) -> ShardRef {
        ShardRef { actor, depth }
    }

    /// Sends without waiting for an answer (`ActorRef::cast`).
    pub(crate) fn cast(
        &self,
        message: RegistryMessage,
    ) -> Result<(), MessagingErr<RegistryMessage>> {
        self.depth.sent();
        let result = self.actor.cast(message);
        if result.is_err() {
            self.depth.taken();
        }
        result
    }

    /// Sends a request and waits for its answer (`ActorRef::call`). An `Err` means the message
    /// was not delivered; a timeout is `Ok(CallResult::Timeout)`, and the shard still takes the
    /// message later.
    pub(crate) async fn call<TReply, TMsgBuilder>(
        &self,
        msg_builder: TMsgBuilder,
        timeout_option: Option<ractor::concurrency::Duration>,
    ) -> Result<CallResult<TReply>, MessagingErr<RegistryMessage>>
    where
        TMsgBuilder: FnOnce(RpcReplyPort<TReply>) -> RegistryMessage,
        TReply: Send + 'static,
    {
        self.depth.sent();
        let result = self.actor.call(msg_builder, timeout_option).await;
        if result.is_err() {
            self.depth.taken();
        }
        result
    }
}
