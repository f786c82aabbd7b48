//! CONNACK (MQTT 3.1.1 section 3.2, MQTT 5.0 section 3.2): session present, reason code or
//! 3.x return code, and properties.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::fixed_header::write_fixed_header;
use crate::codec::primitives::read_u8;
use crate::codec::{ConnAckProperties, DecodeError, PacketType, ProtocolVersion, ReasonCode};

use super::ConnAck;

/// Returns true for the reason codes MQTT 5.0 allows in CONNACK (section 3.2.2.2).
fn is_connack_reason_code(reason_code: ReasonCode) -> bool {
    matches!(
        reason_code.as_u8(),
        0x00 | 0x80..=0x8A | 0x8C | 0x90 | 0x95 | 0x97 | 0x99..=0x9D | 0x9F
    )
}

impl ConnAck {
    /// Decodes the body of a CONNACK.
    ///
    /// # Errors
    /// [`DecodeError::Malformed`] for reserved acknowledge flags, and
    /// [`DecodeError::InvalidReasonCode`] for a code not defined for CONNACK in `version`.
    pub(crate) fn decode(
        src: &mut Bytes,
        _flags: u8,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let acknowledge_flags = read_u8(src)?;
        let session_present = match version {
            // MQTT 3.1 has no Session Present: the whole byte is reserved and unused.
            ProtocolVersion::V3_1 => false,
            ProtocolVersion::V3_1_1 | ProtocolVersion::V5 => {
                // [MQTT-3.2.2-1] bits 7-1 are reserved and must be 0.
                if acknowledge_flags & 0xFE != 0 {
                    return Err(DecodeError::Malformed("reserved connack flags are set"));
                }
                acknowledge_flags & 0x01 != 0
            }
        };
        let code = read_u8(src)?;
        let (reason_code, properties) = if version.is_v5() {
            let reason_code = ReasonCode::from_u8(code)
                .filter(|&reason_code| is_connack_reason_code(reason_code))
                .ok_or(DecodeError::InvalidReasonCode(code))?;
            (reason_code, ConnAckProperties::decode(src)?)
        } else {
            let reason_code = ReasonCode::from_v3_connack_return_code(code)
                .ok_or(DecodeError::InvalidReasonCode(code))?;
            (reason_code, ConnAckProperties::default())
        };
        Ok(ConnAck {
            session_present,
            reason_code,
            properties,
        })
    }

    /// Returns the remaining length (body size) of this CONNACK in `version`.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() {
            2 + self.properties.encoded_len()
        } else {
            2
        }
    }

    /// Writes this CONNACK, fixed header included; 3.x gets the return code that
    /// [`ReasonCode::to_v3_connack_return_code`] maps the reason code to, and no properties.
    pub fn encode(&self, version: ProtocolVersion, dst: &mut BytesMut) {
        write_fixed_header(
            dst,
            PacketType::ConnAck.first_byte(),
            self.encoded_len(version),
        );
        let session_present = self.session_present && version != ProtocolVersion::V3_1;
        dst.put_u8(u8::from(session_present));
        if version.is_v5() {
            dst.put_u8(self.reason_code.as_u8());
            self.properties.encode(dst);
        } else {
            dst.put_u8(self.reason_code.to_v3_connack_return_code());
        }
    }
}
