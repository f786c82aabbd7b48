//! The Starling node: configuration, listeners, wiring and shutdown around the core engine.
//!
//! # Layout
//! - [`config`]: the TOML configuration, defaults and environment overrides.
//! - [`start_node`]: binds the listeners and starts the engine; used by the binary and by tests.
//! - `admin`: the admin HTTP listener (probes, `/metrics`, REST API under `/api/v1`).
//! - [`metrics`]: the Prometheus recorder and the documented list of metrics.
//! - `sys_topics`: the `$SYS/broker/...` topics.
//! - [`logging`]: tracing setup and the runtime log-level control.
//! - [`ctl`]: `starling ctl`, the command-line client of the admin API.
//! - [`readiness`]: the flag behind `/readyz`.
//! - [`storage`]: opens the configured store (redb, sled, or none).

mod admin;
pub mod config;
pub mod ctl;
pub mod logging;
pub mod metrics;
pub mod readiness;
pub mod storage;
mod sys_topics;

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use starling_core::Broker;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub use config::{load_node_config, NodeConfig, DEFAULT_CONFIG_TOML};
pub use logging::LogControl;
pub use readiness::Readiness;

/// Time the admin listener gets to finish its requests at the end of the shutdown.
const ADMIN_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A started node.
pub struct RunningNode {
    /// Address the MQTT TCP listener is bound to (the real port when configured with port 0).
    pub mqtt_addr: SocketAddr,
    /// Address the admin HTTP listener is bound to; `None` when `admin.enabled = false`.
    pub admin_addr: Option<SocketAddr>,
    /// The engine.
    pub broker: Broker,
    /// True while the node accepts clients; the shutdown sequence turns it false first.
    pub readiness: Readiness,
    config: NodeConfig,
    /// Stops the MQTT accept loops.
    accept_shutdown: CancellationToken,
    accept_tasks: Vec<JoinHandle<()>>,
    /// Stops the admin listener and the `$SYS` publisher, last in the shutdown sequence.
    admin_shutdown: CancellationToken,
    admin_tasks: Vec<JoinHandle<()>>,
}

/// What a node can be given besides its configuration.
#[derive(Default)]
pub struct NodeOptions {
    /// Control of the process's log filter, for `PUT /api/v1/log-level`.
    pub log_control: Option<LogControl>,
}

/// Binds the listeners and starts the engine.
///
/// # Errors
/// Returns an error if a listener cannot be bound or an actor fails to start.
pub async fn start_node(config: NodeConfig) -> anyhow::Result<RunningNode> {
    start_node_with(config, NodeOptions::default()).await
}

/// Binds the listeners and starts the engine, with `options`.
///
/// # Errors
/// Returns an error if a listener cannot be bound or an actor fails to start.
pub async fn start_node_with(
    config: NodeConfig,
    options: NodeOptions,
) -> anyhow::Result<RunningNode> {
    // The recorder must exist before the engine registers its metric handles.
    let prometheus = (config.admin.enabled && config.admin.metrics)
        .then(metrics::install_prometheus_recorder)
        .flatten();
    let mut broker_config = config.broker.clone();
    broker_config.storage = storage::open_store(&config.storage, &config.data_dir)?;
    let broker = Broker::start(broker_config)
        .await
        .context("failed to start the broker engine")?;
    let listener = TcpListener::bind(config.tcp_listen)
        .await
        .with_context(|| format!("failed to bind the mqtt listener on {}", config.tcp_listen))?;
    let mqtt_addr = listener
        .local_addr()
        .context("listener has no local address")?;
    tracing::info!(node_id = %config.node_id, %mqtt_addr, "mqtt listener bound");
    let readiness = Readiness::default();
    let admin_shutdown = CancellationToken::new();
    let mut admin_tasks = Vec::new();
    let mut admin_addr = None;
    if config.admin.enabled {
        let admin_listener = TcpListener::bind(config.admin.bind)
            .await
            .with_context(|| {
                format!(
                    "failed to bind the admin listener on {} (admin.bind)",
                    config.admin.bind
                )
            })?;
        let addr = admin_listener
            .local_addr()
            .context("admin listener has no local address")?;
        tracing::info!(admin_addr = %addr, token = config.admin.token.is_some(), "admin listener bound");
        admin_addr = Some(addr);
        let args = admin::AdminArgs {
            broker: broker.clone(),
            config: config.clone(),
            readiness: readiness.clone(),
            prometheus: prometheus.clone(),
            log_control: options.log_control,
            mqtt_addr,
        };
        admin_tasks.push(tokio::spawn(admin::serve(
            admin_listener,
            args,
            admin_shutdown.clone(),
        )));
        if let Some(interval) = config.admin.sys_interval {
            admin_tasks.push(tokio::spawn(sys_topics::run(
                broker.clone(),
                prometheus,
                interval,
                admin_shutdown.clone(),
            )));
        }
    }
    let accept_shutdown = CancellationToken::new();
    let accept_task = tokio::spawn({
        let broker = broker.clone();
        let shutdown = accept_shutdown.clone();
        async move { broker.serve(listener, shutdown).await }
    });
    readiness.set(true);
    Ok(RunningNode {
        mqtt_addr,
        admin_addr,
        broker,
        readiness,
        config,
        accept_shutdown,
        accept_tasks: vec![accept_task],
        admin_shutdown,
        admin_tasks,
    })
}

impl RunningNode {
    /// Runs the ordered shutdown: readiness false, stop accepting, DISCONNECT 0x8B to every
    /// client, wait for the connections to close (bounded by `shutdown.drain_timeout_ms`),
    /// then stop the admin listener (which answered `/readyz` 503 throughout).
    pub async fn shutdown(self) {
        self.readiness.set(false);
        tracing::info!("shutdown: not ready; no longer accepting connections");
        self.accept_shutdown.cancel();
        for task in self.accept_tasks {
            let _ = task.await;
        }
        tracing::info!("shutdown: disconnecting clients");
        self.broker.shutdown(self.config.drain_timeout).await;
        tracing::info!("shutdown: stopping the admin listener");
        self.admin_shutdown.cancel();
        for mut task in self.admin_tasks {
            // An HTTP client holding a request open must not hold up the exit.
            if tokio::time::timeout(ADMIN_STOP_TIMEOUT, &mut task)
                .await
                .is_err()
            {
                tracing::warn!("admin listener did not stop in time; aborting it");
                task.abort();
            }
        }
        tracing::info!("shutdown complete");
    }
}
