//! The MQTT control packets, one module per packet, and dispatch of a decoded frame to them.

mod ack;
mod auth;
mod connack;
mod connect;
mod disconnect;
mod publish;
mod suback;
mod subscribe;
mod unsuback;
mod unsubscribe;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::codec::fixed_header::{frame_len, write_fixed_header};
use crate::codec::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DecodeError,
    DisconnectProperties, FixedHeader, Packet, PacketId, PacketType, ProtocolVersion,
    PublishProperties, QoS, ReasonCode, SubscribeProperties, UnsubscribeProperties, WillProperties,
};

impl Packet {
    /// Decodes the body of one frame whose fixed header has been checked by
    /// [`FixedHeader::peek`] and whose size has been checked against the maximum packet size.
    ///
    /// `version` is `None` before CONNECT: then only CONNECT is accepted.
    pub(crate) fn decode_body(
        header: FixedHeader,
        frame: Bytes,
        version: Option<ProtocolVersion>,
    ) -> Result<Packet, DecodeError> {
        debug_assert_eq!(frame.len(), header.remaining_len());
        let mut src = frame;
        let flags = header.flags();
        let packet_type = header.packet_type();
        let packet = match version {
            None => {
                // [MQTT-3.1.0-1] the first packet from the client must be CONNECT.
                if packet_type != PacketType::Connect {
                    return Err(DecodeError::Protocol("first packet must be CONNECT"));
                }
                Packet::Connect(Box::new(Connect::decode(&mut src, flags)?))
            }
            Some(version) => Packet::decode_after_connect(&mut src, header, version)?,
        };
        if !src.is_empty() {
            return Err(DecodeError::Malformed("bytes after the end of the packet"));
        }
        Ok(packet)
    }

    /// Decodes any packet but CONNECT in the negotiated `version`.
    fn decode_after_connect(
        src: &mut Bytes,
        header: FixedHeader,
        version: ProtocolVersion,
    ) -> Result<Packet, DecodeError> {
        let flags = header.flags();
        let packet_type = header.packet_type();
        let packet = match packet_type {
            // [MQTT-3.1.0-2] a second CONNECT is a protocol violation.
            PacketType::Connect => return Err(DecodeError::Protocol("second CONNECT")),
            PacketType::ConnAck => Packet::ConnAck(ConnAck::decode(src, flags, version)?),
            PacketType::Publish => Packet::Publish(Publish::decode(src, flags, version)?),
            PacketType::PubAck => Packet::PubAck(Ack::decode(src, packet_type, version)?),
            PacketType::PubRec => Packet::PubRec(Ack::decode(src, packet_type, version)?),
            PacketType::PubRel => Packet::PubRel(Ack::decode(src, packet_type, version)?),
            PacketType::PubComp => Packet::PubComp(Ack::decode(src, packet_type, version)?),
            PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(src, flags, version)?),
            PacketType::SubAck => Packet::SubAck(SubAck::decode(src, flags, version)?),
            PacketType::Unsubscribe => {
                Packet::Unsubscribe(Unsubscribe::decode(src, flags, version)?)
            }
            PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(src, flags, version)?),
            PacketType::PingReq | PacketType::PingResp => {
                // Sections 3.12 and 3.13: PINGREQ and PINGRESP have no body.
                if !src.is_empty() {
                    return Err(DecodeError::Malformed("ping with a non-empty body"));
                }
                if packet_type == PacketType::PingReq {
                    Packet::PingReq
                } else {
                    Packet::PingResp
                }
            }
            PacketType::Disconnect => Packet::Disconnect(Disconnect::decode(src, flags, version)?),
            PacketType::Auth => {
                // MQTT 3.1.1 section 2.2.1: packet type 15 is reserved.
                if !version.is_v5() {
                    return Err(DecodeError::InvalidPacketType(PacketType::Auth.as_u8()));
                }
                Packet::Auth(Auth::decode(src, flags, version)?)
            }
        };
        Ok(packet)
    }

    /// Returns the packet type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// Returns the remaining length (body size) of this packet in `version`.
    fn remaining_len(&self, version: ProtocolVersion) -> usize {
        match self {
            Packet::Connect(connect) => connect.encoded_len(),
            Packet::ConnAck(connack) => connack.encoded_len(version),
            Packet::Publish(publish) => publish.encoded_len(version),
            Packet::PubAck(ack)
            | Packet::PubRec(ack)
            | Packet::PubRel(ack)
            | Packet::PubComp(ack) => ack.encoded_len(version),
            Packet::Subscribe(subscribe) => subscribe.encoded_len(version),
            Packet::SubAck(suback) => suback.encoded_len(version),
            Packet::Unsubscribe(unsubscribe) => unsubscribe.encoded_len(version),
            Packet::UnsubAck(unsuback) => unsuback.encoded_len(version),
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(disconnect) => disconnect.encoded_len(version),
            Packet::Auth(auth) => auth.encoded_len(version),
        }
    }

    /// Returns the size of the whole packet in `version`, fixed header included: the size
    /// that MQTT 5.0 Maximum Packet Size limits (section 3.1.2.11.4).
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        frame_len(self.remaining_len(version))
    }

    /// Writes the whole packet in `version`, fixed header included.
    ///
    /// CONNECT is always written in its own [`Connect::protocol`]. 3.x drops properties and
    /// MQTT 5.0-only reason codes; AUTH must not be sent to a 3.x peer.
    pub fn encode(&self, version: ProtocolVersion, dst: &mut BytesMut) {
        let packet_type = self.packet_type();
        match self {
            Packet::Connect(connect) => connect.encode(dst),
            Packet::ConnAck(connack) => connack.encode(version, dst),
            Packet::Publish(publish) => publish.encode(version, dst),
            Packet::PubAck(ack)
            | Packet::PubRec(ack)
            | Packet::PubRel(ack)
            | Packet::PubComp(ack) => ack.encode(packet_type, version, dst),
            Packet::Subscribe(subscribe) => subscribe.encode(version, dst),
            Packet::SubAck(suback) => suback.encode(version, dst),
            Packet::Unsubscribe(unsubscribe) => unsubscribe.encode(version, dst),
            Packet::UnsubAck(unsuback) => unsuback.encode(version, dst),
            Packet::PingReq | Packet::PingResp => {
                write_fixed_header(dst, packet_type.first_byte(), 0)
            }
            Packet::Disconnect(disconnect) => disconnect.encode(version, dst),
            Packet::Auth(auth) => auth.encode(version, dst),
        }
    }
}

