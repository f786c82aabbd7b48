//! Counters for the per-message paths, striped per thread so that two threads counting the same
//! thing do not bounce one cache line between their cores.
//!
//! A `metrics` facade counter (as the Prometheus exporter implements it) is one shared atomic:
//! at hundreds of thousands of messages a second, with the publisher's and the subscriber's
//! connection tasks on different worker threads, every increment moves that cache line. A
//! [`StripedCounter`] adds to the recording thread's own stripe instead; [`sync_all`] sums the
//! stripes into the recorder's counters (`Counter::absolute`) before the node renders
//! `/metrics`.
//!
//! Like the histograms these counters are process-global (one per name and labels) and do
//! nothing until [`enable`] is called: the node enables them with its exporter, so
//! `admin.metrics = false` costs one relaxed load per increment.

use std::{
    cell::Cell,
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
};

use metrics::Label;
use parking_lot::Mutex;

/// Threads are spread over this many stripes.
pub(crate) const NUM_STRIPES: usize = 8;

static ENABLED: AtomicBool = AtomicBool::new(false);
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);
static REGISTRY: Mutex<Vec<&'static StripedCore>> = Mutex::new(Vec::new());

thread_local! {
    static STRIPE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Turns the striped counters and the histograms on for the whole process (for good).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether [`enable`] was called.
#[inline]
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The calling thread's stripe.
#[inline]
pub(crate) fn stripe_index() -> usize {
    STRIPE.with(|stripe| match stripe.get() {
        Some(idx) => idx,
        None => {
            let idx = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % NUM_STRIPES;
            stripe.set(Some(idx));
            idx
        }
    })
}

/// One counter value on a cache line of its own (128 bytes: adjacent lines are fetched in pairs).
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

struct StripedCore {
    name: &'static str,
    labels: Vec<Label>,
    stripes: [Padded; NUM_STRIPES],
}

impl StripedCore {
    fn sum(&self) -> u64 {
        self.stripes.iter().fold(0u64, |sum, stripe| {
            sum.wrapping_add(stripe.0.load(Ordering::Relaxed))
        })
    }
}

/// A hot-path counter: `Copy`, eight bytes.
#[derive(Clone, Copy)]
pub struct StripedCounter(&'static StripedCore);

impl std::fmt::Debug for StripedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripedCounter")
            .field("name", &self.0.name)
            .field("value", &self.0.sum())
            .finish()
    }
}

/// Returns the counter `name` with `labels`, registering it on first use.
pub fn counter(name: &'static str, labels: &[(&'static str, &'static str)]) -> StripedCounter {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(key, value)| Label::new(*key, *value))
        .collect();
    let mut registry = REGISTRY.lock();
    if let Some(core) = registry
        .iter()
        .find(|core| core.name == name && core.labels == labels)
    {
        return StripedCounter(core);
    }
    // Leaked on purpose: one per name and label set, for the life of the process.
    let core: &'static StripedCore = Box::leak(Box::new(StripedCore {
        name,
        labels,
        stripes: Default::default(),
    }));
    registry.push(core);
    StripedCounter(core)
}

impl StripedCounter {
    /// Adds `value` (a no-op until [`enable`]).
    #[inline]
    pub fn increment(self, value: u64) {
        if is_enabled() {
            self.0.stripes[stripe_index()]
                .0
                .fetch_add(value, Ordering::Relaxed);
        }
    }

    /// The current total.
    pub fn get(self) -> u64 {
        self.0.sum()
    }
}

/// Hands every striped counter's total to the installed recorder's counter of the same name
/// and labels (looked up now, so a recorder installed after registration is still served).
pub fn sync_all() {
    let cores: Vec<&'static StripedCore> = REGISTRY.lock().clone();
    for core in cores {
        metrics::counter!(core.name, core.labels.clone()).absolute(core.sum());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_from_many_threads_add_up() {
        enable();
        let first = counter("starling_test_striped_total", &[("kind", "threads")]);
        let again = counter("starling_test_striped_total", &[("kind", "threads")]);
        let before = first.get();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        again.increment(2);
                    }
                });
            }
        });
        assert_eq!(first.get() - before, 80_000);
        let other = counter("starling_test_striped_total", &[("kind", "other")]);
        assert_eq!(other.get(), 0);
    }
}
