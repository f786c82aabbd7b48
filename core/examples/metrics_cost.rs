//! Per-call cost of the metrics work on the per-message path, with the exporter off and on:
//! a striped counter increment and a delivery latency observation, in a tight loop on one
//! thread (hot caches, so a lower bound of what they cost in the broker); then two threads
//! incrementing one shared atomic (what a `metrics` facade counter is in the Prometheus
//! exporter) against two threads incrementing one striped counter.
//!
//! `cargo run --release -p starling-core --example metrics_cost` (BENCHMARKS.md uses it).
#![allow(clippy::print_stdout)]

use std::{
    hint::black_box,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant as StdInstant},
};

use bytes::Bytes;
use bytestring::ByteString;
use starling_core::{
    codec::{PublishProperties, QoS},
    message::{Delivery, Message, ReceivedAt, SessionId},
    metrics::{striped, BrokerMetrics},
};
use tokio::time::Instant;

const CALLS: u64 = 50_000_000;

fn per_call_ns(mut work: impl FnMut(u64)) -> f64 {
    let started = StdInstant::now();
    for i in 0..CALLS {
        work(i);
    }
    started.elapsed().as_nanos() as f64 / CALLS as f64
}

fn main() {
    let metrics = BrokerMetrics::register();
    let now = Instant::now() + Duration::from_secs(10);
    // Latencies spread over 20 µs to 5 ms, so the bucket search does not always take one path.
    let deliveries: Vec<Delivery> = (0..64u64)
        .map(|k| Delivery {
            message: Arc::new(Message {
                topic: ByteString::from("a/b"),
                payload: Bytes::from_static(b"x"),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: PublishProperties::default(),
                expires_at: None,
                publisher: SessionId(1),
                received_at: ReceivedAt::at(now - Duration::from_micros(20 + (k * k * k) % 5000)),
            }),
            qos: QoS::AtMostOnce,
            retain: false,
            subscription_ids: Default::default(),
            stored: Default::default(),
        })
        .collect();
    for enabled in [false, true] {
        if enabled {
            striped::enable();
        }
        for _ in 0..3 {
            let increment = per_call_ns(|_| black_box(&metrics).messages_sent[0].increment(1));
            let observe = per_call_ns(|i| {
                black_box(&metrics)
                    .observe_delivery(black_box(&deliveries[(i & 63) as usize]), black_box(now));
            });
            let empty = per_call_ns(|i| {
                black_box(&deliveries[(i & 63) as usize]);
            });
            println!(
                "exporter {}: striped counter increment {increment:.1} ns, delivery latency observation {observe:.1} ns, empty loop {empty:.1} ns",
                if enabled { "on " } else { "off" }
            );
        }
    }
    // Two threads at once (on a 2-core machine: both cores).
    let shared = AtomicU64::new(0);
    let striped_counter = metrics.messages_sent[1];
    for _ in 0..3 {
        let contended = two_threads(|| {
            shared.fetch_add(1, Ordering::Relaxed);
        });
        let separate = two_threads(|| striped_counter.increment(1));
        println!(
            "two threads: one shared atomic {contended:.1} ns per increment, striped counter {separate:.1} ns"
        );
    }
}

fn two_threads(work: impl Fn() + Sync) -> f64 {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| per_call_ns(|_| work())))
            .collect();
        let total: f64 = handles
            .into_iter()
            .map(|handle| handle.join().expect("no panic"))
            .sum();
        total / 2.0
    })
}
