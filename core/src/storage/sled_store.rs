//! The sled 0.34 backend: one tree, keys prefixed with the keyspace tag so a batch is atomic.

use std::{
    ops::Bound,
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
};

use parking_lot::Mutex;

use crate::storage::{
    batch::{resolve, scan_all_with, ReadView, TransientEntries, SCAN_PAGE},
    ApplyStats, KeyValue, Keyspace, StorageError, Store, WriteBatch, FORMAT_VERSION_KEY,
    STORE_FORMAT_VERSION,
};

const ENGINE: &str = "sled";

/// File in the sled directory that marks a store initialized by the broker.
const INITIALIZED_MARKER: &str = "starling-initialized";

/// A store in a sled directory.
///
/// sled's `flush` ends in `sync_file_range` on Linux, not `fsync` (see ARCHITECTURE.md,
/// "Storage"): data survives a killed process but a power loss may lose flushed writes.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
    /// Serializes resolve-then-apply so reference counts are read and written by one writer.
    apply_lock: Mutex<()>,
}

impl SledStore {
    /// Opens (or creates) the store in directory `path`.
    ///
    /// # Errors
    /// Returns [`StorageError::Open`] naming `path` when sled cannot open it (corrupt, locked by
    /// another process, unreadable) or it holds another store format; nothing is deleted.
    pub fn open(path: &Path) -> Result<SledStore, StorageError> {
        let open_error = |reason: String| StorageError::Open {
            engine: ENGINE,
            path: path.to_path_buf(),
            reason,
        };
        let config = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput);
        // sled 0.34 panics on some kinds of corruption instead of returning an error.
        let db = match catch_unwind(AssertUnwindSafe(|| config.open())) {
            Ok(Ok(db)) => db,
            Ok(Err(error)) => return Err(open_error(error.to_string())),
            Err(_) => {
                return Err(open_error(
                    "sled panicked while recovering the store".to_owned(),
                ))
            }
        };
        let store = SledStore {
            db,
            path: path.to_path_buf(),
            apply_lock: Mutex::new(()),
        };
        // sled 0.34 recovers a garbage log as an empty store instead of failing, so a marker
        // file written at initialization tells "new" from "lost its data".
        let marker = path.join(INITIALIZED_MARKER);
        let was_initialized = marker
            .try_exists()
            .map_err(|error| open_error(error.to_string()))?;
        if was_initialized && store.get(Keyspace::Meta, FORMAT_VERSION_KEY)?.is_none() {
            return Err(StorageError::SledLogRewritten {
                path: path.to_path_buf(),
                reason: format!(
                    "{INITIALIZED_MARKER} exists but sled recovered no data: the log is corrupt"
                ),
            });
        }
        check_format(&store, STORE_FORMAT_VERSION, &[])
            .map_err(|error| open_error(error.to_string()))?;
        if !was_initialized {
            std::fs::write(&marker, [STORE_FORMAT_VERSION])
                .map_err(|error| open_error(error.to_string()))?;
        }
        Ok(store)
    }

    /// Returns the directory of the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn full_key(keyspace: Keyspace, key: &[u8]) -> Vec<u8> {
        let mut full_key = Vec::with_capacity(1 + key.len());
        full_key.push(keyspace.tag());
        full_key.extend_from_slice(key);
        full_key
    }
}

/// Checks the format version of a freshly opened store, writing it into an empty one.
pub(crate) fn check_format(
    store: &dyn Store,
    version: u8,
    upgrades_from: &[u8],
) -> Result<(), StorageError> {
    let write_version = || {
        let mut batch = WriteBatch::new();
        batch.push(crate::storage::BatchOp::Put {
            keyspace: Keyspace::Meta,
            key: FORMAT_VERSION_KEY.to_vec(),
            value: vec![version],
        });
        store.apply(&[batch])?;
        store.flush()
    };
    match store.get(Keyspace::Meta, FORMAT_VERSION_KEY)? {
        Some(stored) if stored == [version] => Ok(()),
        // Every store of an older format this backend reads is also a store of the current
        // format; raising the version keeps older brokers from opening it afterwards.
        Some(stored) if stored.len() == 1 && upgrades_from.contains(&stored[0]) => write_version(),
        Some(stored) => Err(StorageError::CorruptRecord {
            keyspace: Keyspace::Meta.name(),
            reason: format!("store format {stored:?} is not the supported format {version}"),
        }),
        None => {
            let is_empty = Keyspace::ALL
                .iter()
                .map(|keyspace| store.scan(*keyspace, &[], None, 1))
                .collect::<Result<Vec<_>, _>>()?
                .iter()
                .all(Vec::is_empty);
            if !is_empty {
                return Err(StorageError::CorruptRecord {
                    keyspace: Keyspace::Meta.name(),
                    reason: "store has data but no format version".to_owned(),
                });
            }
            write_version()
        }
    }
}

impl ReadView for SledStore {
    fn get_raw(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.get(keyspace, key)
    }

    fn scan_prefix_all(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
    ) -> Result<Vec<KeyValue>, StorageError> {
        scan_all_with(prefix, |start_after| {
            self.scan(keyspace, prefix, start_after, SCAN_PAGE)
        })
    }
}

impl Store for SledStore {
    fn engine(&self) -> &'static str {
        ENGINE
    }

    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let value = self
            .db
            .get(SledStore::full_key(keyspace, key))
            .map_err(|error| StorageError::backend(ENGINE, error))?;
        Ok(value.map(|value| value.to_vec()))
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        let full_prefix = SledStore::full_key(keyspace, prefix);
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(SledStore::full_key(keyspace, after)),
            _ => Bound::Included(full_prefix.clone()),
        };
        let mut entries = Vec::new();
        for entry in self.db.range::<Vec<u8>, _>((lower, Bound::Unbounded)) {
            if entries.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(|error| StorageError::backend(ENGINE, error))?;
            if !key.starts_with(&full_prefix) {
                break;
            }
            entries.push((key[1..].to_vec(), value.to_vec()));
        }
        Ok(entries)
    }

    fn apply(&self, batches: &[WriteBatch]) -> Result<ApplyStats, StorageError> {
        let _apply_guard = self.apply_lock.lock();
        // Each batch is its own sled batch, so a crash may keep any prefix of the group:
        // skipping transient entries could then keep a later part of a batch (a publisher's
        // QoS 2 packet id, which makes its resend look delivered) without the entry it skipped.
        // So sled skips nothing; redb commits a group as one transaction.
        let transient = TransientEntries::default();
        for batch in batches {
            let raw_ops = resolve(batch, self, &transient)?;
            let mut sled_batch = sled::Batch::default();
            for (keyspace, key, value) in raw_ops {
                let full_key = SledStore::full_key(keyspace, &key);
                match value {
                    Some(value) => sled_batch.insert(full_key, &*value),
                    None => sled_batch.remove(full_key),
                }
            }
            self.db
                .apply_batch(sled_batch)
                .map_err(|error| StorageError::backend(ENGINE, error))?;
        }
        Ok(transient.stats())
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db
            .flush()
            .map_err(|error| StorageError::backend(ENGINE, error))?;
        Ok(())
    }
}
