//! Prometheus metrics: the recorder (installed by the node only, once per process), the table
//! of every exported metric, and the figures sampled at scrape time (sessions, process).
//!
//! The core updates its counters through the `metrics` facade ([`starling_core::metrics`]);
//! figures that are cheaper to read than to maintain (session counts, queue depths, process
//! figures) are sampled here when `/metrics` is scraped.
//!
//! - [`process`]: RSS, CPU, file descriptors from `/proc/self`.
//! - [`text`]: a strict parser of the exposition format, for `$SYS` and tests.

pub mod process;
pub mod text;

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use starling_core::Broker;

use self::MetricKind::{Counter, Gauge, Histogram};

/// Prometheus type of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (resets on restart).
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of observations (exported as a summary: quantiles, `_sum`, `_count`).
    Histogram,
}

/// One exported metric, as documented in `docs/metrics.md`.
#[derive(Debug, Clone, Copy)]
pub struct MetricDoc {
    /// Metric name.
    pub name: &'static str,
    /// Prometheus type.
    pub kind: MetricKind,
    /// Label names (all of bounded cardinality: never a client id or a topic).
    pub labels: &'static [&'static str],
    /// What it measures.
    pub help: &'static str,
}

const fn doc(
    name: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDoc {
    MetricDoc {
        name,
        kind,
        labels,
        help,
    }
}

/// Every metric the node exports.
pub const METRICS: &[MetricDoc] = &[
    doc("starling_build_info", Gauge, &["version", "profile"], "Always 1; the labels name the build."),
    doc("starling_ready", Gauge, &[], "1 while the node accepts clients (/readyz is 200), 0 while starting or draining."),
    doc("starling_connections_current", Gauge, &[], "Open client connections, including those still before CONNECT."),
    doc("starling_connections_opened_total", Counter, &[], "Accepted TCP connections."),
    doc("starling_connections_closed_total", Counter, &["reason"], "Closed connections by reason (see docs/metrics.md for the reason codes)."),
    doc("starling_protocol_errors_total", Counter, &[], "Connections closed for malformed or illegal input."),
    doc("starling_sessions_online", Gauge, &[], "Sessions with a connected client (sampled at scrape)."),
    doc("starling_sessions_offline", Gauge, &[], "Persistent sessions without a connection (sampled at scrape)."),
    doc("starling_session_queued_messages", Gauge, &[], "Messages queued in session mailboxes, not yet sent (sampled at scrape)."),
    doc("starling_wills_pending", Gauge, &[], "Delayed wills waiting for their delay or session end (sampled at scrape)."),
    doc("starling_sessions_expired_total", Counter, &[], "Sessions ended because their expiry interval passed."),
    doc("starling_sessions_taken_over_total", Counter, &[], "Sessions taken over by a new connection with the same client id."),
    doc("starling_wills_published_total", Counter, &[], "Will messages published."),
    doc("starling_subscriptions", Gauge, &["shard"], "Subscriptions per topic shard (updated every 5 s)."),
    doc("starling_shared_subscription_groups", Gauge, &[], "Shared-subscription groups ($share/{group}/{filter}) (sampled at scrape)."),
    doc("starling_retained_messages", Gauge, &["shard"], "Retained messages per topic shard (updated every 5 s)."),
    doc("starling_storage_batches_total", Counter, &[], "Write batches committed by the storage thread."),
    doc("starling_storage_flushes_total", Counter, &[], "Durable flushes (syncs) of the store."),
    doc("starling_storage_failures_total", Counter, &[], "Failed applies or flushes; after the first the broker stops."),
    doc("starling_storage_group_batches", Histogram, &[], "Batches per group commit (one flush for many writes)."),
    doc("starling_storage_flush_duration_seconds", Histogram, &[], "Time one durable flush of the store took."),
    doc("starling_messages_received_total", Counter, &["qos"], "PUBLISH packets received from clients, by QoS."),
    doc("starling_messages_sent_total", Counter, &["qos"], "PUBLISH packets sent to clients, by QoS (retransmissions excluded)."),
    doc("starling_bytes_received_total", Counter, &[], "Bytes read from client sockets."),
    doc("starling_bytes_sent_total", Counter, &[], "Bytes written to client sockets."),
    doc("starling_messages_dropped_total", Counter, &["reason"], "Messages not delivered, by reason: queue_full, offline_qos0, expired, too_large, no_subscribers, not_authorized."),
    doc("starling_auth_attempts_total", Counter, &["method", "result"], "CONNECT authentications by method (anonymous, password, jwt, http, scram, certificate) and result (success, bad_credentials, not_authorized, banned, unavailable)."),
    doc("starling_auth_revocations_total", Counter, &["reason"], "Connections closed by the broker because a ban now matches (banned) or their credentials expired (expired)."),
    doc("starling_auth_hook_requests_total", Counter, &["result", "cached"], "HTTP hook decisions (allow, deny, error), from the cache or not."),
    doc("starling_auth_reloads_total", Counter, &["file", "result"], "Reloads of the password, ACL, ban and JWT key files, successful or failed (the old content stays)."),
    doc("starling_acl_denied_total", Counter, &["action"], "ACL denials by action: publish (incl. wills at CONNECT), subscribe, read (deliveries and retained messages through partly granted subscriptions)."),
    doc("starling_limits_exceeded_total", Counter, &["limit"], "Per-client limits hit: publish_rate, publish_bytes, subscriptions, packet_size, topic_levels, receive_maximum, topic_alias."),
    doc("starling_listener_connections_current", Gauge, &["listener"], "Open connections of each MQTT listener, handshakes included."),
    doc("starling_listener_connections_refused_total", Counter, &["listener", "reason"], "Connections closed right after accept by a listener's limits, by reason: max_connections, rate_limit."),
    doc("starling_listener_handshake_failures_total", Counter, &["listener", "reason"], "TLS handshakes and WebSocket upgrades that failed, by reason: timeout, client_certificate, tls, websocket."),
    doc("starling_tls_reloads_total", Counter, &["listener", "result"], "Reloads of a TLS listener's files (SIGHUP or a change), by result: success, failure."),
    doc("starling_tls_certificate_expiry_timestamp_seconds", Gauge, &["listener"], "End of validity of the server certificate a TLS listener uses, seconds since the Unix epoch."),
    doc("process_cpu_seconds_total", Gauge, &[], "User and system CPU time of the process, seconds (typed gauge: it is set, not incremented)."),
    doc("process_resident_memory_bytes", Gauge, &[], "Resident set size."),
    doc("process_virtual_memory_bytes", Gauge, &[], "Virtual memory size."),
    doc("process_open_fds", Gauge, &[], "Open file descriptors, client sockets included."),
    doc("process_max_fds", Gauge, &[], "Soft limit on open file descriptors."),
    doc("process_threads", Gauge, &[], "Threads of the process."),
    doc("process_start_time_seconds", Gauge, &[], "Start time of the process, seconds since the Unix epoch."),
];

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's global `metrics` recorder, once; later
/// calls return the same handle. Must run before [`Broker::start`], which registers the core's
/// metric handles with whatever recorder is installed then.
///
/// Returns `None` if another recorder was installed first (an embedding application's).
pub fn install_prometheus_recorder() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => {
                describe_all();
                let profile = if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                };
                gauge!(
                    "starling_build_info",
                    "version" => env!("CARGO_PKG_VERSION"),
                    "profile" => profile
                )
                .set(1.0);
                Some(handle)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot install the prometheus recorder; /metrics is disabled");
                None
            }
        })
        .clone()
}

