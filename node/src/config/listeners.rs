//! The `[listeners.<name>]` tables: one MQTT listener each (plain TCP, TLS, WebSocket or
//! WebSocket over TLS) with its own bind address, limits and TLS files, validated into
//! [`ListenerConfig`].

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use serde::Deserialize;
use starling_core::transport::{CertIdentityPolicy, CertIdentitySource};

/// Name of the listener `STARLING_LISTEN` and `RunningNode::mqtt_addr` refer to.
pub const TCP_LISTENER_NAME: &str = "tcp";

/// Name reserved for the inter-node listener of the cluster.
const RESERVED_NAMES: &[&str] = &["peer", "admin"];

const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_CERT_RELOAD_INTERVAL_MS: u64 = 5_000;
const DEFAULT_WEBSOCKET_PATH: &str = "/mqtt";

/// One `[listeners.<name>]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerV1 {
    protocol: Option<ListenerProtocol>,
    bind: SocketAddr,
    max_connections: Option<usize>,
    max_connect_rate_per_sec: Option<u32>,
    handshake_timeout_ms: Option<u64>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    client_auth: Option<ClientAuth>,
    crl_file: Option<PathBuf>,
    cert_identity: Option<CertIdentityUse>,
    cert_identity_source: Option<CertIdentitySourceV1>,
    min_tls_version: Option<String>,
    cert_reload_interval_ms: Option<u64>,
    path: Option<String>,
}

/// The wire protocol of a listener.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    /// MQTT over plain TCP.
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl ListenerProtocol {
    /// Returns the name used in the configuration, logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            ListenerProtocol::Tcp => "tcp",
            ListenerProtocol::Tls => "tls",
            ListenerProtocol::Ws => "ws",
            ListenerProtocol::Wss => "wss",
        }
    }

    /// True for `tls` and `wss`.
    pub fn uses_tls(self) -> bool {
        matches!(self, ListenerProtocol::Tls | ListenerProtocol::Wss)
    }

    /// True for `ws` and `wss`.
    pub fn uses_websocket(self) -> bool {
        matches!(self, ListenerProtocol::Ws | ListenerProtocol::Wss)
    }
}

/// Whether a TLS listener asks for client certificates.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// No client certificate is requested.
    None,
    /// A client certificate is requested; one that is presented must verify.
    Optional,
    /// Every client must present a certificate that verifies.
    Required,
}

impl ClientAuth {
    fn label(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        }
    }
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum CertIdentityUse {
    None,
    Username,
    ClientId,
    Both,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum CertIdentitySourceV1 {
    Cn,
    San,
}

/// Lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// The TLS settings of a `tls` or `wss` listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListenerConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM bundle of the CAs client certificates must chain to.
    pub client_ca_file: Option<PathBuf>,
    /// Whether client certificates are asked for.
    pub client_auth: ClientAuth,
    /// PEM certificate revocation lists checked for client certificates.
    pub crl_file: Option<PathBuf>,
    /// How the identity of a client certificate is used.
    pub cert_identity: CertIdentityPolicy,
    /// Lowest TLS version accepted.
    pub min_version: TlsVersion,
    /// How often the files are checked for changes; `None`: only on SIGHUP.
    pub reload_interval: Option<Duration>,
}

/// One validated MQTT listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// The table name: in logs, metrics (`listener` label) and `RunningNode::listener_addr`.
    pub name: String,
    /// Wire protocol.
    pub protocol: ListenerProtocol,
    /// Address to bind.
    pub bind: SocketAddr,
    /// Connections this listener holds at most; more are closed at once and counted.
    pub max_connections: Option<usize>,
    /// New connections accepted per second at most (burst: one second's worth); more are
    /// closed at once and counted.
    pub max_connect_rate_per_sec: Option<u32>,
    /// Time a new connection gets for its TLS handshake and WebSocket upgrade.
    pub handshake_timeout: Duration,
    /// TLS settings (`tls` and `wss`).
    pub tls: Option<TlsListenerConfig>,
    /// HTTP path of the WebSocket upgrade (`ws` and `wss`).
    pub websocket_path: Option<String>,
}

