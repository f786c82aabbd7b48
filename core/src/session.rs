//! Sessions: the session handle (address and bounded mailbox) and the session task-actor.
//!
//! A session is a task-actor: while a client is connected, one tokio task owns both the socket
//! and the [`SessionState`]; while the client is away, the state is parked in the handle and
//! costs no task at all. Everything else reaches a session only through its [`SessionHandle`]:
//! routed messages go into its bounded mailbox, control requests (takeover, kick) into a
//! single control slot. The handle is registered in a session-registry shard (a ractor actor,
//! see [`crate::registry`]) which supervises the session's timers: keep alive, will delay and
//! session expiry.

mod auth_flow;
mod connection;
mod durable;
mod packets;
mod state;

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll, Waker},
};

use bytestring::ByteString;
use parking_lot::Mutex;
use smallvec::SmallVec;
use tokio::{sync::oneshot, time::Instant};

use crate::{
    codec::{QoS, ReasonCode},
    config::{QueueFullPolicy, SessionLimits},
    message::{Delivery, SessionId, StoredRef},
    metrics::BrokerMetrics,
};

pub use connection::run_connection;
pub use state::{Outbound, OutboundState, SessionState, StoredSubscription};

/// The address of a session: cheap to clone, held by topic shards and the registry.
#[derive(Clone)]
pub struct SessionHandle(Arc<SessionShared>);

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.0.id)
            .field("client_id", &self.0.client_id)
            .finish()
    }
}

struct SessionShared {
    id: SessionId,
    client_id: ByteString,
    /// The session is in the store: its QoS 1/2 deliveries are written before they are
    /// acknowledged (see `crate::persistence`).
    persistent: std::sync::atomic::AtomicBool,
    /// Milliseconds since the broker epoch after which a silent client is closed; 0 = never.
    keep_alive_deadline_ms: AtomicU64,
    /// Outbound QoS 1/2 messages in flight (sent, not yet acknowledged) as last reported by
    /// the connection task (once per turn of its loop) or by `park`; read only by the
    /// registry's metrics sweep, so a relaxed store suffices.
    num_inflight: AtomicU32,
    mailbox: Mutex<Mailbox>,
}

/// A request to the task that currently runs the session.
pub(crate) enum Control {
    /// Another connection takes the session over: send DISCONNECT 0x8E and hand over the state.
    Takeover {
        /// Whether the new connection starts clean (then the old will is published).
        clean_start: bool,
        /// Receives the session state.
        reply: oneshot::Sender<Box<SessionState>>,
    },
    /// Close the connection with this reason code (keep alive timeout, shutdown, admin kick).
    Kick(ReasonCode),
}

/// The bounded mailbox of a session.
///
/// Overflow policy: when `max_queued_messages` or `max_queued_bytes` is reached, the session's
/// [`QueueFullPolicy`] drops the newest or the oldest message and counts it in
/// `starling_messages_dropped_total{reason="queue_full"}`. QoS 0 messages for an offline
/// session are dropped unless `queue_qos0_offline` is set.
#[derive(Default)]
struct Mailbox {
    queue: VecDeque<Delivery>,
    queued_bytes: usize,
    /// A connection task runs the session (or is about to).
    online: bool,
    /// The session ended; deliveries are dropped and the state is gone.
    ended: bool,
    /// A wake-up was sent and the consumer has not yet emptied the queue, so further pushes
    /// need not wake it again: a burst costs one wake-up.
    wake_pending: bool,
    /// Set by a wake-up, cleared when the connection task observes it.
    woken: bool,
    /// A queued message may carry a message expiry: the registry's purge looks at this queue
    /// while the session is offline, and clears it when none is left.
    may_expire: bool,
    /// Waker of the connection task, stored by [`SessionHandle::poll_notified`]. A waker in the
    /// mailbox, rather than a `Notify` and its future in the task, keeps idle sessions small.
    waker: Option<Waker>,
    /// Boxed: rare, and the mailbox is part of every session's memory.
    control: Option<Box<Control>>,
    /// The session state while no connection task runs the session.
    parked: Option<Box<SessionState>>,
}

