//! The `starling` binary as a child process on a data directory that outlives it: started with a
//! storage engine, killed with SIGKILL or stopped with SIGTERM, restarted on the same directory.
//!
//! The node listens on `127.0.0.1:0` (MQTT and admin); its JSON log on stderr tells the bound
//! addresses, so parallel tests never race for a port and every restart gets a fresh one.
//!
//! `STARLING_TEST_BINARY=/path/to/starling` runs these tests against another build (a release
//! binary, or a copy taken when several worktrees share one target directory and overwrite
//! each other's `target/debug/starling`); by default they run the binary cargo built.

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStderr, Command},
    sync::oneshot,
    time::Instant,
};

/// How long a node may take from spawn to listening (debug build, recovery included).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of the node's log kept for failure messages.
const LOG_TAIL_LINES: usize = 60;

/// Returns the `starling` binary under test: `STARLING_TEST_BINARY`, or the one cargo built.
pub fn starling_binary() -> PathBuf {
    std::env::var_os("STARLING_TEST_BINARY").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_starling")),
        PathBuf::from,
    )
}

/// A storage engine of the `[storage] engine` key (env `STARLING_STORAGE_ENGINE`).
pub use starling_node::config::StorageEngine;

/// Returns where `engine` keeps its store inside `data_dir` (none for memory).
pub fn engine_store_path(engine: StorageEngine, data_dir: &Path) -> Option<PathBuf> {
    match engine {
        StorageEngine::Redb => Some(data_dir.join(starling_node::storage::REDB_FILE)),
        StorageEngine::Sled => Some(data_dir.join(starling_node::storage::SLED_DIR)),
        StorageEngine::Memory => None,
    }
}

/// A directory holding a configuration file and the data directory of successive `starling`
/// processes; removed when dropped.
pub struct StarlingHome {
    root: TempDir,
    engine: StorageEngine,
}

impl StarlingHome {
    /// Creates the directory with a configuration of the defaults plus `extra_toml` (whole
    /// sections, e.g. `"[mqtt]\nmax_queued_messages = 10000\n"`). The engine is chosen with
    /// `STARLING_STORAGE_ENGINE`, the data directory with `STARLING_DATA_DIR`.
    pub fn new(engine: StorageEngine, extra_toml: &str) -> StarlingHome {
        let root = tempfile::tempdir().expect("create a temporary directory");
        std::fs::create_dir(root.path().join("data")).expect("create the data directory");
        std::fs::write(
            root.path().join("starling.toml"),
            format!("version = \"1\"\n{extra_toml}"),
        )
        .expect("write the configuration file");
        StarlingHome { root, engine }
    }

    /// Returns the engine the nodes are started with.
    pub fn engine(&self) -> StorageEngine {
        self.engine
    }

    /// Returns the data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// Returns the file or directory of the store (none for the memory engine).
    pub fn store_path(&self) -> Option<PathBuf> {
        engine_store_path(self.engine, &self.data_dir())
    }

    /// Returns the bytes the store occupies on disk (allocated blocks, so a sparse or
    /// preallocated file counts what it really uses); 0 when it does not exist.
    pub fn store_size_bytes(&self) -> u64 {
        self.store_path().map_or(0, |path| disk_usage_bytes(&path))
    }

    /// Returns the command that starts a node on this directory.
    pub fn command(&self) -> Command {
        let mut command = Command::new(starling_binary());
        command
            .arg("--config")
            .arg(self.root.path().join("starling.toml"))
            .env("STARLING_LISTEN", "127.0.0.1:0")
            // The admin listener defaults to 127.0.0.1:8080; parallel tests need their own port.
            .env("STARLING_ADMIN_BIND", "127.0.0.1:0")
            .env("STARLING_DATA_DIR", self.data_dir())
            .env("STARLING_STORAGE_ENGINE", self.engine.name())
            .env("STARLING_LOG_FORMAT", "json")
            // The start-up error must stay the last lines of stderr, not a backtrace.
            .env("RUST_BACKTRACE", "0")
            // The bound addresses are logged by starling_node at info.
            .env("STARLING_LOG_LEVEL", "warn,starling_node=info")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Starts a node and waits (at most [`START_TIMEOUT`]) until it reports its MQTT listener;
    /// panics with its log if it exits first.
    pub async fn start(&self) -> StarlingProcess {
        match self.try_start(START_TIMEOUT).await {
            Ok(process) => process,
            Err(exited) => panic!(
                "starling ({} engine) exited at start-up with {:?}:\n{}",
                self.engine.name(),
                exited.code,
                exited.stderr
            ),
        }
    }

    /// Starts a node; returns it once it reports its MQTT listener, or how it exited before.
    /// Panics if it does neither within `timeout`.
    pub async fn try_start(&self, timeout: Duration) -> Result<StarlingProcess, Exited> {
        let spawned_at = Instant::now();
        let mut child = self.command().spawn().expect("spawn starling");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(LogTail::default()));
        let (addr_sender, addr_receiver) = oneshot::channel();
        let reader = tokio::spawn(read_log(stderr, log.clone(), addr_sender));
        // The address arrives, or the log ends (the process is exiting), or time runs out.
        let listening = tokio::time::timeout(timeout, addr_receiver).await;
        match listening {
            Ok(Ok(mqtt_addr)) => {
                return Ok(StarlingProcess {
                    child,
                    mqtt_addr,
                    started_in: spawned_at.elapsed(),
                    log,
                })
            }
            Ok(Err(_log_ended)) => {}
            Err(_elapsed) => {
                let tail = log.lock().expect("log lock").all_lines();
                panic!("starling neither listened nor exited within {timeout:?}; log:\n{tail}");
            }
        }
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("starling exits once its log has ended")
            .expect("wait for starling");
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        let stderr = log.lock().expect("log lock").all_lines();
        Err(Exited {
            code: status.code(),
            stderr,
        })
    }
}

