//! Retained messages over raw MQTT: set, replace and clear; Retain Handling 0, 1 and 2;
//! Retain As Published.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use starling_core::codec::{ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};
use support::{
    raw::{options, publish_packet},
    RawClient, TestBroker,
};

async fn publish_retained(publisher: &mut RawClient, topic: &str, payload: &[u8]) {
    let mut publish = publish_packet(topic, QoS::AtLeastOnce, 0, payload);
    publish.retain = true;
    publisher.publish_with(publish).await;
}

/// Subscribes a fresh client to `filter` and returns the retained messages it gets (payload
/// and RETAIN flag), in order. The same SUBSCRIBE also asks for the retained marker, which
/// arrives after them and ends the list.
async fn retained_seen_by_new_subscriber(
    broker: &TestBroker,
    version: ProtocolVersion,
    filter: &str,
) -> Vec<(String, bool)> {
    let mut marker_publisher = RawClient::connect_v5(broker.addr, "retained-marker").await;
    publish_retained(&mut marker_publisher, "marker/retained", b"marker").await;
    let mut subscriber = RawClient::connect(broker.addr, version, "retained-reader").await;
    let reason_codes = subscriber
        .subscribe_with(
            &[
                (filter, options(QoS::AtLeastOnce)),
                ("marker/retained", options(QoS::AtLeastOnce)),
            ],
            None,
        )
        .await;
    assert!(reason_codes.iter().all(|code| !code.is_error()));
    let mut seen = Vec::new();
    loop {
        let publish = subscriber.recv_publish_and_ack().await;
        if publish.topic == "marker/retained" {
            break;
        }
        seen.push((
            String::from_utf8(publish.payload.to_vec()).unwrap(),
            publish.retain,
        ));
    }
    subscriber.disconnect().await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_is_set_replaced_and_cleared() {
    let broker = TestBroker::start().await;
    let mut publisher = RawClient::connect_v5(broker.addr, "retainer").await;

    publish_retained(&mut publisher, "retained/t", b"first").await;
    for version in [ProtocolVersion::V5, ProtocolVersion::V3_1_1] {
        assert_eq!(
            retained_seen_by_new_subscriber(&broker, version, "retained/t").await,
            vec![("first".to_string(), true)],
            "{version:?}: set, and sent with RETAIN=1 [MQTT-3.3.1-8]"
        );
    }
    publish_retained(&mut publisher, "retained/t", b"second").await;
    assert_eq!(
        retained_seen_by_new_subscriber(&broker, ProtocolVersion::V5, "retained/+").await,
        vec![("second".to_string(), true)],
        "replaced"
    );
    // [MQTT-3.3.1-6] an empty retained payload clears the topic and is not stored itself.
    publish_retained(&mut publisher, "retained/t", b"").await;
    assert_eq!(
        retained_seen_by_new_subscriber(&broker, ProtocolVersion::V5, "retained/t").await,
        vec![],
        "cleared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling_0_1_and_2() {
    let broker = TestBroker::start().await;
    let mut publisher = RawClient::connect_v5(broker.addr, "rh-publisher").await;
    publish_retained(&mut publisher, "rh/t", b"kept").await;
    let mut subscriber = RawClient::connect_v5(broker.addr, "rh-subscriber").await;

    let with_handling = |retain_handling| SubscriptionOptions {
        retain_handling,
        ..options(QoS::AtLeastOnce)
    };
    // Returns true if a retained message arrives after subscribing with `retain_handling`.
    async fn gets_retained(
        subscriber: &mut RawClient,
        filter: &str,
        options: SubscriptionOptions,
    ) -> bool {
        subscriber.subscribe_with(&[(filter, options)], None).await;
        match subscriber.next_event(Duration::from_millis(300)).await {
            support::Event::Packet(starling_core::codec::Packet::Publish(publish)) => {
                assert!(publish.retain);
                subscriber.puback(publish.packet_id.unwrap()).await;
                true
            }
            support::Event::Timeout => false,
            other => panic!("unexpected {other:?}"),
        }
    }

    let send_always = with_handling(RetainHandling::SendAtSubscribe);
    assert!(gets_retained(&mut subscriber, "rh/t", send_always).await);
    assert!(
        gets_retained(&mut subscriber, "rh/t", send_always).await,
        "0: sent again on every subscribe"
    );
    let send_if_new = with_handling(RetainHandling::SendIfNew);
    assert!(
        gets_retained(&mut subscriber, "rh/+", send_if_new).await,
        "1: sent for a new subscription"
    );
    assert!(
        !gets_retained(&mut subscriber, "rh/+", send_if_new).await,
        "1: not sent when the subscription existed"
    );
    let never = with_handling(RetainHandling::DoNotSend);
    assert!(
        !gets_retained(&mut subscriber, "rh/#", never).await,
        "2: never sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_as_published_keeps_the_flag_on_live_messages() {
    let broker = TestBroker::start().await;
    let mut as_published = RawClient::connect_v5(broker.addr, "rap-1").await;
    as_published
        .subscribe_with(
            &[(
                "rap/t",
                SubscriptionOptions {
                    retain_as_published: true,
                    ..options(QoS::AtLeastOnce)
                },
            )],
            None,
        )
        .await;
    let mut cleared = RawClient::connect_v5(broker.addr, "rap-0").await;
    cleared.subscribe("rap/t", QoS::AtLeastOnce).await;
    let mut v311 = RawClient::connect_v311(broker.addr, "rap-v311").await;
    v311.subscribe("rap/t", QoS::AtLeastOnce).await;

    let mut publisher = RawClient::connect_v5(broker.addr, "rap-publisher").await;
    publish_retained(&mut publisher, "rap/t", b"live and retained").await;
    publisher.publish("rap/t", QoS::AtLeastOnce, b"plain").await;

    // [MQTT-3.3.1-13] Retain As Published keeps RETAIN=1; [MQTT-3.3.1-12] otherwise it is 0.
    let publish = as_published.recv_publish_and_ack().await;
    assert!(publish.retain);
    assert!(!as_published.recv_publish_and_ack().await.retain);
    let publish = cleared.recv_publish_and_ack().await;
    assert_eq!(publish.payload, &b"live and retained"[..]);
    assert!(!publish.retain);
    // MQTT 3.1.1 [MQTT-3.3.1-9]: a live message to an existing subscription has RETAIN=0.
    assert!(!v311.recv_publish_and_ack().await.retain);
}
