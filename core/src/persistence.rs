//! The engine side of durable storage: what the broker writes when, and how it comes back.
//!
//! [`Persistence`] owns the [`StorageWriter`] (one storage thread, group commit) and the id
//! counters of stored messages and queue entries. Sessions write through it:
//!
//! - A connection collects the operations an acknowledgement or a PUBLISH depends on into a
//!   batch, submits it, and holds that output back until the batch is durable
//!   (`session::durable`). So a PUBACK, PUBREC, PUBCOMP, SUBACK or UNSUBACK is sent only after
//!   what it acknowledges is on disk, and a QoS 1/2 PUBLISH only after its in-flight entry is.
//! - A publisher stores the message once and one queue entry per persistent subscriber, and
//!   submits that batch *before* the deliveries enter the subscribers' mailboxes. Batches apply
//!   in submission order, so a subscriber's later "sent, now in flight" batch always lands after
//!   the "queued" batch it refers to.
//! - Session metadata and wills are written on connect (before CONNACK) and on close; ended
//!   sessions are deleted with a fenced delete (only that incarnation).
//!
//! Only sessions that outlive their connection (session expiry > 0) are stored, and only their
//! QoS 1/2 deliveries. Retained messages are stored whatever the session.
//!
//! At start-up [`Persistence::open`] recovers the store ([`crate::storage::recover`]) and
//! `restore` rebuilds sessions, queues, subscriptions, retained messages and wills.

mod restore;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    config::StorageConfig,
    message::{Message, SessionId},
    session::SessionHandle,
    storage::{
        plan_expiry_sweep, records::MessageFields, records::MessageRecord, records::SessionRecord,
        recover, CommitTicket, RecoveredState, StorageError, StorageWriter, Store, WriteBatch,
    },
};

pub(crate) use restore::restore;

/// How often expired sessions and retained messages are swept from disk, and how many entries
/// of each keyspace one sweep reads.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
const SWEEP_PAGE: usize = 1000;

/// The broker's handle on durable storage.
pub(crate) struct Persistence {
    writer: StorageWriter,
    store: Arc<dyn Store>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    next_message_id: AtomicU64,
    next_queue_seq: AtomicU64,
    /// A monotonic instant and the wall-clock time it corresponds to: stored deadlines are
    /// unix milliseconds, the engine works with instants.
    clock_instant: Instant,
    clock_unix_ms: u64,
    /// Cancelled when a write fails: durability is unknown, so the node stops.
    fatal: CancellationToken,
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

impl Persistence {
    /// Recovers the store, then starts the writer thread.
    ///
    /// # Errors
    /// Returns the recovery error (corrupt record, backend failure) or a writer start failure.
    pub(crate) fn open(
        config: StorageConfig,
        fatal: CancellationToken,
    ) -> Result<(Persistence, RecoveredState), StorageError> {
        let clock_instant = Instant::now();
        let clock_unix_ms = unix_now_ms();
        let recovered = recover(&*config.store, clock_unix_ms)?;
        let max_seq = recovered
            .sessions
            .iter()
            .flat_map(|session| session.queue.iter().map(|(seq, _)| *seq))
            .max()
            .unwrap_or(0);
        let (writer, writer_thread) = StorageWriter::spawn(config.store.clone(), config.writer)?;
        let persistence = Persistence {
            writer,
            store: config.store,
            writer_thread: Mutex::new(Some(writer_thread)),
            next_message_id: AtomicU64::new(recovered.next_message_id.max(1)),
            next_queue_seq: AtomicU64::new(max_seq + 1),
            clock_instant,
            clock_unix_ms,
            fatal,
        };
        Ok((persistence, recovered))
    }

    /// Returns the backend name.
    pub(crate) fn engine(&self) -> &'static str {
        self.store.engine()
    }

    /// Submits a batch; `None` when the writer is gone (the node is then stopping).
    pub(crate) fn submit(&self, batch: WriteBatch) -> Option<CommitTicket> {
        match self.writer.submit(batch) {
            Ok(ticket) => Some(ticket),
            Err(_stopped) => {
                self.failed(&StorageError::WriterStopped);
                None
            }
        }
    }

    /// Submits a batch nobody waits for (its order with later batches is what matters).
    pub(crate) fn submit_detached(&self, batch: WriteBatch) {
        if batch.is_empty() {
            return;
        }
        drop(self.submit(batch));
    }

    /// Submits a batch and waits until it is durable.
    ///
    /// # Errors
    /// Returns the storage error; the node has then been told to stop.
    pub(crate) async fn commit(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let Some(ticket) = self.submit(batch) else {
            return Err(StorageError::WriterStopped);
        };
        let outcome = ticket.wait().await;
        if let Err(error) = &outcome {
            self.failed(error);
        }
        outcome
    }

    /// A write failed: durability is unknown from now on, so the node must stop (and recover
    /// from what is on disk when it restarts).
    pub(crate) fn failed(&self, error: &StorageError) {
        if !self.fatal.is_cancelled() {
            tracing::error!(%error, engine = self.engine(), "storage failed; stopping the broker");
            self.fatal.cancel();
        }
    }