/// CONNECT: the first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol name and level.
    pub protocol: ProtocolVersion,
    /// Clean Start (5.0) / Clean Session (3.x).
    pub clean_start: bool,
    /// Keep Alive, seconds; 0 disables it.
    pub keep_alive: u16,
    /// MQTT 5.0 properties (default for 3.x).
    pub properties: ConnectProperties,
    /// Client Identifier; may be empty.
    pub client_id: ByteString,
    /// Will message, if the Will Flag is set.
    pub last_will: Option<LastWill>,
    /// User Name.
    pub username: Option<ByteString>,
    /// Password.
    pub password: Option<Bytes>,
}

/// The will message of CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will Topic.
    pub topic: ByteString,
    /// Will Payload.
    pub payload: Bytes,
    /// Will Properties (MQTT 5.0).
    pub properties: WillProperties,
}

/// CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present.
    pub session_present: bool,
    /// Reason code; 3.x return codes are mapped with [`ReasonCode::to_v3_connack_return_code`].
    pub reason_code: ReasonCode,
    /// MQTT 5.0 properties.
    pub properties: ConnAckProperties,
}

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic Name; empty when a topic alias stands for it (MQTT 5.0).
    pub topic: ByteString,
    /// Packet Identifier, present exactly when QoS > 0.
    pub packet_id: Option<PacketId>,
    /// MQTT 5.0 properties.
    pub properties: PublishProperties,
    /// Application payload.
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// Reason code (MQTT 5.0; always Success for 3.x).
    pub reason_code: ReasonCode,
    /// MQTT 5.0 properties.
    pub properties: AckProperties,
}

/// Retain Handling subscription option (MQTT 5.0 section 3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send retained messages only if the subscription did not exist.
    SendIfNew = 1,
    /// 2: do not send retained messages.
    DoNotSend = 2,
}

/// Subscription options of one topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local (MQTT 5.0).
    pub no_local: bool,
    /// Retain As Published (MQTT 5.0).
    pub retain_as_published: bool,
    /// Retain Handling (MQTT 5.0).
    pub retain_handling: RetainHandling,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// MQTT 5.0 properties.
    pub properties: SubscribeProperties,
    /// Topic filters with their options; never empty [MQTT-3.8.3-3].
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
}

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// MQTT 5.0 properties.
    pub properties: AckProperties,
    /// One reason code per filter; 3.x allows only 0x00, 0x01, 0x02 and 0x80.
    pub reason_codes: Vec<ReasonCode>,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// MQTT 5.0 properties.
    pub properties: UnsubscribeProperties,
    /// Topic filters; never empty [MQTT-3.10.3-2].
    pub filters: Vec<ByteString>,
}

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// MQTT 5.0 properties.
    pub properties: AckProperties,
    /// One reason code per filter (MQTT 5.0); empty for 3.x.
    pub reason_codes: Vec<ReasonCode>,
}

/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Reason code (MQTT 5.0; Normal disconnection for 3.x).
    pub reason_code: ReasonCode,
    /// MQTT 5.0 properties.
    pub properties: DisconnectProperties,
}

/// AUTH (MQTT 5.0 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Reason code: Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// Properties.
    pub properties: AuthProperties,
}
