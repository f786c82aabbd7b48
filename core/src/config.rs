//! Plain configuration structs the node hands to the core; defaults live in `starling-node`.

use std::time::Duration;

use crate::codec::QoS;

/// What a session does when its queue of undelivered messages is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueFullPolicy {
    /// Drop the message that did not fit, count it.
    DropNewest,
    /// Drop the oldest queued message to make room, count it.
    DropOldest,
    /// Drop the message that did not fit, count it, and tell an MQTT 5 publisher of a QoS 1/2
    /// message with reason code 0x97 (Quota exceeded) in its PUBACK/PUBREC.
    Refuse,
}

/// Limits and protocol settings every session of the broker works with.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Maximum Packet Size the broker accepts, advertised in CONNACK (bytes, fixed header included).
    pub max_packet_size: u32,
    /// Receive Maximum the broker advertises: concurrent inbound QoS 1/2 publishes per client.
    pub receive_maximum: u16,
    /// Maximum outbound QoS 1/2 messages in flight per session (also capped by the client's).
    pub max_inflight: u16,
    /// Topic Alias Maximum the broker advertises for inbound aliases.
    pub topic_alias_maximum: u16,
    /// Upper bound on the keep alive the broker accepts; larger requests get Server Keep Alive.
    pub max_keep_alive: u16,
    /// Keep alive to impose on clients that ask for 0 (None accepts 0).
    pub min_keep_alive: Option<u16>,
    /// Upper bound on session expiry, seconds (also applied to MQTT 3.x persistent sessions).
    pub max_session_expiry_secs: u32,
    /// Messages queued per session before the overflow policy applies.
    pub max_queued_messages: usize,
    /// Payload bytes queued per session before the overflow policy applies.
    pub max_queued_bytes: usize,
    /// What to drop when the queue is full.
    pub queue_full_policy: QueueFullPolicy,
    /// Whether QoS 0 messages are queued for offline persistent sessions.
    pub queue_qos0_offline: bool,
    /// Maximum QoS granted to subscriptions.
    pub maximum_qos: QoS,
    /// Whether retained messages are supported.
    pub retain_available: bool,
    /// Maximum levels of a topic name or filter.
    pub max_topic_levels: usize,
    /// Maximum subscriptions one session may hold.
    pub max_subscriptions_per_session: usize,
    /// Time a new connection has to send CONNECT.
    pub connect_timeout: Duration,
    /// Whether clients without credentials are accepted.
    pub allow_anonymous: bool,
    /// Topic filters nobody may subscribe to (SUBACK 0x80); a minimal ACL until the security work lands.
    pub deny_subscribe: Vec<String>,
}

impl SessionLimits {
    /// Returns small, permissive limits for tests.
    pub fn for_test() -> SessionLimits {
        SessionLimits {
            max_packet_size: 1024 * 1024,
            receive_maximum: 32,
            max_inflight: 32,
            topic_alias_maximum: 16,
            max_keep_alive: 3600,
            min_keep_alive: None,
            max_session_expiry_secs: u32::MAX,
            max_queued_messages: 1000,
            max_queued_bytes: 16 * 1024 * 1024,
            queue_full_policy: QueueFullPolicy::DropNewest,
            queue_qos0_offline: false,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            max_topic_levels: 32,
            max_subscriptions_per_session: 1000,
            connect_timeout: Duration::from_secs(10),
            allow_anonymous: true,
            deny_subscribe: Vec::new(),
        }
    }
}

/// Durable storage handed to the broker: an open store and the group-commit settings.
#[derive(Clone)]
pub struct StorageConfig {
    /// The open store (opened by the node, which owns files).
    pub store: std::sync::Arc<dyn crate::storage::Store>,
    /// Group commit settings.
    pub writer: crate::storage::StorageWriterConfig,
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("engine", &self.store.engine())
            .field("writer", &self.writer)
            .finish()
    }
}

/// Settings of the broker as a whole.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Durable storage; `None` keeps every session in memory only.
    pub storage: Option<StorageConfig>,
    /// Per-session limits.
    pub limits: SessionLimits,
    /// Number of topic shards (plus one for filters that start with a wildcard).
    pub num_topic_shards: usize,
    /// Number of session registry shards.
    pub num_session_shards: usize,
    /// Maximum simultaneous connections; further connections wait in the accept backlog.
    pub max_connections: usize,
    /// Authentication and authorization; `None` accepts every client (see
    /// `SessionLimits::allow_anonymous`) and checks nothing.
    pub auth: Option<crate::auth::AuthHook>,
}

impl BrokerConfig {
    /// Returns a configuration for tests.
    pub fn for_test() -> BrokerConfig {
        BrokerConfig {
            storage: None,
            limits: SessionLimits::for_test(),
            num_topic_shards: 4,
            num_session_shards: 4,
            max_connections: 10_000,
            auth: None,
        }
    }
}
