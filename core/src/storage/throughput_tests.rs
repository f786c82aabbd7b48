//! Durable throughput measurement of each backend; a no-op unless `STARLING_STORAGE_BENCH` is
//! set (run it in release, see ARCHITECTURE.md "Storage").

use std::{io::Write, sync::Arc, time::Instant};

use crate::storage::{
    tests::{message_for_test, queue_entry, temp_dir},
    MemoryStore, RedbStore, SledStore, StorageWriter, StorageWriterConfig, Store, WriteBatch,
};

const NUM_MESSAGES: u64 = 100_000;
const MESSAGES_PER_BATCH: u64 = 100;
const PAYLOAD_BYTES: usize = 100;

fn message_batch(first_id: u64, num_messages: u64) -> WriteBatch {
    let mut batch = WriteBatch::new();
    for id in first_id..first_id + num_messages {
        batch
            .put_message(
                id,
                &message_for_test("fleet/telemetry", PAYLOAD_BYTES, None),
            )
            .push_queue("car-1", id, &queue_entry(id));
    }
    batch
}

fn report(line: String) {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").expect("writes report");
}

/// Batches of 100 messages, one flush per batch, from one thread.
fn measure_direct(store: &dyn Store) {
    let started = Instant::now();
    let mut first_id = 1;
    while first_id <= NUM_MESSAGES {
        store
            .apply(&[message_batch(first_id, MESSAGES_PER_BATCH)])
            .expect("applies");
        store.flush().expect("flushes");
        first_id += MESSAGES_PER_BATCH;
    }
    let elapsed = started.elapsed();
    report(format!(
        "{}: direct, {NUM_MESSAGES} x {PAYLOAD_BYTES} B in batches of {MESSAGES_PER_BATCH}, flush per batch: {:.2} s, {:.0} msg/s, {:.0} flushes/s",
        store.engine(),
        elapsed.as_secs_f64(),
        NUM_MESSAGES as f64 / elapsed.as_secs_f64(),
        (NUM_MESSAGES / MESSAGES_PER_BATCH) as f64 / elapsed.as_secs_f64(),
    ));
}

/// One message per batch from 64 threads through the group-commit writer.
fn measure_group_commit(store: Arc<dyn Store>) {
    let engine = store.engine();
    let (writer, join_handle) =
        StorageWriter::spawn(store, StorageWriterConfig::for_test()).expect("spawns");
    let num_threads = 64u64;
    let num_messages = NUM_MESSAGES / 5;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread_idx in 0..num_threads {
            let writer = writer.clone();
            scope.spawn(move || {
                let mut id = 1_000_000 + thread_idx;
                while id < 1_000_000 + num_messages {
                    writer
                        .blocking_commit(message_batch(id, 1))
                        .expect("commits");
                    id += num_threads;
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let counters = writer.counters();
    let num_flushes = counters
        .num_flushes
        .load(std::sync::atomic::Ordering::Relaxed);
    report(format!(
        "{engine}: group commit, {num_threads} threads x 1 msg per batch, {num_messages} msgs: {:.2} s, {:.0} msg/s, {num_flushes} flushes, {:.1} batches per flush",
        elapsed.as_secs_f64(),
        num_messages as f64 / elapsed.as_secs_f64(),
        num_messages as f64 / num_flushes.max(1) as f64,
    ));
    drop(writer);
    join_handle.join().expect("writer exits");
}

#[test]
fn durable_throughput_report() {
    if std::env::var_os("STARLING_STORAGE_BENCH").is_none() {
        return;
    }
    let dir = temp_dir();
    let stores: Vec<Arc<dyn Store>> = vec![
        Arc::new(MemoryStore::new_for_test()),
        Arc::new(SledStore::open(&dir.path().join("sled")).expect("opens sled")),
        Arc::new(RedbStore::open(&dir.path().join("store.redb")).expect("opens redb")),
    ];
    for store in stores {
        measure_direct(&*store);
        measure_group_commit(store);
    }
    report(format!("store directory: {}", dir.path().display()));
}
