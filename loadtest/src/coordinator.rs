//! The coordinator: starts the workers (a task, or `swarm worker` child processes), steps them
//! through connect → measured phase → drain, samples the broker process, shows live progress
//! and merges everything into a [`RunReport`].

mod timeline;
mod workers;

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{anyhow, bail};
use tokio::time::{sleep, Instant};

use crate::control::{
    PublishDone, ReadyReport, WorkerCommand, WorkerEvent, WorkerPlan, WorkerResult,
};
use crate::payload::{now_ns, FastRng};
use crate::procfs::{self, ProcSample};
use crate::report::{BrokerReport, ConnectionReport, MessageReport, RunReport};
use crate::scenario::Scenario;
use crate::stats::{new_histogram, Counters, ErrorLog, HistogramData, LatencySummary};
use crate::topic::{render, FanoutTable};
use crate::tracker::{Accounting, RangeSet};

use timeline::{LiveView, Timeline};
use workers::Workers;

/// How a run is carried out and labelled.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Pid of the broker, to sample its RSS and CPU.
    pub broker_pid: Option<u32>,
    /// Label in the report (e.g. the broker's name).
    pub label: Option<String>,
    /// Tag in the report (e.g. a scenario letter).
    pub tag: Option<String>,
    /// Show live progress on stderr (only drawn on a terminal).
    pub progress: bool,
    /// Run a single worker inside this process instead of a child process.
    pub in_process: bool,
}

/// Samples the broker, remembering the peak RSS.
struct BrokerSampler {
    pid: Option<u32>,
    peak_rss_bytes: u64,
    alive: bool,
}

impl BrokerSampler {
    fn sample(&mut self) -> Option<ProcSample> {
        let pid = self.pid?;
        match procfs::sample(&pid.to_string()) {
            Ok(sample) => {
                self.peak_rss_bytes = self.peak_rss_bytes.max(sample.rss_bytes);
                Some(sample)
            }
            Err(_) => {
                self.alive = false;
                None
            }
        }
    }
}

/// What the coordinator gathers from the workers.
#[derive(Default)]
struct Gathered {
    ready: Vec<Option<ReadyReport>>,
    publish_done: Vec<Option<PublishDone>>,
    finished: Vec<Option<Box<WorkerResult>>>,
    latest: Vec<Counters>,
}

impl Gathered {
    fn total(&self) -> Counters {
        let mut total = Counters::default();
        for counters in &self.latest {
            total.add(counters);
        }
        total
    }
}

/// Runs a scenario once.
///
/// # Errors
/// Returns an error when no worker can start, a worker fails, or no connection succeeds
/// (naming the broker address and the first error).
pub async fn run_scenario(scenario: &Scenario, options: &RunOptions) -> anyhow::Result<RunReport> {
    scenario.check()?;
    let broker = scenario.broker_addr()?;
    let num_workers = scenario.num_workers();
    let run_id = u16::try_from(FastRng::new(now_ns()).next_u64() & 0xFFFF).unwrap_or(1);
    let client_id_prefix = scenario
        .client_id_prefix
        .clone()
        .unwrap_or_else(|| format!("swarm-{run_id:04x}-"));
    let source_addresses = scenario.source_addresses(broker)?;
    let mut sampler = BrokerSampler {
        pid: options.broker_pid,
        peak_rss_bytes: 0,
        alive: true,
    };
    if let Some(pid) = options.broker_pid {
        if procfs::sample(&pid.to_string()).is_err() {
            bail!("no process with pid {pid} (--broker-pid)");
        }
    }
    let before = sampler.sample();
    let plans: Vec<WorkerPlan> = (0..num_workers)
        .map(|worker_idx| WorkerPlan {
            scenario: scenario.clone(),
            run_id,
            worker_idx,
            num_workers,
            broker,
            source_addresses: source_addresses.clone(),
            client_id_prefix: client_id_prefix.clone(),
        })
        .collect();
    let start_ns = now_ns();
    let mut workers = Workers::start(plans, options.in_process && num_workers == 1)?;
    let mut gathered = Gathered {
        ready: vec![None; num_workers],
        publish_done: vec![None; num_workers],
        finished: (0..num_workers).map(|_| None).collect(),
        latest: vec![Counters::default(); num_workers],
    };
    let mut timeline = Timeline::new(start_ns);
    let mut live = LiveView::new(options.progress, scenario.total_clients() as u64);
    let result = drive(
        scenario,
        &mut workers,
        &mut gathered,
        &mut timeline,
        &mut live,
        &mut sampler,
    )
    .await;
    live.finish();
    let phases = match result {
        Ok(phases) => phases,
        Err(error) => {
            workers.stop_all().await;
            return Err(error);
        }
    };
    workers.wait().await;
    let end = sampler.sample();
    Ok(build_report(
        scenario,
        options,
        num_workers,
        &gathered,
        timeline,
        &sampler,
        before,
        end,
        phases,
    ))
}

