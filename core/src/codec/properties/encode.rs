//! Encoding of property blocks: each struct lists its properties once in `visit`, and the same
//! listing both sizes the block and writes it.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::id::*;
use crate::codec::primitives::{binary_len, variable_int_len, write_binary, write_variable_int};
use crate::codec::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PacketId, PublishProperties, QoS, SubscribeProperties, UnsubscribeProperties, UserProperties,
    WillProperties,
};

/// A property value as it is laid out after its identifier.
trait PropertyValue {
    /// Returns the encoded size of the value.
    fn value_len(&self) -> usize;
    /// Writes the value.
    fn put_value(&self, dst: &mut BytesMut);
}

impl PropertyValue for u8 {
    fn value_len(&self) -> usize {
        1
    }
    fn put_value(&self, dst: &mut BytesMut) {
        dst.put_u8(*self);
    }
}

impl PropertyValue for bool {
    fn value_len(&self) -> usize {
        1
    }
    fn put_value(&self, dst: &mut BytesMut) {
        dst.put_u8(u8::from(*self));
    }
}

impl PropertyValue for QoS {
    fn value_len(&self) -> usize {
        1
    }
    fn put_value(&self, dst: &mut BytesMut) {
        dst.put_u8(self.as_u8());
    }
}

impl PropertyValue for u16 {
    fn value_len(&self) -> usize {
        2
    }
    fn put_value(&self, dst: &mut BytesMut) {
        dst.put_u16(*self);
    }
}

impl PropertyValue for PacketId {
    fn value_len(&self) -> usize {
        2
    }
    fn put_value(&self, dst: &mut BytesMut) {
        dst.put_u16(self.get());
    }
}

impl PropertyValue for u32 {
    fn value_len(&self) -> usize {
        4
    }
    fn put_value(&self, dst: &mut BytesMut) {
        dst.put_u32(*self);
    }
}

/// A Subscription Identifier, the one property encoded as a variable byte integer.
struct VariableInt(u32);

impl PropertyValue for VariableInt {
    fn value_len(&self) -> usize {
        variable_int_len(self.0 as usize)
    }
    fn put_value(&self, dst: &mut BytesMut) {
        write_variable_int(dst, self.0 as usize);
    }
}

impl PropertyValue for ByteString {
    fn value_len(&self) -> usize {
        binary_len(self.len())
    }
    fn put_value(&self, dst: &mut BytesMut) {
        write_binary(dst, self.as_bytes());
    }
}

impl PropertyValue for Bytes {
    fn value_len(&self) -> usize {
        binary_len(self.len())
    }
    fn put_value(&self, dst: &mut BytesMut) {
        write_binary(dst, self);
    }
}

impl PropertyValue for (ByteString, ByteString) {
    fn value_len(&self) -> usize {
        self.0.value_len() + self.1.value_len()
    }
    fn put_value(&self, dst: &mut BytesMut) {
        self.0.put_value(dst);
        self.1.put_value(dst);
    }
}

/// Receives the properties of a block in wire order: either sums their size or writes them.
trait PropertySink {
    /// Takes one property.
    fn property<T: PropertyValue>(&mut self, id: u8, value: &T);

    /// Takes a property if it is present.
    fn optional<T: PropertyValue>(&mut self, id: u8, value: &Option<T>) {
        if let Some(value) = value {
            self.property(id, value);
        }
    }

    /// Takes every User Property, in order.
    fn user_properties(&mut self, user_properties: &UserProperties) {
        for pair in user_properties {
            self.property(USER_PROPERTY, pair);
        }
    }
}

/// Sums the size of a property block, without its Property Length.
struct LenSink(usize);

impl PropertySink for LenSink {
    fn property<T: PropertyValue>(&mut self, _id: u8, value: &T) {
        // Every defined identifier is below 0x80, so it takes one byte.
        self.0 += 1 + value.value_len();
    }
}

impl PropertySink for BytesMut {
    fn property<T: PropertyValue>(&mut self, id: u8, value: &T) {
        self.put_u8(id);
        value.put_value(self);
    }
}

/// Adds `content_len`, `encoded_len`, `encode` and `is_empty` to property structs with a `visit`.
macro_rules! impl_encode {
    ($($props:ty),* $(,)?) => {$(
        impl $props {
            /// Returns the size of the properties without the Property Length.
            fn content_len(&self) -> usize {
                let mut len_sink = LenSink(0);
                self.visit(&mut len_sink);
                len_sink.0
            }

            /// Returns the size of the property block, Property Length included.
            pub fn encoded_len(&self) -> usize {
                let content_len = self.content_len();
                variable_int_len(content_len) + content_len
            }

            /// Writes the Property Length and the properties.
            pub(crate) fn encode(&self, dst: &mut BytesMut) {
                write_variable_int(dst, self.content_len());
                self.visit(dst);
            }

            /// Returns true when no property is set, which allows the short forms of the acks,
            /// DISCONNECT and AUTH.
            pub fn is_empty(&self) -> bool {
                self.content_len() == 0
            }
        }
    )*};
}

impl_encode!(
    ConnectProperties,
    WillProperties,
    ConnAckProperties,
    PublishProperties,
    AckProperties,
    SubscribeProperties,
    UnsubscribeProperties,
    DisconnectProperties,
    AuthProperties,
);

