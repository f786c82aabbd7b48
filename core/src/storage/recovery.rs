//! Start-up recovery: everything in the store as plain structs, minus what expired while the
//! broker was down; and the expiry sweep that removes expired state from disk.

use std::collections::HashMap;

use bytestring::ByteString;

use crate::storage::{
    batch::{decode_record, SCAN_PAGE},
    message_key,
    records::{InflightRecord, InflightState, MessageRecord, QueueRecord, SessionRecord},
    records::{SubscriptionRecord, WillRecord},
    session_key_prefix, split_session_key, KeyValue, Keyspace, StorageError, Store, WriteBatch,
};

/// One persistent session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredSession {
    /// Metadata. `expiry_deadline_unix_ms` is `None` if the client was connected at the crash:
    /// the engine starts the expiry interval at restart.
    pub session: SessionRecord,
    /// Subscriptions, in topic filter order.
    pub subscriptions: Vec<SubscriptionRecord>,
    /// Outbound in-flight deliveries, in packet id order (kept even if their message expired,
    /// since their delivery had started).
    pub outbound_inflight: Vec<InflightRecord>,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub inbound_qos2: Vec<u16>,
    /// Offline queue as `(sequence, entry)`, oldest first; expired messages removed.
    pub queue: Vec<(u64, QueueRecord)>,
}

/// Numbers of what recovery loaded and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryCounts {
    /// Sessions loaded.
    pub num_sessions: u64,
    /// Sessions dropped because their expiry passed.
    pub num_expired_sessions: u64,
    /// Subscriptions loaded.
    pub num_subscriptions: u64,
    /// Queue entries loaded.
    pub num_queued: u64,
    /// Queue entries dropped because their message expired.
    pub num_expired_queued: u64,
    /// Queue or in-flight entries dropped because their message is missing.
    pub num_dangling: u64,
    /// Outbound in-flight entries loaded.
    pub num_inflight: u64,
    /// Inbound QoS 2 ids loaded.
    pub num_inbound_qos2: u64,
    /// Distinct shared messages loaded.
    pub num_messages: u64,
    /// Retained messages loaded.
    pub num_retained: u64,
    /// Retained messages dropped because they expired.
    pub num_expired_retained: u64,
    /// Pending wills loaded.
    pub num_wills: u64,
}

/// Everything recovered from a store.
#[derive(Debug, Clone, Default)]
pub struct RecoveredState {
    /// Live persistent sessions.
    pub sessions: Vec<RecoveredSession>,
    /// Shared messages referenced by the sessions' queues and in-flight entries, by id.
    pub messages: HashMap<u64, MessageRecord>,
    /// Retained messages that have not expired.
    pub retained: Vec<MessageRecord>,
    /// Pending wills by client id, including those of sessions that expired while the broker
    /// was down (their deadline has passed: publish them now) but not expired will messages.
    pub wills: Vec<(ByteString, WillRecord)>,
    /// One more than the largest message id in use; continue allocating from here.
    pub next_message_id: u64,
    /// Deletes what recovery dropped; submit it after publishing overdue wills.
    pub cleanup: WriteBatch,
    /// Counts.
    pub counts: RecoveryCounts,
}

