//! Metric handles of the core, registered once and cloned into the hot paths.
//!
//! Names follow `starling_<area>_<thing>_<unit|total>`; labels have bounded cardinality (never a
//! client id or a topic). Without an installed recorder every handle is a no-op.
//!
//! - [`histogram`]: the fixed-bucket histograms of the hot paths (delivery latency, storage,
//!   mailbox waits), rendered by the node.
//! - [`striped`]: per-thread striped counters of the per-message paths (messages and bytes in
//!   and out), summed into the recorder's counters when the node renders `/metrics`.

pub mod histogram;
pub mod striped;

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

use metrics::{counter, gauge, Counter, Gauge};
use parking_lot::RwLock;

use self::{
    histogram::{Histogram, HistogramSpec, LATENCY_BOUNDS_MICROS},
    striped::StripedCounter,
};
use crate::{codec::ReasonCode, message::Delivery, transport::ListenerId};

/// `starling_message_delivery_latency_seconds`.
pub static DELIVERY_LATENCY: HistogramSpec = HistogramSpec {
    name: "starling_message_delivery_latency_seconds",
    help:
        "Time from receiving a PUBLISH to writing its delivery into a subscriber's socket buffer.",
    bounds: LATENCY_BOUNDS_MICROS,
    units_per_exported_unit: 1e6,
};

/// `starling_actor_mailbox_wait_seconds{actor}`.
pub static MAILBOX_WAIT: HistogramSpec = HistogramSpec {
    name: "starling_actor_mailbox_wait_seconds",
    help: "Time a periodic tick message waited in an actor's mailbox before it was handled.",
    bounds: LATENCY_BOUNDS_MICROS,
    units_per_exported_unit: 1e6,
};

/// Why a connection closed: the `reason` label of `starling_connections_closed_total`.
///
/// A fixed set, so the label's cardinality is bounded; each value names the reason code the
/// broker sent or received where there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No CONNECT within `mqtt.connect_timeout_ms`.
    ConnectTimeout,
    /// The first packet was not a valid CONNECT.
    ConnectInvalid,
    /// CONNECT was refused with a CONNACK error (authentication, client id, will, registry).
    ConnectRefused,
    /// The client sent DISCONNECT 0x00 (or another non-will reason code).
    ClientDisconnect,
    /// The client sent DISCONNECT 0x04 Disconnect with Will Message.
    ClientDisconnectWithWill,
    /// EOF or a socket error without DISCONNECT.
    ConnectionLost,
    /// The client broke the protocol (malformed packet, 0x82, 0x93, 0x94, 0x95, ...).
    ProtocolError,
    /// The broker closed a silent client: 0x8D Keep Alive timeout.
    KeepAliveTimeout,
    /// The broker is shutting down: 0x8B.
    ServerShuttingDown,
    /// An operator kicked the client: 0x98 Administrative action.
    AdministrativeAction,
    /// Another connection took the session over: 0x8E.
    SessionTakenOver,
    /// The broker closed the connection with another reason code.
    OtherServerReason,
}

impl CloseReason {
    /// Every reason, in label order.
    pub const ALL: [CloseReason; 12] = [
        CloseReason::ConnectTimeout,
        CloseReason::ConnectInvalid,
        CloseReason::ConnectRefused,
        CloseReason::ClientDisconnect,
        CloseReason::ClientDisconnectWithWill,
        CloseReason::ConnectionLost,
        CloseReason::ProtocolError,
        CloseReason::KeepAliveTimeout,
        CloseReason::ServerShuttingDown,
        CloseReason::AdministrativeAction,
        CloseReason::SessionTakenOver,
        CloseReason::OtherServerReason,
    ];

    /// Returns the label value.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::ConnectInvalid => "connect_invalid",
            CloseReason::ConnectRefused => "connect_refused",
            CloseReason::ClientDisconnect => "client_disconnect",
            CloseReason::ClientDisconnectWithWill => "client_disconnect_with_will",
            CloseReason::ConnectionLost => "connection_lost",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::KeepAliveTimeout => "keep_alive_timeout",
            CloseReason::ServerShuttingDown => "server_shutting_down",
            CloseReason::AdministrativeAction => "administrative_action",
            CloseReason::SessionTakenOver => "session_taken_over",
            CloseReason::OtherServerReason => "other_server_reason",
        }
    }

    /// Classifies a close the broker decided with `reason_code` (keep alive, shutdown, kick).
    pub fn from_server_reason_code(reason_code: ReasonCode) -> CloseReason {
        match reason_code {
            ReasonCode::KeepAliveTimeout => CloseReason::KeepAliveTimeout,
            ReasonCode::ServerShuttingDown => CloseReason::ServerShuttingDown,
            ReasonCode::AdministrativeAction => CloseReason::AdministrativeAction,
            ReasonCode::SessionTakenOver => CloseReason::SessionTakenOver,
            _ => CloseReason::OtherServerReason,
        }
    }
}

