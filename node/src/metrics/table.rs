//! The table of every metric a node can export, the same list as `docs/metrics.md` (unit and
//! integration tests keep the three in step: this table, the document and `/metrics`).

use self::MetricKind::{Counter, Gauge, Histogram};
use self::Presence::{Always, WithBridges, WithStorage, WithTls};

/// Prometheus type of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (resets on restart).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Bucketed observations: `_bucket{le}`, `_sum` and `_count` series.
    Histogram,
}

impl MetricKind {
    /// The type name of the exposition's `# TYPE` line.
    pub fn type_name(self) -> &'static str {
        match self {
            Counter => "counter",
            Gauge => "gauge",
            Histogram => "histogram",
        }
    }
}

/// When a metric appears in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// From the start of every node (at zero until something happens).
    Always,
    /// Once the node runs the durable storage writer.
    WithStorage,
    /// Once the node runs bridges (not wired into the node yet).
    WithBridges,
    /// With a `tls` or `wss` listener.
    WithTls,
}

/// One exported metric, as documented in `docs/metrics.md`.
#[derive(Debug, Clone, Copy)]
pub struct MetricDoc {
    /// Metric name (the family name for a histogram).
    pub name: &'static str,
    /// Prometheus type.
    pub kind: MetricKind,
    /// Label names (all of bounded cardinality: never a client id or a topic), without a
    /// histogram's `le`.
    pub labels: &'static [&'static str],
    /// When it is exported.
    pub presence: Presence,
    /// What it measures.
    pub help: &'static str,
}

