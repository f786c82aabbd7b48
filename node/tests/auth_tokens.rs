//! JWTs in the password field (HS256 secret file, ES256 from a JWKS file), their topic claims
//! as the client's ACL, DISCONNECT 0xA0 when a token expires, and the HTTP hook against a real
//! HTTP server (axum) with its decision cache and timeout.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::{
    hmac,
    signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING},
};
use serde_json::{json, Value};
use starling_core::codec::{ProtocolVersion, QoS, ReasonCode};
use support::{auth::connect_with_credentials, RawClient, TestBroker};

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign_hs256(secret: &[u8], claims: &Value) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, secret),
        signed.as_bytes(),
    );
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

async fn connect(
    broker: &TestBroker,
    client_id: &str,
    user: Option<&str>,
    password: &str,
) -> (RawClient, ReasonCode) {
    connect_with_credentials(broker, ProtocolVersion::V5, client_id, user, Some(password)).await
}

#[tokio::test]
async fn hs256_tokens_authenticate_carry_an_acl_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let secret = b"0123456789abcdef0123456789abcdef";
    let secret_file = dir.path().join("jwt.secret");
    std::fs::write(&secret_file, secret).unwrap();
    let config = format!(
        "[mqtt]\nallow_anonymous = false\n[auth.jwt]\nhs256_secret_file = \"{}\"\nissuer = \"fleet\"\nleeway_secs = 0\n",
        secret_file.display()
    );
    let broker = TestBroker::start_with(&config).await;
    let claims = |exp: u64| {
        json!({"sub": "car-7", "iss": "fleet", "exp": exp,
               "mqtt_publish": ["cars/%u/#"], "mqtt_subscribe": ["cars/%u/cmd"]})
    };
    let token = sign_hs256(secret, &claims(now_secs() + 3600));
    let (mut client, code) = connect(&broker, "c7", Some("car-7"), &token).await;
    assert_eq!(code, ReasonCode::Success);
    assert_eq!(
        client.publish("cars/car-7/t", QoS::AtLeastOnce, b"x").await,
        ReasonCode::NoMatchingSubscribers
    );
    assert_eq!(
        client.publish("cars/car-8/t", QoS::AtLeastOnce, b"x").await,
        ReasonCode::NotAuthorized
    );
    let codes = client
        .subscribe_with(
            &[
                ("cars/car-7/cmd", support::raw::options(QoS::AtMostOnce)),
                ("cars/car-8/#", support::raw::options(QoS::AtMostOnce)),
            ],
            None,
        )
        .await;
    assert_eq!(codes, vec![ReasonCode::Success, ReasonCode::NotAuthorized]);
    // Wrong user, wrong key, expired: 0x86.
    assert_eq!(
        connect(&broker, "c8", Some("car-8"), &token).await.1,
        ReasonCode::BadUserNameOrPassword
    );
    let forged = sign_hs256(
        b"another-secret-another-secret-xx",
        &claims(now_secs() + 3600),
    );
    assert_eq!(
        connect(&broker, "c9", None, &forged).await.1,
        ReasonCode::BadUserNameOrPassword
    );
    let expired = sign_hs256(secret, &claims(now_secs() - 10));
    assert_eq!(
        connect(&broker, "c10", None, &expired).await.1,
        ReasonCode::BadUserNameOrPassword
    );
    // A token that expires in 2 s: DISCONNECT 0xA0 (maximum connect time) then.
    let short = sign_hs256(secret, &claims(now_secs() + 2));
    let (mut short_lived, code) = connect(&broker, "c11", None, &short).await;
    assert_eq!(code, ReasonCode::Success);
    let started = std::time::Instant::now();
    match short_lived.next_event(Duration::from_secs(5)).await {
        support::Event::Packet(starling_core::codec::Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason_code, ReasonCode::MaximumConnectTime);
        }
        other => panic!("expected DISCONNECT 0xA0, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
    // The long-lived client is still served.
    assert_eq!(
        client.publish("cars/car-7/t", QoS::AtLeastOnce, b"x").await,
        ReasonCode::NoMatchingSubscribers
    );
}

