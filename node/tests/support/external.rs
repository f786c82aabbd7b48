//! External clients run as subprocesses (Python paho-mqtt, `mosquitto_pub`/`mosquitto_sub`):
//! detection with one skip-or-fail rule, and bounded runs.
//!
//! A test that needs a missing client is skipped with a loud message on a developer's machine
//! and fails when `CI=true`, where `.ci/run` installs every client first.

use std::{io::Write, path::PathBuf, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

/// How long an external client may run before the test fails.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Returns true when `CI=true`: missing external clients are then failures.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// Decides whether a test that needs `client` runs: true if `available`; otherwise skips with a
/// loud message, or panics under `CI=true`.
#[track_caller]
pub fn require_external_client(client: &str, available: bool, install_hint: &str) -> bool {
    if available {
        return true;
    }
    assert!(
        !is_ci(),
        "{client} is required when CI=true but is not available ({install_hint})"
    );
    // Written to the stderr handle, not with `eprintln!`, so the test harness does not
    // capture it: a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n********************************************************************\n\
         SKIPPED {}: {client} is not available ({install_hint}).\n\
         This test is a failure when CI=true.\n\
         ********************************************************************",
        std::thread::current().name().unwrap_or("test"),
    );
    false
}

fn command_runs(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn command_exists(program: &str) -> bool {
    // `mosquitto_pub --help` exits with 1, so only a failure to start means "missing".
    std::process::Command::new(program)
        .arg("--help")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Returns true if `mosquitto_pub` and `mosquitto_sub` can run (skip or fail otherwise).
#[track_caller]
pub fn require_mosquitto_clients() -> bool {
    require_external_client(
        "mosquitto_pub/mosquitto_sub",
        command_exists("mosquitto_pub") && command_exists("mosquitto_sub"),
        "apt-get install mosquitto-clients",
    )
}

/// Returns true if Python 3 with paho-mqtt 2.x can run (skip or fail otherwise).
#[track_caller]
pub fn require_paho() -> bool {
    require_external_client(
        "python3 with paho-mqtt 2.x",
        command_runs(
            "python3",
            &[
                "-c",
                "import paho.mqtt, sys; sys.exit(0 if paho.mqtt.__version__.startswith('2.') else 1)",
            ],
        ),
        "python3 -m pip install 'paho-mqtt>=2,<3'",
    )
}

/// Returns the path of a script in `node/tests/python/`.
pub fn python_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("python")
        .join(name)
}

/// The captured result of a finished client.
#[derive(Debug)]
pub struct ClientOutput {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl ClientOutput {
    /// Asserts a zero exit code, showing the output otherwise.
    #[track_caller]
    pub fn assert_success(&self, what: &str) {
        assert_eq!(self.code, Some(0), "{what} failed: {self:#?}");
    }
}

/// Spawns `program` with `args`, output captured; killed when dropped.
pub fn spawn_client(program: &str, args: &[String]) -> Child {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {program}: {error}"))
}

/// Waits for a spawned client to exit (at most [`CLIENT_TIMEOUT`]) and returns its output.
pub async fn wait_client(child: Child, what: &str) -> ClientOutput {
    let output = tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {CLIENT_TIMEOUT:?}"))
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    ClientOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `program` with `args` to completion (bounded) and returns its output.
pub async fn run_client(program: &str, args: &[String]) -> ClientOutput {
    wait_client(spawn_client(program, args), program).await
}

/// Runs a script of `node/tests/python/` with `args` to completion (bounded).
pub async fn run_python(script: &str, args: &[String]) -> ClientOutput {
    let mut full_args = vec![python_script(script).display().to_string()];
    full_args.extend_from_slice(args);
    wait_client(spawn_client("python3", &full_args), script).await
}

/// Builds an argument vector from string slices.
pub fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_string()).collect()
}
