//! Messages between the coordinator and its workers: one JSON object per line on a worker
//! process's stdin (commands) and stdout (events), or the same values over channels when the
//! only worker runs in the coordinator's process.
//!
//! The sequence is: plan → `Ready` → `Start` → `Progress`… → `PublishDone` → `Stop` →
//! `Finished`; a worker may send `Failed` at any time.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;
use crate::stats::{Counters, ErrorLog, HistogramData};
use crate::tracker::RangeSet;

/// Everything a worker needs to run its share of the clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkerPlan {
    pub(crate) scenario: Scenario,
    pub(crate) run_id: u16,
    pub(crate) worker_idx: usize,
    pub(crate) num_workers: usize,
    pub(crate) broker: SocketAddr,
    pub(crate) source_addresses: Vec<IpAddr>,
    pub(crate) client_id_prefix: String,
}

/// A command from the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WorkerCommand {
    /// Start the measured phase at this wall-clock time (ns since the Unix epoch).
    Start { epoch_ns: u64 },
    /// Disconnect every client and report.
    Stop,
}

/// An event from a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WorkerEvent {
    /// Cumulative counters and the latencies recorded since the previous progress event.
    Progress(Progress),
    /// Every client has finished its first connection attempt.
    Ready(ReadyReport),
    /// Every publisher has stopped publishing.
    PublishDone(PublishDone),
    /// The final result.
    Finished(Box<WorkerResult>),
    /// The worker cannot go on.
    Failed { message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Progress {
    pub(crate) at_ns: u64,
    pub(crate) counters: Counters,
    pub(crate) latency_interval: HistogramData,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReadyReport {
    pub(crate) counters: Counters,
    pub(crate) connect_started_ns: u64,
    pub(crate) connect_finished_ns: u64,
    /// Global indices of subscribers whose first connection failed: nothing is expected
    /// for them.
    pub(crate) failed_subscribers: Vec<u32>,
    pub(crate) errors: ErrorLog,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PublishDone {
    /// `(publisher global index, messages sent)` for every publisher and backend.
    pub(crate) sent: Vec<(u32, u64)>,
    /// Measured deliveries received when the publish phase ended.
    pub(crate) received_at_publish_end: u64,
    /// CPU time of the worker process during the publish phase, seconds.
    pub(crate) cpu_secs: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkerResult {
    pub(crate) counters: Counters,
    pub(crate) latency: HistogramData,
    pub(crate) ack_latency: HistogramData,
    pub(crate) connect_latency: HistogramData,
    pub(crate) errors: ErrorLog,
    /// Distinct deliveries to clients that are not shared-subscription members.
    pub(crate) unique_received: u64,
    /// Received sets of shared-subscription groups: `(group, publisher, ranges)`.
    pub(crate) shared: Vec<(String, u32, RangeSet)>,
    /// CPU time the worker process used, seconds.
    pub(crate) cpu_secs: f64,
}