impl Mailbox {
    /// Records a wake-up and returns the waker to call once the lock is released.
    fn wake_up(&mut self) -> Option<Waker> {
        self.woken = true;
        self.waker.take()
    }
}

/// What happened to a pushed delivery.
#[derive(Debug)]
pub enum PushOutcome {
    /// Queued for the session.
    Queued,
    /// Dropped under the overflow policy or because the session is gone or offline (QoS 0).
    Dropped,
    /// The connected session's queue is full; the publisher keeps the delivery and retries.
    Full(Delivery),
    /// Queued; the oldest queued delivery was dropped to make room and is handed back (its
    /// stored queue entry must be removed).
    QueuedEvicting(Delivery),
    /// The queue is full and the policy is [`QueueFullPolicy::Refuse`]: dropped, and the
    /// publisher is told.
    Refused,
}

impl SessionHandle {
    /// Creates the handle of a new session whose fresh state is parked in it.
    pub(crate) fn new(id: SessionId, client_id: ByteString, state: Box<SessionState>) -> Self {
        SessionHandle(Arc::new(SessionShared {
            id,
            client_id,
            persistent: std::sync::atomic::AtomicBool::new(false),
            keep_alive_deadline_ms: AtomicU64::new(0),
            num_inflight: AtomicU32::new(inflight_figure(state.outbound.len())),
            mailbox: Mutex::new(Mailbox {
                parked: Some(state),
                ..Mailbox::default()
            }),
        }))
    }

    /// Returns the session id.
    pub fn id(&self) -> SessionId {
        self.0.id
    }

    /// Returns the client identifier.
    pub fn client_id(&self) -> &ByteString {
        &self.0.client_id
    }

    /// Returns true while a connection runs the session.
    pub fn is_online(&self) -> bool {
        self.0.mailbox.lock().online
    }

    /// Returns the number of queued, not yet sent messages.
    pub fn queue_len(&self) -> usize {
        self.0.mailbox.lock().queue.len()
    }

    /// Returns the outbound QoS 1/2 messages in flight (sent, not yet acknowledged), as last
    /// reported by the task running the session; for an offline session, those it will resend.
    pub fn num_inflight(&self) -> usize {
        self.0.num_inflight.load(Ordering::Relaxed) as usize
    }

    /// Reports the session's outbound in-flight count for [`SessionHandle::num_inflight`].
    pub(crate) fn report_inflight(&self, num_inflight: usize) {
        self.0
            .num_inflight
            .store(inflight_figure(num_inflight), Ordering::Relaxed);
    }

    /// Queues a delivery, applying the session's limits and overflow policy.
    ///
    /// With `backpressure`, a QoS 1/2 delivery to a connected session whose queue is full is
    /// returned as [`PushOutcome::Full`] for the publisher to retry, instead of being dropped.
    pub fn push(
        &self,
        delivery: Delivery,
        limits: &SessionLimits,
        metrics: &BrokerMetrics,
        backpressure: bool,
    ) -> PushOutcome {
        let cost = delivery.message.cost_bytes();
        let mut evicted = None;
        let mut mailbox = self.0.mailbox.lock();
        if mailbox.ended {
            return PushOutcome::Dropped;
        }
        if !mailbox.online && delivery.qos == QoS::AtMostOnce && !limits.queue_qos0_offline {
            metrics.dropped_offline_qos0.increment(1);
            return PushOutcome::Dropped;
        }
        let is_full = mailbox.queue.len() >= limits.max_queued_messages
            || mailbox.queued_bytes + cost > limits.max_queued_bytes;
        if is_full {
            if backpressure && mailbox.online && delivery.qos != QoS::AtMostOnce {
                return PushOutcome::Full(delivery);
            }
            metrics.dropped_queue_full.increment(1);
            match limits.queue_full_policy {
                QueueFullPolicy::DropNewest => return PushOutcome::Dropped,
                QueueFullPolicy::Refuse => return PushOutcome::Refused,
                QueueFullPolicy::DropOldest => {
                    if let Some(oldest) = mailbox.queue.pop_front() {
                        mailbox.queued_bytes -= oldest.message.cost_bytes();
                        evicted = Some(oldest);
                    }
                }
            }
        }
        mailbox.may_expire |= delivery.message.expires_at.is_some();
        mailbox.queue.push_back(delivery);
        mailbox.queued_bytes += cost;
        let mut waker = None;
        if mailbox.online && !mailbox.wake_pending {
            mailbox.wake_pending = true;
            waker = mailbox.wake_up();
        }
        drop(mailbox);
        if let Some(waker) = waker {
            waker.wake();
        }
        match evicted {
            Some(evicted) => PushOutcome::QueuedEvicting(evicted),
            None => PushOutcome::Queued,
        }
    }

