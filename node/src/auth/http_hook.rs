//! The HTTP authentication/authorization hook, for fleets that keep their devices in their
//! own registry: at CONNECT the broker POSTs the client's credentials as JSON and the answer
//! says allow or deny, and which topic filters the client may publish and subscribe to.
//!
//! Request: `{"client_id", "username", "password", "peer_address", "listener", "protocol",
//! "certificate_cn", "certificate_serial"}` (a password that is not UTF-8 goes as
//! `password_base64`). Answer: HTTP 200 with `{"result": "allow" | "deny", "publish": [...],
//! "subscribe": [...]}`; the lists are optional (without them the configured ACL applies).
//! Any other status, a malformed answer or the timeout refuse the client with CONNACK 0x88
//! (server unavailable), so devices retry later rather than give up.
//!
//! An `https://` hook is verified against the built-in public roots, or, with
//! `auth.http.ca_file`, against that PEM bundle only (read at start); a hook whose certificate
//! does not verify is unavailable like any other failure (0x88).
//!
//! Decisions (allow and deny) are cached for `cache_ttl_secs`, keyed by a SHA-256 of the whole
//! request, in a bounded map (oldest entries dropped first). Requests run on the blocking pool,
//! at most `max_concurrent_requests` at a time; the timeout covers the wait for a slot.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use anyhow::Context;
use base64::{engine::general_purpose::STANDARD, Engine};
use parking_lot::Mutex;
use serde_json::{json, Value};
use starling_core::auth::ConnectRequest;
use tokio::{sync::Semaphore, time::Instant};

use crate::config::HttpHookConfig;

/// The hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HookDecision {
    /// Allowed, with optional topic lists.
    Allow {
        publish: Option<Vec<String>>,
        subscribe: Option<Vec<String>>,
    },
    /// Denied.
    Deny,
}

/// Why the hook gave no decision.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum HookError {
    #[error("hook request timed out")]
    Timeout,
    #[error("hook unavailable: {0}")]
    Unavailable(String),
}

struct Cache {
    entries: HashMap<[u8; 32], (HookDecision, Instant)>,
    order: VecDeque<[u8; 32]>,
}

/// The hook client with its decision cache.
pub(crate) struct HttpHook {
    config: HttpHookConfig,
    agent: ureq::Agent,
    slots: Arc<Semaphore>,
    cache: Mutex<Cache>,
}

fn string_list(value: Option<&Value>) -> Option<Vec<String>> {
    value?.as_array().map(|items| {
        items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_string))
            .collect()
    })
}

/// Parses the hook's answer body.
fn parse_answer(text: &str) -> Result<HookDecision, HookError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|error| HookError::Unavailable(format!("answer is not JSON: {error}")))?;
    match value.get("result").and_then(Value::as_str) {
        Some("allow") => Ok(HookDecision::Allow {
            publish: string_list(value.get("publish")),
            subscribe: string_list(value.get("subscribe")),
        }),
        Some("deny") => Ok(HookDecision::Deny),
        _ => Err(HookError::Unavailable(
            "answer has no \"result\": \"allow\" or \"deny\"".to_string(),
        )),
    }
}

/// Reads the CA certificates of a PEM bundle.
fn read_ca_file(path: &std::path::Path) -> anyhow::Result<Vec<ureq::tls::Certificate<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read auth.http.ca_file {}", path.display()))?;
    let mut certificates = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(certificate)) => certificates.push(certificate),
            Ok(_) => {}
            Err(error) => anyhow::bail!(
                "invalid PEM in auth.http.ca_file {}: {error}",
                path.display()
            ),
        }
    }
    if certificates.is_empty() {
        anyhow::bail!("auth.http.ca_file {} holds no certificate", path.display());
    }
    Ok(certificates)
}

