//! PUBACK, PUBREC, PUBREL and PUBCOMP (MQTT 5.0 sections 3.4 to 3.7), which share one layout:
//! packet identifier, then in MQTT 5.0 an optional reason code and optional properties.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::fixed_header::write_fixed_header;
use crate::codec::primitives::{read_packet_id, read_u8};
use crate::codec::{AckProperties, DecodeError, PacketType, ProtocolVersion, ReasonCode};

use super::Ack;

/// Returns true when `reason_code` is allowed in an ack of `packet_type`.
fn is_ack_reason_code(packet_type: PacketType, reason_code: ReasonCode) -> bool {
    match packet_type {
        // Sections 3.4.2.1 and 3.5.2.1.
        PacketType::PubAck | PacketType::PubRec => matches!(
            reason_code.as_u8(),
            0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
        ),
        // Sections 3.6.2.1 and 3.7.2.1.
        PacketType::PubRel | PacketType::PubComp => matches!(reason_code.as_u8(), 0x00 | 0x92),
        _ => false,
    }
}

impl Ack {
    /// Decodes the body of a PUBACK, PUBREC, PUBREL or PUBCOMP (given as `packet_type`).
    ///
    /// In MQTT 5.0 a body of 2 bytes means Success without properties and one of 3 bytes a
    /// reason code without properties (section 3.4.2.1); in 3.x the body is exactly 2 bytes.
    ///
    /// # Errors
    /// [`DecodeError::ZeroPacketId`], [`DecodeError::InvalidReasonCode`] for a code not defined
    /// for `packet_type`, and the errors of the properties.
    pub(crate) fn decode(
        src: &mut Bytes,
        packet_type: PacketType,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(src)?;
        if !version.is_v5() || src.is_empty() {
            return Ok(Ack {
                packet_id,
                reason_code: ReasonCode::Success,
                properties: AckProperties::default(),
            });
        }
        let code = read_u8(src)?;
        let reason_code = ReasonCode::from_u8(code)
            .filter(|&reason_code| is_ack_reason_code(packet_type, reason_code))
            .ok_or(DecodeError::InvalidReasonCode(code))?;
        // Section 3.4.2.2.1: with a remaining length below 4 there is no Property Length.
        let properties = if src.is_empty() {
            AckProperties::default()
        } else {
            AckProperties::decode(src)?
        };
        Ok(Ack {
            packet_id,
            reason_code,
            properties,
        })
    }

    /// Returns the remaining length (body size) of this ack in `version`, using the short
    /// forms of MQTT 5.0 when the reason code is Success or there are no properties.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        if !version.is_v5() {
            return 2;
        }
        match (self.reason_code, self.properties.is_empty()) {
            (ReasonCode::Success, true) => 2,
            (_, true) => 3,
            (_, false) => 3 + self.properties.encoded_len(),
        }
    }

    /// Writes this ack as a packet of `packet_type` (PUBACK, PUBREC, PUBREL or PUBCOMP),
    /// fixed header included; 3.x drops the reason code and properties.
    pub fn encode(&self, packet_type: PacketType, version: ProtocolVersion, dst: &mut BytesMut) {
        debug_assert!(
            matches!(
                packet_type,
                PacketType::PubAck | PacketType::PubRec | PacketType::PubRel | PacketType::PubComp
            ),
            "{packet_type:?} is not an ack"
        );
        let remaining_len = self.encoded_len(version);
        write_fixed_header(dst, packet_type.first_byte(), remaining_len);
        dst.put_u16(self.packet_id.get());
        if remaining_len > 2 {
            dst.put_u8(self.reason_code.as_u8());
        }
        if remaining_len > 3 {
            self.properties.encode(dst);
        }
    }
}
