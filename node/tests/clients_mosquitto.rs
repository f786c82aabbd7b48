//! Interoperability with `mosquitto_pub` and `mosquitto_sub` (Debian `mosquitto-clients`) in
//! MQTT 3.1, 3.1.1 and 5.0: the README's 30-second demo, QoS 0/1/2, retained messages, wills and
//! MQTT 5.0 properties.
//!
//! Without the clients the tests are skipped, or fail when `CI=true`.
#![allow(clippy::unwrap_used)]

mod support;

use starling_core::codec::QoS;
use support::{
    external::{require_mosquitto_clients, run_client, spawn_client, wait_client},
    RawClient, TestBroker,
};

/// Returns the connection arguments for `broker`, then `extra`.
fn client_args(broker: &TestBroker, version: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "-h".to_string(),
        "127.0.0.1".to_string(),
        "-p".to_string(),
        broker.port().to_string(),
        "-V".to_string(),
        version.to_string(),
    ];
    args.extend(extra.iter().map(|arg| (*arg).to_string()));
    args
}

async fn mosquitto_pub(broker: &TestBroker, version: &str, extra: &[&str]) {
    run_client("mosquitto_pub", &client_args(broker, version, extra))
        .await
        .assert_success("mosquitto_pub");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_demo_flow() {
    if !require_mosquitto_clients() {
        return;
    }
    // The commands of the README's 30-second demo, against an in-process broker.
    let broker = TestBroker::start().await;
    let subscriber = spawn_client(
        "mosquitto_sub",
        &client_args(
            &broker,
            "mqttv5",
            &["-t", "fleet/+/telemetry", "-v", "-C", "1"],
        ),
    );
    broker.wait_for_subscriptions(1).await;
    mosquitto_pub(
        &broker,
        "mqttv5",
        &[
            "-t",
            "fleet/car-42/telemetry",
            "-m",
            r#"{"speed":88,"battery":0.71}"#,
            "-q",
            "1",
        ],
    )
    .await;
    let output = wait_client(subscriber, "mosquitto_sub").await;
    output.assert_success("mosquitto_sub");
    assert_eq!(
        output.stdout,
        "fleet/car-42/telemetry {\"speed\":88,\"battery\":0.71}\n"
    );

    mosquitto_pub(
        &broker,
        "mqttv311",
        &["-t", "fleet/car-42/status", "-m", "online", "-r"],
    )
    .await;
    let output = run_client(
        "mosquitto_sub",
        &client_args(
            &broker,
            "mqttv311",
            &["-t", "fleet/+/status", "-v", "-C", "1"],
        ),
    )
    .await;
    output.assert_success("mosquitto_sub");
    assert_eq!(output.stdout, "fleet/car-42/status online\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_0_1_2_in_mqtt_31_311_and_5() {
    if !require_mosquitto_clients() {
        return;
    }
    let broker = TestBroker::start().await;
    for version in ["mqttv31", "mqttv311", "mqttv5"] {
        let filter = format!("mq/{version}/#");
        let subscriber = spawn_client(
            "mosquitto_sub",
            &client_args(
                &broker,
                version,
                &["-t", &filter, "-q", "2", "-C", "3", "-F", "%t %q %p"],
            ),
        );
        broker.wait_for_subscriptions(1).await;
        for qos in ["0", "1", "2"] {
            mosquitto_pub(
                &broker,
                version,
                &[
                    "-t",
                    &format!("mq/{version}/q{qos}"),
                    "-q",
                    qos,
                    "-m",
                    &format!("payload {qos}"),
                ],
            )
            .await;
        }
        let output = wait_client(subscriber, "mosquitto_sub").await;
        output.assert_success("mosquitto_sub");
        let expected: String = ["0", "1", "2"]
            .iter()
            .map(|qos| format!("mq/{version}/q{qos} {qos} payload {qos}\n"))
            .collect();
        assert_eq!(output.stdout, expected, "{version}");
        // The subscriber disconnected cleanly: its session ended (clean session).
        broker.wait_for_subscriptions(0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_set_read_and_cleared() {
    if !require_mosquitto_clients() {
        return;
    }
    let broker = TestBroker::start().await;
    for version in ["mqttv311", "mqttv5"] {
        mosquitto_pub(
            &broker,
            version,
            &["-t", "ret/t", "-m", "kept", "-r", "-q", "1"],
        )
        .await;
        let output = run_client(
            "mosquitto_sub",
            &client_args(
                &broker,
                version,
                &["-t", "ret/t", "-C", "1", "-F", "%t %r %p"],
            ),
        )
        .await;
        output.assert_success("mosquitto_sub");
        assert_eq!(output.stdout, "ret/t 1 kept\n", "{version}");

        // Clear it with an empty retained message; another retained topic marks the end.
        mosquitto_pub(&broker, version, &["-t", "ret/t", "-r", "-n"]).await;
        mosquitto_pub(&broker, version, &["-t", "ret/u", "-m", "marker", "-r"]).await;
        let output = run_client(
            "mosquitto_sub",
            &client_args(&broker, version, &["-t", "ret/#", "-C", "1", "-F", "%t %p"]),
        )
        .await;
        output.assert_success("mosquitto_sub");
        assert_eq!(
            output.stdout, "ret/u marker\n",
            "{version}: ret/t was not cleared"
        );
        mosquitto_pub(&broker, version, &["-t", "ret/u", "-r", "-n"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_of_a_killed_mosquitto_sub_is_published() {
    if !require_mosquitto_clients() {
        return;
    }
    let broker = TestBroker::start().await;
    let mut watcher = RawClient::connect_v5(broker.addr, "mosquitto-will-watcher").await;
    watcher.subscribe("mwill/+", QoS::AtLeastOnce).await;
    for version in ["mqttv311", "mqttv5"] {
        let will_topic = format!("mwill/{version}");
        let mut mortal = spawn_client(
            "mosquitto_sub",
            &client_args(
                &broker,
                version,
                &[
                    "-t",
                    "mwill/ignored",
                    "--will-topic",
                    &will_topic,
                    "--will-payload",
                    "mosquitto_sub died",
                    "--will-qos",
                    "1",
                ],
            ),
        );
        // The watcher's subscription plus the mortal one.
        broker.wait_for_subscriptions(2).await;
        mortal.kill().await.unwrap();
        let will = watcher.recv_publish_and_ack().await;
        assert_eq!(will.topic, will_topic.as_str());
        assert_eq!(will.payload, &b"mosquitto_sub died"[..]);
        // The killed client's session ended with its connection.
        broker.wait_for_subscriptions(1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_properties_between_mosquitto_clients() {
    if !require_mosquitto_clients() {
        return;
    }
    let broker = TestBroker::start().await;
    let subscriber = spawn_client(
        "mosquitto_sub",
        &client_args(
            &broker,
            "mqttv5",
            &[
                "-t",
                "mprops/t",
                "-C",
                "1",
                "-D",
                "subscribe",
                "subscription-identifier",
                "9",
                "-F",
                "%t|%p|%C|%R|%F|%S|%P",
            ],
        ),
    );
    broker.wait_for_subscriptions(1).await;
    mosquitto_pub(
        &broker,
        "mqttv5",
        &[
            "-t",
            "mprops/t",
            "-m",
            "with properties",
            "-D",
            "publish",
            "content-type",
            "text/plain",
            "-D",
            "publish",
            "response-topic",
            "mprops/reply",
            "-D",
            "publish",
            "payload-format-indicator",
            "1",
            "-D",
            "publish",
            "user-property",
            "k",
            "v1",
            "-D",
            "publish",
            "user-property",
            "k",
            "v2",
        ],
    )
    .await;
    let output = wait_client(subscriber, "mosquitto_sub").await;
    output.assert_success("mosquitto_sub");
    assert_eq!(
        output.stdout,
        "mprops/t|with properties|text/plain|mprops/reply|1|9|k:v1 k:v2\n"
    );
}
