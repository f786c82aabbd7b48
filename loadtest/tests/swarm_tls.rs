//! swarm over TLS with a client certificate: a test TLS terminator (tokio-rustls, client
//! certificates required) in front of an in-process Starling node.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde_json::Value;
use starling_node::{load_node_config, start_node, RunningNode};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio_rustls::TlsAcceptor;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

async fn start_broker_for_test() -> (RunningNode, tempfile::TempDir) {
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

/// Terminates TLS (client certificate signed by the test CA required) and forwards the bytes
/// to `upstream`.
async fn start_tls_terminator_for_test(upstream: SocketAddr) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(fixture("ca.pem")).unwrap())
        .unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let certificates = CertificateDer::pem_file_iter(fixture("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

async fn run_swarm(args: &[&str]) -> std::process::Output {
    tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(env!("CARGO_BIN_EXE_swarm"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("swarm finishes within 60 s")
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_over_mutual_tls_lose_nothing() {
    let (node, _data_dir) = start_broker_for_test().await;
    let tls_addr = start_tls_terminator_for_test(node.mqtt_addr)
        .await
        .to_string();
    let (ca, cert, key) = (
        fixture("ca.pem"),
        fixture("client.pem"),
        fixture("client.key"),
    );
    let output = run_swarm(&[
        "pairs",
        "--pairs",
        "5",
        "--broker",
        &tls_addr,
        "--total-rate",
        "500",
        "--duration",
        "1",
        "--settle-ms",
        "100",
        "--tls-ca",
        &ca,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--quiet",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "swarm failed: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["connections"]["established"], 10, "{report}");
    let sent = report["messages"]["sent"].as_u64().unwrap();
    assert!(sent > 0, "{report}");
    assert_eq!(
        report["messages"]["unique"].as_u64(),
        Some(sent),
        "{report}"
    );
    assert_eq!(report["messages"]["lost"], 0, "{report}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_client_certificate_fails_with_the_address() {
    let (node, _data_dir) = start_broker_for_test().await;
    let tls_addr = start_tls_terminator_for_test(node.mqtt_addr)
        .await
        .to_string();
    let ca = fixture("ca.pem");
    let output = run_swarm(&[
        "pairs",
        "--pairs",
        "1",
        "--broker",
        &tls_addr,
        "--duration",
        "1",
        "--tls-ca",
        &ca,
        "--connect-timeout-ms",
        "3000",
        "--quiet",
    ])
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&tls_addr), "{stderr}");
    node.shutdown().await;
}
