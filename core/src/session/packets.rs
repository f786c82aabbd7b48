//! Packet handling of an attached session: inbound PUBLISH and acks, SUBSCRIBE, UNSUBSCRIBE,
//! and outbound delivery from the mailbox.

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use tokio::time::Instant;

use crate::{
    auth::SubscribeDecision,
    codec::{
        Ack, AckProperties, Packet, PacketId, Publish, PublishProperties, QoS, ReasonCode,
        RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
    },
    message::{Delivery, Message, ReceivedAt, SubscriptionIds},
    session::{
        auth_flow::PublishCheck,
        connection::{Blocked, Close, Connection, MAX_PENDING_WRITE_BYTES},
        Outbound, OutboundState, PushOutcome, StoredSubscription,
    },
    storage::records::SubscriptionRecord,
    topic::{self, TopicFilter},
    transport::Transport,
};

/// Payloads up to this size are copied out of the read buffer so a queued message never pins
/// a whole read chunk; larger ones stay zero-copy slices.
const COPY_PAYLOAD_MAX: usize = 1024;

/// Deliveries taken from the mailbox at a time.
const DRAIN_BATCH: usize = 16;

fn ack(packet_id: PacketId, reason_code: ReasonCode) -> Ack {
    Ack {
        packet_id,
        reason_code,
        properties: AckProperties::default(),
    }
}

impl<T: Transport> Connection<T> {
    pub(super) fn handle_packet(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::Publish(publish) => self.on_publish(publish),
            Packet::PubAck(ack) => {
                self.on_puback(ack.packet_id);
                Ok(())
            }
            Packet::PubRec(ack) => {
                self.on_pubrec(ack);
                Ok(())
            }
            Packet::PubComp(ack) => {
                if let Some(idx) = self.state.outbound_position(ack.packet_id) {
                    if self.state.outbound[idx].state == OutboundState::Released {
                        if let Some(outbound) = self.state.outbound.remove(idx) {
                            self.store_outbound_done(&outbound, false);
                        }
                    }
                }
                Ok(())
            }
            Packet::PubRel(ack) => {
                let known = self.state.inbound_qos2.remove(&ack.packet_id.get());
                if known {
                    let client_id = self.handle.client_id().clone();
                    if let Some(batch) = self.stored_batch() {
                        batch.delete_inbound_qos2(&client_id, ack.packet_id.get());
                    }
                }
                let reason_code = if known {
                    ReasonCode::Success
                } else {
                    ReasonCode::PacketIdentifierNotFound
                };
                self.write_packet(Packet::PubComp(self::ack(ack.packet_id, reason_code)));
                Ok(())
            }
            Packet::Subscribe(subscribe) => self.on_subscribe(subscribe),
            Packet::Unsubscribe(unsubscribe) => self.on_unsubscribe(unsubscribe),
            Packet::PingReq => {
                self.write_packet(Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(disconnect) => {
                if let Some(expiry) = disconnect.properties.session_expiry_interval {
                    // [MQTT-3.14.2-2] a session that expires at close cannot be extended now.
                    if self.state.session_expiry_secs == 0 && expiry != 0 {
                        return Err(Close::Protocol(
                            ReasonCode::ProtocolError,
                            "session expiry was 0 at connect",
                        ));
                    }
                    self.state.session_expiry_secs =
                        expiry.min(self.broker.inner.limits.max_session_expiry_secs);
                }
                let publish_will = disconnect.reason_code == ReasonCode::DisconnectWithWillMessage;
                Err(Close::ClientDisconnect { publish_will })
            }
            Packet::Auth(auth) => self.on_auth(auth),
            Packet::Connect(_) => Err(Close::Protocol(ReasonCode::ProtocolError, "second CONNECT")),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(Close::Protocol(
                    ReasonCode::ProtocolError,
                    "packet type not allowed from a client",
                ))
            }
        }
    }

