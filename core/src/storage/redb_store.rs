//! The redb backend: one table per keyspace, one write transaction per group of batches.
//!
//! [`Store::apply`] commits with `Durability::None` (no sync); [`Store::flush`] commits an
//! empty transaction with `Durability::Immediate`, which redb makes durable together with every
//! non-durable commit before it, with `fdatasync` (`File::sync_data`).

use std::{
    ops::Bound,
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
};

use parking_lot::Mutex;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition};

use crate::storage::{
    batch::{resolve, RawOp, ReadView, TransientEntries},
    redb_queue::{self, QueueWrites},
    sled_store::check_format,
    ApplyStats, KeyValue, Keyspace, StorageError, Store, WriteBatch,
};

const ENGINE: &str = "redb";

/// The store format redb writes: format 1 with offline queue entries packed into chunks
/// ([`redb_queue`]). A format 1 store is a valid format 2 store (one entry per value), so
/// opening one raises its version; older brokers then refuse it rather than misread a chunk.
pub(crate) const REDB_FORMAT_VERSION: u8 = 2;

type RawTable = TableDefinition<'static, &'static [u8], &'static [u8]>;

fn table_definition(keyspace: Keyspace) -> RawTable {
    TableDefinition::new(keyspace.name())
}

fn backend_error(error: impl Into<redb::Error>) -> StorageError {
    StorageError::backend(ENGINE, error.into())
}

/// A store in one redb file.
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    /// Serializes write transactions (redb would block anyway) and names the single writer.
    apply_lock: Mutex<()>,
}

impl RedbStore {
    /// Opens the redb file at `path`, creating it when it does not exist.
    ///
    /// # Errors
    /// Returns [`StorageError::Open`] naming `path` when redb cannot open it (corrupt, locked by
    /// another process, unreadable, an older file format) or it holds another store format;
    /// the file is never deleted or rewritten.
    pub fn open(path: &Path) -> Result<RedbStore, StorageError> {
        let open_error = |reason: String| StorageError::Open {
            engine: ENGINE,
            path: path.to_path_buf(),
            reason,
        };
        let exists = path
            .try_exists()
            .map_err(|error| open_error(error.to_string()))?;
        // Never `create` an existing file: open it, and report what is wrong with it.
        let opened = catch_unwind(AssertUnwindSafe(|| {
            if exists {
                Database::open(path)
            } else {
                Database::create(path)
            }
        }));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(error)) => return Err(open_error(error.to_string())),
            Err(_) => {
                return Err(open_error(
                    "redb panicked while opening the file".to_owned(),
                ))
            }
        };
        let store = RedbStore {
            db,
            path: path.to_path_buf(),
            apply_lock: Mutex::new(()),
        };
        store
            .create_tables()
            .map_err(|error| open_error(error.to_string()))?;
        check_format(&store, REDB_FORMAT_VERSION, &[1])
            .map_err(|error| open_error(error.to_string()))?;
        Ok(store)
    }

    /// Returns the file of the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many values redb holds in `keyspace` (queue chunks count once).
    #[cfg(test)]
    pub(crate) fn stored_values(&self, keyspace: Keyspace) -> u64 {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read().expect("begins a read");
        let table = txn
            .open_table(table_definition(keyspace))
            .expect("opens the table");
        table.len().expect("counts the table")
    }

    /// Writes a value as it is, past the queue's chunking, durably.
    #[cfg(test)]
    pub(crate) fn put_raw(&self, keyspace: Keyspace, key: &[u8], value: &[u8]) {
        let txn = self.db.begin_write().expect("begins a write");
        {
            let mut table = txn
                .open_table(table_definition(keyspace))
                .expect("opens the table");
            table.insert(key, value).expect("inserts");
        }
        txn.commit().expect("commits");
    }

    fn create_tables(&self) -> Result<(), StorageError> {
        let txn = self.db.begin_write().map_err(backend_error)?;
        for keyspace in Keyspace::ALL {
            txn.open_table(table_definition(keyspace))
                .map_err(backend_error)?;
        }
        txn.commit().map_err(backend_error)
    }
}

fn scan_table(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
    start_after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<KeyValue>, StorageError> {
    let lower = match start_after {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    };
    let mut entries = Vec::new();
    let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (lower, Bound::Unbounded);
    for entry in table.range::<&[u8]>(bounds).map_err(backend_error)? {
        if entries.len() >= limit {
            break;
        }
        let (key, value) = entry.map_err(backend_error)?;
        if !key.value().starts_with(prefix) {
            break;
        }
        entries.push((key.value().to_vec(), value.value().to_vec()));
    }
    Ok(entries)
}

/// The tables of an open write transaction, indexed by keyspace tag.
struct WriteTables<'txn> {
    tables: Vec<Table<'txn, &'static [u8], &'static [u8]>>,
}

