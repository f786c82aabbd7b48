//! Decoding of the property block of each packet kind, with the per-packet allowed set,
//! duplicate detection and value range checks of MQTT 5.0 section 2.2.2.

use bytes::Bytes;

use super::id::*;
use crate::codec::primitives::{
    read_binary, read_exact, read_string, read_string_pair, read_u16, read_u32, read_u8,
    read_variable_int,
};
use crate::codec::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DecodeError,
    DisconnectProperties, PacketId, PublishProperties, QoS, SubscribeProperties,
    UnsubscribeProperties, WillProperties,
};

/// Splits the property block (Property Length, then that many bytes) off `src`.
fn read_block(src: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = read_variable_int(src)?;
    // A u32 always fits in usize on the 32- and 64-bit targets we build for.
    read_exact(src, len as usize)
}

/// Reads the next property identifier.
///
/// Identifiers are variable byte integers, but every defined one is below 0x80; a first byte
/// with the continuation bit is therefore an unknown identifier and rejected by the caller.
fn read_id(block: &mut Bytes) -> Result<u8, DecodeError> {
    read_u8(block)
}

/// Stores a property that may appear at most once.
fn set_once<T>(slot: &mut Option<T>, value: T, id: u8) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty(id));
    }
    *slot = Some(value);
    Ok(())
}

/// Reads a byte property that is a boolean: 0 or 1, anything else is a protocol error.
fn read_bool(block: &mut Bytes, id: u8) -> Result<bool, DecodeError> {
    match read_u8(block)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::InvalidPropertyValue(id)),
    }
}

/// Reads the Payload Format Indicator: 0 (bytes) or 1 (UTF-8).
fn read_payload_format_indicator(block: &mut Bytes) -> Result<u8, DecodeError> {
    let value = read_u8(block)?;
    if value > 1 {
        return Err(DecodeError::InvalidPropertyValue(PAYLOAD_FORMAT_INDICATOR));
    }
    Ok(value)
}

/// Reads a two-byte property whose value 0 is a protocol error (Receive Maximum).
fn read_nonzero_u16(block: &mut Bytes, id: u8) -> Result<u16, DecodeError> {
    let value = read_u16(block)?;
    if value == 0 {
        return Err(DecodeError::InvalidPropertyValue(id));
    }
    Ok(value)
}

/// Reads a four-byte property whose value 0 is a protocol error (Maximum Packet Size).
fn read_nonzero_u32(block: &mut Bytes, id: u8) -> Result<u32, DecodeError> {
    let value = read_u32(block)?;
    if value == 0 {
        return Err(DecodeError::InvalidPropertyValue(id));
    }
    Ok(value)
}

/// Reads a Topic Alias; 0 is not permitted [MQTT-3.3.2-8].
fn read_topic_alias(block: &mut Bytes) -> Result<PacketId, DecodeError> {
    let value = read_u16(block)?;
    PacketId::new(value).ok_or(DecodeError::InvalidPropertyValue(TOPIC_ALIAS))
}

/// Reads a Subscription Identifier, 1 to 268,435,455; 0 is a protocol error.
fn read_subscription_identifier(block: &mut Bytes) -> Result<u32, DecodeError> {
    let value = read_variable_int(block)?;
    if value == 0 {
        return Err(DecodeError::InvalidPropertyValue(SUBSCRIPTION_IDENTIFIER));
    }
    Ok(value)
}

/// Reads Maximum QoS, which is 0 or 1 (absent means 2).
fn read_maximum_qos(block: &mut Bytes) -> Result<QoS, DecodeError> {
    match read_u8(block)? {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        _ => Err(DecodeError::InvalidPropertyValue(MAXIMUM_QOS)),
    }
}

impl ConnectProperties {
    /// Decodes the properties of CONNECT (section 3.1.2.11).
    pub(crate) fn decode(src: &mut Bytes) -> Result<Self, DecodeError> {
        let mut block = read_block(src)?;
        let mut props = Self::default();
        while !block.is_empty() {
            let id = read_id(&mut block)?;
            let b = &mut block;
            match id {
                SESSION_EXPIRY_INTERVAL => {
                    set_once(&mut props.session_expiry_interval, read_u32(b)?, id)?
                }
                RECEIVE_MAXIMUM => {
                    set_once(&mut props.receive_maximum, read_nonzero_u16(b, id)?, id)?
                }
                MAXIMUM_PACKET_SIZE => {
                    set_once(&mut props.maximum_packet_size, read_nonzero_u32(b, id)?, id)?
                }
                TOPIC_ALIAS_MAXIMUM => set_once(&mut props.topic_alias_maximum, read_u16(b)?, id)?,
                REQUEST_RESPONSE_INFORMATION => set_once(
                    &mut props.request_response_information,
                    read_bool(b, id)?,
                    id,
                )?,
                REQUEST_PROBLEM_INFORMATION => set_once(
                    &mut props.request_problem_information,
                    read_bool(b, id)?,
                    id,
                )?,
                USER_PROPERTY => props.user_properties.push(read_string_pair(b)?),
                AUTHENTICATION_METHOD => {
                    set_once(&mut props.authentication_method, read_string(b)?, id)?
                }
                AUTHENTICATION_DATA => {
                    set_once(&mut props.authentication_data, read_binary(b)?, id)?
                }
                _ => return Err(DecodeError::InvalidProperty(id)),
            }
        }
        Ok(props)
    }
}

