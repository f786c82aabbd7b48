//! ACL enforcement through real sockets: PUBLISH (0x87 on MQTT 5, silent drop on 3.1.1),
//! SUBSCRIBE (0x87 / 0x80), retained messages, deliveries through wildcard subscriptions, and
//! one test per bypass attempt: wildcards in every position, `$SYS/#`, `$share` wrapping,
//! topic alias re-pointing, Unicode look-alikes, very long and very deep topics, placeholder
//! injection through the client id.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use starling_core::codec::{PacketId, ProtocolVersion, QoS, ReasonCode};
use support::{
    raw::{options, publish_packet},
    Event, RawClient, TestBroker,
};

const ACL: &str = r##"
[[acl.rules]]
permission = "allow"
action = "all"
client_id = "admin"
topics = ["#", "$SYS/#"]

[[acl.rules]]
permission = "deny"
action = "all"
topics = ["devices/%c/secret/#"]

[[acl.rules]]
permission = "allow"
action = "all"
topics = ["devices/%c/#"]

[[acl.rules]]
permission = "allow"
action = "subscribe"
topics = ["public/#"]
max_qos = 1

[[acl.rules]]
permission = "allow"
action = "publish"
topics = ["public/%c"]
retain = false
"##;

async fn broker() -> TestBroker {
    TestBroker::start_with(ACL).await
}

/// Collects the topics delivered until nothing arrives for 400 ms (acknowledging QoS 1).
async fn received_topics(client: &mut RawClient) -> Vec<String> {
    let mut topics = Vec::new();
    loop {
        match client.next_event(Duration::from_millis(400)).await {
            Event::Packet(starling_core::codec::Packet::Publish(publish)) => {
                if let Some(packet_id) = publish.packet_id {
                    client.puback(packet_id).await;
                }
                topics.push(publish.topic.to_string());
            }
            Event::Packet(other) => panic!("unexpected packet {other:?}"),
            Event::Timeout => return topics,
            Event::Closed => panic!("connection closed"),
        }
    }
}

/// An observer that may read everything.
async fn admin(broker: &TestBroker, filter: &str) -> RawClient {
    let mut admin = RawClient::connect_v5(broker.addr, "admin").await;
    admin.subscribe(filter, QoS::AtMostOnce).await;
    admin
}

#[tokio::test]
async fn forbidden_publish_is_refused_with_0x87_and_not_routed() {
    let broker = broker().await;
    let mut observer = admin(&broker, "#").await;
    let mut client = RawClient::connect_v5(broker.addr, "c1").await;
    assert_eq!(
        client
            .publish("devices/c2/x", QoS::AtLeastOnce, b"no")
            .await,
        ReasonCode::NotAuthorized
    );
    assert_eq!(
        client
            .publish("devices/c2/x", QoS::ExactlyOnce, b"no")
            .await,
        ReasonCode::NotAuthorized
    );
    assert_eq!(
        client
            .publish("devices/c1/secret/k", QoS::AtLeastOnce, b"no")
            .await,
        ReasonCode::NotAuthorized
    );
    client.publish("devices/c2/x", QoS::AtMostOnce, b"no").await;
    // Retain is not allowed on public/c1, plain publishes are.
    let mut retained = publish_packet("public/c1", QoS::AtLeastOnce, 0, b"no");
    retained.retain = true;
    assert_eq!(
        client.publish_with(retained).await,
        ReasonCode::NotAuthorized
    );
    assert_eq!(
        client.publish("public/c1", QoS::AtLeastOnce, b"yes1").await,
        ReasonCode::Success
    );
    assert_eq!(
        client
            .publish("devices/c1/x", QoS::AtLeastOnce, b"yes2")
            .await,
        ReasonCode::Success
    );
    assert_eq!(
        received_topics(&mut observer).await,
        vec!["public/c1", "devices/c1/x"]
    );
    // The connection survives denials.
    client.disconnect().await;
}

