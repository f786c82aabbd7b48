//! The bounded buffer between the router and a bridge actor.
//!
//! Model: vector's sink buffers, `max_events` plus a `when_full` policy. The router holds
//! [`BridgeBuffer`] handles and pushes into them; the bridge actor owns the
//! [`BridgeBufferReceiver`]. When every handle is dropped the actor drains what is left and stops.

use std::{
    num::NonZeroUsize,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use starling_core::codec::Publish;
use tokio::sync::mpsc;

use crate::counters::BridgeMetrics;

/// What a push into a full buffer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// The new message is discarded and counted; the publisher never waits.
    DropNewest,
    /// The publisher waits until the bridge makes room, back-pressuring everything it publishes.
    Block,
}

/// Size and overflow policy of one bridge buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeBufferConfig {
    /// Most messages the buffer holds.
    pub max_events: NonZeroUsize,
    /// What a push into a full buffer does.
    pub when_full: WhenFull,
}

impl BridgeBufferConfig {
    /// Returns a small `drop_newest` buffer.
    #[cfg(any(test, feature = "testsuite"))]
    pub fn for_test() -> BridgeBufferConfig {
        BridgeBufferConfig {
            max_events: NonZeroUsize::new(16).expect("16 is not zero"),
            when_full: WhenFull::DropNewest,
        }
    }
}

/// Result of a push that did not find the bridge closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The message is in the buffer.
    Accepted,
    /// The buffer was full under [`WhenFull::DropNewest`]; the message was discarded and counted.
    Dropped,
}

/// The bridge actor has stopped, so nothing drains the buffer any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bridge is closed")]
pub struct BridgeClosed;

/// Creates the buffer of the bridge named `bridge_name`: a cloneable pushing handle and the
/// receiving half for its actor.
///
/// Metric handles are registered here, with the recorder current on this thread.
pub fn bridge_buffer(
    bridge_name: &str,
    config: &BridgeBufferConfig,
) -> (BridgeBuffer, BridgeBufferReceiver) {
    // Bounded by `max_events`; a full buffer drops the newest message or blocks the publisher,
    // as `config.when_full` says. Never unbounded: a dead bridge must not exhaust memory.
    let (sender, receiver) = mpsc::channel(config.max_events.get());
    let num_dropped = Arc::new(AtomicU64::new(0));
    let metrics = BridgeMetrics::new(bridge_name);
    let buffer = BridgeBuffer {
        sender,
        when_full: config.when_full,
        num_dropped: num_dropped.clone(),
        metrics: metrics.clone(),
    };
    let buffer_receiver = BridgeBufferReceiver {
        receiver,
        num_dropped,
        metrics,
    };
    (buffer, buffer_receiver)
}

/// The pushing side of a bridge buffer; clone it for every publisher task.
#[derive(Debug, Clone)]
pub struct BridgeBuffer {
    /// Bounded by `max_events`; closed when the bridge actor drops the receiving half.
    sender: mpsc::Sender<Publish>,
    /// Overflow policy applied by [`BridgeBuffer::push`].
    when_full: WhenFull,
    /// Messages dropped by this bridge, shared with the receiving half.
    num_dropped: Arc<AtomicU64>,
    /// Metric handles of this bridge.
    metrics: BridgeMetrics,
}

impl BridgeBuffer {
    /// Pushes one message, applying the buffer's [`WhenFull`] policy when it is full.
    ///
    /// Under [`WhenFull::DropNewest`] the future completes without waiting. Under
    /// [`WhenFull::Block`] it waits until the bridge actor takes a message out.
    ///
    /// # Errors
    /// Returns [`BridgeClosed`] when the bridge actor has stopped.
    pub async fn push(&self, publish: Publish) -> Result<PushOutcome, BridgeClosed> {
        match self.when_full {
            WhenFull::DropNewest => match self.sender.try_send(publish) {
                Ok(()) => Ok(PushOutcome::Accepted),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.num_dropped.fetch_add(1, Ordering::Relaxed);
                    self.metrics.dropped_messages.increment(1);
                    Ok(PushOutcome::Dropped)
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Err(BridgeClosed),
            },
            WhenFull::Block => match self.sender.send(publish).await {
                Ok(()) => Ok(PushOutcome::Accepted),
                Err(_) => Err(BridgeClosed),
            },
        }
    }

    /// Returns how many messages this bridge has dropped so far.
    pub fn num_dropped(&self) -> u64 {
        self.num_dropped.load(Ordering::Relaxed)
    }

    /// Returns how many messages wait in the buffer.
    pub fn num_buffered(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }
}

/// The receiving half of a bridge buffer, owned by the bridge actor.
#[derive(Debug)]
pub struct BridgeBufferReceiver {
    /// Yields messages in push order; ends when every [`BridgeBuffer`] is dropped.
    receiver: mpsc::Receiver<Publish>,
    /// Messages dropped by this bridge, shared with the pushing handles.
    num_dropped: Arc<AtomicU64>,
    /// Metric handles of this bridge.
    pub(crate) metrics: BridgeMetrics,
}

