//! The clients of the kill -9 test. Each keeps its MQTT session state in the test (not in a
//! connection), so it survives the broker being killed: publishers number their messages and
//! record which were acknowledged; subscribers record every delivery by message id *before*
//! acknowledging it, and complete QoS 2 the way the receiver of MQTT 5.0 section 4.3.3 must
//! (a packet id stays "PUBREC sent" until its PUBREL, across reconnects, so a resent PUBLISH
//! is not a second delivery).
//!
//! rumqttc subscribes at QoS 1 only: it forgets incoming QoS 2 packet ids on every reconnect
//! and then treats the PUBREL a resuming broker must resend as a protocol error, reconnecting
//! forever. The QoS 2 subscribers are raw clients on the core codec.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use starling_core::codec::{
    Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe, SubscribeProperties,
};
use tokio_util::sync::CancellationToken;

use crate::support::{
    raw::{options, publish_packet},
    wire::{persistent_connect, success_ack, Wire},
};

/// Session expiry of the MQTT 5 clients (MQTT 3.1.1 persistent sessions never expire).
pub(crate) const SESSION_EXPIRY_SECS: u32 = 3600;

/// Outbound QoS 1/2 messages a publisher keeps in flight.
const PUBLISH_WINDOW: usize = 16;

/// A message: which publisher, which number.
pub(crate) type MessageKey = (u8, u64);

/// How a client's connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The broker went away (killed) or the connection failed.
    ConnectionLost,
    /// The test dropped the connection without DISCONNECT.
    Aborted,
    /// The client finished its work and disconnected.
    Done,
}

/// What a connection of one cycle is asked to do.
#[derive(Clone)]
pub(crate) struct CycleControl {
    /// Broker address of this cycle.
    pub(crate) addr: SocketAddr,
    /// Cycle number (0-based), for the record of lost sessions.
    pub(crate) cycle: usize,
    /// Publishers send new messages; otherwise they only complete what is in flight.
    pub(crate) publish_new: bool,
    /// Interval between two new messages of one publisher.
    pub(crate) publish_interval: Duration,
    /// Cancelled to drop every connection at once without DISCONNECT.
    pub(crate) abort: CancellationToken,
    /// Cancelled to make subscribers disconnect normally (the end of the run).
    pub(crate) finish: CancellationToken,
}

/// Parses a payload written by [`payload_of`].
pub(crate) fn parse_payload(payload: &[u8]) -> Option<MessageKey> {
    let text = std::str::from_utf8(payload).ok()?;
    let (publisher, seq) = text.split_once(':')?;
    Some((publisher.parse().ok()?, seq.parse().ok()?))
}

/// Returns the payload of message `key`.
pub(crate) fn payload_of(key: MessageKey) -> String {
    format!("{}:{}", key.0, key.1)
}

/// The acknowledgement an outbound message waits for.
#[derive(Debug, Clone, Copy)]
enum Awaiting {
    /// PUBACK (QoS 1).
    Ack,
    /// PUBREC (QoS 2).
    Rec,
    /// PUBCOMP (QoS 2, after PUBREL).
    Comp,
}

/// What a publisher knows about its messages; shared with the test through a mutex.
#[derive(Default)]
pub(crate) struct PublisherLog {
    /// Messages whose PUBACK (QoS 1) or PUBCOMP (QoS 2) arrived.
    pub(crate) acked: BTreeSet<u64>,
    /// Messages sent whose fate is unknown: in flight when the session was lost.
    pub(crate) uncertain: BTreeSet<u64>,
    /// Messages refused with an error reason code.
    pub(crate) rejected: BTreeMap<u64, ReasonCode>,
    /// Cycles after which the broker did not resume the session.
    pub(crate) sessions_lost: Vec<usize>,
    /// Protocol surprises (an ack for a packet id not in flight, a refused CONNECT).
    pub(crate) anomalies: Vec<String>,
    /// PUBLISHes (DUP) and PUBRELs sent again when a session resumed.
    pub(crate) num_resent: usize,
    inflight: BTreeMap<u16, (u64, Awaiting)>,
    next_seq: u64,
    next_packet_id: u16,
    connected_once: bool,
}

impl PublisherLog {
    /// Returns the messages sent but neither acknowledged nor refused yet.
    pub(crate) fn in_flight(&self) -> BTreeSet<u64> {
        self.inflight.values().map(|(seq, _)| *seq).collect()
    }

    fn free_packet_id(&mut self) -> PacketId {
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
            if !self.inflight.contains_key(&self.next_packet_id) {
                return PacketId::new(self.next_packet_id).expect("non-zero");
            }
        }
    }
}

