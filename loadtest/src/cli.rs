//! Command-line interface: scenario presets and overrides, run/sweep output, and the relay,
//! summary and worker subcommands.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::coordinator::{run_scenario, RunOptions};
use crate::presets;
use crate::scenario::{Protocol, Scenario, EXAMPLE_SCENARIO_TOML};
use crate::sweep::{run_sweep, SweepCriteria};

/// swarm: the Starling fleet load tester for any MQTT 3.1.1/5.0 broker.
///
/// Prints one JSON result line on stdout and a table (and live progress) on stderr.
#[derive(Debug, Parser)]
#[command(name = "swarm", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a scenario file (see `swarm example`); flags override its values.
    Run {
        /// The scenario TOML file.
        file: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// 1:1 pairs: publisher i → subscriber i on swarm/pair/{i}.
    Pairs {
        /// Publisher/subscriber pairs.
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        #[command(flatten)]
        overrides: Overrides,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Fan-in: many publishers → few subscribers on swarm/fanin/+.
    FanIn {
        /// Publishers.
        #[arg(long, default_value_t = 1000)]
        publishers: usize,
        /// Subscribers, each receiving everything (or sharing with --shared-group).
        #[arg(long, default_value_t = 1)]
        subscribers: usize,
        #[command(flatten)]
        overrides: Overrides,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Fan-out: few publishers → many subscribers of one topic.
    FanOut {
        /// Publishers.
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// Subscribers.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[command(flatten)]
        overrides: Overrides,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Fleet telemetry: cars publish JSON to fleet/{id}/telemetry, backends subscribe to
    /// fleet/+/telemetry (QoS 1 by default).
    Fleet {
        /// Cars.
        #[arg(long, default_value_t = 1000)]
        cars: usize,
        /// Backend subscribers.
        #[arg(long, default_value_t = 1)]
        backends: usize,
        /// Seconds between two messages of a car.
        #[arg(long, default_value_t = 1.0)]
        interval_secs: f64,
        /// Persistent sessions for cars and backends (clean start off, session expiry 1 h).
        #[arg(long)]
        persistent: bool,
        /// Cars reconnect this often (churn).
        #[arg(long)]
        car_churn_secs: Option<f64>,
        #[command(flatten)]
        overrides: Overrides,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Connection storm: N clients connect (at --connect-rate, with --ramp-secs), subscribe
    /// to one topic each, and stay idle for --duration.
    Storm {
        /// Clients.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Connect only, without a subscription.
        #[arg(long)]
        no_subscribe: bool,
        #[command(flatten)]
        overrides: Overrides,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// MQTT 5 request/response: backends send commands to fleet/{id}/cmd, devices answer on
    /// the response topic with the correlation data; latency is the round trip.
    #[command(name = "command")]
    RequestResponse {
        /// Devices.
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        /// Backends.
        #[arg(long, default_value_t = 1)]
        backends: usize,
        #[command(flatten)]
        overrides: Overrides,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Prints a commented scenario file with every key.
    Example,
    /// Runs the raw relay baseline: a minimal MQTT-shaped byte relay (no sessions, no
    /// QoS state) to measure the practical ceiling of this machine.
    Relay {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:1899")]
        listen: String,
        /// Runtime threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Summarises JSON result lines (of several brokers, tagged) as Markdown with medians,
    /// spread and ratios.
    Summary {
        /// Files with JSON result lines.
        files: Vec<PathBuf>,
        /// The broker the ratios are about.
        #[arg(long, default_value = "starling")]
        subject: String,
        /// Brokers to compare with, in order.
        #[arg(long, value_delimiter = ',', default_value = "mosquitto,rumqttd,relay")]
        baselines: Vec<String>,
    },
    /// Internal: a worker process (plan and commands on stdin, events on stdout).
    #[command(hide = true)]
    Worker,
}

/// Scenario values settable from flags (on presets and over a file).
#[derive(Debug, Args, Default)]
pub(crate) struct Overrides {
    /// Broker address.
    #[arg(long, short = 'b')]
    pub(crate) broker: Option<String>,
    /// MQTT version: 3.1.1 or 5.
    #[arg(long, value_parser = parse_protocol)]
    pub(crate) protocol: Option<Protocol>,
    /// QoS of publishes and subscriptions.
    #[arg(long, short = 'q')]
    pub(crate) qos: Option<u8>,
    /// Seconds of the measured phase.
    #[arg(long, short = 'd')]
    pub(crate) duration: Option<f64>,
    /// Messages per second per publisher.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Messages per second over all publishers (offered load).
    #[arg(long)]
    pub(crate) total_rate: Option<f64>,
    /// Stop after this many messages per publisher.
    #[arg(long)]
    pub(crate) max_messages: Option<u64>,
    /// Binary payload size in bytes (at least 24).
    #[arg(long)]
    pub(crate) payload_bytes: Option<usize>,
    /// Payload template, e.g. '{"id":{id},"speed":{rand:0-200}}'.
    #[arg(long)]
    pub(crate) payload_template: Option<String>,
    /// Unacknowledged QoS 1/2 messages per publisher.
    #[arg(long)]
    pub(crate) max_inflight: Option<u16>,
    /// Subscribers join `$share/<group>/<filter>`.
    #[arg(long)]
    pub(crate) shared_group: Option<String>,
    /// Slow consumers: messages per second per subscriber.
    #[arg(long)]
    pub(crate) consume_rate: Option<f64>,
    /// Subscribers reconnect this often (churn; with persistent sessions they resume).
    #[arg(long)]
    pub(crate) reconnect_every_secs: Option<f64>,
    /// Time subscribers stay offline during churn, milliseconds.
    #[arg(long)]
    pub(crate) offline_ms: Option<u64>,
    /// Connections per second over all workers.
    #[arg(long)]
    pub(crate) connect_rate: Option<f64>,
    /// Seconds over which the connect rate ramps up.
    #[arg(long)]
    pub(crate) ramp_secs: Option<f64>,
    /// Handshakes in progress at once over all workers.
    #[arg(long)]
    pub(crate) max_concurrent_connects: Option<usize>,
    /// Worker processes.
    #[arg(long, short = 'w')]
    pub(crate) workers: Option<usize>,
    /// Runtime threads per worker.
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Local source addresses, e.g. 127.0.0.1-127.0.0.8.
    #[arg(long)]
    pub(crate) source_addrs: Option<String>,
    /// Keep alive, seconds.
    #[arg(long)]
    pub(crate) keep_alive: Option<u16>,
    /// Time allowed for TCP connect, TLS, CONNACK and SUBACK, milliseconds.
    #[arg(long)]
    pub(crate) connect_timeout_ms: Option<u64>,
    /// Pause after connecting before measuring, milliseconds.
    #[arg(long)]
    pub(crate) settle_ms: Option<u64>,
    /// Stop draining after this long, milliseconds.
    #[arg(long)]
    pub(crate) drain_timeout_ms: Option<u64>,
    /// Stop draining once nothing arrived for this long, milliseconds.
    #[arg(long)]
    pub(crate) drain_quiet_ms: Option<u64>,
    /// Scenario name in reports.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Connect with TLS, checking the broker against this CA (PEM).
    #[arg(long)]
    pub(crate) tls_ca: Option<String>,
    /// Client certificate (PEM) for mutual TLS; needs --tls-key.
    #[arg(long)]
    pub(crate) tls_cert: Option<String>,
    /// Client private key (PEM).
    #[arg(long)]
    pub(crate) tls_key: Option<String>,
    /// TLS server name (default: the broker's host).
    #[arg(long)]
    pub(crate) tls_server_name: Option<String>,
    /// Connect with TLS without checking the broker's certificate (testing only).
    #[arg(long)]
    pub(crate) tls_insecure: bool,
}

/// Output and measurement flags.
#[derive(Debug, Args)]
struct OutputArgs {
    /// Pid of the broker: report its RSS (per connection too) and CPU.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Label in the JSON line (e.g. the broker's name).
    #[arg(long)]
    label: Option<String>,
    /// Tag in the JSON line (e.g. a scenario letter).
    #[arg(long)]
    tag: Option<String>,
    /// Write a self-contained HTML report with plots.
    #[arg(long)]
    html: Option<PathBuf>,
    /// No live progress and no table on stderr.
    #[arg(long)]
    quiet: bool,
    /// Step the offered load (messages/s over all publishers) through these values and report
    /// the highest sustained one.
    #[arg(long, value_delimiter = ',')]
    sweep_rates: Vec<f64>,
    /// Sweep criterion: highest loss, percent.
    #[arg(long, default_value_t = 0.1)]
    max_loss_pct: f64,
    /// Sweep criterion: highest p99 latency, milliseconds.
    #[arg(long, default_value_t = 50.0)]
    max_p99_ms: f64,
    /// Sweep criterion: lowest fraction of the offered load actually sent.
    #[arg(long, default_value_t = 0.95)]
    min_sent_fraction: f64,
    /// Keep sweeping after a failed step (default: stop at the first failure).
    #[arg(long)]
    sweep_past_failure: bool,
    /// Runs of a failed sweep step before it counts as failed.
    #[arg(long, default_value_t = 1)]
    sweep_retries: usize,
}

fn parse_protocol(value: &str) -> Result<Protocol, String> {
    match value {
        "3.1" => Ok(Protocol::V3_1),
        "3.1.1" | "4" => Ok(Protocol::V3_1_1),
        "5" | "5.0" => Ok(Protocol::V5),
        _ => Err(format!("unknown protocol `{value}` (use 3.1.1 or 5)")),
    }
}

/// Runs the command line.
///
/// # Errors
/// Returns any error of the command.
pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    let (scenario, output) = match cli.command {
        Command::Worker => return crate::worker::worker_process_main(),
        Command::Example => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(EXAMPLE_SCENARIO_TOML.as_bytes())?;
            return Ok(());
        }
        Command::Relay { listen, threads } => {
            let runtime = crate::build_runtime(threads)?;
            return runtime.block_on(crate::relay::run_relay(&listen));
        }
        Command::Summary {
            files,
            subject,
            baselines,
        } => {
            let markdown = crate::summary::summarize_files(&files, &subject, &baselines)?;
            std::io::stdout().lock().write_all(markdown.as_bytes())?;
            return Ok(());
        }
        Command::Run {
            file,
            overrides,
            output,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read scenario {}", file.display()))?;
            let mut scenario = Scenario::from_toml(&text, &file.display().to_string())?;
            presets::apply_overrides(&mut scenario, &overrides);
            (scenario, output)
        }
        Command::Pairs {
            pairs,
            overrides,
            output,
        } => (presets::pairs(pairs, &overrides), output),
        Command::FanIn {
            publishers,
            subscribers,
            overrides,
            output,
        } => (presets::fan_in(publishers, subscribers, &overrides), output),
        Command::FanOut {
            publishers,
            subscribers,
            overrides,
            output,
        } => (
            presets::fan_out(publishers, subscribers, &overrides),
            output,
        ),
        Command::Fleet {
            cars,
            backends,
            interval_secs,
            persistent,
            car_churn_secs,
            overrides,
            output,
        } => (
            presets::fleet(
                presets::FleetArgs {
                    cars,
                    backends,
                    interval_secs,
                    persistent,
                    car_churn_secs,
                },
                &overrides,
            ),
            output,
        ),
        Command::Storm {
            clients,
            no_subscribe,
            overrides,
            output,
        } => (presets::storm(clients, !no_subscribe, &overrides), output),
        Command::RequestResponse {
            devices,
            backends,
            overrides,
            output,
        } => (presets::command(devices, backends, &overrides), output),
    };
    scenario.check()?;
    let threads = scenario.threads_per_worker;
    let runtime = crate::build_runtime(threads)?;
    runtime.block_on(run_and_print(scenario, output))
}

async fn run_and_print(scenario: Scenario, output: OutputArgs) -> anyhow::Result<()> {
    let options = RunOptions {
        broker_pid: output.broker_pid,
        label: output.label.clone(),
        tag: output.tag.clone(),
        progress: !output.quiet,
        in_process: true,
    };
    if output.sweep_rates.is_empty() {
        let report = run_scenario(&scenario, &options).await?;
        if !output.quiet {
            report.write_table(&mut std::io::stderr().lock())?;
        }
        if let Some(path) = &output.html {
            let html = crate::html::render_run(&report, None);
            std::fs::write(path, html)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let line = serde_json::to_string(&report)?;
        writeln!(std::io::stdout().lock(), "{line}")?;
        return Ok(());
    }
    let criteria = SweepCriteria {
        max_loss_pct: output.max_loss_pct,
        max_p99_ms: output.max_p99_ms,
        min_sent_fraction: output.min_sent_fraction,
    };
    let sweep = run_sweep(
        &scenario,
        &output.sweep_rates,
        criteria,
        output.sweep_retries,
        !output.sweep_past_failure,
        &options,
    )
    .await?;
    if !output.quiet {
        sweep.write_table(&mut std::io::stderr().lock())?;
    }
    if let Some(path) = &output.html {
        let html = crate::html::render_sweep(&sweep);
        std::fs::write(path, html).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let line = serde_json::to_string(&sweep.to_json_line())?;
    writeln!(std::io::stdout().lock(), "{line}")?;
    Ok(())
}
