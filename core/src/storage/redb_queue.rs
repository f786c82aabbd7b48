//! Offline queue entries in redb, packed into chunks.
//!
//! A busy group writes many queue entries for each session and removes most of them one group
//! later, when the subscriber has acknowledged them. One B-tree entry per message made redb's
//! insert and delete walks most of the storage thread's work, so redb keeps a group's new
//! entries for one session together in one value, a *chunk*:
//!
//! - key: the queue key of its first entry (session prefix + sequence, u64 BE), so every
//!   sequence in a chunk is at least the one in its key;
//! - value: [`CHUNK_TAG`], the largest sequence (u64 BE), the number of entries (u32 BE), then
//!   per entry its sequence (u64 BE), its length (u32 BE) and the encoded `QueueRecord`,
//!   sequences ascending.
//!
//! A value that does not start with [`CHUNK_TAG`] is one entry under its own key (records start
//! with their version byte, 1), as format 1 stored every entry and as a group that queues one
//! entry for a session still stores it.
//!
//! Sequences come from one counter, but two publishers may commit out of sequence order, so
//! the chunks of one session can overlap ({10, 20} and {15}). A lookup therefore walks back from
//! the key it wants through the session's chunks, skipping those whose largest sequence is
//! smaller, until one holds it; scans expand every chunk and sort.
//!
//! Everything outside this module sees entries: [`QueueWrites`] takes per-entry puts and
//! deletes, and the reads return per-entry keys and values.

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    ops::Range,
};

use redb::{ReadableTable, Table};

use crate::storage::{split_session_key, KeyValue, Keyspace, StorageError};

/// First byte of a chunk value.
pub(crate) const CHUNK_TAG: u8 = 0xC0;

/// At most this many entries per chunk.
const MAX_CHUNK_ENTRIES: usize = 256;

/// A chunk is closed once its entries reach this many bytes.
const MAX_CHUNK_BYTES: usize = 32 * 1024;

/// Bytes before the first entry: tag, largest sequence, count.
const CHUNK_HEADER_LEN: usize = 1 + 8 + 4;

/// Bytes before each entry's record: sequence, length.
const ENTRY_HEADER_LEN: usize = 8 + 4;

type RawTable<'txn> = Table<'txn, &'static [u8], &'static [u8]>;

/// A queue put: entry key and encoded record.
type QueuePut<'batch> = (Cow<'batch, [u8]>, Cow<'batch, [u8]>);

/// Where a delete's entry lives: the chunk key, the chunk when not yet loaded, the entry index.
type Located = (Vec<u8>, Option<TouchedChunk>, usize);

fn corrupt(reason: impl Into<String>) -> StorageError {
    StorageError::CorruptRecord {
        keyspace: Keyspace::OfflineQueue.name(),
        reason: reason.into(),
    }
}

fn backend_error(error: impl Into<redb::Error>) -> StorageError {
    StorageError::backend("redb", error.into())
}

/// Splits a queue key into its session prefix and sequence.
fn split_queue_key(key: &[u8]) -> Result<(&[u8], u64), StorageError> {
    let malformed = || corrupt("malformed queue key");
    let (_, suffix) = split_session_key(key).ok_or_else(malformed)?;
    let sequence: [u8; 8] = suffix.try_into().map_err(|_| malformed())?;
    Ok((&key[..key.len() - 8], u64::from_be_bytes(sequence)))
}

fn entry_key(session_prefix: &[u8], sequence: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(session_prefix.len() + 8);
    key.extend_from_slice(session_prefix);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

/// The largest sequence a stored value holds, read from its header alone.
fn largest_sequence(key_sequence: u64, value: &[u8]) -> Result<u64, StorageError> {
    match value.split_first() {
        Some((&CHUNK_TAG, rest)) => {
            let largest: [u8; 8] = rest
                .get(..8)
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| corrupt("truncated chunk header"))?;
            Ok(u64::from_be_bytes(largest))
        }
        _ => Ok(key_sequence),
    }
}

