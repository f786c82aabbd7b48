//! The raw relay baseline: the least an MQTT broker must do to pass swarm's traffic (CONNACK,
//! SUBACK, acks, PINGRESP) and otherwise copy each PUBLISH frame's bytes unchanged to the
//! sockets subscribed to its topic. No sessions, no retained messages, no QoS state, no
//! limits: it measures the ceiling of this machine and of tokio, not a broker.
//!
//! Frames for a peer are appended to its pending buffer and written with one non-blocking
//! write per peer per read batch, straight from the reading task; only when a socket is full
//! does the peer's writer task take over. Backpressure: a reader whose frames left a peer with
//! more than [`MAX_PENDING_BYTES`] pending waits until that peer drained, so a slow subscriber
//! slows its publishers instead of growing memory.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use starling_core::codec::{
    decode_packet, AckProperties, ConnAck, ConnAckProperties, FixedHeader, Packet, PacketType,
    ProtocolVersion, ReasonCode, SubAck,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::topic::{matches, split_shared};

/// Pending bytes of one peer above which the readers feeding it wait.
const MAX_PENDING_BYTES: usize = 1024 * 1024;
/// Largest packet accepted.
const MAX_PACKET_SIZE: usize = 1024 * 1024;

type ConnId = u64;

/// One connection's outbound side.
struct Peer {
    stream: Arc<TcpStream>,
    /// Bytes not yet written; locked for appends and non-blocking writes, never across
    /// `.await`.
    pending: Mutex<BytesMut>,
    /// Wakes the writer task when a non-blocking write left bytes behind.
    wake_writer: Notify,
    /// Signalled by the writer task when `pending` became empty.
    drained: Notify,
}

impl Peer {
    fn lock(&self) -> std::sync::MutexGuard<'_, BytesMut> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn append(&self, bytes: &[u8]) {
        self.lock().put_slice(bytes);
    }

    /// Writes what is pending without waiting; returns the bytes left behind (then the
    /// writer task is woken to finish).
    fn flush_now(&self) -> usize {
        let mut pending = self.lock();
        while !pending.is_empty() {
            match self.stream.try_write(&pending) {
                Ok(0) => break,
                Ok(written) => pending.advance(written),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // The peer is gone; its reader will clean up.
                    pending.clear();
                }
            }
        }
        let left = pending.len();
        drop(pending);
        if left > 0 {
            self.wake_writer.notify_one();
        }
        left
    }

    async fn write_loop(self: Arc<Peer>) {
        loop {
            self.wake_writer.notified().await;
            while self.flush_now() > 0 {
                if self.stream.writable().await.is_err() {
                    return;
                }
            }
            self.drained.notify_waiters();
        }
    }
}

/// Who is subscribed to what; read per publish (or per topic change), written per SUBSCRIBE.
#[derive(Default)]
struct Routes {
    exact: HashMap<Vec<u8>, Vec<ConnId>>,
    wildcard: Vec<(String, ConnId)>,
    peers: HashMap<ConnId, Arc<Peer>>,
}

#[derive(Default)]
struct Relay {
    routes: RwLock<Routes>,
    /// Bumped on every change of `routes`, so connections can cache a topic's subscribers.
    generation: AtomicU64,
    next_conn_id: AtomicU64,
}

impl Relay {
    fn subscribers_of(&self, topic: &[u8]) -> Vec<Arc<Peer>> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<ConnId> = routes.exact.get(topic).cloned().unwrap_or_default();
        if let Ok(topic) = std::str::from_utf8(topic) {
            ids.extend(
                routes
                    .wildcard
                    .iter()
                    .filter(|(filter, _)| matches(filter, topic))
                    .map(|(_, id)| *id),
            );
        }
        ids.iter()
            .filter_map(|id| routes.peers.get(id).cloned())
            .collect()
    }

    fn subscribe(&self, conn_id: ConnId, filter: &str) {
        // Shared subscriptions are treated as plain ones: the relay has no groups.
        let filter = split_shared(filter).map_or(filter, |(_, filter)| filter);
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        if filter.contains(['+', '#']) {
            routes.wildcard.push((filter.to_owned(), conn_id));
        } else {
            routes
                .exact
                .entry(filter.as_bytes().to_vec())
                .or_default()
                .push(conn_id);
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn remove(&self, conn_id: ConnId) {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        routes.peers.remove(&conn_id);
        routes.wildcard.retain(|(_, id)| *id != conn_id);
        for ids in routes.exact.values_mut() {
            ids.retain(|id| *id != conn_id);
        }
        routes.exact.retain(|_, ids| !ids.is_empty());
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// Runs the relay until the process is killed.
///
/// # Errors
/// Returns an error when the address cannot be bound.
pub(crate) async fn run_relay(listen: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind the relay to {listen}"))?;
    eprintln!("swarm relay listening on {}", listener.local_addr()?);
    let relay = Arc::new(Relay::default());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("swarm relay: accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let relay = relay.clone();
        tokio::spawn(async move {
            let conn_id = relay.next_conn_id.fetch_add(1, Ordering::Relaxed);
            let _ = serve(&relay, conn_id, stream).await;
            relay.remove(conn_id);
        });
    }
}

fn encode(packet: &Packet, version: ProtocolVersion) -> Bytes {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf);
    buf.freeze()
}

/// Reads until at least one more byte arrived; `Ok(false)` at end of stream.
async fn read_more(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<bool> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    loop {
        stream.readable().await?;
        match stream.try_read_buf(buf) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error),
        }
    }
}

