//! The connection task: reads CONNECT, attaches to a session, then runs the session loop until
//! the connection closes, and finally parks, hands over or ends the session.

use std::{collections::HashMap, io, net::SocketAddr, sync::Arc, task::Poll};

use bytes::{Buf, BytesMut};
use bytestring::ByteString;
use tokio::{sync::oneshot, time::Instant};

use crate::{
    broker::Broker,
    codec::{
        decode_packet, ConnAck, ConnAckProperties, Connect, DecodeError, Disconnect,
        DisconnectProperties, LastWill, Packet, ProtocolVersion, QoS, ReasonCode,
    },
    message::{Message, SessionId, StoredRef},
    metrics::CloseReason,
    persistence::Persistence,
    registry::{discard_state, publish_will, OfflineNotice, PendingWill, RegisterOutcome},
    session::{durable::DurableGate, Control, OutboundState, SessionHandle, SessionState},
    storage::{records::WillRecord, WriteBatch},
    topic,
    transport::{ListenerId, Transport},
};

/// Bytes of unsent output after which the task stops reading and draining until the socket
/// drains: the per-connection outbound bound.
pub(super) const MAX_PENDING_WRITE_BYTES: usize = 64 * 1024;

/// Why a connection ends.
pub(super) enum Close {
    /// The client sent DISCONNECT; `publish_will` for reason 0x04.
    ClientDisconnect { publish_will: bool },
    /// EOF or a socket error.
    Network,
    /// The client broke the protocol: DISCONNECT with this reason code (MQTT 5), then close.
    Protocol(ReasonCode, &'static str),
    /// The broker closes the connection (keep alive timeout, shutdown, administrative action).
    Kicked(ReasonCode),
    /// A new connection takes the session over.
    Takeover {
        clean_start: bool,
        reply: oneshot::Sender<Box<SessionState>>,
    },
}

/// Per-connection state of an attached session (the session state itself is `state`).
pub(super) struct Connection<T> {
    pub(super) broker: Broker,
    pub(super) transport: T,
    pub(super) peer: crate::transport::PeerAddr,
    /// The listener the connection arrived on.
    pub(super) listener: ListenerId,
    pub(super) handle: SessionHandle,
    pub(super) state: Box<SessionState>,
    pub(super) epoch: u64,
    pub(super) version: ProtocolVersion,
    /// 1.5 x keep alive in milliseconds; 0 disables the check.
    pub(super) keep_alive_grace_ms: u32,
    /// Read buffer: empty and unallocated while the connection is idle.
    pub(super) rbuf: BytesMut,
    /// Write buffer: empty and unallocated while nothing is pending.
    pub(super) wbuf: BytesMut,
    pub(super) client_receive_maximum: u16,
    /// The client's Maximum Packet Size (a four-byte integer in CONNECT).
    pub(super) client_max_packet_size: u32,
    pub(super) client_topic_alias_maximum: u16,
    pub(super) request_problem_information: bool,
    /// Topic aliases of this connection, allocated on first use.
    pub(super) aliases: Option<Box<TopicAliases>>,
    /// A publish waiting for room in full subscriber queues; reading stops meanwhile.
    pub(super) blocked: Option<Box<Blocked>>,
    pub(super) will: Option<Box<LastWill>>,
    /// Batches on their way to disk and the output waiting for them (with storage only).
    pub(super) gate: Option<Box<DurableGate>>,
    /// Authentication state; `None` (no allocation) when the broker has no auth provider.
    pub(super) auth: Option<Box<crate::auth::ConnectionAuth>>,
    /// The connection-limit slot, released when the connection ends.
    pub(super) permit: Option<ConnectionSlot>,
}

/// A connection-limit permit in 8 bytes instead of `OwnedSemaphorePermit`'s 16: holds one
/// permit of the semaphore and gives it back when dropped.
pub(super) struct ConnectionSlot(Arc<tokio::sync::Semaphore>);

impl ConnectionSlot {
    /// Takes over one permit (a connection holds one slot; any others are released now).
    fn from_permit(mut permit: tokio::sync::OwnedSemaphorePermit) -> ConnectionSlot {
        if permit.num_permits() > 1 {
            drop(permit.split(permit.num_permits() - 1));
        }
        let semaphore = permit.semaphore().clone();
        permit.forget();
        ConnectionSlot(semaphore)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.add_permits(1);
    }
}

/// How long a publisher waits for room in a full subscriber queue before the delivery is
/// dropped (and counted), and how often it retries meanwhile.
const BLOCKED_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);
const BLOCKED_RETRY: std::time::Duration = std::time::Duration::from_millis(2);

