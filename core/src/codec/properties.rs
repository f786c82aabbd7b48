//! MQTT 5.0 properties (section 2.2.2), one struct per packet kind.
//!
//! Properties are plain fields; absent properties are `None` or empty. User properties keep their
//! order, and binary and string values are slices of the read buffer.

mod decode;
mod encode;

use bytes::Bytes;
use bytestring::ByteString;

use crate::codec::{PacketId, QoS};

/// Property identifiers (section 2.2.2.2).
pub(crate) mod id {
    /// 0x01 Payload Format Indicator, byte: PUBLISH, will.
    pub(crate) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    /// 0x02 Message Expiry Interval, four-byte integer: PUBLISH, will.
    pub(crate) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    /// 0x03 Content Type, string: PUBLISH, will.
    pub(crate) const CONTENT_TYPE: u8 = 0x03;
    /// 0x08 Response Topic, string: PUBLISH, will.
    pub(crate) const RESPONSE_TOPIC: u8 = 0x08;
    /// 0x09 Correlation Data, binary: PUBLISH, will.
    pub(crate) const CORRELATION_DATA: u8 = 0x09;
    /// 0x0B Subscription Identifier, variable byte integer: PUBLISH, SUBSCRIBE.
    pub(crate) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    /// 0x11 Session Expiry Interval, four-byte integer: CONNECT, CONNACK, DISCONNECT.
    pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    /// 0x12 Assigned Client Identifier, string: CONNACK.
    pub(crate) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    /// 0x13 Server Keep Alive, two-byte integer: CONNACK.
    pub(crate) const SERVER_KEEP_ALIVE: u8 = 0x13;
    /// 0x15 Authentication Method, string: CONNECT, CONNACK, AUTH.
    pub(crate) const AUTHENTICATION_METHOD: u8 = 0x15;
    /// 0x16 Authentication Data, binary: CONNECT, CONNACK, AUTH.
    pub(crate) const AUTHENTICATION_DATA: u8 = 0x16;
    /// 0x17 Request Problem Information, byte: CONNECT.
    pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    /// 0x18 Will Delay Interval, four-byte integer: will.
    pub(crate) const WILL_DELAY_INTERVAL: u8 = 0x18;
    /// 0x19 Request Response Information, byte: CONNECT.
    pub(crate) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    /// 0x1A Response Information, string: CONNACK.
    pub(crate) const RESPONSE_INFORMATION: u8 = 0x1A;
    /// 0x1C Server Reference, string: CONNACK, DISCONNECT.
    pub(crate) const SERVER_REFERENCE: u8 = 0x1C;
    /// 0x1F Reason String, string: CONNACK, the acks, SUBACK, UNSUBACK, DISCONNECT, AUTH.
    pub(crate) const REASON_STRING: u8 = 0x1F;
    /// 0x21 Receive Maximum, two-byte integer: CONNECT, CONNACK.
    pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;
    /// 0x22 Topic Alias Maximum, two-byte integer: CONNECT, CONNACK.
    pub(crate) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    /// 0x23 Topic Alias, two-byte integer: PUBLISH.
    pub(crate) const TOPIC_ALIAS: u8 = 0x23;
    /// 0x24 Maximum QoS, byte: CONNACK.
    pub(crate) const MAXIMUM_QOS: u8 = 0x24;
    /// 0x25 Retain Available, byte: CONNACK.
    pub(crate) const RETAIN_AVAILABLE: u8 = 0x25;
    /// 0x26 User Property, string pair: every packet with properties.
    pub(crate) const USER_PROPERTY: u8 = 0x26;
    /// 0x27 Maximum Packet Size, four-byte integer: CONNECT, CONNACK.
    pub(crate) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    /// 0x28 Wildcard Subscription Available, byte: CONNACK.
    pub(crate) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    /// 0x29 Subscription Identifier Available, byte: CONNACK.
    pub(crate) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    /// 0x2A Shared Subscription Available, byte: CONNACK.
    pub(crate) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// User properties, in the order they appeared on the wire; names may repeat [MQTT-3.3.2-18].
pub type UserProperties = Vec<(ByteString, ByteString)>;

/// Properties of CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectProperties {
    /// 0x11 Session Expiry Interval, seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x21 Receive Maximum (never 0).
    pub receive_maximum: Option<u16>,
    /// 0x27 Maximum Packet Size (never 0).
    pub maximum_packet_size: Option<u32>,
    /// 0x22 Topic Alias Maximum.
    pub topic_alias_maximum: Option<u16>,
    /// 0x19 Request Response Information.
    pub request_response_information: Option<bool>,
    /// 0x17 Request Problem Information.
    pub request_problem_information: Option<bool>,
    /// 0x26 User Property.
    pub user_properties: UserProperties,
    /// 0x15 Authentication Method.
    pub authentication_method: Option<ByteString>,
    /// 0x16 Authentication Data.
    pub authentication_data: Option<Bytes>,
}