/// How a node that was expected to stop ended.
#[derive(Debug)]
pub struct Exited {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// What it wrote on stderr (the last lines).
    pub stderr: String,
}

/// A running `starling` process.
pub struct StarlingProcess {
    child: Child,
    /// Address of its MQTT listener.
    pub mqtt_addr: SocketAddr,
    /// Time from spawn to the MQTT listener being reported (recovery included).
    pub started_in: Duration,
    log: Arc<Mutex<LogTail>>,
}

impl StarlingProcess {
    /// Kills the process with SIGKILL (no shutdown, no flush) and reaps it.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("send SIGKILL");
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("a killed starling is reaped in time")
            .expect("wait for starling");
    }

    /// Sends SIGTERM and waits (at most 20 s) for the ordered shutdown to finish.
    pub async fn terminate(mut self) -> Exited {
        let pid = self.child.id().expect("still running").to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("starling stops in time after SIGTERM")
            .expect("wait for starling");
        // Give the log reader a moment to drain the pipe after the exit.
        let log = self.log.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), async move {
            while !log.lock().expect("log lock").ended {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        Exited {
            code: status.code(),
            stderr: self.log_tail(),
        }
    }

    /// Returns the address of its admin listener, waiting (bounded) for it to be logged.
    pub async fn admin_addr(&self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(addr) = self.log.lock().expect("log lock").admin_addr {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "starling did not log its admin address:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Returns `GET /api/v1/status` of the admin API (sessions online and offline, queued
    /// messages, retained messages, ...).
    pub async fn status(&self) -> serde_json::Value {
        let addr = self.admin_addr().await;
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            let head =
                format!("GET /api/v1/status HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .expect("the admin API answers in time")
            .expect("GET /api/v1/status");
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text.split_once("\r\n\r\n").expect("a complete HTTP answer");
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "GET /api/v1/status: {text}"
        );
        serde_json::from_str(body)
            .unwrap_or_else(|error| panic!("status is JSON ({error}): {body}"))
    }

    /// Returns true while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Returns the last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.log.lock().expect("log lock").all_lines()
    }

    /// Returns the process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }
}

#[derive(Default)]
struct LogTail {
    lines: VecDeque<String>,
    ended: bool,
    mqtt_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
}

impl LogTail {
    fn push(&mut self, line: String) {
        if self.lines.len() == LOG_TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    fn all_lines(&self) -> String {
        self.lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// Reads the node's stderr line by line into `log`; reports the MQTT address once the MQTT
/// listener is logged.
async fn read_log(
    stderr: ChildStderr,
    log: Arc<Mutex<LogTail>>,
    addr_sender: oneshot::Sender<SocketAddr>,
) {
    let mut lines = BufReader::new(stderr).lines();
    let mut addr_sender = Some(addr_sender);
    while let Ok(Some(line)) = lines.next_line().await {
        let mut log = log.lock().expect("log lock");
        if let Ok(record) = serde_json::from_str::<serde_json::Value>(&line) {
            let field = |name: &str| {
                record["fields"][name]
                    .as_str()
                    .and_then(|text| text.parse::<SocketAddr>().ok())
            };
            // `mqtt listener bound` with `protocol = "tcp"` and `addr` (one line per listener;
            // STARLING_LISTEN sets the plain TCP one); older builds logged `mqtt_addr`.
            let fields = &record["fields"];
            let plain_tcp_listener = fields["message"] == "mqtt listener bound"
                && fields["protocol"]
                    .as_str()
                    .is_none_or(|protocol| protocol == "tcp");
            let listener_addr = plain_tcp_listener.then(|| field("addr")).flatten();
            log.mqtt_addr = log.mqtt_addr.or(field("mqtt_addr")).or(listener_addr);
            log.admin_addr = log.admin_addr.or(field("admin_addr"));
        }
        log.push(line);
        if let Some(addr) = log.mqtt_addr {
            if let Some(sender) = addr_sender.take() {
                let _ = sender.send(addr);
            }
        }
    }
    log.lock().expect("log lock").ended = true;
}

/// Returns the bytes allocated on disk for `path`: a file, or a directory walked recursively.
pub fn disk_usage_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !metadata.is_dir() {
        return metadata.blocks() * 512;
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| disk_usage_bytes(&entry.path()))
                .sum()
        })
        .unwrap_or(0)
}

/// Reads every file under `path` (a file or a directory) into a map from relative path to
/// bytes, to check later that nothing was modified.
pub fn snapshot_files(path: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, path: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .expect("read a store directory")
                .map(|entry| entry.expect("read a directory entry").path())
                .collect();
            entries.sort();
            for entry in entries {
                walk(root, &entry, files);
            }
        } else {
            let relative = path.strip_prefix(root).unwrap_or(path).to_path_buf();
            files.insert(relative, std::fs::read(path).expect("read a store file"));
        }
    }
    let mut files = BTreeMap::new();
    walk(path, path, &mut files);
    files
}
