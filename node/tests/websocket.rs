//! MQTT over WebSocket (`ws`) and WebSocket over TLS (`wss`): Eclipse Paho's Python client
//! with `transport="websockets"`, and a frame-level client for what Paho never sends: packets
//! split across frames, several packets in one frame, pings, close frames, text frames, bad
//! upgrade requests.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::Value;
use starling_core::codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use support::{
    external::{require_paho, run_python},
    pki::{mutual_tls_toml, tls_listener_toml, ClientKind, TestPki},
    raw::{connect_packet, options, publish_packet},
    stream::{opcode, tls_connect, Frame, MqttClient, WsClient},
    TestBroker, PROMPTLY,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

/// A node with `tcp`, `ws` (path `/mqtt`), `wss` (path `/secure`) listeners.
async fn start_ws_broker(pki: &TestPki, wss_extra: &str) -> TestBroker {
    let toml = format!(
        "[listeners.tcp]\nbind = \"127.0.0.1:0\"\n\n[listeners.ws]\nprotocol = \"ws\"\nbind = \"127.0.0.1:0\"\n\n{}",
        tls_listener_toml(pki, "wss", "wss", &format!("path = \"/secure\"\n{wss_extra}"))
    );
    TestBroker::start_with(&toml).await
}

async fn run_paho(extra_args: &[String], topic: &str) {
    let mut script_args = vec![
        "--transport".to_string(),
        "websockets".to_string(),
        "--topic".to_string(),
        topic.to_string(),
    ];
    script_args.extend_from_slice(extra_args);
    let output = run_python("paho_transport.py", &script_args).await;
    output.assert_success("paho over websockets");
    let result: Value = serde_json::from_str(output.stdout.trim())
        .unwrap_or_else(|error| panic!("no JSON ({error}): {output:#?}"));
    // Paho hands a QoS 2 message to the application on PUBREL, so it may come after the
    // QoS 1 message published after it: compare in topic order.
    let sorted = |key: &str| {
        let mut messages = result[key].as_array().unwrap().clone();
        messages.sort_by_key(|message| message["topic"].as_str().unwrap().to_string());
        messages
    };
    assert_eq!(sorted("received"), sorted("expected"), "{topic}");
    assert_eq!(sorted("received").len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_publishes_and_subscribes_over_ws_and_wss() {
    if !require_paho() {
        return;
    }
    let mut pki = TestPki::new();
    let client = pki.client("paho-wss", ClientKind::Valid);
    let broker = start_ws_broker(&pki, &mutual_tls_toml(&pki, false)).await;
    let ws_port = broker.listener_addr("ws").port().to_string();
    run_paho(
        &[
            "--port".to_string(),
            ws_port,
            "--ws-path".to_string(),
            "/mqtt".to_string(),
        ],
        "paho-ws",
    )
    .await;
    let wss_port = broker.listener_addr("wss").port().to_string();
    run_paho(
        &[
            "--port".to_string(),
            wss_port,
            "--ws-path".to_string(),
            "/secure".to_string(),
            "--cafile".to_string(),
            pki.path("ca.pem").display().to_string(),
            "--certfile".to_string(),
            client.cert_file.display().to_string(),
            "--keyfile".to_string(),
            client.key_file.display().to_string(),
        ],
        "paho-wss",
    )
    .await;
    broker.shutdown().await;
}

fn encode(packet: Packet) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    packet.encode(ProtocolVersion::V5, &mut buf);
    buf.to_vec()
}

/// Drives one WebSocket client through split and joined packets, ping and close.
async fn exercise_frames<S: AsyncRead + AsyncWrite + Unpin + Send>(
    ws: WsClient<S>,
    client_id: &str,
) {
    assert!(ws.response.starts_with("HTTP/1.1 101"), "{}", ws.response);
    assert!(
        ws.response.contains("Sec-WebSocket-Protocol: mqtt\r\n"),
        "{}",
        ws.response
    );
    assert!(
        ws.response
            .contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{}",
        ws.response
    );
    let mut client = MqttClient::new(ws, ProtocolVersion::V5);
    // CONNECT split over three frames of one fragmented message, a ping in between.
    let connect = encode(Packet::Connect(Box::new(connect_packet(
        ProtocolVersion::V5,
        client_id,
    ))));
    let (first, rest) = connect.split_at(3);
    let (second, third) = rest.split_at(rest.len() / 2);
    client
        .link
        .send_frame(false, opcode::BINARY, first)
        .await
        .unwrap();
    client
        .link
        .send_frame(false, opcode::CONTINUATION, second)
        .await
        .unwrap();
    client
        .link
        .send_frame(true, opcode::PING, b"are you there")
        .await
        .unwrap();
    client
        .link
        .send_frame(true, opcode::CONTINUATION, third)
        .await
        .unwrap();
    let pong = client.link.recv_frame().await.unwrap().unwrap();
    assert_eq!(
        pong,
        Frame {
            fin: true,
            opcode: opcode::PONG,
            payload: b"are you there".to_vec()
        }
    );
    match client.recv(PROMPTLY).await.unwrap() {
        Some(Packet::ConnAck(connack)) => assert_eq!(connack.reason_code, ReasonCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    // SUBSCRIBE and two PUBLISH packets in one frame.
    let topic = format!("frames/{client_id}");
    let mut joined = encode(Packet::Subscribe(starling_core::codec::Subscribe {
        packet_id: starling_core::codec::PacketId::new(1).unwrap(),
        properties: Default::default(),
        filters: vec![(topic.as_str().into(), options(QoS::AtMostOnce))],
    }));
    joined.extend(encode(Packet::Publish(publish_packet(
        &topic,
        QoS::AtMostOnce,
        0,
        b"one",
    ))));
    let large = vec![7u8; 40_000];
    joined.extend(encode(Packet::Publish(publish_packet(
        &topic,
        QoS::AtMostOnce,
        0,
        &large,
    ))));
    client
        .link
        .send_frame(true, opcode::BINARY, &joined)
        .await
        .unwrap();
    match client.recv(PROMPTLY).await.unwrap() {
        Some(Packet::SubAck(_)) => {}
        other => panic!("expected SUBACK, got {other:?}"),
    }
    assert_eq!(
        client.recv_publish().await,
        (topic.clone(), b"one".to_vec())
    );
    // The 40 kB PUBLISH comes back spread over several frames of the broker.
    assert_eq!(client.recv_publish().await, (topic.clone(), large));
    // Close: the broker answers with a close frame and closes the connection.
    client
        .link
        .send_frame(true, opcode::CLOSE, &1000u16.to_be_bytes())
        .await
        .unwrap();
    let close = client.link.recv_frame().await.unwrap().unwrap();
    assert_eq!(close.opcode, opcode::CLOSE);
    assert_eq!(close.payload, 1000u16.to_be_bytes().to_vec());
    assert_eq!(
        client.link.recv_frame().await.unwrap(),
        None,
        "closed after the close frame"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_split_and_join_packets_over_ws_and_wss() {
    let pki = TestPki::new();
    let broker = start_ws_broker(&pki, "").await;
    let tcp = TcpStream::connect(broker.listener_addr("ws"))
        .await
        .unwrap();
    let ws = WsClient::upgrade(tcp, "/mqtt", "mqtt").await.unwrap();
    exercise_frames(ws, "frames-ws").await;
    let tls = tls_connect(broker.listener_addr("wss"), pki.client_config(None))
        .await
        .unwrap();
    let wss = WsClient::upgrade(tls, "/secure?client=test", "mqttv3.1, mqtt")
        .await
        .unwrap();
    exercise_frames(wss, "frames-wss").await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upgrades_and_frames_are_refused() {
    let pki = TestPki::new();
    let broker = start_ws_broker(&pki, "").await;
    let addr = broker.listener_addr("ws");
    let upgrade = |path: &'static str, protocols: &'static str| async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        WsClient::upgrade(tcp, path, protocols).await.unwrap()
    };
    let wrong_path = upgrade("/other", "mqtt").await;
    assert!(
        wrong_path.response.starts_with("HTTP/1.1 404"),
        "{}",
        wrong_path.response
    );
    let wrong_protocol = upgrade("/mqtt", "chat").await;
    assert!(
        wrong_protocol.response.starts_with("HTTP/1.1 400"),
        "{}",
        wrong_protocol.response
    );
    // [MQTT-6.0.0-1] a text frame closes the connection (1003 Unsupported Data).
    let mut text = upgrade("/mqtt", "mqtt").await;
    text.send_frame(true, opcode::TEXT, b"hello").await.unwrap();
    let close = text.recv_frame().await.unwrap().unwrap();
    assert_eq!(
        (close.opcode, close.payload),
        (opcode::CLOSE, 1003u16.to_be_bytes().to_vec())
    );
    assert_eq!(text.recv_frame().await.unwrap(), None);
    // A continuation without a message is a protocol error (1002).
    let mut stray = upgrade("/mqtt", "mqtt").await;
    stray
        .send_frame(true, opcode::CONTINUATION, b"x")
        .await
        .unwrap();
    let close = stray.recv_frame().await.unwrap().unwrap();
    assert_eq!(
        (close.opcode, close.payload),
        (opcode::CLOSE, 1002u16.to_be_bytes().to_vec())
    );
    // The broker still serves WebSocket clients, without a subprotocol header too.
    let lenient = upgrade("/mqtt", "").await;
    assert!(
        lenient.response.starts_with("HTTP/1.1 101"),
        "{}",
        lenient.response
    );
    let client = MqttClient::connect_ok(lenient, "no-subprotocol").await;
    drop(client);
    let exposition = broker.scrape().await;
    let failures = exposition.sum(
        "starling_listener_handshake_failures_total",
        &[("listener", "ws"), ("reason", "websocket")],
    );
    assert!(failures >= 2.0, "refused upgrades counted: {failures}");
    broker.shutdown().await;
}
