//! The configuration in force as JSON, laid out like `starling.toml`, secrets redacted: for
//! the startup log line and `GET /api/v1/config`.

use serde_json::{json, Value};
use starling_core::{codec::QoS, QueueFullPolicy};

use crate::config::{LogFormat, NodeConfig};

fn qos_number(qos: QoS) -> u8 {
    qos as u8
}

/// Renders the configuration in force with the layout of `starling.toml`; secrets are
/// replaced by `"<redacted>"`.
pub fn effective_config_json(config: &NodeConfig) -> Value {
    let limits = &config.broker.limits;
    json!({
        "version": "1",
        "node_id": config.node_id,
        "data_dir": config.data_dir.display().to_string(),
        "listeners": super::listeners::listeners_json(&config.listeners),
        "mqtt": {
            "max_packet_size_bytes": limits.max_packet_size,
            "receive_maximum": limits.receive_maximum,
            "max_inflight_messages": limits.max_inflight,
            "topic_alias_maximum": limits.topic_alias_maximum,
            "max_keep_alive_secs": limits.max_keep_alive,
            "min_keep_alive_secs": limits.min_keep_alive.unwrap_or(0),
            "max_session_expiry_secs": limits.max_session_expiry_secs,
            "max_queued_messages": limits.max_queued_messages,
            "max_queued_bytes": limits.max_queued_bytes,
            "queue_full_policy": match limits.queue_full_policy {
                QueueFullPolicy::DropNewest => "drop_newest",
                QueueFullPolicy::DropOldest => "drop_oldest",
                QueueFullPolicy::Refuse => "refuse",
            },
            "queue_qos0_offline": limits.queue_qos0_offline,
            "maximum_qos": qos_number(limits.maximum_qos),
            "retain_available": limits.retain_available,
            "max_topic_levels": limits.max_topic_levels,
            "max_subscriptions_per_session": limits.max_subscriptions_per_session,
            "connect_timeout_ms": limits.connect_timeout.as_millis() as u64,
            "allow_anonymous": limits.allow_anonymous,
            "deny_subscribe": limits.deny_subscribe,
        },
        "engine": {
            "topic_shards": config.broker.num_topic_shards,
            "session_shards": config.broker.num_session_shards,
            "max_connections": config.broker.max_connections,
        },
        "shutdown": { "drain_timeout_ms": config.drain_timeout.as_millis() as u64 },
        "log": {
            "level": config.log_level,
            "format": match config.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
        },
        "admin": {
            "enabled": config.admin.enabled,
            "bind": config.admin.bind.to_string(),
            "token": if config.admin.token.is_some() { "<redacted>" } else { "" },
            "metrics": config.admin.metrics,
            "sys_interval_secs": config.admin.sys_interval.map_or(0, |interval| interval.as_secs()),
        },
        "storage": {
            "engine": config.storage.engine.name(),
            "fsync": if config.storage.fsync_always { "always" } else { "never" },
            "max_commit_delay_ms": config.storage.max_commit_delay.as_millis() as u64,
        },
        "auth": auth_json(&config.auth),
        "acl": {
            // The rules themselves are shown by count only: the file they come from is the record.
            "file": path_text(config.auth.acl_file.as_ref()),
        },
        "limits": limits_json(&config.auth),
    })
}

fn path_text(path: Option<&std::path::PathBuf>) -> String {
    path.map(|path| path.display().to_string())
        .unwrap_or_default()
}

fn auth_json(auth: &crate::config::AuthConfig) -> Value {
    let jwt = auth.jwt.as_ref();
    let http = auth.http.as_ref();
    json!({
        "password_file": path_text(auth.password_file.as_ref()),
        "ban_file": path_text(auth.ban_file.as_ref()),
        "reload_interval_ms": auth.reload_interval.as_millis() as u64,
        "password_cache_max_entries": auth.password_cache_max_entries,
        "jwt": {
            "hs256_secret_file": path_text(jwt.and_then(|jwt| jwt.hs256_secret_file.as_ref())),
            "jwks_file": path_text(jwt.and_then(|jwt| jwt.jwks_file.as_ref())),
            "issuer": jwt.and_then(|jwt| jwt.issuer.clone()).unwrap_or_default(),
            "audience": jwt.and_then(|jwt| jwt.audience.clone()).unwrap_or_default(),
        },
        "http": {
            // A URL with user information would show a credential.
            "url": http.map_or(String::new(), |http| if http.url.contains('@') { "<redacted>".to_string() } else { http.url.clone() }),
            "timeout_ms": http.map_or(2000, |http| http.timeout.as_millis() as u64),
            "cache_ttl_secs": http.map_or(60, |http| http.cache_ttl.as_secs()),
            "cache_max_entries": http.map_or(10_000, |http| http.cache_max_entries),
            "max_concurrent_requests": http.map_or(32, |http| http.max_concurrent_requests),
            "ca_file": path_text(http.and_then(|http| http.ca_file.as_ref())),
        },
        "scram": { "enabled": auth.scram },
    })
}

fn limits_json(auth: &crate::config::AuthConfig) -> Value {
    let limits = auth.rate_limits;
    json!({
        "publish_rate_per_sec": limits.map_or(0, |l| l.messages_per_sec),
        "publish_burst": limits.map_or(0, |l| l.message_burst),
        "publish_bytes_per_sec": limits.map_or(0, |l| l.bytes_per_sec),
        "publish_burst_bytes": limits.map_or(0, |l| l.byte_burst),
        "rate_exceeded_action": match limits.map(|l| l.action) {
            Some(starling_core::auth::RateLimitAction::Disconnect) => "disconnect",
            _ => "throttle",
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::load_node_config;

    #[test]
    fn effective_config_redacts_the_token_and_reloads_as_toml() {
        let env = HashMap::from([("STARLING_ADMIN_TOKEN".to_string(), "s3cret".to_string())]);
        let config = load_node_config("", "none", &env).unwrap();
        let value = effective_config_json(&config);
        let text = value.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(value["admin"]["token"], "<redacted>");
        // Without the redacted token, the JSON is a valid configuration file again.
        let mut value = value;
        value["admin"]["token"] = json!("");
        let toml_text = toml::to_string(&value).unwrap();
        let reloaded = load_node_config(&toml_text, "effective", &HashMap::new()).unwrap();
        assert_eq!(effective_config_json(&reloaded), value);
    }
}
