//! The topic shard actor: single writer of one shard's subscriptions and retained messages.

use std::{sync::Arc, time::Duration};

use bytestring::ByteString;
use metrics::gauge;
use parking_lot::RwLock;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;

use crate::{
    message::{Message, SessionId},
    router::{retained::RetainedTree, table::SubscriptionTable, Subscriber},
    topic::TopicFilter,
};

/// The data of one shard, read by publishers under the read lock, written only by the actor.
#[derive(Default)]
pub(crate) struct ShardTable {
    pub(crate) subscriptions: SubscriptionTable,
    pub(crate) retained: RetainedTree,
}

/// Requests to a topic shard.
///
/// The mailbox is unbounded (ractor), so every sender is bounded elsewhere: sessions `call`
/// and wait for the reply (at most one request in flight per session), and the registry sends
/// at most one `RemoveSession` per ended session.
pub(crate) enum ShardMessage {
    /// Adds or replaces a subscription; replies whether it replaced one.
    Subscribe(TopicFilter, Subscriber, RpcReplyPort<bool>),
    /// Removes a subscription; replies whether it existed.
    Unsubscribe(TopicFilter, SessionId, RpcReplyPort<bool>),
    /// Removes the subscriptions of an ended session.
    RemoveSession {
        session_id: SessionId,
        filters: Vec<TopicFilter>,
    },
    /// Sets (`Some`) or clears (`None`) a retained message.
    SetRetained(ByteString, Option<Arc<Message>>, RpcReplyPort<()>),
    /// Periodic housekeeping: drops expired retained messages, updates gauges.
    Housekeeping,
}

/// One topic shard.
pub(crate) struct TopicShard {
    pub(crate) shard_idx: usize,
}

/// How often a shard purges expired retained messages.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(5);

impl Actor for TopicShard {
    type Msg = ShardMessage;
    type State = Arc<RwLock<ShardTable>>;
    type Arguments = Arc<RwLock<ShardTable>>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        table: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(HOUSEKEEPING_INTERVAL, || ShardMessage::Housekeeping);
        Ok(table)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        table: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMessage::Subscribe(filter, subscriber, reply) => {
                let replaced = table.write().subscriptions.insert(
                    &filter.filter,
                    filter.share_group.as_deref(),
                    subscriber,
                );
                let _ = reply.send(replaced);
            }
            ShardMessage::Unsubscribe(filter, session_id, reply) => {
                let removed = table.write().subscriptions.remove(
                    &filter.filter,
                    filter.share_group.as_deref(),
                    session_id,
                );
                let _ = reply.send(removed);
            }
            ShardMessage::RemoveSession {
                session_id,
                filters,
            } => {
                let mut table = table.write();
                for filter in filters {
                    table.subscriptions.remove(
                        &filter.filter,
                        filter.share_group.as_deref(),
                        session_id,
                    );
                }
            }
            ShardMessage::SetRetained(topic, message, reply) => {
                table.write().retained.set(&topic, message);
                let _ = reply.send(());
            }
            ShardMessage::Housekeeping => {
                let mut table = table.write();
                table.retained.purge_expired(Instant::now());
                let shard = self.shard_idx.to_string();
                gauge!("starling_retained_messages", "shard" => shard.clone())
                    .set(table.retained.len() as f64);
                gauge!("starling_subscriptions", "shard" => shard)
                    .set(table.subscriptions.len() as f64);
            }
        }
        Ok(())
    }
}