#[tokio::test]
async fn mqtt_311_denials_are_silent_drops_and_suback_0x80() {
    let broker = broker().await;
    let mut observer = admin(&broker, "#").await;
    let mut client = RawClient::connect_v311(broker.addr, "c1").await;
    // 3.1.1 has no negative PUBACK: the broker acknowledges and drops [MQTT-3.3.5-2].
    assert_eq!(
        client
            .publish("devices/c2/x", QoS::AtLeastOnce, b"no")
            .await,
        ReasonCode::Success
    );
    assert_eq!(
        client
            .publish("devices/c2/x", QoS::ExactlyOnce, b"no")
            .await,
        ReasonCode::Success
    );
    assert_eq!(
        client
            .publish("devices/c1/x", QoS::AtLeastOnce, b"yes")
            .await,
        ReasonCode::Success
    );
    assert_eq!(received_topics(&mut observer).await, vec!["devices/c1/x"]);
    let codes = client
        .subscribe_with(
            &[
                ("devices/c2/#", options(QoS::AtLeastOnce)),
                ("devices/c1/#", options(QoS::AtLeastOnce)),
            ],
            None,
        )
        .await;
    assert_eq!(
        codes,
        vec![ReasonCode::UnspecifiedError, ReasonCode::GrantedQoS1]
    );
}

#[tokio::test]
async fn forbidden_subscriptions_get_0x87_and_max_qos_is_capped() {
    let broker = broker().await;
    let mut client = RawClient::connect_v5(broker.addr, "c1").await;
    let filters = [
        "devices/c2/#",
        "devices/c1/secret/#",
        "devices/c1/secret/+",
        "$SYS/#",
        "$SYS/broker/uptime",
        "$share/g/devices/c2/#",
        "$share/g/$SYS/#",
        "other/topic",
    ];
    let subscriptions: Vec<_> = filters
        .iter()
        .map(|f| (*f, options(QoS::AtLeastOnce)))
        .collect();
    let codes = client.subscribe_with(&subscriptions, None).await;
    assert_eq!(
        codes,
        vec![ReasonCode::NotAuthorized; filters.len()],
        "{filters:?}"
    );
    let codes = client
        .subscribe_with(
            &[
                ("public/#", options(QoS::ExactlyOnce)),
                ("devices/c1/t", options(QoS::ExactlyOnce)),
            ],
            None,
        )
        .await;
    assert_eq!(
        codes,
        vec![ReasonCode::GrantedQoS1, ReasonCode::GrantedQoS2]
    );
}

#[tokio::test]
async fn wildcards_in_every_position_reach_only_readable_topics() {
    let broker = broker().await;
    let mut publisher = RawClient::connect_v5(broker.addr, "admin").await;
    let mut client = RawClient::connect_v5(broker.addr, "c1").await;
    let filters = [
        "#",
        "+",
        "+/#",
        "+/+",
        "+/+/+",
        "+/+/+/+",
        "devices/#",
        "devices/+",
        "devices/+/#",
        "devices/+/+",
        "devices/+/x",
        "+/c2/x",
        "+/+/x",
        "devices/c2/+",
        "devices/+/secret/#",
        "+/c1/secret/+",
        "devices/c1/+/k",
        "$share/g/#",
        "$share/g/+/+/x",
    ];
    let subscriptions: Vec<_> = filters
        .iter()
        .map(|f| (*f, options(QoS::AtMostOnce)))
        .collect();
    let codes = client.subscribe_with(&subscriptions, None).await;
    for (filter, code) in filters.iter().zip(&codes) {
        // A filter that reaches some readable topic is granted and filtered per delivery; one
        // that reaches none is refused.
        if *filter == "devices/c2/+" {
            assert_eq!(*code, ReasonCode::NotAuthorized, "{filter}");
        } else {
            assert!(!code.is_error(), "{filter}: {code:?}");
        }
    }
    for topic in [
        "devices/c2/x",
        "devices/c1/secret/k",
        "devices/c1/secret/x",
        "other/x",
        "x",
        "other/c2/x",
        "$SYS/broker/uptime",
        "devices/c1/x",
        "public/news",
    ] {
        assert!(
            !publisher
                .publish(topic, QoS::AtLeastOnce, b"m")
                .await
                .is_error(),
            "{topic}"
        );
    }
    let mut topics = received_topics(&mut client).await;
    topics.sort();
    topics.dedup();
    assert_eq!(topics, vec!["devices/c1/x", "public/news"]);
}

