//! Deadlines and damage across a restart of the `starling` binary, for each storage engine:
//! - a session whose expiry passed while the broker was down is gone after the restart (CONNACK
//!   session present = false, its queue gone), a session with a long expiry is back with its
//!   queue, an MQTT 3.1.1 persistent session too;
//! - a queued message whose message expiry passed while the broker was down is not delivered,
//!   one without expiry is;
//! - a pending will survives: one waiting for its delay is published after the restart, one
//!   whose session expired while the broker was down is published at start-up;
//! - with `mqtt.queue_qos0_offline`, QoS 0 messages queued for offline sessions come back after
//!   a `kill -9`, and once sent they are gone from the store;
//! - a queued message whose expiry passes while its session is offline leaves the queue and
//!   the store without a restart;
//! - a store overwritten with garbage stops the broker at start-up with a non-zero exit, a
//!   message naming the store and what to do, and the store left byte for byte as it was.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use starling_core::{
    codec::{
        LastWill, Packet, ProtocolVersion, QoS, ReasonCode, Subscribe, SubscribeProperties,
        WillProperties,
    },
    storage::{
        records::{QueueRecord, Record},
        session_key_prefix, Keyspace, RedbStore, SledStore, Store,
    },
};
use support::{
    eventually,
    process::{snapshot_files, StarlingHome, StorageEngine},
    raw::{options, publish_packet},
    wire::persistent_connect,
    Event, RawClient, PROMPTLY,
};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_session_and_message_expiry_hold_across_a_restart() {
    expiry_across_restart(StorageEngine::Redb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_session_and_message_expiry_hold_across_a_restart() {
    expiry_across_restart(StorageEngine::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_pending_wills_are_published_after_a_restart() {
    pending_wills_across_restart(StorageEngine::Redb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_pending_wills_are_published_after_a_restart() {
    pending_wills_across_restart(StorageEngine::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_offline_qos0_queue_survives_a_kill_when_configured() {
    offline_qos0_across_restart(StorageEngine::Redb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_offline_qos0_queue_survives_a_kill_when_configured() {
    offline_qos0_across_restart(StorageEngine::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_expired_messages_of_offline_sessions_leave_memory_and_disk() {
    expired_messages_are_purged(StorageEngine::Redb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_expired_messages_of_offline_sessions_leave_memory_and_disk() {
    expired_messages_are_purged(StorageEngine::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_corrupt_store_stops_the_broker_and_is_left_untouched() {
    corrupt_store_is_refused(StorageEngine::Redb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_corrupt_store_stops_the_broker_and_says_sled_rewrote_it() {
    corrupt_store_is_refused(StorageEngine::Sled).await;
}

/// Session expiry of the session that must be gone after the restart.
const SHORT_SESSION_EXPIRY_SECS: u32 = 2;

/// Message expiry of the queued message that must not be delivered after the restart.
const MESSAGE_EXPIRY_SECS: u32 = 1;

/// Connects a persistent session, subscribes it to `filter` at QoS 1 and disconnects normally.
async fn park_session(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    client_id: &str,
    session_expiry_secs: u32,
    filter: &str,
) {
    let connect = persistent_connect(version, client_id, true, session_expiry_secs);
    let (mut client, connack) = RawClient::connect_with(addr, connect).await;
    assert_eq!(connack.reason_code, ReasonCode::Success, "{client_id}");
    client.subscribe(filter, QoS::AtLeastOnce).await;
    client.disconnect().await;
}

/// Publishes at QoS 1 (with an optional message expiry) and asserts the PUBACK.
async fn publish_acked(
    publisher: &mut RawClient,
    topic: &str,
    payload: &str,
    message_expiry_secs: Option<u32>,
) {
    let mut publish = publish_packet(topic, QoS::AtLeastOnce, 0, payload.as_bytes());
    publish.properties.message_expiry_interval = message_expiry_secs;
    let reason_code = publisher.publish_with(publish).await;
    assert!(
        !reason_code.is_error(),
        "{payload} refused with {reason_code:?}"
    );
}

/// Reconnects a persistent session; returns whether the session was present and every
/// payload received (and acknowledged) up to and including a marker message published on
/// `marker_topic` once the session is subscribed to it. Queued messages are sent on
/// resumption, before the marker, so the list is complete.
async fn resume_and_drain(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    client_id: &str,
    session_expiry_secs: u32,
    marker_topic: &str,
) -> (bool, Vec<String>) {
    let connect = persistent_connect(version, client_id, false, session_expiry_secs);
    let (mut client, connack) = RawClient::connect_with(addr, connect).await;
    assert_eq!(connack.reason_code, ReasonCode::Success, "{client_id}");
    // A session that is gone has no subscription: subscribe to the marker topic explicitly,
    // so the barrier works either way (for a resumed session it is the same filter again).
    let subscribe_id = client.next_packet_id();
    client
        .send(Packet::Subscribe(Subscribe {
            packet_id: subscribe_id,
            properties: SubscribeProperties::default(),
            filters: vec![(marker_topic.into(), options(QoS::AtLeastOnce))],
        }))
        .await;
    let mut payloads = Vec::new();
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match client.next_event(remaining).await {
            Event::Packet(Packet::Publish(publish)) => {
                if let Some(packet_id) = publish.packet_id {
                    client.puback(packet_id).await;
                }
                let payload = String::from_utf8_lossy(&publish.payload).into_owned();
                let is_marker = payload == "marker";
                payloads.push(payload);
                if is_marker {
                    break;
                }
            }
            Event::Packet(Packet::SubAck(suback)) if suback.packet_id == subscribe_id => {
                let mut publisher =
                    RawClient::connect_v5(addr, &format!("{client_id}-marker")).await;
                publish_acked(&mut publisher, marker_topic, "marker", None).await;
                publisher.disconnect().await;
            }
            Event::Packet(_) => {}
            other => panic!("{client_id}: no marker message, got {other:?} after {payloads:?}"),
        }
    }
    client.disconnect().await;
    (connack.session_present, payloads)
}

async fn expiry_across_restart(engine: StorageEngine) {
    let home = StarlingHome::new(engine, "");
    let mut node = home.start().await;
    let addr = node.mqtt_addr;
    park_session(
        addr,
        ProtocolVersion::V5,
        "short",
        SHORT_SESSION_EXPIRY_SECS,
        "expiry/short",
    )
    .await;
    let short_parked_at = Instant::now();
    park_session(addr, ProtocolVersion::V5, "long", 3600, "expiry/long").await;
    park_session(addr, ProtocolVersion::V3_1_1, "v311", 0, "expiry/v311").await;

    let mut publisher = RawClient::connect_v5(addr, "publisher").await;
    publish_acked(&mut publisher, "expiry/short", "short queued", None).await;
    publish_acked(
        &mut publisher,
        "expiry/long",
        "long expiring",
        Some(MESSAGE_EXPIRY_SECS),
    )
    .await;
    publish_acked(&mut publisher, "expiry/long", "long durable", None).await;
    publish_acked(&mut publisher, "expiry/v311", "v311 queued", None).await;
    let published_at = Instant::now();
    node.kill().await;

    // Both deadlines pass while the broker is down, with a margin for clock granularity.
    let margin = Duration::from_millis(800);
    let restart_at =
        (short_parked_at + Duration::from_secs(SHORT_SESSION_EXPIRY_SECS.into()) + margin)
            .max(published_at + Duration::from_secs(MESSAGE_EXPIRY_SECS.into()) * 2);
    tokio::time::sleep_until(restart_at).await;
    let mut node = home.start().await;
    let addr = node.mqtt_addr;

    let mut violations = Vec::new();
    let (present, payloads) =
        resume_and_drain(addr, ProtocolVersion::V5, "long", 3600, "expiry/long").await;
    if !present {
        violations.push("session \"long\" (expiry 3600 s) not present after the restart".into());
    }
    if !payloads.contains(&"long durable".to_string()) {
        violations.push(format!(
            "session \"long\" did not get its queued message without expiry back: got {payloads:?}"
        ));
    }
    if payloads.contains(&"long expiring".to_string()) {
        violations.push(format!(
            "session \"long\" got a message whose {MESSAGE_EXPIRY_SECS} s expiry passed while \
             the broker was down: {payloads:?}"
        ));
    }
    let (present, payloads) =
        resume_and_drain(addr, ProtocolVersion::V3_1_1, "v311", 0, "expiry/v311").await;
    if !present {
        violations
            .push("MQTT 3.1.1 persistent session \"v311\" not present after the restart".into());
    }
    if !payloads.contains(&"v311 queued".to_string()) {
        violations.push(format!(
            "session \"v311\" did not get its queued message back: got {payloads:?}"
        ));
    }
    let (present, payloads) = resume_and_drain(
        addr,
        ProtocolVersion::V5,
        "short",
        SHORT_SESSION_EXPIRY_SECS,
        "expiry/marker-short",
    )
    .await;
    if present {
        violations.push(format!(
            "session \"short\" (expiry {SHORT_SESSION_EXPIRY_SECS} s) still present after \
             expiring while the broker was down"
        ));
    }
    if payloads != ["marker"] {
        violations.push(format!(
            "session \"short\" got messages queued for its expired session: {payloads:?}"
        ));
    }
    node.kill().await;
    assert!(
        violations.is_empty(),
        "{} engine, {} violations:\n- {}",
        engine.name(),
        violations.len(),
        violations.join("\n- ")
    );
}

/// With `mqtt.queue_qos0_offline`, QoS 0 messages queued for an offline persistent session
/// are stored: they come back after a `kill -9`, in order with the QoS 1 message behind them,
/// and once sent they are gone from the store (a second restart delivers nothing again).
async fn offline_qos0_across_restart(engine: StorageEngine) {
    let home = StarlingHome::new(engine, "[mqtt]\nqueue_qos0_offline = true\n");
    let mut node = home.start().await;
    let addr = node.mqtt_addr;
    park_session(addr, ProtocolVersion::V5, "q0-sub", 3600, "q0/+").await;
    park_session(addr, ProtocolVersion::V3_1_1, "q0-v311", 0, "q0/+").await;

    let mut publisher = RawClient::connect_v5(addr, "q0-publisher").await;
    for index in 1..=3 {
        let publish = publish_packet("q0/a", QoS::AtMostOnce, 0, format!("q0-{index}").as_bytes());
        publisher.send(Packet::Publish(publish)).await;
    }
    // The PUBACK follows the durable commit of this publish and of every batch the connection
    // submitted before it, the QoS 0 entries included.
    publish_acked(&mut publisher, "q0/a", "q1", None).await;
    node.kill().await;

    let expected = ["q0-1", "q0-2", "q0-3", "q1", "marker"];
    let node = home.start().await;
    let addr = node.mqtt_addr;
    for (version, client_id, expiry) in [
        (ProtocolVersion::V5, "q0-sub", 3600),
        (ProtocolVersion::V3_1_1, "q0-v311", 0),
    ] {
        let marker_topic = format!("marker/{client_id}");
        let (present, payloads) =
            resume_and_drain(addr, version, client_id, expiry, &marker_topic).await;
        assert!(
            present,
            "{}: {client_id} not present after kill -9",
            engine.name()
        );
        assert_eq!(
            payloads,
            expected,
            "{}: {client_id} after kill -9",
            engine.name()
        );
    }
    // A graceful stop commits the removals of what was sent.
    let exited = node.terminate().await;
    assert_eq!(exited.code, Some(0), "{exited:?}");

    let mut node = home.start().await;
    let (present, payloads) = resume_and_drain(
        node.mqtt_addr,
        ProtocolVersion::V5,
        "q0-sub",
        3600,
        "marker/q0-sub",
    )
    .await;
    assert!(present);
    assert_eq!(
        payloads,
        ["marker"],
        "{}: messages sent before the restart came back",
        engine.name()
    );
    node.kill().await;
}

/// A queued message whose message expiry passes while its session stays offline is dropped
/// from the session's queue and from the store within seconds, with no client and no restart;
/// the message without expiry stays.
async fn expired_messages_are_purged(engine: StorageEngine) {
    let home = StarlingHome::new(engine, "");
    let node = home.start().await;
    let addr = node.mqtt_addr;
    park_session(addr, ProtocolVersion::V5, "idle", 3600, "idle/+").await;
    let mut publisher = RawClient::connect_v5(addr, "idle-publisher").await;
    publish_acked(
        &mut publisher,
        "idle/a",
        "expiring",
        Some(MESSAGE_EXPIRY_SECS),
    )
    .await;
    publish_acked(&mut publisher, "idle/a", "kept", None).await;
    publisher.disconnect().await;
    assert_eq!(node.status().await["queued_messages"], 2);

    eventually(
        Duration::from_secs(MESSAGE_EXPIRY_SECS.into()) + PROMPTLY,
        "the expired message to leave the offline queue",
        || async { node.status().await["queued_messages"] == 1 },
    )
    .await;
    // A graceful stop commits what was submitted; then read the store as the next start would.
    let exited = node.terminate().await;
    assert_eq!(exited.code, Some(0), "{exited:?}");
    let path = home.store_path().expect("a stored engine");
    let store: Box<dyn Store> = match engine {
        StorageEngine::Redb => Box::new(RedbStore::open(&path).expect("opens the redb store")),
        StorageEngine::Sled => Box::new(SledStore::open(&path).expect("opens the sled store")),
        StorageEngine::Memory => unreachable!("a stored engine"),
    };
    let queued: Vec<String> = store
        .scan(
            Keyspace::OfflineQueue,
            &session_key_prefix("idle"),
            None,
            usize::MAX,
        )
        .expect("scans the queue")
        .into_iter()
        .map(|(_, value)| {
            let entry = QueueRecord::decode(Bytes::from(value)).expect("a queue entry");
            let message = entry
                .message
                .expect("one subscriber: the message is inline");
            String::from_utf8_lossy(&message.payload).into_owned()
        })
        .collect();
    assert_eq!(queued, ["kept"], "{}: the store still holds", engine.name());
}

/// Connects a persistent MQTT 5 session with a QoS 1 will on `will/{client_id}`, then drops
/// the connection without DISCONNECT, so the will is pending.
async fn leave_with_pending_will(
    addr: std::net::SocketAddr,
    client_id: &str,
    session_expiry_secs: u32,
    will_delay_secs: u32,
) {
    let mut connect = persistent_connect(ProtocolVersion::V5, client_id, true, session_expiry_secs);
    connect.last_will = Some(LastWill {
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: format!("will/{client_id}").into(),
        payload: format!("{client_id} is gone").into(),
        properties: WillProperties {
            will_delay_interval: Some(will_delay_secs),
            ..WillProperties::default()
        },
    });
    let (client, connack) = RawClient::connect_with(addr, connect).await;
    assert_eq!(connack.reason_code, ReasonCode::Success, "{client_id}");
    drop(client);
}

async fn pending_wills_across_restart(engine: StorageEngine) {
    let home = StarlingHome::new(engine, "");
    let mut node = home.start().await;
    park_session(node.mqtt_addr, ProtocolVersion::V5, "heir", 3600, "will/#").await;
    // Will delay 2 s, session kept: due 2 s after the connection was lost.
    leave_with_pending_will(node.mqtt_addr, "delayed", 3600, 2).await;
    // Session expiry 1 s, will delay 10 min: due when the session ends, while the broker is down.
    leave_with_pending_will(node.mqtt_addr, "expiring", 1, 600).await;
    let left_at = Instant::now();
    let node_ref = &node;
    support::eventually(PROMPTLY, "three offline sessions", || async move {
        node_ref.status().await["sessions_offline"] == 3
    })
    .await;
    node.kill().await;
    tokio::time::sleep_until(left_at + Duration::from_millis(1500)).await;
    let mut node = home.start().await;

    let connect = persistent_connect(ProtocolVersion::V5, "heir", false, 3600);
    let (mut heir, connack) = RawClient::connect_with(node.mqtt_addr, connect).await;
    let mut wills = Vec::new();
    let deadline = Instant::now() + PROMPTLY * 2;
    while wills.len() < 2 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match heir.next_event(remaining).await {
            Event::Packet(Packet::Publish(publish)) => {
                if let Some(packet_id) = publish.packet_id {
                    heir.puback(packet_id).await;
                }
                wills.push(String::from_utf8_lossy(&publish.payload).into_owned());
            }
            Event::Packet(_) => {}
            Event::Closed | Event::Timeout => break,
        }
    }
    node.kill().await;
    wills.sort();
    assert!(
        connack.session_present && wills == ["delayed is gone", "expiring is gone"],
        "{} engine: the heir's session present = {}, wills received within {:?}: {wills:?}",
        engine.name(),
        connack.session_present,
        PROMPTLY * 2
    );
}

/// Overwrites `file` with as many bytes of a fixed pseudo-random pattern.
fn overwrite_with_garbage(file: &std::path::Path) {
    let len = std::fs::metadata(file).unwrap().len() as usize;
    let mut state: u32 = 0x2545_f491;
    let garbage: Vec<u8> = (0..len.max(64))
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    std::fs::write(file, garbage).unwrap();
}

async fn corrupt_store_is_refused(engine: StorageEngine) {
    let home = StarlingHome::new(engine, "");
    let node = home.start().await;
    // Some state, so the store holds more than its header.
    park_session(
        node.mqtt_addr,
        ProtocolVersion::V5,
        "parked",
        3600,
        "corrupt/#",
    )
    .await;
    let mut publisher = RawClient::connect_v5(node.mqtt_addr, "publisher").await;
    let mut retained = publish_packet("corrupt/retained", QoS::AtLeastOnce, 0, b"kept");
    retained.retain = true;
    assert_eq!(publisher.publish_with(retained).await, ReasonCode::Success);
    publisher.disconnect().await;
    let exited = node.terminate().await;
    assert_eq!(exited.code, Some(0), "{}", exited.stderr);

    let store_path = home.store_path().expect("an engine with a store on disk");
    assert!(
        store_path.exists(),
        "the {} engine created no store at {}: nothing to corrupt (data directory holds {:?})",
        engine.name(),
        store_path.display(),
        std::fs::read_dir(home.data_dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect::<Vec<_>>()
    );
    // redb: the one file; sled: its log, where the data lives.
    let data_file = match engine {
        StorageEngine::Sled => store_path.join("db"),
        _ => store_path.clone(),
    };
    overwrite_with_garbage(&data_file);
    let corrupted = snapshot_files(&store_path);

    let exited = match home.try_start(Duration::from_secs(30)).await {
        Ok(node) => {
            let log = node.log_tail();
            node.terminate().await;
            panic!(
                "starling started on a corrupt {} store at {}:\n{log}",
                engine.name(),
                store_path.display()
            );
        }
        Err(exited) => exited,
    };
    let mut violations = Vec::new();
    if exited.code.is_none_or(|code| code == 0) {
        violations.push(format!("exit code {:?}, expected non-zero", exited.code));
    }
    if !exited.stderr.contains(&store_path.display().to_string()) {
        violations.push(format!(
            "the message does not name {}",
            store_path.display()
        ));
    }
    let advice = ["backup", "move it aside", "remove", "delete"];
    if !advice.iter().any(|words| exited.stderr.contains(words)) {
        violations.push(format!("the message says none of {advice:?}"));
    }
    // sled 0.34 rewrites a garbage log while it opens it and cannot be opened without writing
    // (see `corrupt_sled_store_is_reported_with_its_path_and_kept` in core): for sled the
    // broker refuses the store and must say that sled rewrote it, instead of keeping it intact.
    let after = snapshot_files(&store_path);
    if engine == StorageEngine::Sled {
        if !exited.stderr.contains("sled rewrites a corrupt log") {
            violations.push("the message does not say that sled rewrote the log".to_owned());
        }
    } else if after != corrupted {
        let changed: std::collections::BTreeSet<_> = after
            .keys()
            .chain(corrupted.keys())
            .filter(|file| after.get(*file) != corrupted.get(*file))
            .collect();
        violations.push(format!("the broker modified the store: {changed:?}"));
    }
    assert!(
        violations.is_empty(),
        "{} engine, corrupt store at {}: {}\nstderr:\n{}",
        engine.name(),
        store_path.display(),
        violations.join("; "),
        exited.stderr
    );
}
