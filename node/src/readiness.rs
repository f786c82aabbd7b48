//! Readiness of the node: true once every listener is bound, false from the first step of the
//! shutdown sequence, so `/readyz` takes the node out of a load balancer before it drains.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

/// Shared readiness flag. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Returns true while the node accepts clients.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
}
