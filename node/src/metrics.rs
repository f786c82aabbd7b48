//! Prometheus metrics: the recorder (installed by the node only, once per process), the table
//! of every exported metric, and the figures sampled at scrape time (sessions, process).
//!
//! The core updates its counters through the `metrics` facade ([`starling_core::metrics`]);
//! figures that are cheaper to read than to maintain (session counts, queue depths, process
//! figures) are sampled here when `/metrics` is scraped.
//!
//! The core's hot-path histograms ([`starling_core::metrics::histogram`]) are fixed-bucket
//! counters of their own; `render` appends them to the recorder's output.
//!
//! - [`table`]: every metric with its type, labels and meaning ([`METRICS`]).
//! - [`process`]: RSS, CPU, file descriptors from `/proc/self`.
//! - [`text`]: a strict parser of the exposition format, for `$SYS` and tests.

pub mod process;
pub mod table;
pub mod text;

use std::{fmt::Write, sync::OnceLock};

use metrics::{describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use starling_core::{
    metrics::{histogram, striped},
    registry::{DepthBuckets, SESSION_DEPTH_BOUNDS},
    Broker,
};

pub use table::{MetricDoc, MetricKind, Presence, METRICS};

/// Commit the binary was built from (`unknown` when built without git).
pub const BUILD_COMMIT: &str = env!("STARLING_BUILD_COMMIT");

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
                striped::enable();
                let profile = if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                };
                gauge!(
                    "starling_build_info",
                    "version" => env!("CARGO_PKG_VERSION"),
                    "commit" => BUILD_COMMIT,
                    "profile" => profile,
                    "rustc" => env!("STARLING_BUILD_RUSTC")
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
            // Rendered with their help text by `render`.
            MetricKind::Histogram => {}
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
            gauge!("starling_session_inflight_messages").set(stats.num_inflight_messages as f64);
            gauge!("starling_session_largest_inflight_messages")
                .set(stats.max_inflight_messages as f64);
            gauge!("starling_session_largest_queued_messages")
                .set(stats.max_queued_messages as f64);
            set_depth_buckets(
                "starling_sessions_by_inflight_messages",
                &stats.sessions_by_inflight,
            );
            set_depth_buckets(
                "starling_sessions_by_queued_messages",
                &stats.sessions_by_queued,
            );
        }
        Err(error) => tracing::warn!(%error, "session figures not sampled"),
    }
    gauge!("starling_actor_mailbox_depth", "actor" => "registry_shard")
        .set(broker.registry().mailbox_depth() as f64);
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

/// Label values `le` of the session depth buckets: the bounds, then `+Inf`.
fn depth_bucket_labels() -> &'static [String] {
    static LABELS: OnceLock<Vec<String>> = OnceLock::new();
    LABELS.get_or_init(|| {
        SESSION_DEPTH_BOUNDS
            .iter()
            .map(ToString::to_string)
            .chain(["+Inf".to_owned()])
            .collect()
    })
}

/// Sets one gauge per bucket bound: sessions whose depth is at most `le` (cumulative, like a
/// histogram's buckets, so `histogram_quantile` reads percentiles across sessions).
fn set_depth_buckets(name: &'static str, buckets: &DepthBuckets) {
    let mut cumulative = 0;
    for (count, le) in buckets.iter().zip(depth_bucket_labels()) {
        cumulative += count;
        gauge!(name, "le" => le.as_str()).set(cumulative as f64);
    }
}

/// Renders the exposition text (after the exporter's periodic upkeep), followed by the core's
/// fixed-bucket histograms.
pub(crate) fn render(handle: &PrometheusHandle) -> String {
    striped::sync_all();
    handle.run_upkeep();
    let mut text = handle.render();
    render_histograms(&histogram::snapshot_all(), &mut text);
    text
}