/// `starling_connections_closed_total{reason}`: one pre-registered counter per [`CloseReason`],
/// so every series exists (at 0) from the start.
#[derive(Clone)]
pub struct ClosedConnectionCounters([Counter; CloseReason::ALL.len()]);

impl ClosedConnectionCounters {
    fn register() -> ClosedConnectionCounters {
        ClosedConnectionCounters(CloseReason::ALL.map(
            |reason| counter!("starling_connections_closed_total", "reason" => reason.label()),
        ))
    }

    /// Counts one closed connection.
    pub fn increment(&self, reason: CloseReason) {
        self.0[reason as usize].increment(1);
    }
}

/// Connection figures of one listener (`listener` label: the listener's configured name).
#[derive(Clone)]
struct ListenerMetrics {
    opened: Counter,
}

/// Counters of one kind of actor (`actor` label).
#[derive(Clone)]
pub struct ActorMetrics {
    /// `starling_actor_messages_handled_total{actor}`.
    pub handled: Counter,
    /// `starling_actor_mailbox_wait_seconds{actor}`: how long the periodic tick waited.
    pub mailbox_wait: Histogram,
}

impl ActorMetrics {
    fn register(actor: &'static str) -> ActorMetrics {
        ActorMetrics {
            handled: counter!("starling_actor_messages_handled_total", "actor" => actor),
            mailbox_wait: histogram::register(&MAILBOX_WAIT, &[("actor", actor)]),
        }
    }

    /// Counts a tick sent at `sent_at` that is being handled now.
    pub fn tick_handled(&self, sent_at: tokio::time::Instant) {
        self.mailbox_wait.record_duration(sent_at.elapsed());
    }
}

/// Messages sent to the actors of a kind and not yet handled, for actors with many senders:
/// ractor's unbounded mailbox does not tell its length, so each send adds one and the handler
/// subtracts one, a single relaxed atomic operation each way. The node reads it at scrape
/// (`starling_actor_mailbox_depth{actor}`).
#[derive(Clone, Default)]
pub struct MailboxDepth(Arc<AtomicI64>);

