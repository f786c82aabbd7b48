//! The broker of one node: wiring of router and registry, the accept loop, shutdown.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use ractor::Actor;

use crate::{
    codec::ReasonCode,
    config::{BrokerConfig, SessionLimits},
    message::Message,
    metrics::BrokerMetrics,
    persistence::{restore, Persistence},
    registry::{RegistryContext, SessionRegistry},
    router::Router,
    session::run_connection,
    storage::{RecoveryCounts, StorageError},
    supervisor::BrokerSupervisor,
    transport::{CertIdentityPolicy, ListenerId},
};

/// Errors starting the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// An actor failed to start.
    #[error("failed to start actor: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    /// The store could not be recovered or its writer not started.
    #[error("{0}")]
    Storage(#[from] crate::storage::StorageError),
}

pub(crate) struct BrokerInner {
    pub(crate) limits: Arc<SessionLimits>,
    pub(crate) router: Router,
    pub(crate) registry: SessionRegistry,
    pub(crate) metrics: BrokerMetrics,
    /// Durable storage; `None` keeps sessions in memory only.
    pub(crate) persistence: Option<Arc<Persistence>>,
    /// What recovery loaded at start-up.
    recovery_counts: Option<RecoveryCounts>,
    /// The authentication/authorization hook, if configured.
    pub(crate) auth: Option<Arc<dyn crate::auth::AuthProvider>>,
    /// Bounds simultaneous connections: a permit is taken before `accept`.
    connection_limit: Arc<Semaphore>,
    /// Cancelled by the supervisor when a shard actor fails.
    fatal: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    connections: TaskTracker,
    /// Names of the listeners, indexed by [`ListenerId`]; index 0 is `default`.
    listeners: parking_lot::RwLock<Vec<Arc<str>>>,
    /// Client-certificate identity policy of the listeners, indexed by [`ListenerId`]; missing
    /// entries use none.
    cert_identity: parking_lot::RwLock<Vec<CertIdentityPolicy>>,
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
        let mut recovered = None;
        let persistence = match config.storage {
            None => None,
            Some(storage) => {
                let started = std::time::Instant::now();
                let fatal = fatal.clone();
                let (persistence, state) =
                    tokio::task::spawn_blocking(move || Persistence::open(storage, fatal))
                        .await
                        .map_err(|error| StorageError::Backend {
                            engine: "recovery",
                            reason: error.to_string(),
                        })??;
                tracing::info!(
                    engine = persistence.engine(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    counts = ?state.counts,
                    "store recovered"
                );
                recovered = Some(state);
                Some(Arc::new(persistence))
            }
        };
        let next_session_id = recovered
            .as_ref()
            .and_then(|state| state.sessions.iter().map(|s| s.session.session_id).max())
            .unwrap_or(0)
            + 1;
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
                next_session_id: AtomicU64::new(next_session_id),
                epoch: Instant::now(),
                persistence: persistence.clone(),
            },
            supervisor.get_cell(),
        )
        .await?;
        let mut recovery_counts = None;
        if let (Some(persistence), Some(state)) = (&persistence, recovered) {
            let started = std::time::Instant::now();
            let counts = restore(persistence, &router, &registry, state).await;
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                sessions = counts.num_sessions,
                queued = counts.num_queued,
                retained = counts.num_retained,
                "sessions restored"
            );
            recovery_counts = Some(counts);
            tokio::spawn(persistence.clone().sweep_forever());
        }
        let inner = BrokerInner {
            limits,
            router,
            registry,
            metrics,
            persistence,
            recovery_counts,
            auth: config.auth.map(|hook| hook.0),
            connection_limit: Arc::new(Semaphore::new(config.max_connections)),
            fatal,
            connections: TaskTracker::new(),
            listeners: parking_lot::RwLock::new(vec![Arc::from("default")]),
            cert_identity: parking_lot::RwLock::default(),
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

    /// Returns the storage engine in use, `None` when sessions live in memory only.
    pub fn storage_engine(&self) -> Option<&'static str> {
        self.inner.persistence.as_ref().map(|p| p.engine())
    }

    /// Returns what recovery loaded at start-up (with storage).
    pub fn recovery_counts(&self) -> Option<RecoveryCounts> {
        self.inner.recovery_counts
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

    /// Sets how connections on `listener` use the identity of a verified client certificate.
    pub fn set_listener_cert_identity(&self, listener: ListenerId, policy: CertIdentityPolicy) {
        let mut policies = self.inner.cert_identity.write();
        let idx = usize::from(listener.0);
        if policies.len() <= idx {
            policies.resize(idx + 1, CertIdentityPolicy::default());
        }
        policies[idx] = policy;
    }

    /// Returns how connections on `listener` use the identity of a verified client certificate.
    pub fn listener_cert_identity(&self, listener: ListenerId) -> CertIdentityPolicy {
        let policies = self.inner.cert_identity.read();
        policies
            .get(usize::from(listener.0))
            .copied()
            .unwrap_or_default()
    }

    /// Waits for a slot under `engine.max_connections`; a listener takes one before `accept`
    /// and hands it to the connection task it spawns with [`Broker::spawn_connection_task`].
    pub async fn acquire_connection_slot(&self) -> OwnedSemaphorePermit {
        self.inner
            .connection_limit
            .clone()
            .acquire_owned()
            .await
            .expect("connection limit is never closed")
    }

    /// Runs `task` among the connection tasks that shutdown waits for: [`run_connection`] for
    /// an accepted connection, or a TLS handshake or WebSocket upgrade that spawns it.
    pub fn spawn_connection_task(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.inner.connections.spawn(task);
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
        if let Some(persistence) = &self.inner.persistence {
            persistence.close().await;
            tracing::info!("store flushed");
        }
    }

    /// Returns the number of connection tasks running.
    pub fn num_connections(&self) -> usize {
        self.inner.connections.len()
    }
}

/// Accepts the next connection; on an accept error (EMFILE and friends) waits with a growing
/// backoff (5 ms up to 1 s) instead of spinning. Shared by the node's listeners.
pub async fn accept_with_backoff(listener: &TcpListener) -> (TcpStream, SocketAddr) {
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
