//! Conversions between `starling_core::codec` types and `starling.cluster.v1` protobuf messages.
//!
//! These are free functions because the orphan rule forbids `From` between two foreign types.
//! A forwarded message keeps every MQTT 5 application-message property and the order of its
//! user properties. Hop-by-hop PUBLISH fields are not forwarded: the packet identifier, the DUP
//! flag, the topic alias and subscription identifiers belong to one client connection, and the
//! delivering node assigns its own for each subscriber.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use starling_core::codec::{ByteString, Publish, PublishProperties, QoS};
use starling_proto::cluster::v1::{DeliverRequest, PublishMessage, Qos, UserProperty};

/// Why a message could not be converted to or from its wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The publish still has an empty topic and a topic alias; aliases are resolved per
    /// connection before a message leaves its origin node.
    #[error("publish topic is empty: the topic alias was not resolved before forwarding")]
    UnresolvedTopicAlias,
    /// A `DeliverRequest` arrived without its `message` field.
    #[error("deliver request has no message")]
    MissingMessage,
    /// The `qos` field holds a value that is not an MQTT QoS.
    #[error("qos value {value} is not 0, 1 or 2")]
    InvalidQos {
        /// The received value.
        value: i32,
    },
    /// The payload format indicator does not fit the one byte MQTT gives it.
    #[error("payload format indicator {value} does not fit in one byte")]
    InvalidPayloadFormatIndicator {
        /// The received value.
        value: u32,
    },
    /// The publish time is beyond what the platform's clock can represent.
    #[error("publish time {publish_time_unix_ms} ms since the unix epoch is out of range")]
    PublishTimeOutOfRange {
        /// The received value.
        publish_time_unix_ms: u64,
    },
}

/// A publish received from a peer, with where and when it entered the cluster.
///
/// `publish.packet_id`, `publish.topic_alias` and `publish.properties.subscription_identifiers`
/// are empty and `publish.dup` is false: the delivering session assigns them per subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedPublish {
    /// The application message.
    pub publish: Publish,
    /// Identifier of the node whose client published the message.
    pub origin_node_id: String,
    /// When the origin node received the publish, at millisecond precision.
    pub published_at: SystemTime,
}

/// Converts a publish received on `origin_node_id` at `published_at` to its wire form.
///
/// Times before the Unix epoch are sent as the epoch; times are truncated to milliseconds.
///
/// # Errors
/// Returns [`WireError::UnresolvedTopicAlias`] when the topic is empty.
pub fn publish_to_message(
    publish: &Publish,
    origin_node_id: &str,
    published_at: SystemTime,
) -> Result<PublishMessage, WireError> {
    // [MQTT-4.7.3-1] a topic name has at least one character; empty means an unresolved alias.
    if publish.topic.is_empty() {
        return Err(WireError::UnresolvedTopicAlias);
    }
    let properties = &publish.properties;
    let publish_time_unix_ms = match published_at.duration_since(UNIX_EPOCH) {
        Ok(since_epoch) => u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX),
        Err(_) => 0,
    };
    Ok(PublishMessage {
        topic: publish.topic.to_string(),
        payload: publish.payload.clone(),
        qos: qos_to_wire(publish.qos) as i32,
        retain: publish.retain,
        payload_format_indicator: properties.payload_format_indicator.map(u32::from),
        message_expiry_interval_secs: properties.message_expiry_interval,
        response_topic: properties.response_topic.as_ref().map(ToString::to_string),
        correlation_data: properties.correlation_data.clone(),
        user_properties: properties
            .user_properties
            .iter()
            .map(|(key, value)| UserProperty {
                key: key.to_string(),
                value: value.to_string(),
            })
            .collect(),
        content_type: properties.content_type.as_ref().map(ToString::to_string),
        origin_node_id: origin_node_id.to_owned(),
        publish_time_unix_ms,
    })
}