/// The entries of a stored value as `(sequence, byte range of the record)`, sequences ascending.
fn parse(key_sequence: u64, value: &[u8]) -> Result<Vec<(u64, Range<usize>)>, StorageError> {
    if value.first() != Some(&CHUNK_TAG) {
        return Ok(vec![(key_sequence, 0..value.len())]);
    }
    let header = value
        .get(..CHUNK_HEADER_LEN)
        .ok_or_else(|| corrupt("truncated chunk header"))?;
    let largest = u64::from_be_bytes(header[1..9].try_into().unwrap_or_default());
    let count = u32::from_be_bytes(header[9..13].try_into().unwrap_or_default()) as usize;
    if count == 0 {
        return Err(corrupt("chunk of no entries"));
    }
    let mut entries = Vec::with_capacity(count.min(value.len() / ENTRY_HEADER_LEN));
    let mut at = CHUNK_HEADER_LEN;
    let mut previous: Option<u64> = None;
    for _ in 0..count {
        let entry_header = value
            .get(at..at + ENTRY_HEADER_LEN)
            .ok_or_else(|| corrupt("truncated chunk entry"))?;
        let sequence = u64::from_be_bytes(entry_header[..8].try_into().unwrap_or_default());
        let len = u32::from_be_bytes(entry_header[8..].try_into().unwrap_or_default()) as usize;
        let start = at + ENTRY_HEADER_LEN;
        let end = start
            .checked_add(len)
            .filter(|end| *end <= value.len())
            .ok_or_else(|| corrupt("chunk entry runs past the value"))?;
        let in_order = previous.map_or(sequence >= key_sequence, |previous| sequence > previous);
        if !in_order || sequence > largest {
            return Err(corrupt("chunk sequences out of order"));
        }
        previous = Some(sequence);
        entries.push((sequence, start..end));
        at = end;
    }
    if at != value.len() || previous != Some(largest) {
        return Err(corrupt("chunk length or largest sequence does not match"));
    }
    Ok(entries)
}

