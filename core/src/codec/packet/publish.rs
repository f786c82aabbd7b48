//! PUBLISH (MQTT 3.1.1 section 3.3, MQTT 5.0 section 3.3): flags, topic, packet identifier,
//! properties and a zero-copy payload.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::fixed_header::{frame_len, write_fixed_header};
use crate::codec::primitives::{binary_len, read_packet_id, read_string, write_string};
use crate::codec::{DecodeError, PacketType, ProtocolVersion, PublishProperties, QoS};

use super::Publish;

/// PUBLISH fixed header flag bits (section 3.3.1).
const RETAIN: u8 = 0b0001;
const QOS_SHIFT: u8 = 1;
const QOS_MASK: u8 = 0b0110;
const DUP: u8 = 0b1000;

impl Publish {
    /// Decodes the body of a PUBLISH whose fixed header carried `flags`.
    ///
    /// The topic may be empty: with MQTT 5.0 a Topic Alias stands for it, and the broker checks
    /// topic names (emptiness in 3.x, wildcards) itself.
    ///
    /// # Errors
    /// [`DecodeError::InvalidQoS`] for QoS 3, [`DecodeError::Malformed`] for DUP with QoS 0,
    /// [`DecodeError::ZeroPacketId`], and the errors of the topic and properties.
    pub(crate) fn decode(
        src: &mut Bytes,
        flags: u8,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        // [MQTT-3.3.1-4] QoS 3 is malformed.
        let qos = QoS::from_u8((flags & QOS_MASK) >> QOS_SHIFT)?;
        let dup = flags & DUP != 0;
        // [MQTT-3.3.1-2] DUP must be 0 for QoS 0.
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::Malformed("dup flag set on a qos 0 publish"));
        }
        // [MQTT-3.3.2-1] the topic name is a UTF-8 string.
        let topic = read_string(src)?;
        // [MQTT-2.2.1-2] a packet identifier only for QoS 1 and 2, and never 0 [MQTT-2.2.1-3].
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            Some(read_packet_id(src)?)
        };
        let properties = if version.is_v5() {
            PublishProperties::decode(src)?
        } else {
            PublishProperties::default()
        };
        // The payload is the rest of the frame, shared with the read buffer.
        let payload = std::mem::take(src);
        Ok(Publish {
            dup,
            qos,
            retain: flags & RETAIN != 0,
            topic,
            packet_id,
            properties,
            payload,
        })
    }

    /// Returns the remaining length (body size) of this PUBLISH in `version`.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let mut len = binary_len(self.topic.len());
        if self.qos != QoS::AtMostOnce {
            len += 2;
        }
        if version.is_v5() {
            len += self.properties.encoded_len();
        }
        len + self.payload.len()
    }

    /// Returns the size of the whole PUBLISH, fixed header included, to compare with the
    /// peer's Maximum Packet Size.
    pub fn frame_len(&self, version: ProtocolVersion) -> usize {
        frame_len(self.encoded_len(version))
    }

    /// Writes this PUBLISH, fixed header included; properties are dropped for 3.x.
    ///
    /// The packet identifier is written exactly when QoS > 0; callers set it then.
    pub fn encode(&self, version: ProtocolVersion, dst: &mut BytesMut) {
        debug_assert_eq!(
            self.packet_id.is_some(),
            self.qos != QoS::AtMostOnce,
            "packet identifier must be present exactly when qos > 0"
        );
        debug_assert!(
            !(self.dup && self.qos == QoS::AtMostOnce),
            "dup must be 0 for qos 0 [MQTT-3.3.1-2]"
        );
        let mut flags = self.qos.as_u8() << QOS_SHIFT;
        if self.dup {
            flags |= DUP;
        }
        if self.retain {
            flags |= RETAIN;
        }
        write_fixed_header(
            dst,
            PacketType::Publish.first_byte() | flags,
            self.encoded_len(version),
        );
        write_string(dst, &self.topic);
        if self.qos != QoS::AtMostOnce {
            dst.put_u16(self.packet_id.map_or(0, |packet_id| packet_id.get()));
        }
        if version.is_v5() {
            self.properties.encode(dst);
        }
        dst.put_slice(&self.payload);
    }
}
