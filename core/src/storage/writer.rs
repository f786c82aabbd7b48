//! Group commit: one storage thread applies the batches of many sessions and flushes once per
//! group; each request completes after the flush that made it durable.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use metrics::{counter, gauge, Counter, Gauge};
use tokio::sync::{mpsc, oneshot};

use crate::{
    metrics::histogram::{self, Histogram, HistogramSpec, LATENCY_BOUNDS_MICROS},
    storage::{ApplyStats, StorageError, Store, WriteBatch},
};

/// `starling_storage_batch_size`: write batches per group commit.
static BATCH_SIZE: HistogramSpec = HistogramSpec {
    name: "starling_storage_batch_size",
    help: "Write batches applied together in one group commit.",
    bounds: &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
    units_per_exported_unit: 1.0,
};

/// `starling_storage_flush_latency_seconds`: duration of one durable flush.
static FLUSH_LATENCY: HistogramSpec = HistogramSpec {
    name: "starling_storage_flush_latency_seconds",
    help: "Duration of one durable commit of the store (applying a group and syncing it to disk).",
    bounds: LATENCY_BOUNDS_MICROS,
    units_per_exported_unit: 1e6,
};

/// Requests waiting when a group starts from which the writer commits without waiting for more.
const BACKLOG_COMMITS_AT_ONCE: usize = 32;

/// When the writer syncs to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Flush after every group, before any request of the group completes: an acknowledged
    /// write survives a crash. The default.
    Always,
    /// Complete requests once applied; flush every `background_flush_interval` and at shutdown.
    /// Faster, but a crash loses up to that interval of acknowledged writes.
    Never,
}

/// Settings of a [`StorageWriter`]; node owns the defaults (`storage.*` keys).
#[derive(Debug, Clone)]
pub struct StorageWriterConfig {
    /// How long the writer waits for more batches after the first one of a group (e.g. 2 ms).
    pub max_batch_delay: Duration,
    /// At most this many batches per group.
    pub max_group_batches: usize,
    /// Sync policy.
    pub fsync: FsyncPolicy,
    /// With [`FsyncPolicy::Never`], the longest time applied batches stay unflushed.
    pub background_flush_interval: Duration,
}

impl StorageWriterConfig {
    /// Returns a small configuration for tests.
    pub fn for_test() -> StorageWriterConfig {
        StorageWriterConfig {
            max_batch_delay: Duration::from_millis(2),
            max_group_batches: 256,
            fsync: FsyncPolicy::Always,
            background_flush_interval: Duration::from_millis(100),
        }
    }
}

/// Counters of a writer, also exported as `starling_storage_*` metrics.
#[derive(Debug, Default)]
pub struct StorageWriterCounters {
    /// Batches applied.
    pub num_batches: AtomicU64,
    /// Groups applied (each one apply call, and one flush with [`FsyncPolicy::Always`]).
    pub num_groups: AtomicU64,
    /// Flushes done.
    pub num_flushes: AtomicU64,
    /// The largest group seen, in batches.
    pub largest_group_batches: AtomicU64,
    /// Failed applies or flushes (the first one stops the writer from accepting more).
    pub num_failures: AtomicU64,
    /// Queue entries written and removed within one group, which never reached the store.
    pub num_transient_entries: AtomicU64,
}

/// Why [`StorageWriter::submit`] did not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The writer thread has stopped.
    #[error("storage writer has stopped")]
    Stopped,
}

/// Completes when the submitted batch is durable (or applied, with [`FsyncPolicy::Never`]).
#[derive(Debug)]
pub struct CommitTicket {
    done: oneshot::Receiver<Result<(), StorageError>>,
}

impl CommitTicket {
    /// Waits for the outcome.
    ///
    /// # Errors
    /// Returns the apply or flush error of the group, or [`StorageError::WriterStopped`].
    pub async fn wait(self) -> Result<(), StorageError> {
        self.done.await.unwrap_or(Err(StorageError::WriterStopped))
    }

    /// Waits for the outcome from a thread outside any async runtime.
    ///
    /// # Errors
    /// As [`CommitTicket::wait`].
    pub fn blocking_wait(self) -> Result<(), StorageError> {
        self.done
            .blocking_recv()
            .unwrap_or(Err(StorageError::WriterStopped))
    }

    /// Polls for the outcome without a stored future (the connection task's event loop).
    pub fn poll_done(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), StorageError>> {
        std::future::Future::poll(std::pin::Pin::new(&mut self.done), cx)
            .map(|outcome| outcome.unwrap_or(Err(StorageError::WriterStopped)))
    }
}

struct WriteRequest {
    batch: WriteBatch,
    /// Completed once after the group's flush; dropped unanswered only if the thread dies.
    done: oneshot::Sender<Result<(), StorageError>>,
}

