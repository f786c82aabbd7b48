//! Node configuration: one TOML file (`deny_unknown_fields`, versioned), embedded defaults,
//! `STARLING_*` environment overrides, validated into typed values in one step.

use std::{collections::HashMap, net::SocketAddr, num::NonZeroU16, path::PathBuf, time::Duration};

use anyhow::Context;
use serde::Deserialize;
use starling_core::{codec::QoS, BrokerConfig, QueueFullPolicy, SessionLimits};

/// The embedded default configuration, printed by `starling config default`.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("config/default.toml");

#[derive(Deserialize)]
#[serde(tag = "version")]
enum VersionedNodeConfig {
    #[serde(rename = "1")]
    V1(NodeConfigV1),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NodeConfigV1 {
    node_id: Option<String>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    listeners: ListenersV1,
    #[serde(default)]
    mqtt: MqttV1,
    #[serde(default)]
    engine: EngineV1,
    #[serde(default)]
    shutdown: ShutdownV1,
    #[serde(default)]
    log: LogV1,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListenersV1 {
    tcp: Option<TcpListenerV1>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TcpListenerV1 {
    bind: SocketAddr,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum QueueFullPolicyV1 {
    DropNewest,
    DropOldest,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MqttV1 {
    max_packet_size_bytes: Option<u32>,
    receive_maximum: Option<NonZeroU16>,
    max_inflight_messages: Option<NonZeroU16>,
    topic_alias_maximum: Option<u16>,
    max_keep_alive_secs: Option<u16>,
    min_keep_alive_secs: Option<u16>,
    max_session_expiry_secs: Option<u32>,
    max_queued_messages: Option<usize>,
    max_queued_bytes: Option<usize>,
    queue_full_policy: Option<QueueFullPolicyV1>,
    queue_qos0_offline: Option<bool>,
    maximum_qos: Option<u8>,
    retain_available: Option<bool>,
    max_topic_levels: Option<usize>,
    max_subscriptions_per_session: Option<usize>,
    connect_timeout_ms: Option<u64>,
    allow_anonymous: Option<bool>,
    deny_subscribe: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EngineV1 {
    topic_shards: Option<usize>,
    session_shards: Option<usize>,
    max_connections: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ShutdownV1 {
    drain_timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogV1 {
    level: Option<String>,
    format: Option<LogFormat>,
}

/// Log output format.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node identity.
    pub node_id: String,
    /// Directory of persistent state.
    pub data_dir: PathBuf,
    /// Address of the MQTT TCP listener.
    pub tcp_listen: SocketAddr,
    /// The MQTT engine's configuration.
    pub broker: BrokerConfig,
    /// Time connections get to close at shutdown.
    pub drain_timeout: Duration,
    /// Default log level.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
}

/// Loads a configuration from TOML text (`source` names the file in errors) and applies the
/// `STARLING_*` overrides found in `env_vars`.
///
/// # Errors
/// Returns an error naming the file, the key and the line for invalid TOML, unknown keys,
/// out-of-range values and invalid environment overrides.
pub fn load_node_config(
    toml_text: &str,
    source: &str,
    env_vars: &HashMap<String, String>,
) -> anyhow::Result<NodeConfig> {
    let versioned: VersionedNodeConfig = if toml_text.trim().is_empty() {
        VersionedNodeConfig::V1(NodeConfigV1::default())
    } else {
        toml::from_str(toml_text)
            .map_err(|error| anyhow::anyhow!("invalid configuration in {source}: {error}"))?
    };
    let VersionedNodeConfig::V1(config) = versioned;
    build_and_validate(config, toml_text, source, env_vars)
}

/// Finds the 1-based line of `key` in the file, for errors found after parsing.
fn line_of(toml_text: &str, key: &str) -> Option<usize> {
    toml_text
        .lines()
        .position(|line| line.trim_start().starts_with(key) && line.contains('='))
        .map(|idx| idx + 1)
}

fn invalid(source: &str, toml_text: &str, key: &str, message: &str) -> anyhow::Error {
    match line_of(toml_text, key.rsplit('.').next().unwrap_or(key)) {
        Some(line) => {
            anyhow::anyhow!("invalid configuration in {source}, line {line}: `{key}` {message}")
        }
        None => anyhow::anyhow!("invalid configuration in {source}: `{key}` {message}"),
    }
}

fn build_and_validate(
    config: NodeConfigV1,
    toml_text: &str,
    source: &str,
    env_vars: &HashMap<String, String>,
) -> anyhow::Result<NodeConfig> {
    let mqtt = config.mqtt;
    let maximum_qos = match mqtt.maximum_qos.unwrap_or(2) {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => {
            return Err(invalid(
                source,
                toml_text,
                "mqtt.maximum_qos",
                "must be 0, 1 or 2",
            ))
        }
    };
    let max_packet_size = mqtt.max_packet_size_bytes.unwrap_or(1024 * 1024);
    if !(16..=268_435_460).contains(&max_packet_size) {
        return Err(invalid(
            source,
            toml_text,
            "mqtt.max_packet_size_bytes",
            "must be between 16 and 268435460",
        ));
    }
    let max_topic_levels = mqtt.max_topic_levels.unwrap_or(128);
    if max_topic_levels == 0 {
        return Err(invalid(
            source,
            toml_text,
            "mqtt.max_topic_levels",
            "must be at least 1",
        ));
    }
    let min_keep_alive = mqtt.min_keep_alive_secs.unwrap_or(0);
    let limits = SessionLimits {
        max_packet_size,
        receive_maximum: mqtt.receive_maximum.map_or(1024, NonZeroU16::get),
        max_inflight: mqtt.max_inflight_messages.map_or(128, NonZeroU16::get),
        topic_alias_maximum: mqtt.topic_alias_maximum.unwrap_or(64),
        max_keep_alive: mqtt.max_keep_alive_secs.unwrap_or(u16::MAX),
        min_keep_alive: (min_keep_alive > 0).then_some(min_keep_alive),
        max_session_expiry_secs: mqtt.max_session_expiry_secs.unwrap_or(u32::MAX),
        max_queued_messages: mqtt.max_queued_messages.unwrap_or(1000),
        max_queued_bytes: mqtt.max_queued_bytes.unwrap_or(100 * 1024 * 1024),
        queue_full_policy: match mqtt
            .queue_full_policy
            .unwrap_or(QueueFullPolicyV1::DropNewest)
        {
            QueueFullPolicyV1::DropNewest => QueueFullPolicy::DropNewest,
            QueueFullPolicyV1::DropOldest => QueueFullPolicy::DropOldest,
        },
        queue_qos0_offline: mqtt.queue_qos0_offline.unwrap_or(false),
        maximum_qos,
        retain_available: mqtt.retain_available.unwrap_or(true),
        max_topic_levels,
        max_subscriptions_per_session: mqtt.max_subscriptions_per_session.unwrap_or(1000),
        connect_timeout: Duration::from_millis(mqtt.connect_timeout_ms.unwrap_or(10_000)),
        allow_anonymous: mqtt.allow_anonymous.unwrap_or(true),
        deny_subscribe: mqtt.deny_subscribe.unwrap_or_default(),
    };
    for filter in &limits.deny_subscribe {
        if starling_core::topic::validate_topic_filter(filter, max_topic_levels).is_err() {
            return Err(invalid(
                source,
                toml_text,
                "mqtt.deny_subscribe",
                &format!("holds an invalid topic filter {filter:?}"),
            ));
        }
    }
    let mut max_connections = config.engine.max_connections.unwrap_or(1_000_000);
    let mut tcp_listen = config
        .listeners
        .tcp
        .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 1883)), |tcp| tcp.bind);
    let mut data_dir = config.data_dir.unwrap_or_else(|| PathBuf::from("./data"));
    let mut node_id = config.node_id.unwrap_or_default();
    let mut log_level = config.log.level.unwrap_or_else(|| "info".to_string());
    let mut log_format = config.log.format.unwrap_or(LogFormat::Text);

    if let Some(value) = env_vars.get("STARLING_LISTEN") {
        tcp_listen = value.parse().with_context(|| {
            format!("invalid STARLING_LISTEN {value:?}: expected an address like 127.0.0.1:1883")
        })?;
    }
    if let Some(value) = env_vars.get("STARLING_DATA_DIR") {
        data_dir = PathBuf::from(value);
    }
    if let Some(value) = env_vars.get("STARLING_NODE_ID") {
        node_id = value.clone();
    }
    if let Some(value) = env_vars.get("STARLING_LOG_LEVEL") {
        log_level = value.clone();
    }
    if let Some(value) = env_vars.get("STARLING_LOG_FORMAT") {
        log_format = match value.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => anyhow::bail!(
                "invalid STARLING_LOG_FORMAT {value:?}: expected \"text\" or \"json\""
            ),
        };
    }
    if let Some(value) = env_vars.get("STARLING_MAX_CONNECTIONS") {
        max_connections = value.parse().with_context(|| {
            format!("invalid STARLING_MAX_CONNECTIONS {value:?}: expected a number")
        })?;
    }
    if node_id.is_empty() {
        node_id = env_vars
            .get("HOSTNAME")
            .cloned()
            .unwrap_or_else(|| "starling-0".to_string());
    }
    let topic_shards = config.engine.topic_shards.unwrap_or(16);
    let session_shards = config.engine.session_shards.unwrap_or(8);
    if topic_shards == 0 {
        return Err(invalid(
            source,
            toml_text,
            "engine.topic_shards",
            "must be at least 1",
        ));
    }
    if session_shards == 0 {
        return Err(invalid(
            source,
            toml_text,
            "engine.session_shards",
            "must be at least 1",
        ));
    }
    Ok(NodeConfig {
        node_id,
        data_dir,
        tcp_listen,
        broker: BrokerConfig {
            limits,
            num_topic_shards: topic_shards,
            num_session_shards: session_shards,
            max_connections: max_connections.max(1),
        },
        drain_timeout: Duration::from_millis(config.shutdown.drain_timeout_ms.unwrap_or(10_000)),
        log_level,
        log_format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_config_loads() {
        let config =
            load_node_config(DEFAULT_CONFIG_TOML, "default.toml", &HashMap::new()).unwrap();
        assert_eq!(config.tcp_listen, "0.0.0.0:1883".parse().unwrap());
        assert_eq!(config.broker.limits.receive_maximum, 1024);
        assert_eq!(config.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn env_overrides_apply() {
        let env = HashMap::from([
            ("STARLING_LISTEN".to_string(), "127.0.0.1:1884".to_string()),
            ("STARLING_DATA_DIR".to_string(), "/tmp/x".to_string()),
        ]);
        let config = load_node_config("", "none", &env).unwrap();
        assert_eq!(config.tcp_listen, "127.0.0.1:1884".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = "version = \"1\"\n[mqtt]\nreceive_maximun = 10\n";
        let error = load_node_config(text, "starling.toml", &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains("starling.toml"), "{error}");
        assert!(error.contains("receive_maximun"), "{error}");
        assert!(error.contains("line 3"), "{error}");
    }

    #[test]
    fn out_of_range_value_is_named_with_its_line() {
        let text = "version = \"1\"\n\n[mqtt]\nmaximum_qos = 3\n";
        let error = load_node_config(text, "starling.toml", &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains("mqtt.maximum_qos"), "{error}");
        assert!(error.contains("line 4"), "{error}");
        let text = "version = \"1\"\n[mqtt]\nreceive_maximum = 0\n";
        let error = load_node_config(text, "starling.toml", &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("receive_maximum") && error.contains("line 3"),
            "{error}"
        );
    }

    #[test]
    fn bad_env_override_names_the_variable() {
        let env = HashMap::from([("STARLING_LISTEN".to_string(), "nope".to_string())]);
        let error = load_node_config("", "none", &env).unwrap_err().to_string();
        assert!(error.contains("STARLING_LISTEN"), "{error}");
    }
}
