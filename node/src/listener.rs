//! The MQTT listeners: binding, the accept loop with per-listener admission, and the TLS
//! handshake and WebSocket upgrade that turn an accepted socket into a `Transport` for the
//! connection task.
//!
//! - `admission`: per-listener connection cap and connect rate.
//! - `tls`: the TLS transport over rustls's unbuffered connection, and `TlsFiles`, the
//!   reloadable TLS configuration of a listener.
//! - `ws`: the WebSocket transport and the HTTP upgrade.
//! - `identity`: what the broker reads from verified certificates.
//!
//! Every accepted connection first takes a slot under the engine's `max_connections` (before
//! `accept`, so an exhausted node leaves clients in the backlog), then a slot of its listener
//! (refused at once when over the listener's limits). Handshakes run in the connection's own
//! task, bounded by the listener's `handshake_timeout_ms` and cut short by shutdown, so a slow
//! client never holds up the accept loop.

mod admission;
mod identity;
pub(crate) mod tls;
pub(crate) mod ws;

use std::{
    future::Future,
    io,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use anyhow::Context as _;
use bytes::BytesMut;
use starling_core::{
    session::run_connection,
    transport::{ListenerId, PeerCertificate, Transport},
    Broker,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::OwnedSemaphorePermit,
};
use tokio_util::sync::CancellationToken;

use self::{
    admission::{Admission, ListenerCounters, ListenerSlot},
    tls::TlsFiles,
};
use crate::config::{ListenerConfig, ListenerProtocol};

/// A listener bound to its address, with its TLS files loaded.
pub(crate) struct BoundListener {
    pub(crate) config: ListenerConfig,
    /// The address bound (the real port when configured with port 0).
    pub(crate) local_addr: SocketAddr,
    tcp: TcpListener,
    /// The TLS configuration (`tls` and `wss`), shared with the reload triggers.
    pub(crate) tls: Option<Arc<TlsFiles>>,
}

/// Loads the TLS files of every listener, then binds them all.
///
/// # Errors
/// Names the listener whose files cannot be used or whose address cannot be bound.
pub(crate) async fn bind_all(configs: &[ListenerConfig]) -> anyhow::Result<Vec<BoundListener>> {
    let mut bound = Vec::with_capacity(configs.len());
    for config in configs {
        let tls = match &config.tls {
            Some(settings) => Some(Arc::new(TlsFiles::load(&config.name, settings)?)),
            None => None,
        };
        let tcp = TcpListener::bind(config.bind).await.with_context(|| {
            format!(
                "failed to bind the mqtt listener {} ({}) on {}",
                config.name,
                config.protocol.label(),
                config.bind
            )
        })?;
        let local_addr = tcp.local_addr().context("listener has no local address")?;
        tracing::info!(listener = %config.name, protocol = config.protocol.label(), addr = %local_addr, "mqtt listener bound");
        bound.push(BoundListener {
            config: config.clone(),
            local_addr,
            tcp,
            tls,
        });
    }
    Ok(bound)
}

/// What the handshakes of one listener need; shared by its connection tasks while they
/// handshake.
struct HandshakeContext {
    name: String,
    protocol: ListenerProtocol,
    timeout: Duration,
    tls: Option<Arc<TlsFiles>>,
    websocket_path: String,
    counters: Arc<ListenerCounters>,
    shutdown: CancellationToken,
}

/// Accepts the connections of one listener until `shutdown` is cancelled.
pub(crate) async fn serve(broker: Broker, listener: BoundListener, shutdown: CancellationToken) {
    let BoundListener {
        config, tcp, tls, ..
    } = listener;
    let listener_id = broker.register_listener(&config.name);
    if let Some(settings) = &config.tls {
        broker.set_listener_cert_identity(listener_id, settings.cert_identity);
    }
    let counters = ListenerCounters::register(&config.name);
    let mut admission = Admission::new(&config, counters.clone());
    let context = Arc::new(HandshakeContext {
        name: config.name.clone(),
        protocol: config.protocol,
        timeout: config.handshake_timeout,
        tls,
        websocket_path: config.websocket_path.clone().unwrap_or_default(),
        counters,
        shutdown: shutdown.clone(),
    });
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = broker.acquire_connection_slot() => slot,
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = starling_core::broker::accept_with_backoff(&tcp) => accepted,
        };
        let Some(listener_slot) = admission.admit() else {
            tracing::debug!(listener = %config.name, %peer, "connection refused by the listener's limits");
            continue;
        };
        let _ = stream.set_nodelay(true);
        if config.protocol == ListenerProtocol::Tcp {
            let transport = Admitted::new(stream, listener_slot);
            let task = run_connection(broker.clone(), transport, peer, listener_id, Some(slot));
            broker.spawn_connection_task(task);
        } else {
            let task = handshake_then_run(
                broker.clone(),
                context.clone(),
                stream,
                peer,
                listener_id,
                slot,
                listener_slot,
            );
            broker.spawn_connection_task(task);
        }
    }
}

/// A transport after its handshake.
enum Secured {
    Tls(tls::TlsTransport),
    Ws(ws::WsTransport<TcpStream>),
    Wss(ws::WsTransport<tls::TlsTransport>),
}

/// Why a handshake failed, as counted.
enum HandshakeFailure {
    Timeout,
    ClientCertificate(String),
    Tls(String),
    WebSocket(String),
    Shutdown,
}

