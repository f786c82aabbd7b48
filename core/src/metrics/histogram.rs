//! Fixed-bucket histograms for the hot paths, rendered by the node next to the `metrics`
//! recorder's output.
//!
//! The `metrics` facade's histograms (as the Prometheus exporter implements them) keep every
//! observation, with a timestamp, until the next scrape or upkeep: at 800,000 deliveries a
//! second that is megabytes a second of buffered samples, and without a scraper it grows without
//! bound. These histograms instead count into fixed buckets: recording is a bucket search and
//! two relaxed atomic adds on a cache line of the recording thread's stripe, and the memory is
//! fixed (a few KiB per histogram).
//!
//! Histograms are process-global, like the installed recorder: [`register`] returns the same
//! histogram for the same name and labels, so brokers started again in one process (tests)
//! share them. Recording does nothing until [`enable`] is called (the node calls it when it
//! installs its Prometheus exporter), so `admin.metrics = false` costs one relaxed load.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    OnceLock,
};

use parking_lot::Mutex;

pub use super::striped::{enable, is_enabled};
use super::striped::{stripe_index, NUM_STRIPES};

/// Most bucket bounds a histogram can have (the `+Inf` bucket comes on top).
pub const MAX_BOUNDS: usize = 24;

static REGISTRY: Mutex<Vec<&'static HistogramCore>> = Mutex::new(Vec::new());

/// The fixed description of a histogram metric.
#[derive(Debug)]
pub struct HistogramSpec {
    /// Metric name (`starling_<area>_<thing>_<unit>`).
    pub name: &'static str,
    /// Help text of the exposition's `# HELP` line.
    pub help: &'static str,
    /// Upper bounds of the buckets in recorded units, ascending (at most [`MAX_BOUNDS`]).
    pub bounds: &'static [u64],
    /// Recorded units per exported unit: 1e6 for microseconds exported as seconds, 1 for counts.
    pub units_per_exported_unit: f64,
}

#[repr(align(128))]
struct Stripe {
    /// Non-cumulative counts; the last one is the `+Inf` bucket.
    buckets: [AtomicU64; MAX_BOUNDS + 1],
    /// Sum of the recorded values, in recorded units.
    sum: AtomicU64,
}

struct HistogramCore {
    spec: &'static HistogramSpec,
    labels: Vec<(&'static str, String)>,
    stripes: [Stripe; NUM_STRIPES],
}

/// Handle to a registered histogram: `Copy`, eight bytes; clone it into the hot path once.
#[derive(Clone, Copy)]
pub struct Histogram(&'static HistogramCore);

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("name", &self.0.spec.name)
            .field("labels", &self.0.labels)
            .finish()
    }
}

/// Returns the histogram of `spec` with `labels`, registering it on first use.
///
/// # Panics
/// Panics if `spec.bounds` has more than [`MAX_BOUNDS`] entries or is not ascending: a
/// programming error in a static spec, caught by the first test that registers it.
pub fn register(spec: &'static HistogramSpec, labels: &[(&'static str, &str)]) -> Histogram {
    assert!(
        spec.bounds.len() <= MAX_BOUNDS && spec.bounds.windows(2).all(|w| w[0] < w[1]),
        "bad bucket bounds of {}",
        spec.name
    );
    let mut registry = REGISTRY.lock();
    if let Some(core) = registry.iter().find(|core| {
        core.spec.name == spec.name
            && core.labels.len() == labels.len()
            && core
                .labels
                .iter()
                .zip(labels)
                .all(|((n1, v1), (n2, v2))| n1 == n2 && v1 == v2)
    }) {
        return Histogram(core);
    }
    // Leaked on purpose: a histogram lives as long as the process, like the recorder's metrics,
    // and the number of them is fixed (one per spec and label set).
    let core: &'static HistogramCore = Box::leak(Box::new(HistogramCore {
        spec,
        labels: labels
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect(),
        stripes: std::array::from_fn(|_| Stripe {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }),
    }));
    registry.push(core);
    Histogram(core)
}

