//! The `starling` binary as a child process: `config default`, configuration errors, serving
//! mosquitto clients on `STARLING_LISTEN`, and graceful shutdown on SIGTERM.
#![allow(clippy::unwrap_used)]

mod support;

use std::{collections::HashMap, net::SocketAddr, process::Stdio, time::Duration};

use starling_core::codec::{ProtocolVersion, ReasonCode};
use starling_node::{load_node_config, DEFAULT_CONFIG_TOML};
use support::{
    eventually,
    external::{require_mosquitto_clients, run_client, spawn_client, wait_client},
    RawClient, PROMPTLY,
};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, Command},
};

/// A `starling` process listening on a free port of 127.0.0.1 with its own data directory.
struct StarlingProcess {
    child: Child,
    addr: SocketAddr,
    _data_dir: TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Returns a `starling` command with `STARLING_LISTEN` and `STARLING_DATA_DIR` set.
fn starling_command(addr: SocketAddr, data_dir: &TempDir) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_starling"));
    command
        .env("STARLING_LISTEN", addr.to_string())
        // The admin listener defaults to 127.0.0.1:8080; parallel tests need their own port.
        .env("STARLING_ADMIN_BIND", "127.0.0.1:0")
        .env("STARLING_DATA_DIR", data_dir.path())
        .env("STARLING_LOG_LEVEL", "warn")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

impl StarlingProcess {
    /// Starts `starling` (serve, embedded defaults) and waits until it accepts connections.
    async fn start() -> StarlingProcess {
        let data_dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = starling_command(addr, &data_dir).spawn().unwrap();
        eventually(PROMPTLY, "starling to listen", || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        StarlingProcess {
            child,
            addr,
            _data_dir: data_dir,
        }
    }

    /// Sends SIGTERM with `kill -TERM`.
    async fn terminate(&self) {
        let pid = self.child.id().expect("still running").to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit; returns its exit code and standard error.
    async fn wait(mut self) -> (Option<i32>, String) {
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("starling exits in time")
            .unwrap();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr).await.unwrap();
        }
        (status.code(), stderr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_default_prints_toml_that_loads() {
    let output = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["config", "default"])
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(text, DEFAULT_CONFIG_TOML);
    let config = load_node_config(&text, "starling config default", &HashMap::new())
        .expect("the printed default config loads");
    assert_eq!(config.tcp_listen(), Some("0.0.0.0:1883".parse().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_config_key_fails_naming_the_key_and_line() {
    let data_dir = tempfile::tempdir().unwrap();
    let config_path = data_dir.path().join("starling.toml");
    std::fs::write(
        &config_path,
        "version = \"1\"\n\n[mqtt]\nreceive_maximum = 10\nreceive_maximun = 10\n",
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = starling_command(addr, &data_dir)
        .arg("--config")
        .arg(&config_path)
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(PROMPTLY, child.wait_with_output())
        .await
        .expect("starling exits at once on a bad config")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exited with success: {stderr}");
    assert!(
        stderr.contains("receive_maximun"),
        "key not named: {stderr}"
    );
    assert!(stderr.contains("line 5"), "line not named: {stderr}");
    assert!(stderr.contains("starling.toml"), "file not named: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_on_starling_listen_serves_mosquitto_clients() {
    if !require_mosquitto_clients() {
        return;
    }
    let starling = StarlingProcess::start().await;
    let port = starling.addr.port().to_string();
    let connection = ["-h", "127.0.0.1", "-p", &port];
    let mosquitto_args = |extra: &[&str]| {
        let mut args: Vec<String> = connection.iter().map(|arg| arg.to_string()).collect();
        args.extend(extra.iter().map(|arg| arg.to_string()));
        args
    };
    // A retained message first: when mosquitto_sub prints it, its subscription is live.
    run_client(
        "mosquitto_pub",
        &mosquitto_args(&["-t", "bin/ready", "-m", "ready", "-r"]),
    )
    .await
    .assert_success("mosquitto_pub");
    let mut subscriber = spawn_client(
        "mosquitto_sub",
        &mosquitto_args(&["-V", "mqttv5", "-t", "bin/#", "-C", "2", "-F", "%t %p"]),
    );
    let mut lines = BufReader::new(subscriber.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(PROMPTLY, lines.next_line())
        .await
        .expect("retained message in time")
        .unwrap();
    assert_eq!(first.as_deref(), Some("bin/ready ready"));
    run_client(
        "mosquitto_pub",
        &mosquitto_args(&["-V", "mqttv5", "-t", "bin/live", "-m", "hello", "-q", "1"]),
    )
    .await
    .assert_success("mosquitto_pub");
    let second = tokio::time::timeout(PROMPTLY, lines.next_line())
        .await
        .expect("live message in time")
        .unwrap();
    assert_eq!(second.as_deref(), Some("bin/live hello"));
    wait_client(subscriber, "mosquitto_sub")
        .await
        .assert_success("mosquitto_sub");

    starling.terminate().await;
    let (code, stderr) = starling.wait().await;
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_disconnects_clients_with_0x8b_and_exits_0() {
    let starling = StarlingProcess::start().await;
    let mut v5 = RawClient::connect_v5(starling.addr, "sigterm-v5").await;
    let mut v311 = RawClient::connect(starling.addr, ProtocolVersion::V3_1_1, "sigterm-v311").await;
    starling.terminate().await;
    // [MQTT-3.14] DISCONNECT 0x8B (Server shutting down) to MQTT 5 clients; 3.1.1 is closed.
    v5.expect_disconnect(ReasonCode::ServerShuttingDown).await;
    v311.expect_closed().await;
    let (code, stderr) = starling.wait().await;
    assert_eq!(code, Some(0), "{stderr}");
}