impl WillProperties {
    /// Decodes the will properties of CONNECT (section 3.1.3.2).
    pub(crate) fn decode(src: &mut Bytes) -> Result<Self, DecodeError> {
        let mut block = read_block(src)?;
        let mut props = Self::default();
        while !block.is_empty() {
            let id = read_id(&mut block)?;
            let b = &mut block;
            match id {
                WILL_DELAY_INTERVAL => set_once(&mut props.will_delay_interval, read_u32(b)?, id)?,
                PAYLOAD_FORMAT_INDICATOR => set_once(
                    &mut props.payload_format_indicator,
                    read_payload_format_indicator(b)?,
                    id,
                )?,
                MESSAGE_EXPIRY_INTERVAL => {
                    set_once(&mut props.message_expiry_interval, read_u32(b)?, id)?
                }
                CONTENT_TYPE => set_once(&mut props.content_type, read_string(b)?, id)?,
                RESPONSE_TOPIC => set_once(&mut props.response_topic, read_string(b)?, id)?,
                CORRELATION_DATA => set_once(&mut props.correlation_data, read_binary(b)?, id)?,
                USER_PROPERTY => props.user_properties.push(read_string_pair(b)?),
                _ => return Err(DecodeError::InvalidProperty(id)),
            }
        }
        Ok(props)
    }
}

impl ConnAckProperties {
    /// Decodes the properties of CONNACK (section 3.2.2.3).
    pub(crate) fn decode(src: &mut Bytes) -> Result<Self, DecodeError> {
        let mut block = read_block(src)?;
        let mut props = Self::default();
        while !block.is_empty() {
            let id = read_id(&mut block)?;
            let b = &mut block;
            match id {
                SESSION_EXPIRY_INTERVAL => {
                    set_once(&mut props.session_expiry_interval, read_u32(b)?, id)?
                }
                RECEIVE_MAXIMUM => {
                    set_once(&mut props.receive_maximum, read_nonzero_u16(b, id)?, id)?
                }
                MAXIMUM_QOS => set_once(&mut props.maximum_qos, read_maximum_qos(b)?, id)?,
                RETAIN_AVAILABLE => set_once(&mut props.retain_available, read_bool(b, id)?, id)?,
                MAXIMUM_PACKET_SIZE => {
                    set_once(&mut props.maximum_packet_size, read_nonzero_u32(b, id)?, id)?
                }
                ASSIGNED_CLIENT_IDENTIFIER => {
                    set_once(&mut props.assigned_client_identifier, read_string(b)?, id)?
                }
                TOPIC_ALIAS_MAXIMUM => set_once(&mut props.topic_alias_maximum, read_u16(b)?, id)?,
                REASON_STRING => set_once(&mut props.reason_string, read_string(b)?, id)?,
                USER_PROPERTY => props.user_properties.push(read_string_pair(b)?),
                WILDCARD_SUBSCRIPTION_AVAILABLE => set_once(
                    &mut props.wildcard_subscription_available,
                    read_bool(b, id)?,
                    id,
                )?,
                SUBSCRIPTION_IDENTIFIER_AVAILABLE => set_once(
                    &mut props.subscription_identifiers_available,
                    read_bool(b, id)?,
                    id,
                )?,
                SHARED_SUBSCRIPTION_AVAILABLE => set_once(
                    &mut props.shared_subscription_available,
                    read_bool(b, id)?,
                    id,
                )?,
                SERVER_KEEP_ALIVE => set_once(&mut props.server_keep_alive, read_u16(b)?, id)?,
                RESPONSE_INFORMATION => {
                    set_once(&mut props.response_information, read_string(b)?, id)?
                }
                SERVER_REFERENCE => set_once(&mut props.server_reference, read_string(b)?, id)?,
                AUTHENTICATION_METHOD => {
                    set_once(&mut props.authentication_method, read_string(b)?, id)?
                }
                AUTHENTICATION_DATA => {
                    set_once(&mut props.authentication_data, read_binary(b)?, id)?
                }
                _ => return Err(DecodeError::InvalidProperty(id)),
            }
        }
        Ok(props)
    }
}

