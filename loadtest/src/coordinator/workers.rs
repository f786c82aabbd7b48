//! Starting workers and talking to them: an in-process task, or `swarm worker` child processes
//! speaking JSON lines.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::control::{WorkerCommand, WorkerEvent, WorkerPlan};
use crate::worker::run_worker;

/// Events buffered per worker; progress events are small and a worker sends four a second.
const EVENTS_PER_WORKER: usize = 256;

/// The running workers.
pub(super) struct Workers {
    /// One command channel per worker; closing it tells the worker to stop.
    commands: Vec<mpsc::Sender<WorkerCommand>>,
    /// Events of every worker, tagged with its index; the sending tasks end with their worker.
    events: mpsc::Receiver<(usize, WorkerEvent)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts one worker per plan.
    ///
    /// # Errors
    /// Returns an error when a worker process cannot be spawned.
    pub(super) fn start(plans: Vec<WorkerPlan>, in_process: bool) -> anyhow::Result<Workers> {
        let num_workers = plans.len();
        let (event_tx, events) = mpsc::channel(EVENTS_PER_WORKER * num_workers.max(1));
        let mut commands = Vec::with_capacity(num_workers);
        let mut tasks = Vec::new();
        for plan in plans {
            let worker_idx = plan.worker_idx;
            let (command_tx, command_rx) = mpsc::channel(8);
            commands.push(command_tx);
            if in_process {
                let (worker_event_tx, mut worker_event_rx) = mpsc::channel(EVENTS_PER_WORKER);
                let event_tx = event_tx.clone();
                tasks.push(tokio::spawn(async move {
                    let worker = tokio::spawn(run_worker(plan, command_rx, worker_event_tx));
                    while let Some(event) = worker_event_rx.recv().await {
                        if event_tx.send((worker_idx, event)).await.is_err() {
                            break;
                        }
                    }
                    if let Ok(Err(error)) = worker.await {
                        let message = format!("{error:#}");
                        let _ = event_tx
                            .send((worker_idx, WorkerEvent::Failed { message }))
                            .await;
                    }
                }));
            } else {
                let child = spawn_worker_process(&plan)?;
                tasks.push(tokio::spawn(talk_to_process(
                    worker_idx,
                    plan,
                    child,
                    command_rx,
                    event_tx.clone(),
                )));
            }
        }
        Ok(Workers {
            commands,
            events,
            tasks,
        })
    }

    pub(super) async fn next_event(&mut self) -> Option<(usize, WorkerEvent)> {
        self.events.recv().await
    }

    pub(super) async fn send_all(&self, command: WorkerCommand) {
        for commands in &self.commands {
            let _ = commands.send(command.clone()).await;
        }
    }

    /// Stops every worker after an error.
    pub(super) async fn stop_all(mut self) {
        self.send_all(WorkerCommand::Stop).await;
        self.commands.clear();
        let drain = async { while self.events.recv().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(20), drain).await;
        for task in &self.tasks {
            task.abort();
        }
    }

    /// Waits for the workers to exit after they finished.
    pub(super) async fn wait(mut self) {
        self.commands.clear();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
    }
}

fn spawn_worker_process(plan: &WorkerPlan) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the swarm executable")?;
    Command::new(&exe)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start worker {} ({} worker)",
                plan.worker_idx,
                exe.display()
            )
        })
}

async fn talk_to_process(
    worker_idx: usize,
    plan: WorkerPlan,
    mut child: Child,
    mut commands: mpsc::Receiver<WorkerCommand>,
    events: mpsc::Sender<(usize, WorkerEvent)>,
) {
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let message = "worker process has no stdin/stdout".to_owned();
        let _ = events
            .send((worker_idx, WorkerEvent::Failed { message }))
            .await;
        return;
    };
    let writer = tokio::spawn(async move {
        let mut line = serde_json::to_string(&plan).unwrap_or_default();
        line.push('\n');
        if stdin.write_all(line.as_bytes()).await.is_err() {
            return;
        }
        while let Some(command) = commands.recv().await {
            let mut line = serde_json::to_string(&command).unwrap_or_default();
            line.push('\n');
            if stdin.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
        // The coordinator is done: closing stdin ends the worker.
    });
    let mut lines = BufReader::new(stdout).lines();
    let mut finished = false;
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<WorkerEvent>(&line) {
            Ok(event) => {
                finished |= matches!(event, WorkerEvent::Finished(_));
                if events.send((worker_idx, event)).await.is_err() {
                    break;
                }
            }
            Err(error) => {
                let message = format!("unreadable event `{line}`: {error}");
                let _ = events
                    .send((worker_idx, WorkerEvent::Failed { message }))
                    .await;
            }
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    writer.abort();
    if !finished {
        let message = match status {
            Ok(Ok(status)) => format!("worker process exited early ({status})"),
            _ => "worker process stopped answering".to_owned(),
        };
        let _ = events
            .send((worker_idx, WorkerEvent::Failed { message }))
            .await;
    }
}