/// Handle to the storage writer thread; clone it into every session.
///
/// The thread flushes and exits once every handle is dropped; join the handle returned by
/// [`StorageWriter::spawn`] to wait for that final flush at shutdown.
#[derive(Clone)]
pub struct StorageWriter {
    /// Unbounded, because submitting must never fail or wait: requests are ordered by
    /// submission, and a session that could not submit could not keep its writes in order.
    /// The bound is upstream: every request gates an acknowledgement or a PUBLISH, and each
    /// connection has at most `MAX_OUTSTANDING_COMMITS` gated requests outstanding (it stops
    /// reading beyond that), plus acknowledgements bounded by its in-flight window.
    sender: mpsc::UnboundedSender<WriteRequest>,
    counters: Arc<StorageWriterCounters>,
}

impl StorageWriter {
    /// Starts the writer thread over `store`.
    ///
    /// # Errors
    /// Returns [`StorageError::Backend`] when the thread or its timer runtime cannot start.
    pub fn spawn(
        store: Arc<dyn Store>,
        config: StorageWriterConfig,
    ) -> Result<(StorageWriter, JoinHandle<()>), StorageError> {
        let engine = store.engine();
        #[allow(clippy::disallowed_methods)] // bounded upstream, see `StorageWriter::sender`
        let (sender, receiver) = mpsc::unbounded_channel();
        let counters = Arc::new(StorageWriterCounters::default());
        // A private current-thread runtime only to receive with a deadline; the store calls run
        // outside `block_on`, on this dedicated thread.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|error| StorageError::backend(engine, error))?;
        let mut writer_loop = WriterLoop {
            store,
            config,
            receiver,
            runtime,
            counters: counters.clone(),
            metrics: WriterMetrics::new(),
            failure: None,
            unflushed_since: None,
        };
        let join_handle = std::thread::Builder::new()
            .name("starling-storage".to_owned())
            .spawn(move || writer_loop.run())
            .map_err(|error| StorageError::backend(engine, error))?;
        Ok((StorageWriter { sender, counters }, join_handle))
    }

    /// Submits a batch and waits until it is durable (or applied, with `FsyncPolicy::Never`).
    ///
    /// # Errors
    /// Returns the group's apply or flush error, or [`StorageError::WriterStopped`].
    pub async fn commit(&self, batch: WriteBatch) -> Result<(), StorageError> {
        match self.submit(batch) {
            Ok(ticket) => ticket.wait().await,
            Err(_stopped) => Err(StorageError::WriterStopped),
        }
    }

    /// Submits a batch without waiting; batches are applied in submission order.
    ///
    /// # Errors
    /// Returns [`SubmitError::Stopped`] when the writer thread has exited.
    pub fn submit(&self, batch: WriteBatch) -> Result<CommitTicket, SubmitError> {
        let (done, ticket) = ticket();
        match self.sender.send(WriteRequest { batch, done }) {
            Ok(()) => Ok(ticket),
            Err(_closed) => Err(SubmitError::Stopped),
        }
    }

    /// Submits a batch and blocks the calling thread (outside any async runtime) until it is
    /// durable.
    ///
    /// # Errors
    /// As [`StorageWriter::commit`].
    pub fn blocking_commit(&self, batch: WriteBatch) -> Result<(), StorageError> {
        match self.submit(batch) {
            Ok(ticket) => ticket.blocking_wait(),
            Err(_stopped) => Err(StorageError::WriterStopped),
        }
    }

    pub fn counters(&self) -> &StorageWriterCounters {
        &self.counters
    }
}

fn ticket() -> (oneshot::Sender<Result<(), StorageError>>, CommitTicket) {
    let (done, receiver) = oneshot::channel();
    (done, CommitTicket { done: receiver })
}

/// The writer's metrics, recorded on the writer thread (see docs/metrics.md, Storage).
struct WriterMetrics {
    batches_total: Counter,
    commits_total: Counter,
    flushes_total: Counter,
    write_errors_total: Counter,
    queue_depth: Gauge,
    transient_entries_total: Counter,
    batch_size: Histogram,
    flush_latency: Histogram,
}

impl WriterMetrics {
    fn new() -> WriterMetrics {
        WriterMetrics {
            batches_total: counter!("starling_storage_batches_total"),
            commits_total: counter!("starling_storage_commits_total"),
            flushes_total: counter!("starling_storage_flushes_total"),
            write_errors_total: counter!("starling_storage_write_errors_total"),
            queue_depth: gauge!("starling_storage_queue_depth"),
            transient_entries_total: counter!("starling_storage_transient_entries_total"),
            batch_size: histogram::register(&BATCH_SIZE, &[]),
            flush_latency: histogram::register(&FLUSH_LATENCY, &[]),
        }
    }
}

struct WriterLoop {
    store: Arc<dyn Store>,
    config: StorageWriterConfig,
    receiver: mpsc::UnboundedReceiver<WriteRequest>,
    runtime: tokio::runtime::Runtime,
    counters: Arc<StorageWriterCounters>,
    metrics: WriterMetrics,
    /// The first failure; once set every request is refused, since durability is unknown.
    failure: Option<String>,
    /// With `FsyncPolicy::Never`: when the oldest unflushed group was applied.
    unflushed_since: Option<Instant>,
}

