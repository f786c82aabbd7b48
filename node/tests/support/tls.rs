//! Helpers of the TLS tests: a node with a TLS listener, the certificate a listener serves,
//! and an MQTT connection attempt over TLS that reports how it ended.

use starling_core::codec::{ProtocolVersion, ReasonCode};

use super::{
    pki::{tls_listener_toml, TestPki},
    stream::{tls_connect, MqttClient, Plain},
    TestBroker,
};
use rustls::pki_types::CertificateDer;

/// A node with a plain `tcp` listener and a TLS listener `name` with `extra` keys.
pub async fn start_tls_broker(pki: &TestPki, name: &str, extra: &str) -> TestBroker {
    let toml = format!(
        "[listeners.tcp]\nbind = \"127.0.0.1:0\"\n{}",
        tls_listener_toml(pki, name, "tls", extra)
    );
    TestBroker::start_with(&toml).await
}

/// The DER of the certificate the listener at `addr` presents to a new handshake.
pub async fn served_certificate(
    addr: std::net::SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> Option<CertificateDer<'static>> {
    let stream = tls_connect(addr, config).await.ok()?;
    let (_, connection) = stream.get_ref();
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|der| der.clone().into_owned())
}

/// Connects with `config` and returns the CONNACK reason code, or the error that ended the
/// attempt.
pub async fn try_mqtt_over_tls(
    addr: std::net::SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
    client_id: &str,
) -> Result<ReasonCode, String> {
    let stream = tls_connect(addr, config)
        .await
        .map_err(|error| error.to_string())?;
    let mut client = MqttClient::new(Plain(stream), ProtocolVersion::V5);
    match client.connect(client_id).await {
        Ok(connack) => Ok(connack.reason_code),
        Err(error) => Err(error.to_string()),
    }
}
