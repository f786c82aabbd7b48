//! The per-message work of a client: the publish schedule, building and batching publishes,
//! the QoS 1/2 flows in both directions, command responses, and the loss/latency records.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use starling_core::codec::{
    Ack, AckProperties, ByteString, Packet, PacketId, Publish, PublishProperties, QoS, ReasonCode,
};
use tokio::time::Instant;

use super::{Client, ClientContext, ClientSpec, Role};
use crate::conn::MqttConn;
use crate::payload::{now_ns, PayloadHeader, PayloadShape};
use crate::scenario::{payload_shape, qos_of};
use crate::stats::bump;
use crate::topic::render;

/// Most messages written in one batch (one write).
const MAX_BATCH: u64 = 256;

/// Where a client's publishes go.
#[derive(Debug, Clone)]
pub(super) enum TopicSource {
    /// Always the same topic.
    Fixed(ByteString),
    /// Round robin over the devices' command topics.
    Devices { backend_idx: u64, num_backends: u64 },
}

/// How a publishing client publishes.
#[derive(Debug, Clone)]
pub(super) struct PublishPlan {
    topic: TopicSource,
    qos: QoS,
    retain: bool,
    /// Time between two messages; `None` is unthrottled.
    interval: Option<Duration>,
    max_messages: Option<u64>,
    /// Unacknowledged QoS 1/2 messages allowed.
    pub(super) window: usize,
    /// Offset of this client's schedule, spreading publishers over one interval.
    pub(super) phase_offset: Duration,
    /// Commands without a response allowed (backends).
    max_outstanding: Option<u64>,
    /// Response topic put in commands (backends).
    response_topic: Option<ByteString>,
    payload: PayloadShape,
}

impl PublishPlan {
    pub(super) fn for_client(ctx: &ClientContext, spec: ClientSpec) -> Option<PublishPlan> {
        let scenario = &ctx.scenario;
        match spec.role {
            Role::Publisher => {
                let group = scenario.publishers.as_ref()?;
                let rate = group.rate.or(group
                    .total_rate
                    .map(|total| total / group.count.max(1) as f64));
                let interval = rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
                let phase_offset = interval.map_or(Duration::ZERO, |interval| {
                    interval.mul_f64(f64::from(spec.group_idx) / group.count.max(1) as f64)
                });
                Some(PublishPlan {
                    topic: TopicSource::Fixed(ByteString::from(render(
                        &group.topic,
                        spec.group_idx,
                    ))),
                    qos: qos_of(group.qos),
                    retain: group.retain,
                    interval,
                    max_messages: group.max_messages,
                    window: usize::from(group.max_inflight),
                    phase_offset,
                    max_outstanding: None,
                    response_topic: None,
                    payload: ctx.payload.clone().or_else(|| payload_shape(group).ok())?,
                })
            }
            Role::Backend => {
                let commands = scenario.commands.as_ref()?;
                let interval = commands
                    .rate
                    .map(|rate| Duration::from_secs_f64(commands.backends as f64 / rate));
                let phase_offset = interval.map_or(Duration::ZERO, |interval| {
                    interval.mul_f64(f64::from(spec.group_idx) / commands.backends.max(1) as f64)
                });
                Some(PublishPlan {
                    topic: TopicSource::Devices {
                        backend_idx: u64::from(spec.group_idx),
                        num_backends: commands.backends as u64,
                    },
                    qos: qos_of(commands.qos),
                    retain: false,
                    interval,
                    max_messages: None,
                    window: usize::from(u16::MAX - 1),
                    phase_offset,
                    max_outstanding: Some(u64::from(commands.max_outstanding)),
                    response_topic: Some(ByteString::from(render(
                        &commands.response_topic,
                        spec.group_idx,
                    ))),
                    payload: PayloadShape::Binary {
                        size: commands.payload_bytes,
                    },
                })
            }
            Role::Subscriber | Role::Device => None,
        }
    }
}

/// A QoS 1/2 publish awaiting its acknowledgement.
#[derive(Debug, Clone)]
pub(super) struct InflightEntry {
    publish: Publish,
    sent_at: Instant,
    /// PUBREC received, PUBREL sent: awaiting PUBCOMP.
    awaiting_comp: bool,
    /// A measured message (not a command response).
    measured: bool,
    /// Order of sending, for resending after a reconnect.
    order: u64,
}

fn ack(packet_id: PacketId) -> Ack {
    Ack {
        packet_id,
        reason_code: ReasonCode::Success,
        properties: AckProperties::default(),
    }
}

impl Client {
    /// Returns when the next batch is due; `None` when nothing may be sent now.
    pub(super) fn next_send_at(
        &self,
        send_start: Instant,
        publish_end: Instant,
    ) -> Option<Instant> {
        let plan = self.publish.as_ref()?;
        if self.publishing_done || self.send_budget(plan) == 0 {
            return None;
        }
        match plan.interval {
            Some(interval) => {
                let due_at = send_start + interval.mul_f64(self.seq as f64);
                (due_at < publish_end).then_some(due_at)
            }
            None => Some(send_start),
        }
    }