    fn on_publish(&mut self, mut publish: Publish) -> Result<(), Close> {
        let limits = self.broker.inner.limits.clone();
        self.broker.inner.metrics.messages_received[publish.qos as usize].increment(1);
        if let Some(alias) = publish.properties.topic_alias.take() {
            // [MQTT-3.3.2-9] an alias above our maximum is invalid.
            if !self.version.is_v5() || alias.get() > limits.topic_alias_maximum {
                let security = &self.broker.inner.metrics.security;
                security.limit_exceeded(crate::auth::LimitKind::TopicAlias);
                return Err(Close::Protocol(
                    ReasonCode::TopicAliasInvalid,
                    "topic alias out of range",
                ));
            }
            if publish.topic.is_empty() {
                let Some(topic) = self
                    .aliases
                    .as_ref()
                    .and_then(|a| a.inbound.get(&alias.get()))
                else {
                    return Err(Close::Protocol(
                        ReasonCode::ProtocolError,
                        "unknown topic alias",
                    ));
                };
                publish.topic = topic.clone();
            } else {
                let owned = ByteString::from(String::from(&*publish.topic));
                self.aliases
                    .get_or_insert_with(Box::default)
                    .inbound
                    .insert(alias.get(), owned);
            }
        }
        if let Err(error) = topic::validate_topic_name(&publish.topic, limits.max_topic_levels) {
            if error == topic::TopicError::TooLong {
                let security = &self.broker.inner.metrics.security;
                security.limit_exceeded(crate::auth::LimitKind::TopicLevels);
            }
            return Err(Close::Protocol(
                ReasonCode::TopicNameInvalid,
                "invalid topic name",
            ));
        }
        if publish.qos > limits.maximum_qos {
            return Err(Close::Protocol(
                ReasonCode::QoSNotSupported,
                "qos not supported",
            ));
        }
        if publish.retain && !limits.retain_available {
            return Err(Close::Protocol(
                ReasonCode::RetainNotSupported,
                "retain not supported",
            ));
        }
        if publish.qos == QoS::ExactlyOnce {
            let packet_id = publish
                .packet_id
                .expect("decoder guarantees a packet id for qos 2");
            if self.state.inbound_qos2.contains(&packet_id.get()) {
                // [MQTT-4.3.3-9] a resent QoS 2 PUBLISH is acknowledged, not routed again.
                self.write_packet(Packet::PubRec(ack(packet_id, ReasonCode::Success)));
                return Ok(());
            }
            if self.state.inbound_qos2.len() >= usize::from(limits.receive_maximum) {
                let security = &self.broker.inner.metrics.security;
                security.limit_exceeded(crate::auth::LimitKind::ReceiveMaximum);
                return Err(Close::Protocol(
                    ReasonCode::ReceiveMaximumExceeded,
                    "receive maximum exceeded",
                ));
            }
        }
        if publish.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&publish.payload).is_err()
        {
            // [MQTT-3.3.2-4] the broker may refuse a payload that is not the UTF-8 it claims.
            return self.acknowledge_publish(&publish, ReasonCode::PayloadFormatInvalid);
        }
        if let PublishCheck::Deny(reason_code) = self.check_publish(&publish)? {
            return self.acknowledge_publish(&publish, reason_code);
        }
        let now = Instant::now();
        let mut properties = std::mem::take(&mut publish.properties);
        properties.subscription_identifiers.clear();
        let expires_at = properties
            .message_expiry_interval
            .map(|secs| now + std::time::Duration::from_secs(u64::from(secs)));
        let payload = if publish.payload.len() <= COPY_PAYLOAD_MAX {
            Bytes::copy_from_slice(&publish.payload)
        } else {
            publish.payload.clone()
        };
        let message = Arc::new(Message {
            topic: ByteString::from(String::from(&*publish.topic)),
            payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            expires_at,
            publisher: self.state.id,
            received_at: ReceivedAt::at(now),
        });
        // QoS 0 goes the durable way too when it may be queued for an offline stored session.
        if self.broker.inner.persistence.is_some()
            && (publish.qos != QoS::AtMostOnce
                || publish.retain
                || self.broker.inner.limits.queue_qos0_offline)
        {
            return self.route_durably(&publish, message);
        }
        let mut blocked = Vec::new();
        let backpressure = (publish.qos != QoS::AtMostOnce).then_some(&mut blocked);
        let outcome = self
            .broker
            .inner
            .router
            .publish_with_backpressure(&message, backpressure);
        let reason_code = self.publish_reason_code(outcome.num_matched, outcome.refused);
        if blocked.is_empty() {
            return self.acknowledge_publish(&publish, reason_code);
        }
        // Some subscriber's queue is full: hold the acknowledgement and stop reading until
        // every delivery is queued, so a flood slows its publisher instead of losing messages.
        let ack = self.publish_ack(&publish, reason_code);
        self.blocked = Some(Box::new(Blocked::new(blocked, ack)));
        Ok(())
    }

    /// The reason code of a publish's acknowledgement after routing.
    pub(super) fn publish_reason_code(&self, num_matched: usize, refused: bool) -> ReasonCode {
        if !self.version.is_v5() {
            ReasonCode::Success
        } else if refused {
            // [MQTT-3.4.2.1] 0x97 Quota exceeded: a subscriber's queue refused the message.
            ReasonCode::QuotaExceeded
        } else if num_matched == 0 {
            ReasonCode::NoMatchingSubscribers
        } else {
            ReasonCode::Success
        }
    }

    /// Retries the deliveries a full subscriber queue refused; once all are queued (or the
    /// patience runs out, then the rest is dropped and counted) sends the held acknowledgement.
    pub(super) fn retry_blocked(&mut self) -> Result<(), Close> {
        let Some(mut blocked) = self.blocked.take() else {
            return Ok(());
        };
        let limits = self.broker.inner.limits.clone();
        let metrics = &self.broker.inner.metrics;
        let pending = std::mem::take(&mut blocked.pending);
        for (session, delivery) in pending {
            if let PushOutcome::Full(delivery) = session.push(delivery, &limits, metrics, true) {
                blocked.pending.push((session, delivery));
            }
        }
        let now = Instant::now();
        if !blocked.pending.is_empty() && now < blocked.give_up_at {
            blocked.rearm(now);
            self.blocked = Some(blocked);
            return Ok(());
        }
        if !blocked.pending.is_empty() {
            metrics
                .dropped_queue_full
                .increment(blocked.pending.len() as u64);
            for (session, delivery) in std::mem::take(&mut blocked.pending) {
                self.unstore_queued(&session, delivery.stored);
            }
        }
        if let Some(ack) = blocked.ack.take() {
            // The first of any deferred acknowledgements: written before them.
            self.write_packet(ack);
        }
        self.release_deferred()?;
        self.process_buffered()
    }

    pub(super) fn acknowledge_publish(
        &mut self,
        publish: &Publish,
        reason_code: ReasonCode,
    ) -> Result<(), Close> {
        if let Some(ack) = self.publish_ack(publish, reason_code) {
            self.write_publish_ack(ack);
        }
        Ok(())
    }

    /// Builds the PUBACK/PUBREC of an inbound publish and records a QoS 2 packet id.
    pub(super) fn publish_ack(
        &mut self,
        publish: &Publish,
        reason_code: ReasonCode,
    ) -> Option<Packet> {
        match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(packet_id)) => {
                Some(Packet::PubAck(ack(packet_id, reason_code)))
            }
            (QoS::ExactlyOnce, Some(packet_id)) => {
                if !reason_code.is_error() {
                    self.state.inbound_qos2.insert(packet_id.get());
                }
                Some(Packet::PubRec(ack(packet_id, reason_code)))
            }
            _ => None,
        }
    }

    fn on_puback(&mut self, packet_id: PacketId) {
        if let Some(idx) = self.state.outbound_position(packet_id) {
            let entry = &self.state.outbound[idx];
            if entry.state == OutboundState::Published && entry.delivery.qos == QoS::AtLeastOnce {
                if let Some(outbound) = self.state.outbound.remove(idx) {
                    self.store_outbound_done(&outbound, false);
                }
            }
        }
    }

    fn on_pubrec(&mut self, pubrec: Ack) {
        let Some(idx) = self.state.outbound_position(pubrec.packet_id) else {
            self.write_packet(Packet::PubRel(ack(
                pubrec.packet_id,
                ReasonCode::PacketIdentifierNotFound,
            )));
            return;
        };
        if pubrec.reason_code.is_error() {
            // [MQTT-4.3.3-4] a failed PUBREC ends the exchange; no PUBREL.
            if let Some(outbound) = self.state.outbound.remove(idx) {
                self.store_outbound_done(&outbound, false);
            }
            return;
        }
        if self.state.outbound[idx].state == OutboundState::Published {
            let outbound = self.state.outbound[idx].clone();
            self.store_outbound_done(&outbound, true);
        }
        self.state.outbound[idx].state = OutboundState::Released;
        self.write_packet(Packet::PubRel(ack(pubrec.packet_id, ReasonCode::Success)));
    }

    fn on_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Close> {
        let limits = self.broker.inner.limits.clone();
        let subscription_id = subscribe.properties.subscription_identifier.unwrap_or(0);
        let mut reason_codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        for (raw_filter, options) in subscribe.filters {
            let filter = match TopicFilter::parse(&raw_filter, limits.max_topic_levels) {
                Ok(filter) => filter,
                Err(error) => {
                    if error == topic::TopicError::TooLong {
                        let security = &self.broker.inner.metrics.security;
                        security.limit_exceeded(crate::auth::LimitKind::TopicLevels);
                    }
                    reason_codes.push(ReasonCode::TopicFilterInvalid);
                    continue;
                }
            };
            // [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error.
            if filter.is_shared() && options.no_local {
                return Err(Close::Protocol(
                    ReasonCode::ProtocolError,
                    "no local on a shared subscription",
                ));
            }
            if limits
                .deny_subscribe
                .iter()
                .any(|denied| topic::matches(denied, &filter.filter) || **denied == *filter.filter)
            {
                reason_codes.push(ReasonCode::UnspecifiedError);
                continue;
            }
            let (max_qos, partial) = match self.check_subscribe(&filter) {
                SubscribeDecision::Deny => {
                    reason_codes.push(ReasonCode::NotAuthorized);
                    continue;
                }
                SubscribeDecision::Allow { max_qos, partial } => (max_qos, partial),
            };
            let existing_idx = self
                .state
                .subscriptions
                .iter()
                .position(|s| *s.raw_filter == *raw_filter);
            if existing_idx.is_none()
                && self.state.subscriptions.len() >= limits.max_subscriptions_per_session
            {
                let security = &self.broker.inner.metrics.security;
                security.limit_exceeded(crate::auth::LimitKind::Subscriptions);
                reason_codes.push(ReasonCode::QuotaExceeded);
                continue;
            }
            let granted = SubscriptionOptions {
                qos: options.qos.min(limits.maximum_qos).min(max_qos),
                ..options
            };
            let existed =
                self.broker
                    .inner
                    .router
                    .subscribe(&self.handle, &filter, granted, subscription_id);
            let stored = StoredSubscription {
                raw_filter: Box::from(&*raw_filter),
                options: granted,
                subscription_id,
            };
            let client_id = self.handle.client_id().clone();
            if let Some(batch) = self.stored_batch() {
                batch.put_subscription(
                    &client_id,
                    &SubscriptionRecord {
                        topic_filter: ByteString::from(&*stored.raw_filter),
                        options: granted,
                        subscription_id: (subscription_id != 0).then_some(subscription_id),
                    },
                );
            }
            match existing_idx {
                Some(idx) => self.state.subscriptions[idx] = stored,
                None => {
                    // Exact growth: most devices hold one or two subscriptions for life.
                    self.state.subscriptions.reserve_exact(1);
                    self.state.subscriptions.push(stored);
                }
            }
            reason_codes.push(match granted.qos {
                QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
                QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
            });
            // [MQTT-3.3.1-9..11] retain handling; shared subscriptions get no retained messages.
            let send_retained = match granted.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendIfNew => !existed,
                RetainHandling::DoNotSend => false,
            };
            if send_retained && !filter.is_shared() && limits.retain_available {
                for message in self.broker.inner.router.retained_for(&filter.filter) {
                    if partial && !self.may_read(&message.topic) {
                        continue;
                    }
                    retained.push((message, granted.qos, subscription_id));
                }
            }
        }
        if !self.version.is_v5() {
            for reason_code in &mut reason_codes {
                if reason_code.is_error() {
                    *reason_code = ReasonCode::UnspecifiedError;
                }
            }
        }
        self.write_packet(Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            properties: AckProperties::default(),
            reason_codes,
        }));
        for (message, granted_qos, subscription_id) in retained {
            let mut subscription_ids = SubscriptionIds::new();
            if subscription_id != 0 {
                subscription_ids.push(subscription_id);
            }
            // [MQTT-3.3.1-8] retained messages sent on subscribe keep RETAIN set.
            let qos = message.qos.min(granted_qos);
            let delivery = Delivery::new(message, qos, true, subscription_ids);
            self.handle
                .push(delivery, &limits, &self.broker.inner.metrics, false);
        }
        Ok(())
    }

    fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Result<(), Close> {
        let max_levels = self.broker.inner.limits.max_topic_levels;
        let mut reason_codes = Vec::with_capacity(unsubscribe.filters.len());
        for raw_filter in unsubscribe.filters {
            let Ok(filter) = TopicFilter::parse(&raw_filter, max_levels) else {
                reason_codes.push(ReasonCode::TopicFilterInvalid);
                continue;
            };
            let existed = self.broker.inner.router.unsubscribe(self.state.id, &filter);
            let client_id = self.handle.client_id().clone();
            if let Some(batch) = self.stored_batch() {
                batch.delete_subscription(&client_id, &raw_filter);
            }
            self.state
                .subscriptions
                .retain(|s| *s.raw_filter != *raw_filter);
            reason_codes.push(if existed {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            });
        }
        if !self.version.is_v5() {
            reason_codes.clear();
        }
        self.write_packet(Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            properties: AckProperties::default(),
            reason_codes,
        }));
        Ok(())
    }

    /// Moves queued deliveries to the socket within the client's receive maximum and the
    /// write-buffer bound.
    pub(super) fn drain_mailbox(&mut self) {
        let now = Instant::now();
        let window = usize::from(
            self.client_receive_maximum
                .min(self.broker.inner.limits.max_inflight),
        )
        .max(1);
        while self.wbuf.len() < MAX_PENDING_WRITE_BYTES {
            let room = window.saturating_sub(self.state.outbound.len());
            let batch = self.handle.pop_batch(DRAIN_BATCH, room);
            if batch.is_empty() {
                break;
            }
            for delivery in batch {
                self.send_delivery(delivery, now);
            }
        }
        // Once per turn of the connection loop (acknowledgements were handled before it), so
        // the metrics sweep sees the count without a store per packet.
        self.handle.report_inflight(self.state.outbound.len());
    }

    fn send_delivery(&mut self, mut delivery: Delivery, now: Instant) {
        let metrics = &self.broker.inner.metrics;
        if !self.may_read(&delivery.message.topic) {
            return;
        }
        let Ok(expiry) = delivery.message.remaining_expiry(now) else {
            metrics.dropped_expired.increment(1);
            let handle = self.handle.clone();
            self.unstore_queued(&handle, delivery.stored);
            return;
        };
        let mut publish = self.build_publish(&delivery, None, expiry, false);
        // [MQTT-3.1.2-25] a message larger than the client accepts is dropped as if sent.
        if publish.encoded_len(self.version) > self.client_max_packet_size as usize {
            metrics.dropped_too_large.increment(1);
            let handle = self.handle.clone();
            self.unstore_queued(&handle, delivery.stored);
            return;
        }
        if delivery.qos != QoS::AtMostOnce {
            let Some(packet_id) = self.state.next_packet_id() else {
                metrics.dropped_queue_full.increment(1);
                let handle = self.handle.clone();
                self.unstore_queued(&handle, delivery.stored);
                return;
            };
            self.store_inflight(&mut delivery, packet_id.get());
            publish.packet_id = Some(packet_id);
            self.state.outbound.push_back(Outbound {
                packet_id,
                delivery: delivery.clone(),
                state: OutboundState::Published,
            });
        }
        if delivery.qos == QoS::AtMostOnce && delivery.stored.queue_seq != 0 {
            // A QoS 0 message stored for an offline session (`queue_qos0_offline`) is done once
            // written; nothing waits for the removal.
            let handle = self.handle.clone();
            self.unstore_queued(&handle, delivery.stored);
        }
        self.broker.inner.metrics.messages_sent[delivery.qos as usize].increment(1);
        self.apply_outbound_alias(&mut publish);
        publish.encode(self.version, &mut self.wbuf);
        self.broker.inner.metrics.observe_delivery(&delivery, now);
    }

    /// Replaces the topic by an alias the client already knows, or assigns a new one while the
    /// client's Topic Alias Maximum allows.
    fn apply_outbound_alias(&mut self, publish: &mut Publish) {
        if self.client_topic_alias_maximum == 0 || !self.version.is_v5() {
            return;
        }
        let aliases = self.aliases.get_or_insert_with(Box::default);
        if let Some(alias) = aliases.outbound.get(&publish.topic) {
            publish.properties.topic_alias = PacketId::new(*alias);
            publish.topic = ByteString::new();
            return;
        }
        let num_aliases = aliases.outbound.len();
        if num_aliases < usize::from(self.client_topic_alias_maximum) {
            let alias = (num_aliases + 1) as u16;
            aliases.outbound.insert(publish.topic.clone(), alias);
            publish.properties.topic_alias = PacketId::new(alias);
        }
    }

    /// Builds the PUBLISH of a delivery (no topic alias; `expiry` is the remaining interval).
    pub(super) fn build_publish(
        &self,
        delivery: &Delivery,
        packet_id: Option<PacketId>,
        expiry: Option<u32>,
        dup: bool,
    ) -> Publish {
        let message = &delivery.message;
        let properties = if self.version.is_v5() {
            let source = &message.properties;
            PublishProperties {
                payload_format_indicator: source.payload_format_indicator,
                // [MQTT-3.3.2-6] the forwarded expiry is what is left of it.
                message_expiry_interval: expiry,
                topic_alias: None,
                response_topic: source.response_topic.clone(),
                correlation_data: source.correlation_data.clone(),
                user_properties: source.user_properties.clone(),
                subscription_identifiers: delivery.subscription_ids.to_vec(),
                content_type: source.content_type.clone(),
            }
        } else {
            PublishProperties::default()
        };
        Publish {
            dup,
            qos: delivery.qos,
            retain: delivery.retain,
            topic: message.topic.clone(),
            packet_id,
            properties,
            payload: message.payload.clone(),
        }
    }
}