#[tokio::test]
async fn retained_messages_are_filtered_on_subscribe() {
    let broker = broker().await;
    let mut publisher = RawClient::connect_v5(broker.addr, "admin").await;
    for topic in [
        "devices/c1/r",
        "devices/c2/r",
        "devices/c1/secret/r",
        "public/r",
        "other/r",
    ] {
        let mut publish = publish_packet(topic, QoS::AtLeastOnce, 0, b"retained");
        publish.retain = true;
        assert!(!publisher.publish_with(publish).await.is_error());
    }
    let mut client = RawClient::connect_v5(broker.addr, "c1").await;
    client
        .subscribe_with(&[("#", options(QoS::AtMostOnce))], None)
        .await;
    let mut topics = received_topics(&mut client).await;
    topics.sort();
    assert_eq!(topics, vec!["devices/c1/r", "public/r"]);
}

#[tokio::test]
async fn share_prefix_does_not_widen_a_filter() {
    let broker = broker().await;
    let mut publisher = RawClient::connect_v5(broker.addr, "admin").await;
    let mut client = RawClient::connect_v5(broker.addr, "c1").await;
    let codes = client
        .subscribe_with(
            &[
                ("$share/g/devices/c2/#", options(QoS::AtMostOnce)),
                ("$share/devices/c2/x", options(QoS::AtMostOnce)),
            ],
            None,
        )
        .await;
    assert_eq!(
        codes,
        vec![ReasonCode::NotAuthorized, ReasonCode::NotAuthorized]
    );
    client
        .subscribe("$share/g/devices/#", QoS::AtMostOnce)
        .await;
    publisher
        .publish("devices/c2/x", QoS::AtLeastOnce, b"no")
        .await;
    publisher
        .publish("devices/c1/y", QoS::AtLeastOnce, b"yes")
        .await;
    assert_eq!(received_topics(&mut client).await, vec!["devices/c1/y"]);
}

#[tokio::test]
async fn topic_alias_cannot_point_a_publish_at_a_forbidden_topic() {
    let broker = broker().await;
    let mut observer = admin(&broker, "devices/#").await;
    let mut client = RawClient::connect_v5(broker.addr, "c1").await;
    let with_alias = |topic: &str| {
        let mut publish = publish_packet(topic, QoS::AtLeastOnce, 0, b"a");
        publish.properties.topic_alias = PacketId::new(1);
        publish
    };
    assert_eq!(
        client.publish_with(with_alias("devices/c1/a")).await,
        ReasonCode::Success
    );
    // Re-point alias 1 at a forbidden topic, then use the alias alone.
    assert_eq!(
        client.publish_with(with_alias("devices/c2/a")).await,
        ReasonCode::NotAuthorized
    );
    assert_eq!(
        client.publish_with(with_alias("")).await,
        ReasonCode::NotAuthorized
    );
    assert_eq!(received_topics(&mut observer).await, vec!["devices/c1/a"]);
}

#[tokio::test]
async fn unicode_look_alikes_are_other_topics() {
    let broker = broker().await;
    let mut observer = admin(&broker, "devices/#").await;
    observer
        .subscribe("devices/c1/secret/#", QoS::AtMostOnce)
        .await;
    let mut client = RawClient::connect_v5(broker.addr, "c1").await;
    // A fullwidth solidus is no level separator; Cyrillic "е" is not "e".
    for topic in [
        "devices\u{FF0F}c2/x",
        "d\u{0435}vices/c2/x",
        "devices/c2\u{2215}x/y",
    ] {
        assert_eq!(
            client.publish(topic, QoS::AtLeastOnce, b"x").await,
            ReasonCode::NotAuthorized,
            "{topic}"
        );
    }
    let codes = client
        .subscribe_with(
            &[
                ("d\u{0435}vices/c1/#", options(QoS::AtMostOnce)),
                ("devices\u{FF0F}c1/#", options(QoS::AtMostOnce)),
            ],
            None,
        )
        .await;
    assert_eq!(
        codes,
        vec![ReasonCode::NotAuthorized, ReasonCode::NotAuthorized]
    );
    // A look-alike of the secret subtree is an ordinary topic of c1: allowed, and it never
    // reaches subscribers of the real secret topics.
    assert_eq!(
        client
            .publish("devices/c1/s\u{0435}cret/k", QoS::AtLeastOnce, b"x")
            .await,
        ReasonCode::Success
    );
    assert_eq!(
        received_topics(&mut observer).await,
        vec!["devices/c1/s\u{0435}cret/k"]
    );
}