    /// Messages the window, the outstanding-command bound and `max_messages` allow now.
    fn send_budget(&self, plan: &PublishPlan) -> u64 {
        let mut budget = MAX_BATCH;
        if plan.qos != QoS::AtMostOnce {
            budget = budget.min(self.window.saturating_sub(self.inflight.len()) as u64);
        }
        if let Some(max_outstanding) = plan.max_outstanding {
            let answered = self
                .trackers
                .get(&self.spec.global_idx)
                .map_or(0, |tracker| tracker.unique());
            budget = budget.min(max_outstanding.saturating_sub(self.seq - answered));
        }
        if let Some(max_messages) = plan.max_messages {
            budget = budget.min(max_messages.saturating_sub(self.seq));
        }
        budget
    }

    /// Writes the messages due now in one batch.
    pub(super) async fn send_batch(
        &mut self,
        conn: &mut MqttConn,
        send_start: Instant,
        publish_end: Instant,
    ) -> Result<(), String> {
        let Some(plan) = self.publish.clone() else {
            return Ok(());
        };
        let now = Instant::now();
        if now >= publish_end {
            self.finish_publishing().await;
            return Ok(());
        }
        let due = match plan.interval {
            Some(interval) if now >= send_start => {
                let elapsed = (now - send_start).as_secs_f64();
                ((elapsed / interval.as_secs_f64()) as u64 + 1).saturating_sub(self.seq)
            }
            Some(_) => 0,
            None => MAX_BATCH,
        };
        let count = due.min(self.send_budget(&plan));
        if count == 0 {
            return Ok(());
        }
        let sent_at_ns = now_ns();
        let mut payload_buf = BytesMut::new();
        for _ in 0..count {
            let header = PayloadHeader {
                run_id: self.ctx.run_id,
                publisher_id: self.spec.global_idx,
                seq: self.seq,
                sent_at_ns,
            };
            plan.payload
                .write(header, self.spec.group_idx, &mut self.rng, &mut payload_buf);
            let payload = payload_buf.split().freeze();
            let topic = match &plan.topic {
                TopicSource::Fixed(topic) => topic.clone(),
                TopicSource::Devices {
                    backend_idx,
                    num_backends,
                } => {
                    let devices = self.ctx.command_topics.len().max(1) as u64;
                    let device_idx = (self.seq * num_backends + backend_idx) % devices;
                    self.ctx.command_topics[device_idx as usize].clone()
                }
            };
            let properties = match &plan.response_topic {
                Some(response_topic) => PublishProperties {
                    response_topic: Some(response_topic.clone()),
                    correlation_data: Some(Bytes::copy_from_slice(&self.seq.to_be_bytes())),
                    ..PublishProperties::default()
                },
                None => PublishProperties::default(),
            };
            let mut publish = Publish {
                dup: false,
                qos: plan.qos,
                retain: plan.retain,
                topic,
                packet_id: None,
                properties,
                payload,
            };
            self.queue_publish(conn, &mut publish, now, true);
            self.seq += 1;
        }
        bump(&self.ctx.stats.counters.sent, count);
        conn.flush()
            .await
            .map_err(|error| format!("write: {error}"))?;
        if plan.max_messages.is_some_and(|max| self.seq >= max) {
            self.finish_publishing().await;
        }
        Ok(())
    }

    /// Encodes a publish, registering it as in flight for QoS 1/2.
    fn queue_publish(
        &mut self,
        conn: &mut MqttConn,
        publish: &mut Publish,
        now: Instant,
        measured: bool,
    ) {
        if publish.qos != QoS::AtMostOnce {
            let packet_id = self.allocate_packet_id();
            publish.packet_id = Some(packet_id);
            self.inflight.insert(
                packet_id.get(),
                InflightEntry {
                    publish: publish.clone(),
                    sent_at: now,
                    awaiting_comp: false,
                    measured,
                    order: self.seq,
                },
            );
        }
        let version = conn.version;
        publish.encode(version, conn.write_buf());
    }

