//! Sessions and QoS over raw MQTT 5.0: duplicate suppression, in-flight retry on reconnect,
//! clean start, session expiry, message expiry and receive maximum in both directions.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use starling_core::codec::{
    Ack, AckProperties, ConnectProperties, Packet, ProtocolVersion, PublishProperties, QoS,
    ReasonCode,
};
use support::{
    raw::{connect_packet, publish_packet},
    RawClient, TestBroker,
};

/// Connects an MQTT 5.0 client with the given clean start and session expiry; returns the
/// client and CONNACK Session Present.
async fn connect_persistent(
    broker: &TestBroker,
    client_id: &str,
    clean_start: bool,
    session_expiry_secs: u32,
) -> (RawClient, bool) {
    let mut connect = connect_packet(ProtocolVersion::V5, client_id);
    connect.clean_start = clean_start;
    connect.properties.session_expiry_interval = Some(session_expiry_secs);
    let (client, connack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.reason_code, ReasonCode::Success, "{connack:?}");
    (client, connack.session_present)
}

fn ack(packet_id: u16) -> Ack {
    Ack {
        packet_id: std::num::NonZeroU16::new(packet_id).unwrap(),
        reason_code: ReasonCode::Success,
        properties: AckProperties::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_duplicate_publish_before_pubrel_is_delivered_once() {
    let broker = TestBroker::start().await;
    let mut subscriber = RawClient::connect_v5(broker.addr, "qos2-dup-subscriber").await;
    // Subscribed at QoS 1 so each delivery is one PUBLISH/PUBACK exchange.
    subscriber.subscribe("dup/t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "qos2-dup-publisher").await;

    let mut publish = publish_packet("dup/t", QoS::ExactlyOnce, 7, b"once");
    publisher.send(Packet::Publish(publish.clone())).await;
    match publisher.recv().await {
        Packet::PubRec(pubrec) => assert_eq!(pubrec.packet_id.get(), 7),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    // The client did not see the PUBREC and resends with DUP before PUBREL.
    publish.dup = true;
    publisher.send(Packet::Publish(publish)).await;
    match publisher.recv().await {
        Packet::PubRec(pubrec) => {
            assert_eq!(pubrec.packet_id.get(), 7);
            assert!(!pubrec.reason_code.is_error(), "{pubrec:?}");
        }
        other => panic!("expected a second PUBREC, got {other:?}"),
    }
    publisher.send(Packet::PubRel(ack(7))).await;
    match publisher.recv().await {
        Packet::PubComp(pubcomp) => assert_eq!(pubcomp.packet_id.get(), 7),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    // After PUBREL the packet id is free again: the same id is a new message.
    publisher
        .publish_with(publish_packet("dup/t", QoS::ExactlyOnce, 7, b"next"))
        .await;

    let first = subscriber.recv_publish_and_ack().await;
    assert_eq!(first.payload, &b"once"[..]);
    let second = subscriber.recv_publish_and_ack().await;
    assert_eq!(
        second.payload,
        &b"next"[..],
        "the duplicate was delivered a second time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_qos1_is_redelivered_with_dup_and_same_packet_id_on_reconnect() {
    let broker = TestBroker::start().await;
    let (mut subscriber, _) = connect_persistent(&broker, "inflight", true, 60).await;
    subscriber.subscribe("inflight/t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "inflight-publisher").await;
    publisher
        .publish("inflight/t", QoS::AtLeastOnce, b"retry me")
        .await;

    let first = subscriber.recv_publish().await;
    assert!(!first.dup);
    let packet_id = first.packet_id.expect("qos 1 has a packet id");
    // No PUBACK: the connection drops.
    drop(subscriber);

    let (mut subscriber, session_present) =
        connect_persistent(&broker, "inflight", false, 60).await;
    assert!(session_present);
    let resent = subscriber.recv_publish().await;
    // [MQTT-4.4.0-1] resent with DUP=1 and the same packet id [MQTT-3.3.1-1].
    assert!(resent.dup, "{resent:?}");
    assert_eq!(resent.packet_id, Some(packet_id));
    assert_eq!(resent.payload, &b"retry me"[..]);
    assert_eq!(resent.topic, "inflight/t");
    subscriber.puback(packet_id).await;

    // Acknowledged now: the next message is new, not a third copy.
    publisher
        .publish("inflight/t", QoS::AtLeastOnce, b"after")
        .await;
    let next = subscriber.recv_publish_and_ack().await;
    assert_eq!(next.payload, &b"after"[..]);
    assert!(!next.dup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_qos2_delivery_is_resumed_on_reconnect() {
    let broker = TestBroker::start().await;
    let (mut subscriber, _) = connect_persistent(&broker, "inflight2", true, 60).await;
    subscriber.subscribe("inflight2/t", QoS::ExactlyOnce).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "inflight2-publisher").await;
    publisher
        .publish("inflight2/t", QoS::ExactlyOnce, b"exactly once")
        .await;
    let first = subscriber.recv_publish().await;
    let packet_id = first.packet_id.unwrap();
    subscriber.send(Packet::PubRec(ack(packet_id.get()))).await;
    match subscriber.recv().await {
        Packet::PubRel(pubrel) => assert_eq!(pubrel.packet_id, packet_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    drop(subscriber);

    // [MQTT-4.4.0-1] after PUBREC the broker resends PUBREL, not the PUBLISH.
    let (mut subscriber, session_present) =
        connect_persistent(&broker, "inflight2", false, 60).await;
    assert!(session_present);
    match subscriber.recv().await {
        Packet::PubRel(pubrel) => assert_eq!(pubrel.packet_id, packet_id),
        other => panic!("expected the PUBREL again, got {other:?}"),
    }
    subscriber.send(Packet::PubComp(ack(packet_id.get()))).await;
    subscriber.expect_nothing(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_start_discards_the_previous_session() {
    let broker = TestBroker::start().await;
    let (mut subscriber, session_present) = connect_persistent(&broker, "clean", true, 60).await;
    assert!(!session_present);
    subscriber.subscribe("clean/t", QoS::AtLeastOnce).await;
    subscriber.disconnect().await;
    let mut publisher = RawClient::connect_v5(broker.addr, "clean-publisher").await;
    publisher
        .publish("clean/t", QoS::AtLeastOnce, b"queued while offline")
        .await;

    let (mut subscriber, session_present) = connect_persistent(&broker, "clean", true, 60).await;
    assert!(!session_present, "clean start must not resume the session");
    // Neither the queued message nor the subscription survived.
    let reason_code = publisher
        .publish("clean/t", QoS::AtLeastOnce, b"after clean start")
        .await;
    assert_eq!(reason_code, ReasonCode::NoMatchingSubscribers);
    subscriber.expect_nothing(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_is_resumed_with_queued_messages() {
    let broker = TestBroker::start().await;
    let (mut subscriber, _) = connect_persistent(&broker, "resume", true, 60).await;
    subscriber.subscribe("resume/t", QoS::AtLeastOnce).await;
    subscriber.disconnect().await;
    let mut publisher = RawClient::connect_v5(broker.addr, "resume-publisher").await;
    for payload in [&b"one"[..], b"two"] {
        let reason_code = publisher
            .publish("resume/t", QoS::AtLeastOnce, payload)
            .await;
        assert_eq!(reason_code, ReasonCode::Success);
    }
    let (mut subscriber, session_present) = connect_persistent(&broker, "resume", false, 60).await;
    assert!(session_present);
    assert_eq!(subscriber.recv_publish_and_ack().await.payload, &b"one"[..]);
    assert_eq!(subscriber.recv_publish_and_ack().await.payload, &b"two"[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expires_after_its_expiry_interval() {
    let broker = TestBroker::start().await;
    let (mut short, _) = connect_persistent(&broker, "expiry-short", true, 1).await;
    short.subscribe("expiry/t", QoS::AtLeastOnce).await;
    let (mut long, _) = connect_persistent(&broker, "expiry-long", true, 60).await;
    long.subscribe("expiry/t", QoS::AtLeastOnce).await;
    short.disconnect().await;
    long.disconnect().await;

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_short, session_present) = connect_persistent(&broker, "expiry-short", false, 1).await;
    assert!(!session_present, "a session with expiry 1 s survived 2.5 s");
    let (_long, session_present) = connect_persistent(&broker, "expiry-long", false, 60).await;
    assert!(session_present, "a session with expiry 60 s ended early");
    // The expired session's subscription is gone: only the long session's remains.
    assert_eq!(broker.broker().router().counts().1, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_expiry_is_decremented_and_expired_messages_are_dropped() {
    let broker = TestBroker::start().await;
    let (mut subscriber, _) = connect_persistent(&broker, "message-expiry", true, 60).await;
    subscriber.subscribe("expiry/m", QoS::AtLeastOnce).await;
    subscriber.disconnect().await;

    let mut publisher = RawClient::connect_v5(broker.addr, "message-expiry-publisher").await;
    for (payload, expiry_secs) in [(&b"lives"[..], 10), (b"expires", 1)] {
        let mut publish = publish_packet("expiry/m", QoS::AtLeastOnce, 0, payload);
        publish.properties = PublishProperties {
            message_expiry_interval: Some(expiry_secs),
            ..PublishProperties::default()
        };
        publisher.publish_with(publish).await;
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let (mut subscriber, session_present) =
        connect_persistent(&broker, "message-expiry", false, 60).await;
    assert!(session_present);
    let lives = subscriber.recv_publish_and_ack().await;
    assert_eq!(lives.payload, &b"lives"[..]);
    // [MQTT-3.3.2-6] the forwarded interval is what is left: at most 10 - 2.
    let remaining = lives
        .properties
        .message_expiry_interval
        .expect("expiry forwarded");
    assert!((1..=8).contains(&remaining), "remaining expiry {remaining}");
    // The message with expiry 1 s was queued for 2 s: it must not arrive before this marker.
    publisher
        .publish("expiry/m", QoS::AtLeastOnce, b"marker")
        .await;
    let next = subscriber.recv_publish_and_ack().await;
    assert_eq!(
        next.payload,
        &b"marker"[..],
        "an expired message was delivered"
    );
    assert_eq!(next.properties.message_expiry_interval, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_exceeding_receive_maximum_gets_disconnect_0x93() {
    let broker = TestBroker::start_with("[mqtt]\nreceive_maximum = 2\n").await;
    let (mut client, connack) = RawClient::connect_with(
        broker.addr,
        connect_packet(ProtocolVersion::V5, "too-many-inflight"),
    )
    .await;
    assert_eq!(connack.properties.receive_maximum, Some(2));
    // Three QoS 2 publishes, none released: the third exceeds the broker's receive maximum.
    for packet_id in 1..=2 {
        client
            .send(Packet::Publish(publish_packet(
                "rm/t",
                QoS::ExactlyOnce,
                packet_id,
                b"x",
            )))
            .await;
        match client.recv().await {
            Packet::PubRec(pubrec) => assert_eq!(pubrec.packet_id.get(), packet_id),
            other => panic!("expected PUBREC, got {other:?}"),
        }
    }
    client
        .send(Packet::Publish(publish_packet(
            "rm/t",
            QoS::ExactlyOnce,
            3,
            b"x",
        )))
        .await;
    client
        .expect_disconnect(ReasonCode::ReceiveMaximumExceeded)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_honours_the_client_receive_maximum() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "receive-maximum-1");
    connect.properties = ConnectProperties {
        receive_maximum: Some(1),
        ..ConnectProperties::default()
    };
    let (mut subscriber, _) = RawClient::connect_with(broker.addr, connect).await;
    subscriber.subscribe("window/t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "window-publisher").await;
    for idx in 0..3 {
        publisher
            .publish("window/t", QoS::AtLeastOnce, format!("m{idx}").as_bytes())
            .await;
    }
    for idx in 0..3 {
        let publish = subscriber.recv_publish().await;
        assert_eq!(publish.payload, format!("m{idx}").as_bytes());
        // [MQTT-3.3.4-9] nothing more while one QoS 1 delivery is unacknowledged.
        subscriber.expect_nothing(Duration::from_millis(300)).await;
        subscriber.puback(publish.packet_id.unwrap()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_arrive_complete_and_in_order() {
    let broker = TestBroker::start().await;
    let mut subscriber = RawClient::connect_v5(broker.addr, "large-subscriber").await;
    subscriber.subscribe("large/t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "large-publisher").await;
    // 30 x 100 KB: well past the broker's 64 KB bound on pending output per connection.
    let num_messages = 30;
    let publishing = tokio::spawn(async move {
        for idx in 0..num_messages {
            let payload = vec![idx as u8; 100 * 1024];
            let reason_code = publisher
                .publish("large/t", QoS::AtLeastOnce, &payload)
                .await;
            assert_eq!(reason_code, ReasonCode::Success);
        }
    });
    for idx in 0..num_messages {
        let publish = subscriber.recv_publish_and_ack().await;
        assert_eq!(publish.payload.len(), 100 * 1024);
        assert!(
            publish.payload.iter().all(|&byte| byte == idx as u8),
            "message {idx}"
        );
    }
    publishing.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_does_not_stall_the_broker() {
    let broker = TestBroker::start_with("[mqtt]\nmax_queued_messages = 100\n").await;
    let mut stalled = RawClient::connect_v5(broker.addr, "stalled").await;
    stalled.subscribe("flood/t", QoS::AtLeastOnce).await;
    let mut bystander = support::Bystander::start(broker.addr).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "flooder").await;
    // 2,000 x 10 KB for a client that reads nothing: its queue overflows, others go on.
    let payload = vec![b'x'; 10 * 1024];
    for _ in 0..2000 {
        publisher
            .publish("flood/t", QoS::AtMostOnce, &payload)
            .await;
    }
    // PINGRESP as a sync point: every QoS 0 PUBLISH before it has been routed. (A QoS 1
    // publish would have its PUBACK held back while the stalled queue is full: backpressure.)
    publisher.send(Packet::PingReq).await;
    assert!(matches!(publisher.recv().await, Packet::PingResp));
    bystander.assert_served().await;
    // The stalled client still gets (a prefix of) its messages once it reads.
    assert_eq!(stalled.recv_publish().await.payload.len(), 10 * 1024);
}
