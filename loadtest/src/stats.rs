//! Counters and HDR histograms shared by the clients of one worker, and their serialisable
//! snapshots sent to the coordinator.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded, microseconds (one minute); larger values are clamped.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Distinct connection error kinds kept; further kinds are counted under "other".
const MAX_ERROR_KINDS: usize = 32;

/// Returns an empty latency histogram: 1 µs to 60 s with 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("bounds are valid constants")
}

/// Records a latency, clamped to the histogram's range.
pub(crate) fn record_latency(histogram: &mut Histogram<u64>, latency_us: u64) {
    histogram.saturating_record(latency_us.clamp(1, MAX_LATENCY_US));
}

/// A histogram as `(value, count)` pairs of its non-empty buckets, for JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct HistogramData(pub(crate) Vec<(u64, u64)>);

impl HistogramData {
    pub(crate) fn from_histogram(histogram: &Histogram<u64>) -> HistogramData {
        HistogramData(
            histogram
                .iter_recorded()
                .map(|bucket| (bucket.value_iterated_to(), bucket.count_at_value()))
                .collect(),
        )
    }

    pub(crate) fn add_to(&self, histogram: &mut Histogram<u64>) {
        for &(value, count) in &self.0 {
            let _ = histogram.record_n(value.clamp(1, MAX_LATENCY_US), count);
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Smallest value.
    pub min_us: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest value.
    pub max_us: u64,
}

impl LatencySummary {
    pub(crate) fn of(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: histogram.len(),
            min_us: histogram.min(),
            mean_us: histogram.mean(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// Cumulative counters of one worker (or, summed, of a run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Connection attempts, reconnects included.
    pub connect_attempts: u64,
    /// First connections that succeeded (CONNACK accepted, subscriptions granted).
    pub connected: u64,
    /// First connections that failed.
    pub connect_failed: u64,
    /// Connections closed by the broker or the network during the run.
    pub connections_lost: u64,
    /// Successful reconnects (churn or after a loss).
    pub reconnects: u64,
    /// Reconnects that found their session (Session Present).
    pub sessions_resumed: u64,
    /// PUBLISH packets written (commands and responses included).
    pub sent: u64,
    /// QoS 1/2 publishes acknowledged (PUBACK or PUBCOMP) with success.
    pub acked: u64,
    /// QoS 1/2 publishes acknowledged with an error reason code.
    pub rejected: u64,
    /// QoS 1/2 publishes written but unacknowledged when the client stopped.
    pub unacked: u64,
    /// Measured deliveries received (duplicates included).
    pub received: u64,
    /// Deliveries without a swarm header of this run.
    pub foreign: u64,
    /// Commands received by devices (request/response).
    pub commands_received: u64,
}

impl Counters {
    /// Adds another worker's counters.
    pub(crate) fn add(&mut self, other: &Counters) {
        self.connect_attempts += other.connect_attempts;
        self.connected += other.connected;
        self.connect_failed += other.connect_failed;
        self.connections_lost += other.connections_lost;
        self.reconnects += other.reconnects;
        self.sessions_resumed += other.sessions_resumed;
        self.sent += other.sent;
        self.acked += other.acked;
        self.rejected += other.rejected;
        self.unacked += other.unacked;
        self.received += other.received;
        self.foreign += other.foreign;
        self.commands_received += other.commands_received;
    }
}

/// The atomic form of [`Counters`], updated by client tasks.
#[derive(Debug, Default)]
pub(crate) struct AtomicCounters {
    pub(crate) connect_attempts: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) connect_failed: AtomicU64,
    pub(crate) connections_lost: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) sessions_resumed: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) unacked: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) foreign: AtomicU64,
    pub(crate) commands_received: AtomicU64,
}

/// Adds `value` to a counter; relaxed ordering, as counters are only summed.
pub(crate) fn bump(counter: &AtomicU64, value: u64) {
    if value != 0 {
        counter.fetch_add(value, Ordering::Relaxed);
    }
}

impl AtomicCounters {
    pub(crate) fn snapshot(&self) -> Counters {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Counters {
            connect_attempts: load(&self.connect_attempts),
            connected: load(&self.connected),
            connect_failed: load(&self.connect_failed),
            connections_lost: load(&self.connections_lost),
            reconnects: load(&self.reconnects),
            sessions_resumed: load(&self.sessions_resumed),
            sent: load(&self.sent),
            acked: load(&self.acked),
            rejected: load(&self.rejected),
            unacked: load(&self.unacked),
            received: load(&self.received),
            foreign: load(&self.foreign),
            commands_received: load(&self.commands_received),
        }
    }
}