/// Properties of the will in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WillProperties {
    /// 0x18 Will Delay Interval, seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x01 Payload Format Indicator (0 bytes, 1 UTF-8).
    pub payload_format_indicator: Option<u8>,
    /// 0x02 Message Expiry Interval, seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03 Content Type.
    pub content_type: Option<ByteString>,
    /// 0x08 Response Topic.
    pub response_topic: Option<ByteString>,
    /// 0x09 Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// 0x26 User Property.
    pub user_properties: UserProperties,
}

/// Properties of CONNACK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAckProperties {
    /// 0x11 Session Expiry Interval, seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x21 Receive Maximum.
    pub receive_maximum: Option<u16>,
    /// 0x24 Maximum QoS (0 or 1; absent means 2).
    pub maximum_qos: Option<QoS>,
    /// 0x25 Retain Available.
    pub retain_available: Option<bool>,
    /// 0x27 Maximum Packet Size.
    pub maximum_packet_size: Option<u32>,
    /// 0x12 Assigned Client Identifier.
    pub assigned_client_identifier: Option<ByteString>,
    /// 0x22 Topic Alias Maximum.
    pub topic_alias_maximum: Option<u16>,
    /// 0x1F Reason String.
    pub reason_string: Option<ByteString>,
    /// 0x26 User Property.
    pub user_properties: UserProperties,
    /// 0x28 Wildcard Subscription Available.
    pub wildcard_subscription_available: Option<bool>,
    /// 0x29 Subscription Identifier Available.
    pub subscription_identifiers_available: Option<bool>,
    /// 0x2A Shared Subscription Available.
    pub shared_subscription_available: Option<bool>,
    /// 0x13 Server Keep Alive, seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x1A Response Information.
    pub response_information: Option<ByteString>,
    /// 0x1C Server Reference.
    pub server_reference: Option<ByteString>,
    /// 0x15 Authentication Method.
    pub authentication_method: Option<ByteString>,
    /// 0x16 Authentication Data.
    pub authentication_data: Option<Bytes>,
}

/// Properties of PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishProperties {
    /// 0x01 Payload Format Indicator (0 bytes, 1 UTF-8).
    pub payload_format_indicator: Option<u8>,
    /// 0x02 Message Expiry Interval, seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x23 Topic Alias (never 0).
    pub topic_alias: Option<PacketId>,
    /// 0x08 Response Topic.
    pub response_topic: Option<ByteString>,
    /// 0x09 Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// 0x26 User Property.
    pub user_properties: UserProperties,
    /// 0x0B Subscription Identifier, repeatable from server to client (each 1..=268,435,455).
    pub subscription_identifiers: Vec<u32>,
    /// 0x03 Content Type.
    pub content_type: Option<ByteString>,
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckProperties {
    /// 0x1F Reason String.
    pub reason_string: Option<ByteString>,
    /// 0x26 User Property.
    pub user_properties: UserProperties,
}

/// Properties of SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeProperties {
    /// 0x0B Subscription Identifier (1..=268,435,455).
    pub subscription_identifier: Option<u32>,
    /// 0x26 User Property.
    pub user_properties: UserProperties,
}

/// Properties of UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsubscribeProperties {
    /// 0x26 User Property.
    pub user_properties: UserProperties,
}

/// Properties of DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DisconnectProperties {
    /// 0x11 Session Expiry Interval, seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x1F Reason String.
    pub reason_string: Option<ByteString>,
    /// 0x26 User Property.
    pub user_properties: UserProperties,
    /// 0x1C Server Reference.
    pub server_reference: Option<ByteString>,
}

/// Properties of AUTH.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthProperties {
    /// 0x15 Authentication Method.
    pub authentication_method: Option<ByteString>,
    /// 0x16 Authentication Data.
    pub authentication_data: Option<Bytes>,
    /// 0x1F Reason String.
    pub reason_string: Option<ByteString>,
    /// 0x26 User Property.
    pub user_properties: UserProperties,
}