/// Converts a forwarded message back to a publish ready for local routing.
///
/// # Errors
/// Returns a [`WireError`] when the QoS, the payload format indicator or the publish time is out
/// of range, or the topic is empty.
pub fn message_to_publish(message: PublishMessage) -> Result<ForwardedPublish, WireError> {
    if message.topic.is_empty() {
        return Err(WireError::UnresolvedTopicAlias);
    }
    let qos = qos_from_wire(message.qos)?;
    let payload_format_indicator = match message.payload_format_indicator {
        None => None,
        Some(value) => match u8::try_from(value) {
            Ok(indicator) => Some(indicator),
            Err(_) => return Err(WireError::InvalidPayloadFormatIndicator { value }),
        },
    };
    let Some(published_at) =
        UNIX_EPOCH.checked_add(Duration::from_millis(message.publish_time_unix_ms))
    else {
        return Err(WireError::PublishTimeOutOfRange {
            publish_time_unix_ms: message.publish_time_unix_ms,
        });
    };
    let properties = PublishProperties {
        payload_format_indicator,
        message_expiry_interval: message.message_expiry_interval_secs,
        topic_alias: None,
        response_topic: message.response_topic.map(ByteString::from),
        correlation_data: message.correlation_data,
        user_properties: message
            .user_properties
            .into_iter()
            .map(|user_property| {
                (
                    ByteString::from(user_property.key),
                    ByteString::from(user_property.value),
                )
            })
            .collect(),
        subscription_identifiers: Vec::new(),
        content_type: message.content_type.map(ByteString::from),
    };
    let publish = Publish {
        dup: false,
        qos,
        retain: message.retain,
        topic: ByteString::from(message.topic),
        packet_id: None,
        properties,
        payload: message.payload,
    };
    Ok(ForwardedPublish {
        publish,
        origin_node_id: message.origin_node_id,
        published_at,
    })
}

/// Wraps a publish as message number `sequence` of a `Deliver` stream.
///
/// # Errors
/// Returns the errors of [`publish_to_message`].
pub fn publish_to_deliver_request(
    sequence: u64,
    publish: &Publish,
    origin_node_id: &str,
    published_at: SystemTime,
) -> Result<DeliverRequest, WireError> {
    let message = publish_to_message(publish, origin_node_id, published_at)?;
    Ok(DeliverRequest {
        sequence,
        message: Some(message),
    })
}

/// Unwraps one message of a `Deliver` stream into its sequence number and publish.
///
/// # Errors
/// Returns [`WireError::MissingMessage`] for a request without a message, otherwise the errors
/// of [`message_to_publish`].
pub fn deliver_request_to_publish(
    deliver_request: DeliverRequest,
) -> Result<(u64, ForwardedPublish), WireError> {
    let Some(message) = deliver_request.message else {
        return Err(WireError::MissingMessage);
    };
    let forwarded_publish = message_to_publish(message)?;
    Ok((deliver_request.sequence, forwarded_publish))
}

/// Converts an MQTT QoS to its wire enum.
pub fn qos_to_wire(qos: QoS) -> Qos {
    match qos {
        QoS::AtMostOnce => Qos::AtMostOnce,
        QoS::AtLeastOnce => Qos::AtLeastOnce,
        QoS::ExactlyOnce => Qos::ExactlyOnce,
    }
}

/// Converts the raw `qos` field of a message to an MQTT QoS.
///
/// # Errors
/// Returns [`WireError::InvalidQos`] for any value other than 0, 1 or 2.
pub fn qos_from_wire(value: i32) -> Result<QoS, WireError> {
    match Qos::try_from(value) {
        Ok(Qos::AtMostOnce) => Ok(QoS::AtMostOnce),
        Ok(Qos::AtLeastOnce) => Ok(QoS::AtLeastOnce),
        Ok(Qos::ExactlyOnce) => Ok(QoS::ExactlyOnce),
        Err(_) => Err(WireError::InvalidQos { value }),
    }
}

#[cfg(test)]
mod tests;