/// Finds the 1-based line of `key` inside the table `[listeners.<name>]`, or of the table
/// header itself when `key` is `None` or absent.
fn line_in_table(toml_text: &str, name: &str, key: Option<&str>) -> Option<usize> {
    let header = format!("[listeners.{name}]");
    let quoted_header = format!("[listeners.\"{name}\"]");
    let mut lines = toml_text.lines().enumerate();
    let header_idx = lines
        .by_ref()
        .find(|(_, line)| {
            let line = line.trim();
            line == header || line == quoted_header
        })
        .map(|(idx, _)| idx)?;
    if let Some(key) = key {
        for (idx, line) in lines {
            let line = line.trim_start();
            if line.starts_with('[') {
                break;
            }
            if line
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
            {
                return Some(idx + 1);
            }
        }
    }
    Some(header_idx + 1)
}

fn invalid(
    source: &str,
    toml_text: &str,
    name: &str,
    key: Option<&str>,
    message: &str,
) -> anyhow::Error {
    let full_key = match key {
        Some(key) => format!("listeners.{name}.{key}"),
        None => format!("listeners.{name}"),
    };
    match line_in_table(toml_text, name, key) {
        Some(line) => anyhow::anyhow!(
            "invalid configuration in {source}, line {line}: `{full_key}` {message}"
        ),
        None => anyhow::anyhow!("invalid configuration in {source}: `{full_key}` {message}"),
    }
}

/// Validates the listener tables and applies `STARLING_LISTEN` (the bind address of the `tcp`
/// listener). Without any table the node has one `tcp` listener on `0.0.0.0:1883`.
pub(super) fn build_listeners(
    tables: BTreeMap<String, ListenerV1>,
    toml_text: &str,
    source: &str,
    env_vars: &std::collections::HashMap<String, String>,
) -> anyhow::Result<Vec<ListenerConfig>> {
    let mut listeners = Vec::with_capacity(tables.len().max(1));
    if tables.is_empty() {
        listeners.push(ListenerConfig {
            name: TCP_LISTENER_NAME.to_string(),
            protocol: ListenerProtocol::Tcp,
            bind: SocketAddr::from(([0, 0, 0, 0], 1883)),
            max_connections: None,
            max_connect_rate_per_sec: None,
            handshake_timeout: Duration::from_millis(DEFAULT_HANDSHAKE_TIMEOUT_MS),
            tls: None,
            websocket_path: None,
        });
    }
    for (name, table) in tables {
        listeners.push(build_listener(name, table, toml_text, source)?);
    }
    if let Some(value) = env_vars.get("STARLING_LISTEN") {
        let bind: SocketAddr = value.parse().with_context(|| {
            format!("invalid STARLING_LISTEN {value:?}: expected an address like 127.0.0.1:1883")
        })?;
        // Without a `tcp` listener (a TLS-only node, say) the variable has nothing to move.
        if let Some(tcp) = listeners
            .iter_mut()
            .find(|listener| listener.name == TCP_LISTENER_NAME)
        {
            tcp.bind = bind;
        }
    }
    Ok(listeners)
}

