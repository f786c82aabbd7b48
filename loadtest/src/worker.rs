//! A worker runs its share of the clients (every `num_workers`-th in global order) through
//! the phases the coordinator commands, and reports progress and results.
//!
//! A worker is either a task in the coordinator's process (one worker) or a child process
//! (`swarm worker`, JSON lines on stdin/stdout); [`run_worker`] is the same in both cases.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use starling_core::codec::ByteString;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use crate::client::{run_client, ClientContext, ClientSpec, PendingConnects, Phase, Role};
use crate::control::{
    Progress, PublishDone, ReadyReport, WorkerCommand, WorkerEvent, WorkerPlan, WorkerResult,
};
use crate::payload::now_ns;
use crate::procfs;
use crate::scenario::{payload_shape, Scenario};
use crate::stats::{HistogramData, WorkerStats};
use crate::topic::render;
use crate::tracker::RangeSet;

/// Interval of progress events.
pub(crate) const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// Time clients get to disconnect after `Stop` before they are aborted.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Lists every client of a scenario in global order (subscribers, devices, publishers,
/// backends), keeping those of worker `worker_idx`.
pub(crate) fn plan_clients(
    scenario: &Scenario,
    worker_idx: usize,
    num_workers: usize,
) -> Vec<ClientSpec> {
    let mut groups: Vec<(Role, usize)> = Vec::new();
    if let Some(subscribers) = &scenario.subscribers {
        groups.push((Role::Subscriber, subscribers.count));
    }
    if let Some(commands) = &scenario.commands {
        groups.push((Role::Device, commands.devices));
    }
    if let Some(publishers) = &scenario.publishers {
        groups.push((Role::Publisher, publishers.count));
    }
    if let Some(commands) = &scenario.commands {
        groups.push((Role::Backend, commands.backends));
    }
    let mut specs = Vec::new();
    let mut global_idx: u32 = 0;
    for (role, count) in groups {
        for group_idx in 0..count {
            if global_idx as usize % num_workers == worker_idx {
                specs.push(ClientSpec {
                    global_idx,
                    group_idx: u32::try_from(group_idx).unwrap_or(u32::MAX),
                    role,
                });
            }
            global_idx += 1;
        }
    }
    specs
}

