//! In-memory store for tests; a [`MemoryDisk`] plays the disk so tests can "crash" and reopen.

use std::borrow::Cow;
use std::{collections::BTreeMap, ops::Bound, sync::Arc};

use parking_lot::Mutex;

use crate::storage::{
    batch::{resolve, RawOp, ReadView, TransientEntries},
    ApplyStats, KeyValue, Keyspace, StorageError, Store, WriteBatch,
};

type Map = BTreeMap<(Keyspace, Vec<u8>), Vec<u8>>;

/// What a [`MemoryStore`] has flushed. Clones share it; a store opened on it after the previous
/// one was dropped sees only flushed batches, as a real store would after `kill -9`.
#[derive(Debug, Clone, Default)]
pub struct MemoryDisk {
    flushed: Arc<Mutex<Map>>,
}

impl MemoryDisk {
    /// Creates an empty disk.
    pub fn new() -> MemoryDisk {
        MemoryDisk::default()
    }
}

/// A store that keeps everything in a `BTreeMap`; for tests, never for production.
#[derive(Debug)]
pub struct MemoryStore {
    disk: MemoryDisk,
    /// Live map and the resolved writes not yet flushed to `disk`.
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    live: Map,
    unflushed: Vec<RawOp<'static>>,
}

impl MemoryStore {
    /// Opens a store on `disk`, starting from what was flushed to it.
    pub fn open(disk: MemoryDisk) -> MemoryStore {
        let live = disk.flushed.lock().clone();
        MemoryStore {
            disk,
            state: Mutex::new(MemoryState {
                live,
                unflushed: Vec::new(),
            }),
        }
    }

    /// Opens a store on a fresh disk.
    pub fn new_for_test() -> MemoryStore {
        MemoryStore::open(MemoryDisk::new())
    }
}

struct MapView<'a>(&'a Map);

impl ReadView for MapView<'_> {
    fn get_raw(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.0.get(&(keyspace, key.to_vec())).cloned())
    }

    fn scan_prefix_all(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
    ) -> Result<Vec<KeyValue>, StorageError> {
        Ok(scan_map(self.0, keyspace, prefix, None, usize::MAX))
    }
}

fn scan_map(
    map: &Map,
    keyspace: Keyspace,
    prefix: &[u8],
    start_after: Option<&[u8]>,
    limit: usize,
) -> Vec<KeyValue> {
    let lower = match start_after {
        Some(after) if after >= prefix => Bound::Excluded((keyspace, after.to_vec())),
        _ => Bound::Included((keyspace, prefix.to_vec())),
    };
    map.range((lower, Bound::Unbounded))
        .take_while(|((entry_keyspace, key), _)| {
            *entry_keyspace == keyspace && key.starts_with(prefix)
        })
        .take(limit)
        .map(|((_, key), value)| (key.clone(), value.clone()))
        .collect()
}

fn apply_raw<'a>(map: &mut Map, raw_ops: impl IntoIterator<Item = RawOp<'a>>) {
    for (keyspace, key, value) in raw_ops {
        match value {
            Some(value) => map.insert((keyspace, key.into_owned()), value.into_owned()),
            None => map.remove(&(keyspace, key.into_owned())),
        };
    }
}

impl Store for MemoryStore {
    fn engine(&self) -> &'static str {
        "memory"
    }

    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .state
            .lock()
            .live
            .get(&(keyspace, key.to_vec()))
            .cloned())
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        Ok(scan_map(
            &self.state.lock().live,
            keyspace,
            prefix,
            start_after,
            limit,
        ))
    }

    fn apply(&self, batches: &[WriteBatch]) -> Result<ApplyStats, StorageError> {
        let mut state = self.state.lock();
        let transient = TransientEntries::find(batches);
        for batch in batches {
            let raw_ops = resolve(batch, &MapView(&state.live), &transient)?;
            apply_raw(&mut state.live, raw_ops.iter().cloned());
            state
                .unflushed
                .extend(raw_ops.into_iter().map(|(keyspace, key, value)| {
                    (
                        keyspace,
                        Cow::Owned(key.into_owned()),
                        value.map(|value| Cow::Owned(value.into_owned())),
                    )
                }));
        }
        Ok(transient.stats())
    }

    fn flush(&self) -> Result<(), StorageError> {
        let mut state = self.state.lock();
        let unflushed = std::mem::take(&mut state.unflushed);
        apply_raw(&mut self.disk.flushed.lock(), unflushed);
        Ok(())
    }
}
