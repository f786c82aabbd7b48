//! The figures of `/metrics` added for operations (delivery latency histogram, authentication
//! outcomes, per-listener connections, actor counters, process and build figures), scraped over
//! HTTP, parsed as Prometheus text and checked against the traffic each test sent.
//!
//! The recorder and the histograms are global to the process, so the tests of this file share
//! them: only `delivery_latency_counts_each_delivery_from_receipt` delivers messages, and only
//! `auth_outcomes_are_counted_by_reason` refuses CONNECTs; other assertions are lower bounds.
#![allow(clippy::unwrap_used)]

#[path = "admin_support/node.rs"]
mod admin_support;

use std::time::Duration;

use admin_support::{connect_v5, eventually, AdminNode, PROMPTLY};
use rumqttc::v5::{mqttbytes::QoS, Incoming};
use starling_node::metrics::text::Exposition;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

const LATENCY: &str = "starling_message_delivery_latency_seconds";

/// `(le, cumulative count)` of a histogram's buckets with `labels`, in bound order.
fn buckets(exposition: &Exposition, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let bucket_name = format!("{name}_bucket");
    let mut buckets: Vec<(f64, f64)> = exposition
        .samples
        .iter()
        .filter(|sample| sample.name == bucket_name)
        .filter(|sample| {
            labels
                .iter()
                .all(|(label, value)| sample.labels.get(*label).map(String::as_str) == Some(value))
        })
        .map(|sample| {
            let le = &sample.labels["le"];
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (bound, sample.value)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// Observations above `bound` seconds.
fn count_above(exposition: &Exposition, name: &str, bound: f64) -> f64 {
    let buckets = buckets(exposition, name, &[]);
    let total = buckets.last().unwrap().1;
    let at_or_below = buckets
        .iter()
        .filter(|(le, _)| *le <= bound)
        .map(|(_, count)| *count)
        .fold(0.0, f64::max);
    total - at_or_below
}

/// A histogram's buckets are cumulative and end with `+Inf`, which equals `_count`.
fn assert_well_formed(exposition: &Exposition, name: &str, labels: &[(&str, &str)]) {
    let buckets = buckets(exposition, name, labels);
    assert!(buckets.len() >= 10, "{name}: {buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last().unwrap().0, f64::INFINITY);
    assert_eq!(
        buckets.last().unwrap().1,
        exposition.sum(&format!("{name}_count"), labels),
        "{name}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_latency_counts_each_delivery_from_receipt() {
    const NUM_MESSAGES: u64 = 500;
    let node = AdminNode::start().await;
    let mut subscriber = connect_v5(node.options_v5("latency-subscriber")).await;
    subscriber.subscribe("latency/live", QoS::AtMostOnce).await;
    // A retained message sent on subscribe is not a delivery latency.
    let mut retainer = connect_v5(node.options_v5("latency-retainer")).await;
    retainer
        .client
        .publish("latency/retained", QoS::AtLeastOnce, true, "old")
        .await
        .unwrap();
    retainer
        .next(|packet| matches!(packet, Incoming::PubAck(_)).then_some(()))
        .await;
    let before = node.scrape().await;
    assert_eq!(before.types[LATENCY], "histogram");
    assert_well_formed(&before, LATENCY, &[]);

    let started = Instant::now();
    let publisher = connect_v5(node.options_v5("latency-publisher")).await;
    for _ in 0..NUM_MESSAGES {
        publisher
            .client
            .publish("latency/live", QoS::AtMostOnce, false, vec![b'x'; 32])
            .await
            .unwrap();
    }
    for _ in 0..NUM_MESSAGES {
        subscriber
            .next(|packet| matches!(packet, Incoming::Publish(_)).then_some(()))
            .await;
    }
    subscriber
        .subscribe("latency/retained", QoS::AtMostOnce)
        .await;
    subscriber
        .next(|packet| match packet {
            Incoming::Publish(publish) => publish.retain.then_some(()),
            _ => None,
        })
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let after = node.scrape().await;
    assert_well_formed(&after, LATENCY, &[]);
    let count = |e: &Exposition| e.sum(&format!("{LATENCY}_count"), &[]);
    let sum = |e: &Exposition| e.sum(&format!("{LATENCY}_sum"), &[]);
    assert_eq!(count(&after) - count(&before), NUM_MESSAGES as f64);
    assert_eq!(
        after.sum("starling_messages_sent_total", &[("qos", "0")])
            - before.sum("starling_messages_sent_total", &[("qos", "0")]),
        NUM_MESSAGES as f64 + 1.0,
        "the retained delivery is sent but not timed"
    );
    // Every delivery happened within the test, so none took longer than it.
    let mean = (sum(&after) - sum(&before)) / NUM_MESSAGES as f64;
    assert!(
        mean > 0.0 && mean < elapsed,
        "mean {mean} s, test {elapsed} s"
    );
    assert_eq!(
        count_above(&after, LATENCY, 10.0),
        count_above(&before, LATENCY, 10.0)
    );

    // A message queued for an offline persistent session: its latency includes the time the
    // session was offline, so it is measured from receipt, not from the drain.
    let mut options = node.options_v5("latency-offline");
    options.set_clean_start(false);
    let mut properties = rumqttc::v5::mqttbytes::v5::ConnectProperties::new();
    properties.session_expiry_interval = Some(60);
    options.set_connect_properties(properties);
    let mut offline = connect_v5(options.clone()).await;
    offline.subscribe("latency/offline", QoS::AtLeastOnce).await;
    offline.client.disconnect().await.unwrap();
    offline.expect_closed().await;
    let before_offline = node.scrape().await;
    publisher
        .client
        .publish("latency/offline", QoS::AtLeastOnce, false, "queued")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut back = connect_v5(options).await;
    back.next(|packet| matches!(packet, Incoming::Publish(_)).then_some(()))
        .await;
    let after_offline = node.scrape().await;
    assert_eq!(count(&after_offline) - count(&before_offline), 1.0);
    assert_eq!(
        count_above(&after_offline, LATENCY, 0.5) - count_above(&before_offline, LATENCY, 0.5),
        1.0,
        "the queued delivery waited at least 600 ms"
    );
    assert!(sum(&after_offline) - sum(&before_offline) >= 0.6);
}

/// Sends raw CONNECT bytes and returns the CONNACK's return or reason code.
async fn connack_code(node: &AdminNode, connect: &[u8]) -> u8 {
    let mut stream = TcpStream::connect(node.mqtt_addr).await.unwrap();
    stream.write_all(connect).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(PROMPTLY, stream.read_exact(&mut connack))
        .await
        .expect("CONNACK in time")
        .unwrap();
    assert_eq!(connack[0], 0x20, "{connack:?}");
    connack[3]
}

/// An MQTT 3.1.1 CONNECT with a user name and password.
fn connect_with_password(client_id: &str, username: &str, password: &str) -> Vec<u8> {
    let mut body = b"\x00\x04MQTT\x04\xc2\x00\x3c".to_vec();
    for field in [client_id, username, password] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    assert!(body.len() < 128, "one-byte remaining length");
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

/// Writes a password file with `user` and `password` through `starling passwd`'s code.
fn password_file(dir: &std::path::Path, user: &str, password: &str) -> std::path::PathBuf {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: starling_node::auth::cli::PasswdArgs,
    }
    let file = dir.join("passwd");
    let cli = Cli::try_parse_from(["passwd", &file.display().to_string(), "add", user]).unwrap();
    let mut input = std::io::Cursor::new(format!("{password}\n").into_bytes());
    starling_node::auth::cli::run_passwd_with_input(&cli.args, Some(&mut input), &mut Vec::new())
        .unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_outcomes_are_counted_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = password_file(dir.path(), "meter", "good-pass");
    let node = AdminNode::start_with(
        &format!(
            "[mqtt]\nallow_anonymous = false\n[auth]\npassword_file = {:?}\n",
            passwords.display().to_string()
        ),
        None,
        false,
    )
    .await;
    let attempts = |e: &Exposition, method: &str, result: &str| {
        e.sum(
            "starling_auth_attempts_total",
            &[("method", method), ("result", result)],
        )
    };
    let before = node.scrape().await;
    for method in [
        "anonymous",
        "password",
        "jwt",
        "http",
        "scram",
        "enhanced",
        "certificate",
    ] {
        for result in [
            "success",
            "bad_credentials",
            "not_authorized",
            "banned",
            "unavailable",
            "aborted",
        ] {
            assert!(
                before
                    .samples
                    .iter()
                    .any(|s| s.name == "starling_auth_attempts_total"
                        && s.labels.get("method").map(String::as_str) == Some(method)
                        && s.labels.get("result").map(String::as_str) == Some(result)),
                "no series for {method}/{result}"
            );
        }
    }
    assert!(
        !before
            .samples
            .iter()
            .any(|s| s.name == "starling_auth_failures_total"
                || s.name == "starling_auth_successes_total"),
        "the old authentication counters are gone"
    );
    // N = 3 wrong passwords (CONNACK 0x04) and M = 2 right ones (0x00).
    for idx in 0..3 {
        let connect = connect_with_password(&format!("bad-{idx}"), "meter", "wrong-pass");
        assert_eq!(connack_code(&node, &connect).await, 0x04);
    }
    for idx in 0..2 {
        let connect = connect_with_password(&format!("good-{idx}"), "meter", "good-pass");
        assert_eq!(connack_code(&node, &connect).await, 0x00);
    }
    // MQTT 3.1.1 CONNECT without a username: CONNACK 0x05 Not authorized.
    let anonymous = b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03ano";
    assert_eq!(connack_code(&node, anonymous).await, 0x05);
    assert_eq!(connack_code(&node, anonymous).await, 0x05);
    // MQTT 5 CONNECT with an Authentication Method: CONNACK 0x8C Bad authentication method.
    let with_method = b"\x10\x18\x00\x04MQTT\x05\x02\x00\x3c\x08\x15\x00\x05SCRAM\x00\x03scr";
    assert_eq!(connack_code(&node, with_method).await, 0x8C);

    let after = node.scrape().await;
    let delta = |method: &str, result: &str| {
        attempts(&after, method, result) - attempts(&before, method, result)
    };
    // Only this test authenticates with a password or gets refused, so these are exact.
    assert_eq!(delta("password", "bad_credentials"), 3.0);
    assert_eq!(delta("password", "success"), 2.0);
    assert_eq!(delta("anonymous", "not_authorized"), 2.0);
    assert_eq!(delta("enhanced", "not_authorized"), 1.0);
    let refused = |e: &Exposition| -> f64 {
        e.samples
            .iter()
            .filter(|s| {
                s.name == "starling_auth_attempts_total"
                    && s.labels.get("result").map(String::as_str) != Some("success")
            })
            .map(|s| s.value)
            .sum()
    };
    assert_eq!(
        refused(&after) - refused(&before),
        6.0,
        "each refusal counted once"
    );
    assert!(
        after.sum(
            "starling_connections_closed_total",
            &[("reason", "connect_refused")]
        ) - before.sum(
            "starling_connections_closed_total",
            &[("reason", "connect_refused")]
        ) >= 6.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_figures_follow_connections() {
    let node = AdminNode::start().await;
    let listener = [("listener", "tcp")];
    let before = node.scrape().await;
    let first = connect_v5(node.options_v5("listener-1")).await;
    let second = connect_v5(node.options_v5("listener-2")).await;
    let during = node.scrape().await;
    assert!(
        during.sum("starling_listener_connections_opened_total", &listener)
            - before.sum("starling_listener_connections_opened_total", &listener)
            >= 2.0
    );
    assert!(during.sum("starling_listener_connections_current", &listener) >= 2.0);
    let open_during = during.sum("starling_listener_connections_current", &listener);
    first.client.disconnect().await.unwrap();
    second.client.disconnect().await.unwrap();
    eventually(
        PROMPTLY,
        "the closes to be counted per listener",
        || async {
            let now = node.scrape().await;
            now.sum("starling_listener_connections_current", &listener) <= open_during - 2.0
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_counters_move_with_their_work() {
    let node = AdminNode::start().await;
    let actor = |kind: &'static str| [("actor", kind)];
    let handled =
        |e: &Exposition, kind| e.sum("starling_actor_messages_handled_total", &actor(kind));
    let waits =
        |e: &Exposition, kind| e.sum("starling_actor_mailbox_wait_seconds_count", &actor(kind));
    let before = node.scrape().await;
    assert_eq!(
        before.types["starling_actor_mailbox_wait_seconds"],
        "histogram"
    );
    // A session with a subscription that ends sends its removal to a topic shard; a connect
    // and a disconnect go through a registry shard.
    let mut client = connect_v5(node.options_v5("actor-client")).await;
    client.subscribe("actors/topic", QoS::AtMostOnce).await;
    client.client.disconnect().await.unwrap();
    client.expect_closed().await;
    // Registry shards tick every 100 ms: their mailbox waits are observed continuously.
    eventually(
        PROMPTLY,
        "registry and topic shard work to be counted",
        || async {
            let now = node.scrape().await;
            handled(&now, "registry_shard") >= handled(&before, "registry_shard") + 3.0
                && waits(&now, "registry_shard") >= waits(&before, "registry_shard") + 2.0
                && handled(&now, "topic_shard") > handled(&before, "topic_shard")
        },
    )
    .await;
    let after = node.scrape().await;
    assert_well_formed(
        &after,
        "starling_actor_mailbox_wait_seconds",
        &actor("registry_shard"),
    );
    // Idle shards keep up: every registry tick waited less than a second.
    let buckets = buckets(
        &after,
        "starling_actor_mailbox_wait_seconds",
        &actor("registry_shard"),
    );
    let within_1s = buckets.iter().find(|(le, _)| *le == 1.0).unwrap().1;
    assert_eq!(within_1s, buckets.last().unwrap().1, "{buckets:?}");
    // Everything sent to the topic shards is handled: the depth returns to zero.
    eventually(PROMPTLY, "the topic shard mailboxes to drain", || async {
        let now = node.scrape().await;
        now.sum("starling_actor_mailbox_depth", &actor("topic_shard")) == 0.0
    })
    .await;
    assert_eq!(after.sum("starling_actor_failures_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_figures_are_read_at_scrape() {
    let node = AdminNode::start().await;
    let exposition = node.scrape().await;
    if !cfg!(target_os = "linux") {
        return;
    }
    assert!(exposition.sum("process_threads", &[]) >= 2.0);
    assert!(exposition.sum("process_cpu_seconds_total", &[]) > 0.0);
    assert!(
        exposition.sum("process_virtual_memory_bytes", &[])
            >= exposition.sum("process_resident_memory_bytes", &[])
    );
    // Open file descriptors follow the connections: ten more clients, at least ten more fds.
    let fds_before = exposition.sum("process_open_fds", &[]);
    let mut clients = Vec::new();
    for idx in 0..10 {
        clients.push(connect_v5(node.options_v5(&format!("fds-{idx}"))).await);
    }
    let with_clients = node.scrape().await;
    // Each client holds two sockets in this process: its own and the broker's.
    assert!(
        with_clients.sum("process_open_fds", &[]) >= fds_before + 10.0,
        "{} -> {}",
        fds_before,
        with_clients.sum("process_open_fds", &[])
    );
}