impl MailboxDepth {
    /// Counts a message about to be sent (before the send, so the handler's decrement never
    /// comes first).
    #[inline]
    pub fn sent(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a message the handler took, or one whose send failed.
    #[inline]
    pub fn taken(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Returns the messages sent and not yet taken. Never negative: a send happens before its
    /// message is taken, and the channel orders the two updates.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters and gauges the connection tasks, the router and the registry update.
#[derive(Clone)]
pub struct BrokerMetrics {
    /// `starling_connections_opened_total`.
    pub connections_opened: Counter,
    /// `starling_connections_closed_total{reason}`.
    pub connections_closed: ClosedConnectionCounters,
    /// `starling_connections_current`.
    pub connections_current: Gauge,
    /// `starling_protocol_errors_total`: connections closed for malformed or illegal input.
    pub protocol_errors: Counter,
    /// `starling_messages_received_total{qos}` (striped: counted once per message).
    pub messages_received: [StripedCounter; 3],
    /// `starling_messages_sent_total{qos}` (striped).
    pub messages_sent: [StripedCounter; 3],
    /// `starling_bytes_received_total` (striped: counted once per read).
    pub bytes_received: StripedCounter,
    /// `starling_bytes_sent_total` (striped: counted once per write).
    pub bytes_sent: StripedCounter,
    /// `starling_messages_dropped_total{reason="queue_full"}` (striped).
    pub dropped_queue_full: StripedCounter,
    /// `starling_messages_dropped_total{reason="offline_qos0"}` (striped).
    pub dropped_offline_qos0: StripedCounter,
    /// `starling_messages_dropped_total{reason="expired"}` (striped).
    pub dropped_expired: StripedCounter,
    /// `starling_messages_dropped_total{reason="too_large"}` (striped).
    pub dropped_too_large: StripedCounter,
    /// `starling_messages_dropped_total{reason="no_subscribers"}` (striped).
    pub dropped_no_subscribers: StripedCounter,
    /// `starling_messages_dropped_total{reason="not_authorized"}` (striped).
    pub dropped_not_authorized: StripedCounter,
    /// `starling_sessions_expired_total`.
    pub sessions_expired: Counter,
    /// `starling_sessions_taken_over_total`.
    pub sessions_taken_over: Counter,
    /// `starling_wills_published_total`.
    pub wills_published: Counter,
    /// `starling_acl_denied_total{action}`, `starling_limits_exceeded_total{limit}`.
    pub security: crate::auth::SecurityMetrics,
    /// `starling_message_delivery_latency_seconds`.
    pub delivery_latency: Histogram,
    /// `starling_auth_attempts_total{method,result}`.
    pub auth: crate::auth::AuthAttempts,
    /// `starling_listener_connections_*{listener}`, indexed by [`ListenerId`].
    listeners: Arc<RwLock<Vec<Option<ListenerMetrics>>>>,
    /// Topic shard actors (`actor="topic_shard"`).
    pub topic_shards: ActorMetrics,
    /// `starling_actor_mailbox_depth{actor="topic_shard"}`: messages sent to topic shards and
    /// not yet handled.
    pub topic_shard_mailbox_depth: Gauge,
    /// Session registry shard actors (`actor="registry_shard"`).
    pub registry_shards: ActorMetrics,
    /// `starling_actor_mailbox_depth{actor="registry_shard"}`: messages sent to registry shards
    /// and not yet handled (set by the node at scrape).
    pub registry_mailbox_depth: MailboxDepth,
    /// `starling_actor_failures_total` (incremented by the supervisor; registered here so the
    /// series exists from the start).
    pub actor_failures: Counter,
}

impl BrokerMetrics {
    /// Registers every handle with the installed recorder (or no-ops without one).
    pub fn register() -> BrokerMetrics {
        let dropped = |reason: &'static str| {
            striped::counter("starling_messages_dropped_total", &[("reason", reason)])
        };
        BrokerMetrics {
            connections_opened: counter!("starling_connections_opened_total"),
            connections_closed: ClosedConnectionCounters::register(),
            connections_current: gauge!("starling_connections_current"),
            protocol_errors: counter!("starling_protocol_errors_total"),
            messages_received: ["0", "1", "2"]
                .map(|qos| striped::counter("starling_messages_received_total", &[("qos", qos)])),
            messages_sent: ["0", "1", "2"]
                .map(|qos| striped::counter("starling_messages_sent_total", &[("qos", qos)])),
            bytes_received: striped::counter("starling_bytes_received_total", &[]),
            bytes_sent: striped::counter("starling_bytes_sent_total", &[]),
            dropped_queue_full: dropped("queue_full"),
            dropped_offline_qos0: dropped("offline_qos0"),
            dropped_expired: dropped("expired"),
            dropped_too_large: dropped("too_large"),
            dropped_no_subscribers: dropped("no_subscribers"),
            dropped_not_authorized: dropped("not_authorized"),
            sessions_expired: counter!("starling_sessions_expired_total"),
            sessions_taken_over: counter!("starling_sessions_taken_over_total"),
            wills_published: counter!("starling_wills_published_total"),
            security: crate::auth::SecurityMetrics::register(),
            delivery_latency: histogram::register(&DELIVERY_LATENCY, &[]),
            auth: crate::auth::AuthAttempts::register(),
            // The broker's listener 0 is `default` until the node names its listeners.
            listeners: Arc::new(RwLock::new(vec![Some(ListenerMetrics::register(
                "default",
            ))])),
            topic_shards: ActorMetrics::register("topic_shard"),
            topic_shard_mailbox_depth: gauge!("starling_actor_mailbox_depth", "actor" => "topic_shard"),
            registry_shards: ActorMetrics::register("registry_shard"),
            registry_mailbox_depth: MailboxDepth::default(),
            actor_failures: counter!("starling_actor_failures_total"),
        }
    }

    /// Records the latency of a delivery written to the socket buffer at `now`: from the
    /// message's receipt to now. Retained messages sent on subscribe (RETAIN set) are left out,
    /// since their age is not a latency.
    #[inline]
    pub fn observe_delivery(&self, delivery: &Delivery, now: tokio::time::Instant) {
        if delivery.retain || !histogram::is_enabled() {
            return;
        }
        if let Some(micros) = delivery.message.received_at.micros_until(now) {
            self.delivery_latency.record(micros);
        }
    }

    /// Names listener `id` for the per-listener figures (called when the broker registers it).
    pub fn register_listener(&self, id: ListenerId, name: &str) {
        let mut listeners = self.listeners.write();
        let idx = usize::from(id.0);
        if listeners.len() <= idx {
            listeners.resize(idx + 1, None);
        }
        listeners[idx] = Some(ListenerMetrics::register(name));
    }

    /// Counts a connection accepted on `listener`.
    pub fn listener_connection_opened(&self, listener: ListenerId) {
        if let Some(Some(metrics)) = self.listeners.read().get(usize::from(listener.0)) {
            metrics.opened.increment(1);
        }
    }

    /// Counts a connection of `listener` that closed. The open-connection gauge
    /// (`starling_listener_connections_current`) is kept by the node's listener, which also
    /// counts handshakes in progress.
    pub fn listener_connection_closed(&self, _listener: ListenerId) {}
}

impl ListenerMetrics {
    fn register(name: &str) -> ListenerMetrics {
        let name = name.to_owned();
        ListenerMetrics {
            opened: counter!("starling_listener_connections_opened_total", "listener" => name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_depth_counts_sent_and_taken_messages() {
        let depth = MailboxDepth::default();
        let sender = depth.clone();
        sender.sent();
        sender.sent();
        assert_eq!(depth.get(), 2);
        depth.taken();
        depth.taken();
        assert_eq!(depth.get(), 0);
    }

    #[test]
    fn close_reasons_index_their_counters_in_label_order() {
        for (idx, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, idx, "{}", reason.label());
        }
    }
}
