//! Durability across `kill -9`: the `starling` binary runs on a data directory while persistent
//! subscribers (rumqttc MQTT 5 and 3.1.1 at QoS 1, raw MQTT 5 and 3.1.1 clients at QoS 1 and 2)
//! receive numbered QoS 1 and QoS 2 messages from persistent publishers. At a random moment
//! (seeded; the seed is printed and `STARLING_TEST_SEED` replays it) the broker is killed with
//! SIGKILL and restarted on the same directory, over and over; everyone resumes its session
//! and nobody subscribes again. At the end:
//! - every acknowledged message (PUBACK, PUBCOMP) reached every matching subscriber;
//! - no QoS 2 subscriber received a QoS 2 message twice (acknowledged or not);
//! - every session was resumed (CONNACK session present) after every restart;
//! - retained messages set before and between the kills are there for a new subscriber.
//!
//! The same run with the broker kept up and the clients' connections dropped instead is the
//! control: it checks the clients and the bookkeeping against sessions held in memory.
#![allow(clippy::unwrap_used)]

#[path = "persistence_crash/clients.rs"]
mod clients;
#[path = "persistence_crash/rumqttc_subscriber.rs"]
mod rumqttc_subscriber;
mod support;

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use clients::{CycleControl, Ended, MessageKey, Publisher, Subscriber, SubscriberKind};
use starling_core::codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use support::{
    eventually,
    process::{StarlingHome, StorageEngine},
    raw::publish_packet,
    wire::{success_ack, Wire},
    RawClient, PROMPTLY,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Queues far larger than what accumulates while a client reconnects, so nothing acknowledged
/// is dropped for lack of room.
const NODE_CONFIG: &str = "[mqtt]\nmax_queued_messages = 100000\n";

/// Interval between two messages of one publisher (four publishers).
const PUBLISH_INTERVAL: Duration = Duration::from_millis(10);

/// The broker runs for a random time in this range (ms) in each cycle.
const CYCLE_MS: (u64, u64) = (50, 1200);

/// Retained messages set before the first kill.
const NUM_INITIAL_RETAINED: usize = 5;

/// How a cycle ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disruption {
    /// SIGKILL, then a restart on the same data directory.
    KillBroker,
    /// Every client connection dropped without DISCONNECT; the broker stays up.
    DropClients,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_keeps_acknowledged_messages_across_kill_9_cycles() {
    survive_cycles(StorageEngine::Redb, Disruption::KillBroker, 24).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_keeps_acknowledged_messages_across_kill_9_cycles() {
    survive_cycles(StorageEngine::Sled, Disruption::KillBroker, 24).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_dropped_connections_lose_nothing_while_the_broker_stays_up() {
    survive_cycles(StorageEngine::Memory, Disruption::DropClients, 8).await;
}

/// A small seeded generator (SplitMix64): the kill moments of a run follow from its seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Returns a value in `[low, high)`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low)
    }
}

/// Returns `STARLING_TEST_SEED` if set, otherwise a seed from the clock.
fn seed() -> u64 {
    if let Ok(text) = std::env::var("STARLING_TEST_SEED") {
        return text.parse().expect("STARLING_TEST_SEED is a number");
    }
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn publishers() -> Vec<Arc<Publisher>> {
    use ProtocolVersion::{V3_1_1, V5};
    vec![
        Arc::new(Publisher::new(0, "pub-v5-q1", V5, QoS::AtLeastOnce)),
        Arc::new(Publisher::new(1, "pub-v311-q1", V3_1_1, QoS::AtLeastOnce)),
        Arc::new(Publisher::new(2, "pub-v5-q2", V5, QoS::ExactlyOnce)),
        Arc::new(Publisher::new(3, "pub-v311-q2", V3_1_1, QoS::ExactlyOnce)),
    ]
}

fn subscribers() -> Vec<Arc<Subscriber>> {
    use ProtocolVersion::{V3_1_1, V5};
    use QoS::{AtLeastOnce, ExactlyOnce};
    let both_at_1 = [("persist/q1/#", AtLeastOnce), ("persist/q2/#", AtLeastOnce)];
    vec![
        Arc::new(Subscriber::new(
            "sub-rumqttc-v5",
            SubscriberKind::RumqttcV5,
            &both_at_1,
        )),
        Arc::new(Subscriber::new(
            "sub-rumqttc-v311",
            SubscriberKind::RumqttcV4,
            &both_at_1,
        )),
        Arc::new(Subscriber::new(
            "sub-raw-v5",
            SubscriberKind::Raw(V5),
            &[("persist/q1/#", AtLeastOnce), ("persist/q2/#", ExactlyOnce)],
        )),
        Arc::new(Subscriber::new(
            "sub-raw-v311",
            SubscriberKind::Raw(V3_1_1),
            &[("persist/q2/#", ExactlyOnce), ("persist/q1/#", AtLeastOnce)],
        )),
    ]
}

fn control(addr: SocketAddr, cycle: usize, publish_new: bool) -> CycleControl {
    CycleControl {
        addr,
        cycle,
        publish_new,
        publish_interval: PUBLISH_INTERVAL,
        abort: CancellationToken::new(),
        finish: CancellationToken::new(),
    }
}

fn spawn_clients(
    publishers: &[Arc<Publisher>],
    subscribers: &[Arc<Subscriber>],
    control: &CycleControl,
) -> Vec<(String, JoinHandle<Ended>)> {
    let mut tasks = Vec::new();
    for publisher in publishers {
        let (publisher, control) = (publisher.clone(), control.clone());
        let name = publisher.client_id.clone();
        tasks.push((
            name,
            tokio::spawn(async move { publisher.run(control).await }),
        ));
    }
    for subscriber in subscribers {
        let (subscriber, control) = (subscriber.clone(), control.clone());
        let name = subscriber.client_id.clone();
        tasks.push((
            name,
            tokio::spawn(async move { subscriber.run(control).await }),
        ));
    }
    tasks
}

/// Waits for every client task; a task that does not end is a bug of the test itself.
async fn join_clients(tasks: Vec<(String, JoinHandle<Ended>)>, why: &str) {
    for (name, task) in tasks {
        match tokio::time::timeout(Duration::from_secs(20), task).await {
            Ok(Ok(_ended)) => {}
            Ok(Err(error)) => panic!("client task {name} failed: {error}"),
            Err(_) => panic!("client task {name} did not end within 20 s after {why}"),
        }
    }
}

/// Publishes a retained QoS 1 message; returns true if the broker acknowledged it.
async fn publish_retained(addr: SocketAddr, client_id: &str, topic: &str, payload: &str) -> bool {
    let connect = support::raw::connect_packet(ProtocolVersion::V5, client_id);
    let Ok((mut wire, connack)) = Wire::connect(addr, connect).await else {
        return false;
    };
    if connack.reason_code != ReasonCode::Success {
        return false;
    }
    let mut publish = publish_packet(topic, QoS::AtLeastOnce, 1, payload.as_bytes());
    publish.retain = true;
    if wire.send(Packet::Publish(publish)).await.is_err() {
        return false;
    }
    let acked = matches!(
        wire.recv().await,
        Ok(Packet::PubAck(ack)) if !ack.reason_code.is_error()
    );
    wire.disconnect().await;
    acked
}

async fn survive_cycles(engine: StorageEngine, disruption: Disruption, num_cycles: usize) {
    let seed = seed();
    let run = format!(
        "{} engine, {disruption:?}, {num_cycles} cycles, seed {seed} (STARLING_TEST_SEED={seed} replays it)",
        engine.name()
    );
    eprintln!("{run}");
    let mut rng = SplitMix64(seed);
    let home = StarlingHome::new(engine, NODE_CONFIG);
    let mut node = home.start().await;
    let publishers = publishers();
    let subscribers = subscribers();

    let mut retained_expected: Vec<(String, String)> = Vec::new();
    for index in 0..NUM_INITIAL_RETAINED {
        let topic = format!("persist/retained/initial/{index}");
        let payload = format!("initial {index}");
        let acked = publish_retained(node.mqtt_addr, "retainer", &topic, &payload).await;
        assert!(acked, "initial retained message {index} not acknowledged");
        retained_expected.push((topic, payload));
    }

    // Subscribe once, before anything is published; nobody subscribes again.
    let setup = control(node.mqtt_addr, 0, false);
    let tasks = spawn_clients(&[], &subscribers, &setup);
    let all_subscribed = subscribers.clone();
    eventually(PROMPTLY * 2, "every subscriber to subscribe", || {
        let all_subscribed = all_subscribed.clone();
        async move {
            all_subscribed
                .iter()
                .all(|subscriber| subscriber.log.lock().unwrap().subscribed)
        }
    })
    .await;
    setup.finish.cancel();
    join_clients(tasks, "the subscriptions").await;

    let mut start_times = vec![node.started_in];
    for cycle in 0..num_cycles {
        let cycle_control = control(node.mqtt_addr, cycle, true);
        let tasks = spawn_clients(&publishers, &subscribers, &cycle_control);
        let addr = node.mqtt_addr;
        let retained_task = tokio::spawn(async move {
            let topic = format!("persist/retained/cycle/{cycle}");
            let payload = format!("cycle {cycle}");
            let acked = publish_retained(addr, "retainer", &topic, &payload).await;
            acked.then_some((topic, payload))
        });
        tokio::time::sleep(Duration::from_millis(rng.range(CYCLE_MS.0, CYCLE_MS.1))).await;
        match disruption {
            Disruption::KillBroker => node.kill().await,
            Disruption::DropClients => cycle_control.abort.cancel(),
        }
        join_clients(tasks, "the disruption").await;
        let retained = tokio::time::timeout(Duration::from_secs(20), retained_task)
            .await
            .expect("the retained publisher ends")
            .unwrap();
        retained_expected.extend(retained);
        if disruption == Disruption::KillBroker {
            node = home.start().await;
            start_times.push(node.started_in);
        }
    }

    // Everyone reconnects once more; publishers complete what is in flight, subscribers
    // receive until they have every acknowledged message or nothing arrives for a while.
    let last = control(node.mqtt_addr, num_cycles, false);
    let tasks = spawn_clients(&publishers, &subscribers, &last);
    wait_for_deliveries(&publishers, &subscribers).await;
    last.finish.cancel();
    join_clients(tasks, "the end of the run").await;

    let mut violations = Vec::new();
    let summary = check_deliveries(&publishers, &subscribers, num_cycles, &mut violations);
    check_retained(node.mqtt_addr, &retained_expected, &mut violations).await;
    if let Some(store_path) = home.store_path() {
        if !store_path.exists() {
            violations.push(format!(
                "the {} engine created no store at {}",
                engine.name(),
                store_path.display()
            ));
        }
    }
    let exited = node.terminate().await;
    if exited.code != Some(0) {
        violations.push(format!(
            "starling exited with {:?} on SIGTERM:\n{}",
            exited.code, exited.stderr
        ));
    }
    let slowest_start = start_times.iter().max().copied().unwrap_or_default();
    eprintln!("{run}\n{summary}slowest start {slowest_start:?}");
    assert!(
        violations.is_empty(),
        "{run}\n{summary}{} violations:\n- {}",
        violations.len(),
        violations.join("\n- ")
    );
}

/// Returns the QoS at which `subscriber` receives the messages of `publisher`, if at all.
fn delivery_qos(subscriber: &Subscriber, publisher: &Publisher) -> Option<QoS> {
    let class = format!("persist/q{}/#", publisher.qos.as_u8());
    subscriber
        .filters
        .iter()
        .find(|(filter, _)| *filter == class)
        .map(|(_, qos)| (*qos).min(publisher.qos))
}

/// Returns the acknowledged messages `subscriber` is still missing.
fn missing(subscriber: &Subscriber, publisher: &Publisher) -> BTreeSet<u64> {
    let acked = publisher.log.lock().unwrap().acked.clone();
    let log = subscriber.log.lock().unwrap();
    acked
        .into_iter()
        .filter(|seq| !log.deliveries.contains_key(&(publisher.index, *seq)))
        .collect()
}

/// Waits (bounded) until publishers have nothing in flight and every subscriber has every
/// acknowledged message, or until deliveries stop for a while (the check reports the rest).
async fn wait_for_deliveries(publishers: &[Arc<Publisher>], subscribers: &[Arc<Subscriber>]) {
    let quiet_period = Duration::from_secs(5);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last_total = usize::MAX;
    let mut last_change = tokio::time::Instant::now();
    loop {
        let publishers_done = publishers
            .iter()
            .all(|publisher| publisher.log.lock().unwrap().in_flight().is_empty());
        let all_delivered = subscribers.iter().all(|subscriber| {
            publishers.iter().all(|publisher| {
                delivery_qos(subscriber, publisher).is_none()
                    || missing(subscriber, publisher).is_empty()
            })
        });
        if publishers_done && all_delivered {
            return;
        }
        let total: usize = subscribers
            .iter()
            .map(|subscriber| {
                subscriber
                    .log
                    .lock()
                    .unwrap()
                    .deliveries
                    .values()
                    .sum::<u32>() as usize
            })
            .sum();
        let now = tokio::time::Instant::now();
        if total != last_total {
            last_total = total;
            last_change = now;
        }
        if (publishers_done && now - last_change > quiet_period) || now > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A new subscriber must receive every retained message that was acknowledged.
async fn check_retained(
    addr: SocketAddr,
    expected: &[(String, String)],
    violations: &mut Vec<String>,
) {
    let mut client = RawClient::connect_v5(addr, "retained-checker").await;
    client
        .subscribe("persist/retained/#", QoS::AtLeastOnce)
        .await;
    let mut received = std::collections::BTreeMap::new();
    while received.len() < expected.len() {
        match client.next_event(Duration::from_secs(2)).await {
            support::Event::Packet(Packet::Publish(publish)) => {
                if let Some(packet_id) = publish.packet_id {
                    client.send(Packet::PubAck(success_ack(packet_id))).await;
                }
                received.insert(
                    publish.topic.to_string(),
                    String::from_utf8_lossy(&publish.payload).into_owned(),
                );
            }
            support::Event::Packet(_) => {}
            support::Event::Closed | support::Event::Timeout => break,
        }
    }
    let mut wrong = Vec::new();
    for (topic, payload) in expected {
        match received.get(topic) {
            Some(got) if got == payload => {}
            Some(got) => wrong.push(format!("{topic} = {got:?} instead of {payload:?}")),
            None => wrong.push(format!("{topic} missing")),
        }
    }
    if !wrong.is_empty() {
        violations.push(format!(
            "{} of {} acknowledged retained messages are not intact for a new subscriber: {}",
            wrong.len(),
            expected.len(),
            abbreviate(&wrong)
        ));
    }
}

fn abbreviate<T: std::fmt::Debug>(items: &[T]) -> String {
    let shown: Vec<String> = items
        .iter()
        .take(8)
        .map(|item| format!("{item:?}"))
        .collect();
    if items.len() > shown.len() {
        format!(
            "[{}, ... {} more]",
            shown.join(", "),
            items.len() - shown.len()
        )
    } else {
        format!("[{}]", shown.join(", "))
    }
}

/// Compares what was acknowledged with what was delivered; returns a summary table.
fn check_deliveries(
    publishers: &[Arc<Publisher>],
    subscribers: &[Arc<Subscriber>],
    num_cycles: usize,
    violations: &mut Vec<String>,
) -> String {
    let mut summary = String::new();
    let mut session_violations = Vec::new();
    for publisher in publishers {
        let log = publisher.log.lock().unwrap();
        let _ = writeln!(
            summary,
            "{:<18} acked {:>6}  uncertain {:>4}  rejected {:>3}  resent {:>4}  sessions lost {:>3}",
            publisher.client_id,
            log.acked.len(),
            log.uncertain.len(),
            log.rejected.len(),
            log.num_resent,
            log.sessions_lost.len()
        );
        // The run must have done real work, or its other checks prove nothing.
        assert!(
            log.acked.len() >= 50,
            "{} had only {} messages acknowledged: the test did not run properly",
            publisher.client_id,
            log.acked.len()
        );
        if !log.sessions_lost.is_empty() {
            session_violations.push(format!(
                "{}: session not resumed (CONNACK session present = false) when reconnecting in cycles {} (cycle {num_cycles} = the final reconnect)",
                publisher.client_id,
                abbreviate(&log.sessions_lost)
            ));
        }
        if !log.rejected.is_empty() {
            let rejected: Vec<(u64, ReasonCode)> = log
                .rejected
                .iter()
                .map(|(seq, code)| (*seq, *code))
                .collect();
            violations.push(format!(
                "{}: {} messages refused: {}",
                publisher.client_id,
                rejected.len(),
                abbreviate(&rejected)
            ));
        }
        violations.extend(log.anomalies.iter().cloned());
    }
    for subscriber in subscribers {
        let log = subscriber.log.lock().unwrap();
        let _ = writeln!(
            summary,
            "{:<18} QoS 2 resends before PUBREL {:>4}  sessions lost {:>3}",
            subscriber.client_id,
            log.num_qos2_resends,
            log.sessions_lost.len()
        );
        if !log.sessions_lost.is_empty() {
            session_violations.push(format!(
                "{}: session not resumed (CONNACK session present = false) when reconnecting in cycles {} (cycle {num_cycles} = the final reconnect)",
                subscriber.client_id,
                abbreviate(&log.sessions_lost)
            ));
        }
        violations.extend(log.anomalies.iter().cloned());
        for publisher in publishers {
            let Some(qos) = delivery_qos(subscriber, publisher) else {
                continue;
            };
            let publisher_log = publisher.log.lock().unwrap();
            let count_of = |seq: u64| {
                log.deliveries
                    .get(&(publisher.index, seq))
                    .copied()
                    .unwrap_or(0)
            };
            let lost: Vec<u64> = publisher_log
                .acked
                .iter()
                .copied()
                .filter(|seq| count_of(*seq) == 0)
                .collect();
            let delivered: Vec<(MessageKey, u32)> = log
                .deliveries
                .iter()
                .filter(|((index, _), _)| *index == publisher.index)
                .map(|(key, count)| (*key, *count))
                .collect();
            let mut duplicated: Vec<u64> = delivered
                .iter()
                .filter(|(_, count)| *count > 1)
                .map(|((_, seq), _)| *seq)
                .collect();
            duplicated.sort_unstable();
            let in_flight = publisher_log.in_flight();
            let mut never_sent: Vec<u64> = delivered
                .iter()
                .map(|((_, seq), _)| *seq)
                .filter(|seq| {
                    !publisher_log.acked.contains(seq)
                        && !publisher_log.uncertain.contains(seq)
                        && !publisher_log.rejected.contains_key(seq)
                        && !in_flight.contains(seq)
                })
                .collect();
            never_sent.sort_unstable();
            let _ = writeln!(
                summary,
                "{:<18} <- {:<12} at {qos:?}: {:>6} distinct, {:>5} duplicates, {:>6} acknowledged missing",
                subscriber.client_id,
                publisher.client_id,
                delivered.len(),
                duplicated.len(),
                lost.len()
            );
            if !lost.is_empty() {
                violations.push(format!(
                    "{} lost {} of the {} acknowledged messages of {}: {}",
                    subscriber.client_id,
                    lost.len(),
                    publisher_log.acked.len(),
                    publisher.client_id,
                    abbreviate(&lost)
                ));
            }
            if qos == QoS::ExactlyOnce && !duplicated.is_empty() {
                violations.push(format!(
                    "{} received {} QoS 2 messages of {} more than once: {}",
                    subscriber.client_id,
                    duplicated.len(),
                    publisher.client_id,
                    abbreviate(&duplicated)
                ));
            }
            if !never_sent.is_empty() {
                violations.push(format!(
                    "{} received {} messages {} never sent: {}",
                    subscriber.client_id,
                    never_sent.len(),
                    publisher.client_id,
                    abbreviate(&never_sent)
                ));
            }
        }
    }
    violations.extend(session_violations);
    summary
}
