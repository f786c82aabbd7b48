//! redb's chunked offline queue: the same entries as the per-entry [`MemoryStore`], fewer values.

use std::collections::HashSet;

use proptest::prelude::*;

use crate::{
    codec::QoS,
    storage::{
        queue_key, recover,
        redb_store::REDB_FORMAT_VERSION,
        session_key_prefix,
        tests::{message_for_test, temp_dir},
        BatchOp, Keyspace, MemoryDisk, MemoryStore, RedbStore, StorageError, Store, WriteBatch,
        FORMAT_VERSION_KEY,
    },
};

use super::records::{QueueRecord, Record};

const CLIENTS: [&str; 3] = ["car-1", "car-10", "car-2"];

fn entry(sequence: u64, message_id: u64) -> QueueRecord {
    QueueRecord {
        message_id,
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: vec![u32::try_from(sequence).unwrap_or(u32::MAX)],
        message: (message_id == 0)
            .then(|| message_for_test("fleet/telemetry", 24 + (sequence % 7) as usize, None)),
    }
}

fn push(batch: &mut WriteBatch, client: &str, sequence: u64) {
    batch.push_queue(client, sequence, &entry(sequence, 0));
}

fn open_redb(dir: &tempfile::TempDir) -> RedbStore {
    RedbStore::open(&dir.path().join("store.redb")).expect("opens redb")
}

fn sequences(store: &dyn Store, client: &str) -> Vec<u64> {
    store
        .scan(
            Keyspace::OfflineQueue,
            &session_key_prefix(client),
            None,
            usize::MAX,
        )
        .expect("scans")
        .into_iter()
        .map(|(key, _)| u64::from_be_bytes(key[key.len() - 8..].try_into().expect("8 bytes")))
        .collect()
}

/// Every queue entry under `prefix`, read in pages of `page_len`, each page starting after the
/// last key of the one before.
fn scan_in_pages(store: &dyn Store, prefix: &[u8], page_len: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    loop {
        let after = entries.last().map(|(key, _)| key.clone());
        let page = store
            .scan(Keyspace::OfflineQueue, prefix, after.as_deref(), page_len)
            .expect("scans");
        let full = page.len() == page_len;
        entries.extend(page);
        if !full {
            return entries;
        }
    }
}

#[test]
fn a_group_stores_one_value_per_session_and_deletes_empty_it() {
    let dir = temp_dir();
    let store = open_redb(&dir);
    let mut batches = Vec::new();
    for sequence in 1..=100 {
        let mut batch = WriteBatch::new();
        push(&mut batch, CLIENTS[(sequence % 2) as usize], sequence);
        batches.push(batch);
    }
    store.apply_durably(&batches).expect("applies");
    assert_eq!(store.stored_values(Keyspace::OfflineQueue), 2);
    assert_eq!(
        sequences(&store, CLIENTS[0]),
        (2..=100).step_by(2).collect::<Vec<_>>()
    );
    assert_eq!(
        sequences(&store, CLIENTS[1]),
        (1..=99).step_by(2).collect::<Vec<_>>()
    );

    // Acknowledge part of one session's chunk: it is rewritten with what is left.
    let mut batch = WriteBatch::new();
    for sequence in (2..=40).step_by(2) {
        batch.remove_queue(CLIENTS[0], sequence, 0);
    }
    store.apply_durably(&[batch]).expect("applies");
    assert_eq!(store.stored_values(Keyspace::OfflineQueue), 2);
    assert_eq!(
        sequences(&store, CLIENTS[0]),
        (42..=100).step_by(2).collect::<Vec<_>>()
    );
    let value = store
        .get(Keyspace::OfflineQueue, &queue_key(CLIENTS[0], 50))
        .expect("reads")
        .expect("entry 50 is stored");
    assert_eq!(value, entry(50, 0).to_vec());
    assert_eq!(
        store
            .get(Keyspace::OfflineQueue, &queue_key(CLIENTS[0], 40))
            .expect("reads"),
        None
    );

    // The rest of it: the value goes.
    let mut batch = WriteBatch::new();
    for sequence in (42..=100).step_by(2) {
        batch.remove_queue(CLIENTS[0], sequence, 0);
    }
    store.apply_durably(&[batch]).expect("applies");
    assert_eq!(store.stored_values(Keyspace::OfflineQueue), 1);
    assert!(sequences(&store, CLIENTS[0]).is_empty());
}

