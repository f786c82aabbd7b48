//! The `starling` binary: `starling [serve] [--config FILE]`, `starling config default`,
//! `starling ctl ...` (the admin API client), `starling passwd ...` (password file),
//! `starling ban ...` (ban list).

use std::{collections::HashMap, io::Write, path::PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use starling_node::{
    ctl::CtlArgs, load_node_config, logging, start_node_with, NodeConfig, NodeOptions,
    DEFAULT_CONFIG_TOML,
};

/// mimalloc: per-thread free lists keep the publish path's cross-thread frees (a buffer built by
/// one connection, dropped by another or by the storage thread) off a shared arena lock.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "starling",
    version,
    about = "Starling: a clustered MQTT 3.1/3.1.1/5.0 broker"
)]
struct Cli {
    /// Configuration file (TOML); without it the embedded defaults apply.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Starts the broker (the default).
    Serve,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Operates a running node through its admin API (tables, or JSON with --json).
    Ctl(CtlArgs),
    /// Edits a password file (argon2 hashes, optional SCRAM-SHA-256 keys).
    Passwd(starling_node::auth::cli::PasswdArgs),
    /// Edits the ban list file (`--file`, or `auth.ban_file` of `--config`).
    Ban(starling_node::auth::cli::BanArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Prints the embedded default configuration.
    Default,
    /// Validates a configuration file and the environment overrides, then exits.
    Check,
}

fn load(cli: &Cli) -> anyhow::Result<NodeConfig> {
    let env_vars: HashMap<String, String> = std::env::vars()
        .filter(|(key, _)| key.starts_with("STARLING_") || key == "HOSTNAME")
        .collect();
    match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read configuration file {}", path.display()))?;
            load_node_config(&text, &path.display().to_string(), &env_vars)
        }
        None => load_node_config(DEFAULT_CONFIG_TOML, "embedded defaults", &env_vars),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Config {
            command: ConfigCommand::Default,
        }) => {
            std::io::stdout().write_all(DEFAULT_CONFIG_TOML.as_bytes())?;
            Ok(())
        }
        Some(Command::Config {
            command: ConfigCommand::Check,
        }) => {
            let config = load(&cli)?;
            let listeners: Vec<String> = config
                .listeners
                .iter()
                .map(|listener| {
                    format!(
                        "{} ({} on {})",
                        listener.name,
                        listener.protocol.label(),
                        listener.bind
                    )
                })
                .collect();
            writeln!(
                std::io::stdout(),
                "configuration is valid: mqtt listeners {}",
                listeners.join(", ")
            )?;
            Ok(())
        }
        Some(Command::Ctl(args)) => starling_node::ctl::run(args, &mut std::io::stdout().lock()),
        Some(Command::Passwd(args)) => {
            starling_node::auth::cli::run_passwd(args, &mut std::io::stdout().lock())
        }
        Some(Command::Ban(args)) => {
            let file = match &args.file {
                Some(file) => file.clone(),
                None => load(&cli)?.auth.ban_file.context(
                    "no ban file: pass --file or set auth.ban_file in the --config file",
                )?,
            };
            starling_node::auth::cli::run_ban(&args.command, &file, &mut std::io::stdout().lock())
        }
        Some(Command::Serve) | None => {
            let config = load(&cli)?;
            let log_control = logging::init(&config).context("cannot set up logging")?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve(config, log_control))
        }
    }
}

async fn serve(config: NodeConfig, log_control: starling_node::LogControl) -> anyhow::Result<()> {
    tracing::info!(node_id = %config.node_id, data_dir = %config.data_dir.display(), listeners = config.listeners.len(), "starting starling");
    tracing::info!(config = %starling_node::config::effective_config_json(&config), "effective configuration");
    let options = NodeOptions {
        log_control: Some(log_control),
    };
    let node = start_node_with(config, options).await?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install SIGTERM handler")?;
    let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot install SIGHUP handler")?;
    let broker = node.broker.clone();
    let fatal = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT received"); break false }
            _ = sigterm.recv() => { tracing::info!("SIGTERM received"); break false }
            _ = sighup.recv() => {
                let num_failed = node.reload_tls().await;
                tracing::info!(num_failed, "SIGHUP received: tls files reloaded");
            }
            () = broker.fatal_error() => { tracing::error!("an engine actor failed"); break true }
        }
    };
    node.shutdown().await;
    if fatal {
        anyhow::bail!("an engine actor failed; exiting so that the node is restarted cleanly");
    }
    Ok(())
}
