//! Malformed and hostile input: each bad client gets the right reason code (where the standard
//! gives one) and loses only its own connection, while a bystander keeps being served.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use starling_core::codec::{ConnectProperties, Packet, ProtocolVersion, ReasonCode};
use support::{
    assert_elapsed_between, eventually, raw::connect_packet, Bystander, Event, RawClient,
    TestBroker, PROMPTLY,
};
use tokio::time::Instant;

/// Hand-writes an MQTT 5.0 PUBLISH: `first_byte` carries type and flags, the topic is raw
/// bytes, properties are empty.
fn raw_publish_v5(first_byte: u8, topic: &[u8], packet_id: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic);
    if let Some(packet_id) = packet_id {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.push(0); // Property length.
    body.extend_from_slice(payload);
    assert!(body.len() < 128, "one-byte remaining length only");
    let mut frame = vec![first_byte, body.len() as u8];
    frame.extend_from_slice(&body);
    frame
}

/// Hand-writes a CONNECT with the given protocol name and level.
fn raw_connect(protocol_name: &[u8], level: u8) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(protocol_name.len() as u16).to_be_bytes());
    body.extend_from_slice(protocol_name);
    body.push(level);
    body.push(0x02); // Clean session.
    body.extend_from_slice(&[0, 0]); // Keep alive.
    if level == 5 {
        body.push(0); // Property length.
    }
    body.extend_from_slice(&[0, 1, b'c']);
    let mut frame = vec![0x10, body.len() as u8];
    frame.extend_from_slice(&body);
    frame
}

