//! Write batches: what the engine asks to store, and how a backend turns it into puts/deletes.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashSet},
};

use bytes::Bytes;

use crate::codec::QoS;
use crate::storage::{
    message_key, packet_id_key, queue_key,
    records::{encode_queue_entry, MessageFields},
    records::{InflightRecord, InflightState, MessageRecord, QueueRecord, Record, SessionRecord},
    records::{SubscriptionRecord, WillRecord},
    session_key_prefix, subscription_key, KeyValue, Keyspace, StorageError,
};

/// One operation of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Stores `value` under `key`.
    Put {
        /// Keyspace.
        keyspace: Keyspace,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Removes `key` (absent keys are fine).
    Delete {
        /// Keyspace.
        keyspace: Keyspace,
        /// Key.
        key: Vec<u8>,
    },
    /// Adds `delta` to the reference count of a shared message; when the count ends the batch
    /// at zero or below, the message and its count are deleted.
    MessageRef {
        /// The message.
        message_id: u64,
        /// Change of the count.
        delta: i64,
    },
    /// Removes a session with its subscriptions, queue, in-flight and inbound QoS 2 entries and
    /// its will, releasing the message references they held. It sees what earlier batches wrote,
    /// not the operations before it in the same batch, so put it first.
    DeleteSession {
        /// Client identifier.
        client_id: String,
        /// Delete only if the stored session has this id (a newer incarnation is kept).
        only_session_id: Option<u64>,
    },
}

