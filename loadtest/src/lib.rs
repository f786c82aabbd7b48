//! swarm: the Starling fleet load tester.
//!
//! Thousands of MQTT 3.1.1/5.0 clients per process on tokio with Starling's own codec,
//! spread over worker processes and source addresses; scenarios from TOML files or flags;
//! loss, duplicates and latency from a header in every payload; a JSON line, a table and an
//! HTML report per run. See `swarm --help` and `swarm example`.
//!
//! # Layout
//! - [`scenario`]: the scenario format and its validation; `presets`: the subcommands'
//!   scenarios.
//! - [`coordinator`]: runs a scenario (workers, phases, broker sampling, merging);
//!   `worker`: one worker's clients; `client`: one client task; `conn`: one MQTT connection.
//! - `payload`, `tracker`, `topic`, `stats`: headers, loss/duplicate accounting, fan-out,
//!   histograms.
//! - [`report`], `html`, [`sweep`], `summary`: outputs.
//! - `relay`: the raw relay baseline; `tls`: client TLS.

mod cli;
mod client;
mod conn;
mod control;
pub mod coordinator;
mod html;
mod payload;
mod presets;
mod procfs;
mod relay;
pub mod report;
pub mod scenario;
mod stats;
mod summary;
pub mod sweep;
mod tls;
mod topic;
mod tracker;
mod worker;

use std::process::ExitCode;

use clap::Parser as _;

pub use stats::{Counters, LatencySummary};
pub use tracker::Accounting;

/// Builds the tokio runtime: current-thread for one thread, multi-thread otherwise.
///
/// # Errors
/// Returns the I/O error of the runtime.
pub(crate) fn build_runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    Ok(runtime)
}

/// Runs `swarm` with the process's arguments.
pub fn main_with_args() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("swarm: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