/// Reads every keyspace of `store`, keeping what has not expired at `now_unix_ms`.
///
/// Call it before the [`crate::storage::StorageWriter`] starts; it only reads.
///
/// # Errors
/// Returns [`StorageError::CorruptRecord`] when a record does not decode, or a backend error;
/// the broker should then stop rather than start with partial state.
pub fn recover(store: &dyn Store, now_unix_ms: u64) -> Result<RecoveredState, StorageError> {
    let mut state = RecoveredState::default();
    let expired = |deadline: Option<u64>| deadline.is_some_and(|deadline| deadline <= now_unix_ms);
    for (_, value) in scan_all(store, Keyspace::Sessions, &[])? {
        let session: SessionRecord = decode_record(Keyspace::Sessions, value)?;
        if expired(session.expiry_deadline_unix_ms) {
            state.cleanup.delete_session(&session.client_id);
            state.counts.num_expired_sessions += 1;
            continue;
        }
        let recovered = recover_session(store, session, now_unix_ms, &mut state)?;
        state.counts.num_sessions += 1;
        state.sessions.push(recovered);
    }
    for (_, value) in scan_all(store, Keyspace::Retained, &[])? {
        let message: MessageRecord = decode_record(Keyspace::Retained, value)?;
        if expired(message.expiry_unix_ms) {
            state.cleanup.delete_retained(&message.topic);
            state.counts.num_expired_retained += 1;
            continue;
        }
        state.counts.num_retained += 1;
        state.retained.push(message);
    }
    for (key, value) in scan_all(store, Keyspace::Wills, &[])? {
        let will: WillRecord = decode_record(Keyspace::Wills, value)?;
        let client_id = ByteString::try_from(key).map_err(|_| StorageError::CorruptRecord {
            keyspace: Keyspace::Wills.name(),
            reason: "client id is not UTF-8".to_owned(),
        })?;
        if expired(will.message.expiry_unix_ms) {
            state.cleanup.delete_will(&client_id);
            continue;
        }
        state.counts.num_wills += 1;
        state.wills.push((client_id, will));
    }
    state.counts.num_messages = state.messages.len() as u64;
    state.next_message_id = state.messages.keys().max().map_or(1, |max| max + 1);
    Ok(state)
}

fn recover_session(
    store: &dyn Store,
    session: SessionRecord,
    now_unix_ms: u64,
    state: &mut RecoveredState,
) -> Result<RecoveredSession, StorageError> {
    let client_id = session.client_id.clone();
    let prefix = session_key_prefix(&client_id);
    let mut recovered = RecoveredSession {
        session,
        subscriptions: Vec::new(),
        outbound_inflight: Vec::new(),
        inbound_qos2: Vec::new(),
        queue: Vec::new(),
    };
    for (_, value) in scan_all(store, Keyspace::Subscriptions, &prefix)? {
        recovered
            .subscriptions
            .push(decode_record(Keyspace::Subscriptions, value)?);
    }
    state.counts.num_subscriptions += recovered.subscriptions.len() as u64;
    for (key, _) in scan_all(store, Keyspace::InboundQos2, &prefix)? {
        recovered.inbound_qos2.push(packet_id_of(&key)?);
    }
    state.counts.num_inbound_qos2 += recovered.inbound_qos2.len() as u64;
    for (_, value) in scan_all(store, Keyspace::OutboundInflight, &prefix)? {
        let entry: InflightRecord = decode_record(Keyspace::OutboundInflight, value)?;
        if let InflightState::Published { message_id } = entry.state {
            if load_message(store, message_id, state)?.is_none() {
                state.counts.num_dangling += 1;
                state.cleanup.remove_inflight(&client_id, &entry);
                continue;
            }
        }
        recovered.outbound_inflight.push(entry);
    }
    state.counts.num_inflight += recovered.outbound_inflight.len() as u64;
    for (key, value) in scan_all(store, Keyspace::OfflineQueue, &prefix)? {
        let entry: QueueRecord = decode_record(Keyspace::OfflineQueue, value)?;
        let sequence = sequence_of(&key)?;
        let inline_expiry = entry.message.as_ref().map(|message| message.expiry_unix_ms);
        let loaded = match inline_expiry {
            Some(expiry) => Some(expiry),
            None => load_message(store, entry.message_id, state)?,
        };
        match loaded {
            None => {
                state.counts.num_dangling += 1;
                state
                    .cleanup
                    .remove_queue(&client_id, sequence, entry.message_id);
            }
            Some(expiry) if expiry.is_some_and(|expiry| expiry <= now_unix_ms) => {
                state.counts.num_expired_queued += 1;
                state
                    .cleanup
                    .remove_queue(&client_id, sequence, entry.message_id);
            }
            Some(_) => recovered.queue.push((sequence, entry)),
        }
    }
    state.counts.num_queued += recovered.queue.len() as u64;
    Ok(recovered)
}

/// Loads a shared message into `state.messages` once; returns its expiry, `None` if missing.
fn load_message(
    store: &dyn Store,
    message_id: u64,
    state: &mut RecoveredState,
) -> Result<Option<Option<u64>>, StorageError> {
    if let Some(message) = state.messages.get(&message_id) {
        return Ok(Some(message.expiry_unix_ms));
    }
    let Some(value) = store.get(Keyspace::Messages, &message_key(message_id))? else {
        return Ok(None);
    };
    let message: MessageRecord = decode_record(Keyspace::Messages, value)?;
    let expiry = message.expiry_unix_ms;
    state.messages.insert(message_id, message);
    Ok(Some(expiry))
}