fn describe_all() {
    for metric in METRICS {
        match metric.kind {
            MetricKind::Counter => describe_counter!(metric.name, metric.help),
            MetricKind::Gauge => describe_gauge!(metric.name, metric.help),
            MetricKind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
}

/// Updates the figures sampled at scrape time.
pub(crate) async fn sample_gauges(broker: &Broker, ready: bool) {
    gauge!("starling_ready").set(if ready { 1.0 } else { 0.0 });
    match broker.registry().stats().await {
        Ok(stats) => {
            gauge!("starling_sessions_online").set(stats.num_online as f64);
            gauge!("starling_sessions_offline").set(stats.num_offline as f64);
            gauge!("starling_session_queued_messages").set(stats.num_queued_messages as f64);
            gauge!("starling_wills_pending").set(stats.num_pending_wills as f64);
        }
        Err(error) => tracing::warn!(%error, "session figures not sampled"),
    }
    gauge!("starling_shared_subscription_groups").set(broker.router().num_shared_groups() as f64);
    let sample = process::sample();
    let figures = [
        ("process_cpu_seconds_total", sample.cpu_seconds),
        (
            "process_resident_memory_bytes",
            sample.resident_memory_bytes.map(|v| v as f64),
        ),
        (
            "process_virtual_memory_bytes",
            sample.virtual_memory_bytes.map(|v| v as f64),
        ),
        ("process_open_fds", sample.open_fds.map(|v| v as f64)),
        ("process_max_fds", sample.max_fds.map(|v| v as f64)),
        ("process_threads", sample.threads.map(|v| v as f64)),
        ("process_start_time_seconds", sample.start_time_seconds),
    ];
    for (name, value) in figures {
        if let Some(value) = value {
            gauge!(name).set(value);
        }
    }
}

/// Renders the exposition text (after the exporter's periodic upkeep).
pub(crate) fn render(handle: &PrometheusHandle) -> String {
    handle.run_upkeep();
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_documented_in_docs_metrics_md() {
        let docs = include_str!("../../docs/metrics.md");
        for metric in METRICS {
            assert!(
                docs.contains(&format!("`{}`", metric.name)),
                "{} is missing from docs/metrics.md",
                metric.name
            );
        }
    }

    #[test]
    fn the_grafana_dashboard_uses_only_exported_metrics() {
        let dashboard = include_str!("../../deploy/grafana/starling-dashboard.json");
        let mut num_references = 0;
        for (idx, _) in dashboard
            .match_indices("starling_")
            .chain(dashboard.match_indices("process_"))
        {
            let name: String = dashboard[idx..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name == "starling_" {
                continue;
            }
            num_references += 1;
            assert!(
                METRICS.iter().any(|metric| metric.name == name),
                "the dashboard queries {name}, which is not exported"
            );
        }
        assert!(num_references > 20, "{num_references}");
    }

    #[test]
    fn metric_names_follow_the_conventions() {
        for metric in METRICS {
            assert!(
                metric.name.starts_with("starling_") || metric.name.starts_with("process_"),
                "{}",
                metric.name
            );
            if metric.kind == MetricKind::Counter {
                assert!(metric.name.ends_with("_total"), "{}", metric.name);
            }
            for label in metric.labels {
                assert!(
                    !["client_id", "topic", "peer"].contains(label),
                    "{} has an unbounded label {label}",
                    metric.name
                );
            }
        }
    }
}
