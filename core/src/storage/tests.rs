//! The storage suite, run unchanged against [`MemoryStore`], [`SledStore`] and [`RedbStore`].

use std::{path::PathBuf, sync::Arc};

use bytes::Bytes;
use bytestring::ByteString;
use tempfile::TempDir;

use crate::{
    codec::{PublishProperties, QoS, SubscriptionOptions},
    storage::{
        batch::TransientEntries,
        message_key, plan_expiry_sweep, queue_key,
        records::{
            InflightRecord, InflightState, MessageRecord, QueueRecord, SessionRecord,
            SubscriptionRecord, WillRecord,
        },
        recover, session_key_prefix, BatchOp, Keyspace, MemoryDisk, MemoryStore, RedbStore,
        SledStore, StorageError, StorageWriter, StorageWriterConfig, Store, WriteBatch,
    },
};

/// Opens the same store again and again, as a restarted broker would.
pub(super) trait Fixture {
    fn open(&self) -> Arc<dyn Store>;
}

struct MemoryFixture(MemoryDisk);

impl Fixture for MemoryFixture {
    fn open(&self) -> Arc<dyn Store> {
        Arc::new(MemoryStore::open(self.0.clone()))
    }
}

pub(super) struct SledFixture(pub(super) TempDir);

impl SledFixture {
    pub(super) fn path(&self) -> PathBuf {
        self.0.path().join("sled")
    }
}

impl Fixture for SledFixture {
    /// sled releases its file lock only when its background threads let go of the dropped
    /// `Db`, a moment after the drop; a reopen within the same process (as these tests do, and
    /// the broker never does) waits for that, at most 10 s, and fails on any other error.
    fn open(&self) -> Arc<dyn Store> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match SledStore::open(&self.path()) {
                Ok(store) => return Arc::new(store),
                Err(StorageError::Open { reason, .. })
                    if reason.contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(error) => panic!("opens sled store: {error:?}"),
            }
        }
    }
}

pub(super) struct RedbFixture(pub(super) TempDir);

impl RedbFixture {
    pub(super) fn path(&self) -> PathBuf {
        self.0.path().join("store.redb")
    }
}

impl Fixture for RedbFixture {
    fn open(&self) -> Arc<dyn Store> {
        Arc::new(RedbStore::open(&self.path()).expect("opens redb store"))
    }
}

pub(super) fn temp_dir() -> TempDir {
    tempfile::tempdir().expect("creates a temporary directory")
}

pub(super) fn message_for_test(
    topic: &str,
    payload_len: usize,
    expiry_unix_ms: Option<u64>,
) -> MessageRecord {
    MessageRecord {
        topic: ByteString::from(topic),
        payload: Bytes::from(vec![7u8; payload_len]),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: PublishProperties::default(),
        expiry_unix_ms,
    }
}

pub(super) fn session_for_test(
    client_id: &str,
    expiry_deadline_unix_ms: Option<u64>,
) -> SessionRecord {
    SessionRecord {
        client_id: ByteString::from(client_id),
        session_id: 1,
        session_expiry_interval_secs: 3600,
        expiry_deadline_unix_ms,
    }
}

pub(super) fn subscription_for_test(topic_filter: &str) -> SubscriptionRecord {
    SubscriptionRecord {
        topic_filter: ByteString::from(topic_filter),
        options: SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..SubscriptionOptions::default()
        },
        subscription_id: Some(5),
    }
}

pub(super) fn queue_entry(message_id: u64) -> QueueRecord {
    QueueRecord {
        message_id,
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: vec![5],
        message: None,
    }
}

fn count(store: &dyn Store, keyspace: Keyspace) -> usize {
    store
        .scan(keyspace, &[], None, usize::MAX)
        .expect("scans")
        .len()
}

fn refcount(store: &dyn Store, message_id: u64) -> Option<u64> {
    let value = store
        .get(Keyspace::MessageRefs, &message_key(message_id))
        .expect("reads")?;
    Some(u64::from_be_bytes(value.try_into().expect("8 bytes")))
}