/// The histograms of one worker.
#[derive(Debug)]
pub(crate) struct Histograms {
    /// End-to-end latency over the whole run.
    pub(crate) latency: Histogram<u64>,
    /// End-to-end latency since the last progress report.
    pub(crate) latency_interval: Histogram<u64>,
    /// Publish to PUBACK/PUBCOMP.
    pub(crate) ack_latency: Histogram<u64>,
    /// TCP connect to CONNACK (and SUBACK).
    pub(crate) connect_latency: Histogram<u64>,
}

impl Default for Histograms {
    fn default() -> Histograms {
        Histograms {
            latency: new_histogram(),
            latency_interval: new_histogram(),
            ack_latency: new_histogram(),
            connect_latency: new_histogram(),
        }
    }
}

/// Connection errors by kind, plus the first full message.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ErrorLog {
    pub(crate) by_kind: BTreeMap<String, u64>,
    pub(crate) first: Option<String>,
}

impl ErrorLog {
    pub(crate) fn record(&mut self, kind: &str, message: impl FnOnce() -> String) {
        if self.first.is_none() {
            self.first = Some(message());
        }
        let key = if self.by_kind.len() < MAX_ERROR_KINDS || self.by_kind.contains_key(kind) {
            kind
        } else {
            "other"
        };
        *self.by_kind.entry(key.to_owned()).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: &ErrorLog) {
        if self.first.is_none() {
            self.first.clone_from(&other.first);
        }
        for (kind, count) in &other.by_kind {
            *self.by_kind.entry(kind.clone()).or_default() += count;
        }
    }
}

/// What the clients of one worker update.
#[derive(Debug, Default)]
pub(crate) struct WorkerStats {
    pub(crate) counters: AtomicCounters,
    /// Locked once per batch of messages, never across `.await`.
    pub(crate) histograms: Mutex<Histograms>,
    /// Locked on connection errors only, never across `.await`.
    pub(crate) errors: Mutex<ErrorLog>,
    /// Wall-clock time the last first connection attempt finished, nanoseconds.
    pub(crate) last_connect_done_ns: AtomicU64,
    /// Global indices of subscribers whose first connection failed.
    pub(crate) failed_subscribers: Mutex<Vec<u32>>,
}

impl WorkerStats {
    /// Records a batch of end-to-end latencies.
    pub(crate) fn record_latencies(&self, latencies_us: &[u64]) {
        if latencies_us.is_empty() {
            return;
        }
        let mut histograms = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        for &latency_us in latencies_us {
            record_latency(&mut histograms.latency, latency_us);
            record_latency(&mut histograms.latency_interval, latency_us);
        }
    }

    /// Records a batch of publish-to-ack latencies.
    pub(crate) fn record_ack_latencies(&self, latencies_us: &[u64]) {
        if latencies_us.is_empty() {
            return;
        }
        let mut histograms = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        for &latency_us in latencies_us {
            record_latency(&mut histograms.ack_latency, latency_us);
        }
    }

    pub(crate) fn record_connect_latency(&self, latency_us: u64) {
        let mut histograms = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        record_latency(&mut histograms.connect_latency, latency_us);
    }

    pub(crate) fn record_error(&self, kind: &str, message: impl FnOnce() -> String) {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(kind, message);
    }

    /// Takes the interval histogram, leaving an empty one.
    pub(crate) fn take_interval(&self) -> HistogramData {
        let mut histograms = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        let data = HistogramData::from_histogram(&histograms.latency_interval);
        histograms.latency_interval.reset();
        data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_data_round_trips_percentiles() {
        let mut histogram = new_histogram();
        for value in 1..=10_000u64 {
            record_latency(&mut histogram, value);
        }
        let mut copy = new_histogram();
        HistogramData::from_histogram(&histogram).add_to(&mut copy);
        assert_eq!(LatencySummary::of(&copy), LatencySummary::of(&histogram));
        assert_eq!(LatencySummary::of(&copy).count, 10_000);
    }

    #[test]
    fn error_log_keeps_the_first_message_and_counts_kinds() {
        let mut log = ErrorLog::default();
        log.record("connection refused", || "127.0.0.1:1: refused".to_owned());
        log.record("connection refused", || "second".to_owned());
        log.record("timeout", || "third".to_owned());
        assert_eq!(log.first.as_deref(), Some("127.0.0.1:1: refused"));
        assert_eq!(log.by_kind["connection refused"], 2);
        assert_eq!(log.by_kind["timeout"], 1);
    }
}