/// Samples and times taken while driving the workers.
struct Phases {
    cpu_pressure_pct: Option<f64>,
    connected: Option<ProcSample>,
    publish_started: Option<ProcSample>,
    publish_finished: Option<ProcSample>,
    duration: Duration,
    expected: u64,
}

async fn next_event(
    workers: &mut Workers,
    gathered: &mut Gathered,
    timeline: &mut Timeline,
    live: &mut LiveView,
) -> anyhow::Result<Option<(usize, WorkerEvent)>> {
    let Some((worker_idx, event)) = workers.next_event().await else {
        bail!("every worker went away");
    };
    match event {
        WorkerEvent::Progress(progress) => {
            let previous = gathered.latest[worker_idx];
            timeline.add_progress(&previous, &progress);
            gathered.latest[worker_idx] = progress.counters;
            live.update(&gathered.total(), timeline);
            Ok(None)
        }
        WorkerEvent::Failed { message } => Err(anyhow!("worker {worker_idx} failed: {message}")),
        other => Ok(Some((worker_idx, other))),
    }
}

async fn drive(
    scenario: &Scenario,
    workers: &mut Workers,
    gathered: &mut Gathered,
    timeline: &mut Timeline,
    live: &mut LiveView,
    sampler: &mut BrokerSampler,
) -> anyhow::Result<Phases> {
    let mut sample_tick = tokio::time::interval(Duration::from_secs(1));
    // Phase 1: every worker connects its clients.
    live.set_phase("connecting");
    while gathered.ready.iter().any(Option::is_none) {
        tokio::select! {
            event = next_event(workers, gathered, timeline, live) => {
                if let Some((worker_idx, WorkerEvent::Ready(ready))) = event? {
                    gathered.ready[worker_idx] = Some(ready);
                }
            }
            _ = sample_tick.tick() => timeline.add_broker_sample(sampler.sample()),
        }
    }
    let mut errors = ErrorLog::default();
    let mut established = 0;
    let mut failed = 0;
    for ready in gathered.ready.iter().flatten() {
        errors.merge(&ready.errors);
        established += ready.counters.connected;
        failed += ready.counters.connect_failed;
    }
    if established == 0 {
        bail!(
            "no connection to {} succeeded ({failed} failed): {}",
            scenario.broker,
            errors
                .first
                .unwrap_or_else(|| "no error recorded".to_owned())
        );
    }
    let failed_subscribers: HashSet<u32> = gathered
        .ready
        .iter()
        .flatten()
        .flat_map(|ready| ready.failed_subscribers.iter().copied())
        .collect();

    // Settle, then read the connected RSS.
    live.set_phase("settling");
    let settle_end = Instant::now() + Duration::from_millis(scenario.settle_ms);
    while Instant::now() < settle_end {
        tokio::select! {
            event = next_event(workers, gathered, timeline, live) => { event?; }
            _ = tokio::time::sleep_until(settle_end) => {}
        }
    }
    let connected = sampler.sample();

    // Phase 2: the measured phase.
    let epoch_ns = now_ns() + 100_000_000;
    timeline.mark_publish_start(epoch_ns);
    workers.send_all(WorkerCommand::Start { epoch_ns }).await;
    let publish_started = sampler.sample();
    live.set_phase("running");
    while gathered.publish_done.iter().any(Option::is_none) {
        tokio::select! {
            event = next_event(workers, gathered, timeline, live) => {
                if let Some((worker_idx, WorkerEvent::PublishDone(done))) = event? {
                    gathered.publish_done[worker_idx] = Some(done);
                }
            }
            _ = sample_tick.tick() => timeline.add_broker_sample(sampler.sample()),
        }
    }
    let publish_finished = sampler.sample();
    let cpu_pressure_pct = procfs::cpu_pressure_pct();
    let duration = Duration::from_nanos(now_ns().saturating_sub(epoch_ns))
        .min(Duration::from_secs_f64(scenario.duration_secs));
    timeline.mark_publish_end(now_ns());
    let expected = expected_deliveries(scenario, gathered, &failed_subscribers);

    // Phase 3: drain until everything arrived, nothing moves, or the drain timeout.
    live.set_phase("draining");
    let needs_acks = scenario
        .publishers
        .as_ref()
        .is_some_and(|group| group.qos > 0)
        || scenario
            .commands
            .as_ref()
            .is_some_and(|commands| commands.qos > 0);
    let drain_deadline = Instant::now() + Duration::from_millis(scenario.drain_timeout_ms);
    let quiet = Duration::from_millis(scenario.drain_quiet_ms);
    let mut last_change = Instant::now();
    let mut last_seen = gathered.total();
    loop {
        let total = gathered.total();
        if total.received != last_seen.received || total.acked != last_seen.acked {
            last_change = Instant::now();
            last_seen = total;
        }
        let all_received = total.received >= expected;
        let all_acked = !needs_acks || total.acked + total.rejected >= total.sent;
        let now = Instant::now();
        if (all_received && all_acked) || now >= drain_deadline || now >= last_change + quiet {
            break;
        }
        tokio::select! {
            event = next_event(workers, gathered, timeline, live) => { event?; }
            _ = sample_tick.tick() => timeline.add_broker_sample(sampler.sample()),
            _ = sleep(Duration::from_millis(50)) => {}
        }
    }
    live.set_phase("stopping");
    workers.send_all(WorkerCommand::Stop).await;
    let stop_deadline = Instant::now() + Duration::from_secs(30);
    while gathered.finished.iter().any(Option::is_none) {
        tokio::select! {
            event = next_event(workers, gathered, timeline, live) => {
                if let Some((worker_idx, WorkerEvent::Finished(result))) = event? {
                    gathered.finished[worker_idx] = Some(result);
                }
            }
            _ = tokio::time::sleep_until(stop_deadline) => {
                bail!("workers did not finish within 30 s of stop");
            }
        }
    }
    Ok(Phases {
        cpu_pressure_pct,
        connected,
        publish_started,
        publish_finished,
        duration,
        expected,
    })
}

