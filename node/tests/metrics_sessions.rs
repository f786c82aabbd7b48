//! Per-session depths and the registry's mailbox depth in `/metrics`, scraped over HTTP: a
//! rumqttc subscriber that withholds its PUBACKs holds a known number of messages in flight
//! and in its queue, and the figures follow it back to zero once it acknowledges.
//!
//! The gauges are global to the process and set by whichever node is scraped, so this file
//! runs one node and one test.
#![allow(clippy::unwrap_used)]

#[path = "admin_support/node.rs"]
mod admin_support;

use admin_support::{connect_v5, eventually, AdminNode, PROMPTLY};
use rumqttc::v5::{mqttbytes::QoS, Incoming};
use starling_node::metrics::text::Exposition;

/// The subscriber's Receive Maximum: at most this many QoS 1 messages in flight to it.
const RECEIVE_MAXIMUM: u16 = 10;
/// Messages published to it: the window's worth in flight, the rest queued.
const NUM_MESSAGES: usize = 25;

/// The figures this test follows, from one scrape.
#[derive(Debug, PartialEq)]
struct Depths {
    inflight_total: f64,
    largest_inflight: f64,
    largest_queued: f64,
    /// `starling_sessions_by_inflight_messages` at `le` 0, 5, 10, +Inf.
    by_inflight: [f64; 4],
    /// `starling_sessions_by_queued_messages` at `le` 0, 10, 20, +Inf.
    by_queued: [f64; 4],
}

fn depths(exposition: &Exposition) -> Depths {
    let buckets =
        |name: &str, bounds: [&str; 4]| bounds.map(|le| exposition.sum(name, &[("le", le)]));
    Depths {
        inflight_total: exposition.sum("starling_session_inflight_messages", &[]),
        largest_inflight: exposition.sum("starling_session_largest_inflight_messages", &[]),
        largest_queued: exposition.sum("starling_session_largest_queued_messages", &[]),
        by_inflight: buckets(
            "starling_sessions_by_inflight_messages",
            ["0", "5", "10", "+Inf"],
        ),
        by_queued: buckets(
            "starling_sessions_by_queued_messages",
            ["0", "10", "20", "+Inf"],
        ),
    }
}

/// Whether a scrape shows the `idle` depths and an empty registry mailbox.
async fn is_idle(node: &AdminNode, idle: &Depths) -> bool {
    let exposition = node.scrape().await;
    depths(&exposition) == *idle
        && exposition.sum(
            "starling_actor_mailbox_depth",
            &[("actor", "registry_shard")],
        ) == 0.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_depths_follow_a_subscriber_that_withholds_its_acknowledgements() {
    let node = AdminNode::start_with("", None, false).await;
    let mut options = node.options_v5("slow-sub");
    options.set_manual_acks(true);
    options.set_receive_maximum(Some(RECEIVE_MAXIMUM));
    let mut subscriber = connect_v5(options).await;
    subscriber.subscribe("depth/#", QoS::AtLeastOnce).await;
    let publisher = connect_v5(node.options_v5("publisher")).await;

    // Two idle sessions: nothing in flight or queued, the registry's mailbox drained.
    let idle = Depths {
        inflight_total: 0.0,
        largest_inflight: 0.0,
        largest_queued: 0.0,
        by_inflight: [2.0; 4],
        by_queued: [2.0; 4],
    };
    eventually(PROMPTLY, "idle figures", || is_idle(&node, &idle)).await;

    for idx in 0..NUM_MESSAGES {
        publisher
            .client
            .publish("depth/x", QoS::AtLeastOnce, false, idx.to_string())
            .await
            .unwrap();
    }
    // The window's worth arrives and stays unacknowledged.
    let mut received = Vec::new();
    while received.len() < usize::from(RECEIVE_MAXIMUM) {
        received.push(
            subscriber
                .next(|packet| match packet {
                    Incoming::Publish(publish) => Some(publish),
                    _ => None,
                })
                .await,
        );
    }
    let window = f64::from(RECEIVE_MAXIMUM);
    let queued = (NUM_MESSAGES - usize::from(RECEIVE_MAXIMUM)) as f64;
    let holding = Depths {
        inflight_total: window,
        largest_inflight: window,
        largest_queued: queued,
        // The publisher has none in flight; the subscriber exactly the window (le="10").
        by_inflight: [1.0, 1.0, 2.0, 2.0],
        // The publisher has an empty queue; the subscriber 15 (le="20").
        by_queued: [1.0, 1.0, 2.0, 2.0],
    };
    let mut last = None;
    let seen = tokio::time::timeout(PROMPTLY, async {
        loop {
            let now = depths(&node.scrape().await);
            if now == holding {
                return;
            }
            last = Some(now);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(seen.is_ok(), "expected {holding:?}, last scrape {last:?}");

    // Acknowledging lets the rest through; acknowledging those empties both.
    let mut num_acked = 0;
    while num_acked < NUM_MESSAGES {
        let publish = match received.pop() {
            Some(publish) => publish,
            None => {
                subscriber
                    .next(|packet| match packet {
                        Incoming::Publish(publish) => Some(publish),
                        _ => None,
                    })
                    .await
            }
        };
        subscriber.client.ack(&publish).await.unwrap();
        num_acked += 1;
    }
    eventually(PROMPTLY, "the depths back at zero", || {
        is_idle(&node, &idle)
    })
    .await;
    assert!(node
        .scrape()
        .await
        .samples
        .iter()
        .any(|sample| sample.name == "starling_actor_mailbox_depth"
            && sample.labels.get("actor").map(String::as_str) == Some("registry_shard")));
}
