//! Zero-copy MQTT 3.1, 3.1.1 and 5.0 codec on `bytes`.
//!
//! Decoding runs in two phases: [`FixedHeader::peek`] reads the fixed header and remaining length
//! and the maximum packet size is checked *before* any byte of the body is reserved or read;
//! then the frame is split off as a refcounted [`Bytes`] and each packet parses its body from it,
//! so topics, payloads and binary properties are slices of the read buffer, not copies.
//!
//! This module depends only on `bytes`, `bytestring` and `thiserror` so it can be fuzzed alone.
//!
//! # Layout
//! - `fixed_header`: first byte, remaining length, frame size.
//! - `primitives`: integers, variable byte integers, strings and binary data.
//! - `properties`: MQTT 5.0 properties of every packet.
//! - `reason_code`: reason codes and MQTT 3.x return codes.
//! - `packet/*`: one file per packet, each with `decode`, `encoded_len` and `encode`.

mod error;
mod fixed_header;
mod packet;
mod primitives;
mod properties;
mod reason_code;

use bytes::{Buf, Bytes, BytesMut};

pub use bytestring::ByteString;
pub use error::DecodeError;
pub use fixed_header::{FixedHeader, PacketType};
pub use packet::{
    Ack, Auth, ConnAck, Connect, Disconnect, LastWill, Publish, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe,
};
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, UserProperties, WillProperties,
};
pub use reason_code::ReasonCode;

/// A non-zero MQTT packet identifier [MQTT-2.2.1-3].
pub type PacketId = std::num::NonZeroU16;

/// The MQTT protocol level negotiated by CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1, protocol name `MQIsdp`, level 3.
    V3_1,
    /// MQTT 3.1.1, protocol name `MQTT`, level 4.
    V3_1_1,
    /// MQTT 5.0, protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    /// Returns the protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V3_1 => 3,
            ProtocolVersion::V3_1_1 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// Returns true for MQTT 5.0, the only version with properties and reason codes.
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// Quality of service of a PUBLISH or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// At most once.
    #[default]
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// Parses the two QoS bits; 3 is malformed [MQTT-3.3.1-4].
    pub fn from_u8(value: u8) -> Result<QoS, DecodeError> {
        match value {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            _ => Err(DecodeError::InvalidQoS),
        }
    }

    /// Returns the wire value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// One MQTT control packet of any protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT.
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(Ack),
    /// PUBREC.
    PubRec(Ack),
    /// PUBREL.
    PubRel(Ack),
    /// PUBCOMP.
    PubComp(Ack),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (MQTT 5.0 only).
    Auth(Auth),
}

/// Decodes one packet from `src`; `Ok(None)` means more bytes are needed.
///
/// `version` is `None` until CONNECT has been decoded; then only CONNECT is accepted and its
/// protocol level decides how it is parsed. Afterwards pass the negotiated version.
///
/// # Errors
/// Returns a [`DecodeError`] for any packet that is malformed, breaks a protocol rule checked at
/// this level, or exceeds `max_packet_size` (checked before the body is read).
pub fn decode_packet(
    src: &mut BytesMut,
    max_packet_size: usize,
    version: Option<ProtocolVersion>,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = FixedHeader::peek(src)? else {
        return Ok(None);
    };
    let frame_len = header.frame_len();
    // [MQTT-3.1.2-24] checked on the fixed header alone, before the body is reserved or read.
    if frame_len > max_packet_size {
        return Err(DecodeError::PacketTooLarge { size: frame_len });
    }
    // [MQTT-3.1.0-1] nothing is reserved for a first packet that is not CONNECT.
    if version.is_none() && header.packet_type() != PacketType::Connect {
        return Err(DecodeError::Protocol("first packet must be CONNECT"));
    }
    if src.len() < frame_len {
        src.reserve(frame_len - src.len());
        return Ok(None);
    }
    let mut frame: Bytes = src.split_to(frame_len).freeze();
    frame.advance(header.header_len());
    Packet::decode_body(header, frame, version).map(Some)
}

#[cfg(test)]
mod tests;
