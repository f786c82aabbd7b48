//! The per-second timeline built from worker progress and broker samples, and the live
//! progress line on stderr.

use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

use crate::control::Progress;
use crate::payload::now_ns;
use crate::procfs::ProcSample;
use crate::report::{ms, thousands, TimelinePoint};
use crate::stats::{new_histogram, Counters};

/// One second of the timeline.
struct Bucket {
    sent: u64,
    received: u64,
    connected: u64,
    latency: Histogram<u64>,
    broker: Option<ProcSample>,
}

impl Default for Bucket {
    fn default() -> Bucket {
        Bucket {
            sent: 0,
            received: 0,
            connected: 0,
            latency: new_histogram(),
            broker: None,
        }
    }
}

/// Per-second buckets from the first connection attempt.
pub(super) struct Timeline {
    start_ns: u64,
    buckets: Vec<Bucket>,
    publish_start_ns: Option<u64>,
    publish_end_ns: Option<u64>,
}

impl Timeline {
    pub(super) fn new(start_ns: u64) -> Timeline {
        Timeline {
            start_ns,
            buckets: Vec::new(),
            publish_start_ns: None,
            publish_end_ns: None,
        }
    }

    fn bucket(&mut self, at_ns: u64) -> &mut Bucket {
        // Bounded: one bucket per second of a run that is itself bounded in time.
        let idx = (at_ns.saturating_sub(self.start_ns) / 1_000_000_000) as usize;
        if self.buckets.len() <= idx {
            self.buckets.resize_with(idx + 1, Bucket::default);
        }
        &mut self.buckets[idx]
    }

    pub(super) fn add_progress(&mut self, previous: &Counters, progress: &Progress) {
        let counters = progress.counters;
        let bucket = self.bucket(progress.at_ns);
        bucket.sent += counters.sent.saturating_sub(previous.sent);
        bucket.received += counters.received.saturating_sub(previous.received);
        bucket.connected += counters.connected.saturating_sub(previous.connected);
        progress.latency_interval.add_to(&mut bucket.latency);
    }

    pub(super) fn add_broker_sample(&mut self, sample: Option<ProcSample>) {
        if let Some(sample) = sample {
            self.bucket(now_ns()).broker = Some(sample);
        }
    }

    pub(super) fn mark_publish_start(&mut self, at_ns: u64) {
        self.publish_start_ns = Some(at_ns);
    }

    pub(super) fn mark_publish_end(&mut self, at_ns: u64) {
        self.publish_end_ns = Some(at_ns);
    }

    /// Returns the rates of the last complete second: sent, received and p99.
    fn last_second(&self) -> Option<(u64, u64, u64)> {
        let idx = self.buckets.len().checked_sub(2)?;
        let bucket = &self.buckets[idx];
        let p99 = if bucket.latency.is_empty() {
            0
        } else {
            bucket.latency.value_at_quantile(0.99)
        };
        Some((bucket.sent, bucket.received, p99))
    }

    pub(super) fn into_points(self) -> Vec<TimelinePoint> {
        let mut points = Vec::with_capacity(self.buckets.len());
        let mut connected = 0;
        let mut previous_cpu: Option<f64> = None;
        for (idx, bucket) in self.buckets.into_iter().enumerate() {
            connected += bucket.connected;
            let quantile = |q: f64| {
                if bucket.latency.is_empty() {
                    0
                } else {
                    bucket.latency.value_at_quantile(q)
                }
            };
            let broker_cpu_pct = match (bucket.broker, previous_cpu) {
                (Some(sample), Some(previous)) => Some((sample.cpu_secs - previous) * 100.0),
                _ => None,
            };
            if let Some(sample) = bucket.broker {
                previous_cpu = Some(sample.cpu_secs);
            }
            points.push(TimelinePoint {
                t_secs: idx as f64,
                connected,
                sent: bucket.sent,
                received: bucket.received,
                p50_us: quantile(0.5),
                p99_us: quantile(0.99),
                max_us: if bucket.latency.is_empty() {
                    0
                } else {
                    bucket.latency.max()
                },
                broker_rss_bytes: bucket.broker.map(|sample| sample.rss_bytes),
                broker_cpu_pct,
            });
        }
        points
    }
}

/// The live progress line.
pub(super) struct LiveView {
    bar: ProgressBar,
    target_clients: u64,
    phase: &'static str,
    last_draw: Instant,
}

impl LiveView {
    pub(super) fn new(enabled: bool, target_clients: u64) -> LiveView {
        let target = if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        LiveView {
            bar,
            target_clients,
            phase: "starting",
            last_draw: Instant::now(),
        }
    }

    pub(super) fn set_phase(&mut self, phase: &'static str) {
        self.phase = phase;
    }

    pub(super) fn update(&mut self, total: &Counters, timeline: &Timeline) {
        if self.last_draw.elapsed() < Duration::from_millis(250) {
            return;
        }
        self.last_draw = Instant::now();
        let rates = timeline
            .last_second()
            .map_or(String::new(), |(sent, received, p99)| {
                format!(" | {sent}/s out, {received}/s in, p99 {}", ms(p99))
            });
        self.bar.set_message(format!(
            "{:<10} conn {}/{} (failed {}, lost {}) | sent {} | received {}{rates}",
            self.phase,
            thousands(total.connected),
            thousands(self.target_clients),
            thousands(total.connect_failed),
            thousands(total.connections_lost),
            thousands(total.sent),
            thousands(total.received),
        ));
    }

    pub(super) fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}
