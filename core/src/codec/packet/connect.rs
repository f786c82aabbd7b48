//! CONNECT (MQTT 3.1.1 section 3.1, MQTT 5.0 section 3.1): protocol detection, connect flags,
//! will and credentials.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::fixed_header::write_fixed_header;
use crate::codec::primitives::{
    binary_len, read_binary, read_exact, read_string, read_u16, read_u8, write_binary, write_string,
};
use crate::codec::{
    ConnectProperties, DecodeError, LastWill, PacketType, ProtocolVersion, QoS, WillProperties,
};

use super::Connect;

/// Connect flag bits (section 3.1.2.3).
const RESERVED: u8 = 0b0000_0001;
const CLEAN_START: u8 = 0b0000_0010;
const WILL_FLAG: u8 = 0b0000_0100;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_QOS_MASK: u8 = 0b0001_1000;
const WILL_RETAIN: u8 = 0b0010_0000;
const PASSWORD_FLAG: u8 = 0b0100_0000;
const USERNAME_FLAG: u8 = 0b1000_0000;

/// Protocol name of MQTT 3.1.1 and 5.0.
const MQTT: &[u8] = b"MQTT";
/// Protocol name of MQTT 3.1.
const MQISDP: &[u8] = b"MQIsdp";

impl ProtocolVersion {
    /// Returns the protocol name written in CONNECT.
    fn protocol_name(self) -> &'static [u8] {
        match self {
            ProtocolVersion::V3_1 => MQISDP,
            ProtocolVersion::V3_1_1 | ProtocolVersion::V5 => MQTT,
        }
    }
}

/// Reads the protocol name and level and returns the version they name.
fn read_protocol(src: &mut Bytes) -> Result<ProtocolVersion, DecodeError> {
    let name_len = read_u16(src)?;
    let name = read_exact(src, usize::from(name_len))?;
    let level = read_u8(src)?;
    // [MQTT-3.1.2-1] the protocol name must be "MQTT" ("MQIsdp" for 3.1), else the server may
    // close the connection without CONNACK.
    match (&name[..], level) {
        (MQISDP, 3) => Ok(ProtocolVersion::V3_1),
        (MQTT, 4) => Ok(ProtocolVersion::V3_1_1),
        (MQTT, 5) => Ok(ProtocolVersion::V5),
        // [MQTT-3.1.2-2] an unsupported level gets CONNACK 0x84 (3.x: return code 0x01).
        (MQISDP | MQTT, _) => Err(DecodeError::UnsupportedProtocolVersion(level)),
        _ => Err(DecodeError::InvalidProtocolName),
    }
}