fn commit(store: &dyn Store, batch: WriteBatch) {
    store.apply(&[batch]).expect("applies");
    store.flush().expect("flushes");
}

fn batch_applies_all_or_nothing(fixture: &dyn Fixture) {
    let store = fixture.open();
    let mut batch = WriteBatch::new();
    batch.put_session(&session_for_test("car-1", None));
    for idx in 0..20 {
        batch.put_subscription("car-1", &subscription_for_test(&format!("cars/{idx}/#")));
    }
    commit(&*store, batch);
    assert_eq!(count(&*store, Keyspace::Subscriptions), 20);
    // A garbage queue entry makes the session delete fail while it resolves: nothing of the
    // failing batch may be applied, not even the put before it.
    let mut garbage = WriteBatch::new();
    garbage.push(BatchOp::Put {
        keyspace: Keyspace::OfflineQueue,
        key: crate::storage::queue_key("car-1", 1),
        value: vec![1, 0xFF],
    });
    commit(&*store, garbage);
    let mut failing = WriteBatch::new();
    failing.put_retained(&message_for_test("cars/1/state", 10, None));
    failing.delete_session("car-1");
    let error = store
        .apply(&[failing])
        .expect_err("resolving the garbage entry fails");
    assert!(
        matches!(error, StorageError::CorruptRecord { .. }),
        "{error}"
    );
    assert_eq!(count(&*store, Keyspace::Retained), 0);
    assert_eq!(count(&*store, Keyspace::Subscriptions), 20);
}

fn scans_are_bounded_and_pageable(fixture: &dyn Fixture) {
    let store = fixture.open();
    let mut batch = WriteBatch::new();
    for idx in 0..50 {
        batch.put_subscription("a", &subscription_for_test(&format!("t/{idx:03}")));
    }
    // "ab" must not show up under the prefix of "a".
    batch.put_subscription("ab", &subscription_for_test("t/other"));
    commit(&*store, batch);
    let prefix = session_key_prefix("a");
    let first_page = store
        .scan(Keyspace::Subscriptions, &prefix, None, 10)
        .expect("scans");
    assert_eq!(first_page.len(), 10);
    let mut all = first_page;
    loop {
        let last_key = all.last().map(|(key, _)| key.clone());
        let page = store
            .scan(Keyspace::Subscriptions, &prefix, last_key.as_deref(), 10)
            .expect("scans");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        all.extend(page);
    }
    assert_eq!(all.len(), 50);
    assert!(
        all.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "keys in order"
    );
    assert_eq!(count(&*store, Keyspace::Subscriptions), 51);
}

fn deletes_remove_entries_and_sessions(fixture: &dyn Fixture) {
    let store = fixture.open();
    let mut batch = WriteBatch::new();
    batch
        .put_session(&session_for_test("car-1", None))
        .put_subscription("car-1", &subscription_for_test("a/#"))
        .put_subscription("car-1", &subscription_for_test("b/#"))
        .put_inbound_qos2("car-1", 9)
        .put_message(1, &message_for_test("a/1", 100, None))
        .push_queue("car-1", 1, &queue_entry(1))
        .put_will(
            "car-1",
            &WillRecord {
                message: message_for_test("cars/car-1/gone", 1, None),
                delay_secs: 30,
                publish_deadline_unix_ms: None,
            },
        )
        .put_session(&session_for_test("car-2", None))
        .put_subscription("car-2", &subscription_for_test("a/#"));
    commit(&*store, batch);
    let mut batch = WriteBatch::new();
    batch
        .delete_subscription("car-1", "b/#")
        .delete_inbound_qos2("car-1", 9);
    commit(&*store, batch);
    assert_eq!(count(&*store, Keyspace::Subscriptions), 2);
    assert_eq!(count(&*store, Keyspace::InboundQos2), 0);
    let mut batch = WriteBatch::new();
    batch.delete_session("car-1");
    commit(&*store, batch);
    for keyspace in [
        Keyspace::OfflineQueue,
        Keyspace::Messages,
        Keyspace::MessageRefs,
        Keyspace::Wills,
    ] {
        assert_eq!(count(&*store, keyspace), 0, "{}", keyspace.name());
    }
    assert_eq!(count(&*store, Keyspace::Sessions), 1);
    assert_eq!(
        count(&*store, Keyspace::Subscriptions),
        1,
        "car-2 keeps its subscription"
    );
}