/// Operations applied atomically: after a crash either all of them are there or none.
///
/// The helpers keep message reference counts right; [`WriteBatch::push`] is the raw form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// Creates an empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Returns the operations in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Returns true when the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Returns the number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Appends a raw operation.
    pub fn push(&mut self, op: BatchOp) -> &mut WriteBatch {
        self.ops.push(op);
        self
    }

    fn put(&mut self, keyspace: Keyspace, key: Vec<u8>, value: Vec<u8>) -> &mut WriteBatch {
        self.push(BatchOp::Put {
            keyspace,
            key,
            value,
        })
    }

    fn delete(&mut self, keyspace: Keyspace, key: Vec<u8>) -> &mut WriteBatch {
        self.push(BatchOp::Delete { keyspace, key })
    }

    /// Message id 0 means an inline message (see [`QueueRecord::message`]): no count to keep.
    fn message_ref(&mut self, message_id: u64, delta: i64) -> &mut WriteBatch {
        if message_id == 0 {
            return self;
        }
        self.push(BatchOp::MessageRef { message_id, delta })
    }

    /// Stores or replaces a session's metadata.
    pub fn put_session(&mut self, session: &SessionRecord) -> &mut WriteBatch {
        let key = session.client_id.as_bytes().to_vec();
        self.put(Keyspace::Sessions, key, session.to_vec())
    }

    /// Removes a session and everything it owns (see [`BatchOp::DeleteSession`]).
    pub fn delete_session(&mut self, client_id: &str) -> &mut WriteBatch {
        self.push(BatchOp::DeleteSession {
            client_id: client_id.to_owned(),
            only_session_id: None,
        })
    }

    /// Like [`WriteBatch::delete_session`], but only if the stored session is incarnation
    /// `session_id`: a late delete of an ended session never removes its successor.
    pub fn delete_session_if(&mut self, client_id: &str, session_id: u64) -> &mut WriteBatch {
        self.push(BatchOp::DeleteSession {
            client_id: client_id.to_owned(),
            only_session_id: Some(session_id),
        })
    }

    /// Stores or replaces one subscription.
    pub fn put_subscription(
        &mut self,
        client_id: &str,
        subscription: &SubscriptionRecord,
    ) -> &mut WriteBatch {
        let key = subscription_key(client_id, &subscription.topic_filter);
        self.put(Keyspace::Subscriptions, key, subscription.to_vec())
    }

    /// Removes one subscription.
    pub fn delete_subscription(&mut self, client_id: &str, topic_filter: &str) -> &mut WriteBatch {
        self.delete(
            Keyspace::Subscriptions,
            subscription_key(client_id, topic_filter),
        )
    }

    /// Stores a shared message once. It holds no reference by itself: add the queue or in-flight
    /// entries that reference it in the same batch, or it is removed when the batch ends.
    pub fn put_message(&mut self, message_id: u64, message: &MessageRecord) -> &mut WriteBatch {
        self.put_message_fields(message_id, &message.fields())
    }

    /// [`WriteBatch::put_message`] from borrowed fields.
    pub fn put_message_fields(
        &mut self,
        message_id: u64,
        message: &MessageFields<'_>,
    ) -> &mut WriteBatch {
        let key = message_key(message_id).to_vec();
        self.put(Keyspace::Messages, key, message.to_record_vec());
        self.message_ref(message_id, 0)
    }

    /// Appends a delivery to a session's offline queue, taking a message reference.
    pub fn push_queue(
        &mut self,
        client_id: &str,
        sequence: u64,
        entry: &QueueRecord,
    ) -> &mut WriteBatch {
        self.put(
            Keyspace::OfflineQueue,
            queue_key(client_id, sequence),
            entry.to_vec(),
        );
        self.message_ref(entry.message_id, 1)
    }

    /// [`WriteBatch::push_queue`] from the entry's parts, the message borrowed when inline
    /// (`message_id` 0).
    pub fn push_queue_entry(
        &mut self,
        client_id: &str,
        sequence: u64,
        message_id: u64,
        delivery: (QoS, bool, &[u32]),
        inline: Option<&MessageFields<'_>>,
    ) -> &mut WriteBatch {
        let (qos, retain, subscription_ids) = delivery;
        let value = encode_queue_entry(message_id, qos, retain, subscription_ids, inline);
        self.put(
            Keyspace::OfflineQueue,
            queue_key(client_id, sequence),
            value,
        );
        self.message_ref(message_id, 1)
    }

    /// Removes a delivery from a session's offline queue, releasing its message reference.
    pub fn remove_queue(
        &mut self,
        client_id: &str,
        sequence: u64,
        message_id: u64,
    ) -> &mut WriteBatch {
        self.delete(Keyspace::OfflineQueue, queue_key(client_id, sequence));
        self.message_ref(message_id, -1)
    }

    /// Stores an outbound in-flight entry; `previous` is the entry it replaces under the same
    /// packet id, if any, so references move with the state (PUBREC releases the message).
    pub fn put_inflight(
        &mut self,
        client_id: &str,
        entry: &InflightRecord,
        previous: Option<&InflightRecord>,
    ) -> &mut WriteBatch {
        let key = packet_id_key(client_id, entry.packet_id);
        self.put(Keyspace::OutboundInflight, key, entry.to_vec());
        if let InflightState::Published { message_id } = entry.state {
            self.message_ref(message_id, 1);
        }
        if let Some(InflightRecord {
            state: InflightState::Published { message_id },
            ..
        }) = previous
        {
            self.message_ref(*message_id, -1);
        }
        self
    }

    /// Removes an outbound in-flight entry (PUBACK or PUBCOMP received).
    pub fn remove_inflight(&mut self, client_id: &str, entry: &InflightRecord) -> &mut WriteBatch {
        let key = packet_id_key(client_id, entry.packet_id);
        self.delete(Keyspace::OutboundInflight, key);
        if let InflightState::Published { message_id } = entry.state {
            self.message_ref(message_id, -1);
        }
        self
    }

    /// Records an inbound QoS 2 packet id awaiting PUBREL.
    pub fn put_inbound_qos2(&mut self, client_id: &str, packet_id: u16) -> &mut WriteBatch {
        self.put(
            Keyspace::InboundQos2,
            packet_id_key(client_id, packet_id),
            Vec::new(),
        )
    }

    /// Forgets an inbound QoS 2 packet id (PUBREL received).
    pub fn delete_inbound_qos2(&mut self, client_id: &str, packet_id: u16) -> &mut WriteBatch {
        self.delete(Keyspace::InboundQos2, packet_id_key(client_id, packet_id))
    }

    /// Stores or replaces the retained message of its topic.
    pub fn put_retained(&mut self, message: &MessageRecord) -> &mut WriteBatch {
        self.put_retained_fields(&message.fields())
    }

    /// [`WriteBatch::put_retained`] from borrowed fields.
    pub fn put_retained_fields(&mut self, message: &MessageFields<'_>) -> &mut WriteBatch {
        let key = message.topic.as_bytes().to_vec();
        self.put(Keyspace::Retained, key, message.to_record_vec())
    }

    /// Removes the retained message of a topic.
    pub fn delete_retained(&mut self, topic: &str) -> &mut WriteBatch {
        self.delete(Keyspace::Retained, topic.as_bytes().to_vec())
    }

    /// Stores or replaces a session's pending will.
    pub fn put_will(&mut self, client_id: &str, will: &WillRecord) -> &mut WriteBatch {
        self.put(
            Keyspace::Wills,
            client_id.as_bytes().to_vec(),
            will.to_vec(),
        )
    }

    /// Removes a session's pending will (published, or the client disconnected normally).
    pub fn delete_will(&mut self, client_id: &str) -> &mut WriteBatch {
        self.delete(Keyspace::Wills, client_id.as_bytes().to_vec())
    }
}