#[tokio::test]
async fn very_long_and_very_deep_topics_are_denied_or_refused() {
    let broker = broker().await;
    let mut observer = admin(&broker, "devices/#").await;
    let mut client = RawClient::connect_v5(broker.addr, "c1").await;
    let long = "a".repeat(60_000);
    assert_eq!(
        client
            .publish(&format!("devices/c2/{long}"), QoS::AtLeastOnce, b"x")
            .await,
        ReasonCode::NotAuthorized
    );
    assert_eq!(
        client
            .publish(&format!("devices/c1/secret/{long}"), QoS::AtLeastOnce, b"x")
            .await,
        ReasonCode::NotAuthorized
    );
    assert_eq!(
        client
            .publish(&format!("devices/c1/{long}"), QoS::AtLeastOnce, b"x")
            .await,
        ReasonCode::Success
    );
    let codes = client
        .subscribe_with(
            &[(&*format!("devices/c2/{long}/#"), options(QoS::AtMostOnce))],
            None,
        )
        .await;
    assert_eq!(codes, vec![ReasonCode::NotAuthorized]);
    let topics = received_topics(&mut observer).await;
    assert_eq!(topics, vec![format!("devices/c1/{long}")]);
    // Deeper than mqtt.max_topic_levels (128): the topic is invalid, whatever the ACL says.
    let deep = format!("devices/c1/{}", "l/".repeat(200));
    client
        .send(starling_core::codec::Packet::Publish(publish_packet(
            &deep,
            QoS::AtMostOnce,
            0,
            b"x",
        )))
        .await;
    client.expect_disconnect(ReasonCode::TopicNameInvalid).await;
}

#[tokio::test]
async fn wildcards_in_the_client_id_do_not_widen_placeholders() {
    let broker = broker().await;
    let mut observer = admin(&broker, "devices/#").await;
    for client_id in ["+", "#", "a/b"] {
        let mut client = RawClient::connect_v5(broker.addr, client_id).await;
        assert_eq!(
            client.publish("devices/x/y", QoS::AtLeastOnce, b"x").await,
            ReasonCode::NotAuthorized,
            "{client_id}"
        );
        assert_eq!(
            client
                .publish("devices/a/b/y", QoS::AtLeastOnce, b"x")
                .await,
            ReasonCode::NotAuthorized,
            "{client_id}"
        );
        let codes = client
            .subscribe_with(&[("devices/+/#", options(QoS::AtMostOnce))], None)
            .await;
        assert_eq!(codes, vec![ReasonCode::NotAuthorized], "{client_id}");
    }
    assert_eq!(received_topics(&mut observer).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_resumed_session_keeps_only_what_the_new_principal_may_read() {
    // The ACL file is reloaded: a subscription allowed at first is removed or filtered later.
    let dir = tempfile::tempdir().unwrap();
    let acl_path = dir.path().join("acl.toml");
    std::fs::write(
        &acl_path,
        "[[rules]]\npermission = \"allow\"\naction = \"all\"\ntopics = [\"#\"]\n",
    )
    .unwrap();
    let config = format!(
        "[acl]\nfile = \"{}\"\n[auth]\nreload_interval_ms = 100\n",
        acl_path.display()
    );
    let broker = TestBroker::start_with(&config).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
    let mut client = RawClient::connect_v5(broker.addr, "c1").await;
    client.subscribe("a/#", QoS::AtMostOnce).await;
    publisher.publish("a/1", QoS::AtLeastOnce, b"x").await;
    assert_eq!(received_topics(&mut client).await, vec!["a/1"]);
    std::fs::write(
        &acl_path,
        "[[rules]]\npermission = \"deny\"\naction = \"subscribe\"\ntopics = [\"a/secret\"]\n[[rules]]\npermission = \"allow\"\naction = \"all\"\ntopics = [\"#\"]\n",
    )
    .unwrap();
    // Once the new rules are in force, the old subscription is checked per delivery.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        publisher.publish("a/secret", QoS::AtLeastOnce, b"x").await;
        publisher.publish("a/2", QoS::AtLeastOnce, b"x").await;
        let topics = received_topics(&mut client).await;
        if topics == vec!["a/2"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rules not applied: {topics:?}"
        );
    }
    let _ = ProtocolVersion::V5;
}