const fn doc(
    name: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDoc {
    doc_when(Always, name, kind, labels, help)
}

const fn doc_when(
    presence: Presence,
    name: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDoc {
    MetricDoc {
        name,
        kind,
        labels,
        presence,
        help,
    }
}

/// Every metric the node exports.
#[rustfmt::skip]
pub const METRICS: &[MetricDoc] = &[
    doc("starling_build_info", Gauge, &["version", "commit", "profile", "rustc"], "Always 1; the labels name the build."),
    doc("starling_ready", Gauge, &[], "1 while the node accepts clients (/readyz is 200), 0 while starting or draining."),
    doc("starling_connections_current", Gauge, &[], "Open client connections, including those still before CONNECT."),
    doc("starling_connections_opened_total", Counter, &[], "Accepted TCP connections."),
    doc("starling_connections_closed_total", Counter, &["reason"], "Closed connections by reason (see docs/metrics.md for the reason codes)."),
    doc("starling_protocol_errors_total", Counter, &[], "Connections closed for malformed or illegal input."),
    doc("starling_listener_connections_current", Gauge, &["listener"], "Open client connections per listener."),
    doc("starling_listener_connections_opened_total", Counter, &["listener"], "Accepted connections per listener."),
    doc("starling_auth_attempts_total", Counter, &["method", "result"], "Authentication attempts (every CONNECT and re-authentication, with or without an auth provider) by method (anonymous, password, jwt, http, scram, enhanced, certificate) and result (success, bad_credentials, not_authorized, banned, unavailable, aborted)."),
    doc("starling_auth_revocations_total", Counter, &["reason"], "Connections closed by the broker because a ban now matches (banned) or their credentials expired (expired)."),
    doc("starling_auth_hook_requests_total", Counter, &["result", "cached"], "HTTP hook decisions (allow, deny, error), from the cache or not."),
    doc("starling_auth_password_checks_total", Counter, &["cached"], "Password file checks at CONNECT: cached=\"false\" ran argon2, cached=\"true\" matched a remembered success."),
    doc("starling_auth_reloads_total", Counter, &["file", "result"], "Reloads of the password, ACL, ban and JWT key files, successful or failed (the old content stays)."),
    doc("starling_acl_denied_total", Counter, &["action"], "ACL denials by action: publish (incl. wills at CONNECT), subscribe, read."),
    doc("starling_limits_exceeded_total", Counter, &["limit"], "Per-client limits hit: publish_rate, publish_bytes, subscriptions, packet_size, topic_levels, receive_maximum, topic_alias."),
    doc("starling_listener_connections_refused_total", Counter, &["listener", "reason"], "Connections closed right after accept by a listener's limits, by reason: max_connections, rate_limit."),
    doc("starling_listener_handshake_failures_total", Counter, &["listener", "reason"], "TLS handshakes and WebSocket upgrades that failed, by reason: timeout, client_certificate, tls, websocket."),
    doc_when(WithTls, "starling_tls_reloads_total", Counter, &["listener", "result"], "Reloads of a TLS listener's files (SIGHUP or a change), by result: success, failure."),
    doc_when(WithTls, "starling_tls_certificate_expiry_timestamp_seconds", Gauge, &["listener"], "End of validity of the server certificate a TLS listener uses, seconds since the Unix epoch."),
    doc("starling_sessions_online", Gauge, &[], "Sessions with a connected client (sampled at scrape)."),
    doc("starling_sessions_offline", Gauge, &[], "Persistent sessions without a connection (sampled at scrape)."),
    doc("starling_session_queued_messages", Gauge, &[], "Messages queued in session mailboxes, not yet sent (sampled at scrape)."),
    doc("starling_session_inflight_messages", Gauge, &[], "Outgoing QoS 1/2 messages sent and not yet acknowledged, over every session (sampled at scrape)."),
    doc("starling_session_largest_inflight_messages", Gauge, &[], "The largest outgoing in-flight count of one session (sampled at scrape)."),
    doc("starling_session_largest_queued_messages", Gauge, &[], "The longest queue of one session (sampled at scrape)."),
    doc("starling_sessions_by_inflight_messages", Gauge, &["le"], "Sessions with at most le outgoing QoS 1/2 messages in flight, cumulative like histogram buckets (sampled at scrape)."),
    doc("starling_sessions_by_queued_messages", Gauge, &["le"], "Sessions with at most le queued messages, cumulative like histogram buckets (sampled at scrape)."),
    doc("starling_wills_pending", Gauge, &[], "Delayed wills waiting for their delay or session end (sampled at scrape)."),
    doc("starling_sessions_expired_total", Counter, &[], "Sessions ended because their expiry interval passed."),
    doc("starling_sessions_taken_over_total", Counter, &[], "Sessions taken over by a new connection with the same client id."),
    doc("starling_wills_published_total", Counter, &[], "Will messages published."),
    doc("starling_subscriptions", Gauge, &["shard"], "Subscriptions per topic shard (updated every 5 s)."),
    doc("starling_shared_subscription_groups", Gauge, &[], "Shared-subscription groups ($share/{group}/{filter}) (sampled at scrape)."),
    doc("starling_retained_messages", Gauge, &["shard"], "Retained messages per topic shard (updated every 5 s)."),
    doc("starling_messages_received_total", Counter, &["qos"], "PUBLISH packets received from clients, by QoS."),
    doc("starling_messages_sent_total", Counter, &["qos"], "PUBLISH packets sent to clients, by QoS (retransmissions excluded)."),
    doc("starling_bytes_received_total", Counter, &[], "Bytes read from client sockets."),
    doc("starling_bytes_sent_total", Counter, &[], "Bytes written to client sockets."),
    doc("starling_messages_dropped_total", Counter, &["reason"], "Messages not delivered, by reason: queue_full, offline_qos0, expired, too_large, no_subscribers, not_authorized."),
    doc("starling_message_delivery_latency_seconds", Histogram, &[], "Time from receiving a PUBLISH to writing its delivery into a subscriber's socket buffer."),
    doc("starling_actor_messages_handled_total", Counter, &["actor"], "Messages handled by the actors of a kind (topic_shard, registry_shard)."),
    doc("starling_actor_mailbox_depth", Gauge, &["actor"], "Messages sent to the actors of a kind and not yet handled (topic_shard, registry_shard)."),
    doc("starling_actor_mailbox_wait_seconds", Histogram, &["actor"], "Time a periodic tick message waited in an actor's mailbox before it was handled."),
    doc("starling_actor_failures_total", Counter, &[], "Shard actors that failed or stopped (the node then shuts down)."),
    doc_when(WithStorage, "starling_storage_batches_total", Counter, &[], "Write batches applied to the store."),
    doc_when(WithStorage, "starling_storage_commits_total", Counter, &[], "Group commits applied (one store apply each)."),
    doc_when(WithStorage, "starling_storage_flushes_total", Counter, &[], "Durable flushes (fsync) of the store."),
    doc_when(WithStorage, "starling_storage_write_errors_total", Counter, &[], "Failed applies or flushes; after the first the writer refuses further writes."),
    doc_when(WithStorage, "starling_storage_queue_depth", Gauge, &[], "Write requests waiting for the storage writer, sampled at each group commit."),
    doc_when(WithStorage, "starling_storage_batch_size", Histogram, &[], "Write batches applied together in one group commit."),
    doc_when(WithStorage, "starling_storage_flush_latency_seconds", Histogram, &[], "Duration of one durable commit of the store (applying a group and syncing it to disk)."),
    doc_when(WithStorage, "starling_storage_transient_entries_total", Counter, &[], "Queue entries written and removed within one group commit (a fast subscriber acknowledged before the group was applied), which never reached the store."),
    doc_when(WithBridges, "starling_bridge_sent_messages_total", Counter, &["bridge"], "Messages a bridge sink accepted."),
    doc_when(WithBridges, "starling_bridge_dropped_messages_total", Counter, &["bridge"], "Messages a bridge discarded (buffer full, or rejected by the sink)."),
    doc_when(WithBridges, "starling_bridge_failed_sends_total", Counter, &["bridge"], "Failed attempts to send a batch to a bridge sink."),
    doc_when(WithBridges, "starling_bridge_buffered_messages", Gauge, &["bridge"], "Messages waiting in a bridge buffer."),
    doc("process_cpu_seconds_total", Gauge, &[], "User and system CPU time of the process, seconds (typed gauge: it is set, not incremented)."),
    doc("process_resident_memory_bytes", Gauge, &[], "Resident set size."),
    doc("process_virtual_memory_bytes", Gauge, &[], "Virtual memory size."),
    doc("process_open_fds", Gauge, &[], "Open file descriptors, client sockets included."),
    doc("process_max_fds", Gauge, &[], "Soft limit on open file descriptors."),
    doc("process_threads", Gauge, &[], "Threads of the process."),
    doc("process_start_time_seconds", Gauge, &[], "Start time of the process, seconds since the Unix epoch."),
];

/// Looks a metric up by its family name.
pub fn find(name: &str) -> Option<&'static MetricDoc> {
    METRICS.iter().find(|metric| metric.name == name)
}

/// The family a sample name belongs to: a histogram's `_bucket`, `_sum` and `_count` series
/// map to the histogram; other names to themselves.
pub fn family_of(sample_name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(family) = sample_name.strip_suffix(suffix) {
            if find(family).is_some_and(|metric| metric.kind == Histogram) {
                return family;
            }
        }
    }
    sample_name
}