/// Read access a backend offers while it resolves a batch: committed state, or its open write
/// transaction (which includes the earlier batches of the same group).
pub(crate) trait ReadView {
    /// Reads one key.
    fn get_raw(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Returns every entry under `prefix` (used for one session's entries, which the queue and
    /// in-flight limits bound).
    fn scan_prefix_all(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
    ) -> Result<Vec<KeyValue>, StorageError>;
}

/// A resolved write: `Some(value)` puts, `None` deletes.
pub(crate) type RawOp<'batch> = (Keyspace, Cow<'batch, [u8]>, Option<Cow<'batch, [u8]>>);

/// Queue entries that one group of batches both writes and removes: neither operation needs
/// to reach the store.
///
/// The common case of a fast subscriber: its PUBACK removes an entry before the group that
/// wrote it was applied. A queue key is written once (its sequence is fresh), so an entry put
/// and removed within a group did not exist before the group and does not exist after it;
/// the group is applied as one unit before any of its requests completes, so skipping both
/// leaves the same store at every point anyone can observe. Only for backends that apply a
/// group atomically: with a crash between two batches of a group, the first batch would
/// survive without its skipped entry. Groups with a `DeleteSession` (which reads the queue
/// entries it removes) skip nothing.
#[derive(Debug, Default)]
pub(crate) struct TransientEntries<'group> {
    keys: KeySet<'group>,
    /// The group deletes a session, which reads that session's queue entries while it is
    /// resolved.
    reads_queue: bool,
}

/// Keys of one group; hashed with foldhash, which is several times cheaper than SipHash on
/// these short keys (nothing here is attacker-chosen beyond a client id, and the set lives for
/// one group only).
type KeySet<'group> = HashSet<&'group [u8], foldhash::fast::RandomState>;

/// What one [`crate::storage::Store::apply`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Queue entries written and removed within the group, so neither reached the store.
    pub transient_entries: u64,
}

impl<'group> TransientEntries<'group> {
    /// Finds the transient queue entries of a group.
    pub(crate) fn find(batches: &'group [WriteBatch]) -> TransientEntries<'group> {
        let mut written = KeySet::default();
        let mut keys = KeySet::default();
        for op in batches.iter().flat_map(|batch| batch.ops.iter()) {
            match op {
                BatchOp::Put {
                    keyspace: Keyspace::OfflineQueue,
                    key,
                    ..
                } => {
                    written.insert(key);
                }
                BatchOp::Delete {
                    keyspace: Keyspace::OfflineQueue,
                    key,
                } if written.contains(key.as_slice()) => {
                    keys.insert(key);
                }
                BatchOp::DeleteSession { .. } => {
                    return TransientEntries {
                        keys: KeySet::default(),
                        reads_queue: true,
                    }
                }
                _ => {}
            }
        }
        TransientEntries {
            keys,
            reads_queue: false,
        }
    }

    /// True when no batch of the group reads the offline queue while it is resolved, so the
    /// group's queue writes may be applied after all its other writes, in key order.
    pub(crate) fn queue_writes_commute(&self) -> bool {
        !self.reads_queue
    }

    /// How many queue entries the group skips.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The figures of a group applied with these transient entries.
    pub(crate) fn stats(&self) -> ApplyStats {
        ApplyStats {
            transient_entries: self.keys.len() as u64,
        }
    }

    fn skips(&self, keyspace: Keyspace, key: &[u8]) -> bool {
        keyspace == Keyspace::OfflineQueue && !self.keys.is_empty() && self.keys.contains(key)
    }
}

/// Turns a batch into plain puts and deletes: expands session deletes and applies reference
/// count changes against `view`.
/// Skips the group's `transient` queue entries.
pub(crate) fn resolve<'batch>(
    batch: &'batch WriteBatch,
    view: &dyn ReadView,
    transient: &TransientEntries<'_>,
) -> Result<Vec<RawOp<'batch>>, StorageError> {
    let mut raw_ops = Vec::with_capacity(batch.ops.len() + 1);
    let mut ref_deltas: BTreeMap<u64, i64> = BTreeMap::new();
    for op in &batch.ops {
        match op {
            BatchOp::Put {
                keyspace,
                key,
                value,
            } => {
                if !transient.skips(*keyspace, key) {
                    raw_ops.push((
                        *keyspace,
                        Cow::Borrowed(key.as_slice()),
                        Some(Cow::Borrowed(value.as_slice())),
                    ));
                }
            }
            BatchOp::Delete { keyspace, key } => {
                if !transient.skips(*keyspace, key) {
                    raw_ops.push((*keyspace, Cow::Borrowed(key.as_slice()), None));
                }
            }
            BatchOp::MessageRef { message_id, delta } => {
                *ref_deltas.entry(*message_id).or_default() += delta;
            }
            BatchOp::DeleteSession {
                client_id,
                only_session_id,
            } => {
                if let Some(session_id) = only_session_id {
                    let stored = view.get_raw(Keyspace::Sessions, client_id.as_bytes())?;
                    let Some(stored) = stored else { continue };
                    let record: SessionRecord = decode_record(Keyspace::Sessions, stored)?;
                    if record.session_id != *session_id {
                        continue;
                    }
                }
                expand_delete_session(client_id, view, &mut raw_ops, &mut ref_deltas)?;
            }
        }
    }
    for (message_id, delta) in ref_deltas {
        let key = message_key(message_id).to_vec();
        let current = match view.get_raw(Keyspace::MessageRefs, &key)? {
            None => 0,
            Some(value) => decode_refcount(&value)?,
        };
        let new_count = i64::try_from(current)
            .unwrap_or(i64::MAX)
            .saturating_add(delta);
        if new_count < 0 {
            tracing::warn!(
                message_id,
                new_count,
                "message reference count went below zero"
            );
        }
        if new_count <= 0 {
            raw_ops.push((Keyspace::Messages, Cow::Owned(key.clone()), None));
            raw_ops.push((Keyspace::MessageRefs, Cow::Owned(key), None));
        } else {
            let value = (new_count as u64).to_be_bytes().to_vec();
            raw_ops.push((
                Keyspace::MessageRefs,
                Cow::Owned(key),
                Some(Cow::Owned(value)),
            ));
        }
    }
    Ok(raw_ops)
}

