//! The argon2 verification cache: a reconnect with the right password skips argon2, a wrong
//! password after a cached success still fails (and still runs argon2), and a changed password
//! file forgets the old password at once. Alone in its binary so the process-wide counters it
//! reads move only by its own CONNECTs.
#![allow(clippy::unwrap_used)]

mod support;

use starling_core::codec::{ProtocolVersion, ReasonCode};
use support::{
    auth::{connect_with_credentials, set_password},
    eventually, TestBroker, PROMPTLY,
};

async fn connect(broker: &TestBroker, user: &str, password: &str) -> ReasonCode {
    let client_id = format!("cache-{user}");
    connect_with_credentials(
        broker,
        ProtocolVersion::V5,
        &client_id,
        Some(user),
        Some(password),
    )
    .await
    .1
}

async fn checks(broker: &TestBroker, cached: &str) -> f64 {
    broker
        .scrape()
        .await
        .sum("starling_auth_password_checks_total", &[("cached", cached)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_successes_skip_argon2_but_never_admit_a_wrong_or_old_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    set_password(&file, "meter", "first-pass");
    let broker = TestBroker::start_with(&format!(
        "[mqtt]\nallow_anonymous = false\n[auth]\npassword_file = {:?}\nreload_interval_ms = 50\n",
        file.display().to_string()
    ))
    .await;
    let (argon2_before, cached_before) = (
        checks(&broker, "false").await,
        checks(&broker, "true").await,
    );

    // One argon2 run, then three reconnects from the cache.
    for _ in 0..4 {
        assert_eq!(
            connect(&broker, "meter", "first-pass").await,
            ReasonCode::Success
        );
    }
    assert_eq!(checks(&broker, "false").await - argon2_before, 1.0);
    assert_eq!(checks(&broker, "true").await - cached_before, 3.0);

    // A wrong password after the cached success: argon2 runs and refuses.
    assert_eq!(
        connect(&broker, "meter", "first-pass-not").await,
        ReasonCode::BadUserNameOrPassword
    );
    assert_eq!(checks(&broker, "false").await - argon2_before, 2.0);
    assert_eq!(checks(&broker, "true").await - cached_before, 3.0);

    // The password changes in the file: once reloaded, the cached old password no longer works.
    set_password(&file, "meter", "second-pass");
    eventually(PROMPTLY, "the new password is in force", || {
        let broker = &broker;
        async move { connect(broker, "meter", "second-pass").await == ReasonCode::Success }
    })
    .await;
    assert_eq!(
        connect(&broker, "meter", "first-pass").await,
        ReasonCode::BadUserNameOrPassword
    );
    let cached_after_reload = checks(&broker, "true").await;
    assert_eq!(
        connect(&broker, "meter", "second-pass").await,
        ReasonCode::Success
    );
    assert_eq!(
        checks(&broker, "true").await - cached_after_reload,
        1.0,
        "the new password is cached in turn"
    );
    broker.shutdown().await;
}
