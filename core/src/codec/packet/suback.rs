//! SUBACK (MQTT 3.1.1 section 3.9, MQTT 5.0 section 3.9): packet identifier, properties and
//! one reason code (3.x: return code) per topic filter.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::fixed_header::write_fixed_header;
use crate::codec::primitives::{read_packet_id, read_u8};
use crate::codec::{AckProperties, DecodeError, PacketType, ProtocolVersion, ReasonCode};

use super::SubAck;

/// Returns true when `code` is a SUBACK reason code (5.0) or return code (3.x) of `version`.
fn is_suback_code(code: u8, version: ProtocolVersion) -> bool {
    if version.is_v5() {
        // Section 3.9.3.
        matches!(
            code,
            0x00 | 0x01 | 0x02 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2
        )
    } else {
        // [MQTT-3.9.3-2] 3.1.1: 0x00, 0x01, 0x02 or 0x80 Failure.
        matches!(code, 0x00 | 0x01 | 0x02 | 0x80)
    }
}

/// Returns the code written for `reason_code`: 3.x knows only the granted QoS and 0x80.
fn suback_code(reason_code: ReasonCode, version: ProtocolVersion) -> u8 {
    let code = reason_code.as_u8();
    if version.is_v5() || matches!(code, 0x00..=0x02) {
        code
    } else {
        ReasonCode::UnspecifiedError.as_u8()
    }
}

impl SubAck {
    /// Decodes the body of a SUBACK.
    ///
    /// # Errors
    /// [`DecodeError::InvalidReasonCode`] for a code not defined for SUBACK in `version`,
    /// [`DecodeError::ZeroPacketId`], and the errors of the properties.
    pub(crate) fn decode(
        src: &mut Bytes,
        _flags: u8,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(src)?;
        let properties = if version.is_v5() {
            AckProperties::decode(src)?
        } else {
            AckProperties::default()
        };
        let mut reason_codes = Vec::with_capacity(src.len());
        while !src.is_empty() {
            let code = read_u8(src)?;
            let reason_code = ReasonCode::from_u8(code)
                .filter(|_| is_suback_code(code, version))
                .ok_or(DecodeError::InvalidReasonCode(code))?;
            reason_codes.push(reason_code);
        }
        Ok(SubAck {
            packet_id,
            properties,
            reason_codes,
        })
    }

    /// Returns the remaining length (body size) of this SUBACK in `version`.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let properties_len = if version.is_v5() {
            self.properties.encoded_len()
        } else {
            0
        };
        2 + properties_len + self.reason_codes.len()
    }

    /// Writes this SUBACK, fixed header included; 3.x drops the properties and reports every
    /// error code as 0x80 Failure.
    pub fn encode(&self, version: ProtocolVersion, dst: &mut BytesMut) {
        write_fixed_header(
            dst,
            PacketType::SubAck.first_byte(),
            self.encoded_len(version),
        );
        dst.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(dst);
        }
        for &reason_code in &self.reason_codes {
            dst.put_u8(suback_code(reason_code, version));
        }
    }
}
