//! Durable storage of sessions, queues, in-flight state, retained messages and wills.
//!
//! # Layout
//! - [`Store`]: the synchronous storage trait (keyspaces, atomic [`WriteBatch`]es, bounded
//!   prefix scans, an explicit durable [`Store::flush`]), called from one storage thread.
//! - [`MemoryStore`], [`SledStore`], [`RedbStore`]: the backends; memory is for tests only.
//! - [`records`]: the versioned binary encoding of every record kind.
//! - [`StorageWriter`]: group commit in front of a store, with a bounded request channel;
//!   a request completes only after the flush that made it durable.
//! - [`recover`]: loads everything at start-up into plain structs, dropping what expired.
//!
//! Keys sort so that everything of one session is one prefix ([`session_key_prefix`]).
//! Message payloads that many sessions queue are stored once in [`Keyspace::Messages`] and
//! reference-counted in [`Keyspace::MessageRefs`]; the count is maintained by the store while it
//! applies a batch ([`BatchOp::MessageRef`]), so a message disappears with its last reference.

mod batch;
mod memory;
pub mod records;
mod recovery;
mod redb_queue;
mod redb_store;
mod sled_store;
mod writer;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod records_tests;
#[cfg(test)]
mod redb_queue_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod throughput_tests;

use std::path::PathBuf;

pub use batch::{ApplyStats, BatchOp, WriteBatch};
pub use memory::{MemoryDisk, MemoryStore};
pub use recovery::{
    plan_expiry_sweep, recover, ExpirySweep, RecoveredSession, RecoveredState, RecoveryCounts,
};
pub use redb_store::RedbStore;
pub use sled_store::SledStore;
pub use writer::{
    CommitTicket, FsyncPolicy, StorageWriter, StorageWriterConfig, StorageWriterCounters,
    SubmitError,
};

/// Version of the key layout and record encoding, stored under [`Keyspace::Meta`] (sled; redb
/// stores `redb_store::REDB_FORMAT_VERSION`, which packs queue entries into chunks).
pub const STORE_FORMAT_VERSION: u8 = 1;

/// The meta key that holds [`STORE_FORMAT_VERSION`].
pub(crate) const FORMAT_VERSION_KEY: &[u8] = b"format_version";

/// One family of keys; each backend keeps keyspaces apart (sled: a key prefix byte in one tree,
/// so a batch stays atomic; redb: one table each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Keyspace {
    /// Store metadata (format version).
    Meta = 0,
    /// Client id → [`records::SessionRecord`].
    Sessions = 1,
    /// Session prefix + topic filter → [`records::SubscriptionRecord`].
    Subscriptions = 2,
    /// Session prefix + packet id (u16 BE) → [`records::InflightRecord`].
    OutboundInflight = 3,
    /// Session prefix + packet id (u16 BE) → empty: QoS 2 publishes awaiting PUBREL.
    InboundQos2 = 4,
    /// Session prefix + sequence number (u64 BE) → [`records::QueueRecord`].
    OfflineQueue = 5,
    /// Message id (u64 BE) → [`records::MessageRecord`], shared by every referencing entry.
    Messages = 6,
    /// Message id (u64 BE) → reference count (u64 BE); maintained by the store.
    MessageRefs = 7,
    /// Topic name → [`records::MessageRecord`] (retained messages are stored inline).
    Retained = 8,
    /// Client id → [`records::WillRecord`] (wills waiting for their delay or session end).
    Wills = 9,
}

impl Keyspace {
    /// Every keyspace, in tag order.
    pub const ALL: [Keyspace; 10] = [
        Keyspace::Meta,
        Keyspace::Sessions,
        Keyspace::Subscriptions,
        Keyspace::OutboundInflight,
        Keyspace::InboundQos2,
        Keyspace::OfflineQueue,
        Keyspace::Messages,
        Keyspace::MessageRefs,
        Keyspace::Retained,
        Keyspace::Wills,
    ];

    /// Returns the one-byte tag used in keys and table names.
    pub fn tag(self) -> u8 {
        self as u8
    }

    /// Returns a stable name (redb table names, error messages).
    pub fn name(self) -> &'static str {
        match self {
            Keyspace::Meta => "meta",
            Keyspace::Sessions => "sessions",
            Keyspace::Subscriptions => "subscriptions",
            Keyspace::OutboundInflight => "outbound_inflight",
            Keyspace::InboundQos2 => "inbound_qos2",
            Keyspace::OfflineQueue => "offline_queue",
            Keyspace::Messages => "messages",
            Keyspace::MessageRefs => "message_refs",
            Keyspace::Retained => "retained",
            Keyspace::Wills => "wills",
        }
    }
}