/// Encodes entries as one stored value: the record itself for one entry stored under its own
/// key, a chunk otherwise.
fn encode<'a>(
    key_sequence: u64,
    entries: impl ExactSizeIterator<Item = (u64, &'a [u8])> + Clone,
) -> Vec<u8> {
    let count = entries.len();
    if count == 1 {
        if let Some((sequence, record)) = entries.clone().next() {
            if sequence == key_sequence && record.first() != Some(&CHUNK_TAG) {
                return record.to_vec();
            }
        }
    }
    let size = CHUNK_HEADER_LEN
        + entries
            .clone()
            .map(|(_, record)| ENTRY_HEADER_LEN + record.len())
            .sum::<usize>();
    let largest = entries.clone().map(|(sequence, _)| sequence).max();
    let mut value = Vec::with_capacity(size);
    value.push(CHUNK_TAG);
    value.extend_from_slice(&largest.unwrap_or(key_sequence).to_be_bytes());
    value.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_be_bytes());
    for (sequence, record) in entries {
        value.extend_from_slice(&sequence.to_be_bytes());
        value.extend_from_slice(
            &u32::try_from(record.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        value.extend_from_slice(record);
    }
    value
}

/// A stored value with the entries a group removes from it.
struct TouchedChunk {
    value: Vec<u8>,
    entries: Vec<(u64, Range<usize>)>,
    removed: Vec<bool>,
}

impl TouchedChunk {
    fn load(key_sequence: u64, value: Vec<u8>) -> Result<TouchedChunk, StorageError> {
        let entries = parse(key_sequence, &value)?;
        let removed = vec![false; entries.len()];
        Ok(TouchedChunk {
            value,
            entries,
            removed,
        })
    }

    fn position(&self, sequence: u64) -> Option<usize> {
        self.entries
            .binary_search_by_key(&sequence, |(sequence, _)| *sequence)
            .ok()
    }

    fn remaining(&self) -> impl ExactSizeIterator<Item = (u64, &[u8])> + Clone {
        let kept: Vec<usize> = (0..self.entries.len())
            .filter(|index| !self.removed[*index])
            .collect();
        kept.into_iter().map(|index| {
            let (sequence, range) = &self.entries[index];
            (*sequence, &self.value[range.clone()])
        })
    }
}

/// Reads one queue entry.
pub(crate) fn get(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StorageError> {
    let Some((_, Some(chunk), index)) = locate(table, &HashMap::new(), key)? else {
        return Ok(None);
    };
    Ok(Some(chunk.value[chunk.entries[index].1.clone()].to_vec()))
}

/// Returns at most `limit` entries under `prefix` whose key is after `start_after`, in key order.
pub(crate) fn scan(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
    start_after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<KeyValue>, StorageError> {
    let mut entries: Vec<KeyValue> = Vec::new();
    if limit == 0 {
        return Ok(entries);
    }
    // Every entry of a chunk sorts at or after the chunk's key, so once `limit` entries are
    // known, chunks whose key sorts after the last of them cannot contribute.
    let mut bound: Option<Vec<u8>> = None;
    for stored in table.range::<&[u8]>(prefix..).map_err(backend_error)? {
        let (chunk_key, value) = stored.map_err(backend_error)?;
        let chunk_key = chunk_key.value();
        if !chunk_key.starts_with(prefix) {
            break;
        }
        if bound.as_deref().is_some_and(|bound| chunk_key > bound) {
            break;
        }
        let (session_prefix, chunk_sequence) = split_queue_key(chunk_key)?;
        let value = value.value();
        if let Some(after) = start_after {
            let largest = entry_key(session_prefix, largest_sequence(chunk_sequence, value)?);
            if largest.as_slice() <= after {
                continue;
            }
        }
        for (sequence, range) in parse(chunk_sequence, value)? {
            let key = entry_key(session_prefix, sequence);
            if start_after.is_some_and(|after| key.as_slice() <= after) {
                continue;
            }
            entries.push((key, value[range].to_vec()));
        }
        if entries.len() >= limit {
            entries.sort_unstable_by(|left, right| left.0.cmp(&right.0));
            entries.truncate(limit);
            bound = entries.last().map(|(key, _)| key.clone());
        }
    }
    entries.sort_unstable_by(|left, right| left.0.cmp(&right.0));
    entries.truncate(limit);
    Ok(entries)
}

/// Queue puts and deletes gathered from resolved batches, applied together.
///
/// A key is written once, so a delete refers either to an entry stored before these writes or
/// to a put among them (which it cancels); the deletes are therefore applied first, gathered per
/// stored chunk, and the puts after them, one chunk per session.
#[derive(Default)]
pub(crate) struct QueueWrites<'batch> {
    puts: Vec<QueuePut<'batch>>,
    deletes: Vec<Cow<'batch, [u8]>>,
}

impl<'batch> QueueWrites<'batch> {
    /// Adds a put (`Some`) or a delete (`None`).
    pub(crate) fn push(&mut self, key: Cow<'batch, [u8]>, value: Option<Cow<'batch, [u8]>>) {
        match value {
            Some(value) => self.puts.push((key, value)),
            None => self.deletes.push(key),
        }
    }

    /// True when nothing is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }

    /// Applies and clears the pending writes.
    pub(crate) fn apply(&mut self, table: &mut RawTable<'_>) -> Result<(), StorageError> {
        let mut puts = std::mem::take(&mut self.puts);
        let mut deletes = std::mem::take(&mut self.deletes);
        if !deletes.is_empty() && !puts.is_empty() {
            let put_keys: HashSet<&[u8]> = puts.iter().map(|(key, _)| &**key).collect();
            let cancelled: HashSet<Vec<u8>> = deletes
                .iter()
                .filter(|key| put_keys.contains(&***key))
                .map(|key| key.to_vec())
                .collect();
            if !cancelled.is_empty() {
                puts.retain(|(key, _)| !cancelled.contains(&**key));
                deletes.retain(|key| !cancelled.contains(&**key));
            }
        }
        apply_deletes(table, &mut deletes)?;
        apply_puts(table, &mut puts)
    }
}

fn apply_deletes(
    table: &mut RawTable<'_>,
    deletes: &mut [Cow<'_, [u8]>],
) -> Result<(), StorageError> {
    deletes.sort_unstable();
    let mut touched: HashMap<Vec<u8>, TouchedChunk> = HashMap::new();
    // Deletes in key order mostly hit the chunk the previous one hit.
    let mut last: Option<Vec<u8>> = None;
    for key in deletes.iter() {
        let (session_prefix, sequence) = split_queue_key(key)?;
        if let Some(chunk) = last
            .as_ref()
            .filter(|chunk_key| chunk_key.starts_with(session_prefix))
            .and_then(|chunk_key| touched.get_mut(chunk_key))
        {
            if let Some(index) = chunk.position(sequence) {
                chunk.removed[index] = true;
                continue;
            }
        }
        let Some((chunk_key, loaded, index)) = locate(table, &touched, key)? else {
            continue;
        };
        let chunk = match loaded {
            Some(loaded) => touched.entry(chunk_key.clone()).or_insert(loaded),
            None => touched
                .get_mut(&chunk_key)
                .ok_or_else(|| corrupt("chunk vanished while deleting"))?,
        };
        chunk.removed[index] = true;
        last = Some(chunk_key);
    }
    for (chunk_key, chunk) in touched {
        let (_, chunk_sequence) = split_queue_key(&chunk_key)?;
        let remaining = chunk.remaining();
        if remaining.len() == 0 {
            table.remove(chunk_key.as_slice()).map_err(backend_error)?;
        } else {
            let value = encode(chunk_sequence, remaining);
            table
                .insert(chunk_key.as_slice(), value.as_slice())
                .map_err(backend_error)?;
        }
    }
    Ok(())
}

/// Finds the stored value that holds `key`'s entry, walking back through the session's chunks.
/// A chunk this group already changed is looked up in `touched` (the returned chunk is then
/// `None`), since the table still holds its old value.
fn locate(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    touched: &HashMap<Vec<u8>, TouchedChunk>,
    key: &[u8],
) -> Result<Option<Located>, StorageError> {
    let (session_prefix, sequence) = split_queue_key(key)?;
    let range = table
        .range::<&[u8]>(session_prefix..=key)
        .map_err(backend_error)?;
    for stored in range.rev() {
        let (chunk_key, value) = stored.map_err(backend_error)?;
        let chunk_key = chunk_key.value();
        if let Some(chunk) = touched.get(chunk_key) {
            if let Some(index) = chunk.position(sequence) {
                return Ok(Some((chunk_key.to_vec(), None, index)));
            }
            continue;
        }
        let (_, chunk_sequence) = split_queue_key(chunk_key)?;
        if largest_sequence(chunk_sequence, value.value())? < sequence {
            continue;
        }
        let chunk = TouchedChunk::load(chunk_sequence, value.value().to_vec())?;
        if let Some(index) = chunk.position(sequence) {
            return Ok(Some((chunk_key.to_vec(), Some(chunk), index)));
        }
    }
    Ok(None)
}

fn apply_puts(table: &mut RawTable<'_>, puts: &mut [QueuePut<'_>]) -> Result<(), StorageError> {
    puts.sort_by(|left, right| left.0.cmp(&right.0));
    let mut start = 0;
    while start < puts.len() {
        let (session_prefix, first_sequence) = split_queue_key(&puts[start].0)?;
        let mut end = start;
        let mut bytes = 0;
        while end < puts.len()
            && end - start < MAX_CHUNK_ENTRIES
            && bytes < MAX_CHUNK_BYTES
            && puts[end].0.starts_with(session_prefix)
            && puts[end].0.len() == puts[start].0.len()
        {
            bytes += puts[end].1.len();
            end += 1;
        }
        let run = &puts[start..end];
        let sequences = run
            .iter()
            .map(|(key, _)| split_queue_key(key).map(|(_, sequence)| sequence))
            .collect::<Result<Vec<u64>, StorageError>>()?;
        let entries = sequences
            .iter()
            .zip(run)
            .map(|(sequence, (_, value))| (*sequence, &**value));
        let value = encode(first_sequence, entries);
        table
            .insert(&*puts[start].0, value.as_slice())
            .map_err(backend_error)?;
        start = end;
    }
    Ok(())
}
