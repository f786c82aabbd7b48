//! DISCONNECT (MQTT 3.1.1 section 3.14, MQTT 5.0 section 3.14): empty in 3.x; an optional
//! reason code and optional properties in MQTT 5.0.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::fixed_header::write_fixed_header;
use crate::codec::primitives::read_u8;
use crate::codec::{DecodeError, DisconnectProperties, PacketType, ProtocolVersion, ReasonCode};

use super::Disconnect;

/// Returns true for the reason codes MQTT 5.0 allows in DISCONNECT (section 3.14.2.1).
fn is_disconnect_reason_code(reason_code: ReasonCode) -> bool {
    matches!(
        reason_code.as_u8(),
        0x00 | 0x04 | 0x80..=0x83 | 0x87 | 0x89 | 0x8B | 0x8D..=0x90 | 0x93..=0xA2
    )
}

impl Disconnect {
    /// Decodes the body of a DISCONNECT.
    ///
    /// In MQTT 5.0 an empty body means Normal disconnection and a one-byte body a reason code
    /// without properties (section 3.14.2.2); in 3.x the body is empty.
    ///
    /// # Errors
    /// [`DecodeError::InvalidReasonCode`] for a code not defined for DISCONNECT, and the errors
    /// of the properties.
    pub(crate) fn decode(
        src: &mut Bytes,
        _flags: u8,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        if !version.is_v5() || src.is_empty() {
            return Ok(Disconnect {
                reason_code: ReasonCode::NORMAL_DISCONNECTION,
                properties: DisconnectProperties::default(),
            });
        }
        let code = read_u8(src)?;
        let reason_code = ReasonCode::from_u8(code)
            .filter(|&reason_code| is_disconnect_reason_code(reason_code))
            .ok_or(DecodeError::InvalidReasonCode(code))?;
        let properties = if src.is_empty() {
            DisconnectProperties::default()
        } else {
            DisconnectProperties::decode(src)?
        };
        Ok(Disconnect {
            reason_code,
            properties,
        })
    }

    /// Returns the remaining length (body size) of this DISCONNECT in `version`, using the
    /// short forms of MQTT 5.0.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        if !version.is_v5() {
            return 0;
        }
        // A non-zero reason code is always followed by the property length (0 when empty):
        // the one-byte form is legal, but several client libraries cannot decode it.
        match (self.reason_code, self.properties.is_empty()) {
            (ReasonCode::Success, true) => 0,
            _ => 1 + self.properties.encoded_len(),
        }
    }

    /// Writes this DISCONNECT, fixed header included; 3.x drops the reason code and
    /// properties.
    pub fn encode(&self, version: ProtocolVersion, dst: &mut BytesMut) {
        let remaining_len = self.encoded_len(version);
        write_fixed_header(dst, PacketType::Disconnect.first_byte(), remaining_len);
        if remaining_len > 0 {
            dst.put_u8(self.reason_code.as_u8());
        }
        if remaining_len > 0 {
            self.properties.encode(dst);
        }
    }
}