/// A publisher of numbered messages at one QoS on its own topic, with a persistent session.
pub(crate) struct Publisher {
    /// Index carried in payloads.
    pub(crate) index: u8,
    /// Client id.
    pub(crate) client_id: String,
    /// Protocol version.
    pub(crate) version: ProtocolVersion,
    /// QoS of every message.
    pub(crate) qos: QoS,
    /// Topic of every message.
    pub(crate) topic: String,
    /// The session state and the record.
    pub(crate) log: Arc<Mutex<PublisherLog>>,
}

impl Publisher {
    /// Creates a publisher of topic `persist/q{qos}/{client_id}`.
    pub(crate) fn new(index: u8, client_id: &str, version: ProtocolVersion, qos: QoS) -> Publisher {
        Publisher {
            index,
            client_id: client_id.to_string(),
            version,
            qos,
            topic: format!("persist/q{}/{client_id}", qos.as_u8()),
            log: Arc::default(),
        }
    }

    /// Runs one connection: resumes the session (resending what is in flight), publishes
    /// until the connection ends or, with `publish_new` false, until nothing is in flight.
    pub(crate) async fn run(&self, control: CycleControl) -> Ended {
        let clean_start = !self.log.lock().expect("lock").connected_once;
        let connect = persistent_connect(
            self.version,
            &self.client_id,
            clean_start,
            SESSION_EXPIRY_SECS,
        );
        let Ok((mut wire, connack)) = Wire::connect(control.addr, connect).await else {
            return Ended::ConnectionLost;
        };
        let resend = {
            let mut log = self.log.lock().expect("lock");
            if connack.reason_code != ReasonCode::Success {
                let anomaly = format!("{} CONNACK {:?}", self.client_id, connack.reason_code);
                log.anomalies.push(anomaly);
                return Ended::ConnectionLost;
            }
            if log.connected_once && !connack.session_present {
                log.sessions_lost.push(control.cycle);
                // [MQTT-4.1.0-1] without the session, the client discards its state too.
                let lost: Vec<u64> = log.in_flight().into_iter().collect();
                log.uncertain.extend(lost);
                log.inflight.clear();
            }
            log.connected_once = true;
            let resend = self.resend_packets(&log);
            log.num_resent += resend.len();
            resend
        };
        for packet in resend {
            if wire.send(packet).await.is_err() {
                return Ended::ConnectionLost;
            }
        }
        let mut tick = tokio::time::interval(control.publish_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let window_open = control.publish_new
                && self.log.lock().expect("lock").inflight.len() < PUBLISH_WINDOW;
            if !control.publish_new && self.log.lock().expect("lock").inflight.is_empty() {
                wire.disconnect().await;
                return Ended::Done;
            }
            let outgoing = tokio::select! {
                biased;
                () = control.abort.cancelled() => return Ended::Aborted,
                packet = wire.recv() => match packet {
                    Ok(packet) => self.handle(packet),
                    Err(_) => return Ended::ConnectionLost,
                },
                _ = tick.tick(), if window_open => Some(self.next_publish()),
            };
            if let Some(packet) = outgoing {
                if wire.send(packet).await.is_err() {
                    return Ended::ConnectionLost;
                }
            }
        }
    }

    /// Packets that resume the session: in-flight PUBLISHes again with DUP, PUBRELs for those
    /// whose PUBREC arrived, in the order they were first sent [MQTT-4.4.0-1].
    fn resend_packets(&self, log: &PublisherLog) -> Vec<Packet> {
        let mut inflight: Vec<(u64, u16, Awaiting)> = log
            .inflight
            .iter()
            .map(|(packet_id, (seq, stage))| (*seq, *packet_id, *stage))
            .collect();
        inflight.sort_unstable_by_key(|(seq, _, _)| *seq);
        inflight
            .into_iter()
            .map(|(seq, packet_id, stage)| {
                let packet_id = PacketId::new(packet_id).expect("non-zero");
                match stage {
                    Awaiting::Comp => Packet::PubRel(success_ack(packet_id)),
                    Awaiting::Ack | Awaiting::Rec => {
                        let mut publish = self.publish_of(seq, packet_id);
                        publish.dup = true;
                        Packet::Publish(publish)
                    }
                }
            })
            .collect()
    }

    fn publish_of(&self, seq: u64, packet_id: PacketId) -> Publish {
        let payload = payload_of((self.index, seq));
        publish_packet(&self.topic, self.qos, packet_id.get(), payload.as_bytes())
    }

    fn next_publish(&self) -> Packet {
        let mut log = self.log.lock().expect("lock");
        let seq = log.next_seq;
        log.next_seq += 1;
        let packet_id = log.free_packet_id();
        let stage = match self.qos {
            QoS::ExactlyOnce => Awaiting::Rec,
            _ => Awaiting::Ack,
        };
        log.inflight.insert(packet_id.get(), (seq, stage));
        Packet::Publish(self.publish_of(seq, packet_id))
    }