#[test]
fn overlapping_chunks_of_one_session_are_found_and_scanned_in_order() {
    let dir = temp_dir();
    let store = open_redb(&dir);
    let client = CLIENTS[0];
    // Two publishers committed out of sequence order: {10, 20, 30} then {15, 25}.
    let mut first = WriteBatch::new();
    for sequence in [10, 20, 30] {
        push(&mut first, client, sequence);
    }
    store.apply_durably(&[first]).expect("applies");
    let mut second = WriteBatch::new();
    for sequence in [15, 25] {
        push(&mut second, client, sequence);
    }
    store.apply_durably(&[second]).expect("applies");
    assert_eq!(store.stored_values(Keyspace::OfflineQueue), 2);
    assert_eq!(sequences(&store, client), vec![10, 15, 20, 25, 30]);

    // Pages of two, each after the last key of the previous page.
    let paged: Vec<Vec<u8>> = scan_in_pages(&store, &session_key_prefix(client), 2)
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    let expected: Vec<Vec<u8>> = [10, 15, 20, 25, 30]
        .into_iter()
        .map(|sequence| queue_key(client, sequence))
        .collect();
    assert_eq!(paged, expected);

    // 30 lives in the first chunk, behind the second one's key: the lookup walks past it.
    let mut batch = WriteBatch::new();
    batch.remove_queue(client, 30, 0);
    batch.remove_queue(client, 99, 0);
    store.apply_durably(&[batch]).expect("applies");
    assert_eq!(sequences(&store, client), vec![10, 15, 20, 25]);
    assert!(store
        .get(Keyspace::OfflineQueue, &queue_key(client, 20))
        .expect("reads")
        .is_some());
}

#[test]
fn deleting_a_session_releases_the_shared_messages_of_its_chunks() {
    let dir = temp_dir();
    let store = open_redb(&dir);
    let mut batch = WriteBatch::new();
    batch.put_message(7, &message_for_test("fleet/ota", 1024, None));
    for (sequence, client) in [(1, CLIENTS[0]), (2, CLIENTS[0]), (3, CLIENTS[1])] {
        batch.push_queue(client, sequence, &entry(sequence, 7));
    }
    store.apply_durably(&[batch]).expect("applies");
    let mut batch = WriteBatch::new();
    batch.delete_session(CLIENTS[0]);
    store.apply_durably(&[batch]).expect("applies");
    assert!(sequences(&store, CLIENTS[0]).is_empty());
    assert!(store
        .get(Keyspace::Messages, &7u64.to_be_bytes())
        .expect("reads")
        .is_some());
    let mut batch = WriteBatch::new();
    batch.delete_session(CLIENTS[1]);
    store.apply_durably(&[batch]).expect("applies");
    assert_eq!(store.stored_values(Keyspace::OfflineQueue), 0);
    assert_eq!(
        store
            .get(Keyspace::Messages, &7u64.to_be_bytes())
            .expect("reads"),
        None,
        "the last reference went with the second session"
    );
}

#[test]
fn a_format_1_store_is_read_and_raised_to_format_2() {
    let dir = temp_dir();
    let path = dir.path().join("store.redb");
    {
        // A format 1 store: one value per entry and version 1 in the meta table.
        let store = RedbStore::open(&path).expect("opens");
        store.put_raw(Keyspace::Meta, FORMAT_VERSION_KEY, &[1]);
        for sequence in [3, 4] {
            let value = entry(sequence, 0).to_vec();
            store.put_raw(
                Keyspace::OfflineQueue,
                &queue_key(CLIENTS[2], sequence),
                &value,
            );
        }
        assert_eq!(store.stored_values(Keyspace::OfflineQueue), 2);
    }
    let store = RedbStore::open(&path).expect("a format 1 store opens");
    assert_eq!(
        store
            .get(Keyspace::Meta, FORMAT_VERSION_KEY)
            .expect("reads"),
        Some(vec![REDB_FORMAT_VERSION])
    );
    assert_eq!(sequences(&store, CLIENTS[2]), vec![3, 4]);
    let mut batch = WriteBatch::new();
    batch.remove_queue(CLIENTS[2], 3, 0);
    store.apply_durably(&[batch]).expect("applies");
    assert_eq!(sequences(&store, CLIENTS[2]), vec![4]);
}

