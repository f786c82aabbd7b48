//! The ban list through the admin API over real HTTP: a ban added with `POST /api/v1/bans`
//! kicks a connected client (DISCONNECT 0x98) within a second and refuses it afterwards
//! (CONNACK 0x8A to a rumqttc v5 client), lands in the ban file, and is lifted with `DELETE`;
//! every bad input gets a JSON 4xx; `starling ctl bans` prints tables and JSON.
#![allow(clippy::unwrap_used)]

#[path = "admin_support/node.rs"]
mod admin_support;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use admin_support::{
    connect_v5, ctl_args, eventually, run_ctl, AdminNode, RawV5, DISCONNECT_ADMINISTRATIVE_ACTION,
    PROMPTLY,
};
use rumqttc::v5::{mqttbytes::v5::ConnectReturnCode, ConnectionError, Event, Incoming};
use serde_json::{json, Value};
use tempfile::TempDir;

/// A node whose `auth.ban_file` is in a fresh directory. The watcher polls only every 60 s, so
/// anything enforced sooner was enforced because the API woke it.
async fn node_with_ban_file() -> (AdminNode, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[auth]\nban_file = \"{}\"\nreload_interval_ms = 60000\n",
        dir.path().join("bans.toml").display()
    );
    (AdminNode::start_with(&config, None, false).await, dir)
}

/// Connects a rumqttc v5 client and returns the CONNACK's reason code.
async fn connack_code(node: &AdminNode, client_id: &str) -> ConnectReturnCode {
    let (_client, mut eventloop) = rumqttc::v5::AsyncClient::new(node.options_v5(client_id), 16);
    let answer = tokio::time::timeout(PROMPTLY, eventloop.poll())
        .await
        .expect("CONNACK arrives promptly");
    match answer {
        Ok(Event::Incoming(Incoming::ConnAck(connack))) => connack.code,
        Err(ConnectionError::ConnectionRefused(code)) => code,
        other => panic!("expected a CONNACK, got {other:?}"),
    }
}