impl Histogram {
    /// Records one value, in the spec's recorded units (microseconds, counts).
    #[inline]
    pub fn record(self, value: u64) {
        if !is_enabled() {
            return;
        }
        let core = self.0;
        let bucket = core.spec.bounds.partition_point(|&bound| bound < value);
        let stripe = &core.stripes[stripe_index()];
        stripe.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        stripe.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Records a duration in microseconds (for specs recorded in microseconds).
    #[inline]
    pub fn record_duration(self, duration: std::time::Duration) {
        self.record(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
    }

    /// Reads the current counts.
    pub fn snapshot(self) -> HistogramSnapshot {
        snapshot(self.0)
    }
}

/// The counts of one histogram at one moment, in exported units.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Metric name.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Label names and values (without `le`).
    pub labels: Vec<(&'static str, String)>,
    /// `(upper bound, cumulative count)` per bucket, ending with `(+Inf, count)`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the observations.
    pub sum: f64,
    /// Number of observations (equal to the `+Inf` bucket).
    pub count: u64,
}

fn snapshot(core: &HistogramCore) -> HistogramSnapshot {
    let spec = core.spec;
    let mut counts = [0u64; MAX_BOUNDS + 1];
    let mut sum = 0u64;
    for stripe in &core.stripes {
        for (total, bucket) in counts.iter_mut().zip(&stripe.buckets) {
            *total += bucket.load(Ordering::Relaxed);
        }
        sum = sum.wrapping_add(stripe.sum.load(Ordering::Relaxed));
    }
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(spec.bounds.len() + 1);
    for (idx, bound) in spec.bounds.iter().enumerate() {
        cumulative += counts[idx];
        buckets.push((*bound as f64 / spec.units_per_exported_unit, cumulative));
    }
    cumulative += counts[spec.bounds.len()];
    buckets.push((f64::INFINITY, cumulative));
    HistogramSnapshot {
        name: spec.name,
        help: spec.help,
        labels: core.labels.clone(),
        buckets,
        sum: sum as f64 / spec.units_per_exported_unit,
        count: cumulative,
    }
}

/// Reads every registered histogram, grouped by name in registration order.
pub fn snapshot_all() -> Vec<HistogramSnapshot> {
    let cores: Vec<&'static HistogramCore> = REGISTRY.lock().clone();
    let mut names: Vec<&'static str> = Vec::new();
    for core in &cores {
        if !names.contains(&core.spec.name) {
            names.push(core.spec.name);
        }
    }
    names
        .iter()
        .flat_map(|name| {
            cores
                .iter()
                .filter(move |core| core.spec.name == *name)
                .map(|core| snapshot(core))
        })
        .collect()
}

/// Microsecond bounds from 50 µs to 10 s: deliveries, flushes, mailbox waits.
pub const LATENCY_BOUNDS_MICROS: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A process-wide zero point for cheap timestamps (see [`crate::message::ReceivedAt`]).
pub(crate) fn clock_epoch() -> std::time::Instant {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    static TEST_SPEC: HistogramSpec = HistogramSpec {
        name: "starling_test_histogram_seconds",
        help: "test",
        bounds: &[10, 100, 1000],
        units_per_exported_unit: 1e3,
    };

    #[test]
    fn values_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        enable();
        let histogram = register(&TEST_SPEC, &[("kind", "a")]);
        let before = histogram.snapshot();
        for value in [0, 10, 11, 100, 999, 1000, 1001, 50_000] {
            histogram.record(value);
        }
        let after = histogram.snapshot();
        let delta: Vec<u64> = after
            .buckets
            .iter()
            .zip(&before.buckets)
            .map(|(a, b)| a.1 - b.1)
            .collect();
        // Cumulative: le=0.01 holds 0 and 10; le=0.1 adds 11 and 100; le=1 adds 999 and 1000.
        assert_eq!(delta, vec![2, 4, 6, 8]);
        assert_eq!(after.count - before.count, 8);
        assert!(
            (after.sum - before.sum - 53.121).abs() < 1e-9,
            "{}",
            after.sum
        );
        assert_eq!(after.buckets[0].0, 0.01);
        assert_eq!(after.buckets[3].0, f64::INFINITY);
    }

    #[test]
    fn the_same_name_and_labels_give_the_same_histogram() {
        enable();
        let first = register(&TEST_SPEC, &[("kind", "b")]);
        let again = register(&TEST_SPEC, &[("kind", "b")]);
        let other = register(&TEST_SPEC, &[("kind", "c")]);
        let before = other.snapshot().count;
        first.record(5);
        again.record(5);
        assert!(std::ptr::eq(first.0, again.0));
        assert_eq!(other.snapshot().count, before);
        let all = snapshot_all();
        let names: Vec<_> = all
            .iter()
            .filter(|s| s.name == TEST_SPEC.name)
            .map(|s| s.labels[0].1.clone())
            .collect();
        assert!(names.contains(&"b".to_owned()) && names.contains(&"c".to_owned()));
    }

    #[test]
    fn threads_recording_at_once_lose_nothing() {
        enable();
        let histogram = register(&TEST_SPEC, &[("kind", "threads")]);
        let before = histogram.snapshot().count;
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for value in 0..10_000 {
                        histogram.record(value % 2000);
                    }
                });
            }
        });
        assert_eq!(histogram.snapshot().count - before, 40_000);
    }
}
