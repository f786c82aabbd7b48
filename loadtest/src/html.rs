//! The self-contained HTML report: summary tables and inline SVG plots (throughput and
//! latency over time, the latency histogram, broker memory and CPU, connections).

use std::fmt::Write as _;

use crate::report::{ms, thousands, RunReport};
use crate::sweep::SweepReport;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// One line of a chart.
struct Series<'a> {
    name: &'a str,
    points: Vec<(f64, f64)>,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Rounds up to 1, 2 or 5 times a power of ten.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

fn short_number(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.0}k", value / 1e3)
    } else if value >= 10.0 || value == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// A line chart; `log_y` plots the y axis in decades.
fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
    log_y: bool,
) -> String {
    let all = series.iter().flat_map(|series| series.points.iter());
    let x_max = all.clone().map(|point| point.0).fold(1.0f64, f64::max);
    let positive = all.clone().map(|point| point.1).filter(|y| *y > 0.0);
    let (y_min, y_max) = if log_y {
        let low = positive.clone().fold(f64::MAX, f64::min);
        let high = positive.fold(0.0f64, f64::max);
        if high <= 0.0 {
            (0.0, 1.0)
        } else {
            (
                low.log10().floor(),
                high.log10().ceil().max(low.log10().floor() + 1.0),
            )
        }
    } else {
        (
            0.0,
            nice_ceiling(all.map(|point| point.1).fold(0.0f64, f64::max)),
        )
    };
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let to_x = |x: f64| LEFT + x / x_max * plot_width;
    let to_y = |y: f64| {
        let value = if log_y { y.max(1e-9).log10() } else { y };
        TOP + plot_height - (value - y_min) / (y_max - y_min).max(1e-9) * plot_height
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="18" font-size="13" font-weight="bold">{}</text>"#,
        escape(title)
    );
    // Axes and grid.
    let ticks: Vec<f64> = if log_y {
        (y_min as i64..=y_max as i64)
            .map(|exponent| 10f64.powi(exponent as i32))
            .collect()
    } else {
        (0..=4).map(|idx| y_max * f64::from(idx) / 4.0).collect()
    };
    for tick in ticks {
        let y = to_y(tick);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            short_number(tick)
        );
    }
    let x_step = nice_ceiling(x_max / 8.0);
    let mut x_tick = 0.0;
    while x_tick <= x_max + 1e-9 {
        let x = to_x(x_tick);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            TOP + plot_height,
            TOP + plot_height + 14.0,
            short_number(x_tick)
        );
        x_tick += x_step;
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"#,
        LEFT + plot_width / 2.0,
        HEIGHT - 6.0,
        escape(x_label),
        TOP + plot_height / 2.0,
        TOP + plot_height / 2.0,
        escape(y_label)
    );
    for (idx, series) in series.iter().enumerate() {
        let color = COLORS[idx % COLORS.len()];
        let path: Vec<String> = series
            .points
            .iter()
            .filter(|point| !log_y || point.1 > 0.0)
            .map(|&(x, y)| format!("{:.1},{:.1}", to_x(x), to_y(y)))
            .collect();
        if !path.is_empty() {
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{}"/>"#,
                path.join(" ")
            );
        }
        let legend_x = LEFT + 10.0 + idx as f64 * 150.0;
        let _ = write!(
            svg,
            r#"<rect x="{legend_x}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            TOP + 2.0,
            legend_x + 14.0,
            TOP + 11.0,
            escape(series.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The latency histogram: share of deliveries per bucket, ten buckets per decade.
fn histogram_chart(histogram: &[(u64, u64)]) -> String {
    let total: u64 = histogram.iter().map(|bucket| bucket.1).sum();
    if total == 0 {
        return "<p>No latency samples.</p>".to_owned();
    }
    let bin_of = |value_us: u64| ((value_us.max(1) as f64).log10() * 10.0).floor() as i64;
    let first = histogram
        .iter()
        .map(|bucket| bin_of(bucket.0))
        .min()
        .unwrap_or(0);
    let last = histogram
        .iter()
        .map(|bucket| bin_of(bucket.0))
        .max()
        .unwrap_or(0);
    let mut bins = vec![0u64; (last - first + 1) as usize];
    for &(value, count) in histogram {
        bins[(bin_of(value) - first) as usize] += count;
    }
    let peak = bins.iter().copied().max().unwrap_or(1).max(1) as f64 / total as f64 * 100.0;
    let y_max = nice_ceiling(peak);
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let bar_width = plot_width / bins.len() as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11"><text x="{LEFT}" y="18" font-size="13" font-weight="bold">Latency histogram (share of deliveries)</text>"#
    );
    for idx in 0..=4 {
        let value = y_max * f64::from(idx) / 4.0;
        let y = TOP + plot_height - value / y_max * plot_height;
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{value:.1} %</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
    for (idx, &count) in bins.iter().enumerate() {
        let share = count as f64 / total as f64 * 100.0;
        let height = share / y_max * plot_height;
        let x = LEFT + idx as f64 * bar_width;
        let lower_us = 10f64.powf((first + idx as i64) as f64 / 10.0);
        let _ = write!(
            svg,
            r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{height:.1}" fill="#1f77b4"><title>{} .. : {share:.3} %</title></rect>"##,
            TOP + plot_height - height,
            (bar_width - 1.0).max(0.5),
            ms(lower_us as u64)
        );
        if (first + idx as i64) % 10 == 0 {
            let _ = write!(
                svg,
                r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
                TOP + plot_height + 14.0,
                ms(lower_us as u64)
            );
        }
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">latency (log scale)</text></svg>"#,
        LEFT + plot_width / 2.0,
        HEIGHT - 6.0
    );
    svg
}

fn summary_table(report: &RunReport) -> String {
    let mut table = String::from("<table>");
    let mut row = |name: &str, value: String| {
        let _ = write!(
            table,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(name),
            escape(&value)
        );
    };
    let connections = &report.connections;
    let messages = &report.messages;
    row("scenario", report.scenario.clone());
    row(
        "broker",
        format!(
            "{} {}",
            report.broker,
            report.label.as_deref().unwrap_or("")
        ),
    );
    row(
        "protocol / workers",
        format!("MQTT {} / {}", report.protocol, report.workers),
    );
    row(
        "offered load",
        report
            .offered_rate
            .map_or("unthrottled".to_owned(), |rate| format!("{rate:.0} msg/s")),
    );
    row(
        "connections",
        format!(
            "{} / {} established, {} failed, {:.0}/s, lost {}, reconnects {}",
            thousands(connections.established),
            thousands(connections.target),
            thousands(connections.failed),
            connections.connect_rate,
            thousands(connections.lost),
            thousands(connections.reconnects)
        ),
    );
    if let Some(first_error) = &connections.first_error {
        row("first error", first_error.clone());
    }
    row(
        "messages",
        format!(
            "sent {} ({:.0}/s), acked {}, unacked {}",
            thousands(messages.sent),
            messages.sent_rate,
            thousands(messages.acked),
            thousands(messages.unacked)
        ),
    );
    row(
        "deliveries",
        format!(
            "expected {}, received {} ({:.0}/s), lost {} ({:.3} %), duplicates {}",
            thousands(messages.expected),
            thousands(messages.received),
            messages.delivered_rate,
            thousands(messages.lost),
            messages.loss_pct,
            thousands(messages.duplicates)
        ),
    );
    let latency = &report.latency;
    row(
        "latency",
        format!(
            "p50 {}, p99 {}, p99.9 {}, max {}",
            ms(latency.p50_us),
            ms(latency.p99_us),
            ms(latency.p999_us),
            ms(latency.max_us)
        ),
    );
    if let Some(broker) = &report.broker_process {
        row(
            "broker memory",
            format!(
                "RSS {:.1} → {:.1} MiB connected ({} B/connection), peak {:.1} MiB",
                broker.rss_before_bytes as f64 / 1048576.0,
                broker.rss_connected_bytes as f64 / 1048576.0,
                broker
                    .rss_per_connection_bytes
                    .map_or("-".to_owned(), |bytes| format!("{bytes:.0}")),
                broker.rss_peak_bytes as f64 / 1048576.0
            ),
        );
        row(
            "broker CPU",
            format!(
                "{:.2} s ({:.0} %), {} msg per CPU s",
                broker.cpu_secs,
                broker.cpu_pct,
                broker
                    .messages_per_cpu_sec
                    .map_or("-".to_owned(), |rate| format!("{rate:.0}"))
            ),
        );
    }
    table.push_str("</table>");
    table
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:sans-serif;max-width:820px;margin:2em auto;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #ccc;padding:3px 8px;text-align:left}}\
         th{{background:#f4f4f4}}svg{{display:block;margin:1em 0}}</style></head><body><h1>{}</h1>{body}</body></html>",
        escape(title),
        escape(title)
    )
}

fn run_body(report: &RunReport) -> String {
    let timeline = &report.timeline;
    let points = |value: &dyn Fn(&crate::report::TimelinePoint) -> f64| -> Vec<(f64, f64)> {
        timeline
            .iter()
            .map(|point| (point.t_secs, value(point)))
            .collect()
    };
    let mut body = summary_table(report);
    body.push_str(&line_chart(
        "Throughput",
        "seconds",
        "messages per second",
        &[
            Series {
                name: "sent",
                points: points(&|point| point.sent as f64),
            },
            Series {
                name: "received",
                points: points(&|point| point.received as f64),
            },
        ],
        false,
    ));
    body.push_str(&line_chart(
        "Latency over time",
        "seconds",
        "milliseconds (log)",
        &[
            Series {
                name: "p50",
                points: points(&|point| point.p50_us as f64 / 1000.0),
            },
            Series {
                name: "p99",
                points: points(&|point| point.p99_us as f64 / 1000.0),
            },
            Series {
                name: "max",
                points: points(&|point| point.max_us as f64 / 1000.0),
            },
        ],
        true,
    ));
    body.push_str(&histogram_chart(&report.latency_histogram));
    body.push_str(&line_chart(
        "Connections",
        "seconds",
        "established",
        &[Series {
            name: "connected",
            points: points(&|point| point.connected as f64),
        }],
        false,
    ));
    if report.broker_process.is_some() {
        let rss: Vec<(f64, f64)> = timeline
            .iter()
            .filter_map(|point| {
                point
                    .broker_rss_bytes
                    .map(|rss| (point.t_secs, rss as f64 / 1048576.0))
            })
            .collect();
        let cpu: Vec<(f64, f64)> = timeline
            .iter()
            .filter_map(|point| point.broker_cpu_pct.map(|cpu| (point.t_secs, cpu)))
            .collect();
        body.push_str(&line_chart(
            "Broker RSS",
            "seconds",
            "MiB",
            &[Series {
                name: "RSS",
                points: rss,
            }],
            false,
        ));
        body.push_str(&line_chart(
            "Broker CPU",
            "seconds",
            "% of one core",
            &[Series {
                name: "CPU",
                points: cpu,
            }],
            false,
        ));
    }
    body
}

/// Renders the report of one run.
pub(crate) fn render_run(report: &RunReport, heading: Option<&str>) -> String {
    let title = heading.map_or_else(|| format!("swarm: {}", report.scenario), str::to_owned);
    page(&title, &run_body(report))
}

/// Renders a sweep: the table of steps, then the plots of the highest passing step (or the
/// last step when none passed).
pub(crate) fn render_sweep(sweep: &SweepReport) -> String {
    let mut body = String::from(
        "<table><tr><th>offered/s</th><th>sent/s</th><th>delivered/s</th><th>loss %</th><th>p99</th><th>result</th></tr>",
    );
    for step in &sweep.steps {
        let result = if step.passed {
            "ok".to_owned()
        } else {
            step.failures.join("; ")
        };
        match &step.report {
            Some(report) => {
                let _ = write!(
                    body,
                    "<tr><td>{:.0}</td><td>{:.0}</td><td>{:.0}</td><td>{:.3}</td><td>{}</td><td>{}</td></tr>",
                    step.offered_rate,
                    report.messages.sent_rate,
                    report.messages.delivered_rate,
                    report.messages.loss_pct,
                    ms(report.latency.p99_us),
                    escape(&result)
                );
            }
            None => {
                let _ = write!(
                    body,
                    "<tr><td>{:.0}</td><td colspan=\"4\"></td><td>{}</td></tr>",
                    step.offered_rate,
                    escape(&result)
                );
            }
        }
    }
    body.push_str("</table>");
    let _ = write!(
        body,
        "<p>Sustained: <b>{}</b></p>",
        sweep.sustained_rate.map_or(
            "none of the steps met the criteria".to_owned(),
            |rate| format!("{rate:.0} msg/s")
        )
    );
    let shown = sweep
        .steps
        .iter()
        .filter(|step| step.passed)
        .max_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate))
        .or_else(|| sweep.steps.iter().rev().find(|step| step.report.is_some()))
        .and_then(|step| {
            step.report
                .as_ref()
                .map(|report| (step.offered_rate, report))
        });
    if let Some((rate, report)) = shown {
        let _ = write!(body, "<h2>Step at {rate:.0} msg/s</h2>");
        body.push_str(&run_body(report));
    }
    page(&format!("swarm sweep: {}", sweep.scenario), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_and_escape_text() {
        let chart = line_chart(
            "a<b",
            "x",
            "y",
            &[Series {
                name: "s",
                points: vec![(0.0, 1.0), (1.0, 3.0)],
            }],
            false,
        );
        assert!(chart.starts_with("<svg"));
        assert!(chart.contains("a&lt;b"));
        assert!(chart.contains("<polyline"));
        let log_chart = line_chart(
            "l",
            "x",
            "y",
            &[Series {
                name: "s",
                points: vec![(0.0, 0.5), (1.0, 50.0)],
            }],
            true,
        );
        assert!(log_chart.contains("<polyline"));
        let histogram = histogram_chart(&[(100, 5), (1000, 10), (25_000, 1)]);
        assert!(histogram.contains("<rect"));
    }

    #[test]
    fn nice_ceilings_round_up() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(5000.0), 5000.0);
    }
}