fn shared_payload_is_stored_once_and_freed_with_last_reference(fixture: &dyn Fixture) {
    let store = fixture.open();
    let num_sessions = 100u64;
    let mut batch = WriteBatch::new();
    batch.put_message(42, &message_for_test("fleet/update", 1024, None));
    for idx in 0..num_sessions {
        batch.push_queue(&format!("car-{idx}"), 1, &queue_entry(42));
    }
    commit(&*store, batch);
    assert_eq!(count(&*store, Keyspace::Messages), 1);
    assert_eq!(refcount(&*store, 42), Some(num_sessions));
    // car-0 starts delivery: queue → in flight → PUBREC (message released) → PUBCOMP.
    let published = InflightRecord {
        packet_id: 1,
        state: InflightState::Published { message_id: 42 },
        qos: QoS::ExactlyOnce,
        retain: false,
        subscription_ids: vec![],
    };
    let pubrel_sent = InflightRecord {
        state: InflightState::PubRelSent,
        ..published.clone()
    };
    let mut batch = WriteBatch::new();
    batch
        .remove_queue("car-0", 1, 42)
        .put_inflight("car-0", &published, None);
    commit(&*store, batch);
    assert_eq!(refcount(&*store, 42), Some(num_sessions));
    let mut batch = WriteBatch::new();
    batch.put_inflight("car-0", &pubrel_sent, Some(&published));
    commit(&*store, batch);
    assert_eq!(refcount(&*store, 42), Some(num_sessions - 1));
    let mut batch = WriteBatch::new();
    batch.remove_inflight("car-0", &pubrel_sent);
    for idx in 1..num_sessions - 1 {
        batch.remove_queue(&format!("car-{idx}"), 1, 42);
    }
    commit(&*store, batch);
    assert_eq!(refcount(&*store, 42), Some(1));
    assert_eq!(count(&*store, Keyspace::Messages), 1);
    let mut batch = WriteBatch::new();
    batch.delete_session(&format!("car-{}", num_sessions - 1));
    commit(&*store, batch);
    assert_eq!(count(&*store, Keyspace::Messages), 0);
    assert_eq!(count(&*store, Keyspace::MessageRefs), 0);
    // A message put without any reference does not leak.
    let mut batch = WriteBatch::new();
    batch.put_message(43, &message_for_test("nobody/listens", 10, None));
    commit(&*store, batch);
    assert_eq!(count(&*store, Keyspace::Messages), 0);
}

fn entries_written_and_removed_in_one_group_leave_nothing(fixture: &dyn Fixture) {
    let store = fixture.open();
    let inline = |sequence: u64| QueueRecord {
        message: Some(message_for_test(&format!("fast/{sequence}"), 64, None)),
        ..queue_entry(0)
    };
    // A publisher's batch, a shared message for two sessions, then the fast subscribers'
    // acknowledgements, all in one group; car-1's second entry stays queued.
    let mut published = WriteBatch::new();
    published
        .push_queue("car-1", 1, &inline(1))
        .push_queue("car-1", 2, &inline(2));
    let mut shared = WriteBatch::new();
    shared
        .put_message(7, &message_for_test("fleet/all", 256, None))
        .push_queue("car-2", 1, &queue_entry(7))
        .push_queue("car-3", 1, &queue_entry(7));
    let mut acknowledged = WriteBatch::new();
    acknowledged
        .remove_queue("car-1", 1, 0)
        .remove_queue("car-2", 1, 7);
    let group = [published, shared, acknowledged];
    assert_eq!(TransientEntries::find(&group).len(), 2);
    store.apply(&group).expect("applies");
    store.flush().expect("flushes");
    drop(store);
    let store = fixture.open();
    let queued: Vec<Vec<u8>> = store
        .scan(Keyspace::OfflineQueue, &[], None, usize::MAX)
        .expect("scans")
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(queued, vec![queue_key("car-1", 2), queue_key("car-3", 1)]);
    assert_eq!(
        refcount(&*store, 7),
        Some(1),
        "car-3 still holds the message"
    );
    assert_eq!(count(&*store, Keyspace::Messages), 1);

    // A group that deletes a session skips nothing, and still ends in the same state.
    let mut pushed = WriteBatch::new();
    pushed
        .put_session(&session_for_test("car-4", None))
        .push_queue("car-4", 1, &inline(1))
        .push_queue("car-3", 2, &inline(2));
    let mut ended = WriteBatch::new();
    ended.delete_session("car-4").remove_queue("car-3", 2, 0);
    let group = [pushed, ended];
    assert_eq!(TransientEntries::find(&group).len(), 0);
    store.apply(&group).expect("applies");
    store.flush().expect("flushes");
    drop(store);
    let store = fixture.open();
    assert_eq!(count(&*store, Keyspace::OfflineQueue), 2);
    assert_eq!(count(&*store, Keyspace::Sessions), 0);
}