#[tokio::test]
async fn es256_tokens_verify_against_a_jwks_file() {
    let dir = tempfile::tempdir().unwrap();
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "fleet-1",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])}]});
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    let config = format!(
        "[mqtt]\nallow_anonymous = false\n[auth.jwt]\njwks_file = \"{}\"\naudience = \"mqtt\"\n",
        jwks_file.display()
    );
    let broker = TestBroker::start_with(&config).await;
    let sign = |claims: Value| {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"fleet-1"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = pair.sign(&rng, signed.as_bytes()).unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    };
    let good = sign(json!({"sub": "dev", "aud": ["mqtt"], "exp": now_secs() + 600}));
    assert_eq!(
        connect(&broker, "e1", None, &good).await.1,
        ReasonCode::Success
    );
    let wrong_aud = sign(json!({"sub": "dev", "aud": "web", "exp": now_secs() + 600}));
    assert_eq!(
        connect(&broker, "e2", None, &wrong_aud).await.1,
        ReasonCode::BadUserNameOrPassword
    );
    // Tampered claims break the signature.
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[1] = URL_SAFE_NO_PAD
        .encode(json!({"sub": "admin", "aud": ["mqtt"], "exp": now_secs() + 600}).to_string());
    assert_eq!(
        connect(&broker, "e3", None, &parts.join(".")).await.1,
        ReasonCode::BadUserNameOrPassword
    );
}

/// A hook server: `alice`/`good` allowed with topic lists, `slow` sleeps past the timeout,
/// everything else denied; counts requests.
async fn hook_server(requests: Arc<AtomicUsize>) -> std::net::SocketAddr {
    use axum::{routing::post, Json, Router};
    let app = Router::new().route(
        "/auth",
        post(move |Json(body): Json<Value>| {
            let requests = requests.clone();
            async move {
                requests.fetch_add(1, Ordering::SeqCst);
                let user = body["username"].as_str().unwrap_or_default().to_string();
                if user == "slow" {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                let ok = user == "alice" && body["password"] == "good" && body["listener"] == "tcp";
                Json(if ok {
                    json!({"result": "allow", "publish": ["fleet/%c/#"], "subscribe": ["fleet/%c/#"]})
                } else {
                    json!({"result": "deny"})
                })
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn http_hook_decides_caches_and_times_out() {
    let requests = Arc::new(AtomicUsize::new(0));
    let addr = hook_server(requests.clone()).await;
    let config = format!(
        "[mqtt]\nallow_anonymous = false\n[auth.http]\nurl = \"http://{addr}/auth\"\ntimeout_ms = 500\ncache_ttl_secs = 60\n"
    );
    let broker = TestBroker::start_with(&config).await;
    let (mut client, code) = connect(&broker, "h1", Some("alice"), "good").await;
    assert_eq!(code, ReasonCode::Success);
    assert_eq!(
        client.publish("fleet/h1/x", QoS::AtLeastOnce, b"x").await,
        ReasonCode::NoMatchingSubscribers
    );
    assert_eq!(
        client.publish("fleet/h2/x", QoS::AtLeastOnce, b"x").await,
        ReasonCode::NotAuthorized
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    assert_eq!(
        connect(&broker, "h1", Some("alice"), "bad").await.1,
        ReasonCode::BadUserNameOrPassword
    );
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    // The same credentials again: answered from the cache, allow and deny alike.
    assert_eq!(
        connect(&broker, "h1", Some("alice"), "good").await.1,
        ReasonCode::Success
    );
    assert_eq!(
        connect(&broker, "h1", Some("alice"), "bad").await.1,
        ReasonCode::BadUserNameOrPassword
    );
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    // A hook slower than the timeout: 0x88 server unavailable, promptly.
    let started = std::time::Instant::now();
    assert_eq!(
        connect(&broker, "h3", Some("slow"), "x").await.1,
        ReasonCode::ServerUnavailable
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unreachable_http_hook_refuses_with_0x88() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config =
        format!("[mqtt]\nallow_anonymous = false\n[auth.http]\nurl = \"http://{unused}/auth\"\n");
    let broker = TestBroker::start_with(&config).await;
    assert_eq!(
        connect(&broker, "u1", Some("alice"), "good").await.1,
        ReasonCode::ServerUnavailable
    );
}
