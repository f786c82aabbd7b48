//! The state one session owns: subscriptions, in-flight QoS 1/2 messages, packet identifiers.

use std::collections::{BTreeSet, VecDeque};

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

/// A set of packet identifiers that allocates only while it has members: most sessions never
/// hold an inbound QoS 2 message, and the state is part of every session's memory.
// Boxed on purpose: an empty set costs 8 bytes in every session instead of 24.
#[allow(clippy::box_collection)]
#[derive(Debug, Clone, Default)]
pub struct PacketIdSet(Option<Box<BTreeSet<u16>>>);

impl PacketIdSet {
    /// True if `packet_id` is in the set.
    pub fn contains(&self, packet_id: &u16) -> bool {
        self.0.as_ref().is_some_and(|set| set.contains(packet_id))
    }

    /// Adds `packet_id`; false if it was there already.
    pub fn insert(&mut self, packet_id: u16) -> bool {
        self.0.get_or_insert_with(Box::default).insert(packet_id)
    }

    /// Removes `packet_id`; false if it was not there.
    pub fn remove(&mut self, packet_id: &u16) -> bool {
        let Some(set) = self.0.as_mut() else {
            return false;
        };
        let removed = set.remove(packet_id);
        if set.is_empty() {
            self.0 = None;
        }
        removed
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |set| set.len())
    }

    /// True when the set has no members.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The members in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().flat_map(|set| set.iter().copied())
    }
}

impl FromIterator<u16> for PacketIdSet {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> PacketIdSet {
        let set: BTreeSet<u16> = iter.into_iter().collect();
        PacketIdSet((!set.is_empty()).then(|| Box::new(set)))
    }
}

/// Everything one session owns. Exactly one owner at a time: the connection task while a
/// client is connected, the session handle while it is parked.
#[derive(Debug)]
pub struct SessionState {
    /// Session id.
    pub id: SessionId,
    /// Protocol version of the last connection.
    pub protocol: ProtocolVersion,
    /// Subscriptions, in the order they were made.
    pub subscriptions: Vec<StoredSubscription>,
    /// Outbound QoS 1/2 messages in flight, in the order they were sent [MQTT-4.6.0-1].
    pub outbound: VecDeque<Outbound>,
    /// Inbound QoS 2 packet identifiers awaiting PUBREL: duplicates are not routed again.
    pub inbound_qos2: PacketIdSet,
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
    pub fn new(id: SessionId, protocol: ProtocolVersion) -> SessionState {
        SessionState {
            id,
            protocol,
            subscriptions: Vec::new(),
            outbound: VecDeque::new(),
            inbound_qos2: PacketIdSet::default(),
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

#[cfg(test)]
mod packet_id_set_tests {
    use super::PacketIdSet;

    #[test]
    fn allocates_only_while_it_has_members() {
        let mut set = PacketIdSet::default();
        assert!(set.is_empty() && !set.contains(&7));
        assert!(set.insert(7) && !set.insert(7) && set.insert(3));
        assert_eq!(set.len(), 2);
        assert_eq!(set.iter().collect::<Vec<_>>(), [3, 7]);
        assert!(set.remove(&7) && !set.remove(&7));
        assert!(set.remove(&3));
        assert!(set.is_empty());
        assert!(PacketIdSet::from_iter(Vec::new()).is_empty());
        assert_eq!(PacketIdSet::from_iter([5, 1]).len(), 2);
    }
}
