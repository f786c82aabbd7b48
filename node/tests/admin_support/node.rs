//! Helpers of the admin API and metrics tests: an in-process node with its admin listener on
//! `127.0.0.1:0`, a raw HTTP/1.1 client (so tests can send any method, header or broken body),
//! Prometheus scrapes, rumqttc v5 clients and bounded polling.
#![allow(dead_code)]

use std::{collections::HashMap, net::SocketAddr, time::Duration};

#[path = "../support/poll.rs"]
mod poll;
pub(crate) use poll::eventually;

use serde_json::Value;
use starling_node::{
    ctl::{self, CtlArgs},
    load_node_config,
    logging::ReloadableFilter,
    metrics::text,
    start_node_with, LogControl, NodeOptions, RunningNode,
};
use tempfile::TempDir;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
    time::Instant,
};

/// How long a test waits for something the node should do at once.
pub(crate) const PROMPTLY: Duration = Duration::from_secs(5);

/// A node started in-process with its admin listener on an ephemeral port.
pub(crate) struct AdminNode {
    /// The node; `None` once shut down.
    pub(crate) node: Option<RunningNode>,
    /// Address of the MQTT listener.
    pub(crate) mqtt_addr: SocketAddr,
    /// Address of the admin listener.
    pub(crate) admin_addr: SocketAddr,
    /// The bearer token the API requires, if any.
    pub(crate) token: Option<String>,
    /// Keeps the reloadable log filter alive, so `PUT /api/v1/log-level` has something to change.
    _log_layer: Option<ReloadableFilter>,
    _data_dir: TempDir,
}

impl AdminNode {
    /// Starts a node with defaults plus `extra_toml`, an optional token and a log control.
    pub(crate) async fn start_with(
        extra_toml: &str,
        token: Option<&str>,
        log_control: bool,
    ) -> AdminNode {
        let data_dir = tempfile::tempdir().expect("create a data directory");
        let mut env_vars = HashMap::from([
            ("STARLING_LISTEN".to_string(), "127.0.0.1:0".to_string()),
            ("STARLING_ADMIN_BIND".to_string(), "127.0.0.1:0".to_string()),
            (
                "STARLING_DATA_DIR".to_string(),
                data_dir.path().display().to_string(),
            ),
        ]);
        if let Some(token) = token {
            env_vars.insert("STARLING_ADMIN_TOKEN".to_string(), token.to_string());
        }
        let toml_text = format!("version = \"1\"\n{extra_toml}");
        let config = load_node_config(&toml_text, "test config", &env_vars).expect("valid config");
        let (log_layer, log_control) = if log_control {
            let (layer, control) = LogControl::new("info").expect("valid filter");
            (Some(layer), Some(control))
        } else {
            (None, None)
        };
        let node = start_node_with(config, NodeOptions { log_control })
            .await
            .expect("start the node");
        AdminNode {
            mqtt_addr: node.mqtt_addr,
            admin_addr: node.admin_addr.expect("the admin listener is enabled"),
            node: Some(node),
            token: token.map(str::to_string),
            _log_layer: log_layer,
            _data_dir: data_dir,
        }
    }

    /// Starts a node with the defaults, no token and a log control.
    pub(crate) async fn start() -> AdminNode {
        AdminNode::start_with("", None, true).await
    }

    /// Returns the running node.
    pub(crate) fn running(&self) -> &RunningNode {
        self.node.as_ref().expect("node is running")
    }

    /// Calls the admin listener with the node's token (if any).
    pub(crate) async fn call(&self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        let authorization = self.token.as_ref().map(|token| format!("Bearer {token}"));
        let mut headers = Vec::new();
        if let Some(authorization) = &authorization {
            headers.push(("authorization", authorization.as_str()));
        }
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        request(self.admin_addr, method, path, &headers, body).await
    }

    /// GETs `path` and returns its JSON, asserting status 200.
    pub(crate) async fn get_json(&self, path: &str) -> Value {
        let response = self.call("GET", path, None).await;
        assert_eq!(response.status, 200, "GET {path}: {}", response.body);
        response.json()
    }

