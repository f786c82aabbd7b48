//! `swarm summary`: turns the JSON result lines of a comparison (runs and sweeps, tagged by
//! scenario and labelled by broker) into Markdown tables with medians, spread and ratios.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

/// One measured quantity.
struct Metric {
    name: &'static str,
    /// Extracts the value from a result line.
    extract: fn(&Value) -> Option<f64>,
    /// Decimals shown.
    decimals: usize,
    /// Whether the metric means something for a result (e.g. RSS per connection only with
    /// many connections).
    applies: fn(&Value) -> bool,
}

fn always(_: &Value) -> bool {
    true
}

fn many_connections(value: &Value) -> bool {
    number(value, &["connections", "target"]).is_some_and(|target| target >= 1000.0)
}

/// Memory per connection is only meaningful for idle connections: traffic adds buffers.
fn many_idle_connections(value: &Value) -> bool {
    many_connections(value) && !publishes(value)
}

fn publishes(value: &Value) -> bool {
    number(value, &["messages", "sent"]).is_some_and(|sent| sent > 0.0)
}

fn acknowledges(value: &Value) -> bool {
    number(value, &["messages", "acked"]).is_some_and(|acked| acked > 0.0)
}

fn number(value: &Value, path: &[&str]) -> Option<f64> {
    let mut current = value;
    for key in path {
        current = current.get(key)?;
    }
    current.as_f64()
}

const SWEEP_METRICS: &[Metric] = &[
    Metric {
        name: "sustained msg/s",
        extract: |value| Some(number(value, &["sustained_rate"]).unwrap_or(0.0)),
        decimals: 0,
        applies: always,
    },
    Metric {
        name: "deliveries/s",
        extract: |value| Some(number(value, &["sustained_delivery_rate"]).unwrap_or(0.0)),
        decimals: 0,
        applies: always,
    },
    Metric {
        name: "p99 ms",
        extract: |value| number(value, &["sustained_p99_us"]).map(|us| us / 1000.0),
        decimals: 2,
        applies: always,
    },
    Metric {
        name: "RSS peak MiB",
        extract: |value| {
            number(value, &["sustained_rss_peak_bytes"]).map(|bytes| bytes / 1048576.0)
        },
        decimals: 1,
        applies: always,
    },
];

const RUN_METRICS: &[Metric] = &[
    Metric {
        name: "sent/s",
        extract: |value| number(value, &["messages", "sent_rate"]),
        decimals: 0,
        applies: publishes,
    },
    Metric {
        name: "delivered/s",
        extract: |value| number(value, &["messages", "delivered_rate"]),
        decimals: 0,
        applies: publishes,
    },
    Metric {
        name: "acked",
        extract: |value| number(value, &["messages", "acked"]),
        decimals: 0,
        applies: acknowledges,
    },
    Metric {
        name: "loss %",
        extract: |value| number(value, &["messages", "loss_pct"]),
        decimals: 3,
        applies: publishes,
    },
    Metric {
        name: "dups",
        extract: |value| number(value, &["messages", "duplicates"]),
        decimals: 0,
        applies: publishes,
    },
    Metric {
        name: "p50 ms",
        extract: |value| number(value, &["latency", "p50_us"]).map(|us| us / 1000.0),
        decimals: 3,
        applies: publishes,
    },
    Metric {
        name: "p99 ms",
        extract: |value| number(value, &["latency", "p99_us"]).map(|us| us / 1000.0),
        decimals: 3,
        applies: publishes,
    },
    Metric {
        name: "p99.9 ms",
        extract: |value| number(value, &["latency", "p999_us"]).map(|us| us / 1000.0),
        decimals: 3,
        applies: publishes,
    },
    Metric {
        name: "connects/s",
        extract: |value| number(value, &["connections", "connect_rate"]),
        decimals: 0,
        applies: many_connections,
    },
    Metric {
        name: "conn failed",
        extract: |value| number(value, &["connections", "failed"]),
        decimals: 0,
        applies: many_connections,
    },
    Metric {
        name: "RSS/conn B",
        extract: |value| number(value, &["broker_process", "rss_per_connection_bytes"]),
        decimals: 0,
        applies: many_idle_connections,
    },
    Metric {
        name: "RSS peak MiB",
        extract: |value| {
            number(value, &["broker_process", "rss_peak_bytes"]).map(|bytes| bytes / 1048576.0)
        },
        decimals: 1,
        applies: always,
    },
    Metric {
        name: "broker CPU %",
        extract: |value| number(value, &["broker_process", "cpu_pct"]),
        decimals: 0,
        applies: publishes,
    },
    Metric {
        name: "msg/CPU s",
        extract: |value| number(value, &["broker_process", "messages_per_cpu_sec"]),
        decimals: 0,
        applies: publishes,
    },
];

/// Median and range of a list of values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

pub(crate) fn spread(values: &[f64]) -> Option<Spread> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = match sorted.len() % 2 {
        0 => (sorted[mid - 1] + sorted[mid]) / 2.0,
        _ => sorted[mid],
    };
    Some(Spread {
        median,
        min: sorted[0],
        max: sorted[sorted.len() - 1],
    })
}

fn format_spread(spread: Spread, decimals: usize, runs: usize) -> String {
    if runs <= 1 || spread.min == spread.max {
        return format!("{:.*}", decimals, spread.median);
    }
    format!(
        "{:.*} ({:.*}–{:.*})",
        decimals, spread.median, decimals, spread.min, decimals, spread.max
    )
}