/// Runs one worker until `Stop` (or its command channel closes).
///
/// # Errors
/// Returns an error when the plan is unusable or the coordinator went away.
pub(crate) async fn run_worker(
    plan: WorkerPlan,
    mut commands: mpsc::Receiver<WorkerCommand>,
    events: mpsc::Sender<WorkerEvent>,
) -> anyhow::Result<()> {
    let scenario = plan.scenario.clone();
    let specs = plan_clients(&scenario, plan.worker_idx, plan.num_workers);
    let num_publishing = specs
        .iter()
        .filter(|spec| matches!(spec.role, Role::Publisher | Role::Backend))
        .count();
    let (phase_tx, phase_rx) = watch::channel(Phase::Connecting);
    let (publish_done_tx, mut publish_done_rx) = mpsc::channel(num_publishing.max(1));
    let stats = Arc::new(WorkerStats::default());
    let payload = match &scenario.publishers {
        Some(publishers) => Some(payload_shape(publishers)?),
        None => None,
    };
    let command_topics = scenario
        .commands
        .as_ref()
        .map_or_else(Vec::new, |commands| {
            (0..commands.devices)
                .map(|device_idx| {
                    let device_idx = u32::try_from(device_idx).unwrap_or(u32::MAX);
                    ByteString::from(render(&commands.command_topic, device_idx))
                })
                .collect()
        });
    let tls = match &scenario.tls {
        Some(settings) => Some(crate::tls::client(settings, scenario.broker_host())?),
        None => None,
    };
    let ctx = Arc::new(ClientContext {
        tls,
        run_id: plan.run_id,
        broker: plan.broker,
        sources: plan.source_addresses.clone(),
        client_id_prefix: plan.client_id_prefix.clone(),
        stats: stats.clone(),
        connect_slots: Semaphore::new(
            scenario
                .max_concurrent_connects
                .div_ceil(plan.num_workers)
                .max(1),
        ),
        connect_start: Instant::now(),
        pending_connects: PendingConnects::new(specs.len()),
        payload,
        command_topics,
        phase: phase_rx,
        publish_done: publish_done_tx,
        scenario: scenario.clone(),
    });
    let connect_started_ns = now_ns();
    let mut clients = JoinSet::new();
    for spec in specs {
        clients.spawn(run_client(ctx.clone(), spec));
    }
    let progress_task = tokio::spawn(report_progress(stats.clone(), events.clone()));

    // Phase 1: connect.
    tokio::select! {
        _ = ctx.pending_connects.wait() => {}
        command = commands.recv() => {
            if !matches!(command, Some(WorkerCommand::Start { .. })) {
                return stop_early(phase_tx, clients, progress_task).await;
            }
        }
    }
    let connect_finished_ns = stats
        .last_connect_done_ns
        .load(std::sync::atomic::Ordering::Relaxed)
        .max(connect_started_ns);
    let ready = ReadyReport {
        counters: stats.counters.snapshot(),
        connect_started_ns,
        connect_finished_ns,
        failed_subscribers: stats
            .failed_subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        errors: stats
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    };
    send(&events, WorkerEvent::Ready(ready)).await?;

    // Phase 2: the measured phase.
    let epoch_ns = match commands.recv().await {
        Some(WorkerCommand::Start { epoch_ns }) => epoch_ns,
        _ => return stop_early(phase_tx, clients, progress_task).await,
    };
    let now = Instant::now();
    let epoch = now + Duration::from_nanos(epoch_ns.saturating_sub(now_ns()));
    let publish_end = epoch + Duration::from_secs_f64(scenario.duration_secs);
    let _ = phase_tx.send(Phase::Running { epoch, publish_end });
    let cpu_at_start = process_cpu_secs();
    let mut sent = Vec::with_capacity(num_publishing);
    let mut received_at_publish_end = None;
    let mut stop_received = false;
    // Publishers report when they reach `max_messages` or the end of the duration; without
    // publishers (idle connections) the duration is the measured phase.
    while sent.len() < num_publishing || (num_publishing == 0 && received_at_publish_end.is_none())
    {
        tokio::select! {
            done = publish_done_rx.recv() => match done {
                Some(done) => sent.push(done),
                None => break,
            },
            _ = sleep_until(publish_end), if received_at_publish_end.is_none() => {
                received_at_publish_end = Some(stats.counters.snapshot().received);
            }
            command = commands.recv() => {
                // A stop (or a vanished coordinator) before the end: report what there is.
                if !matches!(command, Some(WorkerCommand::Start { .. })) {
                    stop_received = true;
                    break;
                }
            }
        }
    }
    let received_at_publish_end =
        received_at_publish_end.unwrap_or_else(|| stats.counters.snapshot().received);
    send(
        &events,
        WorkerEvent::PublishDone(PublishDone {
            sent,
            received_at_publish_end,
            cpu_secs: process_cpu_secs() - cpu_at_start,
        }),
    )
    .await?;

    // Phase 3: drain until the coordinator says stop.
    if !stop_received {
        while let Some(command) = commands.recv().await {
            if matches!(command, WorkerCommand::Stop) {
                break;
            }
        }
    }
    let _ = phase_tx.send(Phase::Stopped);
    let mut unique_received = 0;
    let mut shared: HashMap<(String, u32), RangeSet> = HashMap::new();
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let joined = tokio::select! {
            joined = clients.join_next() => joined,
            _ = sleep_until(deadline) => {
                clients.abort_all();
                break;
            }
        };
        let Some(joined) = joined else { break };
        let Ok(outcome) = joined else { continue };
        unique_received += outcome.unique;
        if let Some(filter) = outcome.shared_filter {
            for (publisher_id, ranges) in outcome.shared {
                shared
                    .entry((filter.clone(), publisher_id))
                    .or_default()
                    .merge(&ranges);
            }
        }
    }
    progress_task.abort();
    let result = {
        let histograms = stats.histograms.lock().unwrap_or_else(|e| e.into_inner());
        WorkerResult {
            counters: stats.counters.snapshot(),
            latency: HistogramData::from_histogram(&histograms.latency),
            ack_latency: HistogramData::from_histogram(&histograms.ack_latency),
            connect_latency: HistogramData::from_histogram(&histograms.connect_latency),
            errors: stats
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            unique_received,
            shared: shared
                .into_iter()
                .map(|((filter, publisher_id), ranges)| (filter, publisher_id, ranges))
                .collect(),
            cpu_secs: process_cpu_secs(),
        }
    };
    send(&events, WorkerEvent::Finished(Box::new(result))).await
}

