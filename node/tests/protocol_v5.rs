//! MQTT 5.0 features over raw packets: topic aliases both ways, maximum packet size both ways,
//! Maximum QoS, forwarded properties, payload format, problem information, authentication and
//! the conformance profile.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use starling_core::codec::{
    ByteString, ConnectProperties, Packet, PacketId, ProtocolVersion, PublishProperties, QoS,
    ReasonCode,
};
use support::{
    raw::{connect_packet, options, publish_packet},
    RawClient, TestBroker,
};

async fn connect_with_properties(
    broker: &TestBroker,
    client_id: &str,
    properties: ConnectProperties,
) -> RawClient {
    let mut connect = connect_packet(ProtocolVersion::V5, client_id);
    connect.properties = properties;
    let (client, connack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.reason_code, ReasonCode::Success, "{connack:?}");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_topic_alias_stands_for_its_topic() {
    let broker = TestBroker::start().await;
    let mut subscriber = RawClient::connect_v5(broker.addr, "alias-in-subscriber").await;
    subscriber.subscribe("alias/in", QoS::AtMostOnce).await;
    let (mut publisher, connack) = RawClient::connect_with(
        broker.addr,
        connect_packet(ProtocolVersion::V5, "alias-in-publisher"),
    )
    .await;
    let alias_maximum = connack.properties.topic_alias_maximum.unwrap_or(0);
    assert!(alias_maximum >= 1, "broker advertises no topic aliases");

    let mut first = publish_packet("alias/in", QoS::AtLeastOnce, 0, b"sets the alias");
    first.properties.topic_alias = PacketId::new(1);
    assert_eq!(publisher.publish_with(first).await, ReasonCode::Success);
    let mut second = publish_packet("", QoS::AtLeastOnce, 0, b"uses the alias");
    second.properties.topic_alias = PacketId::new(1);
    assert_eq!(publisher.publish_with(second).await, ReasonCode::Success);

    for payload in [&b"sets the alias"[..], b"uses the alias"] {
        let publish = subscriber.recv_publish().await;
        assert_eq!(publish.topic, "alias/in");
        assert_eq!(publish.payload, payload);
        assert_eq!(publish.properties.topic_alias, None);
    }

    // An alias above the advertised maximum is DISCONNECT 0x94 [MQTT-3.3.2-9].
    let mut beyond = publish_packet("alias/in", QoS::AtMostOnce, 0, b"x");
    beyond.properties.topic_alias = PacketId::new(alias_maximum + 1);
    publisher.send(Packet::Publish(beyond)).await;
    publisher
        .expect_disconnect(ReasonCode::TopicAliasInvalid)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_topic_aliases_are_assigned_up_to_the_client_maximum() {
    let broker = TestBroker::start().await;
    let mut subscriber = connect_with_properties(
        &broker,
        "alias-out",
        ConnectProperties {
            topic_alias_maximum: Some(1),
            ..ConnectProperties::default()
        },
    )
    .await;
    subscriber.subscribe("alias/out/#", QoS::AtMostOnce).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "alias-out-publisher").await;
    for (topic, payload) in [
        ("alias/out/a", "a1"),
        ("alias/out/a", "a2"),
        ("alias/out/b", "b1"),
        ("alias/out/a", "a3"),
    ] {
        publisher
            .publish(topic, QoS::AtMostOnce, payload.as_bytes())
            .await;
    }
    let a1 = subscriber.recv_publish().await;
    assert_eq!(a1.topic, "alias/out/a", "first use carries the topic");
    let alias = a1.properties.topic_alias.expect("alias assigned");
    assert_eq!(alias.get(), 1);
    let a2 = subscriber.recv_publish().await;
    assert_eq!(a2.topic, "", "second use sends the alias alone: {a2:?}");
    assert_eq!(a2.properties.topic_alias, Some(alias));
    assert_eq!(a2.payload, &b"a2"[..]);
    // [MQTT-3.1.2-26] the client's maximum (1) is used up: b goes out with its topic.
    let b1 = subscriber.recv_publish().await;
    assert_eq!(b1.topic, "alias/out/b");
    assert!(
        b1.properties
            .topic_alias
            .is_none_or(|alias| alias.get() <= 1),
        "alias beyond the client's maximum: {b1:?}"
    );
    let a3 = subscriber.recv_publish().await;
    assert_eq!(a3.payload, &b"a3"[..]);
    if b1.properties.topic_alias.is_none() {
        assert_eq!(a3.topic, "");
        assert_eq!(a3.properties.topic_alias, Some(alias));
    }

    // A client that advertises no Topic Alias Maximum never gets an alias [MQTT-3.1.2-27].
    let mut plain = RawClient::connect_v5(broker.addr, "alias-none").await;
    plain.subscribe("alias/out/#", QoS::AtMostOnce).await;
    for payload in ["p1", "p2"] {
        publisher
            .publish("alias/out/a", QoS::AtMostOnce, payload.as_bytes())
            .await;
        let publish = plain.recv_publish().await;
        assert_eq!(publish.topic, "alias/out/a");
        assert_eq!(publish.properties.topic_alias, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_advertises_and_enforces_its_maximum_packet_size() {
    let broker = TestBroker::start_with("[mqtt]\nmax_packet_size_bytes = 1024\n").await;
    let (mut client, connack) =
        RawClient::connect_with(broker.addr, connect_packet(ProtocolVersion::V5, "big")).await;
    assert_eq!(connack.properties.maximum_packet_size, Some(1024));
    let reason_code = client
        .publish("size/t", QoS::AtLeastOnce, &[b'x'; 900])
        .await;
    assert!(
        !reason_code.is_error(),
        "a packet within the limit: {reason_code:?}"
    );
    client
        .send(Packet::Publish(publish_packet(
            "size/t",
            QoS::AtMostOnce,
            0,
            &[b'x'; 2000],
        )))
        .await;
    // [MQTT-3.2.2-15] DISCONNECT 0x95 (Packet too large).
    client.expect_disconnect(ReasonCode::PacketTooLarge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_larger_than_the_client_maximum_is_not_sent() {
    let broker = TestBroker::start().await;
    let mut subscriber = connect_with_properties(
        &broker,
        "small-packets",
        ConnectProperties {
            maximum_packet_size: Some(128),
            ..ConnectProperties::default()
        },
    )
    .await;
    subscriber.subscribe("size/c", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "size-publisher").await;
    publisher
        .publish("size/c", QoS::AtLeastOnce, &[b'x'; 500])
        .await;
    publisher
        .publish("size/c", QoS::AtLeastOnce, b"small")
        .await;
    // [MQTT-3.1.2-24] the big one is dropped; the connection goes on with the small one.
    let publish = subscriber.recv_publish_and_ack().await;
    assert_eq!(publish.payload, &b"small"[..]);
    subscriber.expect_nothing(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_properties_are_forwarded_unchanged_and_in_order() {
    let broker = TestBroker::start().await;
    let mut subscriber = RawClient::connect_v5(broker.addr, "props-subscriber").await;
    subscriber.subscribe("props/t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "props-publisher").await;
    let properties = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some(ByteString::from("application/json")),
        response_topic: Some(ByteString::from("props/reply")),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr\xff")),
        // Repeated names keep their order [MQTT-3.3.2-17], [MQTT-3.3.2-18].
        user_properties: vec![
            (ByteString::from("b"), ByteString::from("1")),
            (ByteString::from("a"), ByteString::from("2")),
            (ByteString::from("b"), ByteString::from("3")),
            (ByteString::from("ü"), ByteString::from("")),
        ],
        ..PublishProperties::default()
    };
    let mut publish = publish_packet("props/t", QoS::AtLeastOnce, 0, br#"{"k":1}"#);
    publish.properties = properties.clone();
    publisher.publish_with(publish).await;

    let received = subscriber.recv_publish_and_ack().await;
    assert_eq!(received.payload, &br#"{"k":1}"#[..]);
    assert_eq!(received.properties, properties);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_problem_information_zero_suppresses_reason_strings() {
    let broker = TestBroker::start().await;
    let mut client = connect_with_properties(
        &broker,
        "no-problem-info",
        ConnectProperties {
            request_problem_information: Some(false),
            ..ConnectProperties::default()
        },
    )
    .await;
    // An error SUBACK and a PUBACK without subscribers: neither may carry a reason string or
    // user properties [MQTT-3.1.2-29].
    let packet_id = client.next_packet_id();
    client
        .send(Packet::Subscribe(starling_core::codec::Subscribe {
            packet_id,
            properties: Default::default(),
            filters: vec![(ByteString::from("bad/#/filter"), options(QoS::AtMostOnce))],
        }))
        .await;
    match client.recv().await {
        Packet::SubAck(suback) => {
            assert_eq!(suback.reason_codes, vec![ReasonCode::TopicFilterInvalid]);
            assert_eq!(suback.properties, Default::default());
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let publish = publish_packet("nobody/listens", QoS::AtLeastOnce, 9, b"x");
    client.send(Packet::Publish(publish)).await;
    match client.recv().await {
        Packet::PubAck(puback) => {
            assert_eq!(puback.reason_code, ReasonCode::NoMatchingSubscribers);
            assert_eq!(puback.properties, Default::default());
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_authentication_method_is_refused_with_0x8c() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "auth-method");
    connect.properties.authentication_method = Some(ByteString::from("X-UNKNOWN-METHOD"));
    let (mut client, connack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.reason_code, ReasonCode::BadAuthenticationMethod);
    client.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_profile_refuses_test_nosubscribe_with_0x80() {
    let profile = include_str!("conformance.toml");
    let broker = TestBroker::start_from_file(profile, "conformance.toml").await;
    for version in [ProtocolVersion::V5, ProtocolVersion::V3_1_1] {
        let mut client = RawClient::connect(broker.addr, version, "nosubscribe").await;
        let reason_codes = client
            .subscribe_with(
                &[
                    ("test/nosubscribe", options(QoS::AtLeastOnce)),
                    ("test/allowed", options(QoS::AtLeastOnce)),
                ],
                None,
            )
            .await;
        assert_eq!(
            reason_codes,
            vec![ReasonCode::UnspecifiedError, ReasonCode::GrantedQoS1],
            "{version:?}"
        );
        client.disconnect().await;
    }
    // The profile's other settings, as the Paho suite expects them.
    let mut connect = connect_packet(ProtocolVersion::V5, "profile");
    connect.keep_alive = 120;
    let (_client, connack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.properties.server_keep_alive, Some(60));
    assert_eq!(connack.properties.receive_maximum, Some(10));
    let mut connect = connect_packet(ProtocolVersion::V5, "keep-alive-zero");
    connect.keep_alive = 0;
    let (_client, connack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    assert_eq!(connack.properties.server_keep_alive, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_inbound_topic_alias_is_a_protocol_error() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::connect_v5(broker.addr, "alias-unknown").await;
    let mut publish = publish_packet("", QoS::AtMostOnce, 0, b"x");
    publish.properties.topic_alias = PacketId::new(3);
    client.send(Packet::Publish(publish)).await;
    // MQTT 5.0 section 3.3.2.3.4: an alias without a mapping is a Protocol Error.
    client.expect_disconnect(ReasonCode::ProtocolError).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maximum_qos_1_is_advertised_and_enforced() {
    let broker = TestBroker::start_with("[mqtt]\nmaximum_qos = 1\n").await;
    let (mut client, connack) =
        RawClient::connect_with(broker.addr, connect_packet(ProtocolVersion::V5, "max-qos")).await;
    assert_eq!(connack.properties.maximum_qos, Some(QoS::AtLeastOnce));
    // MQTT 5.0 section 3.2.2.3.4: a subscription asking for QoS 2 is granted QoS 1.
    let reason_codes = client
        .subscribe_with(&[("mq/t", options(QoS::ExactlyOnce))], None)
        .await;
    assert_eq!(reason_codes, vec![ReasonCode::GrantedQoS1]);
    // A QoS 2 PUBLISH beyond Maximum QoS is DISCONNECT 0x9B (section 3.2.2.3.4).
    client
        .send(Packet::Publish(publish_packet(
            "mq/t",
            QoS::ExactlyOnce,
            1,
            b"x",
        )))
        .await;
    client.expect_disconnect(ReasonCode::QoSNotSupported).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_payload_with_format_indicator_is_refused_with_0x99() {
    let broker = TestBroker::start().await;
    let mut subscriber = RawClient::connect_v5(broker.addr, "pfi-subscriber").await;
    subscriber.subscribe("pfi/t", QoS::AtMostOnce).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "pfi-publisher").await;
    let mut publish = publish_packet("pfi/t", QoS::AtLeastOnce, 0, b"\xff\xfe");
    publish.properties.payload_format_indicator = Some(1);
    assert_eq!(
        publisher.publish_with(publish).await,
        ReasonCode::PayloadFormatInvalid
    );
    publisher.publish("pfi/t", QoS::AtMostOnce, b"valid").await;
    assert_eq!(subscriber.recv_publish().await.payload, &b"valid"[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubrel_for_an_unknown_packet_id_gets_pubcomp_0x92() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::connect_v5(broker.addr, "stray-pubrel").await;
    client
        .send(Packet::PubRel(starling_core::codec::Ack {
            packet_id: PacketId::new(77).unwrap(),
            reason_code: ReasonCode::Success,
            properties: Default::default(),
        }))
        .await;
    match client.recv().await {
        Packet::PubComp(pubcomp) => {
            assert_eq!(pubcomp.packet_id.get(), 77);
            assert_eq!(pubcomp.reason_code, ReasonCode::PacketIdentifierNotFound);
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_topic_aliases_start_afresh_on_a_new_connection() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "alias-reconnect");
    connect.properties.topic_alias_maximum = Some(5);
    connect.properties.session_expiry_interval = Some(60);
    let (mut subscriber, _) = RawClient::connect_with(broker.addr, connect.clone()).await;
    subscriber.subscribe("alias/re", QoS::AtMostOnce).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "alias-reconnect-publisher").await;
    for payload in [&b"1"[..], b"2"] {
        publisher
            .publish("alias/re", QoS::AtMostOnce, payload)
            .await;
    }
    assert_eq!(subscriber.recv_publish().await.topic, "alias/re");
    assert_eq!(subscriber.recv_publish().await.topic, "");
    drop(subscriber);

    connect.clean_start = false;
    let (mut subscriber, connack) = RawClient::connect_with(broker.addr, connect).await;
    assert!(connack.session_present);
    publisher.publish("alias/re", QoS::AtMostOnce, b"3").await;
    // [MQTT-3.3.2-7] aliases belong to a network connection: the first use carries the topic.
    let publish = subscriber.recv_publish().await;
    assert_eq!(publish.topic, "alias/re", "{publish:?}");
    assert_eq!(publish.payload, &b"3"[..]);
}
