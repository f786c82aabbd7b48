//! Messages as the router moves them: one shared [`Message`] per publish, one [`Delivery`] per
//! receiving session.

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use smallvec::SmallVec;
use tokio::time::Instant;

use crate::codec::{PublishProperties, QoS};

/// Identifies one session incarnation (a new id whenever a session is created, not resumed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

impl SessionId {
    /// The id of messages that no client published (wills use the id of their session).
    pub const SYSTEM: SessionId = SessionId(0);
}

/// A published message, shared by every session it is delivered to.
#[derive(Debug)]
pub struct Message {
    /// Topic name, owned (never a slice of a read buffer).
    pub topic: ByteString,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// RETAIN flag it was published with.
    pub retain: bool,
    /// Properties to forward unchanged (topic alias and subscription identifiers removed).
    pub properties: PublishProperties,
    /// When the message expires, from Message Expiry Interval.
    pub expires_at: Option<Instant>,
    /// The publishing session, for No Local.
    pub publisher: SessionId,
    /// When the broker received it, for the delivery latency histogram.
    pub received_at: ReceivedAt,
}

/// When the broker received a message: microseconds since a process-wide zero point, so a
/// message carries 8 bytes instead of a 16-byte `Instant`. Zero means unknown (a message
/// recovered from storage); such messages are left out of the latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReceivedAt(u64);

impl ReceivedAt {
    /// No receipt time.
    pub const UNKNOWN: ReceivedAt = ReceivedAt(0);

    fn micros(now: Instant) -> u64 {
        let since = now
            .into_std()
            .saturating_duration_since(crate::metrics::histogram::clock_epoch());
        // Plus one: zero is kept for "unknown".
        u64::try_from(since.as_micros())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// The receipt time `now`.
    pub fn at(now: Instant) -> ReceivedAt {
        ReceivedAt(Self::micros(now))
    }

    /// Microseconds from receipt to `now` (0 if `now` is earlier); `None` when unknown.
    pub fn micros_until(self, now: Instant) -> Option<u64> {
        (self.0 != 0).then(|| Self::micros(now).saturating_sub(self.0))
    }
}

impl Message {
    /// Returns the seconds left before expiry, `Some(0)` never (expired messages are not sent).
    ///
    /// `None` means no expiry; `Err(())` means the message has expired.
    #[allow(clippy::result_unit_err)]
    pub fn remaining_expiry(&self, now: Instant) -> Result<Option<u32>, ()> {
        let Some(expires_at) = self.expires_at else {
            return Ok(None);
        };
        if expires_at <= now {
            return Err(());
        }
        let remaining = expires_at.duration_since(now);
        // Round up so a message with 0.4 s left still says 1 s.
        let secs = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
        Ok(Some(u32::try_from(secs).unwrap_or(u32::MAX)))
    }

    /// Approximate heap cost used for queue byte limits.
    pub fn cost_bytes(&self) -> usize {
        self.payload.len() + self.topic.len() + 64
    }
}

/// Subscription identifiers attached to one delivery; most have none or one.
pub type SubscriptionIds = SmallVec<[u32; 2]>;

/// A message on its way to one session, at the QoS and with the flags of that session's
/// subscriptions.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The shared message.
    pub message: Arc<Message>,
    /// QoS of this delivery: min(published QoS, maximum granted QoS of the matching subscriptions).
    pub qos: QoS,
    /// RETAIN flag as delivered (retain-as-published, or a retained message sent on subscribe).
    pub retain: bool,
    /// Identifiers of every matching subscription that had one.
    pub subscription_ids: SubscriptionIds,
    /// Where the delivery is stored: the sequence of its offline-queue entry (0 when it has
    /// none) and the id of the stored message it references (0 when not stored).
    pub stored: StoredRef,
}

/// The on-disk identity of a delivery to a persistent session (see `crate::persistence`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredRef {
    /// Sequence of the offline-queue entry, 0 when the delivery is not in the stored queue.
    pub queue_seq: u64,
    /// Id of the stored message, 0 when the message is not stored.
    pub message_id: u64,
}

impl Delivery {
    /// Creates a delivery that is not stored.
    pub fn new(
        message: Arc<Message>,
        qos: QoS,
        retain: bool,
        subscription_ids: SubscriptionIds,
    ) -> Delivery {
        Delivery {
            message,
            qos,
            retain,
            subscription_ids,
            stored: StoredRef::default(),
        }
    }
}