impl PublishProperties {
    /// Decodes the properties of PUBLISH (section 3.3.2.3).
    pub(crate) fn decode(src: &mut Bytes) -> Result<Self, DecodeError> {
        let mut block = read_block(src)?;
        let mut props = Self::default();
        while !block.is_empty() {
            let id = read_id(&mut block)?;
            let b = &mut block;
            match id {
                PAYLOAD_FORMAT_INDICATOR => set_once(
                    &mut props.payload_format_indicator,
                    read_payload_format_indicator(b)?,
                    id,
                )?,
                MESSAGE_EXPIRY_INTERVAL => {
                    set_once(&mut props.message_expiry_interval, read_u32(b)?, id)?
                }
                TOPIC_ALIAS => set_once(&mut props.topic_alias, read_topic_alias(b)?, id)?,
                RESPONSE_TOPIC => set_once(&mut props.response_topic, read_string(b)?, id)?,
                CORRELATION_DATA => set_once(&mut props.correlation_data, read_binary(b)?, id)?,
                USER_PROPERTY => props.user_properties.push(read_string_pair(b)?),
                // Repeatable: one per matching subscription, server to client [MQTT-3.3.4-3].
                SUBSCRIPTION_IDENTIFIER => props
                    .subscription_identifiers
                    .push(read_subscription_identifier(b)?),
                CONTENT_TYPE => set_once(&mut props.content_type, read_string(b)?, id)?,
                _ => return Err(DecodeError::InvalidProperty(id)),
            }
        }
        Ok(props)
    }
}

impl AckProperties {
    /// Decodes the properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK or UNSUBACK.
    pub(crate) fn decode(src: &mut Bytes) -> Result<Self, DecodeError> {
        let mut block = read_block(src)?;
        let mut props = Self::default();
        while !block.is_empty() {
            let id = read_id(&mut block)?;
            let b = &mut block;
            match id {
                REASON_STRING => set_once(&mut props.reason_string, read_string(b)?, id)?,
                USER_PROPERTY => props.user_properties.push(read_string_pair(b)?),
                _ => return Err(DecodeError::InvalidProperty(id)),
            }
        }
        Ok(props)
    }
}

impl SubscribeProperties {
    /// Decodes the properties of SUBSCRIBE (section 3.8.2.1).
    pub(crate) fn decode(src: &mut Bytes) -> Result<Self, DecodeError> {
        let mut block = read_block(src)?;
        let mut props = Self::default();
        while !block.is_empty() {
            let id = read_id(&mut block)?;
            let b = &mut block;
            match id {
                SUBSCRIPTION_IDENTIFIER => set_once(
                    &mut props.subscription_identifier,
                    read_subscription_identifier(b)?,
                    id,
                )?,
                USER_PROPERTY => props.user_properties.push(read_string_pair(b)?),
                _ => return Err(DecodeError::InvalidProperty(id)),
            }
        }
        Ok(props)
    }
}

impl UnsubscribeProperties {
    /// Decodes the properties of UNSUBSCRIBE (section 3.10.2.1).
    pub(crate) fn decode(src: &mut Bytes) -> Result<Self, DecodeError> {
        let mut block = read_block(src)?;
        let mut props = Self::default();
        while !block.is_empty() {
            let id = read_id(&mut block)?;
            match id {
                USER_PROPERTY => props.user_properties.push(read_string_pair(&mut block)?),
                _ => return Err(DecodeError::InvalidProperty(id)),
            }
        }
        Ok(props)
    }
}

impl DisconnectProperties {
    /// Decodes the properties of DISCONNECT (section 3.14.2.2).
    pub(crate) fn decode(src: &mut Bytes) -> Result<Self, DecodeError> {
        let mut block = read_block(src)?;
        let mut props = Self::default();
        while !block.is_empty() {
            let id = read_id(&mut block)?;
            let b = &mut block;
            match id {
                SESSION_EXPIRY_INTERVAL => {
                    set_once(&mut props.session_expiry_interval, read_u32(b)?, id)?
                }
                REASON_STRING => set_once(&mut props.reason_string, read_string(b)?, id)?,
                USER_PROPERTY => props.user_properties.push(read_string_pair(b)?),
                SERVER_REFERENCE => set_once(&mut props.server_reference, read_string(b)?, id)?,
                _ => return Err(DecodeError::InvalidProperty(id)),
            }
        }
        Ok(props)
    }
}

impl AuthProperties {
    /// Decodes the properties of AUTH (section 3.15.2.2).
    pub(crate) fn decode(src: &mut Bytes) -> Result<Self, DecodeError> {
        let mut block = read_block(src)?;
        let mut props = Self::default();
        while !block.is_empty() {
            let id = read_id(&mut block)?;
            let b = &mut block;
            match id {
                AUTHENTICATION_METHOD => {
                    set_once(&mut props.authentication_method, read_string(b)?, id)?
                }
                AUTHENTICATION_DATA => {
                    set_once(&mut props.authentication_data, read_binary(b)?, id)?
                }
                REASON_STRING => set_once(&mut props.reason_string, read_string(b)?, id)?,
                USER_PROPERTY => props.user_properties.push(read_string_pair(b)?),
                _ => return Err(DecodeError::InvalidProperty(id)),
            }
        }
        Ok(props)
    }
}