    /// Scrapes `/metrics` and parses it.
    pub(crate) async fn scrape(&self) -> text::Exposition {
        let response = self.call("GET", "/metrics", None).await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(
            response.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        text::parse(&response.body).unwrap_or_else(|error| {
            panic!(
                "/metrics is not valid exposition text: {error}\n{}",
                response.body
            )
        })
    }

    /// Returns rumqttc v5 options for `client_id` on this node.
    pub(crate) fn options_v5(&self, client_id: &str) -> rumqttc::v5::MqttOptions {
        let mut options =
            rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", self.mqtt_addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    /// Status code.
    pub(crate) status: u16,
    /// Header names (lowercase) and values.
    pub(crate) headers: Vec<(String, String)>,
    /// Body.
    pub(crate) body: String,
}

impl HttpResponse {
    /// Parses the body as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("body is not JSON ({error}): {}", self.body))
    }

    /// Returns a header's value.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Asserts an API error: status, JSON `error` code and a non-empty message.
    #[track_caller]
    pub(crate) fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        let body = self.json();
        assert_eq!(body["error"], code, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) and reads the whole answer.
pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the admin listener");
    let body = body.unwrap_or("");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(PROMPTLY, stream.read_to_end(&mut raw))
        .await
        .expect("the admin listener answers promptly")
        .expect("read the answer");
    let text = String::from_utf8(raw).expect("the answer is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete HTTP answer");
    let mut lines = head.lines();
    let status_line = lines.next().unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked")),
        "this test client reads only content-length bodies"
    );
    HttpResponse {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A connected rumqttc v5 client whose incoming packets are forwarded to a channel.
pub(crate) struct Client {
    /// Sends requests.
    pub(crate) client: rumqttc::v5::AsyncClient,
    /// Every incoming packet; closed when the connection ends.
    pub(crate) incoming: mpsc::Receiver<rumqttc::v5::Incoming>,
}

/// Connects a v5 client and waits for its CONNACK.
pub(crate) async fn connect_v5(options: rumqttc::v5::MqttOptions) -> Client {
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 1024);
    let (sender, incoming) = mpsc::channel(4096);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::v5::Event::Incoming(packet)) => {
                    if sender.send(packet).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // rumqttc reports a server DISCONNECT as an error; forward it as the packet.
                Err(rumqttc::v5::ConnectionError::MqttState(
                    rumqttc::v5::StateError::ServerDisconnect { reason_code, .. },
                )) => {
                    let disconnect = rumqttc::v5::mqttbytes::v5::Disconnect {
                        reason_code,
                        properties: None,
                    };
                    let _ = sender
                        .send(rumqttc::v5::Incoming::Disconnect(disconnect))
                        .await;
                    return;
                }
                // rumqttc 0.25 cannot decode a DISCONNECT that carries only a reason code (legal
                // in MQTT 5.0 section 3.14.2.2.1) and reports ConnectionAborted instead; tests that
                // check the reason code use `RawV5`.
                Err(_) => return,
            }
        }
    });
    let mut client = Client { client, incoming };
    client
        .next(|packet| matches!(packet, rumqttc::v5::Incoming::ConnAck(_)).then_some(()))
        .await;
    client
}

impl Client {
    /// Returns the first incoming packet `select` accepts, skipping the others.
    pub(crate) async fn next<T>(
        &mut self,
        mut select: impl FnMut(rumqttc::v5::Incoming) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + PROMPTLY;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Ok(Some(packet)) => {
                    if let Some(selected) = select(packet) {
                        return selected;
                    }
                }
                Ok(None) => panic!("the connection ended first"),
                Err(_) => panic!("timed out waiting for a packet"),
            }
        }
    }

    /// Waits until the connection ends, skipping any packet.
    pub(crate) async fn expect_closed(&mut self) {
        let deadline = Instant::now() + PROMPTLY;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(_) => panic!("timed out waiting for the connection to end"),
            }
        }
    }

    /// Subscribes and waits for the SUBACK.
    pub(crate) async fn subscribe(&mut self, filter: &str, qos: rumqttc::v5::mqttbytes::QoS) {
        self.client.subscribe(filter, qos).await.unwrap();
        self.next(|packet| matches!(packet, rumqttc::v5::Incoming::SubAck(_)).then_some(()))
            .await;
    }
}

/// A raw MQTT 5.0 connection, for exact bytes the broker sends.
pub(crate) struct RawV5 {
    stream: TcpStream,
}

impl RawV5 {
    /// Sends CONNECT (clean start, keep alive 60, the given Session Expiry Interval) and checks
    /// that CONNACK accepts it.
    pub(crate) async fn connect(
        addr: SocketAddr,
        client_id: &str,
        session_expiry_secs: u32,
    ) -> RawV5 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60];
        // Properties: Session Expiry Interval (0x11).
        body.push(5);
        body.push(0x11);
        body.extend_from_slice(&session_expiry_secs.to_be_bytes());
        body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
        body.extend_from_slice(client_id.as_bytes());
        assert!(body.len() < 128, "one-byte remaining length");
        let mut packet = vec![0x10, body.len() as u8];
        packet.extend_from_slice(&body);
        stream.write_all(&packet).await.unwrap();
        let mut header = [0u8; 2];
        stream.read_exact(&mut header).await.unwrap();
        let mut rest = vec![0u8; usize::from(header[1])];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(header[0], 0x20, "CONNACK");
        assert_eq!(rest[1], 0, "CONNACK reason code");
        RawV5 { stream }
    }

    /// Reads everything until the broker closes the connection.
    pub(crate) async fn read_until_closed(&mut self) -> Vec<u8> {
        let mut received = Vec::new();
        tokio::time::timeout(PROMPTLY, self.stream.read_to_end(&mut received))
            .await
            .expect("the broker closes the connection promptly")
            .expect("read until EOF");
        received
    }
}

/// DISCONNECT with reason code 0x98 (Administrative action) and no properties.
pub(crate) const DISCONNECT_ADMINISTRATIVE_ACTION: [u8; 4] = [0xE0, 0x02, 0x98, 0x00];

/// Parses `starling ctl` arguments aimed at `node` (with its token, if any).
pub(crate) fn ctl_args(node: &AdminNode, json: bool, command: &[&str]) -> CtlArgs {
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        ctl: CtlArgs,
    }
    let url = format!("http://{}", node.admin_addr);
    let mut argv = vec!["ctl", "--url", url.as_str()];
    if let Some(token) = &node.token {
        argv.extend(["--token", token.as_str()]);
    }
    if json {
        argv.push("--json");
    }
    argv.extend(command);
    Harness::try_parse_from(argv).unwrap().ctl
}

/// Runs `starling ctl` in-process (it blocks, so off the async workers); the error is the
/// message it would print.
pub(crate) async fn run_ctl(args: CtlArgs) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        ctl::run(&args, &mut out)
            .map(|()| String::from_utf8(out).unwrap())
            .map_err(|error| format!("{error:#}"))
    })
    .await
    .unwrap()
}