    /// Records what an incoming packet acknowledges; returns the packet to answer with.
    fn handle(&self, packet: Packet) -> Option<Packet> {
        let mut log = self.log.lock().expect("lock");
        let (packet_id, reason_code, kind) = match &packet {
            Packet::PubAck(ack) => (ack.packet_id, ack.reason_code, "PUBACK"),
            Packet::PubRec(ack) => (ack.packet_id, ack.reason_code, "PUBREC"),
            Packet::PubComp(ack) => (ack.packet_id, ack.reason_code, "PUBCOMP"),
            Packet::PingResp => return None,
            other => {
                let anomaly = format!("{} unexpected {other:?}", self.client_id);
                log.anomalies.push(anomaly);
                return None;
            }
        };
        let Some((seq, stage)) = log.inflight.get(&packet_id.get()).copied() else {
            let anomaly = format!(
                "{} {kind} for packet id {packet_id} not in flight",
                self.client_id
            );
            log.anomalies.push(anomaly);
            return None;
        };
        match (kind, stage) {
            ("PUBACK", Awaiting::Ack) | ("PUBREC", Awaiting::Rec) if reason_code.is_error() => {
                log.inflight.remove(&packet_id.get());
                log.rejected.insert(seq, reason_code);
                None
            }
            ("PUBACK", Awaiting::Ack) | ("PUBCOMP", Awaiting::Comp) => {
                log.inflight.remove(&packet_id.get());
                log.acked.insert(seq);
                None
            }
            // A second PUBREC (after a resent PUBLISH) is answered with PUBREL again.
            ("PUBREC", Awaiting::Rec | Awaiting::Comp) => {
                log.inflight.insert(packet_id.get(), (seq, Awaiting::Comp));
                Some(Packet::PubRel(success_ack(packet_id)))
            }
            _ => {
                let anomaly = format!(
                    "{} {kind} for packet id {packet_id} in stage {stage:?}",
                    self.client_id
                );
                log.anomalies.push(anomaly);
                None
            }
        }
    }
}

/// What a subscriber received; shared with the test through a mutex.
#[derive(Default)]
pub(crate) struct SubscriberLog {
    /// Deliveries by message: how many times each arrived as a new message.
    pub(crate) deliveries: HashMap<MessageKey, u32>,
    /// Cycles after which the broker did not resume the session.
    pub(crate) sessions_lost: Vec<usize>,
    /// Protocol surprises.
    pub(crate) anomalies: Vec<String>,
    /// Set once the subscriptions were made (only on the first connection, never again).
    pub(crate) subscribed: bool,
    /// QoS 2 PUBLISHes received again before their PUBREL: one delivery, not recorded twice.
    pub(crate) num_qos2_resends: usize,
    /// QoS 2 packet ids whose PUBREC was sent and whose PUBREL has not arrived.
    awaiting_pubrel: HashSet<u16>,
}

impl SubscriberLog {
    fn record(&mut self, name: &str, publish: &Publish) {
        match parse_payload(&publish.payload) {
            Some(key) => *self.deliveries.entry(key).or_default() += 1,
            None => self.anomalies.push(format!(
                "{name} received an unknown payload {:?} on {}",
                publish.payload, publish.topic
            )),
        }
    }

    fn after_connack(&mut self, cycle: usize, session_present: bool) {
        if self.subscribed && !session_present {
            self.sessions_lost.push(cycle);
            self.awaiting_pubrel.clear();
        }
    }
}

/// The client library behind a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubscriberKind {
    /// The core codec, QoS 2 capable.
    Raw(ProtocolVersion),
    /// rumqttc MQTT 5 with manual acks.
    RumqttcV5,
    /// rumqttc MQTT 3.1.1 with manual acks.
    RumqttcV4,
}

/// A persistent subscriber that subscribes once, on its first connection.
pub(crate) struct Subscriber {
    /// Client id.
    pub(crate) client_id: String,
    /// Client library.
    pub(crate) kind: SubscriberKind,
    /// Topic filters and their maximum QoS.
    pub(crate) filters: Vec<(String, QoS)>,
    /// What it received.
    pub(crate) log: Arc<Mutex<SubscriberLog>>,
}

impl Subscriber {
    /// Creates a subscriber.
    pub(crate) fn new(
        client_id: &str,
        kind: SubscriberKind,
        filters: &[(&str, QoS)],
    ) -> Subscriber {
        Subscriber {
            client_id: client_id.to_string(),
            kind,
            filters: filters
                .iter()
                .map(|(filter, qos)| ((*filter).to_string(), *qos))
                .collect(),
            log: Arc::default(),
        }
    }

    /// Runs one connection until it ends, is aborted, or the run finishes.
    pub(crate) async fn run(&self, control: CycleControl) -> Ended {
        match self.kind {
            SubscriberKind::Raw(version) => self.run_raw(version, control).await,
            SubscriberKind::RumqttcV5 => {
                super::rumqttc_subscriber::run::<super::rumqttc_subscriber::V5>(self, control).await
            }
            SubscriberKind::RumqttcV4 => {
                super::rumqttc_subscriber::run::<super::rumqttc_subscriber::V4>(self, control).await
            }
        }
    }