/// Sums, over the publishers and backends, messages sent times the subscriptions that
/// receive them (shared groups once, subscribers that never connected not at all).
fn expected_deliveries(
    scenario: &Scenario,
    gathered: &Gathered,
    failed_subscribers: &HashSet<u32>,
) -> u64 {
    let num_subscribers = scenario.subscribers.as_ref().map_or(0, |group| group.count);
    let num_devices = scenario
        .commands
        .as_ref()
        .map_or(0, |commands| commands.devices);
    let num_publishers = scenario.publishers.as_ref().map_or(0, |group| group.count);
    let mut table = FanoutTable::default();
    if let Some(group) = &scenario.subscribers {
        let mut shared_filters = HashSet::new();
        for idx in 0..num_subscribers {
            let idx = u32::try_from(idx).unwrap_or(u32::MAX);
            if failed_subscribers.contains(&idx) {
                continue;
            }
            let filter = render(&group.filter, idx);
            if group.shared_group.is_some() {
                shared_filters.insert(filter);
            } else {
                table.add(&filter);
            }
        }
        for filter in shared_filters {
            table.add(&filter);
        }
    }
    let publishers_start = (num_subscribers + num_devices) as u64;
    let backends_start = publishers_start + num_publishers as u64;
    let mut expected = 0;
    for done in gathered.publish_done.iter().flatten() {
        for &(global_idx, sent) in &done.sent {
            let global_idx = u64::from(global_idx);
            if global_idx >= backends_start {
                expected += sent;
            } else if let Some(group) = &scenario.publishers {
                let publisher_idx = u32::try_from(global_idx - publishers_start).unwrap_or(0);
                expected += sent * table.fanout(&render(&group.topic, publisher_idx));
            }
        }
    }
    expected
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    scenario: &Scenario,
    options: &RunOptions,
    num_workers: usize,
    gathered: &Gathered,
    timeline: Timeline,
    sampler: &BrokerSampler,
    before: Option<ProcSample>,
    end: Option<ProcSample>,
    phases: Phases,
) -> RunReport {
    let mut counters = Counters::default();
    let mut latency = new_histogram();
    let mut ack_latency = new_histogram();
    let mut connect_latency = new_histogram();
    let mut errors = ErrorLog::default();
    let mut unique = 0;
    let mut shared: std::collections::HashMap<(String, u32), RangeSet> = Default::default();
    let mut loadgen_cpu_secs = 0.0;
    for result in gathered.finished.iter().flatten() {
        counters.add(&result.counters);
        result.latency.add_to(&mut latency);
        result.ack_latency.add_to(&mut ack_latency);
        result.connect_latency.add_to(&mut connect_latency);
        errors.merge(&result.errors);
        unique += result.unique_received;
        loadgen_cpu_secs += result.cpu_secs;
        for (filter, publisher_id, ranges) in &result.shared {
            shared
                .entry((filter.clone(), *publisher_id))
                .or_default()
                .merge(ranges);
        }
    }
    unique += shared.values().map(RangeSet::unique).sum::<u64>();
    let accounting = Accounting::new(phases.expected, counters.received, unique);
    let (connect_started_ns, connect_finished_ns) =
        gathered
            .ready
            .iter()
            .flatten()
            .fold((u64::MAX, 0), |(first, last), ready| {
                (
                    first.min(ready.connect_started_ns),
                    last.max(ready.connect_finished_ns),
                )
            });
    let connect_secs = connect_finished_ns.saturating_sub(connect_started_ns) as f64 / 1e9;
    let established: u64 = gathered
        .ready
        .iter()
        .flatten()
        .map(|ready| ready.counters.connected)
        .sum();
    let failed: u64 = gathered
        .ready
        .iter()
        .flatten()
        .map(|ready| ready.counters.connect_failed)
        .sum();
    let duration_secs = phases.duration.as_secs_f64().max(1e-9);
    let received_at_publish_end: u64 = gathered
        .publish_done
        .iter()
        .flatten()
        .map(|done| done.received_at_publish_end)
        .sum();
    let broker_process = options.broker_pid.map(|pid| {
        let rss_before_bytes = before.map_or(0, |sample| sample.rss_bytes);
        let rss_connected_bytes = phases.connected.map_or(0, |sample| sample.rss_bytes);
        let cpu_secs = match (phases.publish_started, phases.publish_finished) {
            (Some(start), Some(finish)) => (finish.cpu_secs - start.cpu_secs).max(0.0),
            _ => 0.0,
        };
        BrokerReport {
            pid,
            rss_before_bytes,
            rss_connected_bytes,
            rss_per_connection_bytes: (established > 0).then(|| {
                (rss_connected_bytes as f64 - rss_before_bytes as f64) / established as f64
            }),
            rss_peak_bytes: sampler.peak_rss_bytes,
            rss_end_bytes: end.map_or(0, |sample| sample.rss_bytes),
            cpu_secs,
            cpu_pct: cpu_secs * 100.0 / duration_secs,
            messages_per_cpu_sec: (cpu_secs > 0.0 && counters.sent > 0)
                .then(|| counters.sent as f64 / cpu_secs),
            alive_at_end: sampler.alive,
        }
    });
    let latency_histogram = HistogramData::from_histogram(&latency).0;
    RunReport {
        kind: "run".to_owned(),
        swarm_version: env!("CARGO_PKG_VERSION").to_owned(),
        label: options.label.clone(),
        tag: options.tag.clone(),
        scenario: scenario.name.clone(),
        broker: scenario.broker.clone(),
        protocol: scenario.protocol.name().to_owned(),
        workers: num_workers,
        clients: scenario.total_clients(),
        offered_rate: scenario.offered_rate(),
        duration_secs,
        connections: ConnectionReport {
            target: scenario.total_clients() as u64,
            established,
            failed,
            connect_secs,
            connect_rate: if connect_secs > 0.0 {
                established as f64 / connect_secs
            } else {
                0.0
            },
            lost: counters.connections_lost,
            reconnects: counters.reconnects,
            sessions_resumed: counters.sessions_resumed,
            errors: errors.by_kind,
            first_error: errors.first,
        },
        messages: MessageReport {
            sent: counters.sent,
            acked: counters.acked,
            rejected: counters.rejected,
            unacked: counters.unacked,
            expected: accounting.expected,
            received: accounting.received,
            unique: accounting.unique,
            duplicates: accounting.duplicates,
            lost: accounting.lost,
            loss_pct: accounting.loss_pct(),
            foreign: counters.foreign,
            commands_received: counters.commands_received,
            sent_rate: counters.sent as f64 / duration_secs,
            delivered_rate: received_at_publish_end as f64 / duration_secs,
        },
        latency: LatencySummary::of(&latency),
        ack_latency: LatencySummary::of(&ack_latency),
        connect_latency: LatencySummary::of(&connect_latency),
        broker_process,
        loadgen_cpu_secs,
        loadgen_busiest_worker_pct: gathered
            .publish_done
            .iter()
            .flatten()
            .map(|done| done.cpu_secs * 100.0 / duration_secs / scenario.threads_per_worker as f64)
            .fold(0.0, f64::max),
        cpu_pressure_pct: phases.cpu_pressure_pct,
        timeline: timeline.into_points(),
        latency_histogram,
    }
}
