//! Round-trip property tests of the record encoding.

use bytes::Bytes;
use bytestring::ByteString;
use proptest::prelude::*;

use crate::{
    codec::{PublishProperties, QoS, RetainHandling, SubscriptionOptions},
    storage::records::{
        InflightRecord, InflightState, MessageRecord, QueueRecord, Record, RecordError,
        SessionRecord, SubscriptionRecord, WillRecord,
    },
};

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn text() -> impl Strategy<Value = ByteString> {
    "\\PC{0,24}".prop_map(ByteString::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn properties() -> impl Strategy<Value = PublishProperties> {
    (
        prop::option::of(0u8..=1),
        prop::option::of(text()),
        prop::option::of(binary()),
        prop::option::of(text()),
        prop::collection::vec((text(), text()), 0..4),
    )
        .prop_map(
            |(
                payload_format_indicator,
                response_topic,
                correlation_data,
                content_type,
                user_properties,
            )| {
                PublishProperties {
                    payload_format_indicator,
                    response_topic,
                    correlation_data,
                    content_type,
                    user_properties,
                    ..PublishProperties::default()
                }
            },
        )
}

fn message() -> impl Strategy<Value = MessageRecord> {
    (
        text(),
        binary(),
        qos(),
        any::<bool>(),
        properties(),
        prop::option::of(any::<u64>()),
    )
        .prop_map(
            |(topic, payload, qos, retain, properties, expiry_unix_ms)| MessageRecord {
                topic,
                payload,
                qos,
                retain,
                properties,
                expiry_unix_ms,
            },
        )
}

fn subscription_ids() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(1u32..=268_435_455, 0..4)
}

fn round_trip<T: Record + PartialEq + std::fmt::Debug>(record: &T) {
    let encoded = record.to_vec();
    let decoded = T::decode(Bytes::from(encoded.clone())).expect("decodes");
    assert_eq!(&decoded, record);
    // Every strict prefix is rejected, never misread.
    for len in 0..encoded.len() {
        assert!(
            T::decode(Bytes::copy_from_slice(&encoded[..len])).is_err(),
            "prefix {len}"
        );
    }
}

proptest! {
    #[test]
    fn session_record_round_trips(
        client_id in text(),
        session_id in any::<u64>(),
        session_expiry_interval_secs in any::<u32>(),
        expiry_deadline_unix_ms in prop::option::of(any::<u64>()),
    ) {
        round_trip(&SessionRecord { client_id, session_id, session_expiry_interval_secs, expiry_deadline_unix_ms });
    }

    #[test]
    fn subscription_record_round_trips(
        topic_filter in text(),
        qos in qos(),
        no_local in any::<bool>(),
        retain_as_published in any::<bool>(),
        retain_handling in prop_oneof![
            Just(RetainHandling::SendAtSubscribe),
            Just(RetainHandling::SendIfNew),
            Just(RetainHandling::DoNotSend),
        ],
        subscription_id in prop::option::of(1u32..=268_435_455),
    ) {
        let options = SubscriptionOptions { qos, no_local, retain_as_published, retain_handling };
        round_trip(&SubscriptionRecord { topic_filter, options, subscription_id });
    }

    #[test]
    fn inflight_record_round_trips(
        packet_id in 1u16..,
        published in prop::option::of(any::<u64>()),
        qos in qos(),
        retain in any::<bool>(),
        subscription_ids in subscription_ids(),
    ) {
        let state = match published {
            Some(message_id) => InflightState::Published { message_id },
            None => InflightState::PubRelSent,
        };
        round_trip(&InflightRecord { packet_id, state, qos, retain, subscription_ids });
    }

    #[test]
    fn queue_record_round_trips(
        message_id in any::<u64>(),
        qos in qos(),
        retain in any::<bool>(),
        subscription_ids in subscription_ids(),
        message in prop::option::of(message()),
    ) {
        round_trip(&QueueRecord { message_id, qos, retain, subscription_ids, message });
    }

    #[test]
    fn message_record_round_trips(message in message()) {
        round_trip(&message);
    }

    #[test]
    fn will_record_round_trips(
        message in message(),
        delay_secs in any::<u32>(),
        publish_deadline_unix_ms in prop::option::of(any::<u64>()),
    ) {
        round_trip(&WillRecord { message, delay_secs, publish_deadline_unix_ms });
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let bytes = Bytes::from(bytes);
        let _ = SessionRecord::decode(bytes.clone());
        let _ = SubscriptionRecord::decode(bytes.clone());
        let _ = InflightRecord::decode(bytes.clone());
        let _ = QueueRecord::decode(bytes.clone());
        let _ = MessageRecord::decode(bytes.clone());
        let _ = WillRecord::decode(bytes);
    }
}

#[test]
fn unknown_version_is_refused() {
    let mut encoded = QueueRecord {
        message_id: 7,
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: vec![],
        message: None,
    }
    .to_vec();
    encoded[0] = 9;
    assert_eq!(
        QueueRecord::decode(Bytes::from(encoded)),
        Err(RecordError::UnsupportedVersion { version: 9 })
    );
}

#[test]
fn trailing_bytes_are_refused() {
    let mut encoded = SessionRecord {
        client_id: ByteString::from_static("car-1"),
        session_id: 1,
        session_expiry_interval_secs: 60,
        expiry_deadline_unix_ms: None,
    }
    .to_vec();
    encoded.push(0);
    assert_eq!(
        SessionRecord::decode(Bytes::from(encoded)),
        Err(RecordError::TrailingBytes)
    );
}
