//! The result of a run: the JSON line for machines and the table for people.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::stats::LatencySummary;

/// Everything measured in one run; printed as one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// Always `"run"`.
    pub kind: String,
    /// Version of swarm.
    pub swarm_version: String,
    /// Free label, e.g. the broker's name in a comparison.
    pub label: Option<String>,
    /// Free tag, e.g. the scenario's letter in a comparison.
    pub tag: Option<String>,
    /// Scenario name.
    pub scenario: String,
    /// Broker address.
    pub broker: String,
    /// MQTT version.
    pub protocol: String,
    /// Worker processes.
    pub workers: usize,
    /// Clients planned.
    pub clients: usize,
    /// Offered load, messages per second (`None`: unthrottled).
    pub offered_rate: Option<f64>,
    /// Length of the measured phase.
    pub duration_secs: f64,
    /// Connection results.
    pub connections: ConnectionReport,
    /// Message results.
    pub messages: MessageReport,
    /// End-to-end latency (round trip for request/response).
    pub latency: LatencySummary,
    /// Publish-to-acknowledgement latency (QoS 1/2).
    pub ack_latency: LatencySummary,
    /// TCP connect to CONNACK (and SUBACK) latency.
    pub connect_latency: LatencySummary,
    /// The broker process, when its pid was given.
    pub broker_process: Option<BrokerReport>,
    /// CPU time swarm's workers used over the whole run.
    pub loadgen_cpu_secs: f64,
    /// CPU of swarm's busiest worker during the measured phase, percent of its threads; near
    /// 100 the load generator, not the broker, may be the limit.
    pub loadgen_busiest_worker_pct: f64,
    /// CPU pressure of the machine at the end of the measured phase (`/proc/pressure/cpu`
    /// "some avg10", percent): high values mean other processes competed for the CPUs.
    pub cpu_pressure_pct: Option<f64>,
    /// One point per second from the first connection.
    pub timeline: Vec<TimelinePoint>,
    /// Latency histogram, `(microseconds, count)`; kept for the HTML report, not printed.
    #[serde(skip_serializing, default)]
    pub latency_histogram: Vec<(u64, u64)>,
}

/// Connection results.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectionReport {
    /// Clients planned.
    pub target: u64,
    /// First connections that succeeded.
    pub established: u64,
    /// First connections that failed.
    pub failed: u64,
    /// From the first attempt to the last first connection finishing.
    pub connect_secs: f64,
    /// `established / connect_secs`.
    pub connect_rate: f64,
    /// Connections lost during the run.
    pub lost: u64,
    /// Successful reconnects.
    pub reconnects: u64,
    /// Reconnects that resumed their session.
    pub sessions_resumed: u64,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// The first error in full (address, client, cause).
    pub first_error: Option<String>,
}

/// Message results.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MessageReport {
    /// Measured publishes written (commands included, responses not).
    pub sent: u64,
    /// QoS 1/2 publishes acknowledged with success.
    pub acked: u64,
    /// QoS 1/2 publishes acknowledged with an error reason code.
    pub rejected: u64,
    /// QoS 1/2 publishes never acknowledged.
    pub unacked: u64,
    /// Deliveries the subscriptions call for.
    pub expected: u64,
    /// Deliveries received, duplicates included.
    pub received: u64,
    /// Distinct deliveries.
    pub unique: u64,
    /// Duplicate deliveries (allowed at QoS 1, not at QoS 2).
    pub duplicates: u64,
    /// Expected deliveries never received.
    pub lost: u64,
    /// `lost / expected` in percent.
    pub loss_pct: f64,
    /// Deliveries without this run's header (earlier runs, other publishers).
    pub foreign: u64,
    /// Commands that reached devices (request/response).
    pub commands_received: u64,
    /// `sent / duration_secs`.
    pub sent_rate: f64,
    /// Deliveries received during the measured phase per second.
    pub delivered_rate: f64,
}

/// The broker process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BrokerReport {
    /// Its pid.
    pub pid: u32,
    /// RSS before the first connection.
    pub rss_before_bytes: u64,
    /// RSS once every client connected (after `settle_ms`).
    pub rss_connected_bytes: u64,
    /// `(rss_connected - rss_before) / established`.
    pub rss_per_connection_bytes: Option<f64>,
    /// Highest RSS seen (sampled every second).
    pub rss_peak_bytes: u64,
    /// RSS at the end.
    pub rss_end_bytes: u64,
    /// CPU time during the measured phase.
    pub cpu_secs: f64,
    /// `cpu_secs` over the phase's length, percent of one core.
    pub cpu_pct: f64,
    /// Messages sent during the measured phase per broker CPU second.
    pub messages_per_cpu_sec: Option<f64>,
    /// False when the process was gone at the end.
    pub alive_at_end: bool,
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the first connection attempt.
    pub t_secs: f64,
    /// First connections established so far.
    pub connected: u64,
    /// Messages sent in this second.
    pub sent: u64,
    /// Deliveries received in this second.
    pub received: u64,
    /// Median latency of this second's deliveries.
    pub p50_us: u64,
    /// 99th percentile latency of this second's deliveries.
    pub p99_us: u64,
    /// Largest latency of this second's deliveries.
    pub max_us: u64,
    /// Broker RSS.
    pub broker_rss_bytes: Option<u64>,
    /// Broker CPU, percent of one core.
    pub broker_cpu_pct: Option<f64>,
}

