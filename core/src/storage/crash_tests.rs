//! Crash tests: a child process commits through the writer and is killed with SIGKILL right
//! after it reports a durable commit; the reopened store must hold everything reported.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
};

use crate::storage::{
    message_key, recover,
    tests::{
        message_for_test, queue_entry, session_for_test, subscription_for_test, temp_dir,
        RedbFixture, SledFixture,
    },
    Keyspace, RedbStore, SledStore, StorageWriter, StorageWriterConfig, Store, WriteBatch,
};

const CHILD_ENV: &str = "STARLING_STORAGE_CRASH_CHILD";
const NUM_CHILD_THREADS: u64 = 4;
/// Stops a child whose parent vanished.
const MAX_CHILD_BATCHES: u64 = 200_000;

/// One batch writes four keyspaces and a shared message; it must survive whole or not at all.
fn crash_batch(id: u64) -> WriteBatch {
    let client_id = format!("car-{id}");
    let mut batch = WriteBatch::new();
    batch
        .put_session(&session_for_test(&client_id, None))
        .put_subscription(&client_id, &subscription_for_test("fleet/#"))
        .put_message(id, &message_for_test("fleet/update", 100, None))
        .push_queue(&client_id, 1, &queue_entry(id));
    batch
}

fn open_store(engine: &str, path: &Path) -> Arc<dyn Store> {
    match engine {
        "sled" => Arc::new(SledStore::open(path).expect("child opens sled")),
        _ => Arc::new(RedbStore::open(path).expect("child opens redb")),
    }
}

/// The child's body; a no-op unless the parent set [`CHILD_ENV`] to `engine|path|first_id`.
#[test]
fn crash_child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, '|');
    let (Some(engine), Some(first_id), Some(path)) = (parts.next(), parts.next(), parts.next())
    else {
        panic!("malformed {CHILD_ENV}: {spec}");
    };
    let first_id: u64 = first_id.parse().expect("numeric first id");
    let store = open_store(engine, Path::new(path));
    let (writer, _join_handle) =
        StorageWriter::spawn(store, StorageWriterConfig::for_test()).expect("spawns writer");
    std::thread::scope(|scope| {
        for thread_idx in 0..NUM_CHILD_THREADS {
            let writer = writer.clone();
            scope.spawn(move || {
                let mut id = first_id + thread_idx;
                while id < first_id + MAX_CHILD_BATCHES {
                    writer.blocking_commit(crash_batch(id)).expect("commits");
                    let mut stdout = std::io::stdout().lock();
                    writeln!(stdout, "FLUSHED {id}").expect("parent reads");
                    stdout.flush().expect("parent reads");
                    id += NUM_CHILD_THREADS;
                }
            });
        }
    });
}

/// Checks every reported batch is whole, and every batch present at all is whole.
fn check_store(store: &dyn Store, reported: &[u64]) -> usize {
    let recovered = recover(store, 0).expect("recovers after kill -9");
    for id in reported {
        let client_id = format!("car-{id}");
        assert!(
            recovered
                .sessions
                .iter()
                .any(|session| *session.session.client_id == client_id),
            "{} lost reported batch {id}",
            store.engine()
        );
    }
    for session in &recovered.sessions {
        let id: u64 = session.session.client_id["car-".len()..]
            .parse()
            .expect("numeric");
        assert_eq!(
            session.subscriptions.len(),
            1,
            "batch {id} torn: subscription"
        );
        assert_eq!(session.queue.len(), 1, "batch {id} torn: queue");
        assert!(
            recovered.messages.contains_key(&id),
            "batch {id} torn: message"
        );
        let refcount = store
            .get(Keyspace::MessageRefs, &message_key(id))
            .expect("reads");
        assert_eq!(
            refcount,
            Some(1u64.to_be_bytes().to_vec()),
            "batch {id} torn: refcount"
        );
    }
    recovered.sessions.len()
}

fn crash_cycles(engine: &str, path: &Path, reopen: impl Fn() -> Arc<dyn Store>) {
    let executable = std::env::current_exe().expect("test binary path");
    let mut reported_all: Vec<u64> = Vec::new();
    let num_cycles = 5;
    for cycle in 0..num_cycles {
        let first_id = 1 + cycle * MAX_CHILD_BATCHES;
        let mut child = Command::new(&executable)
            .args([
                "--exact",
                "storage::crash_tests::crash_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{engine}|{first_id}|{}", path.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts child");
        let stdout = child.stdout.take().expect("piped stdout");
        // Kill at a different moment each cycle, while other threads are mid-commit.
        let kill_after = 20 + 37 * cycle as usize;
        let mut num_reported = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("reads child output");
            let Some(id) = line.strip_prefix("FLUSHED ") else {
                continue;
            };
            reported_all.push(id.parse().expect("numeric id"));
            num_reported += 1;
            if num_reported == kill_after {
                // std's Child::kill sends SIGKILL on Unix.
                child.kill().expect("kills child");
                break;
            }
        }
        let status = child.wait().expect("reaps child");
        assert!(
            !status.success(),
            "child was killed, not finished: {status}"
        );
        assert_eq!(
            num_reported, kill_after,
            "child reported enough before the kill"
        );
        let store = reopen();
        let num_present = check_store(&*store, &reported_all);
        assert!(num_present >= reported_all.len());
    }
}

#[test]
fn redb_keeps_every_reported_commit_across_sigkill() {
    let fixture = RedbFixture(temp_dir());
    let path = fixture.path();
    crash_cycles("redb", &path, || {
        use crate::storage::tests::Fixture;
        fixture.open()
    });
}

#[test]
fn sled_keeps_every_reported_commit_across_sigkill() {
    let fixture = SledFixture(temp_dir());
    let path = fixture.path();
    crash_cycles("sled", &path, || {
        use crate::storage::tests::Fixture;
        fixture.open()
    });
}
