//! Output gated on durable writes: the connection's side of `crate::persistence`.
//!
//! A handler that changes stored state adds operations to the connection's pending batch
//! ([`Connection::stored_batch`]) *before* it writes the packet that depends on them. The
//! pending batch is submitted at the end of the handler's loop iteration (the publish path
//! submits at once, before queueing deliveries); every byte written to the write buffer after
//! the first operation of a batch waits until that batch is durable. Bytes before it flow as
//! usual. So an acknowledgement never overtakes the write it acknowledges, and output stays in
//! order.
//!
//! Bounded: at most [`MAX_OUTSTANDING_COMMITS`] submitted batches per connection; beyond that
//! the connection stops reading until the storage thread catches up.

use std::{
    collections::VecDeque,
    sync::Arc,
    task::{Context, Poll},
};

use crate::{
    codec::{Ack, AckProperties, Packet, PacketId, Publish, QoS, ReasonCode},
    message::{Delivery, Message, StoredRef},
    session::{
        connection::{Blocked, Close, Connection},
        Outbound, OutboundState, PushOutcome, SessionHandle,
    },
    storage::{
        records::{InflightRecord, InflightState},
        CommitTicket, StorageError, WriteBatch,
    },
    transport::Transport,
};

/// Submitted, not yet durable batches one connection may have before it stops reading.
pub(super) const MAX_OUTSTANDING_COMMITS: usize = 64;

/// How long a closing connection waits for its outstanding batches before it drops the output
/// that depends on them.
const CLOSE_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Batches of one connection on their way to disk (allocated only while there are any).
#[derive(Default)]
pub(super) struct DurableGate {
    /// Submitted batches, oldest first, each with the write-buffer offset from which the
    /// output depends on it.
    submitted: VecDeque<(CommitTicket, usize)>,
    /// Operations not yet submitted.
    pending: WriteBatch,
    /// Write-buffer offset from which the output depends on `pending`.
    pending_start: usize,
    /// Operations no output waits for (removals after PUBACK/PUBCOMP, dropped deliveries);
    /// submitted before `pending`, so their order with this connection's writes holds.
    detached: WriteBatch,
    /// Publishes whose writes are in `pending` and whose deliveries and acknowledgements wait
    /// for it to be submitted (see [`Connection::route_durably`]).
    deferred: VecDeque<Deferred>,
}

/// At most this many publishes wait for one batch.
const MAX_DEFERRED: usize = 64;

/// A publish of the current read buffer waiting for its batch to be submitted.
enum Deferred {
    /// A routed QoS 1 publish.
    Routed {
        packet_id: PacketId,
        deliveries: Vec<(SessionHandle, Delivery)>,
    },
    /// An acknowledgement decided without routing, kept in order behind the routed ones.
    Ack(Box<Packet>),
}

impl<T: Transport> Connection<T> {
    /// Returns the batch to add stored-state operations to, when this session is stored.
    pub(super) fn stored_batch(&mut self) -> Option<&mut WriteBatch> {
        if !self.handle.is_persistent() {
            return None;
        }
        Some(self.pending_batch())
    }

    /// Returns the pending batch (the broker has storage).
    pub(super) fn pending_batch(&mut self) -> &mut WriteBatch {
        let wbuf_len = self.wbuf.len();
        let gate = self.gate.get_or_insert_with(Box::default);
        if gate.pending.is_empty() {
            gate.pending_start = wbuf_len;
        }
        &mut gate.pending
    }

    /// Returns the batch of operations no output waits for (the broker has storage).
    pub(super) fn detached_batch(&mut self) -> &mut WriteBatch {
        &mut self.gate.get_or_insert_with(Box::default).detached
    }

    /// Submits the detached and the pending batch, if any.
    pub(super) fn submit_pending(&mut self) -> Result<(), Close> {
        let Some(gate) = self.gate.as_mut() else {
            return Ok(());
        };
        if !gate.detached.is_empty() {
            if let Some(persistence) = self.broker.inner.persistence.as_ref() {
                persistence.submit_detached(std::mem::take(&mut gate.detached));
            }
        }
        if gate.pending.is_empty() {
            if gate.submitted.is_empty() && gate.deferred.is_empty() {
                self.gate = None;
            }
            return Ok(());
        }
        let batch = std::mem::take(&mut gate.pending);
        let Some(persistence) = self.broker.inner.persistence.as_ref() else {
            return Ok(());
        };
        let Some(ticket) = persistence.submit(batch) else {
            return Err(Close::Kicked(ReasonCode::ServerUnavailable));
        };
        gate.submitted.push_back((ticket, gate.pending_start));
        Ok(())
    }