fn build_listener(
    name: String,
    table: ListenerV1,
    toml_text: &str,
    source: &str,
) -> anyhow::Result<ListenerConfig> {
    let fail = |key: Option<&str>, message: &str| invalid(source, toml_text, &name, key, message);
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid_name {
        return Err(fail(
            None,
            "has an invalid name: use letters, digits, `_` and `-`",
        ));
    }
    if RESERVED_NAMES.contains(&name.as_str()) {
        return Err(fail(None, "is a reserved name; pick another listener name"));
    }
    let protocol = table.protocol.unwrap_or(ListenerProtocol::Tcp);
    let tls_only_keys = [
        ("cert_file", table.cert_file.is_some()),
        ("key_file", table.key_file.is_some()),
        ("client_ca_file", table.client_ca_file.is_some()),
        ("client_auth", table.client_auth.is_some()),
        ("crl_file", table.crl_file.is_some()),
        ("cert_identity", table.cert_identity.is_some()),
        ("cert_identity_source", table.cert_identity_source.is_some()),
        ("min_tls_version", table.min_tls_version.is_some()),
        (
            "cert_reload_interval_ms",
            table.cert_reload_interval_ms.is_some(),
        ),
    ];
    if !protocol.uses_tls() {
        if let Some((key, _)) = tls_only_keys.iter().find(|(_, present)| *present) {
            return Err(fail(
                Some(key),
                &format!(
                    "applies to protocol \"tls\" or \"wss\" only; this listener is \"{}\"",
                    protocol.label()
                ),
            ));
        }
    }
    if table.path.is_some() && !protocol.uses_websocket() {
        return Err(fail(
            Some("path"),
            "applies to protocol \"ws\" or \"wss\" only",
        ));
    }
    let websocket_path = if protocol.uses_websocket() {
        let path = table
            .path
            .clone()
            .unwrap_or_else(|| DEFAULT_WEBSOCKET_PATH.to_string());
        if !path.starts_with('/') || path.contains(char::is_whitespace) {
            return Err(fail(
                Some("path"),
                "must start with `/` and hold no spaces, e.g. \"/mqtt\"",
            ));
        }
        Some(path)
    } else {
        None
    };
    let tls = if protocol.uses_tls() {
        Some(build_tls(&table, &fail)?)
    } else {
        None
    };
    if table.max_connections == Some(0) {
        return Err(fail(
            Some("max_connections"),
            "must be at least 1 (leave it out for no limit)",
        ));
    }
    if table.max_connect_rate_per_sec == Some(0) {
        return Err(fail(
            Some("max_connect_rate_per_sec"),
            "must be at least 1 (leave it out for no limit)",
        ));
    }
    let handshake_timeout_ms = table
        .handshake_timeout_ms
        .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT_MS);
    if handshake_timeout_ms == 0 {
        return Err(fail(Some("handshake_timeout_ms"), "must be at least 1"));
    }
    Ok(ListenerConfig {
        name,
        protocol,
        bind: table.bind,
        max_connections: table.max_connections,
        max_connect_rate_per_sec: table.max_connect_rate_per_sec,
        handshake_timeout: Duration::from_millis(handshake_timeout_ms),
        tls,
        websocket_path,
    })
}

fn build_tls(
    table: &ListenerV1,
    fail: &dyn Fn(Option<&str>, &str) -> anyhow::Error,
) -> anyhow::Result<TlsListenerConfig> {
    let Some(cert_file) = table.cert_file.clone() else {
        return Err(fail(
            Some("cert_file"),
            "is required for a TLS listener (PEM certificate chain)",
        ));
    };
    let Some(key_file) = table.key_file.clone() else {
        return Err(fail(
            Some("key_file"),
            "is required for a TLS listener (PEM private key)",
        ));
    };
    let has_ca = table.client_ca_file.is_some();
    let client_auth = table.client_auth.unwrap_or(if has_ca {
        ClientAuth::Required
    } else {
        ClientAuth::None
    });
    if client_auth != ClientAuth::None && !has_ca {
        return Err(fail(
            Some("client_auth"),
            &format!(
                "is \"{}\" but no `client_ca_file` names the CAs to verify client certificates with",
                client_auth.label()
            ),
        ));
    }
    if has_ca && client_auth == ClientAuth::None {
        return Err(fail(
            Some("client_ca_file"),
            "is set but `client_auth` is \"none\"; remove one of them",
        ));
    }
    if table.crl_file.is_some() && !has_ca {
        return Err(fail(
            Some("crl_file"),
            "needs `client_ca_file` (revocation applies to client certificates)",
        ));
    }
    let (as_username, as_client_id) = match table.cert_identity.unwrap_or(CertIdentityUse::None) {
        CertIdentityUse::None => (false, false),
        CertIdentityUse::Username => (true, false),
        CertIdentityUse::ClientId => (false, true),
        CertIdentityUse::Both => (true, true),
    };
    if (as_username || as_client_id) && !has_ca {
        return Err(fail(
            Some("cert_identity"),
            "needs `client_ca_file`: only a verified client certificate has an identity",
        ));
    }
    let source = match table
        .cert_identity_source
        .unwrap_or(CertIdentitySourceV1::Cn)
    {
        CertIdentitySourceV1::Cn => CertIdentitySource::CommonName,
        CertIdentitySourceV1::San => CertIdentitySource::SubjectAltName,
    };
    let min_version = match table.min_tls_version.as_deref().unwrap_or("1.2") {
        "1.2" => TlsVersion::Tls12,
        "1.3" => TlsVersion::Tls13,
        _ => return Err(fail(Some("min_tls_version"), "must be \"1.2\" or \"1.3\"")),
    };
    let reload_interval_ms = table
        .cert_reload_interval_ms
        .unwrap_or(DEFAULT_CERT_RELOAD_INTERVAL_MS);
    Ok(TlsListenerConfig {
        cert_file,
        key_file,
        client_ca_file: table.client_ca_file.clone(),
        client_auth,
        crl_file: table.crl_file.clone(),
        cert_identity: CertIdentityPolicy {
            source,
            as_username,
            as_client_id,
        },
        min_version,
        reload_interval: (reload_interval_ms > 0)
            .then(|| Duration::from_millis(reload_interval_ms)),
    })
}

