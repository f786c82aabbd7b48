//! MQTT over TLS with real handshakes: rumqttc and tokio-rustls clients (TLS 1.2 and 1.3),
//! mosquitto_pub/sub and paho-mqtt with client certificates, refused client certificates
//! (expired, unknown CA, revoked, missing), optional client certificates, and the certificate
//! identity as client id. Certificates are generated at test time (`support::pki`); reloads
//! are in `tls_reload.rs`.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};
use starling_core::codec::ReasonCode;
use support::{
    eventually,
    external::{args, require_mosquitto_clients, run_client, spawn_client, wait_client},
    pki::{mutual_tls_toml, tls_listener_toml, ClientKind, TestPki},
    stream::{tls_connect, MqttClient, Plain},
    tls::{start_tls_broker, try_mqtt_over_tls},
    TestBroker, PROMPTLY,
};

async fn rumqttc_round_trip(
    port: u16,
    config: std::sync::Arc<rustls::ClientConfig>,
    client_id: &str,
    payload: Vec<u8>,
) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    options.set_max_packet_size(1 << 20, 1 << 20);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut event_loop) = AsyncClient::new(options, 16);
    let topic = format!("tls/{client_id}");
    client
        .subscribe(topic.clone(), QoS::AtLeastOnce)
        .await
        .unwrap();
    let received = tokio::time::timeout(PROMPTLY, async {
        loop {
            match event_loop.poll().await.expect("rumqttc over TLS") {
                Event::Incoming(Incoming::SubAck(_)) => {
                    client
                        .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                        .await
                        .unwrap();
                }
                Event::Incoming(Incoming::Publish(publish)) => return publish,
                _ => {}
            }
        }
    })
    .await
    .expect("the publish came back in time");
    assert_eq!(received.topic, topic);
    assert_eq!(received.payload.len(), payload.len());
    assert!(received.payload == payload, "payload changed on its way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_round_trips_over_tls_1_2_and_1_3() {
    let pki = TestPki::new();
    let broker = start_tls_broker(&pki, "tls_versions", "").await;
    let port = broker.listener_addr("tls_versions").port();
    // Larger than a TLS record, so that packets span records both ways.
    let payload: Vec<u8> = (0..200_000u32).map(|idx| (idx % 251) as u8).collect();
    let tls13 = pki.client_config_with_versions(None, &[&rustls::version::TLS13]);
    rumqttc_round_trip(port, tls13, "rumqttc-tls13", payload.clone()).await;
    let tls12 = pki.client_config_with_versions(None, &[&rustls::version::TLS12]);
    rumqttc_round_trip(port, tls12, "rumqttc-tls12", payload).await;
    // A plain MQTT client on the TLS port gets no CONNACK.
    let mut plain = support::RawClient::open(broker.listener_addr("tls_versions")).await;
    plain
        .send(starling_core::codec::Packet::Connect(Box::new(
            support::raw::connect_packet(starling_core::codec::ProtocolVersion::V5, "plain"),
        )))
        .await;
    let bytes = plain.read_until_closed().await;
    assert!(
        bytes.first() != Some(&0x20),
        "a plain CONNECT on the TLS port got a CONNACK: {bytes:?}"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_use_client_certificates() {
    if !require_mosquitto_clients() {
        return;
    }
    let mut pki = TestPki::new();
    let subscriber = pki.client("mosquitto-sub", ClientKind::Valid);
    let publisher = pki.client("mosquitto-pub", ClientKind::Valid);
    let expired = pki.client("mosquitto-expired", ClientKind::Expired);
    let broker = start_tls_broker(&pki, "mosquitto_mtls", &mutual_tls_toml(&pki, false)).await;
    let port = broker.listener_addr("mosquitto_mtls").port().to_string();
    let ca = pki.path("ca.pem").display().to_string();
    let tls_args = |identity: &support::pki::ClientIdentity| {
        vec![
            "-h".to_string(),
            "127.0.0.1".to_string(),
            "-p".to_string(),
            port.clone(),
            "--cafile".to_string(),
            ca.clone(),
            "--cert".to_string(),
            identity.cert_file.display().to_string(),
            "--key".to_string(),
            identity.key_file.display().to_string(),
        ]
    };
    let mut sub_args = tls_args(&subscriber);
    sub_args.extend(args(&[
        "-t",
        "mtls/mosquitto",
        "-C",
        "1",
        "-q",
        "1",
        "-V",
        "mqttv5",
    ]));
    let sub = spawn_client("mosquitto_sub", &sub_args);
    broker.wait_for_subscriptions(1).await;
    let mut pub_args = tls_args(&publisher);
    pub_args.extend(args(&[
        "-t",
        "mtls/mosquitto",
        "-m",
        "over mutual tls",
        "-q",
        "1",
        "--tls-version",
        "tlsv1.2",
    ]));
    run_client("mosquitto_pub", &pub_args)
        .await
        .assert_success("mosquitto_pub over TLS 1.2 with a client certificate");
    let output = wait_client(sub, "mosquitto_sub").await;
    output.assert_success("mosquitto_sub over TLS with a client certificate");
    assert_eq!(output.stdout.trim(), "over mutual tls");

    let mut refused_args = tls_args(&expired);
    refused_args.extend(args(&["-t", "mtls/mosquitto", "-m", "never"]));
    let refused = run_client("mosquitto_pub", &refused_args).await;
    assert_ne!(
        refused.code,
        Some(0),
        "an expired certificate was accepted: {refused:#?}"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_unknown_revoked_and_missing_client_certificates_are_refused() {
    let mut pki = TestPki::new();
    let valid = pki.client("valid-client", ClientKind::Valid);
    let expired = pki.client("expired-client", ClientKind::Expired);
    let other_ca = pki.client("other-ca-client", ClientKind::OtherCa);
    let revoked = pki.client("revoked-client", ClientKind::Valid);
    pki.write_crl(&[revoked.serial]);
    let broker = start_tls_broker(&pki, "refusing", &mutual_tls_toml(&pki, true)).await;
    let addr = broker.listener_addr("refusing");
    let before = broker.scrape().await;

    let accepted = try_mqtt_over_tls(addr, pki.client_config(Some(&valid)), "valid").await;
    assert_eq!(accepted, Ok(ReasonCode::Success));
    for (identity, expected_alert) in [
        (Some(&expired), "CertificateExpired"),
        (Some(&other_ca), "UnknownCA"),
        (Some(&revoked), "CertificateRevoked"),
        (None, "CertificateRequired"),
    ] {
        let outcome = try_mqtt_over_tls(addr, pki.client_config(identity), "refused").await;
        match outcome {
            Err(error) => assert!(
                error.contains(expected_alert),
                "expected alert {expected_alert}, got {error}"
            ),
            Ok(reason_code) => panic!("expected {expected_alert}, got CONNACK {reason_code:?}"),
        }
    }
    // TLS 1.2 refuses before the handshake ends.
    let tls12 = pki.client_config_with_versions(Some(&revoked), &[&rustls::version::TLS12]);
    assert!(try_mqtt_over_tls(addr, tls12, "refused-tls12")
        .await
        .is_err());

    let labels = [("listener", "refusing"), ("reason", "client_certificate")];
    let name = "starling_listener_handshake_failures_total";
    eventually(PROMPTLY, "five refused client certificates counted", || {
        let broker = &broker;
        let before = &before;
        async move {
            let after = broker.scrape().await;
            after.sum(name, &labels) - before.sum(name, &labels) >= 5.0
        }
    })
    .await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_identity_binds_the_client_id() {
    let mut pki = TestPki::new();
    let device = pki.client("device-1", ClientKind::Valid);
    let toml = format!(
        "[listeners.tcp]\nbind = \"127.0.0.1:0\"\n{}{}",
        tls_listener_toml(
            &pki,
            "by_cn",
            "tls",
            &format!(
                "{}cert_identity = \"client_id\"\n",
                mutual_tls_toml(&pki, false)
            )
        ),
        tls_listener_toml(
            &pki,
            "by_san",
            "tls",
            &format!(
                "{}cert_identity = \"both\"\ncert_identity_source = \"san\"\n",
                mutual_tls_toml(&pki, false)
            )
        ),
    );
    let broker = TestBroker::start_with(&toml).await;
    let config = pki.client_config(Some(&device));
    let by_cn = broker.listener_addr("by_cn");

    let connect = |addr, client_id: &'static str| {
        let config = config.clone();
        async move {
            let stream = tls_connect(addr, config).await.unwrap();
            let mut client =
                MqttClient::new(Plain(stream), starling_core::codec::ProtocolVersion::V5);
            let connack = client.connect(client_id).await.unwrap();
            (client, connack)
        }
    };
    let (_assigned, connack) = connect(by_cn, "").await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    assert_eq!(
        connack.properties.assigned_client_identifier.as_deref(),
        Some("device-1"),
        "an empty client id is given the certificate's common name"
    );
    let (_same, connack) = connect(by_cn, "device-1").await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    assert_eq!(connack.properties.assigned_client_identifier, None);
    let (_other, connack) = connect(by_cn, "device-2").await;
    assert_eq!(connack.reason_code, ReasonCode::ClientIdentifierNotValid);

    let (_san, connack) = connect(broker.listener_addr("by_san"), "").await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    assert_eq!(
        connack.properties.assigned_client_identifier.as_deref(),
        Some("device-1.clients.test")
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_publishes_and_subscribes_over_tls_with_a_client_certificate() {
    if !support::external::require_paho() {
        return;
    }
    let mut pki = TestPki::new();
    let client = pki.client("paho-tls", ClientKind::Valid);
    let broker = start_tls_broker(&pki, "paho_tls", &mutual_tls_toml(&pki, false)).await;
    let output = support::external::run_python(
        "paho_transport.py",
        &[
            "--port".to_string(),
            broker.listener_addr("paho_tls").port().to_string(),
            "--topic".to_string(),
            "paho-tls".to_string(),
            "--cafile".to_string(),
            pki.path("ca.pem").display().to_string(),
            "--certfile".to_string(),
            client.cert_file.display().to_string(),
            "--keyfile".to_string(),
            client.key_file.display().to_string(),
        ],
    )
    .await;
    output.assert_success("paho over TLS");
    let result: serde_json::Value = serde_json::from_str(output.stdout.trim()).unwrap();
    let topics = |key: &str| {
        let mut topics: Vec<String> = result[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|message| message.to_string())
            .collect();
        topics.sort();
        topics
    };
    assert_eq!(topics("received"), topics("expected"));
    assert_eq!(topics("received").len(), 4);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificates_admit_clients_without_one() {
    let mut pki = TestPki::new();
    let valid = pki.client("optional-valid", ClientKind::Valid);
    let other_ca = pki.client("optional-other-ca", ClientKind::OtherCa);
    let extra = format!(
        "client_ca_file = {:?}\nclient_auth = \"optional\"\n",
        pki.path("ca.pem").display().to_string()
    );
    let broker = start_tls_broker(&pki, "optional", &extra).await;
    let addr = broker.listener_addr("optional");
    assert_eq!(
        try_mqtt_over_tls(addr, pki.client_config(None), "anonymous").await,
        Ok(ReasonCode::Success)
    );
    assert_eq!(
        try_mqtt_over_tls(addr, pki.client_config(Some(&valid)), "with-cert").await,
        Ok(ReasonCode::Success)
    );
    // A certificate that is presented must verify.
    let refused = try_mqtt_over_tls(addr, pki.client_config(Some(&other_ca)), "bad-cert").await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|error| error.contains("UnknownCA")),
        "{refused:?}"
    );
    broker.shutdown().await;
}