    /// Returns how many bytes at the front of the write buffer may be written now.
    pub(super) fn releasable_len(&self) -> usize {
        let Some(gate) = &self.gate else {
            return self.wbuf.len();
        };
        let gated_from = match gate.submitted.front() {
            Some((_, start)) => *start,
            None if !gate.pending.is_empty() => gate.pending_start,
            None => self.wbuf.len(),
        };
        gated_from.min(self.wbuf.len())
    }

    /// Shifts the gate offsets after `num_bytes` left the front of the write buffer.
    pub(super) fn gate_written(&mut self, num_bytes: usize) {
        if let Some(gate) = self.gate.as_mut() {
            for (_, start) in gate.submitted.iter_mut() {
                *start = start.saturating_sub(num_bytes);
            }
            gate.pending_start = gate.pending_start.saturating_sub(num_bytes);
        }
    }

    /// True when the connection must stop reading until batches become durable.
    pub(super) fn gate_is_full(&self) -> bool {
        self.gate
            .as_ref()
            .is_some_and(|gate| gate.submitted.len() >= MAX_OUTSTANDING_COMMITS)
    }

    /// Polls the submitted batches in order; `Ready` once the oldest completed, having removed
    /// every completed one (a group commit completes many at once: one wake-up, one write).
    pub(super) fn poll_gate(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StorageError>> {
        let Some(gate) = self.gate.as_mut() else {
            return Poll::Pending;
        };
        let mut completed = false;
        while let Some((ticket, _)) = gate.submitted.front_mut() {
            match ticket.poll_done(cx) {
                Poll::Pending => break,
                Poll::Ready(Ok(())) => {
                    gate.submitted.pop_front();
                    completed = true;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            }
        }
        if !completed {
            return Poll::Pending;
        }
        if gate.submitted.is_empty()
            && gate.pending.is_empty()
            && gate.detached.is_empty()
            && gate.deferred.is_empty()
        {
            self.gate = None;
        }
        Poll::Ready(Ok(()))
    }

    /// At close: waits for outstanding batches; output whose batch did not become durable is
    /// cut from the write buffer, so nothing unstored is acknowledged.
    pub(super) async fn settle_gate(&mut self) {
        if self.gate.is_none() {
            return;
        }
        let mut submitted = self.submit_pending();
        if self.has_deferred() {
            self.abandon_deferred();
            // Entries of dropped deliveries are unstored in the detached batch.
            submitted = submitted.and_then(|()| self.submit_pending());
        }
        if submitted.is_err() {
            self.wbuf.truncate(self.releasable_len());
            return;
        }
        let deadline = tokio::time::Instant::now() + CLOSE_COMMIT_TIMEOUT;
        loop {
            let waiting = self
                .gate
                .as_ref()
                .is_some_and(|gate| !gate.submitted.is_empty());
            if !waiting {
                // Everything submitted is durable.
                return;
            }
            let waited =
                tokio::time::timeout_at(deadline, std::future::poll_fn(|cx| self.poll_gate(cx)))
                    .await;
            match waited {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => {
                    if let Some(persistence) = &self.broker.inner.persistence {
                        persistence.failed(&error);
                    }
                    break;
                }
                Err(_elapsed) => break,
            }
        }
        self.wbuf.truncate(self.releasable_len());
    }

    /// Routes an inbound QoS 1/2 (or retained, or QoS 0 with `queue_qos0_offline`) publish with
    /// storage: stores the message once, a queue entry per stored subscriber and the retained
    /// message, submits that batch, and only then queues the deliveries; the acknowledgement is
    /// written behind the batch.
    ///
    /// A QoS 1 publish without RETAIN is deferred instead: its writes join the pending batch,
    /// and its deliveries and PUBACK wait in the gate until [`Connection::release_deferred`]
    /// submits that batch (at the end of the read buffer, before any other kind of packet, or
    /// after [`MAX_DEFERRED`] publishes). One batch, one submission and one completion then
    /// serve every publish of a read buffer.
    pub(super) fn route_durably(
        &mut self,
        publish: &Publish,
        message: Arc<Message>,
    ) -> Result<(), Close> {
        let Some(persistence) = self.broker.inner.persistence.clone() else {
            return Ok(());
        };
        let mut deliveries: Vec<(SessionHandle, Delivery)> = Vec::new();
        self.broker
            .inner
            .router
            .collect_deliveries(&message, &mut deliveries);
        let publisher_stored = self.handle.is_persistent();
        let client_id = self.handle.client_id().clone();
        let queue_qos0 = self.broker.inner.limits.queue_qos0_offline;
        let batch = self.pending_batch();
        let fields = persistence.message_fields(&message);
        if message.retain {
            if message.payload.is_empty() {
                batch.delete_retained(&message.topic);
            } else {
                batch.put_retained_fields(&fields);
            }
        }
        // QoS 1/2 deliveries to stored sessions; QoS 0 ones too while the session is offline,
        // when the broker queues QoS 0 for offline sessions (a session that comes online in
        // between removes the entry once it has written the message).
        let stored = |(session, delivery): &(SessionHandle, Delivery)| {
            session.is_persistent()
                && (delivery.qos != QoS::AtMostOnce || (queue_qos0 && !session.is_online()))
        };
        // One stored subscriber: the message goes inline into its queue entry (one write);
        // several: stored once and reference-counted.
        let inline = deliveries.iter().filter(|entry| stored(entry)).count() == 1;
        let mut message_id = 0;
        for entry in deliveries.iter_mut() {
            if !stored(entry) {
                continue;
            }
            let (session, delivery) = entry;
            if message_id == 0 && !inline {
                message_id = persistence.allocate_message_id();
                batch.put_message_fields(message_id, &fields);
            }
            let queue_seq = persistence.allocate_queue_seq();
            batch.push_queue_entry(
                session.client_id(),
                queue_seq,
                message_id,
                (delivery.qos, delivery.retain, &delivery.subscription_ids),
                inline.then_some(&fields),
            );
            delivery.stored = StoredRef {
                queue_seq,
                message_id,
            };
        }
        if publish.qos == QoS::ExactlyOnce && publisher_stored {
            if let Some(packet_id) = publish.packet_id {
                batch.put_inbound_qos2(&client_id, packet_id.get());
            }
        }
        if let (QoS::AtLeastOnce, false, Some(packet_id)) =
            (publish.qos, publish.retain, publish.packet_id)
        {
            let gate = self.gate.get_or_insert_with(Box::default);
            gate.deferred.push_back(Deferred::Routed {
                packet_id,
                deliveries,
            });
            if gate.deferred.len() >= MAX_DEFERRED {
                self.release_deferred()?;
            }
            return Ok(());
        }
        // Submitted before any subscriber can see a delivery: see `crate::persistence`.
        self.submit_pending()?;
        let num_matched = deliveries.len();
        let (refused, blocked) = self.push_deliveries(deliveries, publish.qos != QoS::AtMostOnce);
        let reason_code = self.publish_reason_code(num_matched, refused);
        if blocked.is_empty() {
            return self.acknowledge_publish(publish, reason_code);
        }
        let ack = self.publish_ack(publish, reason_code);
        self.blocked = Some(Box::new(Blocked::new(blocked, ack)));
        Ok(())
    }

    /// Pushes the deliveries of one publish into the subscribers' queues; returns whether a
    /// queue refused it and the deliveries that found a full queue (only with `backpressure`).
    fn push_deliveries(
        &mut self,
        deliveries: Vec<(SessionHandle, Delivery)>,
        backpressure: bool,
    ) -> (bool, Vec<(SessionHandle, Delivery)>) {
        let limits = self.broker.inner.limits.clone();
        let num_matched = deliveries.len();
        let mut refused = false;
        let mut blocked = Vec::new();
        for (session, delivery) in deliveries {
            let stored = delivery.stored;
            let metrics = &self.broker.inner.metrics;
            match session.push(delivery, &limits, metrics, backpressure) {
                PushOutcome::Queued => {}
                PushOutcome::QueuedEvicting(evicted) => {
                    self.unstore_queued(&session, evicted.stored);
                }
                PushOutcome::Dropped => self.unstore_queued(&session, stored),
                PushOutcome::Refused => {
                    refused = true;
                    self.unstore_queued(&session, stored);
                }
                PushOutcome::Full(delivery) => blocked.push((session, delivery)),
            }
        }
        if num_matched == 0 {
            self.broker
                .inner
                .metrics
                .dropped_no_subscribers
                .increment(1);
        }
        (refused, blocked)
    }

    /// True while deferred publishes wait for their batch.
    pub(super) fn has_deferred(&self) -> bool {
        self.gate
            .as_ref()
            .is_some_and(|gate| !gate.deferred.is_empty())
    }

    /// Submits the pending batch and then hands out the deferred publishes in order: pushes
    /// their deliveries and writes their acknowledgements. Stops at a publish that finds a
    /// full subscriber queue (it becomes [`Connection::blocked`]; the rest follow once it is
    /// settled), and does nothing while such a publish is held.
    pub(super) fn release_deferred(&mut self) -> Result<(), Close> {
        if !self.has_deferred()
            || self
                .blocked
                .as_ref()
                .is_some_and(|blocked| !blocked.pending.is_empty())
        {
            return Ok(());
        }
        // Submitted before any subscriber can see a delivery: see `crate::persistence`.
        self.submit_pending()?;
        while let Some(item) = self
            .gate
            .as_mut()
            .and_then(|gate| gate.deferred.pop_front())
        {
            let (packet_id, deliveries) = match item {
                Deferred::Ack(packet) => {
                    self.write_packet(*packet);
                    continue;
                }
                Deferred::Routed {
                    packet_id,
                    deliveries,
                } => (packet_id, deliveries),
            };
            let num_matched = deliveries.len();
            let (refused, blocked) = self.push_deliveries(deliveries, true);
            let reason_code = self.publish_reason_code(num_matched, refused);
            let ack = Packet::PubAck(Ack {
                packet_id,
                reason_code,
                properties: AckProperties::default(),
            });
            if !blocked.is_empty() {
                self.blocked = Some(Box::new(Blocked::new(blocked, Some(ack))));
                return Ok(());
            }
            self.write_packet(ack);
        }
        Ok(())
    }

    /// Writes an acknowledgement of an inbound publish, behind the deferred ones if any, so
    /// acknowledgements keep the order of their publishes [MQTT-4.6.0-2].
    pub(super) fn write_publish_ack(&mut self, ack: Packet) {
        match self.gate.as_mut() {
            Some(gate) if !gate.deferred.is_empty() => {
                gate.deferred.push_back(Deferred::Ack(Box::new(ack)))
            }
            _ => self.write_packet(ack),
        }
    }

    /// At close: the deferred publishes' deliveries are queued without waiting for room
    /// (their entries are stored; a full queue drops and unstores them, as its policy says).
    fn abandon_deferred(&mut self) {
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        let deferred = std::mem::take(&mut gate.deferred);
        for item in deferred {
            if let Deferred::Routed { deliveries, .. } = item {
                self.push_deliveries(deliveries, false);
            }
        }
    }

    /// Removes the stored queue entry of a delivery that was dropped instead of queued.
    pub(super) fn unstore_queued(&mut self, session: &SessionHandle, stored: StoredRef) {
        if stored.queue_seq == 0 {
            return;
        }
        let client_id = session.client_id().clone();
        self.detached_batch()
            .remove_queue(&client_id, stored.queue_seq, stored.message_id);
    }

    /// Stores a QoS 2 delivery as in flight under `packet_id` (moving it out of the stored
    /// queue), before its PUBLISH is written, so a crash never makes it resent under another
    /// packet id. A QoS 1 delivery keeps its queue entry until PUBACK instead, which saves a write
    /// per message: after a crash it is sent again, but under a new packet id (a documented
    /// deviation from [MQTT-4.4.0-1]; a QoS 1 receiver keeps no state per packet id).
    pub(super) fn store_inflight(&mut self, delivery: &mut Delivery, packet_id: u16) {
        if !self.handle.is_persistent() || delivery.qos != QoS::ExactlyOnce {
            return;
        }
        let Some(persistence) = self.broker.inner.persistence.clone() else {
            return;
        };
        let client_id = self.handle.client_id().clone();
        let batch = self.pending_batch();
        let stored = delivery.stored;
        if stored.queue_seq != 0 {
            batch.remove_queue(&client_id, stored.queue_seq, stored.message_id);
        }
        let message_id = if stored.message_id != 0 {
            stored.message_id
        } else {
            let message_id = persistence.allocate_message_id();
            batch.put_message(message_id, &persistence.message_record(&delivery.message));
            message_id
        };
        batch.put_inflight(
            &client_id,
            &InflightRecord {
                packet_id,
                state: InflightState::Published { message_id },
                qos: delivery.qos,
                retain: delivery.retain,
                subscription_ids: delivery.subscription_ids.to_vec(),
            },
            None,
        );
        delivery.stored = StoredRef {
            queue_seq: 0,
            message_id,
        };
    }

    /// Records that an outbound message moved on (PUBREC: `released`) or completed.
    pub(super) fn store_outbound_done(&mut self, outbound: &Outbound, released: bool) {
        if !self.handle.is_persistent() {
            return;
        }
        let client_id = self.handle.client_id().clone();
        let stored = outbound.delivery.stored;
        if stored.queue_seq != 0 {
            // QoS 1 (see `store_inflight`): the queue entry is the in-flight state; nothing
            // waits for its removal.
            self.detached_batch()
                .remove_queue(&client_id, stored.queue_seq, stored.message_id);
            return;
        }
        let published = match outbound.state {
            OutboundState::Published if outbound.delivery.stored.message_id != 0 => {
                InflightState::Published {
                    message_id: outbound.delivery.stored.message_id,
                }
            }
            OutboundState::Published => return,
            OutboundState::Released => InflightState::PubRelSent,
        };
        let record = |state| InflightRecord {
            packet_id: outbound.packet_id.get(),
            state,
            qos: outbound.delivery.qos,
            retain: outbound.delivery.retain,
            subscription_ids: Vec::new(),
        };
        let current = record(published);
        if released {
            // PUBREL waits for this.
            self.pending_batch().put_inflight(
                &client_id,
                &record(InflightState::PubRelSent),
                Some(&current),
            );
        } else {
            self.detached_batch().remove_inflight(&client_id, &current);
        }
    }
}