    /// Returns true while the session is in the store.
    pub fn is_persistent(&self) -> bool {
        self.0.persistent.load(Ordering::Acquire)
    }

    /// Marks the session as stored or not; returns the previous value.
    pub(crate) fn set_persistent(&self, persistent: bool) -> bool {
        self.0.persistent.swap(persistent, Ordering::AcqRel)
    }

    /// Puts recovered deliveries in the queue as they were stored, without applying limits.
    pub(crate) fn restore_queue(&self, deliveries: impl IntoIterator<Item = Delivery>) {
        let mut mailbox = self.0.mailbox.lock();
        for delivery in deliveries {
            mailbox.queued_bytes += delivery.message.cost_bytes();
            mailbox.may_expire |= delivery.message.expires_at.is_some();
            mailbox.queue.push_back(delivery);
        }
    }

    /// Drops the queued messages of an offline session whose message expiry has passed, adding
    /// where they were stored to `stored`; returns how many it dropped. While the session is
    /// online its connection drops expired messages as it comes to them.
    pub(crate) fn purge_expired(&self, now: Instant, stored: &mut Vec<StoredRef>) -> usize {
        let mut mailbox = self.0.mailbox.lock();
        if !mailbox.may_expire || mailbox.online || mailbox.ended {
            return 0;
        }
        let before = mailbox.queue.len();
        let mut freed_bytes = 0;
        let mut may_expire = false;
        mailbox.queue.retain(|delivery| {
            if delivery.message.remaining_expiry(now).is_err() {
                freed_bytes += delivery.message.cost_bytes();
                stored.push(delivery.stored);
                return false;
            }
            may_expire |= delivery.message.expires_at.is_some();
            true
        });
        mailbox.queued_bytes -= freed_bytes;
        mailbox.may_expire = may_expire;
        before - mailbox.queue.len()
    }

    /// Forgets where queued deliveries are stored (the session left the store).
    pub(crate) fn forget_stored_queue(&self) {
        let mut mailbox = self.0.mailbox.lock();
        for delivery in mailbox.queue.iter_mut() {
            delivery.stored = StoredRef::default();
        }
    }

    /// Pops up to `max_items` deliveries in order; stops before a QoS 1/2 delivery once
    /// `qos_room` of them were taken (the client's receive maximum).
    pub(crate) fn pop_batch(
        &self,
        max_items: usize,
        mut qos_room: usize,
    ) -> SmallVec<[Delivery; 16]> {
        let mut batch = SmallVec::new();
        let mut mailbox = self.0.mailbox.lock();
        while batch.len() < max_items {
            let Some(front) = mailbox.queue.front() else {
                mailbox.wake_pending = false;
                break;
            };
            if front.qos != QoS::AtMostOnce {
                if qos_room == 0 {
                    break;
                }
                qos_room -= 1;
            }
            let delivery = mailbox.queue.pop_front().expect("front exists");
            mailbox.queued_bytes -= delivery.message.cost_bytes();
            batch.push(delivery);
        }
        batch
    }