/// Renders the listeners like the `[listeners]` tables of `starling.toml`, for the effective
/// configuration.
pub(super) fn listeners_json(listeners: &[ListenerConfig]) -> serde_json::Value {
    let mut tables = serde_json::Map::new();
    for listener in listeners {
        let mut table = serde_json::Map::new();
        table.insert("protocol".into(), listener.protocol.label().into());
        table.insert("bind".into(), listener.bind.to_string().into());
        if let Some(max) = listener.max_connections {
            table.insert("max_connections".into(), max.into());
        }
        if let Some(rate) = listener.max_connect_rate_per_sec {
            table.insert("max_connect_rate_per_sec".into(), rate.into());
        }
        table.insert(
            "handshake_timeout_ms".into(),
            (listener.handshake_timeout.as_millis() as u64).into(),
        );
        if let Some(path) = &listener.websocket_path {
            table.insert("path".into(), path.clone().into());
        }
        if let Some(tls) = &listener.tls {
            let path = |path: &PathBuf| serde_json::Value::from(path.display().to_string());
            table.insert("cert_file".into(), path(&tls.cert_file));
            table.insert("key_file".into(), path(&tls.key_file));
            if let Some(ca) = &tls.client_ca_file {
                table.insert("client_ca_file".into(), path(ca));
            }
            table.insert("client_auth".into(), tls.client_auth.label().into());
            if let Some(crl) = &tls.crl_file {
                table.insert("crl_file".into(), path(crl));
            }
            let identity = &tls.cert_identity;
            let use_label = match (identity.as_username, identity.as_client_id) {
                (false, false) => "none",
                (true, false) => "username",
                (false, true) => "client_id",
                (true, true) => "both",
            };
            table.insert("cert_identity".into(), use_label.into());
            let source_label = match identity.source {
                CertIdentitySource::CommonName => "cn",
                CertIdentitySource::SubjectAltName => "san",
            };
            table.insert("cert_identity_source".into(), source_label.into());
            let version = match tls.min_version {
                TlsVersion::Tls12 => "1.2",
                TlsVersion::Tls13 => "1.3",
            };
            table.insert("min_tls_version".into(), version.into());
            table.insert(
                "cert_reload_interval_ms".into(),
                tls.reload_interval
                    .map_or(0, |interval| interval.as_millis() as u64)
                    .into(),
            );
        }
        tables.insert(listener.name.clone(), table.into());
    }
    tables.into()
}

#[cfg(test)]
mod tests;
