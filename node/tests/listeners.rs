//! Several listeners in one node (tcp, tls, ws, wss) sharing one broker, and the limits of a
//! listener: `max_connections`, `max_connect_rate_per_sec`, `handshake_timeout_ms`, each
//! refusing on its own listener only and counted with its `listener` label.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use starling_core::codec::{ProtocolVersion, QoS, ReasonCode};
use support::{
    pki::{tls_listener_toml, TestPki},
    stream::{tls_connect, MqttClient, Plain, WsClient},
    RawClient, TestBroker, PROMPTLY,
};
use tokio::{io::AsyncReadExt, net::TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_tls_ws_and_wss_listeners_share_one_broker() {
    let pki = TestPki::new();
    let toml = format!(
        "[listeners.tcp]\nbind = \"127.0.0.1:0\"\n\n[listeners.web]\nprotocol = \"ws\"\nbind = \"127.0.0.1:0\"\n\n{}{}",
        tls_listener_toml(&pki, "secure", "tls", ""),
        tls_listener_toml(&pki, "secure_web", "wss", ""),
    );
    let broker = TestBroker::start_with(&toml).await;
    let addrs = &broker.node().listener_addrs;
    assert_eq!(
        addrs.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["secure", "secure_web", "tcp", "web"]
    );
    assert_eq!(broker.node().mqtt_addr, broker.listener_addr("tcp"));

    let tls_stream = tls_connect(broker.listener_addr("secure_web"), pki.client_config(None))
        .await
        .unwrap();
    let wss = WsClient::upgrade(tls_stream, "/mqtt", "mqtt")
        .await
        .unwrap();
    let mut subscriber = MqttClient::connect_ok(wss, "over-wss").await;
    subscriber.subscribe("shared/#", QoS::AtMostOnce).await;

    let mut over_tcp = RawClient::connect_v5(broker.listener_addr("tcp"), "over-tcp").await;
    over_tcp
        .publish("shared/tcp", QoS::AtMostOnce, b"from tcp")
        .await;
    assert_eq!(
        subscriber.recv_publish().await,
        ("shared/tcp".to_string(), b"from tcp".to_vec())
    );
    let tls_stream = tls_connect(broker.listener_addr("secure"), pki.client_config(None))
        .await
        .unwrap();
    let mut over_tls = MqttClient::connect_ok(Plain(tls_stream), "over-tls").await;
    over_tls.publish("shared/tls", b"from tls").await.unwrap();
    assert_eq!(
        subscriber.recv_publish().await,
        ("shared/tls".to_string(), b"from tls".to_vec())
    );
    let tcp = TcpStream::connect(broker.listener_addr("web"))
        .await
        .unwrap();
    let ws = WsClient::upgrade(tcp, "/mqtt", "mqtt").await.unwrap();
    let mut over_ws = MqttClient::connect_ok(ws, "over-ws").await;
    over_ws.publish("shared/ws", b"from ws").await.unwrap();
    assert_eq!(
        subscriber.recv_publish().await,
        ("shared/ws".to_string(), b"from ws".to_vec())
    );
    broker.shutdown().await;
}

/// True if the broker closes `stream` within `timeout` without sending anything.
async fn closed_within(mut stream: TcpStream, timeout: Duration) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(timeout, stream.read(&mut byte)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) => panic!("the broker sent bytes before CONNECT"),
        Err(_still_open) => false,
    }
}

/// True if the broker closes `stream` promptly without sending anything.
async fn closed_at_once(stream: TcpStream) -> bool {
    closed_within(stream, PROMPTLY).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_limits_refuse_on_their_listener_only() {
    let toml = "[listeners.tcp]\nbind = \"127.0.0.1:0\"\n\n\
        [listeners.capped]\nbind = \"127.0.0.1:0\"\nmax_connections = 2\n\n\
        [listeners.throttled]\nbind = \"127.0.0.1:0\"\nmax_connect_rate_per_sec = 3\n";
    let broker = TestBroker::start_with(toml).await;
    let before = broker.scrape().await;
    let capped = broker.listener_addr("capped");
    let first = RawClient::connect_v5(capped, "capped-1").await;
    let _second = RawClient::connect_v5(capped, "capped-2").await;
    assert!(
        closed_at_once(TcpStream::connect(capped).await.unwrap()).await,
        "a third connection is closed"
    );
    // Other listeners are not affected.
    let _elsewhere = RawClient::connect_v5(broker.listener_addr("tcp"), "uncapped").await;
    // A closed connection frees its slot.
    first.disconnect().await;
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    let _third = loop {
        let stream = TcpStream::connect(capped).await.unwrap();
        let mut client = MqttClient::new(Plain(stream), ProtocolVersion::V5);
        if let Ok(connack) = client.connect("capped-3").await {
            assert_eq!(connack.reason_code, ReasonCode::Success);
            break client;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no slot freed on the capped listener"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Six connections at once: three pass the rate limit, the others are closed.
    let throttled = broker.listener_addr("throttled");
    let mut num_refused = 0;
    let mut streams = Vec::new();
    for _ in 0..6 {
        streams.push(TcpStream::connect(throttled).await.unwrap());
    }
    for stream in streams {
        if closed_within(stream, Duration::from_millis(300)).await {
            num_refused += 1;
        }
    }
    assert!(
        (2..=3).contains(&num_refused),
        "refused {num_refused} of 6 at 3 per second"
    );
    let after = broker.scrape().await;
    let delta = |listener: &str, reason: &str| {
        let labels = [("listener", listener), ("reason", reason)];
        after.sum("starling_listener_connections_refused_total", &labels)
            - before.sum("starling_listener_connections_refused_total", &labels)
    };
    assert!(delta("capped", "max_connections") >= 1.0);
    assert_eq!(delta("throttled", "rate_limit"), f64::from(num_refused));
    assert_eq!(delta("tcp", "max_connections"), 0.0);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tls_clients_are_closed_after_the_handshake_timeout() {
    let pki = TestPki::new();
    let toml = format!(
        "[listeners.tcp]\nbind = \"127.0.0.1:0\"\n{}",
        tls_listener_toml(&pki, "impatient", "tls", "handshake_timeout_ms = 300\n")
    );
    let broker = TestBroker::start_with(&toml).await;
    let before = broker.scrape().await;
    let started = tokio::time::Instant::now();
    let silent = TcpStream::connect(broker.listener_addr("impatient"))
        .await
        .unwrap();
    assert!(closed_at_once(silent).await, "a silent client is closed");
    support::assert_elapsed_between(
        started.elapsed(),
        Duration::from_millis(250),
        Duration::from_secs(3),
        "silent TLS client closed",
    );
    let labels = [("listener", "impatient"), ("reason", "timeout")];
    let name = "starling_listener_handshake_failures_total";
    assert_eq!(
        broker.scrape().await.sum(name, &labels) - before.sum(name, &labels),
        1.0
    );
    broker.shutdown().await;
}
