//! Protobuf schema of the Starling inter-node protocol and its generated prost/tonic code.
//!
//! This crate holds generated code only; conversions to and from broker types live in
//! `starling_cluster::wire`, the only place that knows the wire format.
//!
//! # Layout
//! - [`cluster::v1`]: package `starling.cluster.v1` from `starling/cluster/v1/cluster.proto`,
//!   with messages such as `HelloRequest` and `DeliverRequest`, the `peer_service_client` and
//!   `peer_service_server` modules, and the `PeerService` trait a node implements.

pub mod cluster {
    //! Package `starling.cluster`.

    #[allow(
        missing_docs,
        unreachable_pub,
        clippy::all,
        clippy::pedantic,
        clippy::nursery,
        rustdoc::all
    )]
    pub mod v1 {
        //! Package `starling.cluster.v1`: the first version of the inter-node protocol.

        include!(concat!(env!("OUT_DIR"), "/starling.cluster.v1.rs"));
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use crate::cluster::v1::{DeliverRequest, PublishMessage, Qos, UserProperty};

    fn deliver_request_for_test() -> DeliverRequest {
        DeliverRequest {
            sequence: 7,
            message: Some(PublishMessage {
                topic: "sensors/kitchen/temperature".to_owned(),
                payload: prost::bytes::Bytes::from_static(b"21.5"),
                qos: Qos::AtLeastOnce as i32,
                retain: true,
                payload_format_indicator: Some(1),
                message_expiry_interval_secs: Some(3600),
                response_topic: Some("replies/kitchen".to_owned()),
                correlation_data: Some(prost::bytes::Bytes::from_static(&[0, 1, 2, 255])),
                user_properties: vec![
                    UserProperty {
                        key: "unit".to_owned(),
                        value: "celsius".to_owned(),
                    },
                    UserProperty {
                        key: "sensor".to_owned(),
                        value: "a".to_owned(),
                    },
                    UserProperty {
                        key: "unit".to_owned(),
                        value: "kelvin?".to_owned(),
                    },
                ],
                content_type: Some("text/plain".to_owned()),
                origin_node_id: "starling-0".to_owned(),
                publish_time_unix_ms: 1_700_000_000_123,
            }),
        }
    }

    #[test]
    fn deliver_request_survives_encode_decode() {
        let deliver_request = deliver_request_for_test();
        let encoded = deliver_request.encode_to_vec();
        assert_eq!(encoded.len(), deliver_request.encoded_len());
        let decoded = DeliverRequest::decode(encoded.as_slice()).unwrap();
        assert_eq!(decoded, deliver_request);
        let message = decoded.message.unwrap();
        assert_eq!(message.qos(), Qos::AtLeastOnce);
        let keys: Vec<&str> = message
            .user_properties
            .iter()
            .map(|p| p.key.as_str())
            .collect();
        assert_eq!(keys, ["unit", "sensor", "unit"]);
    }

    #[test]
    fn absent_optional_properties_stay_absent_and_empty_ones_stay_present() {
        let mut deliver_request = deliver_request_for_test();
        let message = deliver_request.message.as_mut().unwrap();
        message.payload_format_indicator = None;
        message.message_expiry_interval_secs = Some(0);
        message.response_topic = None;
        message.correlation_data = Some(prost::bytes::Bytes::new());
        message.content_type = Some(String::new());
        let decoded = DeliverRequest::decode(deliver_request.encode_to_vec().as_slice()).unwrap();
        let decoded_message = decoded.message.unwrap();
        assert_eq!(decoded_message.payload_format_indicator, None);
        assert_eq!(decoded_message.message_expiry_interval_secs, Some(0));
        assert_eq!(decoded_message.response_topic, None);
        assert_eq!(
            decoded_message.correlation_data,
            Some(prost::bytes::Bytes::new())
        );
        assert_eq!(decoded_message.content_type, Some(String::new()));
    }

    #[test]
    fn unknown_qos_value_decodes_but_is_not_a_known_qos() {
        let mut deliver_request = deliver_request_for_test();
        deliver_request.message.as_mut().unwrap().qos = 3;
        let decoded = DeliverRequest::decode(deliver_request.encode_to_vec().as_slice()).unwrap();
        let qos_value = decoded.message.unwrap().qos;
        assert_eq!(qos_value, 3);
        assert!(Qos::try_from(qos_value).is_err());
    }
}
