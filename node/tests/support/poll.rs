//! Bounded polling shared by every integration-test support module.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

/// Polls `condition` every 20 ms until it holds; panics naming `what` after `timeout`.
pub(crate) async fn eventually<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
