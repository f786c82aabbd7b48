//! UNSUBACK (MQTT 3.1.1 section 3.11, MQTT 5.0 section 3.11): packet identifier, then in
//! MQTT 5.0 properties and one reason code per topic filter.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::fixed_header::write_fixed_header;
use crate::codec::primitives::{read_packet_id, read_u8};
use crate::codec::{AckProperties, DecodeError, PacketType, ProtocolVersion, ReasonCode};

use super::UnsubAck;

/// Returns true for the reason codes MQTT 5.0 allows in UNSUBACK (section 3.11.3).
fn is_unsuback_reason_code(reason_code: ReasonCode) -> bool {
    matches!(
        reason_code.as_u8(),
        0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91
    )
}

impl UnsubAck {
    /// Decodes the body of an UNSUBACK; in 3.x it is the packet identifier alone.
    ///
    /// # Errors
    /// [`DecodeError::InvalidReasonCode`] for a code not defined for UNSUBACK,
    /// [`DecodeError::ZeroPacketId`], and the errors of the properties.
    pub(crate) fn decode(
        src: &mut Bytes,
        _flags: u8,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(src)?;
        if !version.is_v5() {
            return Ok(UnsubAck {
                packet_id,
                properties: AckProperties::default(),
                reason_codes: Vec::new(),
            });
        }
        let properties = AckProperties::decode(src)?;
        let mut reason_codes = Vec::with_capacity(src.len());
        while !src.is_empty() {
            let code = read_u8(src)?;
            let reason_code = ReasonCode::from_u8(code)
                .filter(|&reason_code| is_unsuback_reason_code(reason_code))
                .ok_or(DecodeError::InvalidReasonCode(code))?;
            reason_codes.push(reason_code);
        }
        Ok(UnsubAck {
            packet_id,
            properties,
            reason_codes,
        })
    }

    /// Returns the remaining length (body size) of this UNSUBACK in `version`.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() {
            2 + self.properties.encoded_len() + self.reason_codes.len()
        } else {
            2
        }
    }

    /// Writes this UNSUBACK, fixed header included; 3.x has no payload.
    pub fn encode(&self, version: ProtocolVersion, dst: &mut BytesMut) {
        write_fixed_header(
            dst,
            PacketType::UnsubAck.first_byte(),
            self.encoded_len(version),
        );
        dst.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(dst);
            for &reason_code in &self.reason_codes {
                dst.put_u8(reason_code.as_u8());
            }
        }
    }
}