    async fn run_raw(&self, version: ProtocolVersion, control: CycleControl) -> Ended {
        let subscribed = self.log.lock().expect("lock").subscribed;
        let connect =
            persistent_connect(version, &self.client_id, !subscribed, SESSION_EXPIRY_SECS);
        let Ok((mut wire, connack)) = Wire::connect(control.addr, connect).await else {
            return Ended::ConnectionLost;
        };
        if connack.reason_code != ReasonCode::Success {
            let anomaly = format!("{} CONNACK {:?}", self.client_id, connack.reason_code);
            self.log.lock().expect("lock").anomalies.push(anomaly);
            return Ended::ConnectionLost;
        }
        self.log
            .lock()
            .expect("lock")
            .after_connack(control.cycle, connack.session_present);
        if !subscribed {
            let subscribe = Subscribe {
                packet_id: PacketId::new(1).expect("non-zero"),
                properties: SubscribeProperties::default(),
                filters: self
                    .filters
                    .iter()
                    .map(|(filter, qos)| (filter.as_str().into(), options(*qos)))
                    .collect(),
            };
            if wire.send(Packet::Subscribe(subscribe)).await.is_err() {
                return Ended::ConnectionLost;
            }
        }
        loop {
            let packet = tokio::select! {
                biased;
                () = control.abort.cancelled() => return Ended::Aborted,
                () = control.finish.cancelled() => {
                    wire.disconnect().await;
                    return Ended::Done;
                }
                packet = wire.recv() => match packet {
                    Ok(packet) => packet,
                    Err(_) => return Ended::ConnectionLost,
                },
            };
            if let Some(answer) = self.handle_raw(packet) {
                if wire.send(answer).await.is_err() {
                    return Ended::ConnectionLost;
                }
            }
        }
    }

    /// Records a delivery, then returns the acknowledgement to send.
    fn handle_raw(&self, packet: Packet) -> Option<Packet> {
        let mut log = self.log.lock().expect("lock");
        match packet {
            Packet::Publish(publish) => match (publish.qos, publish.packet_id) {
                (QoS::AtLeastOnce, Some(packet_id)) => {
                    log.record(&self.client_id, &publish);
                    Some(Packet::PubAck(success_ack(packet_id)))
                }
                (QoS::ExactlyOnce, Some(packet_id)) => {
                    // A PUBLISH whose PUBREC was already sent is the same delivery resent.
                    if log.awaiting_pubrel.insert(packet_id.get()) {
                        log.record(&self.client_id, &publish);
                    } else {
                        log.num_qos2_resends += 1;
                    }
                    Some(Packet::PubRec(success_ack(packet_id)))
                }
                (qos, _) => {
                    log.record(&self.client_id, &publish);
                    let anomaly = format!("{} received a PUBLISH at {qos:?}", self.client_id);
                    log.anomalies.push(anomaly);
                    None
                }
            },
            Packet::PubRel(pubrel) => {
                log.awaiting_pubrel.remove(&pubrel.packet_id.get());
                Some(Packet::PubComp(success_ack(pubrel.packet_id)))
            }
            Packet::SubAck(suback) => {
                let granted: Vec<ReasonCode> = self
                    .filters
                    .iter()
                    .map(|(_, qos)| ReasonCode::from_u8(qos.as_u8()).expect("granted qos code"))
                    .collect();
                if suback.reason_codes == granted {
                    log.subscribed = true;
                } else {
                    let anomaly = format!("{} SUBACK {:?}", self.client_id, suback.reason_codes);
                    log.anomalies.push(anomaly);
                }
                None
            }
            Packet::PingResp => None,
            other => {
                let anomaly = format!("{} unexpected {other:?}", self.client_id);
                log.anomalies.push(anomaly);
                None
            }
        }
    }

    /// Records a delivery seen by a rumqttc client.
    pub(crate) fn record_rumqttc(&self, topic: &[u8], payload: &[u8]) {
        let mut log = self.log.lock().expect("lock");
        match parse_payload(payload) {
            Some(key) => *log.deliveries.entry(key).or_default() += 1,
            None => {
                let anomaly = format!(
                    "{} received an unknown payload {payload:?} on {}",
                    self.client_id,
                    String::from_utf8_lossy(topic)
                );
                log.anomalies.push(anomaly);
            }
        }
    }

    /// Records the CONNACK seen by a rumqttc client.
    pub(crate) fn rumqttc_connack(&self, cycle: usize, session_present: bool) {
        self.log
            .lock()
            .expect("lock")
            .after_connack(cycle, session_present);
    }
}
