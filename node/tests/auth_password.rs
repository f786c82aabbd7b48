//! The password file end to end: `starling passwd` (password from stdin, argon2 hashes, mode
//! 0600, atomic rewrite), CONNECT with good and bad credentials from the raw client, rumqttc and
//! `mosquitto_pub -u/-P`, anonymous clients refused, reload on change, and the auth metrics.
#![allow(clippy::unwrap_used)]

mod support;

use std::{path::Path, time::Duration};

use bytes::Bytes;
use starling_core::codec::{ProtocolVersion, QoS, ReasonCode};
use support::{
    auth::{connect_with_credentials, passwd},
    eventually,
    external::{args, require_mosquitto_clients, run_client},
    TestBroker, PROMPTLY,
};

async fn connack(
    broker: &TestBroker,
    version: ProtocolVersion,
    user: Option<&str>,
    password: Option<&str>,
) -> ReasonCode {
    connect_with_credentials(broker, version, "pw-client", user, password)
        .await
        .1
}

async fn broker_with_users(dir: &Path) -> (TestBroker, std::path::PathBuf) {
    let file = dir.join("passwd");
    assert!(passwd(&file, &["add", "alice"], "s3cret\n").0);
    let config = format!(
        "[mqtt]\nallow_anonymous = false\n[auth]\npassword_file = \"{}\"\nreload_interval_ms = 100\n",
        file.display()
    );
    (TestBroker::start_with(&config).await, file)
}

#[tokio::test]
async fn passwd_stores_argon2_hashes_in_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    assert!(passwd(&file, &["add", "alice", "--scram"], "s3cret\n").0);
    assert!(passwd(&file, &["add", "bob"], "hunter2\n").0);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("alice:$argon2id$"), "{text}");
    assert!(text.contains("alice:$scram-sha-256$i=4096$"), "{text}");
    assert!(
        !text.contains("s3cret") && !text.contains("hunter2"),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (ok, listing) = passwd(&file, &["list"], "");
    assert!(ok);
    assert_eq!(listing, "alice\targon2id,scram-sha-256\nbob\targon2id\n");
    assert!(passwd(&file, &["remove", "bob"], "").0);
    assert!(
        !passwd(&file, &["remove", "bob"], "").0,
        "removing twice fails"
    );
    assert!(
        !passwd(&file, &["add", "eve"], "\n").0,
        "empty password refused"
    );
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[tokio::test]
async fn credentials_are_checked_and_anonymous_clients_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _file) = broker_with_users(dir.path()).await;
    let v5 = ProtocolVersion::V5;
    assert_eq!(
        connack(&broker, v5, Some("alice"), Some("s3cret")).await,
        ReasonCode::Success
    );
    assert_eq!(
        connack(&broker, v5, Some("alice"), Some("wrong")).await,
        ReasonCode::BadUserNameOrPassword
    );
    assert_eq!(
        connack(&broker, v5, Some("alice"), None).await,
        ReasonCode::BadUserNameOrPassword
    );
    assert_eq!(
        connack(&broker, v5, Some("mallory"), Some("s3cret")).await,
        ReasonCode::BadUserNameOrPassword
    );
    assert_eq!(
        connack(&broker, v5, None, None).await,
        ReasonCode::NotAuthorized
    );
    // MQTT 3.1.1 return codes 4 and 5 (decoded back to 0x86 and 0x87).
    let v311 = ProtocolVersion::V3_1_1;
    assert_eq!(
        connack(&broker, v311, Some("alice"), Some("s3cret")).await,
        ReasonCode::Success
    );
    assert_eq!(
        connack(&broker, v311, Some("alice"), Some("nope")).await,
        ReasonCode::BadUserNameOrPassword
    );
    assert_eq!(
        connack(&broker, v311, None, None).await,
        ReasonCode::NotAuthorized
    );
}

#[tokio::test]
async fn rumqttc_authenticates_with_the_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _file) = broker_with_users(dir.path()).await;
    for (password, expect_ok) in [("s3cret", true), ("wrong", false)] {
        let mut options = rumqttc::MqttOptions::new("rumqttc-pw", "127.0.0.1", broker.port());
        options.set_credentials("alice", password);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
        let outcome = tokio::time::timeout(PROMPTLY, eventloop.poll())
            .await
            .unwrap();
        match outcome {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(connack))) => {
                assert!(expect_ok, "{connack:?}");
                assert_eq!(connack.code, rumqttc::ConnectReturnCode::Success);
                client
                    .subscribe("t", rumqttc::QoS::AtLeastOnce)
                    .await
                    .unwrap();
            }
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                assert!(!expect_ok);
                assert_eq!(code, rumqttc::ConnectReturnCode::BadUserNamePassword);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn mosquitto_pub_authenticates_with_user_and_password() {
    if !require_mosquitto_clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (broker, _file) = broker_with_users(dir.path()).await;
    let port = broker.port().to_string();
    let (mut subscriber, code) = connect_with_credentials(
        &broker,
        ProtocolVersion::V5,
        "observer",
        Some("alice"),
        Some("s3cret"),
    )
    .await;
    assert_eq!(code, ReasonCode::Success);
    subscriber.subscribe("m/#", QoS::AtLeastOnce).await;
    let mosquitto_pub = |version: &'static str, password: &'static str, topic: &'static str| {
        let port = port.clone();
        async move {
            let argv = [
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                version,
                "-u",
                "alice",
                "-P",
                password,
                "-t",
                topic,
                "-m",
                version,
                "-q",
                "1",
            ];
            run_client("mosquitto_pub", &args(&argv)).await
        }
    };
    for version in ["mqttv311", "mqttv5"] {
        mosquitto_pub(version, "s3cret", "m/ok")
            .await
            .assert_success("mosquitto_pub with the right password");
        assert_eq!(
            subscriber.recv_publish_and_ack().await.payload,
            Bytes::from(version)
        );
        let refused = mosquitto_pub(version, "bad", "m/no").await;
        assert_ne!(refused.code, Some(0), "{refused:?}");
    }
    subscriber.expect_nothing(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn password_file_changes_apply_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, file) = broker_with_users(dir.path()).await;
    let v5 = ProtocolVersion::V5;
    assert_eq!(
        connack(&broker, v5, Some("bob"), Some("pw-bob")).await,
        ReasonCode::BadUserNameOrPassword
    );
    assert!(passwd(&file, &["add", "bob"], "pw-bob\n").0);
    assert!(passwd(&file, &["remove", "alice"], "").0);
    let broker_ref = &broker;
    eventually(PROMPTLY, "bob accepted after the reload", || async move {
        connack(broker_ref, v5, Some("bob"), Some("pw-bob")).await == ReasonCode::Success
    })
    .await;
    assert_eq!(
        connack(&broker, v5, Some("alice"), Some("s3cret")).await,
        ReasonCode::BadUserNameOrPassword
    );
    // A broken file leaves the previous users in force.
    std::fs::write(&file, "bob:not-a-hash\n").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        connack(&broker, v5, Some("bob"), Some("pw-bob")).await,
        ReasonCode::Success
    );
}

#[tokio::test]
async fn without_an_auth_method_a_user_name_proves_nothing() {
    // allow_anonymous = false and no [auth] method: every client is refused, user name or not.
    let broker = TestBroker::start_with("[mqtt]\nallow_anonymous = false\n").await;
    let v5 = ProtocolVersion::V5;
    assert_eq!(
        connack(&broker, v5, None, None).await,
        ReasonCode::NotAuthorized
    );
    assert_eq!(
        connack(&broker, v5, Some("anyone"), Some("x")).await,
        ReasonCode::NotAuthorized
    );
}
