//! SUBSCRIBE (MQTT 3.1.1 section 3.8, MQTT 5.0 section 3.8): packet identifier, properties and
//! topic filters with their subscription options.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::fixed_header::write_fixed_header;
use crate::codec::primitives::{binary_len, read_packet_id, read_string, read_u8, write_string};
use crate::codec::{
    DecodeError, PacketType, ProtocolVersion, QoS, RetainHandling, SubscribeProperties,
    SubscriptionOptions,
};

use super::Subscribe;

/// Subscription option bits (section 3.8.3.1).
const QOS_MASK: u8 = 0b0000_0011;
const NO_LOCAL: u8 = 0b0000_0100;
const RETAIN_AS_PUBLISHED: u8 = 0b0000_1000;
const RETAIN_HANDLING_SHIFT: u8 = 4;
const RETAIN_HANDLING_MASK: u8 = 0b0011_0000;
const V5_RESERVED: u8 = 0b1100_0000;
const V3_RESERVED: u8 = 0b1111_1100;

impl SubscriptionOptions {
    /// Parses the subscription options byte.
    ///
    /// # Errors
    /// [`DecodeError::Malformed`] for reserved bits (3.x: [MQTT-3.8.3-4]; 5.0: [MQTT-3.8.3-5])
    /// or Retain Handling 3, [`DecodeError::InvalidQoS`] for QoS 3.
    fn decode(options: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let reserved = if version.is_v5() {
            V5_RESERVED
        } else {
            V3_RESERVED
        };
        if options & reserved != 0 {
            return Err(DecodeError::Malformed(
                "reserved subscription option bits are set",
            ));
        }
        let qos = QoS::from_u8(options & QOS_MASK)?;
        let retain_handling = match (options & RETAIN_HANDLING_MASK) >> RETAIN_HANDLING_SHIFT {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::Malformed("retain handling 3")),
        };
        Ok(SubscriptionOptions {
            qos,
            no_local: options & NO_LOCAL != 0,
            retain_as_published: options & RETAIN_AS_PUBLISHED != 0,
            retain_handling,
        })
    }

    /// Returns the options byte; 3.x keeps only the QoS.
    fn to_u8(self, version: ProtocolVersion) -> u8 {
        let mut options = self.qos.as_u8();
        if version.is_v5() {
            if self.no_local {
                options |= NO_LOCAL;
            }
            if self.retain_as_published {
                options |= RETAIN_AS_PUBLISHED;
            }
            options |= (self.retain_handling as u8) << RETAIN_HANDLING_SHIFT;
        }
        options
    }
}

impl Subscribe {
    /// Decodes the body of a SUBSCRIBE.
    ///
    /// # Errors
    /// [`DecodeError::Protocol`] without any topic filter, the errors of the subscription
    /// options, [`DecodeError::ZeroPacketId`], and the errors of strings and properties.
    pub(crate) fn decode(
        src: &mut Bytes,
        _flags: u8,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(src)?;
        let properties = if version.is_v5() {
            SubscribeProperties::decode(src)?
        } else {
            SubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !src.is_empty() {
            let filter = read_string(src)?;
            let options = SubscriptionOptions::decode(read_u8(src)?, version)?;
            filters.push((filter, options));
        }
        // [MQTT-3.8.3-3] at least one topic filter.
        if filters.is_empty() {
            return Err(DecodeError::Protocol("subscribe without topic filters"));
        }
        Ok(Subscribe {
            packet_id,
            properties,
            filters,
        })
    }

    /// Returns the remaining length (body size) of this SUBSCRIBE in `version`.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let mut len = 2;
        if version.is_v5() {
            len += self.properties.encoded_len();
        }
        let filters_len: usize = self
            .filters
            .iter()
            .map(|(filter, _)| binary_len(filter.len()) + 1)
            .sum();
        len + filters_len
    }

    /// Writes this SUBSCRIBE, fixed header included; 3.x drops the properties and every
    /// option but the QoS.
    pub fn encode(&self, version: ProtocolVersion, dst: &mut BytesMut) {
        write_fixed_header(
            dst,
            PacketType::Subscribe.first_byte(),
            self.encoded_len(version),
        );
        dst.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(dst);
        }
        for (filter, options) in &self.filters {
            write_string(dst, filter);
            dst.put_u8(options.to_u8(version));
        }
    }
}