async fn start() -> (TestBroker, Bystander) {
    let broker = TestBroker::start().await;
    let bystander = Bystander::start(broker.addr).await;
    (broker, bystander)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_remaining_length_closes_only_that_connection() {
    let (broker, mut bystander) = start().await;
    // Five bytes of remaining length, the first four with the continuation bit.
    let bad_length = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];

    let mut client = RawClient::connect_v5(broker.addr, "bad-length-v5").await;
    client.send_raw(&bad_length).await;
    client.expect_disconnect(ReasonCode::MalformedPacket).await;
    bystander.assert_served().await;

    let mut client = RawClient::connect_v311(broker.addr, "bad-length-v311").await;
    client.send_raw(&bad_length).await;
    client.expect_closed().await;
    bystander.assert_served().await;

    // Before CONNECT there is no version to answer in: the connection just closes.
    let mut client = RawClient::open(broker.addr).await;
    client.send_raw(&[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).await;
    assert_eq!(client.read_until_closed().await, Vec::<u8>::new());
    bystander.assert_served().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_name_is_refused() {
    let (broker, mut bystander) = start().await;
    for level in [4, 5] {
        let mut client = RawClient::open(broker.addr).await;
        client.send_raw(&raw_connect(b"MQTX", level)).await;
        // [MQTT-3.1.2-1] the server may answer CONNACK 0x01 (3.1.1) / 0x84 (5.0) or just close.
        let received = client.read_until_closed().await;
        assert!(
            received.is_empty()
                || received == [0x20, 0x02, 0x00, 0x01]
                || received.starts_with(&[0x20, 0x03, 0x00, 0x84]),
            "level {level}: unexpected answer {received:?}"
        );
        bystander.assert_served().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_level_gets_connack_0x01_then_close() {
    let (broker, mut bystander) = start().await;
    let mut client = RawClient::open(broker.addr).await;
    client.send_raw(&raw_connect(b"MQTT", 6)).await;
    // [MQTT-3.1.2-2] CONNACK with return code 0x01 (unacceptable protocol level), then close.
    assert_eq!(client.read_until_closed().await, [0x20, 0x02, 0x00, 0x01]);
    bystander.assert_served().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_before_connect_closes_the_connection() {
    let (broker, mut bystander) = start().await;
    let pingreq = [0xC0, 0x00];
    let subscribe = [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00];
    let publish = raw_publish_v5(0x30, b"a/b", None, b"x");
    for first_packet in [&pingreq[..], &subscribe[..], &publish[..]] {
        let mut client = RawClient::open(broker.addr).await;
        client.send_raw(first_packet).await;
        // [MQTT-3.1.0-1] nothing is answered before CONNECT.
        assert_eq!(
            client.read_until_closed().await,
            Vec::<u8>::new(),
            "first packet {first_packet:?}"
        );
        bystander.assert_served().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connect_is_a_protocol_error() {
    let (broker, mut bystander) = start().await;
    let mut client = RawClient::connect_v5(broker.addr, "twice-v5").await;
    client
        .send(Packet::Connect(Box::new(connect_packet(
            ProtocolVersion::V5,
            "twice-v5",
        ))))
        .await;
    // [MQTT-3.1.0-2] DISCONNECT 0x82 (Protocol Error).
    client.expect_disconnect(ReasonCode::ProtocolError).await;
    bystander.assert_served().await;

    let mut client = RawClient::connect_v311(broker.addr, "twice-v311").await;
    client
        .send(Packet::Connect(Box::new(connect_packet(
            ProtocolVersion::V3_1_1,
            "twice-v311",
        ))))
        .await;
    client.expect_closed().await;
    bystander.assert_served().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_in_publish_topic_is_topic_name_invalid() {
    let (broker, mut bystander) = start().await;
    for topic in [&b"a/+"[..], b"a/#", b"+", b"#"] {
        let mut client = RawClient::connect_v5(broker.addr, "wildcard-publisher").await;
        client
            .send_raw(&raw_publish_v5(0x30, topic, None, b"x"))
            .await;
        // [MQTT-3.3.2-2] DISCONNECT 0x90 (Topic Name invalid).
        client.expect_disconnect(ReasonCode::TopicNameInvalid).await;
        bystander.assert_served().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_and_nul_in_topic_are_malformed() {
    let (broker, mut bystander) = start().await;
    let cases: [&[u8]; 4] = [
        b"a/\xC3\x28",     // Invalid two-byte sequence.
        b"a/\xED\xA0\x80", // Encoded surrogate U+D800 [MQTT-1.5.4-1].
        b"a/\x00/b",       // U+0000 [MQTT-1.5.4-2].
        b"\xFF",           // Never valid in UTF-8.
    ];
    for topic in cases {
        let mut client = RawClient::connect_v5(broker.addr, "utf8-publisher").await;
        client
            .send_raw(&raw_publish_v5(0x30, topic, None, b"x"))
            .await;
        // DISCONNECT 0x81 (Malformed Packet).
        client.expect_disconnect(ReasonCode::MalformedPacket).await;
        bystander.assert_served().await;
    }
    // The same topic inside SUBSCRIBE.
    let mut client = RawClient::connect_v5(broker.addr, "utf8-subscriber").await;
    client
        .send_raw(&[0x82, 0x08, 0x00, 0x01, 0x00, 0x00, 0x02, 0xC3, 0x28, 0x00])
        .await;
    client.expect_disconnect(ReasonCode::MalformedPacket).await;
    bystander.assert_served().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_qos1_with_packet_id_zero_is_malformed() {
    let (broker, mut bystander) = start().await;
    let mut client = RawClient::connect_v5(broker.addr, "zero-packet-id").await;
    client
        .send_raw(&raw_publish_v5(0x32, b"a/b", Some(0), b"x"))
        .await;
    // [MQTT-2.2.1-3] a QoS > 0 PUBLISH needs a non-zero packet id.
    client.expect_disconnect(ReasonCode::MalformedPacket).await;
    bystander.assert_served().await;

    let mut client = RawClient::connect_v5(broker.addr, "zero-packet-id-subscribe").await;
    client
        .send_raw(&[0x82, 0x07, 0x00, 0x00, 0x00, 0x00, 0x01, b'a', 0x00])
        .await;
    client.expect_disconnect(ReasonCode::MalformedPacket).await;
    bystander.assert_served().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_qos3_is_malformed() {
    let (broker, mut bystander) = start().await;
    let mut client = RawClient::connect_v5(broker.addr, "qos3-v5").await;
    client
        .send_raw(&raw_publish_v5(0x36, b"a/b", Some(1), b"x"))
        .await;
    // [MQTT-3.3.1-4] both QoS bits set is malformed.
    client.expect_disconnect(ReasonCode::MalformedPacket).await;
    bystander.assert_served().await;

    let mut client = RawClient::connect_v311(broker.addr, "qos3-v311").await;
    client
        .send_raw(&[0x36, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01])
        .await;
    client.expect_closed().await;
    bystander.assert_served().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maximum_remaining_length_is_rejected_from_the_header_alone() {
    let (broker, mut bystander) = start().await;
    let mut client = RawClient::connect_v5(broker.addr, "huge").await;
    // Remaining Length 268,435,455, the largest encodable: only the 5-byte fixed header is sent.
    client.send_raw(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]).await;
    let started = Instant::now();
    client.expect_disconnect(ReasonCode::PacketTooLarge).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "rejected after {:?}, not at once",
        started.elapsed()
    );
    bystander.assert_served().await;

    // The same header as a first packet: closed at once, nothing answered.
    let mut client = RawClient::open(broker.addr).await;
    client.send_raw(&[0x10, 0xFF, 0xFF, 0xFF, 0x7F]).await;
    assert_eq!(client.read_until_closed().await, Vec::<u8>::new());
    bystander.assert_served().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_sends_connect_is_closed_after_the_connect_timeout() {
    let broker = TestBroker::start_with("[mqtt]\nconnect_timeout_ms = 300\n").await;
    let mut bystander = Bystander::start(broker.addr).await;
    let started = Instant::now();
    let mut silent = RawClient::open(broker.addr).await;
    // A slow sender: the first bytes of a CONNECT, then nothing.
    let mut slow = RawClient::open(broker.addr).await;
    slow.send_raw(&raw_connect(b"MQTT", 5)[..6]).await;
    for client in [&mut silent, &mut slow] {
        match client.next_event(PROMPTLY).await {
            Event::Closed => {}
            other => panic!("expected close after the connect timeout, got {other:?}"),
        }
    }
    assert_elapsed_between(
        started.elapsed(),
        Duration::from_millis(250),
        Duration::from_secs(3),
        "connections without CONNECT closed",
    );
    bystander.assert_served().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_rapid_connect_disconnect_cycles_leave_the_broker_serving() {
    let (broker, mut bystander) = start().await;
    for cycle in 0..1000 {
        let client_id = format!("cycle-{}", cycle % 50);
        match cycle % 4 {
            // Clean connect and DISCONNECT.
            0 | 1 => {
                RawClient::connect_v5(broker.addr, &client_id)
                    .await
                    .disconnect()
                    .await
            }
            // MQTT 3.1.1, then the socket is dropped without DISCONNECT.
            2 => drop(RawClient::connect_v311(broker.addr, &client_id).await),
            // TCP connect and close without a byte.
            _ => drop(RawClient::open(broker.addr).await),
        }
    }
    bystander.assert_served().await;
    let engine = broker.broker().clone();
    eventually(PROMPTLY, "connection tasks to finish", || {
        let engine = engine.clone();
        async move { engine.num_connections() <= 2 }
    })
    .await;
    // Every cycled session had expiry 0: only the bystander's session is left.
    eventually(PROMPTLY, "cycled sessions to end", || {
        let engine = engine.clone();
        async move { engine.registry().count().await == (1, 0) }
    })
    .await;
    bystander.assert_served().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_connect_properties_out_of_range_are_protocol_errors() {
    let (broker, mut bystander) = start().await;
    // Receive Maximum 0 is a Protocol Error (MQTT 5.0 section 3.1.2.11.3).
    let mut connect = connect_packet(ProtocolVersion::V5, "receive-maximum-zero");
    connect.properties = ConnectProperties {
        receive_maximum: Some(0),
        ..ConnectProperties::default()
    };
    let mut client = RawClient::open(broker.addr).await;
    client.send(Packet::Connect(Box::new(connect))).await;
    let received = client.read_until_closed().await;
    // CONNACK 0x82 or a plain close are both allowed before the session exists.
    assert!(
        received.is_empty() || received.starts_with(&[0x20, 0x03, 0x00, 0x82]),
        "unexpected answer {received:?}"
    );
    bystander.assert_served().await;
}