impl BridgeBufferReceiver {
    /// Waits for at least one message and moves up to `max_batch_size` of them into `batch`.
    ///
    /// Returns the number moved; 0 means every pushing handle is gone and the buffer is empty.
    pub async fn recv_batch(
        &mut self,
        batch: &mut Vec<Publish>,
        max_batch_size: NonZeroUsize,
    ) -> usize {
        let num_received = self.receiver.recv_many(batch, max_batch_size.get()).await;
        self.metrics
            .buffered_messages
            .set(self.receiver.len() as f64);
        num_received
    }

    /// Returns how many messages wait in the buffer.
    pub fn len(&self) -> usize {
        self.receiver.len()
    }

    /// Returns true when no message waits in the buffer.
    pub fn is_empty(&self) -> bool {
        self.receiver.is_empty()
    }

    /// Returns how many messages this bridge has dropped so far.
    pub fn num_dropped(&self) -> u64 {
        self.num_dropped.load(Ordering::Relaxed)
    }

    /// Counts `num_messages` that the sink rejected as dropped.
    pub(crate) fn record_rejected(&self, num_messages: usize) {
        self.num_dropped
            .fetch_add(num_messages as u64, Ordering::Relaxed);
        self.metrics.dropped_messages.increment(num_messages as u64);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use starling_core::codec::{ByteString, PublishProperties, QoS};

    use super::*;

    fn publish_for_test(idx: usize) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: ByteString::from_static("bridge/test"),
            packet_id: None,
            properties: PublishProperties::default(),
            payload: Bytes::from(idx.to_string()),
        }
    }

    fn config(max_events: usize, when_full: WhenFull) -> BridgeBufferConfig {
        BridgeBufferConfig {
            max_events: NonZeroUsize::new(max_events).unwrap(),
            when_full,
        }
    }

    const MAX_BATCH: NonZeroUsize = NonZeroUsize::new(100).unwrap();

    #[tokio::test]
    async fn drop_newest_discards_and_counts_when_full() {
        let (buffer, mut receiver) = bridge_buffer("test", &config(2, WhenFull::DropNewest));
        assert_eq!(
            buffer.push(publish_for_test(0)).await,
            Ok(PushOutcome::Accepted)
        );
        assert_eq!(
            buffer.push(publish_for_test(1)).await,
            Ok(PushOutcome::Accepted)
        );
        assert_eq!(
            buffer.push(publish_for_test(2)).await,
            Ok(PushOutcome::Dropped)
        );
        assert_eq!(
            buffer.push(publish_for_test(3)).await,
            Ok(PushOutcome::Dropped)
        );
        assert_eq!(buffer.num_dropped(), 2);
        assert_eq!(receiver.num_dropped(), 2);

        let mut batch = Vec::new();
        assert_eq!(receiver.recv_batch(&mut batch, MAX_BATCH).await, 2);
        // The oldest messages are kept; the newest were dropped.
        assert_eq!(batch, [publish_for_test(0), publish_for_test(1)]);
        assert_eq!(
            buffer.push(publish_for_test(4)).await,
            Ok(PushOutcome::Accepted)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn block_makes_the_producer_wait_until_room_is_made() {
        let (buffer, mut receiver) = bridge_buffer("test", &config(1, WhenFull::Block));
        assert_eq!(
            buffer.push(publish_for_test(0)).await,
            Ok(PushOutcome::Accepted)
        );

        let blocked_push =
            tokio::time::timeout(Duration::from_secs(60), buffer.push(publish_for_test(1)));
        assert!(
            blocked_push.await.is_err(),
            "push into a full blocking buffer returned"
        );

        let pusher = buffer.clone();
        let push_task = tokio::spawn(async move { pusher.push(publish_for_test(2)).await });
        tokio::task::yield_now().await;
        assert!(!push_task.is_finished());

        let mut batch = Vec::new();
        assert_eq!(receiver.recv_batch(&mut batch, MAX_BATCH).await, 1);
        assert_eq!(push_task.await.unwrap(), Ok(PushOutcome::Accepted));
        assert_eq!(buffer.num_dropped(), 0);
        batch.clear();
        receiver.recv_batch(&mut batch, MAX_BATCH).await;
        assert_eq!(batch, [publish_for_test(2)]);
    }

    #[tokio::test]
    async fn receiver_reports_end_after_every_handle_is_dropped_and_buffer_drained() {
        let (buffer, mut receiver) = bridge_buffer("test", &config(4, WhenFull::DropNewest));
        buffer.push(publish_for_test(0)).await.unwrap();
        drop(buffer);
        let mut batch = Vec::new();
        assert_eq!(receiver.recv_batch(&mut batch, MAX_BATCH).await, 1);
        assert_eq!(receiver.recv_batch(&mut batch, MAX_BATCH).await, 0);
    }

    #[tokio::test]
    async fn push_after_the_receiver_is_gone_reports_closed() {
        for when_full in [WhenFull::DropNewest, WhenFull::Block] {
            let (buffer, receiver) = bridge_buffer("test", &config(4, when_full));
            drop(receiver);
            assert_eq!(buffer.push(publish_for_test(0)).await, Err(BridgeClosed));
        }
    }
}