/// Reads the files and writes the Markdown summary.
///
/// # Errors
/// Returns an error for unreadable files or lines that are not JSON.
pub(crate) fn summarize_files(
    files: &[PathBuf],
    subject: &str,
    baselines: &[String],
) -> anyhow::Result<String> {
    let mut lines = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        for (idx, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line).with_context(|| {
                format!("{}, line {}: not a JSON result", file.display(), idx + 1)
            })?;
            lines.push(value);
        }
    }
    Ok(summarize(&lines, subject, baselines))
}

/// Writes the Markdown summary of result lines.
pub(crate) fn summarize(lines: &[Value], subject: &str, baselines: &[String]) -> String {
    // tag -> label -> results
    let mut by_tag: BTreeMap<String, BTreeMap<String, Vec<&Value>>> = BTreeMap::new();
    for line in lines {
        let tag = line
            .get("tag")
            .and_then(Value::as_str)
            .unwrap_or("untagged");
        let label = line
            .get("label")
            .and_then(Value::as_str)
            .unwrap_or("unlabelled");
        by_tag
            .entry(tag.to_owned())
            .or_default()
            .entry(label.to_owned())
            .or_default()
            .push(line);
    }
    let mut out = String::new();
    for (tag, by_label) in &by_tag {
        let any = by_label.values().flatten().next();
        let scenario = any
            .and_then(|line| line.get("scenario"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let is_sweep = any
            .and_then(|line| line.get("kind"))
            .and_then(Value::as_str)
            == Some("sweep");
        let metrics = if is_sweep { SWEEP_METRICS } else { RUN_METRICS };
        let mut labels: Vec<&String> = by_label.keys().collect();
        labels.sort_by_key(|label| {
            if label.as_str() == subject {
                0
            } else {
                baselines
                    .iter()
                    .position(|baseline| baseline == *label)
                    .map_or(usize::MAX, |idx| idx + 1)
            }
        });
        // Spreads per metric and label; a metric nobody has is left out.
        let spreads: Vec<Vec<Option<Spread>>> = metrics
            .iter()
            .map(|metric| {
                labels
                    .iter()
                    .map(|label| {
                        let values: Vec<f64> = by_label[*label]
                            .iter()
                            .filter(|line| (metric.applies)(line))
                            .filter_map(|line| (metric.extract)(line))
                            .collect();
                        spread(&values)
                    })
                    .collect()
            })
            .collect();
        let shown: Vec<usize> = (0..metrics.len())
            .filter(|&idx| spreads[idx].iter().any(Option::is_some))
            .collect();
        let _ = writeln!(out, "### ({tag}) {scenario}\n");
        let _ = write!(out, "| broker | runs |");
        for &idx in &shown {
            let _ = write!(out, " {} |", metrics[idx].name);
        }
        let _ = write!(out, "\n|---|---|");
        for _ in &shown {
            let _ = write!(out, "---|");
        }
        out.push('\n');
        for (label_idx, label) in labels.iter().enumerate() {
            let runs = by_label[*label].len();
            let _ = write!(out, "| {label} | {runs} |");
            for &idx in &shown {
                let cell = spreads[idx][label_idx].map_or("-".to_owned(), |spread| {
                    format_spread(spread, metrics[idx].decimals, runs)
                });
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
        out.push('\n');
        let subject_idx = labels.iter().position(|label| label.as_str() == subject);
        if let Some(subject_idx) = subject_idx {
            let others: Vec<(usize, &String)> = labels
                .iter()
                .enumerate()
                .filter(|(idx, _)| *idx != subject_idx)
                .map(|(idx, label)| (idx, *label))
                .collect();
            if !others.is_empty() {
                let _ = write!(out, "| {subject} ÷ |");
                for (_, label) in &others {
                    let _ = write!(out, " {label} |");
                }
                let _ = write!(out, "\n|---|");
                for _ in &others {
                    let _ = write!(out, "---|");
                }
                out.push('\n');
                for &idx in &shown {
                    let _ = write!(out, "| {} |", metrics[idx].name);
                    for (other_idx, _) in &others {
                        let ratio = match (spreads[idx][subject_idx], spreads[idx][*other_idx]) {
                            (Some(mine), Some(theirs)) if theirs.median != 0.0 => {
                                format!("{:.2}×", mine.median / theirs.median)
                            }
                            _ => "-".to_owned(),
                        };
                        let _ = write!(out, " {ratio} |");
                    }
                    out.push('\n');
                }
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_median_and_range() {
        let spread = spread(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((spread.median, spread.min, spread.max), (2.0, 1.0, 3.0));
        assert_eq!(super::spread(&[1.0, 2.0, 3.0, 10.0]).unwrap().median, 2.5);
        assert!(super::spread(&[]).is_none());
    }

    #[test]
    fn summary_shows_ratios_against_baselines() {
        let lines: Vec<Value> = [
            r#"{"kind":"sweep","tag":"a","label":"starling","scenario":"pairs","sustained_rate":300000.0}"#,
            r#"{"kind":"sweep","tag":"a","label":"starling","scenario":"pairs","sustained_rate":200000.0}"#,
            r#"{"kind":"sweep","tag":"a","label":"mosquitto","scenario":"pairs","sustained_rate":100000.0}"#,
        ]
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
        let markdown = summarize(&lines, "starling", &["mosquitto".to_owned()]);
        assert!(
            markdown.contains("| starling | 2 | 250000 (200000–300000) |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| sustained msg/s | 2.50× |"),
            "{markdown}"
        );
    }
}