fn recovery_drops_what_expired_while_down(fixture: &dyn Fixture) {
    let now_unix_ms = 1_700_000_000_000;
    let store = fixture.open();
    let mut batch = WriteBatch::new();
    batch
        .put_session(&session_for_test("expired", Some(now_unix_ms - 1)))
        .put_subscription("expired", &subscription_for_test("x/#"))
        .put_message(1, &message_for_test("x/1", 10, None))
        .push_queue("expired", 1, &queue_entry(1))
        .put_session(&session_for_test("alive", Some(now_unix_ms + 60_000)))
        .put_session(&session_for_test("connected-at-crash", None))
        .put_subscription("alive", &subscription_for_test("x/#"))
        .put_message(2, &message_for_test("x/2", 10, Some(now_unix_ms - 5)))
        .put_message(3, &message_for_test("x/3", 10, Some(now_unix_ms + 5)))
        .push_queue("alive", 1, &queue_entry(2))
        .push_queue("alive", 2, &queue_entry(3))
        .push_queue("alive", 3, &queue_entry(1))
        .put_inbound_qos2("alive", 77)
        .put_retained(&message_for_test("r/old", 3, Some(now_unix_ms)))
        .put_retained(&message_for_test("r/new", 3, None))
        .put_will(
            "expired",
            &WillRecord {
                message: message_for_test("w/expired", 1, None),
                delay_secs: 10,
                publish_deadline_unix_ms: Some(now_unix_ms - 10),
            },
        );
    commit(&*store, batch);
    let recovered = recover(&*store, now_unix_ms).expect("recovers");
    let counts = recovered.counts;
    assert_eq!((counts.num_sessions, counts.num_expired_sessions), (2, 1));
    assert_eq!((counts.num_queued, counts.num_expired_queued), (2, 1));
    assert_eq!((counts.num_retained, counts.num_expired_retained), (1, 1));
    assert_eq!(
        (
            counts.num_inbound_qos2,
            counts.num_subscriptions,
            counts.num_wills
        ),
        (1, 1, 1)
    );
    assert_eq!(counts.num_messages, 3);
    let alive = recovered
        .sessions
        .iter()
        .find(|session| &*session.session.client_id == "alive")
        .expect("alive is recovered");
    let sequences: Vec<u64> = alive.queue.iter().map(|(sequence, _)| *sequence).collect();
    assert_eq!(sequences, [2, 3]);
    assert_eq!(alive.inbound_qos2, [77]);
    assert_eq!(recovered.next_message_id, 4);
    // The cleanup removes the expired session, its will, the expired entry and its message.
    commit(&*store, recovered.cleanup);
    assert_eq!(count(&*store, Keyspace::Sessions), 2);
    assert_eq!(count(&*store, Keyspace::Wills), 0);
    assert_eq!(count(&*store, Keyspace::Retained), 1);
    assert_eq!(
        count(&*store, Keyspace::Messages),
        2,
        "messages 2 and the expired session's 1 are gone"
    );
    assert_eq!(refcount(&*store, 1), Some(1));
    assert_eq!(refcount(&*store, 2), None);
    // The periodic sweep removes what expires later, a bounded page at a time.
    let later_unix_ms = now_unix_ms + 120_000;
    let sweep = plan_expiry_sweep(&*store, later_unix_ms, 1, None, None).expect("plans");
    let session_cursor = sweep.next_session_cursor;
    assert!(
        session_cursor.is_some(),
        "one session per page, more to come"
    );
    commit(&*store, sweep.batch);
    let sweep = plan_expiry_sweep(&*store, later_unix_ms, 1, session_cursor.as_deref(), None)
        .expect("plans");
    commit(&*store, sweep.batch);
    assert_eq!(
        count(&*store, Keyspace::Sessions),
        1,
        "only the session without deadline is left"
    );
    assert_eq!(count(&*store, Keyspace::Messages), 0);
}

