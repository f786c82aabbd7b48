//! `/metrics` scraped over HTTP and parsed as Prometheus text: figures match the traffic the
//! test sent, every documented metric is exported and nothing undocumented is, labels stay
//! bounded; and the `$SYS` topics.
//!
//! The recorder is global to the process, so the tests of this file share counters: only
//! `qos1_publishes_are_counted_exactly` publishes at QoS 1, and other assertions use lower
//! bounds.
#![allow(clippy::unwrap_used)]

#[path = "admin_support/node.rs"]
mod admin_support;

use std::{collections::BTreeSet, time::Duration};

use admin_support::{connect_v5, eventually, AdminNode, RawV5, PROMPTLY};
use rumqttc::v5::{mqttbytes::QoS, Incoming};
use starling_node::metrics::{table, MetricKind, Presence, METRICS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_publishes_are_counted_exactly() {
    const NUM_MESSAGES: u64 = 1000;
    let node = AdminNode::start().await;
    let mut subscriber = connect_v5(node.options_v5("metrics-subscriber")).await;
    subscriber.subscribe("metrics/qos1", QoS::AtLeastOnce).await;
    let before = node.scrape().await;

    let mut publisher = connect_v5(node.options_v5("metrics-publisher")).await;
    let payload = vec![b'x'; 64];
    for _ in 0..NUM_MESSAGES {
        publisher
            .client
            .publish("metrics/qos1", QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    let mut num_acked = 0;
    while num_acked < NUM_MESSAGES {
        publisher
            .next(|packet| matches!(packet, Incoming::PubAck(_)).then_some(()))
            .await;
        num_acked += 1;
    }
    let mut num_received = 0;
    while num_received < NUM_MESSAGES {
        subscriber
            .next(|packet| matches!(packet, Incoming::Publish(_)).then_some(()))
            .await;
        num_received += 1;
    }

    let after = node.scrape().await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    assert_eq!(
        delta("starling_messages_received_total", &[("qos", "1")]),
        NUM_MESSAGES as f64
    );
    assert_eq!(
        delta("starling_messages_sent_total", &[("qos", "1")]),
        NUM_MESSAGES as f64
    );
    assert!(
        delta("starling_bytes_received_total", &[]) >= (NUM_MESSAGES * 64) as f64,
        "bytes received"
    );
    assert!(
        delta("starling_bytes_sent_total", &[]) >= (NUM_MESSAGES * 64) as f64,
        "bytes sent"
    );
    assert!(delta("starling_connections_opened_total", &[]) >= 1.0);
    assert_eq!(after.types["starling_messages_received_total"], "counter");
    // The recorder is global to this test binary and other tests' nodes sample the same gauge
    // at their scrapes, so sample until this node's own figure is the one rendered.
    let mut num_online = after.sum("starling_sessions_online", &[]);
    for _ in 0..50 {
        if num_online >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        num_online = node.scrape().await.sum("starling_sessions_online", &[]);
    }
    assert!(num_online >= 2.0, "sessions online: {num_online}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_metric_is_exported_and_nothing_else() {
    let node = AdminNode::start().await;
    let _client = connect_v5(node.options_v5("inventory")).await;
    // The per-shard gauges appear with the shards' first housekeeping (every 5 s).
    let mut exposition = node.scrape().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !exposition.has("starling_subscriptions") {
        assert!(tokio::time::Instant::now() < deadline, "no shard gauges");
        tokio::time::sleep(Duration::from_millis(200)).await;
        exposition = node.scrape().await;
    }
    // Family names: a histogram's `_bucket`, `_sum` and `_count` series belong to it.
    let exported: BTreeSet<&str> = exposition
        .samples
        .iter()
        .map(|sample| table::family_of(&sample.name))
        .collect();
    let always: BTreeSet<&str> = METRICS
        .iter()
        .filter(|metric| metric.presence == Presence::Always)
        .map(|metric| metric.name)
        .collect();
    let documented: BTreeSet<&str> = METRICS.iter().map(|metric| metric.name).collect();
    let missing: Vec<_> = always.difference(&exported).collect();
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "documented as always present but not exported: {missing:?}"
    );
    assert!(
        undocumented.is_empty(),
        "exported but not in METRICS and docs/metrics.md: {undocumented:?}"
    );
    for metric in METRICS
        .iter()
        .filter(|metric| exported.contains(metric.name))
    {
        assert_eq!(
            exposition.types.get(metric.name).map(String::as_str),
            Some(metric.kind.type_name()),
            "{}",
            metric.name
        );
        let series = exposition
            .samples
            .iter()
            .filter(|s| table::family_of(&s.name) == metric.name);
        for sample in series {
            let labels: BTreeSet<&str> = sample
                .labels
                .keys()
                .map(String::as_str)
                .filter(|label| !(metric.kind == MetricKind::Histogram && *label == "le"))
                .collect();
            let documented: BTreeSet<&str> = metric.labels.iter().copied().collect();
            assert_eq!(labels, documented, "labels of {}", sample.name);
        }
    }
    // Every close reason and drop reason is there from the start.
    let close_reasons = exposition
        .samples
        .iter()
        .filter(|s| s.name == "starling_connections_closed_total")
        .count();
    assert_eq!(close_reasons, 12);
    let drop_reasons = exposition
        .samples
        .iter()
        .filter(|s| s.name == "starling_messages_dropped_total")
        .count();
    assert_eq!(drop_reasons, 6);
    assert_eq!(
        exposition.sum(
            "starling_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", starling_node::metrics::BUILD_COMMIT)
            ]
        ),
        1.0
    );
    if std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.git")).exists() {
        let commit = starling_node::metrics::BUILD_COMMIT;
        assert!(
            commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()),
            "build commit {commit:?}"
        );
    }
    assert_eq!(exposition.sum("starling_ready", &[]), 1.0);
    // Process figures read from /proc/self.
    if cfg!(target_os = "linux") {
        assert!(exposition.sum("process_resident_memory_bytes", &[]) > 1_000_000.0);
        assert!(exposition.sum("process_open_fds", &[]) >= 3.0);
        assert!(exposition.sum("process_max_fds", &[]) >= exposition.sum("process_open_fds", &[]));
        assert!(exposition.sum("process_start_time_seconds", &[]) > 1_600_000_000.0);
    }
    // No label ever holds a client id or a topic.
    for sample in &exposition.samples {
        for value in sample.labels.values() {
            assert!(!value.contains("inventory"), "{sample:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connections_are_counted_by_reason() {
    let node = AdminNode::start().await;
    let closed = |exposition: &starling_node::metrics::text::Exposition, reason: &str| {
        exposition.sum("starling_connections_closed_total", &[("reason", reason)])
    };
    let before = node.scrape().await;
    let mut kicked = RawV5::connect(node.mqtt_addr, "reason-kicked", 0).await;
    let answer = node
        .call("POST", "/api/v1/clients/reason-kicked/kick", None)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    kicked.read_until_closed().await;
    let polite = connect_v5(node.options_v5("reason-polite")).await;
    polite.client.disconnect().await.unwrap();
    eventually(PROMPTLY, "both closes to be counted", || async {
        let now = node.scrape().await;
        closed(&now, "administrative_action") > closed(&before, "administrative_action")
            && closed(&now, "client_disconnect") > closed(&before, "client_disconnect")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_turned_off() {
    let node = AdminNode::start_with("[admin]\nmetrics = false\n", None, false).await;
    node.call("GET", "/metrics", None)
        .await
        .assert_error(404, "not_found");
    // The rest of the admin listener still works.
    assert_eq!(node.get_json("/healthz").await["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics_are_published_and_retained() {
    let node = AdminNode::start_with("[admin]\nsys_interval_secs = 1\n", None, false).await;
    let mut watcher = connect_v5(node.options_v5("sys-watcher")).await;
    watcher.subscribe("$SYS/broker/#", QoS::AtMostOnce).await;
    let mut seen = std::collections::BTreeMap::new();
    let wanted = [
        "$SYS/broker/version",
        "$SYS/broker/uptime",
        "$SYS/broker/clients/connected",
        "$SYS/broker/clients/total",
        "$SYS/broker/subscriptions/count",
        "$SYS/broker/retained messages/count",
        "$SYS/broker/messages/received",
        "$SYS/broker/messages/sent",
        "$SYS/broker/bytes/received",
        "$SYS/broker/bytes/sent",
    ];
    while !wanted.iter().all(|topic| seen.contains_key(*topic)) {
        let publish = watcher
            .next(|packet| match packet {
                Incoming::Publish(publish) => Some(publish),
                _ => None,
            })
            .await;
        seen.insert(
            String::from_utf8(publish.topic.to_vec()).unwrap(),
            String::from_utf8(publish.payload.to_vec()).unwrap(),
        );
    }
    assert_eq!(
        seen["$SYS/broker/version"],
        format!("starling {}", env!("CARGO_PKG_VERSION"))
    );
    assert!(seen["$SYS/broker/uptime"].ends_with(" seconds"));
    assert_eq!(seen["$SYS/broker/clients/connected"], "1");
    assert_eq!(seen["$SYS/broker/subscriptions/count"], "1");
    // Retained: a later subscriber gets the figures at once.
    let mut late = connect_v5(node.options_v5("sys-late")).await;
    late.subscribe("$SYS/broker/version", QoS::AtMostOnce).await;
    let publish = late
        .next(|packet| match packet {
            Incoming::Publish(publish) => Some(publish),
            _ => None,
        })
        .await;
    assert!(publish.retain);
    // Load averages follow from the second interval on.
    eventually(Duration::from_secs(5), "a load average", || {
        let found = seen.contains_key("$SYS/broker/load/messages/received/1min");
        let incoming = watcher.incoming.try_recv();
        if let Ok(Incoming::Publish(publish)) = incoming {
            seen.insert(
                String::from_utf8(publish.topic.to_vec()).unwrap(),
                String::from_utf8(publish.payload.to_vec()).unwrap(),
            );
        }
        async move { found }
    })
    .await;
}
