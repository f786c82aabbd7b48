//! The Starling node: configuration, listeners, wiring and shutdown around the core engine.
//!
//! # Layout
//! - [`auth`]: authentication, ACLs, bans and per-client limits (the core's auth provider).
//! - [`config`]: the TOML configuration, defaults and environment overrides.
//! - [`start_node`]: binds the listeners and starts the engine; used by the binary and by tests.
//! - `listener`: the MQTT listeners (TCP, TLS, WebSocket, WebSocket over TLS), their limits,
//!   handshakes and TLS reloads.
//! - `admin`: the admin HTTP listener (probes, `/metrics`, REST API under `/api/v1`).
//! - [`metrics`]: the Prometheus recorder and the documented list of metrics.
//! - `sys_topics`: the `$SYS/broker/...` topics.
//! - [`logging`]: tracing setup and the runtime log-level control.
//! - [`ctl`]: `starling ctl`, the command-line client of the admin API.
//! - [`readiness`]: the flag behind `/readyz`.
//! - [`storage`]: opens the configured store (redb, sled, or none).

mod admin;
pub mod auth;
pub mod config;
pub mod ctl;
mod listener;
pub mod logging;
pub mod metrics;
pub mod readiness;
pub mod storage;
mod sys_topics;

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use starling_core::Broker;
use tokio::{net::TcpListener, task::JoinHandle};

use crate::listener::tls::TlsFiles;
use tokio_util::sync::CancellationToken;

pub use config::{load_node_config, NodeConfig, DEFAULT_CONFIG_TOML};
pub use logging::LogControl;
pub use readiness::Readiness;

/// Time the admin listener gets to finish its requests at the end of the shutdown.
const ADMIN_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A started node.
pub struct RunningNode {
    /// Address the `tcp` listener is bound to (the real port when configured with port 0);
    /// without a `tcp` listener, the address of the first listener.
    pub mqtt_addr: SocketAddr,
    /// Address every MQTT listener is bound to, by name.
    pub listener_addrs: BTreeMap<String, SocketAddr>,
    /// Address the admin HTTP listener is bound to; `None` when `admin.enabled = false`.
    pub admin_addr: Option<SocketAddr>,
    /// The engine.
    pub broker: Broker,
    /// True while the node accepts clients; the shutdown sequence turns it false first.
    pub readiness: Readiness,
    config: NodeConfig,
    /// The TLS configurations of the listeners, reloaded by [`RunningNode::reload_tls`].
    tls_files: Vec<Arc<TlsFiles>>,
    /// Stops the MQTT accept loops and the TLS file watchers.
    accept_shutdown: CancellationToken,
    accept_tasks: Vec<JoinHandle<()>>,
    /// Stops the admin listener and the `$SYS` publisher, last in the shutdown sequence.
    admin_shutdown: CancellationToken,
    admin_tasks: Vec<JoinHandle<()>>,
    /// The auth provider, if configured (its watcher stops with the node).
    auth: Option<std::sync::Arc<auth::NodeAuth>>,
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
    auth::register_metrics();
    let node_auth = auth::NodeAuth::build(&config.auth, config.broker.limits.max_topic_levels)
        .context("invalid authentication setup")?;
    let mut broker_config = config.broker.clone();
    broker_config.auth = node_auth.as_ref().map(auth::NodeAuth::hook);
    broker_config.storage = storage::open_store(&config.storage, &config.data_dir)?;
    let broker = Broker::start(broker_config)
        .await
        .context("failed to start the broker engine")?;
    if let Some(node_auth) = &node_auth {
        node_auth.spawn_watcher();
    }
    let listeners = listener::bind_all(&config.listeners).await?;
    let listener_addrs: BTreeMap<String, SocketAddr> = listeners
        .iter()
        .map(|bound| (bound.config.name.clone(), bound.local_addr))
        .collect();
    let mqtt_addr = listener_addrs
        .get(config::TCP_LISTENER_NAME)
        .or_else(|| listeners.first().map(|bound| &bound.local_addr))
        .copied()
        .context("no mqtt listener is configured")?;
    let admin_listeners = listeners
        .iter()
        .map(|bound| admin::ListenerInfo {
            name: bound.config.name.clone(),
            protocol: bound.config.protocol.label(),
            addr: bound.local_addr,
        })
        .collect();
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
            listeners: admin_listeners,
            auth: node_auth.clone(),
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
    let mut accept_tasks = Vec::new();
    let mut tls_files = Vec::new();
    for bound in listeners {
        if let Some(files) = &bound.tls {
            tls_files.push(files.clone());
            if let Some(interval) = files.reload_interval() {
                accept_tasks.push(tokio::spawn(listener::watch_files(
                    files.clone(),
                    interval,
                    accept_shutdown.clone(),
                )));
            }
        }
        accept_tasks.push(tokio::spawn(listener::serve(
            broker.clone(),
            bound,
            accept_shutdown.clone(),
        )));
    }
    readiness.set(true);
    Ok(RunningNode {
        mqtt_addr,
        listener_addrs,
        admin_addr,
        broker,
        readiness,
        config,
        tls_files,
        accept_shutdown,
        accept_tasks,
        admin_shutdown,
        admin_tasks,
        auth: node_auth,
    })
}

impl RunningNode {
    /// Returns the address the listener `name` is bound to.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listener_addrs.get(name).copied()
    }

    /// Reloads the certificates, keys, CA bundles and CRLs of every TLS listener (SIGHUP).
    /// New handshakes use the new files; open connections keep theirs. A listener whose files
    /// fail to load keeps its configuration; returns how many failed.
    pub async fn reload_tls(&self) -> usize {
        let files = self.tls_files.clone();
        tokio::task::spawn_blocking(move || listener::reload_all(&files))
            .await
            .unwrap_or(usize::MAX)
    }

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
        if let Some(auth) = &self.auth {
            auth.stop();
        }
        tracing::info!("shutdown complete");
    }
}
