//! Shared helpers of the node integration tests: in-process brokers on `127.0.0.1:0`, a raw MQTT
//! client on the core codec, bounded polling, and detection of the external clients.
//!
//! Every test crate includes this module and uses a part of it.
#![allow(dead_code, unused_imports, unreachable_pub)]

pub mod auth;
pub mod external;
pub mod pki;
pub mod poll;
pub mod process;
pub mod raw;
pub mod scram;
pub mod stream;
pub mod tls;
pub mod wire;

use std::{collections::HashMap, future::Future, net::SocketAddr, time::Duration};

use starling_core::Broker;
use starling_node::{load_node_config, start_node, RunningNode};
use tempfile::TempDir;
use tokio::time::Instant;

pub(crate) use poll::eventually;
pub use raw::{Bystander, Event, RawClient};

/// How long a test waits for something the broker should do at once.
pub const PROMPTLY: Duration = Duration::from_secs(5);

/// A node started in-process on `127.0.0.1:0` with its own data directory.
pub struct TestBroker {
    /// Address of the MQTT listener.
    pub addr: SocketAddr,
    node: Option<RunningNode>,
    /// Removed when the broker is dropped.
    _data_dir: TempDir,
}

impl TestBroker {
    /// Starts a node with the embedded defaults.
    pub async fn start() -> TestBroker {
        TestBroker::start_with("").await
    }

    /// Starts a node with the defaults plus `extra_toml` (whole sections, e.g.
    /// `"[mqtt]\nreceive_maximum = 2\n"`).
    pub async fn start_with(extra_toml: &str) -> TestBroker {
        let toml_text = format!("version = \"1\"\n{extra_toml}");
        TestBroker::start_from_file(&toml_text, "test config").await
    }

    /// Starts a node from a whole configuration file; its listener address and data directory
    /// are overridden through the environment map, so a checked-in profile never binds a
    /// fixed port.
    pub async fn start_from_file(toml_text: &str, source: &str) -> TestBroker {
        let data_dir = tempfile::tempdir().expect("create a data directory");
        let env_vars = HashMap::from([
            ("STARLING_LISTEN".to_string(), "127.0.0.1:0".to_string()),
            // The admin listener defaults to 127.0.0.1:8080; parallel tests need their own port.
            ("STARLING_ADMIN_BIND".to_string(), "127.0.0.1:0".to_string()),
            (
                "STARLING_DATA_DIR".to_string(),
                data_dir.path().display().to_string(),
            ),
        ]);
        let config = load_node_config(toml_text, source, &env_vars).expect("valid test config");
        let node = start_node(config).await.expect("start the node");
        TestBroker {
            addr: node.mqtt_addr,
            node: Some(node),
            _data_dir: data_dir,
        }
    }

    /// Returns the engine.
    pub fn broker(&self) -> &Broker {
        &self.node.as_ref().expect("node is running").broker
    }

    /// Returns the listener port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Returns the running node.
    pub fn node(&self) -> &RunningNode {
        self.node.as_ref().expect("node is running")
    }

    /// Returns the address of the listener `name`.
    pub fn listener_addr(&self, name: &str) -> SocketAddr {
        self.node()
            .listener_addr(name)
            .unwrap_or_else(|| panic!("no listener named {name}"))
    }

    /// Scrapes `/metrics` from the admin listener and parses it.
    pub async fn scrape(&self) -> starling_node::metrics::text::Exposition {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let admin_addr = self
            .node()
            .admin_addr
            .expect("the admin listener is enabled");
        let mut stream = tokio::net::TcpStream::connect(admin_addr)
            .await
            .expect("connect to the admin listener");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .expect("send the scrape");
        let mut response = String::new();
        tokio::time::timeout(PROMPTLY, stream.read_to_string(&mut response))
            .await
            .expect("scrape in time")
            .expect("read the scrape");
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body)
            .expect("an HTTP response");
        starling_node::metrics::text::parse(body)
            .unwrap_or_else(|error| panic!("invalid exposition ({error}): {body}"))
    }

    /// Runs the node's ordered shutdown.
    pub async fn shutdown(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }

    /// Waits until the broker holds exactly `num_subscriptions` subscriptions: the way to
    /// know that an external subscriber is ready before publishing to it, or that the
    /// subscriptions of an ended session are gone.
    pub async fn wait_for_subscriptions(&self, num_subscriptions: usize) {
        let broker = self.broker().clone();
        let what = format!("{num_subscriptions} subscriptions in the broker");
        eventually(PROMPTLY, &what, || {
            let broker = broker.clone();
            async move { broker.router().counts().1 == num_subscriptions }
        })
        .await;
    }
}

/// Asserts that `elapsed` lies in `[min, max]`.
#[track_caller]
pub fn assert_elapsed_between(elapsed: Duration, min: Duration, max: Duration, what: &str) {
    assert!(
        elapsed >= min && elapsed <= max,
        "{what} after {elapsed:?}, expected between {min:?} and {max:?}"
    );
}
