//! The raw relay baseline: the least an MQTT broker must do to pass swarm's traffic (CONNACK,
//! SUBACK, acks, PINGRESP) and otherwise copy each PUBLISH frame's bytes unchanged to the
//! sockets subscribed to its topic. No sessions, no retained messages, no QoS state, no
//! limits: it measures the ceiling of this machine and of tokio, not a broker.
//!
//! Backpressure: each connection's writer has a bounded queue; a publisher's reader waits
//! for room, so a slow subscriber slows its publishers instead of growing memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use starling_core::codec::{
    decode_packet, AckProperties, ConnAck, ConnAckProperties, FixedHeader, Packet, PacketType,
    ProtocolVersion, ReasonCode, SubAck,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::topic::{matches, split_shared};

/// Frames queued per connection writer before readers feeding it wait.
const WRITE_QUEUE: usize = 1024;
/// Largest packet accepted.
const MAX_PACKET_SIZE: usize = 1024 * 1024;

type ConnId = u64;

/// Who is subscribed to what; read per publish (or per topic change), written per SUBSCRIBE.
#[derive(Default)]
struct Routes {
    exact: HashMap<Vec<u8>, Vec<ConnId>>,
    wildcard: Vec<(String, ConnId)>,
    writers: HashMap<ConnId, mpsc::Sender<Bytes>>,
}

#[derive(Default)]
struct Relay {
    routes: RwLock<Routes>,
    /// Bumped on every change of `routes`, so connections can cache a topic's subscribers.
    generation: AtomicU64,
    next_conn_id: AtomicU64,
}

impl Relay {
    fn subscribers_of(&self, topic: &[u8]) -> Vec<mpsc::Sender<Bytes>> {
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
            .filter_map(|id| routes.writers.get(id).cloned())
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
        routes.writers.remove(&conn_id);
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

/// Writes queued frames, batching what is already queued into one write.
async fn write_loop(mut writer: OwnedWriteHalf, mut frames: mpsc::Receiver<Bytes>) {
    let mut batch = BytesMut::with_capacity(64 * 1024);
    while let Some(frame) = frames.recv().await {
        batch.put_slice(&frame);
        while batch.len() < 64 * 1024 {
            match frames.try_recv() {
                Ok(frame) => batch.put_slice(&frame),
                Err(_) => break,
            }
        }
        if writer.write_all(&batch).await.is_err() {
            return;
        }
        batch.clear();
    }
}

fn encode(packet: &Packet, version: ProtocolVersion) -> Bytes {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf);
    buf.freeze()
}

async fn serve(relay: &Relay, conn_id: ConnId, stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let (mut reader, writer) = stream.into_split();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // CONNECT, with the codec.
    let connect = loop {
        if reader.read_buf(&mut buf).await? == 0 {
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
    let (writer_tx, writer_rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    tokio::spawn(write_loop(writer, writer_rx));
    relay
        .routes
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .writers
        .insert(conn_id, writer_tx.clone());
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: ReasonCode::Success,
        properties: ConnAckProperties::default(),
    });
    writer_tx.send(encode(&connack, version)).await?;
    // Cache of the last topic published on this connection and its subscribers.
    let mut cached: Option<(Bytes, u64, Vec<mpsc::Sender<Bytes>>)> = None;
    loop {
        while let Some(header) = FixedHeader::peek(&buf)? {
            if buf.len() < header.frame_len() {
                break;
            }
            let frame = buf.split_to(header.frame_len()).freeze();
            match header.packet_type() {
                PacketType::Publish => {
                    let body = &frame[header.header_len()..];
                    let qos = (header.flags() >> 1) & 0b11;
                    let topic_len = match body {
                        [high, low, ..] => usize::from(u16::from_be_bytes([*high, *low])),
                        _ => anyhow::bail!("publish without a topic"),
                    };
                    if body.len() < 2 + topic_len + if qos > 0 { 2 } else { 0 } {
                        anyhow::bail!("publish shorter than its topic");
                    }
                    let topic =
                        frame.slice(header.header_len() + 2..header.header_len() + 2 + topic_len);
                    if qos > 0 {
                        let id_at = 2 + topic_len;
                        let packet_id = [body[id_at], body[id_at + 1]];
                        let ack_type: u8 = if qos == 1 { 0x40 } else { 0x50 };
                        writer_tx
                            .send(Bytes::copy_from_slice(&[
                                ack_type,
                                2,
                                packet_id[0],
                                packet_id[1],
                            ]))
                            .await?;
                    }
                    let generation = relay.generation.load(Ordering::Acquire);
                    let fresh = matches!(&cached, Some((cached_topic, cached_generation, _))
                        if *cached_topic == topic && *cached_generation == generation);
                    if !fresh {
                        cached = Some((topic.clone(), generation, relay.subscribers_of(&topic)));
                    }
                    if let Some((_, _, subscribers)) = &cached {
                        for subscriber in subscribers {
                            let _ = subscriber.send(frame.clone()).await;
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
                        writer_tx.send(encode(&suback, version)).await?;
                    }
                }
                PacketType::PingReq => writer_tx.send(Bytes::from_static(&[0xD0, 0])).await?,
                // PUBREL from a publisher → PUBCOMP; PUBREC from a subscriber → PUBREL.
                PacketType::PubRel | PacketType::PubRec => {
                    let reply_type: u8 = if header.packet_type() == PacketType::PubRel {
                        0x70
                    } else {
                        0x62
                    };
                    if let [high, low, ..] = frame[header.header_len()..] {
                        writer_tx
                            .send(Bytes::copy_from_slice(&[reply_type, 2, high, low]))
                            .await?;
                    }
                }
                PacketType::Disconnect => return Ok(()),
                _ => {}
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        if reader.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}
