//! Revocation and limits: MQTT 5 enhanced authentication with SCRAM-SHA-256 (the client of
//! `support::scram`, CONNECT/AUTH/CONNACK and re-authentication with AUTH 0x19), the ban list
//! (CONNACK 0x8A, connected clients kicked within a second of `starling ban add`), and the
//! per-client publish limits (throttling and DISCONNECT 0x96) and subscription quota.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use starling_core::codec::{ByteString, Packet, ProtocolVersion, QoS, ReasonCode};
use starling_node::auth::{
    bans::BanKind,
    cli::{run_ban, BanCommand},
};
use support::{
    raw::connect_packet,
    scram::{add_user, auth_data, scram_connect, scram_reauthenticate},
    Event, RawClient, TestBroker, PROMPTLY,
};

#[tokio::test]
async fn scram_sha_256_authenticates_and_reauthenticates() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    add_user(&file, "alice", "s3cret");
    let config = format!(
        "[mqtt]\nallow_anonymous = false\n[auth]\npassword_file = \"{}\"\n[auth.scram]\nenabled = true\n",
        file.display()
    );
    let broker = TestBroker::start_with(&config).await;
    let before = broker.scrape().await;
    let (mut client, code) = scram_connect(&broker, "alice", "s3cret").await;
    assert_eq!(code, ReasonCode::Success);
    assert_eq!(
        scram_connect(&broker, "alice", "wrong").await.1,
        ReasonCode::BadUserNameOrPassword
    );
    assert_eq!(
        scram_connect(&broker, "nobody", "s3cret").await.1,
        ReasonCode::BadUserNameOrPassword
    );
    // Another method: 0x8C.
    let mut connect = connect_packet(ProtocolVersion::V5, "other-method");
    connect.properties.authentication_method = Some(ByteString::from("KERBEROS"));
    let (_other, connack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.reason_code, ReasonCode::BadAuthenticationMethod);

    // Re-authentication: AUTH 0x19, AUTH 0x18, AUTH 0x00; the session goes on.
    client.subscribe("t", QoS::AtMostOnce).await;
    let server_final = scram_reauthenticate(&mut client, "alice", "s3cret").await;
    match client.recv().await {
        Packet::Auth(auth) => {
            assert_eq!(auth.reason_code, ReasonCode::Success);
            assert_eq!(auth_data(&Packet::Auth(auth)), server_final);
        }
        other => panic!("expected AUTH 0x00, got {other:?}"),
    }
    assert_eq!(
        client.publish("t", QoS::AtMostOnce, b"still here").await,
        ReasonCode::Success
    );
    assert_eq!(
        client.recv_publish().await.payload,
        Bytes::from_static(b"still here")
    );
    // A failed re-authentication ends the connection with DISCONNECT 0x87.
    scram_reauthenticate(&mut client, "alice", "wrong").await;
    client.expect_disconnect(ReasonCode::NotAuthorized).await;

    // Each CONNECT and re-authentication counted once (only this test uses SCRAM here).
    let after = broker.scrape().await;
    let delta = |method: &str, result: &str| {
        let labels = [("method", method), ("result", result)];
        after.sum("starling_auth_attempts_total", &labels)
            - before.sum("starling_auth_attempts_total", &labels)
    };
    assert_eq!(
        delta("scram", "success"),
        2.0,
        "CONNECT and re-authentication"
    );
    assert_eq!(
        delta("scram", "bad_credentials"),
        3.0,
        "two CONNECTs, one re-authentication"
    );
    assert_eq!(delta("enhanced", "not_authorized"), 1.0, "KERBEROS");
}

