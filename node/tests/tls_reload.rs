//! Reloads of a running TLS listener: a new server certificate (found by polling, by an
//! explicit reload, and by SIGHUP to the `starling` binary) and a new CRL, while connected
//! clients keep publishing and receiving; a broken certificate file keeps the one in force.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use starling_core::codec::QoS;
use support::{
    eventually,
    pki::{mutual_tls_toml, tls_listener_toml, ClientKind, TestPki},
    stream::{tls_connect, MqttClient, MqttLink, Plain},
    tls::{served_certificate, start_tls_broker, try_mqtt_over_tls},
    PROMPTLY,
};

/// Publishes one numbered message and asserts that the subscriber receives it.
async fn carry<L: MqttLink>(
    publisher: &mut MqttClient<L>,
    subscriber: &mut MqttClient<L>,
    topic: &str,
    num_sent: &mut u32,
) {
    *num_sent += 1;
    let payload = format!("message {num_sent}");
    publisher.publish(topic, payload.as_bytes()).await.unwrap();
    assert_eq!(
        subscriber.recv_publish().await,
        (topic.to_string(), payload.into_bytes())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_reload_keeps_connections_and_serves_new_handshakes() {
    let mut pki = TestPki::new();
    let broker = start_tls_broker(&pki, "reloading", "cert_reload_interval_ms = 100\n").await;
    let addr = broker.listener_addr("reloading");
    let config = pki.client_config(None);
    let first_der = pki.server_der.clone();
    assert_eq!(
        served_certificate(addr, config.clone()).await,
        Some(first_der.clone())
    );

    let mut subscriber = MqttClient::connect_ok(
        Plain(tls_connect(addr, config.clone()).await.unwrap()),
        "reload-sub",
    )
    .await;
    subscriber.subscribe("reload/#", QoS::AtMostOnce).await;
    let mut publisher = MqttClient::connect_ok(
        Plain(tls_connect(addr, config.clone()).await.unwrap()),
        "reload-pub",
    )
    .await;
    let mut num_sent = 0;

    // Reload on a file change, found by polling, while both connections carry traffic.
    pki.write_server_certificate("starling-reloaded-by-poll");
    let second_der = pki.server_der.clone();
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        carry(
            &mut publisher,
            &mut subscriber,
            "reload/poll",
            &mut num_sent,
        )
        .await;
        if served_certificate(addr, config.clone()).await == Some(second_der.clone()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    carry(
        &mut publisher,
        &mut subscriber,
        "reload/poll",
        &mut num_sent,
    )
    .await;

    // A broken certificate file is refused and the certificate in force stays.
    pki.replace_file(
        "server.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    assert_eq!(
        broker.node().reload_tls().await,
        1,
        "the broken file is reported"
    );
    assert_eq!(
        served_certificate(addr, config.clone()).await,
        Some(second_der.clone())
    );
    carry(
        &mut publisher,
        &mut subscriber,
        "reload/broken",
        &mut num_sent,
    )
    .await;
    let exposition = broker.scrape().await;
    let failures = exposition.sum(
        "starling_tls_reloads_total",
        &[("listener", "reloading"), ("result", "failure")],
    );
    assert!(failures >= 1.0, "failed reloads counted: {failures}");

    // SIGHUP path: an explicit reload picks up a repaired pair at once.
    pki.write_server_certificate("starling-reloaded-by-sighup");
    let third_der = pki.server_der.clone();
    assert_eq!(broker.node().reload_tls().await, 0);
    assert_eq!(
        served_certificate(addr, config.clone()).await,
        Some(third_der)
    );
    carry(
        &mut publisher,
        &mut subscriber,
        "reload/sighup",
        &mut num_sent,
    )
    .await;
    assert_ne!(first_der, second_der);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crl_reload_revokes_a_certificate_for_new_connections_only() {
    let mut pki = TestPki::new();
    let device = pki.client("crl-device", ClientKind::Valid);
    let watcher = pki.client("crl-watcher", ClientKind::Valid);
    pki.write_crl(&[]);
    let extra = format!(
        "{}cert_reload_interval_ms = 100\n",
        mutual_tls_toml(&pki, true)
    );
    let broker = start_tls_broker(&pki, "crl_reload", &extra).await;
    let addr = broker.listener_addr("crl_reload");
    let device_config = pki.client_config(Some(&device));

    let mut watching = MqttClient::connect_ok(
        Plain(
            tls_connect(addr, pki.client_config(Some(&watcher)))
                .await
                .unwrap(),
        ),
        "crl-watcher",
    )
    .await;
    watching.subscribe("crl/#", QoS::AtMostOnce).await;
    let mut connected_device = MqttClient::connect_ok(
        Plain(tls_connect(addr, device_config.clone()).await.unwrap()),
        "crl-device",
    )
    .await;

    pki.write_crl(&[device.serial]);
    eventually(
        PROMPTLY,
        "the revoked certificate refused for new connections",
        || {
            let config = device_config.clone();
            async move {
                try_mqtt_over_tls(addr, config, "crl-device-again")
                    .await
                    .is_err()
            }
        },
    )
    .await;
    // The connection made before the revocation carries on.
    connected_device
        .publish("crl/still-here", b"open before the revocation")
        .await
        .unwrap();
    assert_eq!(
        watching.recv_publish().await,
        (
            "crl/still-here".to_string(),
            b"open before the revocation".to_vec()
        )
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_of_the_running_binary() {
    let mut pki = TestPki::new();
    let data_dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Polling is off: only SIGHUP reloads.
    let toml = tls_listener_toml(&pki, "secure", "tls", "cert_reload_interval_ms = 0\n")
        .replace("127.0.0.1:0", &addr.to_string());
    let config_file = data_dir.path().join("starling.toml");
    std::fs::write(&config_file, format!("version = \"1\"\n{toml}")).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .arg("--config")
        .arg(&config_file)
        .env("STARLING_ADMIN_BIND", "127.0.0.1:0")
        .env("STARLING_DATA_DIR", data_dir.path())
        .env("STARLING_LOG_LEVEL", "warn")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let config = pki.client_config(None);
    let first_der = pki.server_der.clone();
    eventually(PROMPTLY, "the binary serving TLS", || {
        let config = config.clone();
        let first_der = first_der.clone();
        async move { served_certificate(addr, config).await == Some(first_der) }
    })
    .await;
    let mut client = MqttClient::connect_ok(
        Plain(tls_connect(addr, config.clone()).await.unwrap()),
        "sighup-client",
    )
    .await;
    client.subscribe("sighup/#", QoS::AtMostOnce).await;

    pki.write_server_certificate("starling-after-sighup");
    let second_der = pki.server_der.clone();
    let pid = child.id().expect("running").to_string();
    let status = tokio::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    eventually(PROMPTLY, "the new certificate served after SIGHUP", || {
        let config = config.clone();
        let second_der = second_der.clone();
        async move { served_certificate(addr, config).await == Some(second_der) }
    })
    .await;
    // The connection made before the reload carries on.
    client.publish("sighup/t", b"still here").await.unwrap();
    assert_eq!(
        client.recv_publish().await,
        ("sighup/t".to_string(), b"still here".to_vec())
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the node"
    );
    let _ = child.start_kill();
}
