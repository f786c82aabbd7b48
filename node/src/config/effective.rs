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
        "listeners": { "tcp": { "bind": config.tcp_listen.to_string() } },
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
