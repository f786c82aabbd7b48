//! SASLprep (RFC 4013) in SCRAM-SHA-256: `starling passwd` derives the keys from the prepared
//! password and refuses what SASLprep prohibits, and the broker prepares the user name a client
//! sends, refusing prohibited characters with CONNACK 0x86.
#![allow(clippy::unwrap_used)]

mod support;

use starling_core::codec::ReasonCode;
use support::{
    scram::{add_user, scram_connect, try_add_user},
    TestBroker,
};

async fn scram_broker(file: &std::path::Path) -> TestBroker {
    TestBroker::start_with(&format!(
        "[mqtt]\nallow_anonymous = false\n[auth]\npassword_file = {:?}\n[auth.scram]\nenabled = true\n",
        file.display().to_string()
    ))
    .await
}

#[tokio::test]
async fn passwords_and_user_names_are_prepared_with_saslprep() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    // A no-break space (U+00A0) and ROMAN NUMERAL NINE (U+2168): SASLprep makes them " " and "IX".
    add_user(&file, "device one", "pass\u{00A0}\u{2168}");
    let broker = scram_broker(&file).await;

    // A client applies SASLprep to the password too (RFC 5802), so it proves "pass IX".
    assert_eq!(
        scram_connect(&broker, "device one", "pass IX").await.1,
        ReasonCode::Success
    );
    // The broker prepares the user name it is sent: a no-break space is a space.
    assert_eq!(
        scram_connect(&broker, "device\u{00A0}one", "pass IX")
            .await
            .1,
        ReasonCode::Success
    );
    // The keys are those of the prepared password, not of its raw bytes.
    assert_eq!(
        scram_connect(&broker, "device one", "pass\u{00A0}\u{2168}")
            .await
            .1,
        ReasonCode::BadUserNameOrPassword
    );
    // Prohibited characters in the user name (a control, a private use code point): refused
    // on the client-first message, 0x86 like any bad credential.
    for user in ["device\u{0007}one", "device\u{E000}one"] {
        assert_eq!(
            scram_connect(&broker, user, "pass IX").await.1,
            ReasonCode::BadUserNameOrPassword,
            "{user:?}"
        );
    }
    broker.shutdown().await;
}

#[test]
fn passwd_refuses_what_saslprep_prohibits_or_changes_in_a_user_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let error = try_add_user(&file, "alice", "bad\u{0007}password").unwrap_err();
    assert!(error.contains("SASLprep"), "{error}");
    let error = try_add_user(&file, "\u{2168}", "password").unwrap_err();
    assert!(error.contains("\"IX\""), "{error}");
    assert!(
        !file.exists() || !std::fs::read_to_string(&file).unwrap().contains("alice"),
        "nothing was written"
    );
    try_add_user(&file, "IX", "pass\u{00A0}word").unwrap();
}
