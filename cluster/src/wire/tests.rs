//! Round-trip tests of the wire conversions: tables for edge cases, proptest for the rest.

use std::{
    num::NonZeroU16,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;
use starling_core::codec::{ByteString, Publish, PublishProperties, QoS};
use starling_proto::cluster::v1::DeliverRequest;

use super::*;

/// Edits the properties of a valid publish into one case of a test table.
type PropertiesEdit = fn(&mut PublishProperties);
/// Edits a valid message into one case of a test table.
type MessageEdit = fn(&mut PublishMessage);

fn at_ms(publish_time_unix_ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(publish_time_unix_ms)
}

/// Returns a publish with every forwarded property set and no hop-by-hop field.
fn full_publish_for_test() -> Publish {
    Publish {
        dup: false,
        qos: QoS::ExactlyOnce,
        retain: true,
        topic: ByteString::from_static("plant/línea-3/温度"),
        packet_id: None,
        properties: PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(0),
            topic_alias: None,
            response_topic: Some(ByteString::from_static("replies/plant")),
            correlation_data: Some(Bytes::from_static(&[0, 0xff, 0x10])),
            user_properties: vec![
                (ByteString::from_static("b"), ByteString::from_static("2")),
                (ByteString::from_static("a"), ByteString::from_static("1")),
                (ByteString::from_static("b"), ByteString::from_static("")),
            ],
            subscription_identifiers: Vec::new(),
            content_type: Some(ByteString::from_static("application/json")),
        },
        payload: Bytes::from_static(b"{\"celsius\":21.5}"),
    }
}

/// Converts to the wire, encodes with prost, decodes and converts back.
fn round_trip(
    publish: &Publish,
    origin_node_id: &str,
    published_at: SystemTime,
) -> ForwardedPublish {
    let deliver_request =
        publish_to_deliver_request(42, publish, origin_node_id, published_at).unwrap();
    let encoded = deliver_request.encode_to_vec();
    let decoded = DeliverRequest::decode(encoded.as_slice()).unwrap();
    let (sequence, forwarded_publish) = deliver_request_to_publish(decoded).unwrap();
    assert_eq!(sequence, 42);
    forwarded_publish
}

#[test]
fn publish_with_every_property_round_trips_losslessly() {
    let publish = full_publish_for_test();
    let forwarded_publish = round_trip(&publish, "starling-1", at_ms(1_700_000_000_123));
    assert_eq!(forwarded_publish.publish, publish);
    assert_eq!(forwarded_publish.origin_node_id, "starling-1");
    assert_eq!(forwarded_publish.published_at, at_ms(1_700_000_000_123));
}

#[test]
fn absent_and_empty_properties_stay_distinct() {
    let table: [(&str, PropertiesEdit); 5] = [
        ("all absent", |properties| {
            *properties = PublishProperties::default()
        }),
        ("empty correlation data", |properties| {
            properties.correlation_data = Some(Bytes::new());
        }),
        ("empty response topic", |properties| {
            properties.response_topic = Some(ByteString::new());
        }),
        ("empty content type", |properties| {
            properties.content_type = Some(ByteString::new());
        }),
        ("zero indicator and expiry", |properties| {
            properties.payload_format_indicator = Some(0);
            properties.message_expiry_interval = Some(0);
        }),
    ];
    for (case, edit) in table {
        let mut publish = full_publish_for_test();
        edit(&mut publish.properties);
        let forwarded_publish = round_trip(&publish, "starling-0", at_ms(0));
        assert_eq!(forwarded_publish.publish, publish, "case: {case}");
    }
}

#[test]
fn every_qos_and_retain_flag_round_trips() {
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        for retain in [false, true] {
            let mut publish = full_publish_for_test();
            publish.qos = qos;
            publish.retain = retain;
            assert_eq!(round_trip(&publish, "n", at_ms(1)).publish, publish);
        }
    }
}

#[test]
fn hop_by_hop_fields_are_not_forwarded() {
    let mut publish = full_publish_for_test();
    publish.dup = true;
    publish.packet_id = NonZeroU16::new(7);
    publish.properties.topic_alias = NonZeroU16::new(3);
    publish.properties.subscription_identifiers = vec![1, 268_435_455];
    let forwarded_publish = round_trip(&publish, "starling-0", at_ms(5));
    assert_eq!(forwarded_publish.publish, full_publish_for_test());
}

