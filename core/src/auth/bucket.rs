//! Per-client publish limits: a token bucket for messages and one for bytes.

use std::time::Duration;

use tokio::time::Instant;

/// What happens when a client publishes faster than its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitAction {
    /// Stop reading from the client until the buckets refill: TCP backpressure slows it down
    /// and nothing is lost (the default).
    Throttle,
    /// Close the connection: DISCONNECT 0x96 Message rate too high (MQTT 5), then close.
    Disconnect,
}

/// Publish limits of one client. A bucket holds up to its burst and refills at its rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// PUBLISH packets per second (0: unlimited).
    pub messages_per_sec: u32,
    /// Messages the client may send at once above the rate.
    pub message_burst: u32,
    /// Payload and topic bytes per second (0: unlimited).
    pub bytes_per_sec: u32,
    /// Bytes the client may send at once above the rate.
    pub byte_burst: u32,
    /// What happens beyond the limits.
    pub action: RateLimitAction,
}

/// Which limit a publish exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// The message rate.
    Messages,
    /// The byte rate.
    Bytes,
}

/// The buckets of one connection.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limits: RateLimits,
    messages: f64,
    bytes: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// Starts with full buckets.
    pub fn new(limits: RateLimits) -> TokenBucket {
        TokenBucket {
            limits,
            messages: f64::from(limits.message_burst.max(1)),
            bytes: f64::from(limits.byte_burst.max(1)),
            refilled_at: Instant::now(),
        }
    }

    /// Returns the limits.
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// Takes one message of `size` bytes. Returns `None` within the limits, else the exceeded
    /// limit and how long the client must pause for the buckets to be even again.
    pub fn take(&mut self, size: usize, now: Instant) -> Option<(Exceeded, Duration)> {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.refilled_at = now;
        let mut wait = 0.0f64;
        let mut exceeded = None;
        if self.limits.messages_per_sec > 0 {
            let rate = f64::from(self.limits.messages_per_sec);
            let burst = f64::from(self.limits.message_burst.max(1));
            self.messages = (self.messages + elapsed * rate).min(burst) - 1.0;
            if self.messages < 0.0 {
                wait = -self.messages / rate;
                exceeded = Some(Exceeded::Messages);
            }
        }
        if self.limits.bytes_per_sec > 0 {
            let rate = f64::from(self.limits.bytes_per_sec);
            let burst = f64::from(self.limits.byte_burst.max(1));
            self.bytes = (self.bytes + elapsed * rate).min(burst) - size as f64;
            if self.bytes < 0.0 {
                let bytes_wait = -self.bytes / rate;
                if bytes_wait > wait || exceeded.is_none() {
                    wait = wait.max(bytes_wait);
                    exceeded = Some(Exceeded::Bytes);
                }
            }
        }
        exceeded.map(|kind| (kind, Duration::from_secs_f64(wait.min(3600.0))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(messages_per_sec: u32, bytes_per_sec: u32) -> RateLimits {
        RateLimits {
            messages_per_sec,
            message_burst: messages_per_sec,
            bytes_per_sec,
            byte_burst: bytes_per_sec,
            action: RateLimitAction::Throttle,
        }
    }

    #[test]
    fn burst_passes_then_the_rate_applies() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(limits(10, 0));
        for _ in 0..10 {
            assert_eq!(bucket.take(100, start), None);
        }
        let (kind, wait) = bucket.take(100, start).expect("11th message exceeds");
        assert_eq!(kind, Exceeded::Messages);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        // 1 s later the bucket is full again (capped at the burst).
        let later = start + Duration::from_secs(1);
        for _ in 0..9 {
            assert_eq!(bucket.take(100, later), None);
        }
        assert!(bucket.take(100, later).is_some());
    }

    #[test]
    fn bytes_limit_counts_sizes() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(limits(0, 1000));
        assert_eq!(bucket.take(600, start), None);
        let (kind, wait) = bucket.take(600, start).expect("1200 bytes exceed 1000");
        assert_eq!(kind, Exceeded::Bytes);
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-6, "{wait:?}");
    }
}