fn reopen_sees_flushed_data(fixture: &dyn Fixture) {
    {
        let store = fixture.open();
        let mut batch = WriteBatch::new();
        batch.put_session(&session_for_test("car-1", None));
        commit(&*store, batch);
    }
    let store = fixture.open();
    let recovered = recover(&*store, 0).expect("recovers");
    assert_eq!(recovered.sessions.len(), 1);
    assert_eq!(
        recovered.sessions[0].session,
        session_for_test("car-1", None)
    );
}

fn writer_groups_concurrent_commits(fixture: &dyn Fixture) {
    let store = fixture.open();
    let (writer, join_handle) =
        StorageWriter::spawn(store.clone(), StorageWriterConfig::for_test()).expect("spawns");
    let num_threads = 16;
    let num_batches_per_thread = 20;
    std::thread::scope(|scope| {
        for thread_idx in 0..num_threads {
            let writer = writer.clone();
            scope.spawn(move || {
                for batch_idx in 0..num_batches_per_thread {
                    let mut batch = WriteBatch::new();
                    batch.put_session(&session_for_test(
                        &format!("car-{thread_idx}-{batch_idx}"),
                        None,
                    ));
                    writer.blocking_commit(batch).expect("commits");
                }
            });
        }
    });
    let counters = writer.counters();
    let num_batches = counters
        .num_batches
        .load(std::sync::atomic::Ordering::Relaxed);
    let num_groups = counters
        .num_groups
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(num_batches, num_threads * num_batches_per_thread);
    assert!(
        num_groups < num_batches,
        "{num_groups} groups for {num_batches} batches"
    );
    drop(writer);
    join_handle.join().expect("writer thread exits cleanly");
    drop(store);
    let store = fixture.open();
    assert_eq!(
        count(&*store, Keyspace::Sessions) as u64,
        num_threads * num_batches_per_thread
    );
}

macro_rules! storage_suite {
    ($module:ident, $fixture:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn batch_applies_all_or_nothing() {
                super::batch_applies_all_or_nothing(&$fixture);
            }
            #[test]
            fn scans_are_bounded_and_pageable() {
                super::scans_are_bounded_and_pageable(&$fixture);
            }
            #[test]
            fn deletes_remove_entries_and_sessions() {
                super::deletes_remove_entries_and_sessions(&$fixture);
            }
            #[test]
            fn shared_payload_is_stored_once_and_freed_with_last_reference() {
                super::shared_payload_is_stored_once_and_freed_with_last_reference(&$fixture);
            }
            #[test]
            fn recovery_drops_what_expired_while_down() {
                super::recovery_drops_what_expired_while_down(&$fixture);
            }
            #[test]
            fn entries_written_and_removed_in_one_group_leave_nothing() {
                super::entries_written_and_removed_in_one_group_leave_nothing(&$fixture);
            }
            #[test]
            fn reopen_sees_flushed_data() {
                super::reopen_sees_flushed_data(&$fixture);
            }
            #[test]
            fn writer_groups_concurrent_commits() {
                super::writer_groups_concurrent_commits(&$fixture);
            }
        }
    };
}

