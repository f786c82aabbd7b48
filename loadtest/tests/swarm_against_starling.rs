//! Runs the `swarm` binary against an in-process Starling node and checks its accounting:
//! tiny 1:1 scenarios (QoS 0 in one process, QoS 1 over two worker processes) lose nothing.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use starling_node::{load_node_config, start_node};
use tokio::process::Command;

/// Starts a node on 127.0.0.1:0 with its own data directory and admin port.
async fn start_broker_for_test() -> (starling_node::RunningNode, tempfile::TempDir) {
    let data_dir = tempfile::tempdir().unwrap();
    let env_vars = HashMap::from([
        ("STARLING_LISTEN".to_string(), "127.0.0.1:0".to_string()),
        ("STARLING_ADMIN_BIND".to_string(), "127.0.0.1:0".to_string()),
        (
            "STARLING_DATA_DIR".to_string(),
            data_dir.path().display().to_string(),
        ),
    ]);
    let config = load_node_config("version = \"1\"\n", "test config", &env_vars).unwrap();
    (start_node(config).await.unwrap(), data_dir)
}

/// Runs swarm with `args` (bounded in time) and returns its JSON result line.
async fn run_swarm(args: &[&str]) -> Value {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(env!("CARGO_BIN_EXE_swarm"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("swarm finishes within 60 s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "swarm failed: {stderr}");
    let line = stdout.lines().last().expect("a JSON line on stdout");
    serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"))
}

fn assert_lossless(report: &Value, num_clients: u64) {
    assert_eq!(
        report["connections"]["established"], num_clients,
        "{report}"
    );
    assert_eq!(report["connections"]["failed"], 0, "{report}");
    let messages = &report["messages"];
    let sent = messages["sent"].as_u64().unwrap();
    assert!(sent > 0, "{report}");
    assert_eq!(messages["expected"].as_u64(), Some(sent), "{report}");
    assert_eq!(messages["unique"].as_u64(), Some(sent), "{report}");
    assert_eq!(messages["lost"], 0, "{report}");
    assert_eq!(messages["duplicates"], 0, "{report}");
    assert!(
        report["latency"]["count"].as_u64().unwrap() >= sent,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_pairs_for_one_second_lose_nothing() {
    let (node, _data_dir) = start_broker_for_test().await;
    let broker = node.mqtt_addr.to_string();
    let report = run_swarm(&[
        "pairs",
        "--pairs",
        "10",
        "--broker",
        &broker,
        "--total-rate",
        "2000",
        "--duration",
        "1",
        "--settle-ms",
        "100",
        "--quiet",
    ])
    .await;
    assert_lossless(&report, 20);
    assert_eq!(report["workers"], 1);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_pairs_over_two_worker_processes_lose_nothing() {
    let (node, _data_dir) = start_broker_for_test().await;
    let broker = node.mqtt_addr.to_string();
    let report = run_swarm(&[
        "pairs",
        "--pairs",
        "10",
        "--broker",
        &broker,
        "--qos",
        "1",
        "--protocol",
        "5",
        "--total-rate",
        "2000",
        "--duration",
        "1",
        "--workers",
        "2",
        "--settle-ms",
        "100",
        "--quiet",
    ])
    .await;
    assert_lossless(&report, 20);
    assert_eq!(report["workers"], 2);
    assert_eq!(
        report["messages"]["acked"], report["messages"]["sent"],
        "{report}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_name_the_address() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let broker = format!("127.0.0.1:{port}");
    let output = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args([
            "pairs",
            "--pairs",
            "2",
            "--broker",
            &broker,
            "--duration",
            "1",
            "--quiet",
        ])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&broker), "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
}
