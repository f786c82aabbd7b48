//! Per-session queue limits and their policies, on stored (persistent) sessions: drop newest,
//! drop oldest, and refuse at the publisher with PUBACK 0x97 (MQTT 5).
#![allow(clippy::unwrap_used)]

mod support;

use starling_core::codec::{ProtocolVersion, QoS, ReasonCode};
use support::{raw::connect_packet, RawClient, TestBroker};

/// A stored session subscribed to `queue/#` at QoS 1 that then goes offline.
async fn offline_subscriber(broker: &TestBroker, client_id: &str) {
    let mut connect = connect_packet(ProtocolVersion::V5, client_id);
    connect.clean_start = true;
    connect.properties.session_expiry_interval = Some(600);
    let (mut client, _) = RawClient::connect_with(broker.addr, connect).await;
    client.subscribe("queue/#", QoS::AtLeastOnce).await;
    client.disconnect().await;
}

/// Reconnects the stored session and returns the payloads it receives until it goes quiet.
async fn drain_payloads(broker: &TestBroker, client_id: &str) -> Vec<String> {
    let mut connect = connect_packet(ProtocolVersion::V5, client_id);
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(600);
    let (mut client, connack) = RawClient::connect_with(broker.addr, connect).await;
    assert!(connack.session_present);
    let mut payloads = Vec::new();
    loop {
        match client
            .next_event(std::time::Duration::from_millis(500))
            .await
        {
            support::Event::Packet(starling_core::codec::Packet::Publish(publish)) => {
                if let Some(packet_id) = publish.packet_id {
                    client.puback(packet_id).await;
                }
                payloads.push(String::from_utf8(publish.payload.to_vec()).unwrap());
            }
            support::Event::Packet(other) => panic!("unexpected {other:?}"),
            _ => return payloads,
        }
    }
}

async fn publish_numbered(broker: &TestBroker, count: usize) -> Vec<ReasonCode> {
    let mut publisher = RawClient::connect_v5(broker.addr, "queue-publisher").await;
    let mut reason_codes = Vec::new();
    for idx in 0..count {
        let code = publisher
            .publish("queue/a", QoS::AtLeastOnce, format!("m{idx}").as_bytes())
            .await;
        reason_codes.push(code);
    }
    publisher.disconnect().await;
    reason_codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_keeps_the_first_messages() {
    let broker = TestBroker::start_with("[mqtt]\nmax_queued_messages = 3\n").await;
    offline_subscriber(&broker, "keeps-first").await;
    let reason_codes = publish_numbered(&broker, 5).await;
    assert!(
        reason_codes.iter().all(|code| *code == ReasonCode::Success),
        "{reason_codes:?}"
    );
    assert_eq!(
        drain_payloads(&broker, "keeps-first").await,
        ["m0", "m1", "m2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_the_last_messages() {
    let broker = TestBroker::start_with(
        "[mqtt]\nmax_queued_messages = 3\nqueue_full_policy = \"drop_oldest\"\n",
    )
    .await;
    offline_subscriber(&broker, "keeps-last").await;
    publish_numbered(&broker, 5).await;
    assert_eq!(
        drain_payloads(&broker, "keeps-last").await,
        ["m2", "m3", "m4"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_answers_the_publisher_with_quota_exceeded() {
    let broker =
        TestBroker::start_with("[mqtt]\nmax_queued_messages = 3\nqueue_full_policy = \"refuse\"\n")
            .await;
    offline_subscriber(&broker, "refuses").await;
    let reason_codes = publish_numbered(&broker, 5).await;
    assert_eq!(
        reason_codes,
        [
            ReasonCode::Success,
            ReasonCode::Success,
            ReasonCode::Success,
            ReasonCode::QuotaExceeded,
            ReasonCode::QuotaExceeded
        ]
    );
    assert_eq!(drain_payloads(&broker, "refuses").await, ["m0", "m1", "m2"]);
}
