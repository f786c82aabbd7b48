//! The HTTP auth hook over HTTPS with a private CA: a real HTTPS server (tokio-rustls, a
//! certificate of a CA generated at test time) answers the hook; a node trusting that CA through
//! `auth.http.ca_file` gets its decisions, a node without it cannot verify the server and
//! refuses clients with CONNACK 0x88 (server unavailable).
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use starling_core::codec::{ProtocolVersion, ReasonCode};
use support::{auth::connect_with_credentials, pki::TestPki, TestBroker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads one HTTP/1.1 request (headers and a `content-length` body); returns the body.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |value| value.trim().parse().unwrap());
            while buffer.len() < end + 4 + length {
                let read = stream.read(&mut chunk).await.ok()?;
                if read == 0 {
                    return None;
                }
                buffer.extend_from_slice(&chunk[..read]);
            }
            return Some(String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).into());
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// An HTTPS hook serving the PKI's server certificate: `alice`/`good` allowed, everyone else
/// denied. Counts the requests that got through the TLS handshake.
async fn https_hook(pki: &TestPki, requests: Arc<AtomicUsize>) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let requests = requests.clone();
            tokio::spawn(async move {
                // A client that does not trust the certificate aborts the handshake here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                while let Some(body) = read_request(&mut tls).await {
                    requests.fetch_add(1, Ordering::SeqCst);
                    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
                    let allow = body["username"] == "alice" && body["password"] == "good";
                    let answer = if allow {
                        r#"{"result":"allow"}"#
                    } else {
                        r#"{"result":"deny"}"#
                    };
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if tls.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn connect(broker: &TestBroker, client_id: &str, password: &str) -> ReasonCode {
    connect_with_credentials(
        broker,
        ProtocolVersion::V5,
        client_id,
        Some("alice"),
        Some(password),
    )
    .await
    .1
}

fn hook_config(addr: SocketAddr, ca_file: Option<&std::path::Path>) -> String {
    let mut config = format!(
        "[mqtt]\nallow_anonymous = false\n[auth.http]\nurl = \"https://127.0.0.1:{}/auth\"\ntimeout_ms = 2000\ncache_ttl_secs = 0\n",
        addr.port()
    );
    if let Some(ca_file) = ca_file {
        config.push_str(&format!("ca_file = {:?}\n", ca_file.display().to_string()));
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_hook_with_a_private_ca_needs_ca_file() {
    let pki = TestPki::new();
    let requests = Arc::new(AtomicUsize::new(0));
    let addr = https_hook(&pki, requests.clone()).await;

    // Without the CA the server's certificate does not verify: the hook is unavailable.
    let untrusting = TestBroker::start_with(&hook_config(addr, None)).await;
    assert_eq!(
        connect(&untrusting, "no-ca", "good").await,
        ReasonCode::ServerUnavailable
    );
    assert_eq!(requests.load(Ordering::SeqCst), 0, "no request got through");
    untrusting.shutdown().await;

    // With the CA bundle the hook decides, allow and deny alike.
    let trusting = TestBroker::start_with(&hook_config(addr, Some(&pki.path("ca.pem")))).await;
    assert_eq!(
        connect(&trusting, "with-ca", "good").await,
        ReasonCode::Success
    );
    assert_eq!(
        connect(&trusting, "with-ca-2", "bad").await,
        ReasonCode::BadUserNameOrPassword
    );
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    trusting.shutdown().await;
}

#[test]
fn ca_file_needs_an_https_url_and_a_certificate() {
    let env = std::collections::HashMap::new();
    let toml = "version = \"1\"\n[auth.http]\nurl = \"http://127.0.0.1:9/auth\"\nca_file = \"/tmp/ca.pem\"\n";
    let Err(error) = starling_node::load_node_config(toml, "starling.toml", &env) else {
        panic!("ca_file with an http url is refused");
    };
    let error = error.to_string();
    assert!(
        error.contains("auth.http.ca_file") && error.contains("line 4"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_without_certificates_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let toml = format!(
        "version = \"1\"\n{}",
        hook_config("127.0.0.1:9".parse().unwrap(), Some(&empty))
    );
    let env = std::collections::HashMap::from([
        ("STARLING_LISTEN".to_string(), "127.0.0.1:0".to_string()),
        ("STARLING_ADMIN_BIND".to_string(), "127.0.0.1:0".to_string()),
        (
            "STARLING_DATA_DIR".to_string(),
            dir.path().join("data").display().to_string(),
        ),
    ]);
    let config = starling_node::load_node_config(&toml, "starling.toml", &env).unwrap();
    let Err(error) = starling_node::start_node(config).await else {
        panic!("a CA file without certificates is refused at start");
    };
    let error = format!("{error:#}");
    assert!(
        error.contains("holds no certificate") && error.contains("empty.pem"),
        "{error}"
    );
}
