//! The Starling node: configuration, listeners, wiring and shutdown around the core engine.
//!
//! # Layout
//! - [`config`]: the TOML configuration, defaults and environment overrides.
//! - [`start_node`]: binds the listeners and starts the engine; used by the binary and by tests.

pub mod config;

use std::net::SocketAddr;

use anyhow::Context;
use starling_core::Broker;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub use config::{load_node_config, NodeConfig, DEFAULT_CONFIG_TOML};

/// A started node.
pub struct RunningNode {
    /// Address the MQTT TCP listener is bound to (the real port when configured with port 0).
    pub mqtt_addr: SocketAddr,
    /// The engine.
    pub broker: Broker,
    config: NodeConfig,
    /// Stops the accept loops.
    accept_shutdown: CancellationToken,
    accept_tasks: Vec<JoinHandle<()>>,
}

/// Binds the listeners and starts the engine.
///
/// # Errors
/// Returns an error if a listener cannot be bound or an actor fails to start.
pub async fn start_node(config: NodeConfig) -> anyhow::Result<RunningNode> {
    let broker = Broker::start(config.broker.clone())
        .await
        .context("failed to start the broker engine")?;
    let listener = TcpListener::bind(config.tcp_listen)
        .await
        .with_context(|| format!("failed to bind the mqtt listener on {}", config.tcp_listen))?;
    let mqtt_addr = listener
        .local_addr()
        .context("listener has no local address")?;
    tracing::info!(node_id = %config.node_id, %mqtt_addr, "mqtt listener bound");
    let accept_shutdown = CancellationToken::new();
    let accept_task = tokio::spawn({
        let broker = broker.clone();
        let shutdown = accept_shutdown.clone();
        async move { broker.serve(listener, shutdown).await }
    });
    Ok(RunningNode {
        mqtt_addr,
        broker,
        config,
        accept_shutdown,
        accept_tasks: vec![accept_task],
    })
}

impl RunningNode {
    /// Runs the ordered shutdown: stop accepting, DISCONNECT 0x8B to every client, wait for the
    /// connections to close (bounded by `shutdown.drain_timeout_ms`).
    pub async fn shutdown(self) {
        tracing::info!("shutdown: no longer accepting connections");
        self.accept_shutdown.cancel();
        for task in self.accept_tasks {
            let _ = task.await;
        }
        tracing::info!("shutdown: disconnecting clients");
        self.broker.shutdown(self.config.drain_timeout).await;
        tracing::info!("shutdown complete");
    }
}
