//! The bridge actor: drains a bridge buffer into a sink in batches, retrying with backoff.
//!
//! The drain loop is a single token passed around by the actor itself: a `Pump` step waits
//! (at most `idle_poll_interval`) for a batch and sends it; success or an idle wait casts the
//! next `Pump`, a transient failure schedules a `Retry` of the same batch after a backoff.
//! Because exactly one step is ever in flight, batches reach the sink in buffer order and a
//! failed batch is never overtaken. Control messages such as [`BridgeMessage::GetCounters`]
//! are handled between steps, so they wait at most one step.

use std::{marker::PhantomData, num::NonZeroUsize, time::Duration};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use starling_core::codec::Publish;

use crate::{
    buffer::BridgeBufferReceiver,
    counters::BridgeCounters,
    sink::{BridgeSink, SinkError},
};

/// Batching, timeout and retry settings of one bridge actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeActorConfig {
    /// Name of the bridge, used in logs.
    pub bridge_name: String,
    /// Most messages handed to the sink in one call.
    pub max_batch_size: NonZeroUsize,
    /// How long one call to the sink may take before it counts as a transient failure.
    pub send_timeout: Duration,
    /// Backoff before the first retry of a failed batch; doubled on each further failure.
    pub retry_initial_backoff: Duration,
    /// Upper bound of the retry backoff.
    pub retry_max_backoff: Duration,
    /// Longest time one drain step waits for a message, which is also the longest time a
    /// control message or a stop request waits behind an idle drain step.
    pub idle_poll_interval: Duration,
}

impl BridgeActorConfig {
    /// Returns settings with small batches and short timeouts.
    #[cfg(any(test, feature = "testsuite"))]
    pub fn for_test() -> BridgeActorConfig {
        BridgeActorConfig {
            bridge_name: "test".to_owned(),
            max_batch_size: NonZeroUsize::new(4).expect("4 is not zero"),
            send_timeout: Duration::from_secs(5),
            retry_initial_backoff: Duration::from_millis(100),
            retry_max_backoff: Duration::from_secs(2),
            idle_poll_interval: Duration::from_millis(50),
        }
    }
}

/// Drains one bridge buffer into one sink of type `S`.
///
/// Spawn it with `Actor::spawn_linked` under the node's supervisor. It stops by itself once
/// every [`crate::BridgeBuffer`] handle is dropped and the buffer is drained; a batch still
/// failing then is retried until the supervisor kills the actor.
pub struct BridgeActor<S> {
    config: BridgeActorConfig,
    sink_type: PhantomData<fn() -> S>,
}

impl<S> BridgeActor<S> {
    /// Creates the actor with its immutable settings.
    pub fn new(config: BridgeActorConfig) -> BridgeActor<S> {
        BridgeActor {
            config,
            sink_type: PhantomData,
        }
    }
}

/// What a bridge actor starts with.
pub struct BridgeArgs<S> {
    /// The sink the actor writes to; owned by the actor from now on.
    pub sink: S,
    /// The receiving half of the bridge's buffer.
    pub buffer_receiver: BridgeBufferReceiver,
}

/// Mutable state of a bridge actor.
pub struct BridgeState<S> {
    sink: S,
    buffer_receiver: BridgeBufferReceiver,
    /// The batch being sent; non-empty exactly while a `Retry` step is scheduled or running.
    pending_batch: Vec<Publish>,
    /// Failures of `pending_batch` in a row, which sets the next backoff.
    num_consecutive_failures: u32,
    num_sent_messages: u64,
    num_failed_sends: u64,
}

/// Messages of a bridge actor.
#[derive(Debug)]
pub enum BridgeMessage {
    /// Replies with a snapshot of the bridge's counters.
    GetCounters {
        /// Receives the snapshot.
        reply: RpcReplyPort<BridgeCounters>,
    },
    /// A step of the actor's own drain loop; only the actor itself creates one.
    Step(DrainStep),
}

/// An opaque step of the drain loop, so no other code can start a second loop.
#[derive(Debug)]
pub struct DrainStep(StepKind);

#[derive(Debug)]
enum StepKind {
    /// Take the next batch from the buffer and send it.
    Pump,
    /// Send the pending batch again after a failure.
    Retry,
}

impl<S: BridgeSink> Actor for BridgeActor<S> {
    type Msg = BridgeMessage;
    type State = BridgeState<S>;
    type Arguments = BridgeArgs<S>;