    /// Allocates the id of a stored message.
    pub(crate) fn allocate_message_id(&self) -> u64 {
        self.next_message_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Allocates the sequence of a stored queue entry (global, so per session it increases).
    pub(crate) fn allocate_queue_seq(&self) -> u64 {
        self.next_queue_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Converts an instant to unix milliseconds.
    pub(crate) fn unix_ms(&self, at: Instant) -> u64 {
        if at >= self.clock_instant {
            self.clock_unix_ms + at.duration_since(self.clock_instant).as_millis() as u64
        } else {
            self.clock_unix_ms
                .saturating_sub(self.clock_instant.duration_since(at).as_millis() as u64)
        }
    }

    /// Converts unix milliseconds to an instant (past deadlines become "now").
    pub(crate) fn instant_of(&self, unix_ms: u64) -> Instant {
        let now = Instant::now();
        let now_unix_ms = self.unix_ms(now);
        now + Duration::from_millis(unix_ms.saturating_sub(now_unix_ms))
    }

    /// Builds the stored form of a message.
    pub(crate) fn message_record(&self, message: &Message) -> MessageRecord {
        let mut properties = message.properties.clone();
        properties.message_expiry_interval = None;
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        MessageRecord {
            topic: message.topic.clone(),
            payload: message.payload.clone(),
            qos: message.qos,
            retain: message.retain,
            properties,
            expiry_unix_ms: message.expires_at.map(|at| self.unix_ms(at)),
        }
    }

    /// Borrows the stored fields of a message (what [`Persistence::message_record`] would
    /// build, without the copies).
    pub(crate) fn message_fields<'a>(&self, message: &'a Message) -> MessageFields<'a> {
        MessageFields {
            topic: &message.topic,
            payload: &message.payload,
            qos: message.qos,
            retain: message.retain,
            properties: &message.properties,
            expiry_unix_ms: message.expires_at.map(|at| self.unix_ms(at)),
        }
    }

    /// Rebuilds a message from its stored form.
    pub(crate) fn message_from_record(&self, record: MessageRecord) -> Arc<Message> {
        let expires_at = record.expiry_unix_ms.map(|ms| self.instant_of(ms));
        let mut properties = record.properties;
        // Forwarded with what is left of it, computed from `expires_at` when sent.
        properties.message_expiry_interval = None;
        Arc::new(Message {
            topic: record.topic,
            payload: record.payload,
            qos: record.qos,
            retain: record.retain,
            properties,
            expires_at,
            publisher: SessionId::SYSTEM,
            // Its age before the restart is not a delivery latency.
            received_at: crate::message::ReceivedAt::UNKNOWN,
        })
    }

    /// Builds the session record of `handle`; `expires_at` is `None` while a client is connected.
    pub(crate) fn session_record(
        &self,
        handle: &SessionHandle,
        expiry_secs: u32,
        expires_at: Option<Instant>,
    ) -> SessionRecord {
        SessionRecord {
            client_id: handle.client_id().clone(),
            session_id: handle.id().0,
            session_expiry_interval_secs: expiry_secs,
            expiry_deadline_unix_ms: expires_at.map(|at| self.unix_ms(at)),
        }
    }

    /// Deletes an ended session from the store, once, if it was stored.
    pub(crate) fn session_ended(&self, handle: &SessionHandle) {
        if !handle.set_persistent(false) {
            return;
        }
        let mut batch = WriteBatch::new();
        batch.delete_session_if(handle.client_id(), handle.id().0);
        self.submit_detached(batch);
    }

    /// Deletes a session's will (published, or cancelled by a reconnect).
    pub(crate) fn will_done(&self, handle: &SessionHandle) {
        if !handle.is_persistent() {
            return;
        }
        let mut batch = WriteBatch::new();
        batch.delete_will(handle.client_id());
        self.submit_detached(batch);
    }

    /// Waits until everything submitted so far is durable, then lets the writer thread finish
    /// once the last handle is dropped.
    pub(crate) async fn close(&self) {
        if let Err(error) = self.writer.commit(WriteBatch::new()).await {
            tracing::error!(%error, "final storage commit failed");
        }
        drop(self.writer_thread.lock().take());
    }

    /// Removes expired sessions and retained messages from disk, a bounded page at a time.
    pub(crate) async fn sweep_forever(self: Arc<Self>) {
        let mut session_cursor: Option<Vec<u8>> = None;
        let mut retained_cursor: Option<Vec<u8>> = None;
        let mut interval = tokio::time::interval(SWEEP_INTERVAL);
        interval.tick().await;
        loop {
            interval.tick().await;
            let store = self.store.clone();
            let now_unix_ms = unix_now_ms();
            let cursors = (session_cursor.take(), retained_cursor.take());
            let planned = tokio::task::spawn_blocking(move || {
                plan_expiry_sweep(
                    &*store,
                    now_unix_ms,
                    SWEEP_PAGE,
                    cursors.0.as_deref(),
                    cursors.1.as_deref(),
                )
            })
            .await;
            match planned {
                Ok(Ok(sweep)) => {
                    session_cursor = sweep.next_session_cursor;
                    retained_cursor = sweep.next_retained_cursor;
                    self.submit_detached(sweep.batch);
                }
                Ok(Err(error)) => tracing::warn!(%error, "storage expiry sweep failed"),
                Err(error) => tracing::warn!(%error, "storage expiry sweep panicked"),
            }
        }
    }
}