fn file_bans(path: &Path) -> toml::Value {
    toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_added_through_the_api_kicks_at_once_and_refuses_the_client_until_lifted() {
    let (node, dir) = node_with_ban_file().await;
    let ban_file = dir.path().join("bans.toml");
    let mut victim = RawV5::connect(node.mqtt_addr, "bad-car", 0).await;
    let mut bystander = connect_v5(node.options_v5("good-car")).await;

    let listed = node.get_json("/api/v1/bans").await;
    assert_eq!(listed["bans"], json!([]));
    assert_eq!(listed["ban_file"], ban_file.display().to_string());

    let started = Instant::now();
    let added = node
        .call(
            "POST",
            "/api/v1/bans",
            Some(r#"{"kind": "client-id", "value": "bad-car"}"#),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.body);
    assert_eq!(
        added.json(),
        json!({ "kind": "client-id", "value": "bad-car", "added": true })
    );
    assert_eq!(
        victim.read_until_closed().await,
        DISCONNECT_ADMINISTRATIVE_ACTION
    );
    assert!(
        started.elapsed() <= Duration::from_secs(1),
        "kicked {:?} after the request",
        started.elapsed()
    );
    assert_eq!(
        connack_code(&node, "bad-car").await,
        ConnectReturnCode::Banned
    );
    assert_eq!(
        connack_code(&node, "other-car").await,
        ConnectReturnCode::Success
    );
    assert_eq!(
        file_bans(&ban_file)["client_ids"],
        toml::Value::Array(vec!["bad-car".into()])
    );

    // Adding it again changes nothing and says so.
    let again = node
        .call(
            "POST",
            "/api/v1/bans",
            Some(r#"{"kind": "client_id", "value": "bad-car"}"#),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["added"], false);

    // A CIDR ban covers the bystander; lifting it lets the bystander back.
    let range = node
        .call(
            "POST",
            "/api/v1/bans",
            Some(r#"{"kind": "address", "value": "127.0.0.0/8"}"#),
        )
        .await;
    assert_eq!(range.status, 201, "{}", range.body);
    bystander.expect_closed().await;
    assert_eq!(
        connack_code(&node, "good-car").await,
        ConnectReturnCode::Banned
    );
    let listed = node.get_json("/api/v1/bans").await;
    assert_eq!(
        listed["bans"],
        json!([
            { "kind": "client-id", "value": "bad-car" },
            { "kind": "address", "value": "127.0.0.0/8" },
        ])
    );
    let lifted = node
        .call(
            "DELETE",
            "/api/v1/bans?kind=address&value=127.0.0.0%2F8",
            None,
        )
        .await;
    assert_eq!(lifted.status, 200, "{}", lifted.body);
    assert_eq!(
        lifted.json(),
        json!({ "kind": "address", "value": "127.0.0.0/8", "removed": true })
    );
    eventually(PROMPTLY, "the address ban is lifted", || async {
        connack_code(&node, "good-car").await == ConnectReturnCode::Success
    })
    .await;
    assert_eq!(
        connack_code(&node, "bad-car").await,
        ConnectReturnCode::Banned
    );
    assert_eq!(
        file_bans(&ban_file).get("addresses"),
        Some(&toml::Value::Array(vec![]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ban_requests_get_json_client_errors() {
    let (node, dir) = node_with_ban_file().await;
    let post = |body: &'static str| node.call("POST", "/api/v1/bans", Some(body));
    post(r#"{"kind": "planet", "value": "mars"}"#)
        .await
        .assert_error(400, "bad_request");
    post(r#"{"kind": "address", "value": "10.0.0.0/33"}"#)
        .await
        .assert_error(400, "bad_request");
    post(r#"{"kind": "address", "value": "ten.0.0.0/8"}"#)
        .await
        .assert_error(400, "bad_request");
    post(r#"{"kind": "username", "value": " "}"#)
        .await
        .assert_error(400, "bad_request");
    post(r#"{"kind": "username"}"#)
        .await
        .assert_error(422, "bad_request");
    post(r#"{"kind": "username", "value": "x", "reason": "y"}"#)
        .await
        .assert_error(422, "bad_request");
    post("{not json").await.assert_error(400, "bad_request");
    node.call("DELETE", "/api/v1/bans?kind=username&value=nobody", None)
        .await
        .assert_error(404, "not_found");
    node.call("DELETE", "/api/v1/bans?kind=username", None)
        .await
        .assert_error(400, "bad_request");
    node.call("DELETE", "/api/v1/bans?kind=moon&value=x", None)
        .await
        .assert_error(400, "bad_request");
    // Nothing reached the file.
    assert!(!dir.path().join("bans.toml").exists());

    // A node without a ban list shows none and refuses edits with 409.
    let plain = AdminNode::start_with("", None, false).await;
    assert_eq!(
        plain.get_json("/api/v1/bans").await,
        json!({ "ban_file": null, "bans": [] })
    );
    plain
        .call(
            "POST",
            "/api/v1/bans",
            Some(r#"{"kind": "username", "value": "x"}"#),
        )
        .await
        .assert_error(409, "conflict");
    plain
        .call("DELETE", "/api/v1/bans?kind=username&value=x", None)
        .await
        .assert_error(409, "conflict");
}

/// Runs `starling ctl` against `node`.
async fn ctl(node: &AdminNode, json: bool, command: &[&str]) -> Result<String, String> {
    run_ctl(ctl_args(node, json, command)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_bans_adds_lists_and_lifts_bans() {
    let (node, _dir) = node_with_ban_file().await;
    let mut victim = RawV5::connect(node.mqtt_addr, "ctl-car", 0).await;
    let added = ctl(&node, false, &["bans", "add", "client-id", "ctl-car"])
        .await
        .unwrap();
    assert_eq!(added, "banned client-id ctl-car\n");
    assert_eq!(
        victim.read_until_closed().await,
        DISCONNECT_ADMINISTRATIVE_ACTION
    );
    let again = ctl(&node, false, &["bans", "add", "client-id", "ctl-car"])
        .await
        .unwrap();
    assert_eq!(again, "client-id ctl-car was already banned\n");
    ctl(&node, false, &["bans", "add", "cert-serial", "00:0A:1B"])
        .await
        .unwrap();

    let table = ctl(&node, false, &["bans", "list"]).await.unwrap();
    assert_eq!(
        table,
        "KIND         VALUE\nclient-id    ctl-car\ncert-serial  a1b\n"
    );
    let listed: Value =
        serde_json::from_str(&ctl(&node, true, &["bans", "list"]).await.unwrap()).unwrap();
    assert_eq!(
        listed["bans"][1],
        json!({ "kind": "cert-serial", "value": "a1b" })
    );

    let lifted = ctl(&node, false, &["bans", "remove", "client-id", "ctl-car"])
        .await
        .unwrap();
    assert_eq!(lifted, "lifted the ban on client-id ctl-car\n");
    eventually(PROMPTLY, "the client id ban is lifted", || async {
        connack_code(&node, "ctl-car").await == ConnectReturnCode::Success
    })
    .await;
    let error = ctl(&node, false, &["bans", "remove", "client-id", "ctl-car"])
        .await
        .unwrap_err();
    assert!(
        error.contains("404") && error.contains("not banned"),
        "{error}"
    );
    let error = ctl(&node, false, &["bans", "add", "address", "300.1.2.3"])
        .await
        .unwrap_err();
    assert!(
        error.contains("400") && error.contains("300.1.2.3"),
        "{error}"
    );
}