    /// Takes the pending control request, if any.
    pub(crate) fn take_control(&self) -> Option<Control> {
        self.0.mailbox.lock().control.take().map(|control| *control)
    }

    /// Returns `Ready` once after each wake-up (queued messages or a control request), else
    /// stores the task's waker.
    pub(crate) fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut mailbox = self.0.mailbox.lock();
        if mailbox.woken {
            mailbox.woken = false;
            return Poll::Ready(());
        }
        match &mailbox.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => mailbox.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Asks the running connection, if any, to close with `reason_code`.
    pub fn kick(&self, reason_code: ReasonCode) {
        let mut mailbox = self.0.mailbox.lock();
        if !mailbox.online || mailbox.control.is_some() {
            return;
        }
        mailbox.control = Some(Box::new(Control::Kick(reason_code)));
        let waker = mailbox.wake_up();
        drop(mailbox);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Takes the session state for a new connection, taking it over from the connection that
    /// runs it if there is one. Returns `None` if the session ended meanwhile.
    pub(crate) async fn acquire(&self, clean_start: bool) -> Option<Box<SessionState>> {
        let receiver = {
            let mut mailbox = self.0.mailbox.lock();
            if mailbox.ended {
                return None;
            }
            if let Some(state) = mailbox.parked.take() {
                mailbox.online = true;
                mailbox.wake_pending = false;
                return Some(state);
            }
            let (reply, receiver) = oneshot::channel();
            // A pending kick is superseded: the old connection closes either way.
            mailbox.control = Some(Box::new(Control::Takeover { clean_start, reply }));
            let waker = mailbox.wake_up();
            (receiver, waker)
        };
        let (receiver, waker) = receiver;
        if let Some(waker) = waker {
            waker.wake();
        }
        let state = tokio::time::timeout(std::time::Duration::from_secs(10), receiver)
            .await
            .ok()?
            .ok()?;
        let mut mailbox = self.0.mailbox.lock();
        mailbox.online = true;
        mailbox.wake_pending = false;
        Some(state)
    }

    /// Parks the state when its connection closes, or hands it to a waiting takeover.
    /// Returns true if a takeover received it.
    pub(crate) fn park(&self, state: Box<SessionState>) -> bool {
        self.report_inflight(state.outbound.len());
        let mut mailbox = self.0.mailbox.lock();
        if let Some(Control::Takeover { reply, .. }) =
            mailbox.control.take().map(|control| *control)
        {
            match reply.send(state) {
                Ok(()) => return true,
                Err(state) => mailbox.parked = Some(state),
            }
        } else {
            mailbox.parked = Some(state);
        }
        mailbox.online = false;
        mailbox.wake_pending = false;
        false
    }

    /// Ends the session: drops queued messages and returns the parked state, if any.
    pub(crate) fn end(&self) -> Option<Box<SessionState>> {
        let mut mailbox = self.0.mailbox.lock();
        mailbox.ended = true;
        mailbox.online = false;
        mailbox.queue = VecDeque::new();
        mailbox.queued_bytes = 0;
        mailbox.parked.take()
    }

    /// Records when a silent client must be closed (milliseconds since the broker epoch).
    pub(crate) fn set_keep_alive_deadline_ms(&self, deadline_ms: u64) {
        self.0
            .keep_alive_deadline_ms
            .store(deadline_ms, Ordering::Relaxed);
    }

    /// Returns the keep-alive deadline in milliseconds since the broker epoch (0 = none).
    pub(crate) fn keep_alive_deadline_ms(&self) -> u64 {
        self.0.keep_alive_deadline_ms.load(Ordering::Relaxed)
    }

    /// Returns true when both handles address the same session.
    pub fn same_session(&self, other: &SessionHandle) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// An in-flight count as the handle stores it (at most 65,535 packet identifiers exist).
fn inflight_figure(num_inflight: usize) -> u32 {
    u32::try_from(num_inflight).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod size_tests {
    /// The handle's allocation (with the `Arc` counts) fits the 160-byte size class.
    #[test]
    fn session_shared_fits_its_size_class() {
        let size = std::mem::size_of::<super::SessionShared>();
        assert!(size + 16 <= 160, "SessionShared is {size} bytes");
    }

    /// The state, boxed in every session, fits the 80-byte size class (the client id lives in
    /// the handle only; inbound QoS 2 ids allocate only while there are any).
    #[test]
    fn session_state_fits_its_size_class() {
        let size = std::mem::size_of::<super::SessionState>();
        assert!(size <= 80, "SessionState is {size} bytes");
    }
}

#[cfg(test)]
mod expiry_tests {
    use std::{sync::Arc, time::Duration};

    use bytes::Bytes;
    use bytestring::ByteString;
    use tokio::time::Instant;

    use super::{SessionHandle, SessionState};
    use crate::{
        codec::{ProtocolVersion, PublishProperties, QoS},
        message::{Delivery, Message, ReceivedAt, SessionId, StoredRef, SubscriptionIds},
    };

    fn delivery(payload: &'static str, expires_at: Option<Instant>, queue_seq: u64) -> Delivery {
        let message = Arc::new(Message {
            topic: ByteString::from_static("fleet/ota"),
            payload: Bytes::from_static(payload.as_bytes()),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: PublishProperties::default(),
            expires_at,
            publisher: SessionId(9),
            received_at: ReceivedAt::UNKNOWN,
        });
        let mut delivery =
            Delivery::new(message, QoS::AtLeastOnce, false, SubscriptionIds::default());
        delivery.stored = StoredRef {
            queue_seq,
            message_id: 0,
        };
        delivery
    }

    fn offline_session(id: u64) -> SessionHandle {
        SessionHandle::new(
            SessionId(id),
            ByteString::from(format!("car-{id}")),
            Box::new(SessionState::new(SessionId(id), ProtocolVersion::V5)),
        )
    }

    #[test]
    fn purge_drops_only_expired_messages_of_an_offline_session() {
        let now = Instant::now();
        let handle = offline_session(1);
        let later = now + Duration::from_secs(60);
        let queue = [
            delivery("past", Some(now), 1),
            delivery("kept", None, 2),
            delivery("future", Some(later), 3),
        ];
        let full_bytes: usize = queue.iter().map(|d| d.message.cost_bytes()).sum();
        handle.restore_queue(queue);

        let mut stored = Vec::new();
        assert_eq!(handle.purge_expired(now, &mut stored), 1);
        assert_eq!(stored.iter().map(|s| s.queue_seq).collect::<Vec<_>>(), [1]);
        let mailbox = handle.0.mailbox.lock();
        let left: Vec<&[u8]> = mailbox.queue.iter().map(|d| &*d.message.payload).collect();
        assert_eq!(left, [b"kept".as_slice(), b"future"]);
        assert_eq!(
            mailbox.queued_bytes,
            full_bytes - delivery("past", None, 0).message.cost_bytes()
        );
        assert!(mailbox.may_expire, "\"future\" may still expire");
        drop(mailbox);

        // Once the last expiring message is gone, the queue is no longer looked at.
        stored.clear();
        assert_eq!(handle.purge_expired(later, &mut stored), 1);
        assert!(!handle.0.mailbox.lock().may_expire);
        assert_eq!(handle.queue_len(), 1);
    }

    #[test]
    fn purge_leaves_an_online_session_to_its_connection() {
        let now = Instant::now();
        let handle = offline_session(2);
        handle.restore_queue([delivery("past", Some(now), 4)]);
        handle.0.mailbox.lock().online = true;
        let mut stored = Vec::new();
        assert_eq!(handle.purge_expired(now, &mut stored), 0);
        assert!(stored.is_empty());
        assert_eq!(handle.queue_len(), 1);
    }
}
