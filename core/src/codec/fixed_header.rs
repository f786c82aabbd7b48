//! The fixed header of every MQTT packet: packet type, flags and remaining length (section 2.1).

use bytes::{BufMut, BytesMut};

use crate::codec::primitives::{variable_int_len, write_variable_int, MAX_VARIABLE_INT};
use crate::codec::DecodeError;

/// The control packet type, the upper nibble of the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// 1: CONNECT.
    Connect = 1,
    /// 2: CONNACK.
    ConnAck = 2,
    /// 3: PUBLISH.
    Publish = 3,
    /// 4: PUBACK.
    PubAck = 4,
    /// 5: PUBREC.
    PubRec = 5,
    /// 6: PUBREL.
    PubRel = 6,
    /// 7: PUBCOMP.
    PubComp = 7,
    /// 8: SUBSCRIBE.
    Subscribe = 8,
    /// 9: SUBACK.
    SubAck = 9,
    /// 10: UNSUBSCRIBE.
    Unsubscribe = 10,
    /// 11: UNSUBACK.
    UnsubAck = 11,
    /// 12: PINGREQ.
    PingReq = 12,
    /// 13: PINGRESP.
    PingResp = 13,
    /// 14: DISCONNECT.
    Disconnect = 14,
    /// 15: AUTH (MQTT 5.0 only; reserved in 3.x).
    Auth = 15,
}

impl PacketType {
    /// Parses the packet type nibble; `None` for the reserved value 0 and values above 15.
    pub fn from_u8(value: u8) -> Option<PacketType> {
        use PacketType::*;
        let packet_type = match value {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        };
        Some(packet_type)
    }

    /// Returns the packet type nibble.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Returns the flags this packet type must carry, or `None` for PUBLISH whose flags are
    /// DUP, QoS and RETAIN [MQTT-2.1.3-1].
    pub fn required_flags(self) -> Option<u8> {
        match self {
            PacketType::Publish => None,
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => Some(0b0010),
            _ => Some(0),
        }
    }

    /// Returns the first byte of a packet of this type with its required flags; PUBLISH gets
    /// no flags.
    pub(crate) fn first_byte(self) -> u8 {
        (self.as_u8() << 4) | self.required_flags().unwrap_or(0)
    }
}

/// A parsed fixed header; the body has not been read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// Packet type (upper nibble of the first byte).
    packet_type: PacketType,
    /// Flags (lower nibble of the first byte), already checked for every type but PUBLISH.
    flags: u8,
    /// Remaining length: size of the variable header and payload.
    remaining_len: usize,
    /// Size of the fixed header itself: 1 byte plus 1 to 4 bytes of remaining length.
    header_len: usize,
}

impl FixedHeader {
    /// Reads the fixed header at the start of `src` without consuming or allocating anything.
    ///
    /// Returns `Ok(None)` while `src` holds less than the whole fixed header.
    ///
    /// # Errors
    /// [`DecodeError::InvalidPacketType`] for the reserved type 0, [`DecodeError::InvalidFlags`]
    /// when the reserved flag bits are wrong [MQTT-2.1.3-1], and
    /// [`DecodeError::MalformedRemainingLength`] when the remaining length would need more than
    /// four bytes [MQTT-1.5.5-1].
    pub fn peek(src: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
        let Some(&first_byte) = src.first() else {
            return Ok(None);
        };
        let type_nibble = first_byte >> 4;
        let Some(packet_type) = PacketType::from_u8(type_nibble) else {
            return Err(DecodeError::InvalidPacketType(type_nibble));
        };
        let flags = first_byte & 0x0F;
        if let Some(required_flags) = packet_type.required_flags() {
            // [MQTT-2.1.3-1] reserved flags must have the values of table 2-2.
            if flags != required_flags {
                return Err(DecodeError::InvalidFlags(type_nibble));
            }
        }
        // The remaining length is a variable byte integer of at most four bytes. Non-minimal
        // encodings (e.g. 0x80 0x00) are accepted, as most brokers do.
        let mut remaining_len = 0usize;
        for (byte_idx, &byte) in src[1..].iter().take(4).enumerate() {
            remaining_len |= usize::from(byte & 0x7F) << (7 * byte_idx);
            if byte & 0x80 == 0 {
                return Ok(Some(FixedHeader {
                    packet_type,
                    flags,
                    remaining_len,
                    header_len: byte_idx + 2,
                }));
            }
            if byte_idx == 3 {
                return Err(DecodeError::MalformedRemainingLength);
            }
        }
        Ok(None)
    }

    /// Returns the packet type.
    pub fn packet_type(&self) -> PacketType {
        self.packet_type
    }

    /// Returns the four flag bits of the first byte.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Returns the remaining length: variable header plus payload.
    pub fn remaining_len(&self) -> usize {
        self.remaining_len
    }

    /// Returns the size of the fixed header in bytes (2 to 5).
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Returns the size of the whole packet, fixed header included, which is what MQTT 5.0
    /// Maximum Packet Size limits.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.remaining_len
    }
}

/// Returns the size of a whole packet whose body is `remaining_len` bytes.
pub(crate) fn frame_len(remaining_len: usize) -> usize {
    1 + variable_int_len(remaining_len) + remaining_len
}

/// Reserves room for the whole packet and writes its fixed header.
///
/// Callers guarantee `remaining_len` fits a variable byte integer; packets decoded from the wire
/// always do, and the broker bounds what it builds by the maximum packet size.
pub(crate) fn write_fixed_header(dst: &mut BytesMut, first_byte: u8, remaining_len: usize) {
    debug_assert!(
        remaining_len <= MAX_VARIABLE_INT,
        "remaining length {remaining_len} exceeds 268,435,455"
    );
    dst.reserve(frame_len(remaining_len));
    dst.put_u8(first_byte);
    write_variable_int(dst, remaining_len);
}
