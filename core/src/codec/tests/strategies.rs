//! Proptest strategies producing only packets that are valid in a given protocol version, so
//! that decode(encode(p)) == p must hold.

use bytes::Bytes;
use bytestring::ByteString;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;

use crate::codec::{
    Ack, AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect,
    ConnectProperties, Disconnect, DisconnectProperties, LastWill, Packet, PacketId,
    ProtocolVersion, Publish, PublishProperties, QoS, ReasonCode, RetainHandling, SubAck,
    Subscribe, SubscribeProperties, SubscriptionOptions, UnsubAck, Unsubscribe,
    UnsubscribeProperties, UserProperties, WillProperties,
};

/// UTF-8 strings without U+0000, including multi-byte characters.
fn string() -> impl Strategy<Value = ByteString> {
    "[^\\x00]{0,8}".prop_map(ByteString::from)
}

fn bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|value| PacketId::new(value).unwrap())
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn reason_code(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    select(codes).prop_map(|code| ReasonCode::from_u8(code).unwrap())
}

fn user_properties() -> impl Strategy<Value = UserProperties> {
    vec((string(), string()), 0..3)
}

fn subscription_identifier() -> impl Strategy<Value = u32> {
    1..=268_435_455u32
}

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        of(any::<u32>()),
        of(1..=u16::MAX),
        of(1..=u32::MAX),
        of(any::<u16>()),
        of(any::<bool>()),
        of(any::<bool>()),
        user_properties(),
        of(string()),
        of(bytes()),
    )
        .prop_map(|fields| ConnectProperties {
            session_expiry_interval: fields.0,
            receive_maximum: fields.1,
            maximum_packet_size: fields.2,
            topic_alias_maximum: fields.3,
            request_response_information: fields.4,
            request_problem_information: fields.5,
            user_properties: fields.6,
            authentication_method: fields.7,
            authentication_data: fields.8,
        })
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        of(any::<u32>()),
        of(0..=1u8),
        of(any::<u32>()),
        of(string()),
        of(string()),
        of(bytes()),
        user_properties(),
    )
        .prop_map(|fields| WillProperties {
            will_delay_interval: fields.0,
            payload_format_indicator: fields.1,
            message_expiry_interval: fields.2,
            content_type: fields.3,
            response_topic: fields.4,
            correlation_data: fields.5,
            user_properties: fields.6,
        })
}

fn last_will(version: ProtocolVersion) -> impl Strategy<Value = LastWill> {
    let properties = if version.is_v5() {
        will_properties().boxed()
    } else {
        Just(WillProperties::default()).boxed()
    };
    (qos(), any::<bool>(), string(), bytes(), properties).prop_map(
        |(qos, retain, topic, payload, properties)| LastWill {
            qos,
            retain,
            topic,
            payload,
            properties,
        },
    )
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let properties = if version.is_v5() {
        connect_properties().boxed()
    } else {
        Just(ConnectProperties::default()).boxed()
    };
    (
        any::<bool>(),
        any::<u16>(),
        properties,
        string(),
        of(last_will(version)),
        of(string()),
        of(bytes()),
    )
        .prop_map(
            move |(
                clean_start,
                keep_alive,
                properties,
                client_id,
                last_will,
                username,
                password,
            )| {
                // [MQTT-3.1.2-22] 3.1.1 has no password without a user name.
                let password = if version == ProtocolVersion::V3_1_1 && username.is_none() {
                    None
                } else {
                    password
                };
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start,
                    keep_alive,
                    properties,
                    client_id,
                    last_will,
                    username,
                    password,
                }))
            },
        )
}

fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    let limits = (
        of(any::<u32>()),
        of(1..=u16::MAX),
        of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
        of(any::<bool>()),
        of(1..=u32::MAX),
        of(string()),
        of(any::<u16>()),
        of(string()),
        user_properties(),
    );
    let features = (
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<u16>()),
        of(string()),
        of(string()),
        of(string()),
        of(bytes()),
    );
    (limits, features).prop_map(|(limits, features)| ConnAckProperties {
        session_expiry_interval: limits.0,
        receive_maximum: limits.1,
        maximum_qos: limits.2,
        retain_available: limits.3,
        maximum_packet_size: limits.4,
        assigned_client_identifier: limits.5,
        topic_alias_maximum: limits.6,
        reason_string: limits.7,
        user_properties: limits.8,
        wildcard_subscription_available: features.0,
        subscription_identifiers_available: features.1,
        shared_subscription_available: features.2,
        server_keep_alive: features.3,
        response_information: features.4,
        server_reference: features.5,
        authentication_method: features.6,
        authentication_data: features.7,
    })
}

fn connack(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    match version {
        ProtocolVersion::V5 => (
            any::<bool>(),
            reason_code(&[
                0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90,
                0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
            ]),
            connack_properties(),
        )
            .prop_map(|(session_present, reason_code, properties)| {
                Packet::ConnAck(ConnAck {
                    session_present,
                    reason_code,
                    properties,
                })
            })
            .boxed(),
        ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1 => (
            // MQTT 3.1 has no Session Present flag.
            any::<bool>().prop_map(move |bit| bit && version == ProtocolVersion::V3_1_1),
            reason_code(&[0x00, 0x84, 0x85, 0x88, 0x86, 0x87]),
        )
            .prop_map(|(session_present, reason_code)| {
                Packet::ConnAck(ConnAck {
                    session_present,
                    reason_code,
                    properties: ConnAckProperties::default(),
                })
            })
            .boxed(),
    }
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        of(0..=1u8),
        of(any::<u32>()),
        of(packet_id()),
        of(string()),
        of(bytes()),
        user_properties(),
        vec(subscription_identifier(), 0..3),
        of(string()),
    )
        .prop_map(|fields| PublishProperties {
            payload_format_indicator: fields.0,
            message_expiry_interval: fields.1,
            topic_alias: fields.2,
            response_topic: fields.3,
            correlation_data: fields.4,
            user_properties: fields.5,
            subscription_identifiers: fields.6,
            content_type: fields.7,
        })
}