    async fn pre_start(
        &self,
        myself: ActorRef<BridgeMessage>,
        args: BridgeArgs<S>,
    ) -> Result<BridgeState<S>, ActorProcessingErr> {
        myself.cast(BridgeMessage::Step(DrainStep(StepKind::Pump)))?;
        Ok(BridgeState {
            sink: args.sink,
            buffer_receiver: args.buffer_receiver,
            pending_batch: Vec::with_capacity(self.config.max_batch_size.get()),
            num_consecutive_failures: 0,
            num_sent_messages: 0,
            num_failed_sends: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<BridgeMessage>,
        message: BridgeMessage,
        state: &mut BridgeState<S>,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BridgeMessage::GetCounters { reply } => {
                // The caller may have timed out and gone; that is its business.
                let _ = reply.send(counters(state));
                Ok(())
            }
            BridgeMessage::Step(DrainStep(StepKind::Pump)) => self.pump(&myself, state).await,
            BridgeMessage::Step(DrainStep(StepKind::Retry)) => {
                debug_assert!(
                    !state.pending_batch.is_empty(),
                    "retry without a pending batch"
                );
                self.send_pending_batch(&myself, state).await
            }
        }
    }
}

impl<S: BridgeSink> BridgeActor<S> {
    /// Waits briefly for the next batch and sends it, or stops once the buffer has ended.
    async fn pump(
        &self,
        myself: &ActorRef<BridgeMessage>,
        state: &mut BridgeState<S>,
    ) -> Result<(), ActorProcessingErr> {
        debug_assert!(
            state.pending_batch.is_empty(),
            "pump while a batch is pending"
        );
        let recv_batch = state
            .buffer_receiver
            .recv_batch(&mut state.pending_batch, self.config.max_batch_size);
        match tokio::time::timeout(self.config.idle_poll_interval, recv_batch).await {
            Err(_idle) => {
                myself.cast(BridgeMessage::Step(DrainStep(StepKind::Pump)))?;
                Ok(())
            }
            Ok(0) => {
                tracing::info!(bridge = %self.config.bridge_name, "bridge buffer closed and drained, stopping");
                myself.stop(Some("bridge buffer closed".to_owned()));
                Ok(())
            }
            Ok(_num_received) => self.send_pending_batch(myself, state).await,
        }
    }

    /// Sends the pending batch, then continues the loop with a `Pump` or a delayed `Retry`.
    async fn send_pending_batch(
        &self,
        myself: &ActorRef<BridgeMessage>,
        state: &mut BridgeState<S>,
    ) -> Result<(), ActorProcessingErr> {
        let num_messages = state.pending_batch.len();
        let send_result = match tokio::time::timeout(
            self.config.send_timeout,
            state.sink.send_batch(&state.pending_batch),
        )
        .await
        {
            Ok(send_result) => send_result,
            Err(_elapsed) => Err(SinkError::Transient {
                reason: format!("send timed out after {:?}", self.config.send_timeout),
            }),
        };
        let metrics = &state.buffer_receiver.metrics;
        match send_result {
            Ok(()) => {
                state.num_sent_messages += num_messages as u64;
                metrics.sent_messages.increment(num_messages as u64);
                state.pending_batch.clear();
                state.num_consecutive_failures = 0;
                myself.cast(BridgeMessage::Step(DrainStep(StepKind::Pump)))?;
            }
            Err(SinkError::Rejected { reason }) => {
                state.num_failed_sends += 1;
                metrics.failed_sends.increment(1);
                state.buffer_receiver.record_rejected(num_messages);
                tracing::warn!(bridge = %self.config.bridge_name, num_messages, %reason, "sink rejected batch, dropping it");
                state.pending_batch.clear();
                state.num_consecutive_failures = 0;
                myself.cast(BridgeMessage::Step(DrainStep(StepKind::Pump)))?;
            }
            Err(SinkError::Transient { reason }) => {
                state.num_failed_sends += 1;
                metrics.failed_sends.increment(1);
                state.num_consecutive_failures = state.num_consecutive_failures.saturating_add(1);
                let backoff = retry_backoff(
                    self.config.retry_initial_backoff,
                    self.config.retry_max_backoff,
                    state.num_consecutive_failures,
                );
                tracing::warn!(
                    bridge = %self.config.bridge_name,
                    num_messages,
                    num_consecutive_failures = state.num_consecutive_failures,
                    ?backoff,
                    %reason,
                    "sink send failed, retrying"
                );
                // The timer task ends on its own; it fails harmlessly if the actor stopped.
                let _retry_timer =
                    myself.send_after(backoff, || BridgeMessage::Step(DrainStep(StepKind::Retry)));
            }
        }
        Ok(())
    }
}

/// Returns the counters of the actor owning `state`.
fn counters<S>(state: &BridgeState<S>) -> BridgeCounters {
    BridgeCounters {
        num_sent_messages: state.num_sent_messages,
        num_dropped_messages: state.buffer_receiver.num_dropped(),
        num_failed_sends: state.num_failed_sends,
        num_buffered_messages: state.buffer_receiver.len() as u64,
    }
}

/// Returns the backoff after `num_consecutive_failures` failures (at least 1): `initial`,
/// doubled per further failure, capped at `max`.
fn retry_backoff(initial: Duration, max: Duration, num_consecutive_failures: u32) -> Duration {
    let num_doublings = num_consecutive_failures.saturating_sub(1).min(31);
    initial.saturating_mul(1u32 << num_doublings).min(max)
}

#[cfg(test)]
mod tests;
