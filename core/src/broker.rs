//! The broker of one node: wiring of router and registry, the accept loop, shutdown.

use std::{
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use ractor::Actor;

use crate::{
    codec::ReasonCode,
    config::{BrokerConfig, SessionLimits},
    message::Message,
    metrics::BrokerMetrics,
    registry::{RegistryContext, SessionRegistry},
    router::Router,
    session::run_connection,
    supervisor::BrokerSupervisor,
    transport::ListenerId,
};

/// Errors starting the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// An actor failed to start.
    #[error("failed to start actor: {0}")]
    Spawn(#[from] ractor::SpawnErr),
}

pub(crate) struct BrokerInner {
    pub(crate) limits: Arc<SessionLimits>,
    pub(crate) router: Router,
    pub(crate) registry: SessionRegistry,
    pub(crate) metrics: BrokerMetrics,
    /// Bounds simultaneous connections: a permit is taken before `accept`.
    connection_limit: Arc<Semaphore>,
    /// Cancelled by the supervisor when a shard actor fails.
    fatal: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    connections: TaskTracker,
    /// Names of the listeners, indexed by [`ListenerId`]; index 0 is `default`.
    listeners: parking_lot::RwLock<Vec<Arc<str>>>,
}

/// One broker node's MQTT engine. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    pub(crate) inner: Arc<BrokerInner>,
}

impl Broker {
    /// Starts the topic shards and session registry.
    ///
    /// # Errors
    /// Returns [`BrokerError`] if an actor fails to start.
    pub async fn start(config: BrokerConfig) -> Result<Broker, BrokerError> {
        let limits = Arc::new(config.limits);
        let metrics = BrokerMetrics::register();
        let fatal = CancellationToken::new();
        let (supervisor, _join) = Actor::spawn(
            None,
            BrokerSupervisor {
                fatal: fatal.clone(),
            },
            (),
        )
        .await?;
        let (router, _shards) = Router::start(
            config.num_topic_shards.max(1),
            limits.clone(),
            metrics.clone(),
            supervisor.get_cell(),
        )
        .await?;
        let registry = SessionRegistry::start(
            config.num_session_shards.max(1),
            RegistryContext {
                router: router.clone(),
                metrics: metrics.clone(),
                next_session_id: AtomicU64::new(1),
                epoch: Instant::now(),
            },
            supervisor.get_cell(),
        )
        .await?;
        let inner = BrokerInner {
            limits,
            router,
            registry,
            metrics,
            connection_limit: Arc::new(Semaphore::new(config.max_connections)),
            fatal,
            connections: TaskTracker::new(),
            listeners: parking_lot::RwLock::new(vec![Arc::from("default")]),
        };
        Ok(Broker {
            inner: Arc::new(inner),
        })
    }

    /// Completes when an actor of the broker failed and the node must shut down (see
    /// `supervisor`); the node then exits non-zero so that it is restarted cleanly.
    pub async fn fatal_error(&self) {
        self.inner.fatal.cancelled().await;
    }

    /// Returns the router (topic shards).
    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// Returns the session registry.
    pub fn registry(&self) -> &SessionRegistry {
        &self.inner.registry
    }

    /// Returns the session limits in force.
    pub fn limits(&self) -> &SessionLimits {
        &self.inner.limits
    }

    /// Publishes a message as the broker itself (retained handling, then routing); returns the
    /// number of sessions it was queued for.
    pub fn publish(&self, message: Arc<Message>) -> usize {
        self.inner.router.publish(&message)
    }

    /// Registers a listener by name and returns its id (the same id for the same name).
    pub fn register_listener(&self, name: &str) -> ListenerId {
        let mut listeners = self.inner.listeners.write();
        if let Some(idx) = listeners.iter().position(|known| &**known == name) {
            return ListenerId(idx as u16);
        }
        listeners.push(Arc::from(name));
        let id = ListenerId((listeners.len() - 1) as u16);
        self.inner.metrics.register_listener(id, name);
        id
    }

    /// Returns the name of a registered listener.
    pub fn listener_name(&self, listener: ListenerId) -> Arc<str> {
        let listeners = self.inner.listeners.read();
        listeners
            .get(usize::from(listener.0))
            .cloned()
            .unwrap_or_else(|| Arc::from("unknown"))
    }

    /// Accepts MQTT connections on `listener` until `shutdown` is cancelled.
    ///
    /// Connections are closed at shutdown through the registry ([`Broker::shutdown`]), not
    /// through a token per connection, which would cost memory on every idle connection.
    pub async fn serve(&self, listener: TcpListener, shutdown: CancellationToken) {
        self.serve_as(listener, ListenerId::default(), shutdown)
            .await;
    }

    /// Like [`Broker::serve`], tagging connections with `listener_id`.
    pub async fn serve_as(
        &self,
        listener: TcpListener,
        listener_id: ListenerId,
        shutdown: CancellationToken,
    ) {
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = self.inner.connection_limit.clone().acquire_owned() => permit.expect("connection limit is never closed"),
            };
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = accept_with_backoff(&listener) => accepted,
            };
            let _ = stream.set_nodelay(true);
            let broker = self.clone();
            let fut = run_connection(broker, stream, peer, listener_id, Some(permit));
            self.inner.connections.spawn(fut);
        }
    }

    /// Closes every connection with DISCONNECT 0x8B (Server shutting down) and waits, at most
    /// `timeout`, for the connection tasks to finish.
    pub async fn shutdown(&self, timeout: Duration) {
        let num_kicked = self
            .inner
            .registry
            .kick_all(ReasonCode::ServerShuttingDown)
            .await;
        tracing::info!(num_kicked, "closing client connections");
        self.inner.connections.close();
        if tokio::time::timeout(timeout, self.inner.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.inner.connections.len(),
                "connections still open after shutdown timeout"
            );
        }
    }

    /// Returns the number of connection tasks running.
    pub fn num_connections(&self) -> usize {
        self.inner.connections.len()
    }
}

async fn accept_with_backoff(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut backoff = Duration::from_millis(5);
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                // EMFILE and friends: wait for connections to close instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
