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
    sled_store::check_format,
    ApplyStats, KeyValue, Keyspace, StorageError, Store, WriteBatch,
};

const ENGINE: &str = "redb";

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
        check_format(&store).map_err(|error| open_error(error.to_string()))?;
        Ok(store)
    }

    /// Returns the file of the store.
    pub fn path(&self) -> &Path {
        &self.path
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

impl WriteTables<'_> {
    fn table(&self, keyspace: Keyspace) -> &Table<'_, &'static [u8], &'static [u8]> {
        &self.tables[usize::from(keyspace.tag())]
    }
}

impl ReadView for WriteTables<'_> {
    fn get_raw(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let value = self.table(keyspace).get(key).map_err(backend_error)?;
        Ok(value.map(|value| value.value().to_vec()))
    }

    fn scan_prefix_all(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
    ) -> Result<Vec<KeyValue>, StorageError> {
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
            // Queue entries are most of a busy group's writes, interleaved across sessions.
            // Unless a batch reads the queue, they are applied last and in key order (one
            // session's entries after another's), which keeps redb's B-tree walks on pages
            // just visited. The sort is stable, so writes of one key keep their order.
            let mut queue_ops = Vec::new();
            let defer_queue = transient.queue_writes_commute();
            for batch in batches {
                let raw_ops = resolve(batch, &tables, &transient)?;
                for raw_op in raw_ops {
                    if defer_queue && raw_op.0 == Keyspace::OfflineQueue {
                        queue_ops.push(raw_op);
                    } else {
                        apply_raw_op(&mut tables, raw_op)?;
                    }
                }
            }
            queue_ops.sort_by(|left, right| left.1.cmp(&right.1));
            for raw_op in queue_ops {
                apply_raw_op(&mut tables, raw_op)?;
            }
        }
        txn.commit().map_err(backend_error)?;
        Ok(stats)
    }
}
