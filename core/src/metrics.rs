//! Metric handles of the core, registered once and cloned into the hot paths.
//!
//! Names follow `starling_<area>_<thing>_<unit|total>`; labels have bounded cardinality (never a
//! client id or a topic). Without an installed recorder every handle is a no-op.

use metrics::{counter, gauge, Counter, Gauge};

use crate::codec::ReasonCode;

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
    /// `starling_messages_received_total{qos}`.
    pub messages_received: [Counter; 3],
    /// `starling_messages_sent_total{qos}`.
    pub messages_sent: [Counter; 3],
    /// `starling_bytes_received_total`.
    pub bytes_received: Counter,
    /// `starling_bytes_sent_total`.
    pub bytes_sent: Counter,
    /// `starling_messages_dropped_total{reason="queue_full"}`.
    pub dropped_queue_full: Counter,
    /// `starling_messages_dropped_total{reason="offline_qos0"}`.
    pub dropped_offline_qos0: Counter,
    /// `starling_messages_dropped_total{reason="expired"}`.
    pub dropped_expired: Counter,
    /// `starling_messages_dropped_total{reason="too_large"}`.
    pub dropped_too_large: Counter,
    /// `starling_messages_dropped_total{reason="no_subscribers"}`.
    pub dropped_no_subscribers: Counter,
    /// `starling_messages_dropped_total{reason="not_authorized"}`.
    pub dropped_not_authorized: Counter,
    /// `starling_sessions_expired_total`.
    pub sessions_expired: Counter,
    /// `starling_sessions_taken_over_total`.
    pub sessions_taken_over: Counter,
    /// `starling_wills_published_total`.
    pub wills_published: Counter,
    /// `starling_acl_denied_total{action}`, `starling_limits_exceeded_total{limit}`.
    pub security: crate::auth::SecurityMetrics,
}

impl BrokerMetrics {
    /// Registers every handle with the installed recorder (or no-ops without one).
    pub fn register() -> BrokerMetrics {
        let dropped =
            |reason: &'static str| counter!("starling_messages_dropped_total", "reason" => reason);
        BrokerMetrics {
            connections_opened: counter!("starling_connections_opened_total"),
            connections_closed: ClosedConnectionCounters::register(),
            connections_current: gauge!("starling_connections_current"),
            protocol_errors: counter!("starling_protocol_errors_total"),
            messages_received: [
                counter!("starling_messages_received_total", "qos" => "0"),
                counter!("starling_messages_received_total", "qos" => "1"),
                counter!("starling_messages_received_total", "qos" => "2"),
            ],
            messages_sent: [
                counter!("starling_messages_sent_total", "qos" => "0"),
                counter!("starling_messages_sent_total", "qos" => "1"),
                counter!("starling_messages_sent_total", "qos" => "2"),
            ],
            bytes_received: counter!("starling_bytes_received_total"),
            bytes_sent: counter!("starling_bytes_sent_total"),
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_index_their_counters_in_label_order() {
        for (idx, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, idx, "{}", reason.label());
        }
    }
}