impl HttpHook {
    /// Builds the client; with `ca_file`, an `https://` hook is trusted only if its certificate
    /// chains to one of those CAs (the built-in public roots are then not used).
    ///
    /// # Errors
    /// Returns an error naming the file when `ca_file` cannot be read or holds no certificate.
    pub(crate) fn new(config: HttpHookConfig) -> anyhow::Result<HttpHook> {
        let mut builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.timeout));
        if let Some(ca_file) = &config.ca_file {
            let roots = ureq::tls::RootCerts::new_with_certs(&read_ca_file(ca_file)?);
            builder = builder.tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build());
        }
        let agent_config = builder.build();
        Ok(HttpHook {
            slots: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            agent: ureq::Agent::new_with_config(agent_config),
            cache: Mutex::new(Cache {
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
            config,
        })
    }

    /// The request body for a CONNECT.
    fn body(request: &ConnectRequest<'_>) -> Value {
        let mut body = json!({
            "client_id": request.client_id,
            "username": request.username,
            "peer_address": request.peer.ip().to_string(),
            "listener": request.listener_name,
            "protocol": match request.protocol {
                starling_core::codec::ProtocolVersion::V3_1 => "3.1",
                starling_core::codec::ProtocolVersion::V3_1_1 => "3.1.1",
                starling_core::codec::ProtocolVersion::V5 => "5.0",
            },
            "certificate_cn": request.certificate.and_then(|c| c.common_name.clone()),
            "certificate_serial": request.certificate.map(|c| c.serial_hex.clone()),
        });
        match request.password.map(std::str::from_utf8) {
            Some(Ok(password)) => body["password"] = json!(password),
            Some(Err(_)) => {
                body["password_base64"] = json!(STANDARD.encode(request.password.unwrap_or(&[])))
            }
            None => body["password"] = Value::Null,
        }
        body
    }

    /// Returns the decision for a CONNECT and whether it came from the cache.
    pub(crate) async fn decide(
        &self,
        request: &ConnectRequest<'_>,
    ) -> Result<(HookDecision, bool), HookError> {
        let body = HttpHook::body(request).to_string();
        let key: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, body.as_bytes())
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        let now = Instant::now();
        if let Some((decision, at)) = self.cache.lock().entries.get(&key) {
            if now.duration_since(*at) < self.config.cache_ttl {
                return Ok((decision.clone(), true));
            }
        }
        let decision = tokio::time::timeout(self.config.timeout, self.call(body))
            .await
            .map_err(|_| HookError::Timeout)??;
        if !self.config.cache_ttl.is_zero() && self.config.cache_max_entries > 0 {
            let mut cache = self.cache.lock();
            if cache.entries.insert(key, (decision.clone(), now)).is_none() {
                cache.order.push_back(key);
            }
            while cache.entries.len() > self.config.cache_max_entries {
                let Some(oldest) = cache.order.pop_front() else {
                    break;
                };
                cache.entries.remove(&oldest);
            }
            // Drop stale keys of refreshed entries from the order queue now and then.
            if cache.order.len() > 2 * self.config.cache_max_entries.max(16) {
                let Cache { entries, order } = &mut *cache;
                order.retain(|key| entries.contains_key(key));
            }
        }
        Ok((decision, false))
    }

    async fn call(&self, body: String) -> Result<HookDecision, HookError> {
        let _slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HookError::Unavailable("closed".to_string()))?;
        let agent = self.agent.clone();
        let url = self.config.url.clone();
        tokio::task::spawn_blocking(move || {
            let mut response = agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body)
                .map_err(|error| HookError::Unavailable(error.to_string()))?;
            let status = response.status();
            let text = response
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_to_string()
                .map_err(|error| HookError::Unavailable(error.to_string()))?;
            if status.as_u16() != 200 {
                return Err(HookError::Unavailable(format!("answered {status}")));
            }
            parse_answer(&text)
        })
        .await
        .map_err(|error| HookError::Unavailable(error.to_string()))?
    }

    /// Number of cached decisions.
    #[cfg(test)]
    fn cached(&self) -> usize {
        self.cache.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn answers_parse() {
        assert_eq!(
            parse_answer(r#"{"result":"allow","publish":["a/#"]}"#).unwrap(),
            HookDecision::Allow {
                publish: Some(vec!["a/#".to_string()]),
                subscribe: None
            }
        );
        assert_eq!(
            parse_answer(r#"{"result":"deny"}"#).unwrap(),
            HookDecision::Deny
        );
        assert!(parse_answer(r#"{"result":"maybe"}"#).is_err());
        assert!(parse_answer("nope").is_err());
    }

    #[tokio::test]
    async fn unreachable_hook_is_an_error_and_not_cached() {
        let hook = HttpHook::new(HttpHookConfig {
            url: "http://127.0.0.1:9/auth".to_string(),
            timeout: Duration::from_millis(500),
            cache_ttl: Duration::from_secs(60),
            cache_max_entries: 10,
            max_concurrent_requests: 2,
            ca_file: None,
        })
        .unwrap();
        let request = ConnectRequest {
            client_id: "c",
            username: Some("u"),
            username_from_certificate: false,
            password: Some(b"p"),
            method: None,
            data: None,
            peer: "127.0.0.1:1".parse().unwrap(),
            listener: Default::default(),
            listener_name: "default",
            certificate: None,
            protocol: starling_core::codec::ProtocolVersion::V5,
        };
        assert!(hook.decide(&request).await.is_err());
        assert_eq!(hook.cached(), 0);
    }
}