/// CPU time of this process so far (the coordinator's too, for an in-process worker).
fn process_cpu_secs() -> f64 {
    procfs::sample("self").map_or(0.0, |sample| sample.cpu_secs)
}

async fn send(events: &mpsc::Sender<WorkerEvent>, event: WorkerEvent) -> anyhow::Result<()> {
    events
        .send(event)
        .await
        .map_err(|_| anyhow::anyhow!("the coordinator went away"))
}

async fn stop_early<T: 'static>(
    phase_tx: watch::Sender<Phase>,
    mut clients: JoinSet<T>,
    progress_task: tokio::task::JoinHandle<()>,
) -> anyhow::Result<()> {
    let _ = phase_tx.send(Phase::Stopped);
    let _ = tokio::time::timeout(STOP_TIMEOUT, async {
        while clients.join_next().await.is_some() {}
    })
    .await;
    clients.abort_all();
    progress_task.abort();
    Ok(())
}

async fn report_progress(stats: Arc<WorkerStats>, events: mpsc::Sender<WorkerEvent>) {
    let mut interval = tokio::time::interval(PROGRESS_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let progress = Progress {
            at_ns: now_ns(),
            counters: stats.counters.snapshot(),
            latency_interval: stats.take_interval(),
        };
        if events.send(WorkerEvent::Progress(progress)).await.is_err() {
            return;
        }
    }
}

/// Entry point of `swarm worker`: reads the plan and commands from stdin, writes events to
/// stdout, one JSON object per line.
///
/// # Errors
/// Returns an error for an unreadable plan or a failed runtime.
pub(crate) fn worker_process_main() -> anyhow::Result<()> {
    let mut plan_line = String::new();
    std::io::stdin()
        .read_line(&mut plan_line)
        .context("cannot read the worker plan from stdin")?;
    let plan: WorkerPlan =
        serde_json::from_str(&plan_line).context("cannot parse the worker plan")?;
    let runtime = crate::build_runtime(plan.scenario.threads_per_worker)?;
    runtime.block_on(async move {
        // Commands are few (start, stop); events are bounded so a stalled stdout slows the
        // worker's progress reports instead of growing memory.
        let (command_tx, command_rx) = mpsc::channel(8);
        let (event_tx, mut event_rx) = mpsc::channel::<WorkerEvent>(1024);
        tokio::spawn(async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<WorkerCommand>(&line) {
                    Ok(command) => {
                        if command_tx.send(command).await.is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        eprintln!("swarm worker: ignoring an unreadable command: {error}");
                    }
                }
            }
        });
        let writer = tokio::task::spawn_blocking(move || {
            let stdout = std::io::stdout();
            while let Some(event) = event_rx.blocking_recv() {
                let mut out = stdout.lock();
                let line = serde_json::to_string(&event).unwrap_or_default();
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    return;
                }
            }
        });
        let result = run_worker(plan, command_rx, event_tx.clone()).await;
        if let Err(error) = &result {
            let _ = event_tx
                .send(WorkerEvent::Failed {
                    message: format!("{error:#}"),
                })
                .await;
        }
        drop(event_tx);
        let _ = writer.await;
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_spread_over_workers_in_global_order() {
        let text = "[subscribers]\ncount = 3\n[publishers]\ncount = 2\n";
        let scenario = Scenario::from_toml(text, "t.toml").unwrap();
        let first = plan_clients(&scenario, 0, 2);
        let second = plan_clients(&scenario, 1, 2);
        assert_eq!(first.len() + second.len(), 5);
        let roles: Vec<(u32, Role, u32)> = first
            .iter()
            .map(|spec| (spec.global_idx, spec.role, spec.group_idx))
            .collect();
        assert_eq!(
            roles,
            vec![
                (0, Role::Subscriber, 0),
                (2, Role::Subscriber, 2),
                (4, Role::Publisher, 1)
            ]
        );
    }
}