async fn serve(relay: &Relay, conn_id: ConnId, stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let stream = Arc::new(stream);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // CONNECT, with the codec.
    let connect = loop {
        if !read_more(&stream, &mut buf).await? {
            return Ok(());
        }
        if let Some(packet) = decode_packet(&mut buf, MAX_PACKET_SIZE, None)? {
            break packet;
        }
    };
    let Packet::Connect(connect) = connect else {
        return Ok(());
    };
    let version = connect.protocol;
    let me = Arc::new(Peer {
        stream: stream.clone(),
        pending: Mutex::new(BytesMut::new()),
        wake_writer: Notify::new(),
        drained: Notify::new(),
    });
    let writer = tokio::spawn(me.clone().write_loop());
    relay
        .routes
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .peers
        .insert(conn_id, me.clone());
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: ReasonCode::Success,
        properties: ConnAckProperties::default(),
    });
    me.append(&encode(&connack, version));
    me.flush_now();
    let result = relay_frames(relay, conn_id, &stream, &me, version, buf).await;
    writer.abort();
    result
}

async fn relay_frames(
    relay: &Relay,
    conn_id: ConnId,
    stream: &TcpStream,
    me: &Arc<Peer>,
    version: ProtocolVersion,
    mut buf: BytesMut,
) -> anyhow::Result<()> {
    // The last topic published on this connection and its subscribers.
    let mut cached: Option<(Bytes, u64, Vec<Arc<Peer>>)> = None;
    // Peers that got frames from this read batch, flushed once per batch.
    let mut touched: Vec<Arc<Peer>> = Vec::new();
    loop {
        while let Some(header) = FixedHeader::peek(&buf)? {
            if buf.len() < header.frame_len() {
                break;
            }
            let frame = buf.split_to(header.frame_len()).freeze();
            let body = &frame[header.header_len()..];
            match header.packet_type() {
                PacketType::Publish => {
                    let qos = (header.flags() >> 1) & 0b11;
                    let topic_len = match body {
                        [high, low, ..] => usize::from(u16::from_be_bytes([*high, *low])),
                        _ => anyhow::bail!("publish without a topic"),
                    };
                    if body.len() < 2 + topic_len + if qos > 0 { 2 } else { 0 } {
                        anyhow::bail!("publish shorter than its topic");
                    }
                    if qos > 0 {
                        let id_at = 2 + topic_len;
                        let ack_type: u8 = if qos == 1 { 0x40 } else { 0x50 };
                        me.append(&[ack_type, 2, body[id_at], body[id_at + 1]]);
                    }
                    let start = header.header_len() + 2;
                    let topic = frame.slice(start..start + topic_len);
                    let generation = relay.generation.load(Ordering::Acquire);
                    let fresh = matches!(&cached, Some((cached_topic, cached_generation, _))
                        if *cached_topic == topic && *cached_generation == generation);
                    if !fresh {
                        cached = Some((topic.clone(), generation, relay.subscribers_of(&topic)));
                    }
                    if let Some((_, _, subscribers)) = &cached {
                        for subscriber in subscribers {
                            subscriber.append(&frame);
                            if !touched.iter().any(|peer| Arc::ptr_eq(peer, subscriber)) {
                                touched.push(subscriber.clone());
                            }
                        }
                    }
                }
                PacketType::Subscribe => {
                    let mut one = BytesMut::from(&frame[..]);
                    if let Some(Packet::Subscribe(subscribe)) =
                        decode_packet(&mut one, MAX_PACKET_SIZE, Some(version))?
                    {
                        for (filter, _) in &subscribe.filters {
                            relay.subscribe(conn_id, filter);
                        }
                        let suback = Packet::SubAck(SubAck {
                            packet_id: subscribe.packet_id,
                            properties: AckProperties::default(),
                            reason_codes: subscribe
                                .filters
                                .iter()
                                .map(|(_, options)| {
                                    ReasonCode::from_u8(options.qos.as_u8())
                                        .unwrap_or(ReasonCode::Success)
                                })
                                .collect(),
                        });
                        me.append(&encode(&suback, version));
                    }
                }
                PacketType::PingReq => me.append(&[0xD0, 0]),
                // PUBREL from a publisher → PUBCOMP; PUBREC from a subscriber → PUBREL.
                PacketType::PubRel | PacketType::PubRec => {
                    let reply_type: u8 = if header.packet_type() == PacketType::PubRel {
                        0x70
                    } else {
                        0x62
                    };
                    if let [high, low, ..] = body {
                        me.append(&[reply_type, 2, *high, *low]);
                    }
                }
                PacketType::Disconnect => return Ok(()),
                _ => {}
            }
        }
        me.flush_now();
        let mut wait_for: Option<Arc<Peer>> = None;
        for peer in touched.drain(..) {
            if peer.flush_now() > MAX_PENDING_BYTES {
                wait_for = Some(peer);
            }
        }
        if let Some(peer) = wait_for {
            // Backpressure: stop reading until the slow peer drained.
            loop {
                let drained = peer.drained.notified();
                if peer.lock().len() <= MAX_PENDING_BYTES {
                    break;
                }
                drained.await;
            }
        }
        if !read_more(stream, &mut buf).await? {
            return Ok(());
        }
    }
}
