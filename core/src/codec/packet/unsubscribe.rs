//! UNSUBSCRIBE (MQTT 3.1.1 section 3.10, MQTT 5.0 section 3.10): packet identifier, properties
//! and topic filters.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::fixed_header::write_fixed_header;
use crate::codec::primitives::{binary_len, read_packet_id, read_string, write_string};
use crate::codec::{DecodeError, PacketType, ProtocolVersion, UnsubscribeProperties};

use super::Unsubscribe;

impl Unsubscribe {
    /// Decodes the body of an UNSUBSCRIBE.
    ///
    /// # Errors
    /// [`DecodeError::Protocol`] without any topic filter, [`DecodeError::ZeroPacketId`], and
    /// the errors of strings and properties.
    pub(crate) fn decode(
        src: &mut Bytes,
        _flags: u8,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(src)?;
        let properties = if version.is_v5() {
            UnsubscribeProperties::decode(src)?
        } else {
            UnsubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !src.is_empty() {
            filters.push(read_string(src)?);
        }
        // [MQTT-3.10.3-2] at least one topic filter.
        if filters.is_empty() {
            return Err(DecodeError::Protocol("unsubscribe without topic filters"));
        }
        Ok(Unsubscribe {
            packet_id,
            properties,
            filters,
        })
    }

    /// Returns the remaining length (body size) of this UNSUBSCRIBE in `version`.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let mut len = 2;
        if version.is_v5() {
            len += self.properties.encoded_len();
        }
        let filters_len: usize = self
            .filters
            .iter()
            .map(|filter| binary_len(filter.len()))
            .sum();
        len + filters_len
    }

    /// Writes this UNSUBSCRIBE, fixed header included; 3.x drops the properties.
    pub fn encode(&self, version: ProtocolVersion, dst: &mut BytesMut) {
        write_fixed_header(
            dst,
            PacketType::Unsubscribe.first_byte(),
            self.encoded_len(version),
        );
        dst.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(dst);
        }
        for filter in &self.filters {
            write_string(dst, filter);
        }
    }
}