impl WriterLoop {
    fn run(&mut self) {
        loop {
            let Some(first) = self.receive_first() else {
                break;
            };
            let group = self.collect_group(first);
            self.commit_group(group);
        }
        if self.unflushed_since.is_some() && self.failure.is_none() {
            if let Err(error) = self.flush() {
                tracing::error!(%error, "final storage flush failed");
            }
        }
    }

    /// Waits for the first request of a group, doing background flushes while idle.
    fn receive_first(&mut self) -> Option<WriteRequest> {
        loop {
            let Some(unflushed_since) = self.unflushed_since else {
                return self.runtime.block_on(self.receiver.recv());
            };
            let flush_at = unflushed_since + self.config.background_flush_interval;
            let receiver = &mut self.receiver;
            let received = self.runtime.block_on(async move {
                tokio::time::timeout_at(flush_at.into(), receiver.recv()).await
            });
            match received {
                Ok(request) => return request,
                Err(_elapsed) => {
                    if let Err(error) = self.flush() {
                        self.fail(&error);
                    }
                }
            }
        }
    }

    /// Collects a group: everything already waiting, and, when little was waiting, what
    /// arrives within `max_batch_delay`. A backlog is committed at once: under load the
    /// previous commit's duration already gathered a group, and waiting longer would only
    /// leave the thread idle while acknowledgements wait.
    fn collect_group(&mut self, first: WriteRequest) -> Vec<WriteRequest> {
        let backlog = self.receiver.len();
        let mut group = Vec::with_capacity((backlog + 1).min(self.config.max_group_batches));
        group.push(first);
        let deadline = Instant::now() + self.config.max_batch_delay;
        while group.len() < self.config.max_group_batches {
            match self.receiver.try_recv() {
                Ok(request) => group.push(request),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if backlog >= BACKLOG_COMMITS_AT_ONCE || Instant::now() >= deadline {
                        break;
                    }
                    let receiver = &mut self.receiver;
                    let received = self.runtime.block_on(async move {
                        tokio::time::timeout_at(deadline.into(), receiver.recv()).await
                    });
                    match received {
                        Ok(Some(request)) => group.push(request),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        group
    }

    fn commit_group(&mut self, group: Vec<WriteRequest>) {
        let num_batches = group.len() as u64;
        // What waits behind this group: a growing figure means the disk does not keep up.
        self.metrics.queue_depth.set(self.receiver.len() as f64);
        let (batches, replies): (Vec<WriteBatch>, Vec<_>) = group
            .into_iter()
            .map(|request| (request.batch, request.done))
            .unzip();
        let outcome = match &self.failure {
            Some(reason) => Err(StorageError::WriterFailed {
                reason: reason.clone(),
            }),
            None => self.apply_and_maybe_flush(&batches),
        };
        let outcome = match outcome {
            Ok(stats) => {
                self.counters
                    .num_transient_entries
                    .fetch_add(stats.transient_entries, Ordering::Relaxed);
                self.metrics
                    .transient_entries_total
                    .increment(stats.transient_entries);
                Ok(())
            }
            Err(error) => Err(error),
        };
        if let Err(error) = &outcome {
            if self.failure.is_none() {
                self.fail(error);
            }
        } else {
            self.counters
                .num_batches
                .fetch_add(num_batches, Ordering::Relaxed);
            self.counters.num_groups.fetch_add(1, Ordering::Relaxed);
            self.counters
                .largest_group_batches
                .fetch_max(num_batches, Ordering::Relaxed);
            self.metrics.batches_total.increment(num_batches);
            self.metrics.commits_total.increment(1);
            self.metrics.batch_size.record(num_batches);
        }
        for reply in replies {
            // A requester that stopped waiting (its session ended) is fine to ignore.
            let _ = reply.send(outcome.clone());
        }
    }

    fn apply_and_maybe_flush(
        &mut self,
        batches: &[WriteBatch],
    ) -> Result<ApplyStats, StorageError> {
        match self.config.fsync {
            FsyncPolicy::Always => {
                let started = Instant::now();
                let stats = self.store.apply_durably(batches)?;
                self.flushed(started);
                Ok(stats)
            }
            FsyncPolicy::Never => {
                let stats = self.store.apply(batches)?;
                self.unflushed_since.get_or_insert_with(Instant::now);
                Ok(stats)
            }
        }
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        let started = Instant::now();
        self.store.flush()?;
        self.flushed(started);
        Ok(())
    }

    /// Counts a durable flush (or durable commit) that began at `started`.
    fn flushed(&mut self, started: Instant) {
        self.unflushed_since = None;
        self.counters.num_flushes.fetch_add(1, Ordering::Relaxed);
        self.metrics.flushes_total.increment(1);
        self.metrics
            .flush_latency
            .record_duration(started.elapsed());
    }

    fn fail(&mut self, error: &StorageError) {
        tracing::error!(%error, engine = self.store.engine(), "storage write failed; refusing further writes");
        self.counters.num_failures.fetch_add(1, Ordering::Relaxed);
        self.metrics.write_errors_total.increment(1);
        self.failure = Some(error.to_string());
    }
}
