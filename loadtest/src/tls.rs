//! TLS for swarm's clients with rustls (ring provider): the broker's certificate is checked
//! against a CA file (or not at all, when asked), and a client certificate is presented when
//! configured.

use std::sync::Arc;

use anyhow::{anyhow, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::scenario::TlsSettings;

/// What a client needs for its handshake.
#[derive(Clone, Debug)]
pub(crate) struct TlsClient {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) server_name: ServerName<'static>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certificates(path: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| anyhow!("{path}: invalid PEM certificate: {error}"))?;
    if certificates.is_empty() {
        return Err(anyhow!("{path}: no certificate found"));
    }
    Ok(certificates)
}

fn read_private_key(path: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|error| anyhow!("{path}: no usable private key: {error}"))
}

/// Builds the client side of TLS for connections to `broker_host`.
///
/// # Errors
/// Returns an error naming the file for unreadable or invalid PEM files, and for an invalid
/// server name.
pub(crate) fn client(settings: &TlsSettings, broker_host: &str) -> anyhow::Result<TlsClient> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("no TLS protocol version available")?;
    let builder = if settings.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider())))
    } else {
        let ca_file = settings
            .ca_file
            .as_deref()
            .ok_or_else(|| anyhow!("tls needs `ca_file` (or `insecure_skip_verify = true`)"))?;
        let mut roots = RootCertStore::empty();
        for certificate in read_certificates(ca_file)? {
            roots
                .add(certificate)
                .with_context(|| format!("{ca_file}: unusable CA certificate"))?;
        }
        builder.with_root_certificates(roots)
    };
    let config = match (&settings.client_cert_file, &settings.client_key_file) {
        (Some(cert_file), Some(key_file)) => builder
            .with_client_auth_cert(read_certificates(cert_file)?, read_private_key(key_file)?)
            .with_context(|| {
                format!("{cert_file} and {key_file} do not make a client certificate")
            })?,
        _ => builder.with_no_client_auth(),
    };
    let name = settings.server_name.as_deref().unwrap_or(broker_host);
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|error| anyhow!("invalid TLS server name `{name}`: {error}"))?;
    Ok(TlsClient {
        config: Arc::new(config),
        server_name,
    })
}

/// Accepts any server certificate (`insecure_skip_verify`), still checking handshake
/// signatures so the connection is real TLS.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn client_config_loads_ca_and_client_certificate() {
        let settings = TlsSettings {
            ca_file: Some(fixture("ca.pem")),
            client_cert_file: Some(fixture("client.pem")),
            client_key_file: Some(fixture("client.key")),
            server_name: None,
            insecure_skip_verify: false,
        };
        let tls = client(&settings, "localhost").unwrap();
        assert!(tls.config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn missing_ca_file_is_named() {
        let settings = TlsSettings {
            ca_file: Some("/nonexistent/ca.pem".to_owned()),
            client_cert_file: None,
            client_key_file: None,
            server_name: None,
            insecure_skip_verify: false,
        };
        let error = client(&settings, "localhost").err().unwrap();
        assert!(
            format!("{error:#}").contains("/nonexistent/ca.pem"),
            "{error:#}"
        );
    }
}