#[test]
fn a_corrupt_chunk_is_reported_not_skipped() {
    let dir = temp_dir();
    let store = open_redb(&dir);
    let mut batch = WriteBatch::new();
    batch.push(BatchOp::Put {
        keyspace: Keyspace::Sessions,
        key: CLIENTS[0].as_bytes().to_vec(),
        value: super::tests::session_for_test(CLIENTS[0], None).to_vec(),
    });
    // Chunk tag, largest sequence 9, two entries, but the bytes end after the header.
    let mut value = vec![0xC0];
    value.extend_from_slice(&9u64.to_be_bytes());
    value.extend_from_slice(&2u32.to_be_bytes());
    store.apply_durably(&[batch]).expect("applies");
    store.put_raw(Keyspace::OfflineQueue, &queue_key(CLIENTS[0], 8), &value);
    match recover(&store, 0) {
        Err(StorageError::CorruptRecord { keyspace, reason }) => {
            assert_eq!(keyspace, "offline_queue");
            assert!(reason.contains("chunk"), "{reason}");
        }
        other => panic!("expected a corrupt record, got {other:?}"),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put {
        client: usize,
        sequence: u64,
        shared: bool,
    },
    Delete {
        client: usize,
        sequence: u64,
    },
    DeleteSession {
        client: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..3usize, 0..120u64, any::<bool>())
            .prop_map(|(client, sequence, shared)| Op::Put { client, sequence, shared }),
        6 => (0..3usize, 0..120u64).prop_map(|(client, sequence)| Op::Delete { client, sequence }),
        1 => (0..3usize).prop_map(|client| Op::DeleteSession { client }),
    ]
}

/// Groups of batches of operations, each queue key put at most once over the whole run and
/// never after a delete of it, as the engine's sequence numbers are.
fn groups() -> impl Strategy<Value = Vec<Vec<Vec<Op>>>> {
    prop::collection::vec(
        prop::collection::vec(prop::collection::vec(op(), 1..12), 1..6),
        1..8,
    )
    .prop_map(|groups| {
        let mut seen = HashSet::new();
        groups
            .into_iter()
            .map(|group| {
                group
                    .into_iter()
                    .map(|batch| {
                        batch
                            .into_iter()
                            .filter(|op| match op {
                                // Fresh sequences: a key is put once, and never after a
                                // delete named it.
                                Op::Put {
                                    client, sequence, ..
                                } => seen.insert((*client, *sequence)),
                                Op::Delete { client, sequence } => {
                                    seen.insert((*client, *sequence));
                                    true
                                }
                                Op::DeleteSession { .. } => true,
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect()
    })
}

fn build(batch_ops: &[Op]) -> WriteBatch {
    let mut batch = WriteBatch::new();
    for op in batch_ops {
        match *op {
            Op::Put {
                client,
                sequence,
                shared,
            } => {
                let message_id = if shared { 1 + sequence % 4 } else { 0 };
                if shared {
                    batch.put_message(message_id, &message_for_test("fleet/shared", 40, None));
                }
                batch.push_queue(CLIENTS[client], sequence, &entry(sequence, message_id));
            }
            Op::Delete { client, sequence } => {
                // Whatever it referenced: the model and redb resolve the same counts.
                batch.remove_queue(CLIENTS[client], sequence, 0);
            }
            Op::DeleteSession { client } => {
                batch.delete_session(CLIENTS[client]);
            }
        }
    }
    batch
}

fn all(store: &dyn Store, keyspace: Keyspace) -> Vec<(Vec<u8>, Vec<u8>)> {
    store.scan(keyspace, &[], None, usize::MAX).expect("scans")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// After every group, redb's chunks read back exactly the per-entry store's entries: whole
    /// scans, per-session scans, pages of three and single reads; shared messages and their
    /// counts agree too.
    #[test]
    fn chunked_queue_matches_the_per_entry_store(groups in groups()) {
        let dir = temp_dir();
        let redb = open_redb(&dir);
        let model = MemoryStore::open(MemoryDisk::new());
        for group in &groups {
            let batches: Vec<WriteBatch> = group.iter().map(|ops| build(ops)).collect();
            redb.apply_durably(&batches).expect("redb applies");
            model.apply_durably(&batches).expect("model applies");
            for keyspace in [Keyspace::OfflineQueue, Keyspace::Messages, Keyspace::MessageRefs] {
                prop_assert_eq!(all(&redb, keyspace), all(&model, keyspace));
            }
            for client in CLIENTS {
                let prefix = session_key_prefix(client);
                let expected = model
                    .scan(Keyspace::OfflineQueue, &prefix, None, usize::MAX)
                    .expect("scans");
                prop_assert_eq!(&scan_in_pages(&redb, &prefix, 3), &expected);
                for sequence in (0..120).step_by(7) {
                    let key = queue_key(client, sequence);
                    prop_assert_eq!(
                        redb.get(Keyspace::OfflineQueue, &key).expect("reads"),
                        model.get(Keyspace::OfflineQueue, &key).expect("reads")
                    );
                }
            }
            prop_assert!(redb.stored_values(Keyspace::OfflineQueue) as usize
                <= all(&model, Keyspace::OfflineQueue).len());
        }
    }
}
