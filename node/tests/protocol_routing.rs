//! Routing over raw MQTT 5.0: subscription identifiers, no local, shared subscriptions,
//! overlapping subscriptions, `$` topics, QoS downgrade, unsubscribe and resubscribe, and
//! QoS 1 publishes pipelined in one read (acknowledged and delivered in order, delivered even
//! when the connection ends on a later packet of the same read).
#![allow(clippy::unwrap_used)]

mod support;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use starling_core::{
    codec::{
        ByteString, Packet, ProtocolVersion, PublishProperties, QoS, ReasonCode,
        SubscriptionOptions,
    },
    message::{Message, SessionId},
};
use support::{
    raw::{options, publish_packet},
    Event, RawClient, TestBroker,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_identifiers_are_sent_with_matching_messages() {
    let broker = TestBroker::start().await;
    let mut subscriber = RawClient::connect_v5(broker.addr, "sub-ids").await;
    subscriber
        .subscribe_with(&[("sid/+", options(QoS::AtLeastOnce))], Some(7))
        .await;
    subscriber
        .subscribe_with(&[("sid/#", options(QoS::AtLeastOnce))], Some(300_000))
        .await;
    subscriber
        .subscribe_with(&[("sid/x/y", options(QoS::AtLeastOnce))], None)
        .await;
    let mut publisher = RawClient::connect_v5(broker.addr, "sub-ids-publisher").await;
    publisher.publish("sid/x", QoS::AtLeastOnce, b"both").await;
    publisher.publish("sid/x/y", QoS::AtLeastOnce, b"one").await;

    // [MQTT-3.3.4-3] one PUBLISH carrying the identifiers of both matching subscriptions.
    let both = subscriber.recv_publish_and_ack().await;
    assert_eq!(both.payload, &b"both"[..]);
    let ids: BTreeSet<u32> = both
        .properties
        .subscription_identifiers
        .iter()
        .copied()
        .collect();
    assert_eq!(ids, BTreeSet::from([7, 300_000]));
    assert_eq!(both.properties.subscription_identifiers.len(), 2);
    let one = subscriber.recv_publish_and_ack().await;
    assert_eq!(one.payload, &b"one"[..]);
    assert_eq!(one.properties.subscription_identifiers, vec![300_000]);
    subscriber.expect_nothing(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_subscription_does_not_receive_its_own_messages() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::connect_v5(broker.addr, "no-local").await;
    let no_local = SubscriptionOptions {
        no_local: true,
        ..options(QoS::AtMostOnce)
    };
    client.subscribe_with(&[("nl/t", no_local)], None).await;
    client.publish("nl/t", QoS::AtMostOnce, b"own").await;
    let mut other = RawClient::connect_v5(broker.addr, "no-local-other").await;
    other.publish("nl/t", QoS::AtMostOnce, b"other").await;
    // [MQTT-3.8.3-3] the own message is not delivered: the other client's comes first.
    assert_eq!(client.recv_publish().await.payload, &b"other"[..]);

    // Without No Local the own message does come back.
    let mut echo = RawClient::connect_v5(broker.addr, "echo").await;
    echo.subscribe("nl/echo", QoS::AtMostOnce).await;
    echo.publish("nl/echo", QoS::AtMostOnce, b"own").await;
    assert_eq!(echo.recv_publish().await.payload, &b"own"[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_delivers_each_message_to_exactly_one_member() {
    let broker = TestBroker::start().await;
    let mut publisher = RawClient::connect_v5(broker.addr, "shared-publisher").await;
    // Retained messages are not sent on a shared subscription (MQTT 5.0 section 4.8.2).
    let mut retained = publish_packet("shared/t", QoS::AtLeastOnce, 0, b"retained");
    retained.retain = true;
    publisher.publish_with(retained).await;

    let mut members = Vec::new();
    for idx in 0..2 {
        let mut member = RawClient::connect_v5(broker.addr, &format!("shared-member-{idx}")).await;
        member
            .subscribe("$share/g/shared/t", QoS::AtLeastOnce)
            .await;
        members.push(member);
    }
    let num_messages = 100;
    for idx in 0..num_messages {
        publisher
            .publish("shared/t", QoS::AtLeastOnce, format!("{idx}").as_bytes())
            .await;
    }

    let mut received: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while received.iter().map(Vec::len).sum::<usize>() < num_messages {
        assert!(
            tokio::time::Instant::now() < deadline,
            "received only {received:?}"
        );
        for (idx, member) in members.iter_mut().enumerate() {
            if let Event::Packet(Packet::Publish(publish)) =
                member.next_event(Duration::from_millis(20)).await
            {
                member.puback(publish.packet_id.unwrap()).await;
                received[idx].push(String::from_utf8(publish.payload.to_vec()).unwrap());
            }
        }
    }
    for member in &mut members {
        member.expect_nothing(Duration::from_millis(200)).await;
    }
    let all: BTreeSet<String> = received.iter().flatten().cloned().collect();
    let expected: BTreeSet<String> = (0..num_messages).map(|idx| idx.to_string()).collect();
    assert_eq!(all, expected, "a message was duplicated, lost or retained");
    assert!(
        received.iter().all(|member| !member.is_empty()),
        "one member got nothing: {} / {}",
        received[0].len(),
        received[1].len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::connect_v5(broker.addr, "shared-no-local").await;
    let no_local = SubscriptionOptions {
        no_local: true,
        ..options(QoS::AtMostOnce)
    };
    let packet_id = client.next_packet_id();
    client
        .send(Packet::Subscribe(starling_core::codec::Subscribe {
            packet_id,
            properties: Default::default(),
            filters: vec![(ByteString::from("$share/g/t"), no_local)],
        }))
        .await;
    // [MQTT-3.8.3-4] DISCONNECT 0x82.
    client.expect_disconnect(ReasonCode::ProtocolError).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_deliver_once_at_the_maximum_granted_qos() {
    let broker = TestBroker::start().await;
    let mut subscriber = RawClient::connect_v5(broker.addr, "overlap").await;
    subscriber.subscribe("ov/#", QoS::AtMostOnce).await;
    subscriber.subscribe("ov/+", QoS::ExactlyOnce).await;
    subscriber.subscribe("ov/t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "overlap-publisher").await;
    publisher.publish("ov/t", QoS::ExactlyOnce, b"once").await;
    publisher.publish("ov/t", QoS::AtMostOnce, b"marker").await;

    let publish = subscriber.recv_publish().await;
    assert_eq!(publish.payload, &b"once"[..]);
    assert_eq!(publish.qos, QoS::ExactlyOnce);
    subscriber
        .send(Packet::PubRec(starling_core::codec::Ack {
            packet_id: publish.packet_id.unwrap(),
            reason_code: ReasonCode::Success,
            properties: Default::default(),
        }))
        .await;
    // Only the PUBREL and the marker follow: no second copy of "once".
    let mut payloads = Vec::new();
    for _ in 0..2 {
        match subscriber.recv().await {
            Packet::PubRel(_) => {}
            Packet::Publish(publish) => payloads.push(publish.payload),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(payloads, vec![Bytes::from_static(b"marker")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dollar_topics_are_not_matched_by_leading_wildcards() {
    let broker = TestBroker::start().await;
    let mut wildcard = RawClient::connect_v5(broker.addr, "dollar-wildcard").await;
    wildcard.subscribe("#", QoS::AtMostOnce).await;
    wildcard.subscribe("+/x", QoS::AtMostOnce).await;
    let mut sys = RawClient::connect_v5(broker.addr, "dollar-sys").await;
    sys.subscribe("$SYS/#", QoS::AtMostOnce).await;

    // The broker publishes on $SYS itself.
    let message = Arc::new(Message {
        topic: ByteString::from("$SYS/x"),
        payload: Bytes::from_static(b"sys"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: PublishProperties::default(),
        expires_at: None,
        publisher: SessionId::SYSTEM,
        received_at: starling_core::message::ReceivedAt::UNKNOWN,
    });
    broker.broker().publish(message);
    let mut publisher = RawClient::connect_v5(broker.addr, "dollar-publisher").await;
    publisher.publish("a/x", QoS::AtMostOnce, b"plain").await;

    // [MQTT-4.7.2-1] `#` and `+/x` skip $SYS/x: the plain message is the first they get.
    assert_eq!(sys.recv_publish().await.topic, "$SYS/x");
    let first = wildcard.recv_publish().await;
    assert_eq!(first.topic, "a/x", "a leading wildcard matched $SYS/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_qos_is_the_minimum_of_publish_and_subscription() {
    let broker = TestBroker::start().await;
    let mut subscriber = RawClient::connect_v5(broker.addr, "downgrade").await;
    subscriber.subscribe("down/q1", QoS::AtLeastOnce).await;
    subscriber.subscribe("down/q0", QoS::AtMostOnce).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "downgrade-publisher").await;
    publisher
        .publish("down/q1", QoS::ExactlyOnce, b"2->1")
        .await;
    publisher
        .publish("down/q0", QoS::ExactlyOnce, b"2->0")
        .await;
    let first = subscriber.recv_publish_and_ack().await;
    assert_eq!(
        (first.payload.as_ref(), first.qos),
        (&b"2->1"[..], QoS::AtLeastOnce)
    );
    let second = subscriber.recv_publish_and_ack().await;
    assert_eq!(
        (second.payload.as_ref(), second.qos),
        (&b"2->0"[..], QoS::AtMostOnce)
    );
    assert_eq!(second.packet_id, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery_and_reports_each_filter() {
    let broker = TestBroker::start().await;
    let mut subscriber = RawClient::connect_v5(broker.addr, "unsubscriber").await;
    subscriber.subscribe("unsub/t", QoS::AtMostOnce).await;
    let packet_id = subscriber.next_packet_id();
    subscriber
        .send(Packet::Unsubscribe(starling_core::codec::Unsubscribe {
            packet_id,
            properties: Default::default(),
            filters: vec![
                ByteString::from("unsub/t"),
                ByteString::from("never/subscribed"),
            ],
        }))
        .await;
    match subscriber.recv().await {
        Packet::UnsubAck(unsuback) => {
            assert_eq!(unsuback.packet_id, packet_id);
            assert_eq!(
                unsuback.reason_codes,
                vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
            );
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    let mut publisher = RawClient::connect_v5(broker.addr, "unsub-publisher").await;
    let reason_code = publisher.publish("unsub/t", QoS::AtLeastOnce, b"x").await;
    assert_eq!(reason_code, ReasonCode::NoMatchingSubscribers);
    subscriber.expect_nothing(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_group_keeps_delivering_when_a_member_leaves() {
    let broker = TestBroker::start().await;
    let mut staying = RawClient::connect_v5(broker.addr, "shared-staying").await;
    staying.subscribe("$share/g2/sl/t", QoS::AtLeastOnce).await;
    let mut leaving = RawClient::connect_v5(broker.addr, "shared-leaving").await;
    leaving.subscribe("$share/g2/sl/t", QoS::AtLeastOnce).await;
    leaving.disconnect().await;
    broker.wait_for_subscriptions(1).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "shared-leave-publisher").await;
    for idx in 0..10 {
        let reason_code = publisher
            .publish("sl/t", QoS::AtLeastOnce, format!("{idx}").as_bytes())
            .await;
        assert_eq!(reason_code, ReasonCode::Success);
    }
    for idx in 0..10 {
        let publish = staying.recv_publish_and_ack().await;
        assert_eq!(publish.payload, format!("{idx}").as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_carry_subscription_identifiers_and_expire() {
    let broker = TestBroker::start().await;
    let mut publisher = RawClient::connect_v5(broker.addr, "retained-expiry-publisher").await;
    for (topic, expiry_secs) in [
        ("rx/short", Some(1)),
        ("rx/long", Some(100)),
        ("rx/none", None),
    ] {
        let mut publish = publish_packet(topic, QoS::AtLeastOnce, 0, topic.as_bytes());
        publish.retain = true;
        publish.properties.message_expiry_interval = expiry_secs;
        publisher.publish_with(publish).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut subscriber = RawClient::connect_v5(broker.addr, "retained-expiry-subscriber").await;
    subscriber
        .subscribe_with(&[("rx/+", options(QoS::AtLeastOnce))], Some(5))
        .await;
    let mut topics = BTreeSet::new();
    for _ in 0..2 {
        let publish = subscriber.recv_publish_and_ack().await;
        assert!(publish.retain);
        assert_eq!(publish.properties.subscription_identifiers, vec![5]);
        if publish.topic == "rx/long" {
            let remaining = publish.properties.message_expiry_interval.unwrap();
            assert!(
                (1..=99).contains(&remaining),
                "remaining expiry {remaining}"
            );
        }
        topics.insert(publish.topic.to_string());
    }
    assert_eq!(
        topics,
        BTreeSet::from(["rx/long".to_string(), "rx/none".to_string()])
    );
    // The retained message with expiry 1 s expired and is not sent.
    subscriber.expect_nothing(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_again_replaces_the_subscription() {
    let broker = TestBroker::start().await;
    let mut subscriber = RawClient::connect_v5(broker.addr, "resubscriber").await;
    subscriber.subscribe("re/t", QoS::AtMostOnce).await;
    subscriber.subscribe("re/t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "resubscriber-publisher").await;
    publisher.publish("re/t", QoS::AtLeastOnce, b"once").await;
    publisher.publish("re/t", QoS::AtMostOnce, b"marker").await;
    // [MQTT-3.8.4-3] one subscription, at the new QoS.
    let publish = subscriber.recv_publish_and_ack().await;
    assert_eq!(
        (publish.payload.as_ref(), publish.qos),
        (&b"once"[..], QoS::AtLeastOnce)
    );
    assert_eq!(subscriber.recv_publish().await.payload, &b"marker"[..]);
    assert_eq!(broker.broker().router().counts().1, 1);
}

/// Encodes packets back to back, as one write: the broker reads them in one buffer, which is
/// where it batches the storage of QoS 1 publishes.
fn one_write(packets: Vec<Packet>) -> BytesMut {
    let mut buf = BytesMut::new();
    for packet in packets {
        packet.encode(ProtocolVersion::V5, &mut buf);
    }
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_publishes_are_acknowledged_in_order_around_a_refusal() {
    let broker = TestBroker::start().await;
    let mut subscriber = RawClient::connect_v5(broker.addr, "order-subscriber").await;
    subscriber.subscribe("order/#", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "order-publisher").await;
    // The second PUBLISH claims a UTF-8 payload that is not: refused with 0x99 without being
    // routed, between QoS 1 publishes that are routed, and a QoS 0 one.
    let mut refused = publish_packet("order/a", QoS::AtLeastOnce, 2, &[0xFF, 0xFE]);
    refused.properties.payload_format_indicator = Some(1);
    publisher
        .send_raw(&one_write(vec![
            Packet::Publish(publish_packet("order/a", QoS::AtLeastOnce, 1, b"first")),
            Packet::Publish(refused),
            Packet::Publish(publish_packet("order/a", QoS::AtLeastOnce, 3, b"third")),
            Packet::Publish(publish_packet("order/a", QoS::AtMostOnce, 0, b"qos0")),
            Packet::Publish(publish_packet("order/b", QoS::AtLeastOnce, 4, b"fourth")),
        ]))
        .await;

    // [MQTT-4.6.0-2] PUBACKs in the order of the PUBLISH packets, each with its own verdict.
    let mut acks = Vec::new();
    for _ in 0..4 {
        match publisher.recv().await {
            Packet::PubAck(puback) => acks.push((puback.packet_id.get(), puback.reason_code)),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    assert_eq!(
        acks,
        vec![
            (1, ReasonCode::Success),
            (2, ReasonCode::PayloadFormatInvalid),
            (3, ReasonCode::Success),
            (4, ReasonCode::Success),
        ]
    );
    // [MQTT-4.6.0-6] the subscriber sees the routed messages in the order they were published.
    assert_eq!(
        subscriber.recv_payloads(4).await,
        ["first", "third", "qos0", "fourth"]
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_read_before_a_protocol_error_are_still_delivered() {
    let broker = TestBroker::start().await;
    let mut subscriber = RawClient::connect_v5(broker.addr, "cut-subscriber").await;
    subscriber.subscribe("cut/#", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "cut-publisher").await;
    // Three good QoS 1 publishes and, in the same read, one whose topic name has a wildcard:
    // the broker closes the connection on the last one.
    let mut packets: Vec<Packet> = (1..=3u16)
        .map(|packet_id| {
            let payload = format!("m{packet_id}");
            Packet::Publish(publish_packet(
                "cut/a",
                QoS::AtLeastOnce,
                packet_id,
                payload.as_bytes(),
            ))
        })
        .collect();
    packets.push(Packet::Publish(publish_packet(
        "cut/+",
        QoS::AtLeastOnce,
        4,
        b"bad",
    )));
    publisher.send_raw(&one_write(packets)).await;
    publisher.read_until_closed().await;

    // The three messages were stored and routed before the connection closed.
    assert_eq!(subscriber.recv_payloads(3).await, ["m1", "m2", "m3"]);
    broker.shutdown().await;
}
