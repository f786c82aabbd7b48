//! Interoperability with Eclipse Paho's Python client (paho-mqtt 2.x) in MQTT 3.1.1 and 5.0.
//!
//! Each scenario is a script in `node/tests/python/` that prints JSON for the test to check.
//! Without python3 and paho-mqtt the tests are skipped, or fail when `CI=true`.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use starling_core::codec::QoS;
use support::{
    external::{python_script, require_paho, run_python, spawn_client},
    RawClient, TestBroker,
};
use tokio::io::{AsyncBufReadExt, BufReader};

async fn run_scenario(script: &str, broker: &TestBroker, version: &str) -> Value {
    let output = run_python(
        script,
        &[
            "--port".to_string(),
            broker.port().to_string(),
            "--version".to_string(),
            version.to_string(),
        ],
    )
    .await;
    output.assert_success(script);
    serde_json::from_str(output.stdout.trim())
        .unwrap_or_else(|error| panic!("{script} printed no JSON ({error}): {output:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_qos_0_1_2_and_retained_in_both_versions() {
    if !require_paho() {
        return;
    }
    let broker = TestBroker::start().await;
    for version in ["311", "5"] {
        let result = run_scenario("paho_pubsub.py", &broker, version).await;
        let prefix = format!("paho{version}");
        let live: Vec<(String, String, u64)> = result["live"]
            .as_array()
            .unwrap()
            .iter()
            .map(|message| {
                (
                    message["topic"].as_str().unwrap().to_string(),
                    message["payload"].as_str().unwrap().to_string(),
                    message["qos"].as_u64().unwrap(),
                )
            })
            .collect();
        let expected: Vec<(String, String, u64)> = (0..3)
            .map(|qos| (format!("{prefix}/q{qos}"), format!("payload {qos}"), qos))
            .collect();
        assert_eq!(live, expected, "MQTT {version}");
        let retained = &result["retained"][0];
        assert_eq!(
            retained["topic"],
            format!("{prefix}/retained"),
            "MQTT {version}"
        );
        assert_eq!(retained["payload"], "kept");
        assert_eq!(retained["qos"], 1);
        assert_eq!(retained["retain"], true, "MQTT {version}: {retained}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_v5_properties_and_subscription_identifier_are_forwarded() {
    if !require_paho() {
        return;
    }
    let broker = TestBroker::start().await;
    let received = run_scenario("paho_properties.py", &broker, "5").await;
    assert_eq!(received["topic"], "pahoprops/t");
    assert_eq!(received["payload"], r#"{"x": 1}"#);
    let properties = &received["properties"];
    assert_eq!(properties["PayloadFormatIndicator"], 1);
    assert_eq!(properties["ContentType"], "application/json");
    assert_eq!(properties["ResponseTopic"], "pahoprops/reply");
    assert_eq!(
        properties["CorrelationData"],
        hex(b"\x01\x02request-7"),
        "correlation data"
    );
    assert_eq!(
        properties["UserProperty"],
        json!([["b", "1"], ["a", "2"], ["b", "3"]]),
        "user properties in order"
    );
    assert_eq!(properties["SubscriptionIdentifier"], json!([42]));
    let expiry = properties["MessageExpiryInterval"].as_u64().unwrap();
    assert!((299..=300).contains(&expiry), "expiry {expiry}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_persistent_session_gets_messages_queued_while_offline() {
    if !require_paho() {
        return;
    }
    let broker = TestBroker::start().await;
    for version in ["311", "5"] {
        let result = run_scenario("paho_session.py", &broker, version).await;
        assert_eq!(result["first_present"], false, "MQTT {version}: {result}");
        assert_eq!(result["second_present"], true, "MQTT {version}: {result}");
        let payloads: Vec<&str> = result["received"]
            .as_array()
            .unwrap()
            .iter()
            .map(|message| message["payload"].as_str().unwrap())
            .collect();
        assert_eq!(
            payloads,
            ["queued 0", "queued 1", "queued 2"],
            "MQTT {version}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_will_is_published_when_the_client_process_is_killed() {
    if !require_paho() {
        return;
    }
    let broker = TestBroker::start().await;
    for version in ["311", "5"] {
        let topic = format!("pahowill/{version}");
        let mut watcher = RawClient::connect_v5(broker.addr, "paho-will-watcher").await;
        watcher.subscribe(&topic, QoS::AtLeastOnce).await;
        let mut child = spawn_client(
            "python3",
            &[
                python_script("paho_will_client.py").display().to_string(),
                "--port".to_string(),
                broker.port().to_string(),
                "--version".to_string(),
                version.to_string(),
                "--topic".to_string(),
                topic.clone(),
            ],
        );
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(support::PROMPTLY, lines.next_line())
            .await
            .expect("paho client connected in time")
            .unwrap();
        assert_eq!(line.as_deref(), Some("connected"));
        child.kill().await.unwrap();

        let will = watcher.recv_publish_and_ack().await;
        assert_eq!(will.topic, topic.as_str());
        assert_eq!(will.payload, &b"paho died"[..]);
        if version == "5" {
            assert_eq!(
                will.properties.user_properties,
                vec![("reason".into(), "killed".into())]
            );
        }
        watcher.disconnect().await;
    }
}