/// Formats a count with thousands separators.
pub(crate) fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let first_group = match digits.len() % 3 {
        0 => 3.min(digits.len()),
        len => len,
    };
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    out.push_str(&digits[..first_group]);
    for group in digits.as_bytes()[first_group..].chunks(3) {
        out.push(',');
        out.extend(group.iter().map(|&digit| char::from(digit)));
    }
    out
}

/// Formats microseconds as milliseconds.
pub(crate) fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl RunReport {
    /// Writes the human-readable table.
    ///
    /// # Errors
    /// Returns the write error.
    pub fn write_table(&self, out: &mut impl Write) -> io::Result<()> {
        let connections = &self.connections;
        let messages = &self.messages;
        let label = self.label.as_deref().unwrap_or("");
        writeln!(out)?;
        writeln!(
            out,
            "swarm {} | {} | {} {} | MQTT {} | {} workers | {:.1} s",
            self.swarm_version,
            self.scenario,
            self.broker,
            label,
            self.protocol,
            self.workers,
            self.duration_secs
        )?;
        let offered = self
            .offered_rate
            .map_or("unthrottled".to_owned(), |rate| format!("{rate:.0} msg/s"));
        writeln!(out, "  offered load        {offered}")?;
        writeln!(
            out,
            "  connections         {} / {} established, {} failed, {:.0} connects/s ({:.2} s), connect p99 {}",
            thousands(connections.established),
            thousands(connections.target),
            thousands(connections.failed),
            connections.connect_rate,
            connections.connect_secs,
            ms(self.connect_latency.p99_us),
        )?;
        if connections.lost + connections.reconnects > 0 {
            writeln!(
                out,
                "  reconnects          {} ({} sessions resumed), {} connections lost",
                thousands(connections.reconnects),
                thousands(connections.sessions_resumed),
                thousands(connections.lost)
            )?;
        }
        for (kind, count) in &connections.errors {
            writeln!(out, "  error               {kind}: {}", thousands(*count))?;
        }
        if let Some(first_error) = &connections.first_error {
            writeln!(out, "  first error         {first_error}")?;
        }
        writeln!(
            out,
            "  messages            sent {} ({:.0}/s), acked {}, rejected {}, unacked {}",
            thousands(messages.sent),
            messages.sent_rate,
            thousands(messages.acked),
            thousands(messages.rejected),
            thousands(messages.unacked)
        )?;
        writeln!(
            out,
            "  deliveries          expected {}, received {} ({:.0}/s), lost {} ({:.3} %), duplicates {}",
            thousands(messages.expected),
            thousands(messages.received),
            messages.delivered_rate,
            thousands(messages.lost),
            messages.loss_pct,
            thousands(messages.duplicates)
        )?;
        if messages.foreign > 0 || messages.commands_received > 0 {
            writeln!(
                out,
                "                      foreign {}, commands received by devices {}",
                thousands(messages.foreign),
                thousands(messages.commands_received)
            )?;
        }
        let latency = &self.latency;
        writeln!(
            out,
            "  latency             p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
            ms(latency.p50_us),
            ms(latency.p90_us),
            ms(latency.p99_us),
            ms(latency.p999_us),
            ms(latency.max_us),
            thousands(latency.count)
        )?;
        if self.ack_latency.count > 0 {
            let ack = &self.ack_latency;
            writeln!(
                out,
                "  ack latency         p50 {}  p99 {}  max {}",
                ms(ack.p50_us),
                ms(ack.p99_us),
                ms(ack.max_us)
            )?;
        }
        if let Some(broker) = &self.broker_process {
            let per_connection = broker
                .rss_per_connection_bytes
                .map_or("-".to_owned(), |bytes| format!("{bytes:.0} B"));
            writeln!(
                out,
                "  broker pid {}      RSS before {}, connected {} ({per_connection}/connection), peak {}, end {}{}",
                broker.pid,
                mib(broker.rss_before_bytes),
                mib(broker.rss_connected_bytes),
                mib(broker.rss_peak_bytes),
                mib(broker.rss_end_bytes),
                if broker.alive_at_end { "" } else { " (process gone!)" }
            )?;
            let per_cpu = broker
                .messages_per_cpu_sec
                .map_or("-".to_owned(), |rate| format!("{rate:.0}"));
            writeln!(
                out,
                "  broker CPU          {:.2} s ({:.0} % of a core), {per_cpu} messages per CPU second",
                broker.cpu_secs, broker.cpu_pct
            )?;
        }
        if let Some(pressure) = self.cpu_pressure_pct {
            writeln!(
                out,
                "  machine             CPU pressure {pressure:.0} % (share of the last 10 s with a task waiting for a CPU)"
            )?;
        }
        writeln!(
            out,
            "  swarm CPU           {:.2} s; busiest worker {:.0} % while publishing{}",
            self.loadgen_cpu_secs,
            self.loadgen_busiest_worker_pct,
            if self.loadgen_busiest_worker_pct >= 90.0 {
                " (swarm may be the bottleneck: add --workers)"
            } else {
                ""
            }
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(19_000_000), "19,000,000");
    }
}