fn corrupt_key(keyspace: Keyspace) -> StorageError {
    StorageError::CorruptRecord {
        keyspace: keyspace.name(),
        reason: "malformed key".to_owned(),
    }
}

fn packet_id_of(key: &[u8]) -> Result<u16, StorageError> {
    let (_, suffix) = split_session_key(key).ok_or_else(|| corrupt_key(Keyspace::InboundQos2))?;
    let bytes: [u8; 2] = suffix
        .try_into()
        .map_err(|_| corrupt_key(Keyspace::InboundQos2))?;
    Ok(u16::from_be_bytes(bytes))
}

fn sequence_of(key: &[u8]) -> Result<u64, StorageError> {
    let (_, suffix) = split_session_key(key).ok_or_else(|| corrupt_key(Keyspace::OfflineQueue))?;
    let bytes: [u8; 8] = suffix
        .try_into()
        .map_err(|_| corrupt_key(Keyspace::OfflineQueue))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Pages through every entry under `prefix`.
fn scan_all(
    store: &dyn Store,
    keyspace: Keyspace,
    prefix: &[u8],
) -> Result<Vec<KeyValue>, StorageError> {
    crate::storage::batch::scan_all_with(prefix, |start_after| {
        store.scan(keyspace, prefix, start_after, SCAN_PAGE)
    })
}

/// One page of the expiry sweep: what to delete and where to continue.
#[derive(Debug, Clone, Default)]
pub struct ExpirySweep {
    /// Deletes the expired sessions (with everything they own) and retained messages found.
    pub batch: WriteBatch,
    /// Session key to continue after; `None` when the sessions were swept to the end.
    pub next_session_cursor: Option<Vec<u8>>,
    /// Retained topic to continue after; `None` when retained messages were swept to the end.
    pub next_retained_cursor: Option<Vec<u8>>,
}

/// Plans the deletion of sessions whose expiry deadline has passed (with everything they own)
/// and of expired retained messages; submit the batch through the writer.
///
/// Reads at most `max_entries` sessions and retained messages per keyspace, starting after the
/// given cursors, and returns the cursors to continue from, so
/// a periodic sweep does bounded work. Expired queued messages are not swept here: the engine
/// holds its queues in memory and removes them as it drops them (the registry purges offline
/// sessions' queues every second), and recovery drops the rest.
///
/// # Errors
/// Returns a backend or decode error.
pub fn plan_expiry_sweep(
    store: &dyn Store,
    now_unix_ms: u64,
    max_entries: usize,
    session_cursor: Option<&[u8]>,
    retained_cursor: Option<&[u8]>,
) -> Result<ExpirySweep, StorageError> {
    let mut batch = WriteBatch::new();
    let sessions = store.scan(Keyspace::Sessions, &[], session_cursor, max_entries)?;
    let next_session_cursor = next_cursor(&sessions, max_entries);
    for (_, value) in sessions {
        let session: SessionRecord = decode_record(Keyspace::Sessions, value)?;
        if session
            .expiry_deadline_unix_ms
            .is_some_and(|deadline| deadline <= now_unix_ms)
        {
            batch.delete_session_if(&session.client_id, session.session_id);
        }
    }
    let retained = store.scan(Keyspace::Retained, &[], retained_cursor, max_entries)?;
    let next_retained_cursor = next_cursor(&retained, max_entries);
    for (_, value) in retained {
        let message: MessageRecord = decode_record(Keyspace::Retained, value)?;
        if message
            .expiry_unix_ms
            .is_some_and(|expiry| expiry <= now_unix_ms)
        {
            batch.delete_retained(&message.topic);
        }
    }
    Ok(ExpirySweep {
        batch,
        next_session_cursor,
        next_retained_cursor,
    })
}

fn next_cursor(page: &[KeyValue], max_entries: usize) -> Option<Vec<u8>> {
    if page.len() < max_entries {
        return None;
    }
    page.last().map(|(key, _)| key.clone())
}