fn expand_delete_session(
    client_id: &str,
    view: &dyn ReadView,
    raw_ops: &mut Vec<RawOp<'_>>,
    ref_deltas: &mut BTreeMap<u64, i64>,
) -> Result<(), StorageError> {
    let prefix = session_key_prefix(client_id);
    for (key, value) in view.scan_prefix_all(Keyspace::OfflineQueue, &prefix)? {
        let entry = decode_record::<QueueRecord>(Keyspace::OfflineQueue, value)?;
        if entry.message_id != 0 {
            *ref_deltas.entry(entry.message_id).or_default() -= 1;
        }
        raw_ops.push((Keyspace::OfflineQueue, Cow::Owned(key), None));
    }
    for (key, value) in view.scan_prefix_all(Keyspace::OutboundInflight, &prefix)? {
        let entry = decode_record::<InflightRecord>(Keyspace::OutboundInflight, value)?;
        if let InflightState::Published { message_id } = entry.state {
            *ref_deltas.entry(message_id).or_default() -= 1;
        }
        raw_ops.push((Keyspace::OutboundInflight, Cow::Owned(key), None));
    }
    for keyspace in [Keyspace::Subscriptions, Keyspace::InboundQos2] {
        for (key, _) in view.scan_prefix_all(keyspace, &prefix)? {
            raw_ops.push((keyspace, Cow::Owned(key), None));
        }
    }
    raw_ops.push((
        Keyspace::Wills,
        Cow::Owned(client_id.as_bytes().to_vec()),
        None,
    ));
    raw_ops.push((
        Keyspace::Sessions,
        Cow::Owned(client_id.as_bytes().to_vec()),
        None,
    ));
    Ok(())
}

/// Decodes a stored record, naming the keyspace on failure.
pub(crate) fn decode_record<T: Record>(
    keyspace: Keyspace,
    value: Vec<u8>,
) -> Result<T, StorageError> {
    T::decode(Bytes::from(value)).map_err(|error| StorageError::CorruptRecord {
        keyspace: keyspace.name(),
        reason: error.to_string(),
    })
}

/// Decodes a stored reference count.
pub(crate) fn decode_refcount(value: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| StorageError::CorruptRecord {
        keyspace: Keyspace::MessageRefs.name(),
        reason: format!("reference count of {} bytes, expected 8", value.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Pages through a prefix with [`crate::storage::Store::scan`]; the generic [`ReadView`] of a
/// backend whose reads see its applied batches.
pub(crate) fn scan_all_with(
    prefix: &[u8],
    mut scan_page: impl FnMut(Option<&[u8]>) -> Result<Vec<KeyValue>, StorageError>,
) -> Result<Vec<KeyValue>, StorageError> {
    let mut entries: Vec<KeyValue> = Vec::new();
    loop {
        let start_after = entries.last().map(|(key, _)| key.clone());
        let page = scan_page(start_after.as_deref())?;
        let done = page.len() < SCAN_PAGE;
        entries.extend(page);
        if done {
            debug_assert!(entries.iter().all(|(key, _)| key.starts_with(prefix)));
            return Ok(entries);
        }
    }
}

/// Page size of internal full scans.
pub(crate) const SCAN_PAGE: usize = 1024;
