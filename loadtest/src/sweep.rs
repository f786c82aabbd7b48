//! Sweeps: step the offered load and report the sustained rate, the highest offered load
//! that met the criteria (loss, p99, load actually sent, no failed connections).

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::coordinator::{run_scenario, RunOptions};
use crate::report::{ms, RunReport};
use crate::scenario::Scenario;

/// What a step must meet to count as sustained.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SweepCriteria {
    /// Highest loss, percent.
    pub max_loss_pct: f64,
    /// Highest p99 end-to-end latency, milliseconds.
    pub max_p99_ms: f64,
    /// Lowest fraction of the offered load actually sent (QoS 0 writes blocked by a broker
    /// that does not read, or QoS 1 windows that do not drain, fail this).
    pub min_sent_fraction: f64,
}

/// One step of a sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepStep {
    /// Offered load, messages per second over all publishers.
    pub offered_rate: f64,
    /// True when every criterion was met.
    pub passed: bool,
    /// The criteria missed, in words.
    pub failures: Vec<String>,
    /// The run (without its timeline in the JSON line), or `None` when it errored.
    pub report: Option<RunReport>,
}

/// The result of a sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepReport {
    /// Always `"sweep"`.
    pub kind: String,
    /// Label (e.g. the broker's name).
    pub label: Option<String>,
    /// Tag (e.g. a scenario letter).
    pub tag: Option<String>,
    /// Scenario name.
    pub scenario: String,
    /// Broker address.
    pub broker: String,
    /// The criteria.
    pub criteria: SweepCriteria,
    /// Highest offered load that passed, messages per second.
    pub sustained_rate: Option<f64>,
    /// Deliveries per second at that step (offered load times fan-out).
    pub sustained_delivery_rate: Option<f64>,
    /// p99 latency at that step, microseconds.
    pub sustained_p99_us: Option<u64>,
    /// Broker RSS peak at that step.
    pub sustained_rss_peak_bytes: Option<u64>,
    /// Every step run.
    pub steps: Vec<SweepStep>,
}

/// Judges a run against the criteria.
pub(crate) fn judge(
    report: &RunReport,
    offered_rate: f64,
    criteria: &SweepCriteria,
) -> Vec<String> {
    let mut failures = Vec::new();
    if report.connections.failed > 0 {
        failures.push(format!("{} connections failed", report.connections.failed));
    }
    if report.messages.loss_pct > criteria.max_loss_pct {
        failures.push(format!(
            "loss {:.3} % > {} %",
            report.messages.loss_pct, criteria.max_loss_pct
        ));
    }
    let p99_ms = report.latency.p99_us as f64 / 1000.0;
    if p99_ms > criteria.max_p99_ms {
        failures.push(format!("p99 {p99_ms:.1} ms > {} ms", criteria.max_p99_ms));
    }
    if report.messages.sent_rate < offered_rate * criteria.min_sent_fraction {
        failures.push(format!(
            "sent {:.0}/s < {:.0} % of {offered_rate:.0}/s",
            report.messages.sent_rate,
            criteria.min_sent_fraction * 100.0
        ));
    }
    failures
}

/// Runs the scenario at each offered load in turn.
///
/// # Errors
/// Returns an error only when no step could run at all.
pub async fn run_sweep(
    scenario: &Scenario,
    rates: &[f64],
    criteria: SweepCriteria,
    retries: usize,
    stop_at_first_failure: bool,
    options: &RunOptions,
) -> anyhow::Result<SweepReport> {
    let mut steps: Vec<SweepStep> = Vec::with_capacity(rates.len());
    for &rate in rates {
        let mut passed = false;
        // A failed step is run again `retries` times: on a shared machine one noisy second
        // should not end the sweep.
        for _ in 0..=retries {
            let mut step_scenario = scenario.clone();
            step_scenario.set_offered_rate(rate);
            let step = match run_scenario(&step_scenario, options).await {
                Ok(report) => {
                    let failures = judge(&report, rate, &criteria);
                    SweepStep {
                        offered_rate: rate,
                        passed: failures.is_empty(),
                        failures,
                        report: Some(report),
                    }
                }
                Err(error) => {
                    if steps.is_empty() {
                        return Err(error);
                    }
                    SweepStep {
                        offered_rate: rate,
                        passed: false,
                        failures: vec![format!("run failed: {error:#}")],
                        report: None,
                    }
                }
            };
            passed = step.passed;
            steps.push(step);
            if passed {
                break;
            }
        }
        if !passed && stop_at_first_failure {
            break;
        }
    }
    let best = steps
        .iter()
        .filter(|step| step.passed)
        .max_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate));
    let best_report = best.and_then(|step| step.report.as_ref());
    Ok(SweepReport {
        kind: "sweep".to_owned(),
        label: options.label.clone(),
        tag: options.tag.clone(),
        scenario: scenario.name.clone(),
        broker: scenario.broker.clone(),
        criteria,
        sustained_rate: best.map(|step| step.offered_rate),
        sustained_delivery_rate: best_report.map(|report| report.messages.delivered_rate),
        sustained_p99_us: best_report.map(|report| report.latency.p99_us),
        sustained_rss_peak_bytes: best_report
            .and_then(|report| report.broker_process.as_ref())
            .map(|broker| broker.rss_peak_bytes),
        steps,
    })
}

impl SweepReport {
    /// Returns a copy for the JSON line: steps without their timelines.
    pub fn to_json_line(&self) -> SweepReport {
        let mut copy = self.clone();
        for step in &mut copy.steps {
            if let Some(report) = &mut step.report {
                report.timeline.clear();
            }
        }
        copy
    }

    /// Writes one line per step and the sustained rate.
    ///
    /// # Errors
    /// Returns the write error.
    pub fn write_table(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(out)?;
        writeln!(
            out,
            "sweep | {} | {} {} | criteria: loss <= {} %, p99 <= {} ms, sent >= {:.0} % of offered",
            self.scenario,
            self.broker,
            self.label.as_deref().unwrap_or(""),
            self.criteria.max_loss_pct,
            self.criteria.max_p99_ms,
            self.criteria.min_sent_fraction * 100.0
        )?;
        writeln!(
            out,
            "  {:>10}  {:>10}  {:>11}  {:>8}  {:>11}  {:>11}  {:>9}  result",
            "offered/s", "sent/s", "delivered/s", "loss %", "p50", "p99", "RSS MiB"
        )?;
        for step in &self.steps {
            let result = if step.passed {
                "ok".to_owned()
            } else {
                step.failures.join("; ")
            };
            match &step.report {
                Some(report) => writeln!(
                    out,
                    "  {:>10.0}  {:>10.0}  {:>11.0}  {:>8.3}  {:>11}  {:>11}  {:>9}  {result}",
                    step.offered_rate,
                    report.messages.sent_rate,
                    report.messages.delivered_rate,
                    report.messages.loss_pct,
                    ms(report.latency.p50_us),
                    ms(report.latency.p99_us),
                    report
                        .broker_process
                        .as_ref()
                        .map_or("-".to_owned(), |broker| format!(
                            "{:.1}",
                            broker.rss_peak_bytes as f64 / 1048576.0
                        )),
                )?,
                None => writeln!(out, "  {:>10.0}  {result}", step.offered_rate)?,
            }
        }
        match (self.sustained_rate, self.sustained_delivery_rate) {
            (Some(rate), Some(delivered)) => writeln!(
                out,
                "  sustained: {rate:.0} msg/s offered ({delivered:.0} deliveries/s)"
            ),
            _ => writeln!(out, "  sustained: none of the steps met the criteria"),
        }
    }
}
