//! The `$SYS/broker/...` topics: retained figures the node publishes every
//! `admin.sys_interval_secs`, named as Mosquitto names them so existing tools read them.
//!
//! Counts of clients, subscriptions and retained messages come from the engine; message and
//! byte totals are read back from the Prometheus recorder, so they need `admin.metrics = true`.
//! A figure is published again only when its value changed. `$SYS` topics are not matched by
//! filters starting with a wildcard [MQTT-4.7.2-1], so only clients that ask for them get them.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use bytestring::ByteString;
use metrics_exporter_prometheus::PrometheusHandle;
use starling_core::{
    codec::{PublishProperties, QoS},
    message::{Message, ReceivedAt, SessionId},
    Broker,
};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::metrics::text;

/// Moving averages of a counter's rate per minute over 1, 5 and 15 minutes.
#[derive(Debug, Default)]
struct LoadAverage {
    last: Option<(f64, Instant)>,
    /// Per-minute rates over 1, 5 and 15 minutes; `None` until two samples were seen.
    averages: Option<[f64; 3]>,
}

const LOAD_WINDOWS_SECS: [f64; 3] = [60.0, 300.0, 900.0];

impl LoadAverage {
    fn update(&mut self, value: f64, now: Instant) {
        if let Some((last_value, last_at)) = self.last {
            let elapsed = now.duration_since(last_at).as_secs_f64();
            if elapsed > 0.0 {
                let rate_per_min = (value - last_value).max(0.0) / elapsed * 60.0;
                let averages = self.averages.get_or_insert([rate_per_min; 3]);
                for (average, window) in averages.iter_mut().zip(LOAD_WINDOWS_SECS) {
                    let alpha = 1.0 - (-elapsed / window).exp();
                    *average += alpha * (rate_per_min - *average);
                }
            }
        }
        self.last = Some((value, now));
    }
}

/// Publishes the `$SYS` figures until `shutdown` is cancelled.
pub(crate) async fn run(
    broker: Broker,
    prometheus: Option<PrometheusHandle>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let started_at = Instant::now();
    let mut publisher = SysPublisher {
        broker,
        last_payloads: HashMap::new(),
    };
    let mut loads: HashMap<&'static str, LoadAverage> = HashMap::new();
    // The first figures appear one interval after start, like Mosquitto's.
    let mut ticker = tokio::time::interval_at(started_at + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        publisher.publish(
            "$SYS/broker/version",
            format!("starling {}", env!("CARGO_PKG_VERSION")),
        );
        publisher.publish(
            "$SYS/broker/uptime",
            format!("{} seconds", now.duration_since(started_at).as_secs()),
        );
        match publisher.broker.registry().stats().await {
            Ok(stats) => {
                publisher.publish_count("$SYS/broker/clients/connected", stats.num_online as f64);
                publisher
                    .publish_count("$SYS/broker/clients/disconnected", stats.num_offline as f64);
                publisher.publish_count(
                    "$SYS/broker/clients/total",
                    (stats.num_online + stats.num_offline) as f64,
                );
            }
            Err(error) => tracing::warn!(%error, "$SYS client figures skipped"),
        }
        let (num_retained, num_subscriptions) = publisher.broker.router().counts();
        publisher.publish_count("$SYS/broker/subscriptions/count", num_subscriptions as f64);
        publisher.publish_count("$SYS/broker/retained messages/count", num_retained as f64);
        let Some(prometheus) = &prometheus else {
            continue;
        };
        let exposition = match text::parse(&crate::metrics::render(prometheus)) {
            Ok(exposition) => exposition,
            Err(error) => {
                tracing::warn!(%error, "$SYS message figures skipped");
                continue;
            }
        };
        let totals = [
            ("messages/received", "starling_messages_received_total"),
            ("messages/sent", "starling_messages_sent_total"),
            ("messages/dropped", "starling_messages_dropped_total"),
            ("bytes/received", "starling_bytes_received_total"),
            ("bytes/sent", "starling_bytes_sent_total"),
            ("connections", "starling_connections_opened_total"),
        ];
        for (path, metric) in totals {
            let total = exposition.sum(metric, &[]);
            if path != "connections" {
                publisher.publish_count(&format!("$SYS/broker/{path}"), total);
            }
            let load = loads.entry(path).or_default();
            load.update(total, now);
            if let Some(averages) = load.averages {
                for (average, window) in averages.iter().zip(["1min", "5min", "15min"]) {
                    publisher.publish(
                        &format!("$SYS/broker/load/{path}/{window}"),
                        format!("{average:.2}"),
                    );
                }
            }
        }
    }
}

struct SysPublisher {
    broker: Broker,
    /// The payload last published on each topic, so unchanged figures are not sent again.
    last_payloads: HashMap<String, String>,
}

impl SysPublisher {
    fn publish_count(&mut self, topic: &str, value: f64) {
        self.publish(topic, format!("{value:.0}"));
    }

    /// Sets the retained message of `topic` and delivers it to current subscribers, if any
    /// (without them it would count as dropped for lack of subscribers).
    fn publish(&mut self, topic: &str, payload: String) {
        if self.last_payloads.get(topic) == Some(&payload) {
            return;
        }
        let message = Arc::new(Message {
            topic: ByteString::from(topic),
            payload: Bytes::from(payload.clone()),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: PublishProperties::default(),
            expires_at: None,
            publisher: SessionId::SYSTEM,
            // Figures of the broker itself, not a received PUBLISH: no delivery latency.
            received_at: ReceivedAt::UNKNOWN,
        });
        let router = self.broker.router();
        router.set_retained(topic, Some(message.clone()));
        if router.has_matching_subscribers(topic) {
            router.route(&message);
        }
        self.last_payloads.insert(topic.to_string(), payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_average_converges_to_the_rate_per_minute() {
        let mut load = LoadAverage::default();
        let start = Instant::now();
        load.update(0.0, start);
        assert_eq!(load.averages, None);
        // 10 messages per second for 10 minutes, sampled every 10 s.
        for step in 1..=60u64 {
            load.update((step * 100) as f64, start + Duration::from_secs(step * 10));
        }
        let [one, five, fifteen] = load.averages.unwrap();
        assert!((one - 600.0).abs() < 1.0, "{one}");
        assert!((five - 600.0).abs() < 1.0, "{five}");
        assert!((fifteen - 600.0).abs() < 1.0, "{fifteen}");
    }
}
