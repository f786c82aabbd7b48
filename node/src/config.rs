//! Node configuration: one TOML file (`deny_unknown_fields`, versioned), embedded defaults,
//! `STARLING_*` environment overrides, validated into typed values in one step.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    num::NonZeroU16,
    path::PathBuf,
    time::Duration,
};

use anyhow::Context;
use serde::Deserialize;
use starling_core::{codec::QoS, BrokerConfig, QueueFullPolicy, SessionLimits};

mod auth;
mod effective;
mod listeners;

pub use auth::{AuthConfig, HttpHookConfig, JwtConfig};
pub use effective::effective_config_json;
pub use listeners::{
    ClientAuth, ListenerConfig, ListenerProtocol, TlsListenerConfig, TlsVersion, TCP_LISTENER_NAME,
};

/// The embedded default configuration, printed by `starling config default`.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("config/default.toml");

/// The `version` tag alone. The versioned struct is then deserialized straight from the text:
/// a serde internally tagged enum would buffer the input and lose the positions toml needs to
/// name the line of an error.
#[derive(Deserialize)]
struct VersionTag {
    version: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NodeConfigV1 {
    /// Always "1" here; checked through [`VersionTag`] first.
    #[serde(default)]
    version: String,
    node_id: Option<String>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    listeners: BTreeMap<String, listeners::ListenerV1>,
    #[serde(default)]
    mqtt: MqttV1,
    #[serde(default)]
    engine: EngineV1,
    #[serde(default)]
    shutdown: ShutdownV1,
    #[serde(default)]
    log: LogV1,
    #[serde(default)]
    admin: AdminV1,
    #[serde(default)]
    storage: StorageV1,
    #[serde(default)]
    auth: auth::AuthV1,
    #[serde(default)]
    acl: auth::AclV1,
    #[serde(default)]
    limits: auth::LimitsV1,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StorageV1 {
    engine: Option<StorageEngine>,
    fsync: Option<FsyncV1>,
    max_commit_delay_ms: Option<u64>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum FsyncV1 {
    Always,
    Never,
}

/// Where sessions, queues and retained messages are kept.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StorageEngine {
    /// redb: one file, `<data_dir>/starling.redb`, real fsync (the default).
    Redb,
    /// sled: a directory, `<data_dir>/sled`.
    Sled,
    /// Nothing is stored; a restart loses every session and retained message.
    Memory,
}

impl StorageEngine {
    /// Returns the config name.
    pub fn name(self) -> &'static str {
        match self {
            StorageEngine::Redb => "redb",
            StorageEngine::Sled => "sled",
            StorageEngine::Memory => "memory",
        }
    }
}

/// The validated `[storage]` section.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// The engine.
    pub engine: StorageEngine,
    /// Whether each group commit is synced to disk before acknowledgements go out.
    pub fsync_always: bool,
    /// Longest wait for more writes before a group commit.
    pub max_commit_delay: Duration,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum QueueFullPolicyV1 {
    DropNewest,
    DropOldest,
    Refuse,
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AdminV1 {
    enabled: Option<bool>,
    bind: Option<SocketAddr>,
    token: Option<String>,
    metrics: Option<bool>,
    sys_interval_secs: Option<u64>,
}

/// The admin HTTP listener: probes, Prometheus metrics, the admin REST API and `$SYS` topics.
#[derive(Clone)]
pub struct AdminConfig {
    /// Whether the admin listener runs at all.
    pub enabled: bool,
    /// Address of the admin listener.
    pub bind: SocketAddr,
    /// Bearer token the REST API requires; `None` leaves it open (bind to a private address).
    pub token: Option<String>,
    /// Whether the Prometheus recorder is installed and `/metrics` served.
    pub metrics: bool,
    /// Interval of the `$SYS/broker/...` topics; `None` disables them.
    pub sys_interval: Option<Duration>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("enabled", &self.enabled)
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("metrics", &self.metrics)
            .field("sys_interval", &self.sys_interval)
            .finish()
    }
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
    /// The MQTT listeners (at least one).
    pub listeners: Vec<ListenerConfig>,
    /// The MQTT engine's configuration.
    pub broker: BrokerConfig,
    /// Time connections get to close at shutdown.
    pub drain_timeout: Duration,
    /// Default log level.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// The admin listener.
    pub admin: AdminConfig,
    /// Durable storage.
    pub storage: StorageSettings,
    /// Authentication, authorization, bans and per-client limits.
    pub auth: AuthConfig,
}

impl NodeConfig {
    /// Returns the bind address of the listener named `tcp`, if there is one.
    pub fn tcp_listen(&self) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|listener| listener.name == TCP_LISTENER_NAME)
            .map(|listener| listener.bind)
    }
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
    let parse_error =
        |error: toml::de::Error| anyhow::anyhow!("invalid configuration in {source}: {error}");
    let config: NodeConfigV1 = if toml_text.trim().is_empty() {
        NodeConfigV1::default()
    } else {
        let tag: VersionTag = toml::from_str(toml_text).map_err(parse_error)?;
        match tag.version.as_deref() {
            Some("1") => toml::from_str(toml_text).map_err(parse_error)?,
            Some(other) => {
                return Err(invalid(
                    source,
                    toml_text,
                    "version",
                    &format!("is {other:?}; this node reads version \"1\""),
                ))
            }
            None => anyhow::bail!(
                "invalid configuration in {source}: missing `version = \"1\"` at the top"
            ),
        }
    };
    debug_assert!(config.version.is_empty() || config.version == "1");
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
        max_inflight: mqtt.max_inflight_messages.map_or(1024, NonZeroU16::get),
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
            QueueFullPolicyV1::Refuse => QueueFullPolicy::Refuse,
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
    let auth = auth::build_auth_config(
        config.auth,
        config.acl,
        config.limits,
        limits.allow_anonymous,
        max_topic_levels,
        &|key, message| invalid(source, toml_text, key, message),
    )?;
    let mut max_connections = config.engine.max_connections.unwrap_or(1_000_000);
    let listeners = listeners::build_listeners(config.listeners, toml_text, source, env_vars)?;
    let mut data_dir = config.data_dir.unwrap_or_else(|| PathBuf::from("./data"));
    let mut node_id = config.node_id.unwrap_or_default();
    let mut log_level = config.log.level.unwrap_or_else(|| "info".to_string());
    let mut log_format = config.log.format.unwrap_or(LogFormat::Text);

    if let Some(value) = env_vars.get("STARLING_DATA_DIR") {
        data_dir = PathBuf::from(value);
    }
    let mut storage_engine = config.storage.engine.unwrap_or(StorageEngine::Redb);
    if let Some(value) = env_vars.get("STARLING_STORAGE_ENGINE") {
        storage_engine = match value.as_str() {
            "redb" => StorageEngine::Redb,
            "sled" => StorageEngine::Sled,
            "memory" => StorageEngine::Memory,
            _ => anyhow::bail!(
                "invalid STARLING_STORAGE_ENGINE {value:?}: expected \"redb\", \"sled\" or \"memory\""
            ),
        };
    }
    let max_commit_delay_ms = config.storage.max_commit_delay_ms.unwrap_or(2);
    if max_commit_delay_ms > 1000 {
        return Err(invalid(
            source,
            toml_text,
            "storage.max_commit_delay_ms",
            "must be at most 1000",
        ));
    }
    let storage = StorageSettings {
        engine: storage_engine,
        fsync_always: matches!(
            config.storage.fsync.unwrap_or(FsyncV1::Always),
            FsyncV1::Always
        ),
        max_commit_delay: Duration::from_millis(max_commit_delay_ms),
    };
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
    let mut admin_bind = config
        .admin
        .bind
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    if let Some(value) = env_vars.get("STARLING_ADMIN_BIND") {
        admin_bind = value.parse().with_context(|| {
            format!(
                "invalid STARLING_ADMIN_BIND {value:?}: expected an address like 127.0.0.1:8080"
            )
        })?;
    }
    let mut admin_token = config.admin.token;
    if let Some(value) = env_vars.get("STARLING_ADMIN_TOKEN") {
        admin_token = Some(value.clone());
    }
    // An empty token means no token, so a chart can always render the key.
    admin_token = admin_token.filter(|token| !token.is_empty());
    let sys_interval_secs = config.admin.sys_interval_secs.unwrap_or(10);
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
        listeners,
        storage,
        broker: BrokerConfig {
            storage: None,
            limits,
            num_topic_shards: topic_shards,
            num_session_shards: session_shards,
            max_connections: max_connections.max(1),
            auth: None,
        },
        drain_timeout: Duration::from_millis(config.shutdown.drain_timeout_ms.unwrap_or(10_000)),
        log_level,
        log_format,
        admin: AdminConfig {
            enabled: config.admin.enabled.unwrap_or(true),
            bind: admin_bind,
            token: admin_token,
            metrics: config.admin.metrics.unwrap_or(true),
            sys_interval: (sys_interval_secs > 0).then(|| Duration::from_secs(sys_interval_secs)),
        },
        auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_config_loads() {
        let config =
            load_node_config(DEFAULT_CONFIG_TOML, "default.toml", &HashMap::new()).unwrap();
        assert_eq!(config.tcp_listen(), Some("0.0.0.0:1883".parse().unwrap()));
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
        assert_eq!(config.tcp_listen(), Some("127.0.0.1:1884".parse().unwrap()));
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
    fn admin_keys_and_overrides_apply() {
        let config = load_node_config("", "none", &HashMap::new()).unwrap();
        assert!(config.admin.enabled && config.admin.metrics);
        assert_eq!(config.admin.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.admin.token, None);
        assert_eq!(config.admin.sys_interval, Some(Duration::from_secs(10)));

        let text = "version = \"1\"\n[admin]\nbind = \"0.0.0.0:9090\"\ntoken = \"\"\nmetrics = false\nsys_interval_secs = 0\n";
        let config = load_node_config(text, "starling.toml", &HashMap::new()).unwrap();
        assert_eq!(config.admin.bind, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(config.admin.token, None, "an empty token is no token");
        assert!(!config.admin.metrics);
        assert_eq!(config.admin.sys_interval, None);

        let env = HashMap::from([
            ("STARLING_ADMIN_BIND".to_string(), "127.0.0.1:0".to_string()),
            ("STARLING_ADMIN_TOKEN".to_string(), "s3cret".to_string()),
        ]);
        let config = load_node_config(text, "starling.toml", &env).unwrap();
        assert_eq!(config.admin.bind, "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.admin.token.as_deref(), Some("s3cret"));
        assert!(
            !format!("{config:?}").contains("s3cret"),
            "Debug redacts the token"
        );
    }

    #[test]
    fn unknown_admin_key_is_refused() {
        let text = "version = \"1\"\n[admin]\nport = 8080\n";
        let error = load_node_config(text, "starling.toml", &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("port") && error.contains("line 3"),
            "{error}"
        );
        let error = load_node_config("version = \"2\"\n", "starling.toml", &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("version") && error.contains("line 1"),
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
