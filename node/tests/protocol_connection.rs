//! Connection lifecycle over raw MQTT: wills (abnormal close, DISCONNECT 0x04, will delay and
//! its cancellation), keep alive, Server Keep Alive, client identifiers and takeover.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use starling_core::codec::{
    ByteString, Connect, LastWill, ProtocolVersion, QoS, ReasonCode, WillProperties,
};
use support::{assert_elapsed_between, raw::connect_packet, Event, RawClient, TestBroker};
use tokio::time::Instant;

/// Returns a CONNECT carrying a QoS 1 will on `topic`.
fn connect_with_will(
    version: ProtocolVersion,
    client_id: &str,
    topic: &str,
    will_delay_secs: Option<u32>,
) -> Connect {
    let mut connect = connect_packet(version, client_id);
    connect.last_will = Some(LastWill {
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: ByteString::from(topic),
        payload: Bytes::from(format!("{client_id} is gone")),
        properties: WillProperties {
            will_delay_interval: will_delay_secs,
            ..WillProperties::default()
        },
    });
    connect
}

async fn watcher(broker: &TestBroker, topic: &str) -> RawClient {
    let mut watcher = RawClient::connect_v5(broker.addr, &format!("watcher-{topic}")).await;
    watcher.subscribe(topic, QoS::AtLeastOnce).await;
    watcher
}

