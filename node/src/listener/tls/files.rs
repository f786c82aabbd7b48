//! The TLS configuration of one listener, built from its PEM files and rebuilt in place when
//! they change (SIGHUP, or a changed modification time or size found by polling).
//!
//! New handshakes take the configuration in force when they start; connections already
//! established keep theirs. A file that fails to load is logged and counted, and the
//! configuration in force stays.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use anyhow::Context;
use metrics::{counter, gauge, Counter, Gauge};
use parking_lot::{Mutex, RwLock};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, CertificateRevocationListDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig, SupportedProtocolVersion,
};

use crate::config::{ClientAuth, TlsListenerConfig, TlsVersion};

/// What identifies one version of a file: its modification time and size (`None`: missing).
type FileStamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> FileStamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// The TLS configuration of one listener and the files it comes from.
pub(crate) struct TlsFiles {
    listener: String,
    settings: TlsListenerConfig,
    /// The configuration new handshakes use; replaced whole on a successful reload.
    current: RwLock<Arc<ServerConfig>>,
    /// Stamps of the files at the last load attempt, successful or not, so that a broken file
    /// is reported once and retried when it changes again.
    last_stamps: Mutex<Vec<FileStamp>>,
    reloads_ok: Counter,
    reloads_failed: Counter,
    expiry: Gauge,
}

impl TlsFiles {
    /// Loads the files of a listener.
    ///
    /// # Errors
    /// Names the file that cannot be read or used.
    pub(crate) fn load(listener: &str, settings: &TlsListenerConfig) -> anyhow::Result<TlsFiles> {
        let stamps = file_stamps(settings);
        let (config, not_after) = build_server_config(settings)
            .with_context(|| format!("cannot set up TLS for listener {listener}"))?;
        let files = TlsFiles {
            listener: listener.to_string(),
            settings: settings.clone(),
            current: RwLock::new(config),
            last_stamps: Mutex::new(stamps),
            reloads_ok: counter!("starling_tls_reloads_total", "listener" => listener.to_string(), "result" => "success"),
            reloads_failed: counter!("starling_tls_reloads_total", "listener" => listener.to_string(), "result" => "failure"),
            expiry: gauge!("starling_tls_certificate_expiry_timestamp_seconds", "listener" => listener.to_string()),
        };
        files.set_expiry(not_after);
        Ok(files)
    }

    /// Returns the configuration a new handshake uses.
    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        self.current.read().clone()
    }

    /// How often the files are checked for changes.
    pub(crate) fn reload_interval(&self) -> Option<std::time::Duration> {
        self.settings.reload_interval
    }

    /// Rebuilds the configuration from the files (SIGHUP); returns whether it succeeded.
    pub(crate) fn reload(&self) -> bool {
        *self.last_stamps.lock() = file_stamps(&self.settings);
        match build_server_config(&self.settings) {
            Ok((config, not_after)) => {
                *self.current.write() = config;
                self.set_expiry(not_after);
                self.reloads_ok.increment(1);
                tracing::info!(listener = %self.listener, cert_file = %self.settings.cert_file.display(), "tls configuration reloaded");
                true
            }
            Err(error) => {
                self.reloads_failed.increment(1);
                tracing::error!(listener = %self.listener, error = format!("{error:#}"), "tls reload failed; the configuration in force is kept");
                false
            }
        }
    }

    /// Reloads when a file changed since the last attempt; returns whether it tried.
    pub(crate) fn reload_if_changed(&self) -> bool {
        let stamps = file_stamps(&self.settings);
        if *self.last_stamps.lock() == stamps {
            return false;
        }
        self.reload();
        true
    }

    fn set_expiry(&self, not_after: Option<i64>) {
        if let Some(not_after) = not_after {
            self.expiry.set(not_after as f64);
        }
    }
}

fn file_stamps(settings: &TlsListenerConfig) -> Vec<FileStamp> {
    [
        Some(&settings.cert_file),
        Some(&settings.key_file),
        settings.client_ca_file.as_ref(),
        settings.crl_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| stamp(path))
    .collect()
}

fn read_certificates(path: &PathBuf, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|error| anyhow::anyhow!("cannot read {what} {}: {error}", path.display()))?;
    if certificates.is_empty() {
        anyhow::bail!("no PEM certificate in {what} {}", path.display());
    }
    Ok(certificates)
}

/// Builds a rustls configuration (ring provider) from the files; returns it with the end of
/// validity of the server certificate.
fn build_server_config(
    settings: &TlsListenerConfig,
) -> anyhow::Result<(Arc<ServerConfig>, Option<i64>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certificates(&settings.cert_file, "certificate chain")?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_file).map_err(|error| {
        anyhow::anyhow!(
            "cannot read private key {}: {error}",
            settings.key_file.display()
        )
    })?;
    let not_after = crate::listener::identity::not_after_unix_secs(chain[0].as_ref());
    let versions: &[&'static SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .context("unsupported TLS versions")?;
    let builder = match (&settings.client_ca_file, settings.client_auth) {
        (Some(ca_file), ClientAuth::Optional | ClientAuth::Required) => {
            let mut roots = RootCertStore::empty();
            for certificate in read_certificates(ca_file, "client CA bundle")? {
                roots.add(certificate).map_err(|error| {
                    anyhow::anyhow!("invalid CA certificate in {}: {error}", ca_file.display())
                })?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if let Some(crl_file) = &settings.crl_file {
                let crls = CertificateRevocationListDer::pem_file_iter(crl_file)
                    .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                    .map_err(|error| {
                        anyhow::anyhow!("cannot read CRL file {}: {error}", crl_file.display())
                    })?;
                if crls.is_empty() {
                    anyhow::bail!("no PEM CRL in {}", crl_file.display());
                }
                // Like OpenSSL's CRL check: the client certificate itself is checked, and one
                // whose issuer has no CRL in the file is refused.
                verifier = verifier.with_crls(crls).only_check_end_entity_revocation();
            }
            if settings.client_auth == ClientAuth::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|error| {
                anyhow::anyhow!("cannot use client CA bundle {}: {error}", ca_file.display())
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).map_err(|error| {
        anyhow::anyhow!(
            "cannot use certificate {} with key {}: {error}",
            settings.cert_file.display(),
            settings.key_file.display()
        )
    })?;
    Ok((Arc::new(config), not_after))
}