/// Runs the TLS handshake and/or WebSocket upgrade, then hands the connection to a task of
/// its own: this task, with its handshake state and its copies of the arguments, is freed
/// rather than kept for the life of every connection.
async fn handshake_then_run(
    broker: Broker,
    context: Arc<HandshakeContext>,
    stream: TcpStream,
    peer: SocketAddr,
    listener_id: ListenerId,
    slot: OwnedSemaphorePermit,
    listener_slot: ListenerSlot,
) {
    let shutdown = context.shutdown.clone();
    let Some(secured) = handshake(context, stream, peer).await else {
        return;
    };
    if shutdown.is_cancelled() {
        return;
    }
    let slot = Some(slot);
    match secured {
        Secured::Tls(transport) => {
            let transport = Admitted::new(transport, listener_slot);
            let task = run_connection(broker.clone(), transport, peer, listener_id, slot);
            broker.spawn_connection_task(task);
        }
        Secured::Ws(transport) => {
            let transport = Admitted::new(transport, listener_slot);
            let task = run_connection(broker.clone(), transport, peer, listener_id, slot);
            broker.spawn_connection_task(task);
        }
        Secured::Wss(transport) => {
            let transport = Admitted::new(transport, listener_slot);
            let task = run_connection(broker.clone(), transport, peer, listener_id, slot);
            broker.spawn_connection_task(task);
        }
    }
}

async fn handshake(
    context: Arc<HandshakeContext>,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<Secured> {
    let outcome = tokio::select! {
        _ = context.shutdown.cancelled() => Err(HandshakeFailure::Shutdown),
        outcome = tokio::time::timeout(context.timeout, secure(&context, stream)) => {
            outcome.unwrap_or(Err(HandshakeFailure::Timeout))
        }
    };
    let counters = &context.counters;
    let (reason, detail) = match outcome {
        Ok(secured) => return Some(secured),
        Err(HandshakeFailure::Shutdown) => return None,
        Err(HandshakeFailure::Timeout) => {
            counters.handshake_timeouts.increment(1);
            ("timeout", String::new())
        }
        Err(HandshakeFailure::ClientCertificate(detail)) => {
            counters.handshake_client_certificate.increment(1);
            ("client_certificate", detail)
        }
        Err(HandshakeFailure::Tls(detail)) => {
            counters.handshake_tls.increment(1);
            ("tls", detail)
        }
        Err(HandshakeFailure::WebSocket(detail)) => {
            counters.handshake_websocket.increment(1);
            ("websocket", detail)
        }
    };
    // A refused client certificate is worth an operator's attention; scanners and dropped
    // connections are not.
    if reason == "client_certificate" {
        tracing::info!(listener = %context.name, %peer, reason, detail, "handshake failed");
    } else {
        tracing::debug!(listener = %context.name, %peer, reason, detail, "handshake failed");
    }
    None
}

async fn secure(
    context: &HandshakeContext,
    stream: TcpStream,
) -> Result<Secured, HandshakeFailure> {
    let tls_failure = |error: tls::HandshakeError| match error {
        tls::HandshakeError::ClientCertificate(_) => {
            HandshakeFailure::ClientCertificate(error.to_string())
        }
        error => HandshakeFailure::Tls(error.to_string()),
    };
    let ws_failure = |error: ws::UpgradeError| HandshakeFailure::WebSocket(error.to_string());
    let tls_config = || {
        context
            .tls
            .as_ref()
            .map(|files| files.server_config())
            .ok_or_else(|| HandshakeFailure::Tls("listener has no TLS configuration".to_string()))
    };
    match context.protocol {
        ListenerProtocol::Tls => {
            let transport = tls::accept(stream, tls_config()?)
                .await
                .map_err(tls_failure)?;
            tracing::debug!(listener = %context.name, version = ?transport.protocol_version(), "tls handshake done");
            Ok(Secured::Tls(transport))
        }
        ListenerProtocol::Ws => {
            let transport = ws::accept(stream, &context.websocket_path)
                .await
                .map_err(ws_failure)?;
            Ok(Secured::Ws(transport))
        }
        ListenerProtocol::Wss => {
            let transport = tls::accept(stream, tls_config()?)
                .await
                .map_err(tls_failure)?;
            let transport = ws::accept(transport, &context.websocket_path)
                .await
                .map_err(ws_failure)?;
            Ok(Secured::Wss(transport))
        }
        ListenerProtocol::Tcp => Err(HandshakeFailure::Tls(
            "plain TCP needs no handshake".to_string(),
        )),
    }
}

/// A transport that holds its listener slot, so the slot is released when the connection
/// task drops the transport (no extra state in the task).
struct Admitted<T> {
    inner: T,
    _slot: ListenerSlot,
}

impl<T> Admitted<T> {
    fn new(inner: T, slot: ListenerSlot) -> Admitted<T> {
        Admitted { inner, _slot: slot }
    }
}

impl<T: Transport> Transport for Admitted<T> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_read_ready(cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_write_ready(cx)
    }

    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.inner.readable()
    }

    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.inner.writable()
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        self.inner.try_read_buf(buf)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.inner.try_write(buf)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.inner.shutdown_write()
    }

    fn has_pending_output(&self) -> bool {
        self.inner.has_pending_output()
    }

    fn peer_certificate(&self) -> Option<&PeerCertificate> {
        self.inner.peer_certificate()
    }
}

/// Reloads the TLS files of every listener that has them (SIGHUP); returns how many
/// reloads failed.
pub(crate) fn reload_all(files: &[Arc<TlsFiles>]) -> usize {
    files.iter().filter(|files| !files.reload()).count()
}

/// Polls the TLS files of a listener for changes every `interval` until `shutdown`.
pub(crate) async fn watch_files(
    files: Arc<TlsFiles>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        // Reading and parsing PEM files blocks; it is small and rare, but off the runtime.
        let files = files.clone();
        let _ = tokio::task::spawn_blocking(move || files.reload_if_changed()).await;
    }
}
