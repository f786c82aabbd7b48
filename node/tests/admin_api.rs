//! The admin HTTP listener over real HTTP: probes, token, every `/api/v1` endpoint with its
//! errors, kick and session deletion seen from a real client, readiness during the drain,
//! and `starling ctl` against a running node.
#![allow(clippy::unwrap_used)]

#[path = "admin_support/node.rs"]
mod admin_support;

use std::time::Duration;

use admin_support::{
    connect_v5, ctl_args, eventually, request, run_ctl, AdminNode, RawV5,
    DISCONNECT_ADMINISTRATIVE_ACTION, PROMPTLY,
};
use rumqttc::v5::{mqttbytes::QoS, Incoming};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_and_the_openapi_document_lists_every_endpoint() {
    let node = AdminNode::start().await;
    assert_eq!(node.get_json("/healthz").await, json!({ "status": "ok" }));
    assert_eq!(node.get_json("/readyz").await, json!({ "status": "ready" }));
    let openapi = node.get_json("/api/v1/openapi.json").await;
    assert_eq!(openapi["openapi"], "3.0.3");
    let paths = openapi["paths"].as_object().unwrap();
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/api/v1/status", "get"),
        ("/api/v1/clients", "get"),
        ("/api/v1/clients/{client_id}", "get"),
        ("/api/v1/clients/{client_id}/kick", "post"),
        ("/api/v1/clients/{client_id}/subscriptions", "get"),
        ("/api/v1/sessions/{client_id}", "get"),
        ("/api/v1/sessions/{client_id}", "delete"),
        ("/api/v1/retained", "get"),
        ("/api/v1/retained", "delete"),
        ("/api/v1/publish", "post"),
        ("/api/v1/bans", "get"),
        ("/api/v1/bans", "post"),
        ("/api/v1/bans", "delete"),
        ("/api/v1/listeners", "get"),
        ("/api/v1/config", "get"),
        ("/api/v1/log-level", "get"),
        ("/api/v1/log-level", "put"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_the_bearer_token_when_one_is_set() {
    let node = AdminNode::start_with("", Some("s3cret"), true).await;
    let anonymous = request(node.admin_addr, "GET", "/api/v1/status", &[], None).await;
    anonymous.assert_error(401, "unauthorized");
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Bearer realm=\"starling\"")
    );
    let wrong = request(
        node.admin_addr,
        "GET",
        "/api/v1/clients",
        &[("authorization", "Bearer nope")],
        None,
    )
    .await;
    wrong.assert_error(401, "unauthorized");
    let kick = request(node.admin_addr, "POST", "/api/v1/clients/x/kick", &[], None).await;
    kick.assert_error(401, "unauthorized");
    // The token holder gets through; probes, metrics and the OpenAPI document need no token.
    let status = node.get_json("/api/v1/status").await;
    assert_eq!(status["ready"], true);
    for path in ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"] {
        let response = request(node.admin_addr, "GET", path, &[], None).await;
        assert_eq!(response.status, 200, "{path}: {}", response.body);
    }
    // The effective configuration never shows the token.
    let config = node.get_json("/api/v1/config").await;
    assert_eq!(config["admin"]["token"], "<redacted>");
    assert!(!config.to_string().contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_endpoints_and_methods_get_json_errors() {
    let node = AdminNode::start().await;
    node.call("GET", "/api/v1/nope", None)
        .await
        .assert_error(404, "not_found");
    node.call("GET", "/nope", None)
        .await
        .assert_error(404, "not_found");
    node.call("DELETE", "/api/v1/status", None)
        .await
        .assert_error(405, "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_listed_by_page_and_prefix_with_their_details() {
    let node = AdminNode::start().await;
    let mut clients = Vec::new();
    for client_id in ["car-1", "car-2", "car-3", "truck-1"] {
        let mut client = connect_v5(node.options_v5(client_id)).await;
        if client_id == "car-1" {
            client.subscribe("cars/+/speed", QoS::AtLeastOnce).await;
            client.subscribe("$share/g/cars/#", QoS::AtMostOnce).await;
        }
        clients.push(client);
    }
    let page = node.get_json("/api/v1/clients?prefix=car-&limit=2").await;
    let ids: Vec<&str> = page["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["car-1", "car-2"]);
    assert_eq!(page["next_after"], "car-2");
    let car_1 = &page["clients"][0];
    assert_eq!(car_1["connected"], true);
    assert_eq!(car_1["protocol_version"], "5.0");
    assert_eq!(car_1["keep_alive_secs"], 30);
    assert_eq!(car_1["subscriptions"], 2);
    assert_eq!(car_1["queued_messages"], 0);
    assert!(car_1["peer_address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(car_1["connected_at"].as_str().unwrap().ends_with('Z'));

    let rest = node
        .get_json("/api/v1/clients?prefix=car-&limit=2&after=car-2")
        .await;
    assert_eq!(rest["clients"].as_array().unwrap().len(), 1);
    assert_eq!(rest["clients"][0]["client_id"], "car-3");
    assert_eq!(rest["next_after"], Value::Null);
    let all = node.get_json("/api/v1/clients").await;
    assert_eq!(all["clients"].as_array().unwrap().len(), 4);

    let details = node.get_json("/api/v1/clients/car-1").await;
    assert_eq!(details["client_id"], "car-1");
    assert_eq!(details["will_pending"], false);
    assert_eq!(details["session_expires_in_secs"], Value::Null);
    assert_eq!(node.get_json("/api/v1/sessions/car-1").await, details);

    let subscriptions = node.get_json("/api/v1/clients/car-1/subscriptions").await;
    let subscriptions = subscriptions["subscriptions"].as_array().unwrap();
    assert_eq!(subscriptions.len(), 2);
    assert_eq!(subscriptions[0]["topic_filter"], "$share/g/cars/#");
    assert_eq!(subscriptions[0]["share_group"], "g");
    assert_eq!(subscriptions[1]["topic_filter"], "cars/+/speed");
    assert_eq!(subscriptions[1]["qos"], 1);
    assert_eq!(subscriptions[1]["no_local"], false);

    let status = node.get_json("/api/v1/status").await;
    assert_eq!(status["sessions_online"], 4);
    assert_eq!(status["subscriptions"], 2);
    assert_eq!(status["shared_subscription_groups"], 1);

    for (path, status) in [
        ("/api/v1/clients?limit=0", 400),
        ("/api/v1/clients?limit=5000", 400),
        ("/api/v1/clients?limit=many", 400),
        ("/api/v1/clients?colour=red", 400),
    ] {
        node.call("GET", path, None)
            .await
            .assert_error(status, "bad_request");
    }
    for path in [
        "/api/v1/clients/nobody",
        "/api/v1/clients/nobody/subscriptions",
        "/api/v1/sessions/nobody",
    ] {
        node.call("GET", path, None)
            .await
            .assert_error(404, "not_found");
    }
    // A client id with a slash and a space travels percent-encoded in one path segment.
    let _odd = connect_v5(node.options_v5("fleet/a b")).await;
    let odd = node.get_json("/api/v1/clients/fleet%2Fa%20b").await;
    assert_eq!(odd["client_id"], "fleet/a b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_disconnects_the_client_with_administrative_action() {
    let node = AdminNode::start().await;
    let mut client = RawV5::connect(node.mqtt_addr, "kick-me", 600).await;
    let answer = node
        .call("POST", "/api/v1/clients/kick-me/kick", None)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json(),
        json!({ "client_id": "kick-me", "kicked": true })
    );
    // Exactly DISCONNECT 0x98, then the broker closes the connection.
    assert_eq!(
        client.read_until_closed().await,
        DISCONNECT_ADMINISTRATIVE_ACTION
    );
    // The session outlives the connection (expiry 600 s).
    eventually(PROMPTLY, "the session to go offline", || async {
        node.get_json("/api/v1/clients/kick-me").await["connected"] == false
    })
    .await;
    let details = node.get_json("/api/v1/clients/kick-me").await;
    let expires_in = details["session_expires_in_secs"].as_u64().unwrap();
    assert!((590..=600).contains(&expires_in), "{details}");
    node.call("POST", "/api/v1/clients/kick-me/kick", None)
        .await
        .assert_error(409, "conflict");
    node.call("POST", "/api/v1/clients/nobody/kick", None)
        .await
        .assert_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_deleted_offline_or_after_a_kick() {
    let node = AdminNode::start().await;
    let mut options = node.options_v5("keeper");
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(3600));
    let mut client = connect_v5(options).await;
    client.subscribe("keep/#", QoS::AtLeastOnce).await;

    // Connected: refused unless kick=true.
    node.call("DELETE", "/api/v1/sessions/keeper", None)
        .await
        .assert_error(409, "conflict");
    node.call("DELETE", "/api/v1/sessions/keeper?kick=maybe", None)
        .await
        .assert_error(400, "bad_request");
    let deleted = node
        .call("DELETE", "/api/v1/sessions/keeper?kick=true", None)
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(
        deleted.json(),
        json!({ "client_id": "keeper", "deleted": true, "kicked": true })
    );
    client.expect_closed().await;
    node.call("GET", "/api/v1/sessions/keeper", None)
        .await
        .assert_error(404, "not_found");
    // Its subscription went with it.
    assert_eq!(node.get_json("/api/v1/status").await["subscriptions"], 0);

    // Offline: deleted at once; a second delete finds nothing.
    let mut options = node.options_v5("sleeper");
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(3600));
    let client = connect_v5(options).await;
    client.client.disconnect().await.unwrap();
    eventually(PROMPTLY, "the session to go offline", || async {
        node.get_json("/api/v1/sessions/sleeper").await["connected"] == false
    })
    .await;
    let deleted = node.call("DELETE", "/api/v1/sessions/sleeper", None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(deleted.json()["kicked"], false);
    node.call("DELETE", "/api/v1/sessions/sleeper", None)
        .await
        .assert_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_subscribers_and_refuses_bad_input() {
    let node = AdminNode::start().await;
    let mut subscriber = connect_v5(node.options_v5("listener")).await;
    subscriber.subscribe("alerts/+", QoS::AtLeastOnce).await;
    let answer = node
        .call(
            "POST",
            "/api/v1/publish",
            Some(r#"{"topic": "alerts/fire", "payload": "evacuate", "qos": 1, "content_type": "text/plain", "user_properties": [{"key": "k", "value": "v"}]}"#),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json(), json!({ "queued_for": 1 }));
    let publish = subscriber
        .next(|packet| match packet {
            Incoming::Publish(publish) => Some(publish),
            _ => None,
        })
        .await;
    assert_eq!(&publish.topic[..], b"alerts/fire");
    assert_eq!(&publish.payload[..], b"evacuate");
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    let properties = publish.properties.unwrap();
    assert_eq!(properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        properties.user_properties,
        vec![("k".to_string(), "v".to_string())]
    );
    // Binary payloads travel as base64.
    let answer = node
        .call(
            "POST",
            "/api/v1/publish",
            Some(r#"{"topic": "alerts/bin", "payload_base64": "AAEC/w=="}"#),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let publish = subscriber
        .next(|packet| match packet {
            Incoming::Publish(publish) => Some(publish),
            _ => None,
        })
        .await;
    assert_eq!(&publish.payload[..], [0, 1, 2, 255]);

    for (body, status) in [
        ("{not json", 400),
        (r#"{"payload": "no topic"}"#, 422),
        (r#"{"topic": "a", "colour": "red"}"#, 422),
        (r#"{"topic": "a", "qos": 3}"#, 400),
        (r#"{"topic": "a/#"}"#, 400),
        (r#"{"topic": ""}"#, 400),
        (
            r#"{"topic": "a", "payload": "x", "payload_base64": "eA=="}"#,
            400,
        ),
        (r#"{"topic": "a", "payload_base64": "***"}"#, 400),
        (r#"{"topic": "a", "response_topic": "r/+"}"#, 400),
    ] {
        let answer = node.call("POST", "/api/v1/publish", Some(body)).await;
        answer.assert_error(status, "bad_request");
    }
    let wrong_type = request(
        node.admin_addr,
        "POST",
        "/api/v1/publish",
        &[("content-type", "text/plain")],
        Some(r#"{"topic": "a"}"#),
    )
    .await;
    wrong_type.assert_error(415, "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_listed_and_deleted_by_topic_or_filter() {
    let node = AdminNode::start().await;
    for (topic, payload) in [("fleet/a", "1"), ("fleet/b", "2"), ("depot/x", "3")] {
        let body = json!({ "topic": topic, "payload": payload, "retain": true }).to_string();
        let answer = node.call("POST", "/api/v1/publish", Some(&body)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let all = node.get_json("/api/v1/retained").await;
    let topics: Vec<&str> = all["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["depot/x", "fleet/a", "fleet/b"]);
    assert_eq!(all["truncated"], false);
    assert_eq!(all["messages"][1]["payload"], "1");
    assert_eq!(all["messages"][1]["payload_base64"], "MQ==");

    let fleet = node
        .get_json("/api/v1/retained?filter=fleet%2F%2B&limit=1")
        .await;
    assert_eq!(fleet["messages"].as_array().unwrap().len(), 1);
    assert_eq!(fleet["truncated"], true);

    let cleared = node
        .call("DELETE", "/api/v1/retained?topic=fleet%2Fa", None)
        .await;
    assert_eq!(cleared.json(), json!({ "cleared": 1 }));
    let cleared = node
        .call("DELETE", "/api/v1/retained?filter=%23", None)
        .await;
    assert_eq!(cleared.json(), json!({ "cleared": 2 }));
    assert_eq!(
        node.get_json("/api/v1/retained").await["messages"],
        json!([])
    );

    for (method, path) in [
        ("DELETE", "/api/v1/retained"),
        ("DELETE", "/api/v1/retained?topic=a&filter=b"),
        ("DELETE", "/api/v1/retained?topic=a%2F%2B"),
        ("DELETE", "/api/v1/retained?filter=a%2F%23%2Fb"),
        ("GET", "/api/v1/retained?filter=a%2F%23%2Fb"),
        ("GET", "/api/v1/retained?filter=%24share%2Fg%2Fa"),
        ("GET", "/api/v1/retained?limit=0"),
    ] {
        node.call(method, path, None)
            .await
            .assert_error(400, "bad_request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_config_and_log_level_are_served() {
    let node = AdminNode::start().await;
    let listeners = node.get_json("/api/v1/listeners").await;
    assert_eq!(
        listeners["listeners"],
        json!([
            { "name": "tcp", "protocol": "tcp", "address": node.mqtt_addr.to_string() },
            { "name": "admin", "protocol": "http", "address": node.admin_addr.to_string() },
        ])
    );
    let config = node.get_json("/api/v1/config").await;
    assert_eq!(config["mqtt"]["receive_maximum"], 1024);
    assert_eq!(config["admin"]["token"], "");
    assert_eq!(config["listeners"]["tcp"]["bind"], "127.0.0.1:0");

    assert_eq!(
        node.get_json("/api/v1/log-level").await,
        json!({ "level": "info" })
    );
    let changed = node
        .call(
            "PUT",
            "/api/v1/log-level",
            Some(r#"{"level": "info,starling_core=debug"}"#),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(
        node.get_json("/api/v1/log-level").await,
        json!({ "level": "info,starling_core=debug" })
    );
    node.call(
        "PUT",
        "/api/v1/log-level",
        Some(r#"{"level": "starling_core=loud"}"#),
    )
    .await
    .assert_error(400, "bad_request");
    node.call("PUT", "/api/v1/log-level", Some(r#"{"lvl": "debug"}"#))
        .await
        .assert_error(422, "bad_request");

    let without_control = AdminNode::start_with("", None, false).await;
    without_control
        .call("GET", "/api/v1/log-level", None)
        .await
        .assert_error(501, "not_implemented");
}

/// Sends an MQTT 3.1.1 CONNECT on a raw socket and reads the CONNACK; the socket then stays
/// open without reading, so the node's drain waits on it.
async fn raw_connect(addr: std::net::SocketAddr, client_id: &str) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut packet = vec![0x10, (12 + client_id.len()) as u8];
    packet.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60]);
    packet.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    packet.extend_from_slice(client_id.as_bytes());
    stream.write_all(&packet).await.unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_false_first_while_the_node_drains() {
    let mut node = AdminNode::start().await;
    let admin_addr = node.admin_addr;
    // A client that never closes its side keeps the drain busy (up to the 2 s linger).
    let _stubborn = raw_connect(node.mqtt_addr, "stubborn").await;
    let running = node.node.take().unwrap();
    let readiness = running.readiness.clone();
    assert!(readiness.is_ready());
    let shutdown = tokio::spawn(running.shutdown());
    eventually(PROMPTLY, "/readyz to answer 503", || async {
        request(admin_addr, "GET", "/readyz", &[], None)
            .await
            .status
            == 503
    })
    .await;
    assert!(!shutdown.is_finished(), "the drain should still be running");
    let ready = request(admin_addr, "GET", "/readyz", &[], None).await;
    assert_eq!(ready.json(), json!({ "status": "not_ready" }));
    // Still alive: liveness must not restart a draining pod.
    assert_eq!(
        request(admin_addr, "GET", "/healthz", &[], None)
            .await
            .status,
        200
    );
    tokio::time::timeout(Duration::from_secs(15), shutdown)
        .await
        .unwrap()
        .unwrap();
    assert!(!readiness.is_ready());
    assert!(
        tokio::net::TcpStream::connect(admin_addr).await.is_err(),
        "the admin listener stops last"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_prints_tables_and_json_and_reports_api_errors() {
    let node = AdminNode::start_with("", Some("t0ken"), true).await;
    let mut client = connect_v5(node.options_v5("ctl-car")).await;
    client.subscribe("ctl/#", QoS::AtMostOnce).await;

    let table = run_ctl(ctl_args(&node, false, &["clients", "list"]))
        .await
        .unwrap();
    let mut lines = table.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("CLIENT ID  CONNECTED  PROTOCOL"));
    let row = lines.next().unwrap();
    assert!(row.starts_with("ctl-car    true       5.0"), "{table}");

    let json_out = run_ctl(ctl_args(&node, true, &["clients", "show", "ctl-car"]))
        .await
        .unwrap();
    let details: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(details["subscriptions"], 1);

    let subscriptions = run_ctl(ctl_args(
        &node,
        false,
        &["clients", "subscriptions", "ctl-car"],
    ))
    .await
    .unwrap();
    assert!(subscriptions.contains("ctl/#"), "{subscriptions}");

    let published = run_ctl(ctl_args(
        &node,
        false,
        &["publish", "ctl/x", "hello", "--retain", "--qos", "1"],
    ))
    .await
    .unwrap();
    assert_eq!(published, "published; queued for 1 sessions\n");
    let retained = run_ctl(ctl_args(&node, false, &["retained", "list"]))
        .await
        .unwrap();
    assert!(
        retained.contains("ctl/x") && retained.contains("hello"),
        "{retained}"
    );
    let cleared = run_ctl(ctl_args(
        &node,
        false,
        &["retained", "delete", "--topic", "ctl/x"],
    ))
    .await
    .unwrap();
    assert_eq!(cleared, "cleared 1 retained messages\n");

    let status = run_ctl(ctl_args(&node, false, &["status"])).await.unwrap();
    assert!(status.contains("sessions_online"), "{status}");
    let listeners = run_ctl(ctl_args(&node, false, &["listeners"]))
        .await
        .unwrap();
    assert!(
        listeners.contains(&node.mqtt_addr.to_string()),
        "{listeners}"
    );
    let level = run_ctl(ctl_args(&node, false, &["log-level", "debug"]))
        .await
        .unwrap();
    assert_eq!(level, "debug\n");

    let kicked = run_ctl(ctl_args(&node, false, &["clients", "kick", "ctl-car"]))
        .await
        .unwrap();
    assert_eq!(kicked, "kicked ctl-car\n");
    client.expect_closed().await;

    let error = run_ctl(ctl_args(&node, false, &["clients", "show", "ghost"]))
        .await
        .unwrap_err();
    assert!(error.contains("404") && error.contains("ghost"), "{error}");
    let mut no_token = ctl_args(&node, false, &["status"]);
    no_token.token = None;
    let error = run_ctl(no_token).await.unwrap_err();
    assert!(error.contains("401"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_ctl_against_a_node() {
    let node = AdminNode::start().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["ctl", "--json", "status"])
        .env("STARLING_ADMIN_URL", format!("http://{}", node.admin_addr))
        .env_remove("STARLING_ADMIN_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["ready"], true);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["ctl", "clients", "kick", "ghost"])
        .env("STARLING_ADMIN_URL", format!("http://{}", node.admin_addr))
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("404"));
}