/// Appends histograms in the exposition format; one `# HELP`/`# TYPE` per family.
fn render_histograms(snapshots: &[histogram::HistogramSnapshot], out: &mut String) {
    let mut previous = "";
    for snapshot in snapshots {
        if snapshot.name != previous {
            previous = snapshot.name;
            let _ = writeln!(out, "# HELP {} {}", snapshot.name, snapshot.help);
            let _ = writeln!(out, "# TYPE {} histogram", snapshot.name);
        }
        let mut labels = String::new();
        for (name, value) in &snapshot.labels {
            let value = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(labels, "{name}=\"{value}\",");
        }
        for (bound, count) in &snapshot.buckets {
            let le = if bound.is_infinite() {
                "+Inf".to_owned()
            } else {
                bound.to_string()
            };
            let _ = writeln!(
                out,
                "{}_bucket{{{labels}le=\"{le}\"}} {count}",
                snapshot.name
            );
        }
        let labels = labels.trim_end_matches(',');
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{}_sum{braces} {}", snapshot.name, snapshot.sum);
        let _ = writeln!(out, "{}_count{braces} {}", snapshot.name, snapshot.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of the metric tables of docs/metrics.md: name, type, labels.
    fn documented_rows() -> Vec<(String, String, Vec<String>)> {
        let docs = include_str!("../../docs/metrics.md");
        let mut rows = Vec::new();
        for line in docs.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() < 5 {
                continue;
            }
            let name = cells[1].trim_matches('`');
            if !(name.starts_with("starling_") || name.starts_with("process_")) {
                continue;
            }
            let labels = cells[3]
                .split(',')
                .map(|label| label.trim().trim_matches('`').to_owned())
                .filter(|label| !label.is_empty())
                .collect();
            rows.push((name.to_owned(), cells[2].to_owned(), labels));
        }
        rows
    }

    #[test]
    fn docs_metrics_md_has_one_row_per_metric_with_its_type_and_labels() {
        let rows = documented_rows();
        for metric in METRICS {
            let matching: Vec<_> = rows.iter().filter(|row| row.0 == metric.name).collect();
            assert_eq!(
                matching.len(),
                1,
                "rows of {} in docs/metrics.md",
                metric.name
            );
            let (_, kind, labels) = matching[0];
            assert_eq!(kind, metric.kind.type_name(), "type of {}", metric.name);
            assert_eq!(labels, &metric.labels.to_vec(), "labels of {}", metric.name);
        }
        for (name, _, _) in &rows {
            assert!(
                table::find(name).is_some(),
                "docs/metrics.md documents {name}, which METRICS does not list"
            );
        }
    }

    fn rust_sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_sources(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                out.push(path);
            }
        }
    }

    /// Every metric name the code registers (a string literal `"starling_..."`) is in the table,
    /// hence in docs/metrics.md.
    #[test]
    fn every_metric_name_in_the_code_is_in_the_table() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        for krate in ["core", "node", "bridges", "cluster", "proto"] {
            rust_sources(&root.join(krate).join("src"), &mut files);
        }
        let mut names = std::collections::BTreeSet::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            for prefix in ["\"starling_", "\"process_"] {
                for (idx, _) in text.match_indices(prefix) {
                    let rest = &text[idx + 1..];
                    let len = rest
                        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                        .unwrap_or(rest.len());
                    let name = &rest[..len];
                    let is_whole_literal = rest[len..].starts_with('"');
                    if is_whole_literal
                        && !name.ends_with('_')
                        && !name.starts_with("starling_test_")
                    {
                        names.insert((name.to_owned(), file.clone()));
                    }
                }
            }
        }
        assert!(names.len() > 40, "found only {names:?}");
        for (name, file) in names {
            assert!(
                table::find(table::family_of(&name)).is_some(),
                "{} registers {name}, which is not in METRICS and docs/metrics.md",
                file.display()
            );
        }
    }

    /// Metric names a PromQL expression refers to (histogram series map to their family).
    fn metric_names_in(expr: &str) -> Vec<String> {
        let mut names = Vec::new();
        for prefix in ["starling_", "process_"] {
            for (idx, _) in expr.match_indices(prefix) {
                if idx > 0 && expr[..idx].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                {
                    continue;
                }
                let name: String = expr[idx..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                names.push(table::family_of(&name).to_owned());
            }
        }
        names
    }

    fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        // Panel queries, and the template variables' queries.
                        ("expr" | "definition", serde_json::Value::String(expr)) => {
                            out.push(expr.clone());
                        }
                        _ => collect_exprs(value, out),
                    }
                }
            }
            serde_json::Value::Array(items) => {
                items.iter().for_each(|item| collect_exprs(item, out))
            }
            _ => {}
        }
    }

    #[test]
    fn the_grafana_dashboard_is_valid_json_and_queries_only_documented_metrics() {
        let text = include_str!("../../deploy/grafana/starling-dashboard.json");
        let dashboard: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
        let docs: std::collections::BTreeSet<String> =
            documented_rows().into_iter().map(|row| row.0).collect();
        let mut exprs = Vec::new();
        collect_exprs(&dashboard, &mut exprs);
        assert!(exprs.len() > 20, "{exprs:?}");
        let mut used = std::collections::BTreeSet::new();
        for expr in &exprs {
            let names = metric_names_in(expr);
            assert!(
                !names.is_empty() || expr.starts_with("label_values"),
                "no metric in {expr}"
            );
            for name in names {
                assert!(
                    table::find(&name).is_some() && docs.contains(&name),
                    "the dashboard queries {name} ({expr}), which is not in docs/metrics.md"
                );
                used.insert(name);
            }
        }
        // The panels the operations guide points to.
        for wanted in [
            "starling_connections_current",
            "starling_listener_connections_current",
            "starling_messages_received_total",
            "starling_messages_dropped_total",
            "starling_message_delivery_latency_seconds",
            "starling_auth_attempts_total",
            "starling_storage_flush_latency_seconds",
            "starling_storage_batch_size",
            "starling_actor_mailbox_wait_seconds",
            "process_cpu_seconds_total",
        ] {
            assert!(used.contains(wanted), "no panel queries {wanted}");
        }
        // Panel ids are unique (Grafana mixes panels up otherwise).
        let mut ids = std::collections::BTreeSet::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            let id = panel["id"].as_u64().expect("panel id");
            assert!(ids.insert(id), "panel id {id} twice");
        }
    }

    #[test]
    fn histograms_render_as_parseable_exposition_text() {
        let snapshot = histogram::HistogramSnapshot {
            name: "starling_message_delivery_latency_seconds",
            help: "Latency.",
            labels: vec![("actor", "a\"b".to_owned())],
            buckets: vec![(0.00005, 2), (0.0001, 3), (f64::INFINITY, 4)],
            sum: 1.5,
            count: 4,
        };
        let mut out = String::new();
        render_histograms(&[snapshot.clone(), snapshot], &mut out);
        let exposition = text::parse(&out).unwrap_or_else(|error| panic!("{error}\n{out}"));
        assert_eq!(
            exposition.types["starling_message_delivery_latency_seconds"],
            "histogram"
        );
        let name = "starling_message_delivery_latency_seconds_bucket";
        assert_eq!(exposition.sum(name, &[("le", "0.00005")]), 4.0);
        assert_eq!(exposition.sum(name, &[("le", "+Inf")]), 8.0);
        assert_eq!(exposition.sum(name, &[("actor", "a\"b")]), 18.0);
        assert_eq!(
            exposition.sum("starling_message_delivery_latency_seconds_count", &[]),
            8.0
        );
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