    fn allocate_packet_id(&mut self) -> PacketId {
        // The window keeps the in-flight map below 65,535 entries, so a free id exists.
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            if let Some(packet_id) = PacketId::new(self.next_packet_id) {
                if !self.inflight.contains_key(&packet_id.get()) {
                    return packet_id;
                }
            }
        }
    }

    /// After a reconnect: resends unacknowledged publishes (DUP) and PUBRELs, in order.
    pub(super) fn resend_inflight(&mut self, conn: &mut MqttConn) {
        let mut entries: Vec<&mut InflightEntry> = self.inflight.values_mut().collect();
        entries.sort_by_key(|entry| entry.order);
        let version = conn.version;
        for entry in entries {
            let packet_id = entry
                .publish
                .packet_id
                .expect("in-flight publishes have an id");
            if entry.awaiting_comp {
                Packet::PubRel(ack(packet_id)).encode(version, conn.write_buf());
            } else {
                entry.publish.dup = true;
                entry.publish.encode(version, conn.write_buf());
            }
        }
    }

    /// Handles every complete packet read so far, then writes the acks and responses.
    pub(super) async fn handle_incoming(&mut self, conn: &mut MqttConn) -> Result<(), String> {
        let now = Instant::now();
        let now_ns = now_ns();
        let mut publishes = 0u64;
        loop {
            let packet = match conn.next_packet() {
                Ok(Some(packet)) => packet,
                Ok(None) => break,
                Err(error) => return Err(format!("decode: {error}")),
            };
            match packet {
                Packet::Publish(publish) => {
                    publishes += 1;
                    self.on_publish(conn, publish, now, now_ns);
                }
                Packet::PubAck(puback) => self.on_final_ack(puback, now),
                Packet::PubComp(pubcomp) => self.on_final_ack(pubcomp, now),
                Packet::PubRec(pubrec) => {
                    let packet_id = pubrec.packet_id;
                    if pubrec.reason_code.is_error() {
                        self.on_final_ack(pubrec, now);
                    } else if let Some(entry) = self.inflight.get_mut(&packet_id.get()) {
                        entry.awaiting_comp = true;
                        conn.queue(&Packet::PubRel(ack(packet_id)));
                    }
                }
                Packet::PubRel(pubrel) => {
                    self.awaiting_rel.remove(&pubrel.packet_id.get());
                    conn.queue(&Packet::PubComp(ack(pubrel.packet_id)));
                }
                Packet::Disconnect(disconnect) => {
                    return Err(format!(
                        "disconnect 0x{:02x}",
                        disconnect.reason_code.as_u8()
                    ));
                }
                _ => {}
            }
        }
        if self.consume_rate.is_some() {
            self.consumed += publishes;
        }
        self.flush_batches();
        conn.flush()
            .await
            .map_err(|error| format!("write: {error}"))
    }

    fn on_publish(&mut self, conn: &mut MqttConn, publish: Publish, now: Instant, now_ns: u64) {
        let packet_id = publish.packet_id;
        match (publish.qos, packet_id) {
            (QoS::AtLeastOnce, Some(packet_id)) => conn.queue(&Packet::PubAck(ack(packet_id))),
            (QoS::ExactlyOnce, Some(packet_id)) => {
                conn.queue(&Packet::PubRec(ack(packet_id)));
                // [MQTT-4.3.3-9] a QoS 2 publish is delivered once until its PUBREL.
                if !self.awaiting_rel.insert(packet_id.get()) {
                    return;
                }
            }
            _ => {}
        }
        if self.spec.role == Role::Device {
            bump(&self.ctx.stats.counters.commands_received, 1);
            self.respond(conn, publish, now);
            return;
        }
        match PayloadHeader::decode(&publish.payload) {
            Some(header) if header.run_id == self.ctx.run_id => {
                bump(&self.ctx.stats.counters.received, 1);
                self.trackers
                    .entry(header.publisher_id)
                    .or_default()
                    .record(header.seq);
                let latency_ns = now_ns.saturating_sub(header.sent_at_ns);
                self.latencies_us.push(latency_ns / 1_000);
            }
            _ => bump(&self.ctx.stats.counters.foreign, 1),
        }
    }

    /// Device: answers a command on its response topic with its correlation data, echoing
    /// the payload (and so the backend's header).
    fn respond(&mut self, conn: &mut MqttConn, command: Publish, now: Instant) {
        let Some(response_topic) = command.properties.response_topic else {
            return;
        };
        let qos = self
            .ctx
            .scenario
            .commands
            .as_ref()
            .map_or(QoS::AtMostOnce, |commands| qos_of(commands.qos));
        let mut response = Publish {
            dup: false,
            qos,
            retain: false,
            topic: response_topic,
            packet_id: None,
            properties: PublishProperties {
                correlation_data: command.properties.correlation_data,
                ..PublishProperties::default()
            },
            payload: command.payload,
        };
        self.queue_publish(conn, &mut response, now, false);
    }

    /// PUBACK, PUBCOMP, or a PUBREC with an error: the QoS flow of a publish ends.
    fn on_final_ack(&mut self, ack: Ack, now: Instant) {
        let Some(entry) = self.inflight.remove(&ack.packet_id.get()) else {
            return;
        };
        if !entry.measured {
            return;
        }
        if ack.reason_code.is_error() {
            bump(&self.ctx.stats.counters.rejected, 1);
            return;
        }
        bump(&self.ctx.stats.counters.acked, 1);
        let latency_us = u64::try_from(now.saturating_duration_since(entry.sent_at).as_micros())
            .unwrap_or(u64::MAX);
        self.ack_latencies_us.push(latency_us);
    }

    /// Moves batched latencies into the worker's histograms.
    pub(super) fn flush_batches(&mut self) {
        if !self.latencies_us.is_empty() {
            self.ctx.stats.record_latencies(&self.latencies_us);
            self.latencies_us.clear();
        }
        if !self.ack_latencies_us.is_empty() {
            self.ctx.stats.record_ack_latencies(&self.ack_latencies_us);
            self.ack_latencies_us.clear();
        }
    }
}
