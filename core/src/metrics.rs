//! Metric handles of the core, registered once and cloned into the hot paths.
//!
//! Names follow `starling_<area>_<thing>_<unit|total>`; labels have bounded cardinality (never a
//! client id or a topic). Without an installed recorder every handle is a no-op.

use metrics::{counter, gauge, Counter, Gauge};

/// Counters and gauges the connection tasks, the router and the registry update.
#[derive(Clone)]
pub struct BrokerMetrics {
    /// `starling_connections_opened_total`.
    pub connections_opened: Counter,
    /// `starling_connections_closed_total` (all reasons).
    pub connections_closed: Counter,
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
}

impl BrokerMetrics {
    /// Registers every handle with the installed recorder (or no-ops without one).
    pub fn register() -> BrokerMetrics {
        let dropped =
            |reason: &'static str| counter!("starling_messages_dropped_total", "reason" => reason);
        BrokerMetrics {
            connections_opened: counter!("starling_connections_opened_total"),
            connections_closed: counter!("starling_connections_closed_total"),
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
        }
    }
}