#[tokio::test]
async fn bans_refuse_new_clients_and_kick_connected_ones_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let bans = dir.path().join("bans.toml");
    let config = format!(
        "[auth]\nban_file = \"{}\"\nreload_interval_ms = 250\n",
        bans.display()
    );
    let broker = TestBroker::start_with(&config).await;
    let mut victim = RawClient::connect_v5(broker.addr, "bad-car").await;
    let mut bystander = RawClient::connect_v5(broker.addr, "good-car").await;
    // Let the watcher take its first look at the (absent) file before it appears.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ban = |kind, value: &str| BanCommand::Add {
        kind,
        value: value.to_string(),
    };
    run_ban(&ban(BanKind::ClientId, "bad-car"), &bans, &mut Vec::new()).unwrap();
    let started = std::time::Instant::now();
    match victim.next_event(Duration::from_secs(2)).await {
        Event::Packet(Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason_code, ReasonCode::AdministrativeAction)
        }
        other => panic!("expected DISCONNECT 0x98, got {other:?}"),
    }
    assert!(
        started.elapsed() <= Duration::from_secs(1),
        "kicked after {:?}",
        started.elapsed()
    );
    let (_refused, connack) =
        RawClient::connect_with(broker.addr, connect_packet(ProtocolVersion::V5, "bad-car")).await;
    assert_eq!(connack.reason_code, ReasonCode::Banned);
    assert_eq!(
        bystander.publish("x", QoS::AtLeastOnce, b"x").await,
        ReasonCode::NoMatchingSubscribers
    );
    // An address ban covers everyone from 127.0.0.0/8; lifting it lets them back.
    run_ban(
        &ban(BanKind::Address, "127.0.0.0/8"),
        &bans,
        &mut Vec::new(),
    )
    .unwrap();
    bystander
        .expect_disconnect(ReasonCode::AdministrativeAction)
        .await;
    run_ban(
        &BanCommand::Remove {
            kind: BanKind::Address,
            value: "127.0.0.0/8".to_string(),
        },
        &bans,
        &mut Vec::new(),
    )
    .unwrap();
    let addr = broker.addr;
    support::eventually(PROMPTLY, "the address ban lifted", || async move {
        let (_client, connack) =
            RawClient::connect_with(addr, connect_packet(ProtocolVersion::V5, "good-car")).await;
        connack.reason_code == ReasonCode::Success
    })
    .await;
    let mut listing = Vec::new();
    run_ban(&BanCommand::List, &bans, &mut listing).unwrap();
    assert_eq!(String::from_utf8(listing).unwrap(), "client-id\tbad-car\n");
}

#[tokio::test]
async fn publish_rate_is_throttled_by_not_reading() {
    let broker =
        TestBroker::start_with("[limits]\npublish_rate_per_sec = 20\npublish_burst = 5\n").await;
    let mut subscriber = RawClient::connect_v5(broker.addr, "sub").await;
    subscriber.subscribe("rate/#", QoS::AtMostOnce).await;
    let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
    let started = std::time::Instant::now();
    for idx in 0..25u32 {
        // QoS 1: each PUBACK waits for the broker to read the PUBLISH.
        let code = publisher
            .publish("rate/x", QoS::AtLeastOnce, &idx.to_be_bytes())
            .await;
        assert_eq!(code, ReasonCode::Success);
    }
    let elapsed = started.elapsed();
    // 5 in the burst, 20 more at 20/s: about 1 s; nothing is lost.
    assert!(
        elapsed >= Duration::from_millis(850),
        "25 publishes in {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "25 publishes in {elapsed:?}"
    );
    for idx in 0..25u32 {
        assert_eq!(
            subscriber.recv_publish().await.payload,
            Bytes::copy_from_slice(&idx.to_be_bytes())
        );
    }
}

#[tokio::test]
async fn publish_rate_disconnect_action_sends_0x96() {
    let broker = TestBroker::start_with(
        "[limits]\npublish_rate_per_sec = 5\npublish_burst = 3\nrate_exceeded_action = \"disconnect\"\n",
    )
    .await;
    let mut publisher = RawClient::connect_v5(broker.addr, "flood").await;
    for _ in 0..3 {
        publisher.publish("f", QoS::AtMostOnce, b"x").await;
    }
    publisher
        .send(Packet::Publish(support::raw::publish_packet(
            "f",
            QoS::AtMostOnce,
            0,
            b"x",
        )))
        .await;
    publisher
        .expect_disconnect(ReasonCode::MessageRateTooHigh)
        .await;
}

#[tokio::test]
async fn subscription_quota_answers_0x97() {
    let broker = TestBroker::start_with("[mqtt]\nmax_subscriptions_per_session = 2\n").await;
    let mut client = RawClient::connect_v5(broker.addr, "quota").await;
    let options = support::raw::options(QoS::AtMostOnce);
    let codes = client
        .subscribe_with(
            &[
                ("a", options),
                ("b", options),
                ("c", options),
                ("a", options),
            ],
            None,
        )
        .await;
    assert_eq!(
        codes,
        vec![
            ReasonCode::Success,
            ReasonCode::Success,
            ReasonCode::QuotaExceeded,
            ReasonCode::Success
        ]
    );
}