impl<'txn> WriteTables<'txn> {
    fn table(&self, keyspace: Keyspace) -> &Table<'_, &'static [u8], &'static [u8]> {
        &self.tables[usize::from(keyspace.tag())]
    }

    fn table_mut<'a>(
        &'a mut self,
        keyspace: Keyspace,
    ) -> &'a mut Table<'txn, &'static [u8], &'static [u8]> {
        &mut self.tables[usize::from(keyspace.tag())]
    }
}

impl ReadView for WriteTables<'_> {
    fn get_raw(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if keyspace == Keyspace::OfflineQueue {
            return redb_queue::get(self.table(keyspace), key);
        }
        let value = self.table(keyspace).get(key).map_err(backend_error)?;
        Ok(value.map(|value| value.value().to_vec()))
    }

    fn scan_prefix_all(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
    ) -> Result<Vec<KeyValue>, StorageError> {
        if keyspace == Keyspace::OfflineQueue {
            return redb_queue::scan(self.table(keyspace), prefix, None, usize::MAX);
        }
        scan_table(self.table(keyspace), prefix, None, usize::MAX)
    }
}

impl Store for RedbStore {
    fn engine(&self) -> &'static str {
        ENGINE
    }

    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self.db.begin_read().map_err(backend_error)?;
        let table = txn
            .open_table(table_definition(keyspace))
            .map_err(backend_error)?;
        if keyspace == Keyspace::OfflineQueue {
            return redb_queue::get(&table, key);
        }
        let value = table.get(key).map_err(backend_error)?;
        Ok(value.map(|value| value.value().to_vec()))
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        let txn = self.db.begin_read().map_err(backend_error)?;
        let table = txn
            .open_table(table_definition(keyspace))
            .map_err(backend_error)?;
        if keyspace == Keyspace::OfflineQueue {
            return redb_queue::scan(&table, prefix, start_after, limit);
        }
        scan_table(&table, prefix, start_after, limit)
    }

    fn apply(&self, batches: &[WriteBatch]) -> Result<ApplyStats, StorageError> {
        self.commit(batches, Durability::None)
    }

    /// One transaction that applies the group and syncs it, instead of a non-durable commit
    /// followed by an empty durable one.
    fn apply_durably(&self, batches: &[WriteBatch]) -> Result<ApplyStats, StorageError> {
        self.commit(batches, Durability::Immediate)
    }

    fn flush(&self) -> Result<(), StorageError> {
        let _apply_guard = self.apply_lock.lock();
        let mut txn = self.db.begin_write().map_err(backend_error)?;
        txn.set_durability(Durability::Immediate)
            .map_err(|error| StorageError::backend(ENGINE, error))?;
        txn.commit().map_err(backend_error)
    }
}

fn apply_raw_op(tables: &mut WriteTables<'_>, raw_op: RawOp<'_>) -> Result<(), StorageError> {
    let (keyspace, key, value) = raw_op;
    let table = &mut tables.tables[usize::from(keyspace.tag())];
    match value {
        Some(value) => table.insert(&*key, &*value).map(drop),
        None => table.remove(&*key).map(drop),
    }
    .map_err(backend_error)
}

impl RedbStore {
    /// Applies the batches in one write transaction committed with `durability`.
    fn commit(
        &self,
        batches: &[WriteBatch],
        durability: Durability,
    ) -> Result<ApplyStats, StorageError> {
        let _apply_guard = self.apply_lock.lock();
        let mut txn = self.db.begin_write().map_err(backend_error)?;
        txn.set_durability(durability)
            .map_err(|error| StorageError::backend(ENGINE, error))?;
        let stats;
        {
            let mut tables = WriteTables {
                tables: Vec::with_capacity(Keyspace::ALL.len()),
            };
            for keyspace in Keyspace::ALL {
                debug_assert_eq!(usize::from(keyspace.tag()), tables.tables.len());
                tables.tables.push(
                    txn.open_table(table_definition(keyspace))
                        .map_err(backend_error)?,
                );
            }
            // The whole group is one transaction, so each batch is atomic (the group is too),
            // and each batch resolves against the writes of the batches before it.
            let transient = TransientEntries::find(batches);
            stats = transient.stats();
            // Queue entries are most of a busy group's writes: they are gathered and applied
            // as chunks (`redb_queue`) after the group's other writes. A group that deletes a
            // session reads the queue while it resolves, so there they are applied after each
            // batch, before the next batch reads.
            let mut queue_writes = QueueWrites::default();
            let per_batch = !transient.queue_writes_commute();
            for batch in batches {
                let raw_ops = resolve(batch, &tables, &transient)?;
                for raw_op in raw_ops {
                    if raw_op.0 == Keyspace::OfflineQueue {
                        queue_writes.push(raw_op.1, raw_op.2);
                    } else {
                        apply_raw_op(&mut tables, raw_op)?;
                    }
                }
                if per_batch && !queue_writes.is_empty() {
                    queue_writes.apply(tables.table_mut(Keyspace::OfflineQueue))?;
                }
            }
            queue_writes.apply(tables.table_mut(Keyspace::OfflineQueue))?;
        }
        txn.commit().map_err(backend_error)?;
        Ok(stats)
    }
}
