//! Certificate identity as the user name: a TLS listener with `cert_identity = "username"` makes
//! the verified certificate's common name the user name (no password, the CONNECT user name is
//! ignored), and an ACL with `%u` then confines each device to its own topics. The clients are
//! rumqttc over rustls with client certificates generated at test time.
#![allow(clippy::unwrap_used)]

mod support;

use std::{sync::Arc, time::Duration};

use rumqttc::{
    v5::{
        mqttbytes::{
            v5::{Packet, PubAckReason, SubscribeReasonCode},
            QoS,
        },
        AsyncClient, Event, EventLoop, MqttOptions,
    },
    TlsConfiguration, Transport,
};
use support::{
    pki::{mutual_tls_toml, tls_listener_toml, ClientKind, TestPki},
    TestBroker, PROMPTLY,
};

const DEVICE_ACL: &str = r#"
[mqtt]
allow_anonymous = false

[[acl.rules]]
permission = "allow"
action = "all"
topics = ["devices/%u/#"]
"#;

/// Connects over TLS as the certificate in `config`, sending a user name and password the
/// listener must ignore, and waits for the CONNACK.
async fn connect_device(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    client_id: &str,
) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    options.set_credentials("somebody-else", "not a password");
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut event_loop) = AsyncClient::new(options, 16);
    tokio::time::timeout(PROMPTLY, async {
        loop {
            match event_loop.poll().await.expect("rumqttc over mutual TLS") {
                Event::Incoming(Packet::ConnAck(connack)) => {
                    assert_eq!(
                        connack.code,
                        rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
                    );
                    return;
                }
                _ => continue,
            }
        }
    })
    .await
    .expect("CONNACK in time");
    (client, event_loop)
}

/// Polls until a packet `matches`, returning it.
async fn next_packet(event_loop: &mut EventLoop, matches: impl Fn(&Packet) -> bool) -> Packet {
    tokio::time::timeout(PROMPTLY, async {
        loop {
            if let Event::Incoming(packet) = event_loop.poll().await.expect("connection open") {
                if matches(&packet) {
                    return packet;
                }
            }
        }
    })
    .await
    .expect("the packet came in time")
}

/// Waits for the next SUBACK and returns its codes.
async fn next_suback(event_loop: &mut EventLoop) -> Vec<SubscribeReasonCode> {
    match next_packet(event_loop, |p| matches!(p, Packet::SubAck(_))).await {
        Packet::SubAck(suback) => suback.return_codes,
        _ => unreachable!("matched a SUBACK"),
    }
}

/// Waits for the next PUBACK and returns its reason.
async fn next_puback(event_loop: &mut EventLoop) -> PubAckReason {
    match next_packet(event_loop, |p| matches!(p, Packet::PubAck(_))).await {
        Packet::PubAck(puback) => puback.reason,
        _ => unreachable!("matched a PUBACK"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_common_name_is_the_username_for_percent_u_rules() {
    let mut pki = TestPki::new();
    let device_1 = pki.client("device-1", ClientKind::Valid);
    let device_2 = pki.client("device-2", ClientKind::Valid);
    let toml = format!(
        "{}{DEVICE_ACL}",
        tls_listener_toml(
            &pki,
            "devices",
            "tls",
            &format!(
                "{}cert_identity = \"username\"\n",
                mutual_tls_toml(&pki, false)
            )
        )
    );
    let broker = TestBroker::start_with(&toml).await;
    let port = broker.listener_addr("devices").port();
    let (client_1, mut events_1) =
        connect_device(port, pki.client_config(Some(&device_1)), "c1").await;
    let (client_2, mut events_2) =
        connect_device(port, pki.client_config(Some(&device_2)), "c2").await;

    // Device 2 listens on its own topics.
    client_2
        .subscribe("devices/device-2/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(
        next_suback(&mut events_2).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );

    // Device 1 may not read device 2's topics, nor publish there.
    client_1
        .subscribe("devices/device-2/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(
        next_suback(&mut events_1).await,
        vec![SubscribeReasonCode::NotAuthorized]
    );
    client_1
        .publish("devices/device-2/cmd", QoS::AtLeastOnce, false, "forged")
        .await
        .unwrap();
    assert_eq!(
        next_puback(&mut events_1).await,
        PubAckReason::NotAuthorized
    );

    // Its own topic is fine.
    client_1
        .publish("devices/device-1/telemetry", QoS::AtLeastOnce, false, "ok")
        .await
        .unwrap();
    // Accepted; 0x10 because nobody listens there.
    assert_eq!(
        next_puback(&mut events_1).await,
        PubAckReason::NoMatchingSubscribers
    );

    // Device 2 gets its own message and never the forged one, which was refused before it.
    client_2
        .publish(
            "devices/device-2/telemetry",
            QoS::AtLeastOnce,
            false,
            "mine",
        )
        .await
        .unwrap();
    let Packet::Publish(publish) =
        next_packet(&mut events_2, |p| matches!(p, Packet::Publish(_))).await
    else {
        unreachable!()
    };
    assert_eq!(&publish.topic[..], b"devices/device-2/telemetry");
    assert_eq!(&publish.payload[..], b"mine");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_listener_policy_a_certificate_is_not_a_username() {
    // The same ACL on a listener without `cert_identity`: the certificate authenticates the
    // client, but it has no user name, so `devices/%u/#` matches nothing.
    let mut pki = TestPki::new();
    let device_1 = pki.client("device-1", ClientKind::Valid);
    let toml = format!(
        "{}{DEVICE_ACL}",
        tls_listener_toml(&pki, "devices", "tls", &mutual_tls_toml(&pki, false))
    );
    let broker = TestBroker::start_with(&toml).await;
    let port = broker.listener_addr("devices").port();
    let mut options = MqttOptions::new("c1", "127.0.0.1", port);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        pki.client_config(Some(&device_1)),
    )));
    let (client, mut events) = AsyncClient::new(options, 16);
    client
        .publish("devices/device-1/telemetry", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    assert_eq!(next_puback(&mut events).await, PubAckReason::NotAuthorized);
    broker.shutdown().await;
}