#[test]
fn publish_with_unresolved_topic_alias_is_refused() {
    let mut publish = full_publish_for_test();
    publish.topic = ByteString::new();
    publish.properties.topic_alias = NonZeroU16::new(3);
    let error = publish_to_message(&publish, "starling-0", at_ms(0)).unwrap_err();
    assert_eq!(error, WireError::UnresolvedTopicAlias);
}

#[test]
fn publish_time_before_epoch_is_sent_as_epoch() {
    let before_epoch = UNIX_EPOCH - Duration::from_secs(1);
    let message = publish_to_message(&full_publish_for_test(), "n", before_epoch).unwrap();
    assert_eq!(message.publish_time_unix_ms, 0);
}

#[test]
fn malformed_messages_are_rejected() {
    let valid_message = publish_to_message(&full_publish_for_test(), "n", at_ms(1)).unwrap();
    let table: [(MessageEdit, WireError); 4] = [
        (
            |message| message.qos = 3,
            WireError::InvalidQos { value: 3 },
        ),
        (
            |message| message.qos = -1,
            WireError::InvalidQos { value: -1 },
        ),
        (
            |message| message.payload_format_indicator = Some(256),
            WireError::InvalidPayloadFormatIndicator { value: 256 },
        ),
        (
            |message| message.topic.clear(),
            WireError::UnresolvedTopicAlias,
        ),
    ];
    for (edit, expected_error) in table {
        let mut message = valid_message.clone();
        edit(&mut message);
        assert_eq!(message_to_publish(message).unwrap_err(), expected_error);
    }
    let deliver_request = DeliverRequest {
        sequence: 1,
        message: None,
    };
    assert_eq!(
        deliver_request_to_publish(deliver_request).unwrap_err(),
        WireError::MissingMessage
    );
}

fn byte_string_strategy() -> impl Strategy<Value = ByteString> {
    "\\PC{0,12}".prop_map(ByteString::from)
}

fn publish_strategy() -> impl Strategy<Value = Publish> {
    let user_property = (
        // A small key alphabet so repeated keys, whose order matters, are common.
        "[abc]{1,2}".prop_map(ByteString::from),
        byte_string_strategy(),
    );
    let properties = (
        proptest::option::of(any::<u8>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(byte_string_strategy()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from)),
        proptest::collection::vec(user_property, 0..8),
        proptest::option::of(byte_string_strategy()),
    )
        .prop_map(
            |(
                payload_format_indicator,
                message_expiry_interval,
                response_topic,
                correlation_data,
                user_properties,
                content_type,
            )| PublishProperties {
                payload_format_indicator,
                message_expiry_interval,
                topic_alias: None,
                response_topic,
                correlation_data,
                user_properties,
                subscription_identifiers: Vec::new(),
                content_type,
            },
        );
    (
        0u8..=2,
        any::<bool>(),
        "\\PC{1,24}",
        properties,
        proptest::collection::vec(any::<u8>(), 0..256),
    )
        .prop_map(|(qos, retain, topic, properties, payload)| Publish {
            dup: false,
            qos: QoS::from_u8(qos).unwrap(),
            retain,
            topic: ByteString::from(topic),
            packet_id: None,
            properties,
            payload: Bytes::from(payload),
        })
}

proptest! {
    #[test]
    fn any_forwardable_publish_round_trips_losslessly(
        publish in publish_strategy(),
        origin_node_id in "[a-z0-9-]{0,16}",
        // Up to the year 2100.
        publish_time_unix_ms in 0u64..4_102_444_800_000,
    ) {
        let forwarded_publish = round_trip(&publish, &origin_node_id, at_ms(publish_time_unix_ms));
        prop_assert_eq!(forwarded_publish.publish, publish);
        prop_assert_eq!(forwarded_publish.origin_node_id, origin_node_id);
        prop_assert_eq!(forwarded_publish.published_at, at_ms(publish_time_unix_ms));
    }
}
