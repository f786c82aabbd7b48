//! The `[auth]`, `[acl]` and `[limits]` tables: authentication methods, topic rules and
//! per-client publish limits.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;
use starling_core::auth::{RateLimitAction, RateLimits};

use crate::auth::acl::{AclRule, RuleSpec};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthV1 {
    password_file: Option<PathBuf>,
    ban_file: Option<PathBuf>,
    reload_interval_ms: Option<u64>,
    password_cache_max_entries: Option<usize>,
    /// Removed: the listener's `cert_identity` decides. Kept only to name it in the error.
    certificate_as_username: Option<toml::Value>,
    #[serde(default)]
    jwt: JwtV1,
    #[serde(default)]
    http: HttpV1,
    #[serde(default)]
    scram: ScramV1,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct JwtV1 {
    hs256_secret_file: Option<PathBuf>,
    jwks_file: Option<PathBuf>,
    issuer: Option<String>,
    audience: Option<String>,
    username_claim: Option<String>,
    client_id_claim: Option<String>,
    publish_claim: Option<String>,
    subscribe_claim: Option<String>,
    leeway_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HttpV1 {
    url: Option<String>,
    timeout_ms: Option<u64>,
    cache_ttl_secs: Option<u64>,
    cache_max_entries: Option<usize>,
    max_concurrent_requests: Option<usize>,
    ca_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ScramV1 {
    enabled: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct AclV1 {
    file: Option<PathBuf>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsV1 {
    publish_rate_per_sec: Option<u32>,
    publish_burst: Option<u32>,
    publish_bytes_per_sec: Option<u32>,
    publish_burst_bytes: Option<u32>,
    rate_exceeded_action: Option<RateActionV1>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RateActionV1 {
    Throttle,
    Disconnect,
}

/// JWT verification settings (`[auth.jwt]`).
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// File holding the HS256 shared secret (raw bytes, a trailing newline is ignored).
    pub hs256_secret_file: Option<PathBuf>,
    /// JWKS file with the RS256/ES256 public keys.
    pub jwks_file: Option<PathBuf>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud` (one of them), if set.
    pub audience: Option<String>,
    /// Claim naming the user; must equal the MQTT user name when both are present.
    pub username_claim: String,
    /// Claim that must equal the client identifier, if set.
    pub client_id_claim: Option<String>,
    /// Claim listing topic filters the client may publish to.
    pub publish_claim: String,
    /// Claim listing topic filters the client may subscribe to.
    pub subscribe_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

/// HTTP hook settings (`[auth.http]`).
#[derive(Debug, Clone)]
pub struct HttpHookConfig {
    /// Where the JSON POST goes (`http://` or `https://`).
    pub url: String,
    /// Time a decision may take, queueing included.
    pub timeout: Duration,
    /// How long a decision is reused for the same credentials.
    pub cache_ttl: Duration,
    /// Decisions kept at most (oldest dropped first).
    pub cache_max_entries: usize,
    /// Requests in flight at most.
    pub max_concurrent_requests: usize,
    /// PEM bundle of the CAs an `https://` hook's certificate must chain to, instead of the
    /// built-in public roots (for a hook with a private CA).
    pub ca_file: Option<PathBuf>,
}

/// Authentication, authorization and per-client limits of the node.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// `user:hash` lines (argon2 PHC strings, SCRAM-SHA-256 keys); see `starling passwd`.
    pub password_file: Option<PathBuf>,
    /// Banned client ids, user names, certificate serials and addresses; see `starling ban`.
    pub ban_file: Option<PathBuf>,
    /// How often watched files are checked for changes.
    pub reload_interval: Duration,
    /// Successful argon2 verifications remembered at most (0: none).
    pub password_cache_max_entries: usize,
    /// JWT in the password field.
    pub jwt: Option<JwtConfig>,
    /// HTTP authentication/authorization hook.
    pub http: Option<HttpHookConfig>,
    /// MQTT 5 enhanced authentication with SCRAM-SHA-256 (credentials from the password file).
    pub scram: bool,
    /// ACL rules from the configuration file, in order.
    pub(crate) acl_rules: Vec<AclRule>,
    /// ACL file (`[[rules]]` tables), reloaded on change; its rules follow `acl_rules`.
    pub acl_file: Option<PathBuf>,
    /// Per-client publish limits.
    pub rate_limits: Option<RateLimits>,
    /// `mqtt.allow_anonymous`, repeated here for the provider.
    pub allow_anonymous: bool,
}

impl AuthConfig {
    /// Whether any authentication method is configured (anything that verifies a user name).
    pub fn verifies_users(&self) -> bool {
        self.password_file.is_some() || self.jwt.is_some() || self.http.is_some()
    }

    /// Whether the node needs an auth provider at all.
    pub fn is_needed(&self) -> bool {
        self.verifies_users()
            || self.ban_file.is_some()
            || !self.acl_rules.is_empty()
            || self.acl_file.is_some()
            || self.rate_limits.is_some()
            || !self.allow_anonymous
    }
}

fn non_empty_path(path: Option<PathBuf>) -> Option<PathBuf> {
    path.filter(|path| !path.as_os_str().is_empty())
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.is_empty())
}

/// Validates the three tables; `invalid(key, message)` builds the error naming key and line.
pub(crate) fn build_auth_config(
    auth: AuthV1,
    acl: AclV1,
    limits: LimitsV1,
    allow_anonymous: bool,
    max_topic_levels: usize,
    invalid: &dyn Fn(&str, &str) -> anyhow::Error,
) -> anyhow::Result<AuthConfig> {
    if auth.certificate_as_username.is_some() {
        return Err(invalid(
            "auth.certificate_as_username",
            "was removed: the listener decides how a client certificate names the client; \
             use `[listeners.<name>] cert_identity = \"username\"` on the TLS listener instead",
        ));
    }
    let jwt = JwtConfig {
        hs256_secret_file: non_empty_path(auth.jwt.hs256_secret_file),
        jwks_file: non_empty_path(auth.jwt.jwks_file),
        issuer: non_empty(auth.jwt.issuer),
        audience: non_empty(auth.jwt.audience),
        username_claim: auth.jwt.username_claim.unwrap_or_else(|| "sub".to_string()),
        client_id_claim: non_empty(auth.jwt.client_id_claim),
        publish_claim: auth
            .jwt
            .publish_claim
            .unwrap_or_else(|| "mqtt_publish".to_string()),
        subscribe_claim: auth
            .jwt
            .subscribe_claim
            .unwrap_or_else(|| "mqtt_subscribe".to_string()),
        leeway: Duration::from_secs(auth.jwt.leeway_secs.unwrap_or(30)),
    };
    let jwt = (jwt.hs256_secret_file.is_some() || jwt.jwks_file.is_some()).then_some(jwt);
    let http = match non_empty(auth.http.url) {
        Some(url) => {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(invalid(
                    "auth.http.url",
                    "must start with http:// or https://",
                ));
            }
            let timeout_ms = auth.http.timeout_ms.unwrap_or(2000);
            if timeout_ms == 0 {
                return Err(invalid("auth.http.timeout_ms", "must be at least 1"));
            }
            let ca_file = non_empty_path(auth.http.ca_file);
            if ca_file.is_some() && !url.starts_with("https://") {
                return Err(invalid(
                    "auth.http.ca_file",
                    "applies to an https:// url only",
                ));
            }
            Some(HttpHookConfig {
                url,
                ca_file,
                timeout: Duration::from_millis(timeout_ms),
                cache_ttl: Duration::from_secs(auth.http.cache_ttl_secs.unwrap_or(60)),
                cache_max_entries: auth.http.cache_max_entries.unwrap_or(10_000),
                max_concurrent_requests: auth.http.max_concurrent_requests.unwrap_or(32).max(1),
            })
        }
        None => None,
    };
    let password_file = non_empty_path(auth.password_file);
    let scram = auth.scram.enabled.unwrap_or(false);
    if scram && password_file.is_none() {
        return Err(invalid(
            "auth.scram.enabled",
            "needs auth.password_file (SCRAM credentials are kept there)",
        ));
    }
    let mut acl_rules = Vec::with_capacity(acl.rules.len());
    for (idx, spec) in acl.rules.into_iter().enumerate() {
        let rule = AclRule::from_spec(spec, max_topic_levels)
            .map_err(|error| invalid("acl.rules", &format!("rule {}: {error}", idx + 1)))?;
        acl_rules.push(rule);
    }
    let reload_interval_ms = auth.reload_interval_ms.unwrap_or(500);
    if reload_interval_ms == 0 {
        return Err(invalid("auth.reload_interval_ms", "must be at least 1"));
    }
    let messages_per_sec = limits.publish_rate_per_sec.unwrap_or(0);
    let bytes_per_sec = limits.publish_bytes_per_sec.unwrap_or(0);
    let rate_limits = (messages_per_sec > 0 || bytes_per_sec > 0).then(|| RateLimits {
        messages_per_sec,
        message_burst: limits
            .publish_burst
            .filter(|burst| *burst > 0)
            .unwrap_or(messages_per_sec),
        bytes_per_sec,
        byte_burst: limits
            .publish_burst_bytes
            .filter(|burst| *burst > 0)
            .unwrap_or(bytes_per_sec),
        action: match limits
            .rate_exceeded_action
            .unwrap_or(RateActionV1::Throttle)
        {
            RateActionV1::Throttle => RateLimitAction::Throttle,
            RateActionV1::Disconnect => RateLimitAction::Disconnect,
        },
    });
    Ok(AuthConfig {
        password_file,
        ban_file: non_empty_path(auth.ban_file),
        reload_interval: Duration::from_millis(reload_interval_ms),
        password_cache_max_entries: auth.password_cache_max_entries.unwrap_or(10_000),
        jwt,
        http,
        scram,
        acl_rules,
        acl_file: non_empty_path(acl.file),
        rate_limits,
        allow_anonymous,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::config::load_node_config;

    #[test]
    fn removed_certificate_as_username_points_to_the_listener() {
        let toml =
            "version = \"1\"\n\n[auth]\nreload_interval_ms = 500\ncertificate_as_username = true\n";
        let Err(error) = load_node_config(toml, "starling.toml", &HashMap::new()) else {
            panic!("the removed key is refused");
        };
        let error = error.to_string();
        assert!(error.contains("line 5"), "{error}");
        assert!(error.contains("auth.certificate_as_username"), "{error}");
        assert!(
            error.contains("[listeners.<name>] cert_identity = \"username\""),
            "{error}"
        );
        // Also when it says false: the key is gone, not merely defaulted.
        let toml = "version = \"1\"\n[auth]\ncertificate_as_username = false\n";
        let Err(error) = load_node_config(toml, "starling.toml", &HashMap::new()) else {
            panic!("the removed key is refused");
        };
        let error = error.to_string();
        assert!(error.contains("line 3"), "{error}");
    }
}