impl ConnectProperties {
    fn visit(&self, sink: &mut impl PropertySink) {
        sink.optional(SESSION_EXPIRY_INTERVAL, &self.session_expiry_interval);
        sink.optional(RECEIVE_MAXIMUM, &self.receive_maximum);
        sink.optional(MAXIMUM_PACKET_SIZE, &self.maximum_packet_size);
        sink.optional(TOPIC_ALIAS_MAXIMUM, &self.topic_alias_maximum);
        sink.optional(
            REQUEST_RESPONSE_INFORMATION,
            &self.request_response_information,
        );
        sink.optional(
            REQUEST_PROBLEM_INFORMATION,
            &self.request_problem_information,
        );
        sink.user_properties(&self.user_properties);
        sink.optional(AUTHENTICATION_METHOD, &self.authentication_method);
        sink.optional(AUTHENTICATION_DATA, &self.authentication_data);
    }
}

impl WillProperties {
    fn visit(&self, sink: &mut impl PropertySink) {
        sink.optional(WILL_DELAY_INTERVAL, &self.will_delay_interval);
        sink.optional(PAYLOAD_FORMAT_INDICATOR, &self.payload_format_indicator);
        sink.optional(MESSAGE_EXPIRY_INTERVAL, &self.message_expiry_interval);
        sink.optional(CONTENT_TYPE, &self.content_type);
        sink.optional(RESPONSE_TOPIC, &self.response_topic);
        sink.optional(CORRELATION_DATA, &self.correlation_data);
        sink.user_properties(&self.user_properties);
    }
}

impl ConnAckProperties {
    fn visit(&self, sink: &mut impl PropertySink) {
        sink.optional(SESSION_EXPIRY_INTERVAL, &self.session_expiry_interval);
        sink.optional(RECEIVE_MAXIMUM, &self.receive_maximum);
        sink.optional(MAXIMUM_QOS, &self.maximum_qos);
        sink.optional(RETAIN_AVAILABLE, &self.retain_available);
        sink.optional(MAXIMUM_PACKET_SIZE, &self.maximum_packet_size);
        sink.optional(ASSIGNED_CLIENT_IDENTIFIER, &self.assigned_client_identifier);
        sink.optional(TOPIC_ALIAS_MAXIMUM, &self.topic_alias_maximum);
        sink.optional(REASON_STRING, &self.reason_string);
        sink.user_properties(&self.user_properties);
        sink.optional(
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            &self.wildcard_subscription_available,
        );
        sink.optional(
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            &self.subscription_identifiers_available,
        );
        sink.optional(
            SHARED_SUBSCRIPTION_AVAILABLE,
            &self.shared_subscription_available,
        );
        sink.optional(SERVER_KEEP_ALIVE, &self.server_keep_alive);
        sink.optional(RESPONSE_INFORMATION, &self.response_information);
        sink.optional(SERVER_REFERENCE, &self.server_reference);
        sink.optional(AUTHENTICATION_METHOD, &self.authentication_method);
        sink.optional(AUTHENTICATION_DATA, &self.authentication_data);
    }
}

impl PublishProperties {
    fn visit(&self, sink: &mut impl PropertySink) {
        sink.optional(PAYLOAD_FORMAT_INDICATOR, &self.payload_format_indicator);
        sink.optional(MESSAGE_EXPIRY_INTERVAL, &self.message_expiry_interval);
        sink.optional(TOPIC_ALIAS, &self.topic_alias);
        sink.optional(RESPONSE_TOPIC, &self.response_topic);
        sink.optional(CORRELATION_DATA, &self.correlation_data);
        sink.user_properties(&self.user_properties);
        for &subscription_identifier in &self.subscription_identifiers {
            sink.property(
                SUBSCRIPTION_IDENTIFIER,
                &VariableInt(subscription_identifier),
            );
        }
        sink.optional(CONTENT_TYPE, &self.content_type);
    }
}

impl AckProperties {
    fn visit(&self, sink: &mut impl PropertySink) {
        sink.optional(REASON_STRING, &self.reason_string);
        sink.user_properties(&self.user_properties);
    }
}

impl SubscribeProperties {
    fn visit(&self, sink: &mut impl PropertySink) {
        if let Some(subscription_identifier) = self.subscription_identifier {
            sink.property(
                SUBSCRIPTION_IDENTIFIER,
                &VariableInt(subscription_identifier),
            );
        }
        sink.user_properties(&self.user_properties);
    }
}

impl UnsubscribeProperties {
    fn visit(&self, sink: &mut impl PropertySink) {
        sink.user_properties(&self.user_properties);
    }
}

impl DisconnectProperties {
    fn visit(&self, sink: &mut impl PropertySink) {
        sink.optional(SESSION_EXPIRY_INTERVAL, &self.session_expiry_interval);
        sink.optional(REASON_STRING, &self.reason_string);
        sink.user_properties(&self.user_properties);
        sink.optional(SERVER_REFERENCE, &self.server_reference);
    }
}

impl AuthProperties {
    fn visit(&self, sink: &mut impl PropertySink) {
        sink.optional(AUTHENTICATION_METHOD, &self.authentication_method);
        sink.optional(AUTHENTICATION_DATA, &self.authentication_data);
        sink.optional(REASON_STRING, &self.reason_string);
        sink.user_properties(&self.user_properties);
    }
}
