//! AUTH (MQTT 5.0 section 3.15): reason code and authentication properties; MQTT 5.0 only.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::fixed_header::write_fixed_header;
use crate::codec::primitives::read_u8;
use crate::codec::{AuthProperties, DecodeError, PacketType, ProtocolVersion, ReasonCode};

use super::Auth;

/// Returns true for the reason codes allowed in AUTH (section 3.15.2.1).
fn is_auth_reason_code(reason_code: ReasonCode) -> bool {
    matches!(
        reason_code,
        ReasonCode::Success | ReasonCode::ContinueAuthentication | ReasonCode::ReAuthenticate
    )
}

impl Auth {
    /// Decodes the body of an AUTH; the caller has checked the version is MQTT 5.0.
    ///
    /// An empty body means Success without properties (section 3.15.2.1). A one-byte body (a
    /// reason code without Property Length) is accepted like in DISCONNECT.
    ///
    /// # Errors
    /// [`DecodeError::InvalidReasonCode`] for a code not defined for AUTH, and the errors of
    /// the properties.
    pub(crate) fn decode(
        src: &mut Bytes,
        _flags: u8,
        _version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        if src.is_empty() {
            return Ok(Auth {
                reason_code: ReasonCode::Success,
                properties: AuthProperties::default(),
            });
        }
        let code = read_u8(src)?;
        let reason_code = ReasonCode::from_u8(code)
            .filter(|&reason_code| is_auth_reason_code(reason_code))
            .ok_or(DecodeError::InvalidReasonCode(code))?;
        let properties = if src.is_empty() {
            AuthProperties::default()
        } else {
            AuthProperties::decode(src)?
        };
        Ok(Auth {
            reason_code,
            properties,
        })
    }

    /// Returns the remaining length (body size) of this AUTH: 0 for Success without
    /// properties, else the reason code and the property block.
    pub fn encoded_len(&self, _version: ProtocolVersion) -> usize {
        if self.reason_code == ReasonCode::Success && self.properties.is_empty() {
            0
        } else {
            1 + self.properties.encoded_len()
        }
    }

    /// Writes this AUTH, fixed header included. AUTH exists only in MQTT 5.0; the caller never
    /// sends it to a 3.x peer.
    pub fn encode(&self, version: ProtocolVersion, dst: &mut BytesMut) {
        debug_assert!(version.is_v5(), "AUTH is an MQTT 5.0 packet");
        let remaining_len = self.encoded_len(version);
        write_fixed_header(dst, PacketType::Auth.first_byte(), remaining_len);
        if remaining_len > 0 {
            dst.put_u8(self.reason_code.as_u8());
            self.properties.encode(dst);
        }
    }
}