impl Connect {
    /// Decodes the body of a CONNECT; the protocol name and level decide the version.
    ///
    /// # Errors
    /// [`DecodeError::InvalidProtocolName`], [`DecodeError::UnsupportedProtocolVersion`], and
    /// the malformed-packet errors of the connect flags, properties and payload.
    pub(crate) fn decode(src: &mut Bytes, _flags: u8) -> Result<Self, DecodeError> {
        let protocol = read_protocol(src)?;
        let connect_flags = read_u8(src)?;
        // [MQTT-3.1.2-3] the reserved flag must be 0.
        if connect_flags & RESERVED != 0 {
            return Err(DecodeError::Malformed("reserved connect flag is set"));
        }
        let will_flag = connect_flags & WILL_FLAG != 0;
        let will_qos_bits = (connect_flags & WILL_QOS_MASK) >> WILL_QOS_SHIFT;
        let will_retain = connect_flags & WILL_RETAIN != 0;
        if !will_flag {
            // [MQTT-3.1.2-11] (3.1.1: [MQTT-3.1.2-13]) no will means will QoS 0.
            if will_qos_bits != 0 {
                return Err(DecodeError::Malformed("will qos set without will flag"));
            }
            // [MQTT-3.1.2-13] (3.1.1: [MQTT-3.1.2-15]) no will means will retain 0.
            if will_retain {
                return Err(DecodeError::Malformed("will retain set without will flag"));
            }
        }
        // [MQTT-3.1.2-12] (3.1.1: [MQTT-3.1.2-14]) will QoS 3 is malformed.
        let will_qos = QoS::from_u8(will_qos_bits)?;
        let username_flag = connect_flags & USERNAME_FLAG != 0;
        let password_flag = connect_flags & PASSWORD_FLAG != 0;
        // [MQTT-3.1.2-22] 3.1.1 forbids a password without a user name; 5.0 allows it and
        // 3.1 brokers traditionally tolerate it.
        if protocol == ProtocolVersion::V3_1_1 && password_flag && !username_flag {
            return Err(DecodeError::Malformed(
                "password flag set without user name flag",
            ));
        }
        let keep_alive = read_u16(src)?;
        let properties = if protocol.is_v5() {
            ConnectProperties::decode(src)?
        } else {
            ConnectProperties::default()
        };
        // [MQTT-3.1.3-1] payload order: client id, will properties, will topic, will payload,
        // user name, password.
        let client_id = read_string(src)?;
        let last_will = if will_flag {
            let will_properties = if protocol.is_v5() {
                WillProperties::decode(src)?
            } else {
                WillProperties::default()
            };
            let topic = read_string(src)?;
            let payload = read_binary(src)?;
            Some(LastWill {
                qos: will_qos,
                retain: will_retain,
                topic,
                payload,
                properties: will_properties,
            })
        } else {
            None
        };
        let username = if username_flag {
            Some(read_string(src)?)
        } else {
            None
        };
        let password = if password_flag {
            Some(read_binary(src)?)
        } else {
            None
        };
        if !src.is_empty() {
            return Err(DecodeError::Malformed("bytes after the last connect field"));
        }
        Ok(Connect {
            protocol,
            clean_start: connect_flags & CLEAN_START != 0,
            keep_alive,
            properties,
            client_id,
            last_will,
            username,
            password,
        })
    }

    /// Returns the remaining length (body size) of this CONNECT in its own protocol version.
    pub fn encoded_len(&self) -> usize {
        let is_v5 = self.protocol.is_v5();
        let mut len = binary_len(self.protocol.protocol_name().len()) + 1 + 1 + 2;
        if is_v5 {
            len += self.properties.encoded_len();
        }
        len += binary_len(self.client_id.len());
        if let Some(last_will) = &self.last_will {
            if is_v5 {
                len += last_will.properties.encoded_len();
            }
            len += binary_len(last_will.topic.len()) + binary_len(last_will.payload.len());
        }
        if let Some(username) = &self.username {
            len += binary_len(username.len());
        }
        if let Some(password) = &self.password {
            len += binary_len(password.len());
        }
        len
    }

    /// Writes this CONNECT, fixed header included, in its own protocol version; properties are
    /// dropped for 3.x.
    pub fn encode(&self, dst: &mut BytesMut) {
        let is_v5 = self.protocol.is_v5();
        write_fixed_header(dst, PacketType::Connect.first_byte(), self.encoded_len());
        write_binary(dst, self.protocol.protocol_name());
        dst.put_u8(self.protocol.level());
        let mut connect_flags = 0;
        if self.clean_start {
            connect_flags |= CLEAN_START;
        }
        if let Some(last_will) = &self.last_will {
            connect_flags |= WILL_FLAG | (last_will.qos.as_u8() << WILL_QOS_SHIFT);
            if last_will.retain {
                connect_flags |= WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            connect_flags |= USERNAME_FLAG;
        }
        if self.password.is_some() {
            connect_flags |= PASSWORD_FLAG;
        }
        dst.put_u8(connect_flags);
        dst.put_u16(self.keep_alive);
        if is_v5 {
            self.properties.encode(dst);
        }
        write_string(dst, &self.client_id);
        if let Some(last_will) = &self.last_will {
            if is_v5 {
                last_will.properties.encode(dst);
            }
            write_string(dst, &last_will.topic);
            write_binary(dst, &last_will.payload);
        }
        if let Some(username) = &self.username {
            write_string(dst, username);
        }
        if let Some(password) = &self.password {
            write_binary(dst, password);
        }
    }
}