/// Returns `strategy` in MQTT 5.0 and the default value in 3.x.
fn v5_only<T: Default + Clone + std::fmt::Debug + 'static>(
    version: ProtocolVersion,
    strategy: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    if version.is_v5() {
        strategy.boxed()
    } else {
        Just(T::default()).boxed()
    }
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        string(),
        packet_id(),
        v5_only(version, publish_properties()),
        bytes(),
    )
        .prop_map(
            |(dup, qos, retain, topic, packet_id, properties, payload)| {
                let has_packet_id = qos != QoS::AtMostOnce;
                Packet::Publish(Publish {
                    // [MQTT-3.3.1-2] DUP only with QoS > 0.
                    dup: dup && has_packet_id,
                    qos,
                    retain,
                    topic,
                    packet_id: has_packet_id.then_some(packet_id),
                    properties,
                    payload,
                })
            },
        )
}

fn ack_properties() -> impl Strategy<Value = AckProperties> {
    (of(string()), user_properties()).prop_map(|(reason_string, user_properties)| AckProperties {
        reason_string,
        user_properties,
    })
}

fn ack(version: ProtocolVersion, codes: &'static [u8]) -> impl Strategy<Value = Ack> {
    let codes: &'static [u8] = if version.is_v5() { codes } else { &[0x00] };
    (
        packet_id(),
        reason_code(codes),
        v5_only(version, ack_properties()),
    )
        .prop_map(|(packet_id, reason_code, properties)| Ack {
            packet_id,
            reason_code,
            properties,
        })
}

const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];

fn subscription_options(version: ProtocolVersion) -> impl Strategy<Value = SubscriptionOptions> {
    let retain_handling = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend),
    ];
    (qos(), any::<bool>(), any::<bool>(), retain_handling).prop_map(
        move |(qos, no_local, retain_as_published, retain_handling)| {
            if version.is_v5() {
                SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    retain_handling,
                }
            } else {
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                }
            }
        },
    )
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let properties = (of(subscription_identifier()), user_properties()).prop_map(
        |(subscription_identifier, user_properties)| SubscribeProperties {
            subscription_identifier,
            user_properties,
        },
    );
    (
        packet_id(),
        v5_only(version, properties),
        vec((string(), subscription_options(version)), 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn suback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes: &'static [u8] = if version.is_v5() {
        &[
            0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
        ]
    } else {
        &[0x00, 0x01, 0x02, 0x80]
    };
    (
        packet_id(),
        v5_only(version, ack_properties()),
        vec(reason_code(codes), 1..4),
    )
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reason_codes,
            })
        })
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let properties =
        user_properties().prop_map(|user_properties| UnsubscribeProperties { user_properties });
    (
        packet_id(),
        v5_only(version, properties),
        vec(string(), 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn unsuback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = reason_code(&[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91]);
    (
        packet_id(),
        v5_only(version, ack_properties()),
        v5_only(version, vec(codes, 1..4)),
    )
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reason_codes,
            })
        })
}

fn disconnect_properties() -> impl Strategy<Value = DisconnectProperties> {
    (
        of(any::<u32>()),
        of(string()),
        user_properties(),
        of(string()),
    )
        .prop_map(|fields| DisconnectProperties {
            session_expiry_interval: fields.0,
            reason_string: fields.1,
            user_properties: fields.2,
            server_reference: fields.3,
        })
}

fn disconnect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = reason_code(&[
        0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
        0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
    ]);
    let reason_code = if version.is_v5() {
        codes.boxed()
    } else {
        Just(ReasonCode::NORMAL_DISCONNECTION).boxed()
    };
    (reason_code, v5_only(version, disconnect_properties())).prop_map(
        |(reason_code, properties)| {
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        },
    )
}

fn auth() -> impl Strategy<Value = Packet> {
    let properties =
        (of(string()), of(bytes()), of(string()), user_properties()).prop_map(|fields| {
            AuthProperties {
                authentication_method: fields.0,
                authentication_data: fields.1,
                reason_string: fields.2,
                user_properties: fields.3,
            }
        });
    (reason_code(&[0x00, 0x18, 0x19]), properties).prop_map(|(reason_code, properties)| {
        Packet::Auth(Auth {
            reason_code,
            properties,
        })
    })
}

/// Any packet that is valid in `version`.
pub(super) fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let packets = prop_oneof![
        connect(version),
        connack(version),
        publish(version),
        ack(version, PUBACK_CODES).prop_map(Packet::PubAck),
        ack(version, PUBACK_CODES).prop_map(Packet::PubRec),
        ack(version, PUBREL_CODES).prop_map(Packet::PubRel),
        ack(version, PUBREL_CODES).prop_map(Packet::PubComp),
        subscribe(version),
        suback(version),
        unsubscribe(version),
        unsuback(version),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(version),
    ];
    if version.is_v5() {
        prop_oneof![14 => packets, 1 => auth()].boxed()
    } else {
        packets.boxed()
    }
}