/// A publish held back by full subscriber queues (allocated only while blocked).
pub(super) struct Blocked {
    /// Deliveries not yet queued, with their sessions.
    pub(super) pending: Vec<(SessionHandle, crate::message::Delivery)>,
    /// The PUBACK/PUBREC to send once every delivery is queued.
    pub(super) ack: Option<Packet>,
    pub(super) give_up_at: Instant,
    retry: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Blocked {
    pub(super) fn new(
        pending: Vec<(SessionHandle, crate::message::Delivery)>,
        ack: Option<Packet>,
    ) -> Blocked {
        let now = Instant::now();
        Blocked {
            pending,
            ack,
            give_up_at: now + BLOCKED_PATIENCE,
            retry: Box::pin(tokio::time::sleep_until(now + BLOCKED_RETRY)),
        }
    }

    /// Pauses reading until `deadline` with nothing pending (publish rate throttling).
    pub(super) fn until(deadline: Instant) -> Blocked {
        Blocked {
            pending: Vec::new(),
            ack: None,
            give_up_at: deadline,
            retry: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    pub(super) fn rearm(&mut self, now: Instant) {
        self.retry.as_mut().reset(now + BLOCKED_RETRY);
    }
}

/// What woke the session loop.
enum LoopEvent {
    Notified,
    Durable(Result<(), crate::storage::StorageError>),
    RetryBlocked,
    Readable(io::Result<()>),
    Writable(io::Result<()>),
}

/// Topic aliases of one connection, in both directions.
#[derive(Default)]
pub(super) struct TopicAliases {
    /// Aliases the client defined for its PUBLISH packets.
    pub(super) inbound: HashMap<u16, ByteString>,
    /// Aliases the broker assigned, up to the client's Topic Alias Maximum.
    pub(super) outbound: HashMap<ByteString, u16>,
}

/// Runs one client connection from accept to close; `permit` (the connection-limit slot) is
/// released when it ends.
///
/// This future is what every idle connection's task holds, so it holds almost nothing: the
/// connect phase owns the arguments and is boxed (an async block keeps room for every value it
/// captures for its whole life), and the attached connection is one `Box<Connection>`. Tokio
/// aligns task cells to 128 bytes, so each 128 bytes saved here is 128 bytes per connection
/// (`tests::connection_future_fits_the_idle_budget`).
pub fn run_connection<T: Transport>(
    broker: Broker,
    transport: T,
    peer: SocketAddr,
    listener: ListenerId,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> impl std::future::Future<Output = ()> + Send {
    let opening = Box::pin(open_connection(broker, transport, peer, listener, permit));
    async move {
        if let Some(connection) = opening.await {
            connection.run().await;
        }
    }
}

/// Counts a connection that ended (opened ones are counted in `open_connection`).
fn count_closed(broker: &Broker, listener: ListenerId, close_reason: CloseReason) {
    let metrics = &broker.inner.metrics;
    metrics.connections_closed.increment(close_reason);
    metrics.connections_current.decrement(1.0);
    metrics.listener_connection_closed(listener);
}

/// The connect phase: reads CONNECT and attaches the session; `None` when the connection
/// ended before that (counted, and its permit released).
async fn open_connection<T: Transport>(
    broker: Broker,
    transport: T,
    peer: SocketAddr,
    listener: ListenerId,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Option<Box<Connection<T>>> {
    let metrics = &broker.inner.metrics;
    metrics.connections_opened.increment(1);
    metrics.connections_current.increment(1.0);
    metrics.listener_connection_opened(listener);
    let connect_timeout = broker.inner.limits.connect_timeout;
    let max_packet_size = broker.inner.limits.max_packet_size as usize;
    // Boxed: the connect read and the linger are large futures, needed only on their path.
    let close_reason = match Box::pin(tokio::time::timeout(
        connect_timeout,
        read_connect(&transport, max_packet_size),
    ))
    .await
    {
        Err(_elapsed) => {
            tracing::debug!(%peer, "no CONNECT within the connect timeout");
            CloseReason::ConnectTimeout
        }
        Ok(Err(ConnectReadError::Io(error))) => {
            tracing::debug!(%peer, %error, "connection closed before CONNECT");
            CloseReason::ConnectionLost
        }
        Ok(Err(ConnectReadError::Decode(error))) => {
            broker.inner.metrics.protocol_errors.increment(1);
            tracing::debug!(%peer, %error, "invalid CONNECT");
            if let DecodeError::UnsupportedProtocolVersion(_) | DecodeError::InvalidProtocolName =
                error
            {
                // [MQTT-3.1.2-2] CONNACK 0x01 (unacceptable protocol version), then close.
                let out = encode_packet(
                    &Packet::ConnAck(ConnAck {
                        session_present: false,
                        reason_code: ReasonCode::UnsupportedProtocolVersion,
                        properties: ConnAckProperties::default(),
                    }),
                    ProtocolVersion::V3_1_1,
                );
                Box::pin(linger_close(&transport, &out)).await;
            }
            CloseReason::ConnectInvalid
        }
        Ok(Ok((connect, rbuf))) => {
            let attached = Box::pin(attach(
                broker.clone(),
                transport,
                peer,
                listener,
                connect,
                rbuf,
            ))
            .await;
            match attached {
                Some(mut connection) => {
                    connection.permit = permit.map(ConnectionSlot::from_permit);
                    return Some(connection);
                }
                None => CloseReason::ConnectRefused,
            }
        }
    };
    count_closed(&broker, listener, close_reason);
    drop(permit);
    None
}

/// Encodes one packet into a fresh buffer (keeps the packet out of the caller's async state).
fn encode_packet(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    packet.encode(version, &mut out);
    out
}

enum ConnectReadError {
    Io(io::Error),
    Decode(DecodeError),
}

async fn read_connect<T: Transport>(
    transport: &T,
    max_packet_size: usize,
) -> Result<(Box<Connect>, BytesMut), ConnectReadError> {
    let mut rbuf = BytesMut::new();
    loop {
        transport.readable().await.map_err(ConnectReadError::Io)?;
        rbuf.reserve(512);
        match transport.try_read_buf(&mut rbuf) {
            Ok(0) => return Err(ConnectReadError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(ConnectReadError::Io(error)),
        }
        match decode_packet(&mut rbuf, max_packet_size, None) {
            Ok(Some(Packet::Connect(connect))) => return Ok((connect, rbuf)),
            Ok(Some(_)) => {
                return Err(ConnectReadError::Decode(DecodeError::Protocol(
                    "first packet must be CONNECT",
                )))
            }
            Ok(None) => {}
            Err(error) => return Err(ConnectReadError::Decode(error)),
        }
    }
}

pub(super) async fn write_all<T: Transport>(transport: &T, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        transport.writable().await?;
        match transport.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// How long a closing connection keeps reading (and discarding) after its last packet.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Writes `pending`, sends FIN, then reads and discards until the client closes or `LINGER`
/// passes. Closing with unread input would make the kernel send RST, which can destroy the
/// DISCONNECT or CONNACK still on its way to the client.
async fn linger_close<T: Transport>(transport: &T, pending: &[u8]) {
    let _ = tokio::time::timeout(LINGER, async {
        if write_all(transport, pending).await.is_err() || transport.shutdown_write().is_err() {
            return;
        }
        let mut discard = BytesMut::new();
        loop {
            if transport.readable().await.is_err() {
                return;
            }
            discard.clear();
            discard.reserve(4096);
            match transport.try_read_buf(&mut discard) {
                Ok(0) => return,
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

/// Refuses a CONNECT with `reason_code` and closes.
pub(super) async fn refuse<T: Transport>(
    transport: &T,
    version: ProtocolVersion,
    reason_code: ReasonCode,
    reason: &'static str,
) {
    let mut properties = ConnAckProperties::default();
    if version.is_v5() {
        properties.reason_string = Some(ByteString::from_static(reason));
    }
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code,
        properties,
    });
    let mut out = BytesMut::new();
    connack.encode(version, &mut out);
    linger_close(transport, &out).await;
}

/// Validates CONNECT, registers the client and takes its session; sends CONNACK.
async fn attach<T: Transport>(
    broker: Broker,
    transport: T,
    peer: SocketAddr,
    listener: ListenerId,
    connect: Box<Connect>,
    mut rbuf: BytesMut,
) -> Option<Box<Connection<T>>> {
    let limits = broker.inner.limits.clone();
    let version = connect.protocol;
    let connect = *connect;
    // Client identifier.
    let (client_id, assigned) = if connect.client_id.is_empty() {
        // [MQTT-3.1.3-8] 3.1.1 refuses an empty id with a persistent session; 3.1 always does.
        if version == ProtocolVersion::V3_1
            || (version == ProtocolVersion::V3_1_1 && !connect.clean_start)
        {
            refuse(
                &transport,
                version,
                ReasonCode::ClientIdentifierNotValid,
                "empty client identifier",
            )
            .await;
            return None;
        }
        let generated = format!("starling-{:016x}", rand::random::<u64>());
        (ByteString::from(generated), version.is_v5())
    } else {
        // Owned copy: never pin the read buffer for the life of the session.
        (ByteString::from(String::from(&*connect.client_id)), false)
    };
    // Mutual TLS: the listener may bind the client id to the certificate's identity.
    let (client_id, assigned) = match broker
        .listener_cert_identity(listener)
        .client_id(transport.peer_certificate(), &connect.client_id)
    {
        Ok(None) => (client_id, assigned),
        Ok(Some(identity)) => (
            ByteString::from(identity),
            version.is_v5() && connect.client_id.is_empty(),
        ),
        Err(refusal) => {
            refuse(&transport, version, refusal.reason_code(), refusal.reason()).await;
            return None;
        }
    };
    let attempt = super::auth_flow::ConnectAttempt {
        broker: &broker,
        transport: &transport,
        peer,
        listener,
        connect: &connect,
        client_id: &client_id,
    };
    let authenticated = super::auth_flow::authenticate_connect(&attempt, &mut rbuf).await?;
    if let Some(will) = &connect.last_will {
        if topic::validate_topic_name(&will.topic, limits.max_topic_levels).is_err() {
            refuse(
                &transport,
                version,
                ReasonCode::TopicNameInvalid,
                "invalid will topic",
            )
            .await;
            return None;
        }
        if will.qos > limits.maximum_qos {
            refuse(
                &transport,
                version,
                ReasonCode::QoSNotSupported,
                "will qos not supported",
            )
            .await;
            return None;
        }
        if will.retain && !limits.retain_available {
            refuse(
                &transport,
                version,
                ReasonCode::RetainNotSupported,
                "retain not supported",
            )
            .await;
            return None;
        }
    }
    // Keep alive: MQTT 5 clients can be told a different one with Server Keep Alive.
    let mut keep_alive = connect.keep_alive;
    let mut server_keep_alive = None;
    if version.is_v5() {
        if keep_alive > limits.max_keep_alive {
            keep_alive = limits.max_keep_alive;
            server_keep_alive = Some(keep_alive);
        } else if keep_alive == 0 {
            if let Some(min_keep_alive) = limits.min_keep_alive {
                keep_alive = min_keep_alive;
                server_keep_alive = Some(keep_alive);
            }
        }
    }
    // Session expiry: MQTT 3.x persistent sessions last up to the configured maximum.
    let requested_expiry = if version.is_v5() {
        connect.properties.session_expiry_interval.unwrap_or(0)
    } else if connect.clean_start {
        0
    } else {
        u32::MAX
    };
    let session_expiry_secs = requested_expiry.min(limits.max_session_expiry_secs);

    let registry = broker.inner.registry.clone();
    let mut outcome = match registry
        .register(client_id.clone(), connect.clean_start, version)
        .await
    {
        Ok(outcome) => outcome,
        Err(error) => {
            tracing::error!(%client_id, %error, "session registry unavailable");
            refuse(
                &transport,
                version,
                ReasonCode::ServerUnavailable,
                "session registry unavailable",
            )
            .await;
            return None;
        }
    };
    if let Some(discarded) = &outcome.discarded {
        // Clean start replaces an existing session: take it from its connection, then drop it.
        if discarded.is_online() {
            broker.inner.metrics.sessions_taken_over.increment(1);
        }
        if let Some(mut old_state) = discarded.acquire(true).await {
            discard_state(&broker.inner.router, &mut old_state);
        }
        discarded.end();
    }
    if outcome.session_present {
        broker
            .inner
            .metrics
            .sessions_taken_over
            .increment(u64::from(outcome.session.is_online()));
    }
    let mut acquired = outcome.session.acquire(connect.clean_start).await;
    if acquired.is_none() && outcome.session_present && !outcome.session.is_online() {
        // The session to resume ended (expiry 0) between its close and this CONNECT, so its
        // registry entry is stale: no session exists any more, so start a new one.
        if let Ok(fresh) = registry.register(client_id.clone(), true, version).await {
            outcome = fresh;
            acquired = outcome.session.acquire(true).await;
        }
    }
    let Some(mut state) = acquired else {
        refuse(
            &transport,
            version,
            ReasonCode::ServerUnavailable,
            "session unavailable, retry",
        )
        .await;
        return None;
    };
    state.protocol = version;
    state.session_expiry_secs = session_expiry_secs;

    let mut properties = ConnAckProperties::default();
    if version.is_v5() {
        if session_expiry_secs != requested_expiry {
            properties.session_expiry_interval = Some(session_expiry_secs);
        }
        if limits.receive_maximum != u16::MAX {
            properties.receive_maximum = Some(limits.receive_maximum);
        }
        properties.maximum_packet_size = Some(limits.max_packet_size);
        if limits.topic_alias_maximum > 0 {
            properties.topic_alias_maximum = Some(limits.topic_alias_maximum);
        }
        if limits.maximum_qos < QoS::ExactlyOnce {
            properties.maximum_qos = Some(limits.maximum_qos);
        }
        if !limits.retain_available {
            properties.retain_available = Some(false);
        }
        if assigned {
            properties.assigned_client_identifier = Some(client_id.clone());
        }
        properties.server_keep_alive = server_keep_alive;
        properties.authentication_method = authenticated.method;
        properties.authentication_data = authenticated.data;
    }
    let connack = Packet::ConnAck(ConnAck {
        session_present: outcome.session_present,
        reason_code: ReasonCode::Success,
        properties,
    });
    let mut wbuf = BytesMut::new();
    connack.encode(version, &mut wbuf);

    let last_will = connect.last_will.map(|will| {
        Box::new(LastWill {
            topic: ByteString::from(String::from(&*will.topic)),
            payload: bytes::Bytes::copy_from_slice(&will.payload),
            ..will
        })
    });
    if let Some(persistence) = broker.inner.persistence.clone() {
        let batch = stored_session_batch(
            &persistence,
            &outcome,
            &mut state,
            session_expiry_secs,
            last_will.as_deref(),
        );
        if !batch.is_empty() && persistence.commit(batch).await.is_err() {
            refuse(
                &transport,
                version,
                ReasonCode::ServerUnavailable,
                "storage unavailable",
            )
            .await;
            return None;
        }
    }
    tracing::info!(%client_id, %peer, ?version, keep_alive, session_present = outcome.session_present, "client connected");
    registry.connection_attached(client_id.clone(), outcome.epoch, peer, version, keep_alive);
    let mut connection = Connection {
        broker,
        transport,
        peer: crate::transport::PeerAddr::from(peer),
        listener,
        handle: outcome.session,
        state,
        epoch: outcome.epoch,
        version,
        keep_alive_grace_ms: u32::from(keep_alive) * 1500,
        rbuf,
        wbuf,
        client_receive_maximum: connect.properties.receive_maximum.unwrap_or(u16::MAX),
        client_max_packet_size: connect.properties.maximum_packet_size.unwrap_or(u32::MAX),
        client_topic_alias_maximum: connect.properties.topic_alias_maximum.unwrap_or(0),
        request_problem_information: connect
            .properties
            .request_problem_information
            .unwrap_or(true),
        aliases: None,
        blocked: None,
        will: last_will,
        gate: None,
        auth: authenticated.auth,
        permit: None,
    };
    connection.auth_attached();
    connection.touch_keep_alive();
    connection.resend_inflight();
    Some(Box::new(connection))
}

/// True when the next packet in `rbuf` is a QoS 1 PUBLISH without RETAIN (or not there yet):
/// one that [`Connection::route_durably`] defers behind the pending batch, so the deferred
/// publishes before it need not be released first.
fn defers_behind_batch(rbuf: &[u8]) -> bool {
    rbuf.first()
        .is_none_or(|&first_byte| first_byte & 0xF7 == 0x32)
}

impl<T: Transport> Connection<T> {
    /// Runs the session loop, then settles the session and counts the close.
    async fn run(mut self: Box<Self>) {
        let close = match self.process_buffered() {
            Ok(()) => self.event_loop().await,
            Err(close) => close,
        };
        Box::pin(self.finish(close)).await
    }

    async fn event_loop(&mut self) -> Close {
        loop {
            if let Err(close) = self.submit_pending().and_then(|()| self.flush()) {
                return close;
            }
            self.drain_mailbox();
            if let Err(close) = self.submit_pending().and_then(|()| self.flush()) {
                return close;
            }
            // Readiness is polled in place (no stored futures), which keeps the idle task small.
            let want_read = self.wbuf.len() < MAX_PENDING_WRITE_BYTES
                && self.blocked.is_none()
                && !self.gate_is_full();
            let want_write = self.releasable_len() > 0 || self.transport.has_pending_output();
            let event = std::future::poll_fn(|cx| {
                if self.handle.poll_notified(cx).is_ready() {
                    return Poll::Ready(LoopEvent::Notified);
                }
                if let Poll::Ready(outcome) = self.poll_gate(cx) {
                    return Poll::Ready(LoopEvent::Durable(outcome));
                }
                if let Some(blocked) = self.blocked.as_mut() {
                    if std::future::Future::poll(blocked.retry.as_mut(), cx).is_ready() {
                        return Poll::Ready(LoopEvent::RetryBlocked);
                    }
                }
                if want_write {
                    if let Poll::Ready(ready) = self.transport.poll_write_ready(cx) {
                        return Poll::Ready(LoopEvent::Writable(ready));
                    }
                }
                if want_read {
                    if let Poll::Ready(ready) = self.transport.poll_read_ready(cx) {
                        return Poll::Ready(LoopEvent::Readable(ready));
                    }
                }
                Poll::Pending
            })
            .await;
            let result = match event {
                LoopEvent::Notified => self.on_notified(),
                LoopEvent::Durable(Ok(())) => Ok(()),
                LoopEvent::Durable(Err(error)) => {
                    if let Some(persistence) = &self.broker.inner.persistence {
                        persistence.failed(&error);
                    }
                    Err(Close::Kicked(ReasonCode::ServerUnavailable))
                }
                LoopEvent::RetryBlocked => self.retry_blocked(),
                LoopEvent::Writable(Ok(())) => Ok(()),
                LoopEvent::Readable(Ok(())) => self.on_readable(),
                LoopEvent::Writable(Err(_)) | LoopEvent::Readable(Err(_)) => Err(Close::Network),
            };
            if let Err(close) = result {
                return close;
            }
        }
    }

    fn on_notified(&mut self) -> Result<(), Close> {
        match self.handle.take_control() {
            Some(Control::Takeover { clean_start, reply }) => {
                Err(Close::Takeover { clean_start, reply })
            }
            Some(Control::Kick(reason_code)) => Err(Close::Kicked(reason_code)),
            None => Ok(()),
        }
    }

    fn on_readable(&mut self) -> Result<(), Close> {
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(4096);
        }
        match self.transport.try_read_buf(&mut self.rbuf) {
            Ok(0) => return Err(Close::Network),
            Ok(num_bytes) => {
                self.broker
                    .inner
                    .metrics
                    .bytes_received
                    .increment(num_bytes as u64);
                self.touch_keep_alive();
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(Close::Network),
        }
        self.process_buffered()
    }

    /// Decodes and handles every complete packet in the read buffer.
    pub(super) fn process_buffered(&mut self) -> Result<(), Close> {
        let max_packet_size = self.broker.inner.limits.max_packet_size as usize;
        loop {
            if self.blocked.is_some() {
                // A held publish must be settled before the next packet is handled.
                break;
            }
            if self.has_deferred() && !defers_behind_batch(&self.rbuf) {
                // Any other packet is handled only after the deferred publishes are out.
                self.release_deferred()?;
                continue;
            }
            match decode_packet(&mut self.rbuf, max_packet_size, Some(self.version)) {
                Ok(Some(packet)) => self.handle_packet(packet)?,
                Ok(None) => break,
                Err(error) => {
                    self.broker.inner.metrics.protocol_errors.increment(1);
                    if error.reason_code() == ReasonCode::PacketTooLarge {
                        let security = &self.broker.inner.metrics.security;
                        security.limit_exceeded(crate::auth::LimitKind::PacketSize);
                    }
                    tracing::debug!(client_id = %self.handle.client_id(), %error, "malformed packet");
                    return Err(Close::Protocol(
                        error.reason_code(),
                        "malformed or invalid packet",
                    ));
                }
            }
            if self.wbuf.len() >= MAX_PENDING_WRITE_BYTES {
                // Stop decoding until the client reads what we owe it.
                break;
            }
        }
        if self.rbuf.is_empty() {
            // Release the buffer so an idle connection holds no read memory.
            self.rbuf = BytesMut::new();
        }
        self.release_deferred()
    }

    pub(super) fn touch_keep_alive(&self) {
        if self.keep_alive_grace_ms == 0 {
            return;
        }
        let now_ms = Instant::now()
            .duration_since(self.broker.inner.registry.epoch())
            .as_millis() as u64;
        self.handle
            .set_keep_alive_deadline_ms(now_ms + u64::from(self.keep_alive_grace_ms));
    }

    /// Writes what the socket takes now (up to output still waiting for a durable write);
    /// releases the buffer once empty.
    fn flush(&mut self) -> Result<(), Close> {
        loop {
            let releasable = self.releasable_len();
            if releasable == 0 {
                break;
            }
            match self.transport.try_write(&self.wbuf[..releasable]) {
                Ok(0) => return Err(Close::Network),
                Ok(num_bytes) => {
                    self.broker
                        .inner
                        .metrics
                        .bytes_sent
                        .increment(num_bytes as u64);
                    self.wbuf.advance(num_bytes);
                    self.gate_written(num_bytes);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(_) => return Err(Close::Network),
            }
        }
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
        }
        Ok(())
    }

    /// Encodes a packet into the write buffer, honouring the client's Maximum Packet Size by
    /// dropping the reason string and user properties first (MQTT 5.0 section 3.1.2.11.4).
    pub(super) fn write_packet(&mut self, mut packet: Packet) {
        // [MQTT-3.1.2-29] without Request Problem Information, only PUBLISH, CONNACK and
        // DISCONNECT may carry a reason string or user properties.
        if !self.request_problem_information
            && !matches!(
                packet,
                Packet::Publish(_) | Packet::ConnAck(_) | Packet::Disconnect(_)
            )
        {
            strip_optional_properties(&mut packet);
        }
        if self.version.is_v5()
            && packet.encoded_len(self.version) > self.client_max_packet_size as usize
        {
            strip_optional_properties(&mut packet);
            if packet.encoded_len(self.version) > self.client_max_packet_size as usize {
                return;
            }
        }
        packet.encode(self.version, &mut self.wbuf);
    }

    /// Queues DISCONNECT (MQTT 5 only) behind what is still buffered.
    fn queue_disconnect(&mut self, reason_code: ReasonCode, reason: Option<&'static str>) {
        if self.version.is_v5() {
            let mut properties = DisconnectProperties::default();
            if let Some(reason) = reason {
                properties.reason_string = Some(ByteString::from_static(reason));
            }
            self.write_packet(Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            }));
        }
    }

    /// Settles the session after the connection loop ended (hand over, park or end it, and
    /// publish or schedule the will), then closes the socket and counts the close.
    async fn finish(mut self, close: Close) {
        self.auth_detached();
        let client_id = self.handle.client_id().clone();
        let mut publish_will_now = true;
        let mut takeover = None;
        let mut linger = true;
        // One info line per closed connection: client id, peer, reason code (None: no packet).
        let (close_reason, reason_code, detail) = match close {
            Close::ClientDisconnect { publish_will } => {
                publish_will_now = publish_will;
                if publish_will {
                    (
                        CloseReason::ClientDisconnectWithWill,
                        Some(ReasonCode::DisconnectWithWillMessage),
                        "client disconnected",
                    )
                } else {
                    (
                        CloseReason::ClientDisconnect,
                        Some(ReasonCode::NORMAL_DISCONNECTION),
                        "client disconnected",
                    )
                }
            }
            Close::Network => {
                linger = false;
                (CloseReason::ConnectionLost, None, "connection lost")
            }
            Close::Protocol(reason_code, reason) => {
                self.queue_disconnect(reason_code, Some(reason));
                (CloseReason::ProtocolError, Some(reason_code), reason)
            }
            Close::Kicked(reason_code) => {
                self.queue_disconnect(reason_code, None);
                (
                    CloseReason::from_server_reason_code(reason_code),
                    Some(reason_code),
                    "closed by the broker",
                )
            }
            Close::Takeover { clean_start, reply } => {
                self.queue_disconnect(ReasonCode::SessionTakenOver, None);
                takeover = Some((clean_start, reply));
                (
                    CloseReason::SessionTakenOver,
                    Some(ReasonCode::SessionTakenOver),
                    "session taken over",
                )
            }
        };
        tracing::info!(
            %client_id,
            peer = %self.peer,
            listener = %self.broker.listener_name(self.listener),
            reason = close_reason.label(),
            reason_code = reason_code.map(|code| format!("0x{:02X}", code.as_u8())),
            detail,
            "client connection closed"
        );
        // Output that waits for a durable write goes out only once it is durable.
        self.settle_gate().await;
        let now = Instant::now();
        let will = if publish_will_now {
            self.will.take()
        } else {
            None
        };
        let will_message = will.map(|will| {
            let delay = will.properties.will_delay_interval.unwrap_or(0);
            (will_to_message(*will, self.state.id, now), delay)
        });
        let Connection {
            state,
            handle,
            epoch,
            broker,
            transport,
            wbuf,
            listener,
            permit,
            ..
        } = self;
        // The session is settled before the socket lingers, so a taking-over connection never
        // waits for the old client to read its DISCONNECT.
        settle_session(
            &broker,
            client_id,
            state,
            &handle,
            epoch,
            will_message,
            takeover,
            now,
        );
        if linger {
            linger_close(&transport, &wbuf).await;
        }
        count_closed(&broker, listener, close_reason);
        drop(permit);
    }

    /// Resends in-flight messages of a resumed session [MQTT-4.4.0-1].
    fn resend_inflight(&mut self) {
        if self.state.outbound.is_empty() {
            return;
        }
        let now = Instant::now();
        let outbound: Vec<_> = self.state.outbound.iter().cloned().collect();
        for entry in outbound {
            match entry.state {
                OutboundState::Published => {
                    // Already in flight: resent even if it expired meanwhile, with at least 1 s left.
                    let expiry = entry
                        .delivery
                        .message
                        .remaining_expiry(now)
                        .unwrap_or(Some(1));
                    let publish =
                        self.build_publish(&entry.delivery, Some(entry.packet_id), expiry, true);
                    self.write_packet(Packet::Publish(publish));
                }
                OutboundState::Released => self.write_packet(Packet::PubRel(crate::codec::Ack {
                    packet_id: entry.packet_id,
                    reason_code: ReasonCode::Success,
                    properties: Default::default(),
                })),
            }
        }
    }
}

fn strip_optional_properties(packet: &mut Packet) {
    match packet {
        Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubRel(ack) | Packet::PubComp(ack) => {
            ack.properties = Default::default();
        }
        Packet::SubAck(suback) => suback.properties = Default::default(),
        Packet::UnsubAck(unsuback) => unsuback.properties = Default::default(),
        Packet::Disconnect(disconnect) => {
            disconnect.properties.reason_string = None;
            disconnect.properties.user_properties.clear();
        }
        Packet::ConnAck(connack) => {
            connack.properties.reason_string = None;
            connack.properties.user_properties.clear();
        }
        _ => {}
    }
}

/// Builds the message a will publishes.
fn will_to_message(will: LastWill, publisher: SessionId, now: Instant) -> Arc<Message> {
    let properties = crate::codec::PublishProperties {
        payload_format_indicator: will.properties.payload_format_indicator,
        message_expiry_interval: will.properties.message_expiry_interval,
        topic_alias: None,
        response_topic: will.properties.response_topic,
        correlation_data: will.properties.correlation_data,
        user_properties: will.properties.user_properties,
        subscription_identifiers: Vec::new(),
        content_type: will.properties.content_type,
    };
    let expires_at = properties
        .message_expiry_interval
        .map(|secs| now + std::time::Duration::from_secs(u64::from(secs)));
    Arc::new(Message {
        topic: will.topic,
        payload: will.payload,
        qos: will.qos,
        retain: will.retain,
        properties,
        expires_at,
        publisher,
        // A will is not a PUBLISH the broker received: no delivery latency.
        received_at: crate::message::ReceivedAt::UNKNOWN,
    })
}

/// The writes that make a session's stored state match its CONNECT: a replaced session is
/// deleted, a session that outlives its connection is stored (with its will, no deadlines
/// while connected), and a stored session resumed with expiry 0 leaves the store.
fn stored_session_batch(
    persistence: &Persistence,
    outcome: &RegisterOutcome,
    state: &mut SessionState,
    session_expiry_secs: u32,
    will: Option<&LastWill>,
) -> WriteBatch {
    let handle = &outcome.session;
    let client_id = handle.client_id();
    let mut batch = WriteBatch::new();
    if let Some(discarded) = &outcome.discarded {
        if discarded.set_persistent(false) {
            batch.delete_session_if(client_id, discarded.id().0);
        }
    }
    if session_expiry_secs > 0 {
        batch.put_session(&persistence.session_record(handle, session_expiry_secs, None));
        match will {
            Some(will) => {
                let message = will_to_message(will.clone(), state.id, Instant::now());
                batch.put_will(
                    client_id,
                    &WillRecord {
                        message: persistence.message_record(&message),
                        delay_secs: will.properties.will_delay_interval.unwrap_or(0),
                        publish_deadline_unix_ms: None,
                    },
                );
            }
            None => {
                batch.delete_will(client_id);
            }
        }
        handle.set_persistent(true);
    } else if handle.set_persistent(false) {
        batch.delete_session_if(client_id, handle.id().0);
        for outbound in state.outbound.iter_mut() {
            outbound.delivery.stored = StoredRef::default();
        }
        handle.forget_stored_queue();
    }
    batch
}

/// Records a parked session's expiry deadline and pending will in the store.
fn store_parked_session(
    persistence: &Persistence,
    handle: &SessionHandle,
    expiry_secs: u32,
    expires_at: Option<Instant>,
    pending_will: Option<&PendingWill>,
) {
    if !handle.is_persistent() {
        return;
    }
    let mut batch = WriteBatch::new();
    batch.put_session(&persistence.session_record(handle, expiry_secs, expires_at));
    match pending_will {
        Some(will) => {
            batch.put_will(
                handle.client_id(),
                &WillRecord {
                    message: persistence.message_record(&will.message),
                    delay_secs: 0,
                    publish_deadline_unix_ms: Some(persistence.unix_ms(will.publish_at)),
                },
            );
        }
        None => {
            batch.delete_will(handle.client_id());
        }
    }
    persistence.submit_detached(batch);
}

/// Hands the session to a taking-over connection, ends it, or parks it with its expiry and
/// pending will registered.
#[allow(clippy::too_many_arguments)]
fn settle_session(
    broker: &Broker,
    client_id: ByteString,
    mut state: Box<SessionState>,
    handle: &SessionHandle,
    epoch: u64,
    will_message: Option<(Arc<Message>, u32)>,
    takeover: Option<(bool, oneshot::Sender<Box<SessionState>>)>,
    now: Instant,
) {
    let router = &broker.inner.router;
    let metrics = &broker.inner.metrics;
    if let Some((clean_start, reply)) = takeover {
        // The session continues on the new connection: a delayed will is cancelled unless
        // the new connection starts clean, which ends this session [MQTT-3.1.3-9].
        if let Some((message, delay)) = will_message {
            if clean_start || delay == 0 {
                publish_will(router, metrics, message);
            }
        }
        if let Err(state) = reply.send(state) {
            handle.park(state);
        }
        return;
    }
    // A takeover may have raced with this close: hand the state over instead.
    if let Some(Control::Takeover { reply, .. }) = handle.take_control() {
        if let Some((message, 0)) = will_message {
            publish_will(router, metrics, message);
        }
        if let Err(state) = reply.send(state) {
            handle.park(state);
        }
        return;
    }
    let registry = broker.inner.registry.clone();
    if state.session_expiry_secs == 0 {
        if let Some(persistence) = &broker.inner.persistence {
            persistence.session_ended(handle);
        }
        if let Some((message, _delay)) = will_message {
            publish_will(router, metrics, message);
        }
        handle.end();
        // A takeover that raced with this close (after the check above) waits on the control
        // slot; the session has ended, so release it now rather than after its timeout.
        drop(handle.take_control());
        discard_state(router, &mut state);
        registry.session_ended(client_id, epoch);
        return;
    }
    let expiry_secs = state.session_expiry_secs;
    let expires_at = (expiry_secs != u32::MAX)
        .then(|| now + std::time::Duration::from_secs(u64::from(expiry_secs)));
    let mut pending_will = None;
    if let Some((message, delay)) = will_message {
        // The will is due when its delay or the session ends, whichever comes first.
        let delay = delay.min(expiry_secs);
        if delay == 0 {
            publish_will(router, metrics, message);
        } else {
            pending_will = Some(PendingWill {
                message,
                publish_at: now + std::time::Duration::from_secs(u64::from(delay)),
            });
        }
    }
    if let Some(persistence) = &broker.inner.persistence {
        store_parked_session(
            persistence,
            handle,
            expiry_secs,
            expires_at,
            pending_will.as_ref(),
        );
    }
    if handle.park(state) {
        return;
    }
    registry.session_offline(OfflineNotice {
        client_id,
        epoch,
        expires_at,
        will: pending_will,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;

    /// The task of an idle connection is tokio's task cell around this future; the cell is
    /// aligned to 128 bytes, so every 128 bytes of future cost every connection 128 bytes.
    #[tokio::test]
    async fn connection_future_fits_the_idle_budget() {
        let broker = Broker::start(BrokerConfig::for_test())
            .await
            .expect("broker starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (stream, peer) = listener.accept().await.expect("accept");
        let future = run_connection(broker.clone(), stream, peer, ListenerId::default(), None);
        // Tokio's task cell adds about 120 bytes around the future and rounds up to a multiple
        // of 128: a future of at most 128 bytes keeps the cell at 256 bytes.
        let size = std::mem::size_of_val(&future);
        assert!(size <= 128, "run_connection's future is {size} bytes");
        // The boxed connection state: with the node's 8-byte listener slot around the socket
        // it fits mimalloc's 224-byte size class.
        let connection_size = std::mem::size_of::<Connection<tokio::net::TcpStream>>();
        assert!(
            connection_size <= 216,
            "Connection is {connection_size} bytes"
        );
        drop(client);
    }

    #[tokio::test]
    async fn connection_slot_holds_one_permit_until_dropped() {
        let semaphore = Arc::new(tokio::sync::Semaphore::new(3));
        let slot = ConnectionSlot::from_permit(semaphore.clone().acquire_owned().await.unwrap());
        assert_eq!(semaphore.available_permits(), 2);
        // A permit of two keeps one for the connection and gives the other back.
        let wide = semaphore.clone().acquire_many_owned(2).await.unwrap();
        let second = ConnectionSlot::from_permit(wide);
        assert_eq!(semaphore.available_permits(), 1);
        drop(slot);
        drop(second);
        assert_eq!(semaphore.available_permits(), 3);
    }

    #[test]
    fn peer_addresses_print_as_socket_addresses() {
        for text in ["192.0.2.7:1883", "[2001:db8::1]:8883"] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(crate::transport::PeerAddr::from(addr).to_string(), text);
        }
    }
}