/// Publishes a marker on `topic` from a fresh client and asserts it is the next message the
/// watcher receives: nothing (e.g. a will) was routed to it before.
async fn assert_next_is_marker(broker: &TestBroker, watcher: &mut RawClient, topic: &str) {
    let mut publisher = RawClient::connect_v5(broker.addr, "marker-publisher").await;
    publisher.publish(topic, QoS::AtLeastOnce, b"marker").await;
    let next = watcher.recv_publish_and_ack().await;
    assert_eq!(next.payload, &b"marker"[..], "unexpected message {next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_when_the_connection_drops() {
    let broker = TestBroker::start().await;
    for (version, topic) in [
        (ProtocolVersion::V5, "will/drop5"),
        (ProtocolVersion::V3_1_1, "will/drop311"),
    ] {
        let mut watcher = watcher(&broker, topic).await;
        let (client, connack) = RawClient::connect_with(
            broker.addr,
            connect_with_will(version, "dropper", topic, None),
        )
        .await;
        assert_eq!(connack.reason_code, ReasonCode::Success);
        drop(client);
        let will = watcher.recv_publish_and_ack().await;
        assert_eq!(will.topic, topic);
        assert_eq!(will.payload, &b"dropper is gone"[..]);
        assert_eq!(will.qos, QoS::AtLeastOnce);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_on_disconnect_with_will_message() {
    let broker = TestBroker::start().await;
    let mut watcher = watcher(&broker, "will/0x04").await;
    let (client, _) = RawClient::connect_with(
        broker.addr,
        connect_with_will(ProtocolVersion::V5, "leaver", "will/0x04", None),
    )
    .await;
    client
        .disconnect_with(ReasonCode::DisconnectWithWillMessage)
        .await;
    let will = watcher.recv_publish_and_ack().await;
    assert_eq!(will.payload, &b"leaver is gone"[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_will_on_normal_disconnect() {
    let broker = TestBroker::start().await;
    for version in [ProtocolVersion::V5, ProtocolVersion::V3_1_1] {
        let mut watcher = watcher(&broker, "will/normal").await;
        let (client, _) = RawClient::connect_with(
            broker.addr,
            connect_with_will(version, "polite", "will/normal", None),
        )
        .await;
        // Returns once the broker closed the socket, so a will would already be routed.
        client.disconnect().await;
        assert_next_is_marker(&broker, &mut watcher, "will/normal").await;
        watcher.disconnect().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_will_is_published_after_its_delay() {
    let broker = TestBroker::start().await;
    let mut watcher = watcher(&broker, "will/delayed").await;
    let mut connect = connect_with_will(ProtocolVersion::V5, "slowpoke", "will/delayed", Some(2));
    connect.properties.session_expiry_interval = Some(60);
    let (client, _) = RawClient::connect_with(broker.addr, connect).await;
    let dropped_at = Instant::now();
    drop(client);
    let will = match watcher.next_event(Duration::from_secs(5)).await {
        Event::Packet(starling_core::codec::Packet::Publish(will)) => will,
        other => panic!("expected the delayed will, got {other:?}"),
    };
    assert_eq!(will.payload, &b"slowpoke is gone"[..]);
    assert_elapsed_between(
        dropped_at.elapsed(),
        Duration::from_millis(1900),
        Duration::from_millis(3500),
        "will with delay 2 s published",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_will_is_cancelled_when_the_client_reconnects_in_time() {
    let broker = TestBroker::start().await;
    let mut watcher = watcher(&broker, "will/cancelled").await;
    let connect = || {
        let mut connect =
            connect_with_will(ProtocolVersion::V5, "comeback", "will/cancelled", Some(1));
        connect.clean_start = false;
        connect.properties.session_expiry_interval = Some(60);
        connect
    };
    let (client, _) = RawClient::connect_with(broker.addr, connect()).await;
    drop(client);
    let (mut client, connack) = RawClient::connect_with(broker.addr, connect()).await;
    assert!(connack.session_present);
    // [MQTT-3.1.3-9] the reconnect cancelled the will: nothing for well past its delay.
    watcher.expect_nothing(Duration::from_millis(2000)).await;
    assert_next_is_marker(&broker, &mut watcher, "will/cancelled").await;
    // The reconnected client's own will stays armed and its session works.
    client
        .subscribe("will/comeback-alive", QoS::AtMostOnce)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_v5_client_is_disconnected_with_keep_alive_timeout() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "silent-v5");
    connect.keep_alive = 1;
    let (mut client, connack) = RawClient::connect_with(broker.addr, connect).await;
    let connected_at = Instant::now();
    assert_eq!(connack.properties.server_keep_alive, None);
    // [MQTT-3.1.2-22] closed after 1.5 x keep alive of silence, with DISCONNECT 0x8D.
    client.expect_disconnect(ReasonCode::KeepAliveTimeout).await;
    assert_elapsed_between(
        connected_at.elapsed(),
        Duration::from_millis(1000),
        Duration::from_millis(3500),
        "silent client with keep alive 1 s closed",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_v311_client_is_closed_and_a_pinging_one_is_not() {
    let broker = TestBroker::start().await;
    let mut silent_connect = connect_packet(ProtocolVersion::V3_1_1, "silent-v311");
    silent_connect.keep_alive = 1;
    let (mut silent, _) = RawClient::connect_with(broker.addr, silent_connect).await;
    let mut pinging_connect = connect_packet(ProtocolVersion::V3_1_1, "pinging-v311");
    pinging_connect.keep_alive = 1;
    let (mut pinging, _) = RawClient::connect_with(broker.addr, pinging_connect).await;
    let connected_at = Instant::now();

    let pinger = tokio::spawn(async move {
        // Pings every 500 ms for 3 s, well past the silent client's deadline.
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            pinging.send(starling_core::codec::Packet::PingReq).await;
            match pinging.recv().await {
                starling_core::codec::Packet::PingResp => {}
                other => panic!("expected PINGRESP, got {other:?}"),
            }
        }
    });
    silent.expect_closed().await;
    assert_elapsed_between(
        connected_at.elapsed(),
        Duration::from_millis(1000),
        Duration::from_millis(3500),
        "silent 3.1.1 client with keep alive 1 s closed",
    );
    pinger.await.expect("the pinging client stayed connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_keep_alive_lowers_a_large_keep_alive() {
    let broker = TestBroker::start_with("[mqtt]\nmax_keep_alive_secs = 10\n").await;
    let mut connect = connect_packet(ProtocolVersion::V5, "asks-60");
    connect.keep_alive = 60;
    let (_client, connack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    assert_eq!(connack.properties.server_keep_alive, Some(10));

    let mut connect = connect_packet(ProtocolVersion::V5, "asks-5");
    connect.keep_alive = 5;
    let (_client, connack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.properties.server_keep_alive, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_client_id_is_assigned_for_v5_and_refused_for_v311_persistent_sessions() {
    let broker = TestBroker::start().await;
    let (mut client, connack) =
        RawClient::connect_with(broker.addr, connect_packet(ProtocolVersion::V5, "")).await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    let assigned = connack
        .properties
        .assigned_client_identifier
        .expect("assigned client identifier");
    assert!(!assigned.is_empty());
    client.subscribe("assigned/t", QoS::AtMostOnce).await;

    let (_other, other_connack) =
        RawClient::connect_with(broker.addr, connect_packet(ProtocolVersion::V5, "")).await;
    assert_ne!(
        other_connack.properties.assigned_client_identifier,
        Some(assigned),
        "two clients got the same identifier"
    );

    // 3.1.1: accepted with clean session, refused with return code 0x02 without.
    let (_client, connack) =
        RawClient::connect_with(broker.addr, connect_packet(ProtocolVersion::V3_1_1, "")).await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    let mut persistent = connect_packet(ProtocolVersion::V3_1_1, "");
    persistent.clean_start = false;
    let (mut refused, connack) = RawClient::connect_with(broker.addr, persistent).await;
    assert_eq!(connack.reason_code, ReasonCode::ClientIdentifierNotValid);
    refused.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connection_takes_the_client_id_over() {
    let broker = TestBroker::start().await;
    let mut old = RawClient::connect_v5(broker.addr, "takeover").await;
    old.subscribe("takeover/t", QoS::AtLeastOnce).await;

    let mut connect = connect_packet(ProtocolVersion::V5, "takeover");
    connect.clean_start = false;
    let (mut new, connack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    // [MQTT-3.1.4-3] the old connection is closed with DISCONNECT 0x8E.
    old.expect_disconnect(ReasonCode::SessionTakenOver).await;

    new.subscribe("takeover/t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "takeover-publisher").await;
    publisher
        .publish("takeover/t", QoS::AtLeastOnce, b"to the new one")
        .await;
    assert_eq!(
        new.recv_publish_and_ack().await.payload,
        &b"to the new one"[..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_of_a_persistent_session_keeps_its_subscriptions() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "takeover-persistent");
    connect.properties.session_expiry_interval = Some(60);
    let (mut old, _) = RawClient::connect_with(broker.addr, connect.clone()).await;
    old.subscribe("takeover-p/t", QoS::AtLeastOnce).await;

    connect.clean_start = false;
    let (mut new, connack) = RawClient::connect_with(broker.addr, connect).await;
    old.expect_disconnect(ReasonCode::SessionTakenOver).await;
    assert!(connack.session_present);
    let mut publisher = RawClient::connect_v5(broker.addr, "takeover-p-publisher").await;
    publisher
        .publish("takeover-p/t", QoS::AtLeastOnce, b"kept")
        .await;
    assert_eq!(new.recv_publish_and_ack().await.payload, &b"kept"[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_when_the_broker_closes_a_silent_client() {
    let broker = TestBroker::start().await;
    let mut watcher = watcher(&broker, "will/keepalive").await;
    let mut connect = connect_with_will(ProtocolVersion::V5, "sleepy", "will/keepalive", None);
    connect.keep_alive = 1;
    let (mut client, _) = RawClient::connect_with(broker.addr, connect).await;
    client.expect_disconnect(ReasonCode::KeepAliveTimeout).await;
    // [MQTT-3.1.2-8] a close by the server for a keep alive timeout publishes the will.
    let will = watcher.recv_publish_and_ack().await;
    assert_eq!(will.payload, &b"sleepy is gone"[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_when_the_broker_closes_on_a_protocol_error() {
    let broker = TestBroker::start().await;
    let mut watcher = watcher(&broker, "will/violation").await;
    let (mut client, _) = RawClient::connect_with(
        broker.addr,
        connect_with_will(ProtocolVersion::V5, "rulebreaker", "will/violation", None),
    )
    .await;
    client
        .send(starling_core::codec::Packet::Connect(Box::new(
            connect_packet(ProtocolVersion::V5, "rulebreaker"),
        )))
        .await;
    client.expect_disconnect(ReasonCode::ProtocolError).await;
    let will = watcher.recv_publish_and_ack().await;
    assert_eq!(will.payload, &b"rulebreaker is gone"[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_can_shorten_but_not_create_a_session_expiry() {
    let broker = TestBroker::start().await;
    // Session expiry 0 at CONNECT: a non-zero expiry in DISCONNECT is a protocol error
    // [MQTT-3.14.2-2].
    let client = RawClient::connect_v5(broker.addr, "no-expiry").await;
    let mut client = client;
    client
        .send(starling_core::codec::Packet::Disconnect(
            starling_core::codec::Disconnect {
                reason_code: ReasonCode::NORMAL_DISCONNECTION,
                properties: starling_core::codec::DisconnectProperties {
                    session_expiry_interval: Some(60),
                    ..Default::default()
                },
            },
        ))
        .await;
    client.expect_disconnect(ReasonCode::ProtocolError).await;

    // Expiry 60 at CONNECT, 0 at DISCONNECT: the session ends with the connection.
    let mut connect = connect_packet(ProtocolVersion::V5, "shortened");
    connect.properties.session_expiry_interval = Some(60);
    let (mut client, _) = RawClient::connect_with(broker.addr, connect.clone()).await;
    client
        .send(starling_core::codec::Packet::Disconnect(
            starling_core::codec::Disconnect {
                reason_code: ReasonCode::NORMAL_DISCONNECTION,
                properties: starling_core::codec::DisconnectProperties {
                    session_expiry_interval: Some(0),
                    ..Default::default()
                },
            },
        ))
        .await;
    client.expect_closed().await;
    connect.clean_start = false;
    let (_client, connack) = RawClient::connect_with(broker.addr, connect).await;
    assert!(!connack.session_present, "DISCONNECT expiry 0 was ignored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_clients_are_served() {
    let broker = TestBroker::start().await;
    let mut subscriber = RawClient::connect(broker.addr, ProtocolVersion::V3_1, "mqtt31-sub").await;
    subscriber.subscribe("v31/t", QoS::ExactlyOnce).await;
    let mut publisher = RawClient::connect(broker.addr, ProtocolVersion::V3_1, "mqtt31-pub").await;
    publisher
        .publish("v31/t", QoS::ExactlyOnce, b"old school")
        .await;
    let publish = subscriber.recv_publish_and_ack().await;
    assert_eq!(publish.payload, &b"old school"[..]);
    assert_eq!(publish.qos, QoS::ExactlyOnce);
    // MQTT 3.1 has no empty client identifiers: return code 0x02.
    let (mut refused, connack) =
        RawClient::connect_with(broker.addr, connect_packet(ProtocolVersion::V3_1, "")).await;
    assert_eq!(connack.reason_code, ReasonCode::ClientIdentifierNotValid);
    refused.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_racing_the_close_of_the_previous_connection_is_accepted_promptly() {
    // Regression test: a CONNECT that raced with the end of the previous connection's session
    // (expiry 0) waited 10 s for a takeover reply nobody would send; with clean start 0 it was
    // then refused with 0x88, and so was every later clean start 0 CONNECT of that client id.
    let broker = TestBroker::start().await;
    // A will on every close widens the window between the close and the end of the session.
    let mut watcher = RawClient::connect_v5(broker.addr, "race-watcher").await;
    watcher.subscribe("will/race", QoS::AtMostOnce).await;
    for clean_start in [true, false] {
        let mut previous = None;
        for round in 0..300 {
            let mut connect = connect_with_will(ProtocolVersion::V5, "racer", "will/race", None);
            connect.clean_start = clean_start;
            let mut client = RawClient::open(broker.addr).await;
            client
                .send(starling_core::codec::Packet::Connect(Box::new(connect)))
                .await;
            // The previous connection drops while this CONNECT is on its way.
            drop(previous.take());
            match client.next_event(Duration::from_secs(2)).await {
                Event::Packet(starling_core::codec::Packet::ConnAck(connack)) => assert_eq!(
                    connack.reason_code,
                    ReasonCode::Success,
                    "clean start {clean_start}, round {round}: {connack:?}"
                ),
                other => panic!(
                    "clean start {clean_start}, round {round}: expected a prompt CONNACK, got {other:?}"
                ),
            }
            previous = Some(client);
            // Drain the wills so the watcher never holds the broker back.
            while let Event::Packet(_) = watcher.next_event(Duration::from_millis(1)).await {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_publishes_an_undelayed_will_but_not_a_delayed_one() {
    let broker = TestBroker::start().await;
    let mut watcher = watcher(&broker, "will/takeover").await;
    // Will Delay 0: the old connection closes, so its will is published [MQTT-3.1.2-8].
    let mut connect = connect_with_will(ProtocolVersion::V5, "taken", "will/takeover", None);
    connect.properties.session_expiry_interval = Some(60);
    let (mut old, _) = RawClient::connect_with(broker.addr, connect.clone()).await;
    connect.clean_start = false;
    connect.last_will = None;
    let (_new, connack) = RawClient::connect_with(broker.addr, connect).await;
    assert!(connack.session_present);
    old.expect_disconnect(ReasonCode::SessionTakenOver).await;
    assert_eq!(
        watcher.recv_publish_and_ack().await.payload,
        &b"taken is gone"[..]
    );

    // Will Delay 60 s: the new connection arrives before the delay, so no will.
    let mut connect = connect_with_will(
        ProtocolVersion::V5,
        "taken-delayed",
        "will/takeover",
        Some(60),
    );
    connect.properties.session_expiry_interval = Some(60);
    let (mut old, _) = RawClient::connect_with(broker.addr, connect.clone()).await;
    connect.clean_start = false;
    connect.last_will = None;
    let (_new, _) = RawClient::connect_with(broker.addr, connect).await;
    old.expect_disconnect(ReasonCode::SessionTakenOver).await;
    assert_next_is_marker(&broker, &mut watcher, "will/takeover").await;
}
