//! Counters of one bridge, kept as numbers for tests and exported as `starling_bridge_*` metrics.
//!
//! Every metric carries a `bridge` label with the bridge's name.

use metrics::{Counter, Gauge};

/// Messages the sink accepted.
pub const SENT_MESSAGES_TOTAL: &str = "starling_bridge_sent_messages_total";
/// Messages discarded: pushed into a full `drop_newest` buffer, or in a batch the sink rejected.
pub const DROPPED_MESSAGES_TOTAL: &str = "starling_bridge_dropped_messages_total";
/// Attempts to send a batch that failed, whether the batch was retried or rejected.
pub const FAILED_SENDS_TOTAL: &str = "starling_bridge_failed_sends_total";
/// Messages waiting in the bridge buffer, sampled after each drain.
pub const BUFFERED_MESSAGES: &str = "starling_bridge_buffered_messages";

/// A snapshot of one bridge's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BridgeCounters {
    /// Messages the sink accepted.
    pub num_sent_messages: u64,
    /// Messages discarded by the buffer or rejected by the sink.
    pub num_dropped_messages: u64,
    /// Failed attempts to send a batch.
    pub num_failed_sends: u64,
    /// Messages waiting in the buffer.
    pub num_buffered_messages: u64,
}

/// Registers descriptions of the bridge metrics with the installed recorder.
///
/// The node calls it once after installing its metrics exporter.
pub fn describe_bridge_metrics() {
    metrics::describe_counter!(SENT_MESSAGES_TOTAL, "messages a bridge sink accepted");
    metrics::describe_counter!(
        DROPPED_MESSAGES_TOTAL,
        "messages a bridge discarded because its buffer was full or its sink rejected them"
    );
    metrics::describe_counter!(
        FAILED_SENDS_TOTAL,
        "failed attempts to send a batch to a sink"
    );
    metrics::describe_gauge!(BUFFERED_MESSAGES, "messages waiting in a bridge buffer");
}

/// Metric handles of one bridge, registered once with the recorder current at creation.
#[derive(Debug, Clone)]
pub(crate) struct BridgeMetrics {
    pub(crate) sent_messages: Counter,
    pub(crate) dropped_messages: Counter,
    pub(crate) failed_sends: Counter,
    pub(crate) buffered_messages: Gauge,
}

impl BridgeMetrics {
    pub(crate) fn new(bridge_name: &str) -> BridgeMetrics {
        let bridge_name = bridge_name.to_owned();
        BridgeMetrics {
            sent_messages: metrics::counter!(SENT_MESSAGES_TOTAL, "bridge" => bridge_name.clone()),
            dropped_messages: metrics::counter!(
                DROPPED_MESSAGES_TOTAL,
                "bridge" => bridge_name.clone()
            ),
            failed_sends: metrics::counter!(FAILED_SENDS_TOTAL, "bridge" => bridge_name.clone()),
            buffered_messages: metrics::gauge!(BUFFERED_MESSAGES, "bridge" => bridge_name),
        }
    }
}
