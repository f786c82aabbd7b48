//! The state one session owns: subscriptions, in-flight QoS 1/2 messages, packet identifiers.

use std::collections::{BTreeSet, VecDeque};

use bytestring::ByteString;

use crate::{
    codec::{PacketId, ProtocolVersion, SubscriptionOptions},
    message::{Delivery, SessionId},
    topic::TopicFilter,
};

/// One subscription as the session remembers it (the topic shard holds the routing copy).
/// Kept small: a session holds one per subscription for as long as it lives.
#[derive(Debug, Clone)]
pub struct StoredSubscription {
    /// The validated filter as the client sent it, including any `$share/group/` prefix.
    pub raw_filter: Box<str>,
    /// Subscription options.
    pub options: SubscriptionOptions,
    /// Subscription identifier, 0 when none.
    pub subscription_id: u32,
}

/// Where an outbound QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundState {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREC received and PUBREL sent, waiting for PUBCOMP.
    Released,
}

/// An outbound QoS 1/2 message not yet acknowledged by the client.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Packet identifier it was sent with.
    pub packet_id: PacketId,
    /// What was sent.
    pub delivery: Delivery,
    /// Where the handshake stands.
    pub state: OutboundState,
}

/// Everything one session owns. Exactly one owner at a time: the connection task while a
/// client is connected, the session handle while it is parked.
#[derive(Debug)]
pub struct SessionState {
    /// Session id.
    pub id: SessionId,
    /// Client identifier.
    pub client_id: ByteString,
    /// Protocol version of the last connection.
    pub protocol: ProtocolVersion,
    /// Subscriptions, in the order they were made.
    pub subscriptions: Vec<StoredSubscription>,
    /// Outbound QoS 1/2 messages in flight, in the order they were sent [MQTT-4.6.0-1].
    pub outbound: VecDeque<Outbound>,
    /// Inbound QoS 2 packet identifiers awaiting PUBREL: duplicates are not routed again.
    pub inbound_qos2: BTreeSet<u16>,
    /// Last packet identifier used for an outbound message.
    pub last_packet_id: u16,
    /// Session Expiry Interval in force, seconds (u32::MAX never expires).
    pub session_expiry_secs: u32,
}

impl StoredSubscription {
    /// Returns the parsed filter (the raw filter was validated when it was stored).
    pub fn filter(&self) -> TopicFilter {
        TopicFilter::from_validated(&self.raw_filter)
    }
}

impl SessionState {
    /// Creates the empty state of a new session.
    pub fn new(id: SessionId, client_id: ByteString, protocol: ProtocolVersion) -> SessionState {
        SessionState {
            id,
            client_id,
            protocol,
            subscriptions: Vec::new(),
            outbound: VecDeque::new(),
            inbound_qos2: BTreeSet::new(),
            last_packet_id: 0,
            session_expiry_secs: 0,
        }
    }

    /// Returns the next free packet identifier, or `None` if all 65,535 are in use.
    pub fn next_packet_id(&mut self) -> Option<PacketId> {
        for _ in 0..u16::MAX {
            self.last_packet_id = self.last_packet_id.wrapping_add(1);
            let Some(candidate) = PacketId::new(self.last_packet_id) else {
                continue;
            };
            if !self.outbound.iter().any(|o| o.packet_id == candidate) {
                return Some(candidate);
            }
        }
        None
    }

    /// Finds the position of an outbound message by packet identifier.
    pub fn outbound_position(&self, packet_id: PacketId) -> Option<usize> {
        self.outbound.iter().position(|o| o.packet_id == packet_id)
    }
}
