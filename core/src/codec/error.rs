//! Decode and encode errors of the MQTT codec, each mapped to exactly one reason code.

use crate::codec::ReasonCode;

/// Why a byte sequence is not a valid MQTT packet.
///
/// Every variant maps to exactly one reason code through [`DecodeError::reason_code`], which the
/// broker sends in the DISCONNECT (MQTT 5) before closing the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet is larger than the maximum packet size; detected from the fixed header alone.
    #[error("packet of {size} bytes exceeds the maximum packet size")]
    PacketTooLarge {
        /// Whole packet size in bytes, fixed header included.
        size: usize,
    },
    /// The variable byte integer of the remaining length uses more than four bytes.
    #[error("malformed remaining length")]
    MalformedRemainingLength,
    /// The packet type nibble is 0 or 15 (reserved), or not allowed in this direction.
    #[error("invalid packet type {0}")]
    InvalidPacketType(u8),
    /// Reserved flag bits of the fixed header have the wrong value.
    #[error("invalid fixed header flags for packet type {0}")]
    InvalidFlags(u8),
    /// The packet ended before a field was complete, or has trailing bytes.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// A string is not well-formed UTF-8 or contains a forbidden code point.
    #[error("invalid utf-8 string")]
    InvalidUtf8,
    /// The protocol name of CONNECT is neither `MQTT` nor `MQIsdp`.
    #[error("invalid protocol name")]
    InvalidProtocolName,
    /// The protocol level of CONNECT is not 3, 4 or 5.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    /// A QoS field holds 3.
    #[error("invalid qos")]
    InvalidQoS,
    /// A packet identifier that must be non-zero is zero.
    #[error("packet identifier is zero")]
    ZeroPacketId,
    /// A reason code is not allowed in this packet.
    #[error("invalid reason code {0:#04x}")]
    InvalidReasonCode(u8),
    /// A property identifier is unknown or not allowed in this packet.
    #[error("invalid property {0:#04x}")]
    InvalidProperty(u8),
    /// A property that may appear once appears twice.
    #[error("duplicate property {0:#04x}")]
    DuplicateProperty(u8),
    /// A property value is out of range (e.g. receive maximum 0).
    #[error("invalid value for property {0:#04x}")]
    InvalidPropertyValue(u8),
    /// The packet is well-formed but breaks a protocol rule (e.g. SUBSCRIBE without filters).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

impl DecodeError {
    /// Returns the reason code that reports this error to the peer.
    pub fn reason_code(self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            DecodeError::UnsupportedProtocolVersion(_) | DecodeError::InvalidProtocolName => {
                ReasonCode::UnsupportedProtocolVersion
            }
            DecodeError::Protocol(_)
            | DecodeError::DuplicateProperty(_)
            | DecodeError::InvalidPropertyValue(_) => ReasonCode::ProtocolError,
            DecodeError::MalformedRemainingLength
            | DecodeError::InvalidPacketType(_)
            | DecodeError::InvalidFlags(_)
            | DecodeError::Malformed(_)
            | DecodeError::InvalidUtf8
            | DecodeError::InvalidQoS
            | DecodeError::ZeroPacketId
            | DecodeError::InvalidReasonCode(_)
            | DecodeError::InvalidProperty(_) => ReasonCode::MalformedPacket,
        }
    }
}