/// A key and its value as returned by a scan.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Errors of the storage layer.
///
/// Cloneable (strings, no sources) because one failed group commit fails every request in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The store at `path` cannot be opened; nothing was changed on disk.
    #[error(
        "cannot open the {engine} store at {}: {reason}; the broker did not modify it: \
         restore it from a backup, or move it aside to start with an empty store",
        path.display()
    )]
    Open {
        /// Backend name (`sled`, `redb`).
        engine: &'static str,
        /// The file or directory that could not be opened.
        path: PathBuf,
        /// What the backend reported.
        reason: String,
    },
    /// The sled store at `path` holds a corrupt log, which sled 0.34 rewrote while opening it
    /// (it cannot be opened without writing); the broker refuses to run on it.
    #[error(
        "cannot open the sled store at {}: {reason}; sled rewrites a corrupt log while opening \
         it, so the original bytes are gone: restore the directory from a backup, or move it \
         aside to start with an empty store",
        path.display()
    )]
    SledLogRewritten {
        /// The sled directory.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// A read or write failed in the backend.
    #[error("{engine} store failed: {reason}")]
    Backend {
        /// Backend name.
        engine: &'static str,
        /// What the backend reported.
        reason: String,
    },
    /// A stored record could not be decoded.
    #[error("corrupt record in keyspace {keyspace}: {reason}")]
    CorruptRecord {
        /// Keyspace name.
        keyspace: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The storage writer thread has stopped (shutdown, or a panic).
    #[error("storage writer has stopped")]
    WriterStopped,
    /// An earlier apply or flush failed; durability is unknown, so the writer refuses all
    /// further work and the broker must stop.
    #[error("storage writer failed earlier and refuses writes: {reason}")]
    WriterFailed {
        /// The first failure.
        reason: String,
    },
}

impl StorageError {
    /// Builds a [`StorageError::Backend`].
    pub(crate) fn backend(engine: &'static str, error: impl std::fmt::Display) -> StorageError {
        StorageError::Backend {
            engine,
            reason: error.to_string(),
        }
    }
}

/// A key-value store with keyspaces, atomic batches, bounded scans and an explicit flush.
///
/// Synchronous: the broker calls it from one dedicated thread ([`StorageWriter`]) and, before
/// that thread starts, from [`recover`]. Reads may run on other threads at any time.
pub trait Store: Send + Sync + 'static {
    /// Returns the backend name (`memory`, `sled`, `redb`).
    fn engine(&self) -> &'static str;

    /// Reads one key.
    ///
    /// # Errors
    /// Returns [`StorageError::Backend`] on an I/O failure.
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Returns at most `limit` entries whose key starts with `prefix`, in key order, starting
    /// strictly after `start_after` when given (pass the last key of the previous page).
    ///
    /// # Errors
    /// Returns [`StorageError::Backend`] on an I/O failure.
    fn scan(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError>;

    /// Applies the batches in order; each batch is atomic (all or none of it survives a crash).
    /// The writes are visible to reads at once but durable only after [`Store::flush`].
    ///
    /// # Errors
    /// Returns [`StorageError::Backend`] on an I/O failure; the batches that were not applied
    /// are lost, and the caller must treat the store as failed.
    fn apply(&self, batches: &[WriteBatch]) -> Result<ApplyStats, StorageError>;

    /// Applies the batches as [`Store::apply`] does and makes them durable as [`Store::flush`]
    /// does. A backend that can do both in one commit overrides this.
    ///
    /// # Errors
    /// As [`Store::apply`] and [`Store::flush`].
    fn apply_durably(&self, batches: &[WriteBatch]) -> Result<ApplyStats, StorageError> {
        let stats = self.apply(batches)?;
        self.flush()?;
        Ok(stats)
    }

    /// Makes every applied batch durable: after `Ok`, a crash (even a power loss, to the extent
    /// the backend's sync call guarantees it) cannot lose them.
    ///
    /// # Errors
    /// Returns [`StorageError::Backend`] when the sync fails; durability is then unknown.
    fn flush(&self) -> Result<(), StorageError>;
}

/// Encodes the key prefix shared by every entry of one session: client id length (u16 BE)
/// followed by the client id, so `"a"` is never a prefix of `"ab"`'s entries.
pub fn session_key_prefix(client_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + client_id.len());
    push_session_prefix(&mut key, client_id);
    key
}

fn push_session_prefix(key: &mut Vec<u8>, client_id: &str) {
    // MQTT limits client ids to 65,535 bytes (a UTF-8 string), so the length fits.
    let len = u16::try_from(client_id.len()).unwrap_or(u16::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(client_id.as_bytes());
}

/// Key of a subscription: session prefix + topic filter.
pub fn subscription_key(client_id: &str, topic_filter: &str) -> Vec<u8> {
    let mut key = session_key_prefix(client_id);
    key.extend_from_slice(topic_filter.as_bytes());
    key
}

/// Key of an outbound in-flight entry or an inbound QoS 2 id: session prefix + packet id.
pub fn packet_id_key(client_id: &str, packet_id: u16) -> Vec<u8> {
    let mut key = session_key_prefix(client_id);
    key.extend_from_slice(&packet_id.to_be_bytes());
    key
}

/// Key of an offline queue entry: session prefix + sequence number.
pub fn queue_key(client_id: &str, sequence: u64) -> Vec<u8> {
    let mut key = session_key_prefix(client_id);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

/// Key of a shared message or its reference count.
pub fn message_key(message_id: u64) -> [u8; 8] {
    message_id.to_be_bytes()
}

/// Splits a session-scoped key into its client id and the rest.
pub(crate) fn split_session_key(key: &[u8]) -> Option<(&str, &[u8])> {
    let (len_bytes, rest) = key.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len_bytes));
    if rest.len() < len {
        return None;
    }
    let (client_id, suffix) = rest.split_at(len);
    Some((std::str::from_utf8(client_id).ok()?, suffix))
}