storage_suite!(memory, MemoryFixture(MemoryDisk::new()));
storage_suite!(sled, SledFixture(temp_dir()));
storage_suite!(redb, RedbFixture(temp_dir()));

#[test]
fn memory_store_loses_unflushed_batches_on_reopen() {
    let disk = MemoryDisk::new();
    let store = MemoryStore::open(disk.clone());
    let mut batch = WriteBatch::new();
    batch.put_session(&session_for_test("flushed", None));
    commit(&store, batch);
    let mut batch = WriteBatch::new();
    batch.put_session(&session_for_test("unflushed", None));
    store.apply(&[batch]).expect("applies");
    drop(store);
    let store = MemoryStore::open(disk);
    assert_eq!(count(&store, Keyspace::Sessions), 1);
}

#[test]
fn writer_refuses_writes_after_a_failure() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new_for_test());
    let (writer, _join_handle) =
        StorageWriter::spawn(store, StorageWriterConfig::for_test()).expect("spawns");
    let mut garbage = WriteBatch::new();
    garbage.push(BatchOp::Put {
        keyspace: Keyspace::OfflineQueue,
        key: crate::storage::queue_key("car-1", 1),
        value: vec![0xFF],
    });
    writer.blocking_commit(garbage).expect("commits");
    let mut failing = WriteBatch::new();
    failing.delete_session("car-1");
    assert!(matches!(
        writer.blocking_commit(failing),
        Err(StorageError::CorruptRecord { .. })
    ));
    let mut fine = WriteBatch::new();
    fine.put_session(&session_for_test("car-2", None));
    assert!(matches!(
        writer.blocking_commit(fine),
        Err(StorageError::WriterFailed { .. })
    ));
}

#[test]
fn corrupt_redb_file_is_reported_with_its_path_and_kept() {
    let dir = temp_dir();
    let path = dir.path().join("store.redb");
    let garbage = vec![0xA5u8; 8192];
    std::fs::write(&path, &garbage).expect("writes garbage");
    let error = RedbStore::open(&path).expect_err("garbage is refused");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("move it aside"), "{message}");
    assert_eq!(std::fs::read(&path).expect("file is still there"), garbage);
}

#[test]
fn corrupt_sled_store_is_reported_with_its_path_and_kept() {
    let fixture = SledFixture(temp_dir());
    {
        let store = fixture.open();
        let mut batch = WriteBatch::new();
        batch.put_session(&session_for_test("car-1", None));
        commit(&*store, batch);
    }
    let db_file = fixture.path().join("db");
    let garbage = vec![0xA5u8; std::fs::metadata(&db_file).expect("db file exists").len() as usize];
    std::fs::write(&db_file, &garbage).expect("writes garbage");
    let error = SledStore::open(&fixture.path()).expect_err("garbage is refused");
    let message = error.to_string();
    assert!(
        message.contains(&fixture.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("sled recovered no data"), "{message}");
    // FIXME: sled 0.34 treats a garbage log as empty and rewrites it while opening, before the
    // broker can refuse it; the marker file turns that into an error, but the bytes are gone.
    let after_open = std::fs::read(&db_file).expect("file is still there");
    assert!(
        after_open != garbage,
        "sled left the garbage alone: drop this FIXME"
    );
}

#[test]
fn redb_file_of_another_format_is_refused() {
    let dir = temp_dir();
    let path = dir.path().join("store.redb");
    {
        let store = RedbStore::open(&path).expect("opens");
        let mut batch = WriteBatch::new();
        batch.push(BatchOp::Put {
            keyspace: Keyspace::Meta,
            key: crate::storage::FORMAT_VERSION_KEY.to_vec(),
            value: vec![99],
        });
        commit(&store, batch);
    }
    let error = RedbStore::open(&path).expect_err("format 99 is refused");
    assert!(
        error.to_string().contains("not the supported format"),
        "{error}"
    );
}
