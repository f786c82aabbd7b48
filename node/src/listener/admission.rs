//! Per-listener admission: at most `max_connections` open connections and at most
//! `max_connect_rate_per_sec` new ones per second. A connection over either limit is closed
//! right after `accept` and counted in `starling_listener_connections_refused_total`.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use metrics::{counter, gauge, Counter, Gauge};
use tokio::time::Instant;

use crate::config::ListenerConfig;

/// Shared by a listener and its connections.
pub(crate) struct ListenerCounters {
    /// Connections of this listener now open (handshakes included).
    num_open: AtomicUsize,
    open_gauge: Gauge,
    pub(crate) refused_max_connections: Counter,
    pub(crate) refused_rate_limit: Counter,
    pub(crate) handshake_timeouts: Counter,
    pub(crate) handshake_client_certificate: Counter,
    pub(crate) handshake_tls: Counter,
    pub(crate) handshake_websocket: Counter,
}

impl ListenerCounters {
    pub(crate) fn register(listener: &str) -> Arc<ListenerCounters> {
        let refused = |reason: &'static str| counter!("starling_listener_connections_refused_total", "listener" => listener.to_string(), "reason" => reason);
        let failed = |reason: &'static str| counter!("starling_listener_handshake_failures_total", "listener" => listener.to_string(), "reason" => reason);
        Arc::new(ListenerCounters {
            num_open: AtomicUsize::new(0),
            open_gauge: gauge!("starling_listener_connections_current", "listener" => listener.to_string()),
            refused_max_connections: refused("max_connections"),
            refused_rate_limit: refused("rate_limit"),
            handshake_timeouts: failed("timeout"),
            handshake_client_certificate: failed("client_certificate"),
            handshake_tls: failed("tls"),
            handshake_websocket: failed("websocket"),
        })
    }
}

/// One open connection of a listener; counts it until dropped with the connection task.
pub(crate) struct ListenerSlot(Arc<ListenerCounters>);

impl Drop for ListenerSlot {
    fn drop(&mut self) {
        self.0.num_open.fetch_sub(1, Ordering::Relaxed);
        self.0.open_gauge.decrement(1.0);
    }
}

/// The accept loop's gate; owned by that loop alone.
pub(crate) struct Admission {
    counters: Arc<ListenerCounters>,
    max_connections: Option<usize>,
    rate: Option<TokenBucket>,
}

/// Allows `rate` connections per second with bursts of one second's worth.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.refilled_at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

impl Admission {
    pub(crate) fn new(config: &ListenerConfig, counters: Arc<ListenerCounters>) -> Admission {
        Admission {
            counters,
            max_connections: config.max_connections,
            rate: config.max_connect_rate_per_sec.map(|rate| TokenBucket {
                rate: f64::from(rate),
                tokens: f64::from(rate),
                refilled_at: Instant::now(),
            }),
        }
    }

    /// Admits one accepted connection, or counts why not.
    pub(crate) fn admit(&mut self) -> Option<ListenerSlot> {
        let counters = &self.counters;
        if let Some(max) = self.max_connections {
            if counters.num_open.load(Ordering::Relaxed) >= max {
                counters.refused_max_connections.increment(1);
                return None;
            }
        }
        if let Some(bucket) = &mut self.rate {
            if !bucket.try_take(Instant::now()) {
                counters.refused_rate_limit.increment(1);
                return None;
            }
        }
        counters.num_open.fetch_add(1, Ordering::Relaxed);
        counters.open_gauge.increment(1.0);
        Some(ListenerSlot(counters.clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(max_connections: Option<usize>, rate: Option<u32>) -> ListenerConfig {
        ListenerConfig {
            name: "test".to_string(),
            protocol: crate::config::ListenerProtocol::Tcp,
            bind: "127.0.0.1:0".parse().unwrap(),
            max_connections,
            max_connect_rate_per_sec: rate,
            handshake_timeout: Duration::from_secs(1),
            tls: None,
            websocket_path: None,
        }
    }

    #[test]
    fn max_connections_counts_open_slots() {
        let mut admission = Admission::new(&config(Some(2), None), ListenerCounters::register("a"));
        let first = admission.admit().unwrap();
        let _second = admission.admit().unwrap();
        assert!(admission.admit().is_none());
        drop(first);
        assert!(admission.admit().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_allows_one_second_of_burst_then_the_rate() {
        let mut admission = Admission::new(&config(None, Some(5)), ListenerCounters::register("b"));
        let admitted: Vec<_> = (0..8).filter_map(|_| admission.admit()).collect();
        assert_eq!(admitted.len(), 5);
        tokio::time::advance(Duration::from_millis(400)).await;
        let admitted: Vec<_> = (0..8).filter_map(|_| admission.admit()).collect();
        assert_eq!(admitted.len(), 2, "0.4 s refill 2 tokens at 5/s");
    }
}
