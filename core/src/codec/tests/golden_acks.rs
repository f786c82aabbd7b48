//! Golden byte vectors for the acks, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, the pings,
//! DISCONNECT and AUTH.

use bytes::Bytes;

use super::{assert_golden, decode_all, encode, packet_id, string};
use crate::codec::ProtocolVersion::{V3_1, V3_1_1, V5};
use crate::codec::{
    Ack, AckProperties, Auth, AuthProperties, Disconnect, DisconnectProperties, Packet, QoS,
    ReasonCode, RetainHandling, SubAck, Subscribe, SubscribeProperties, SubscriptionOptions,
    UnsubAck, Unsubscribe, UnsubscribeProperties,
};

fn ack(packet_id_value: u16, reason_code: ReasonCode) -> Ack {
    Ack {
        packet_id: packet_id(packet_id_value),
        reason_code,
        properties: AckProperties::default(),
    }
}

#[test]
fn acks_v3() {
    assert_golden(
        Packet::PubAck(ack(5, ReasonCode::Success)),
        V3_1_1,
        &[0x40, 0x02, 0x00, 0x05],
    );
    assert_golden(
        Packet::PubRec(ack(5, ReasonCode::Success)),
        V3_1_1,
        &[0x50, 0x02, 0x00, 0x05],
    );
    assert_golden(
        Packet::PubRel(ack(7, ReasonCode::Success)),
        V3_1,
        &[0x62, 0x02, 0x00, 0x07],
    );
    assert_golden(
        Packet::PubComp(ack(7, ReasonCode::Success)),
        V3_1_1,
        &[0x70, 0x02, 0x00, 0x07],
    );
}

#[test]
fn acks_v5_short_and_long_forms() {
    // Success without properties: remaining length 2.
    assert_golden(
        Packet::PubAck(ack(5, ReasonCode::Success)),
        V5,
        &[0x40, 0x02, 0x00, 0x05],
    );
    // Reason code without properties: remaining length 3.
    assert_golden(
        Packet::PubRec(ack(5, ReasonCode::NoMatchingSubscribers)),
        V5,
        &[0x50, 0x03, 0x00, 0x05, 0x10],
    );
    assert_golden(
        Packet::PubRel(ack(7, ReasonCode::Success)),
        V5,
        &[0x62, 0x02, 0x00, 0x07],
    );
    let with_reason_string = Ack {
        properties: AckProperties {
            reason_string: Some(string("nf")),
            ..AckProperties::default()
        },
        ..ack(7, ReasonCode::PacketIdentifierNotFound)
    };
    #[rustfmt::skip]
    let bytes = [
        0x70, 0x09, 0x00, 0x07, 0x92,
        0x05, 0x1F, 0x00, 0x02, b'n', b'f',
    ];
    assert_golden(Packet::PubComp(with_reason_string), V5, &bytes);
    // An explicit empty property block decodes like the short form.
    assert_eq!(
        decode_all(&[0x40, 0x04, 0x00, 0x05, 0x00, 0x00], Some(V5)),
        Ok(Packet::PubAck(ack(5, ReasonCode::Success)))
    );
}

#[test]
fn acks_v3_drop_reason_code_and_properties() {
    let with_reason_string = Ack {
        properties: AckProperties {
            reason_string: Some(string("nf")),
            ..AckProperties::default()
        },
        ..ack(7, ReasonCode::PacketIdentifierNotFound)
    };
    assert_eq!(
        encode(&Packet::PubComp(with_reason_string), V3_1_1),
        [0x70, 0x02, 0x00, 0x07]
    );
}

#[test]
fn subscribe_v3() {
    let subscribe = Subscribe {
        packet_id: packet_id(1),
        properties: SubscribeProperties::default(),
        filters: vec![
            (
                string("a/+"),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
            ),
            (string("#"), SubscriptionOptions::default()),
        ],
    };
    #[rustfmt::skip]
    let bytes = [
        0x82, 0x0C, 0x00, 0x01,
        0x00, 0x03, b'a', b'/', b'+', 0x01,
        0x00, 0x01, b'#', 0x00,
    ];
    assert_golden(Packet::Subscribe(subscribe), V3_1_1, &bytes);
}

#[test]
fn subscribe_v5_with_options_and_identifier() {
    let subscribe = Subscribe {
        packet_id: packet_id(2),
        properties: SubscribeProperties {
            subscription_identifier: Some(7),
            ..SubscribeProperties::default()
        },
        filters: vec![(
            string("x"),
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        )],
    };
    let bytes = [
        0x82, 0x09, 0x00, 0x02, 0x02, 0x0B, 0x07, 0x00, 0x01, b'x', 0x2E,
    ];
    assert_golden(Packet::Subscribe(subscribe), V5, &bytes);
}

#[test]
fn suback() {
    let suback_v3 = SubAck {
        packet_id: packet_id(1),
        properties: AckProperties::default(),
        reason_codes: vec![ReasonCode::GrantedQoS1, ReasonCode::UnspecifiedError],
    };
    assert_golden(
        Packet::SubAck(suback_v3),
        V3_1_1,
        &[0x90, 0x04, 0x00, 0x01, 0x01, 0x80],
    );
    let suback_v5 = SubAck {
        packet_id: packet_id(2),
        properties: AckProperties::default(),
        reason_codes: vec![
            ReasonCode::GrantedQoS2,
            ReasonCode::WildcardSubscriptionsNotSupported,
        ],
    };
    assert_golden(
        Packet::SubAck(suback_v5),
        V5,
        &[0x90, 0x05, 0x00, 0x02, 0x00, 0x02, 0xA2],
    );
}

#[test]
fn suback_v3_reports_every_error_as_failure() {
    let suback = Packet::SubAck(SubAck {
        packet_id: packet_id(1),
        properties: AckProperties::default(),
        reason_codes: vec![ReasonCode::NotAuthorized, ReasonCode::Success],
    });
    assert_eq!(
        encode(&suback, V3_1_1),
        [0x90, 0x04, 0x00, 0x01, 0x80, 0x00]
    );
}

#[test]
fn unsubscribe() {
    let unsubscribe_v3 = Unsubscribe {
        packet_id: packet_id(3),
        properties: UnsubscribeProperties::default(),
        filters: vec![string("a/b")],
    };
    assert_golden(
        Packet::Unsubscribe(unsubscribe_v3),
        V3_1_1,
        &[0xA2, 0x07, 0x00, 0x03, 0x00, 0x03, b'a', b'/', b'b'],
    );
    let unsubscribe_v5 = Unsubscribe {
        packet_id: packet_id(3),
        properties: UnsubscribeProperties {
            user_properties: vec![(string("k"), string("v"))],
        },
        filters: vec![string("a")],
    };
    #[rustfmt::skip]
    let bytes = [
        0xA2, 0x0D, 0x00, 0x03,
        0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',
        0x00, 0x01, b'a',
    ];
    assert_golden(Packet::Unsubscribe(unsubscribe_v5), V5, &bytes);
}

#[test]
fn unsuback() {
    let unsuback_v3 = UnsubAck {
        packet_id: packet_id(3),
        properties: AckProperties::default(),
        reason_codes: Vec::new(),
    };
    assert_golden(
        Packet::UnsubAck(unsuback_v3),
        V3_1_1,
        &[0xB0, 0x02, 0x00, 0x03],
    );
    let unsuback_v5 = UnsubAck {
        packet_id: packet_id(3),
        properties: AckProperties::default(),
        reason_codes: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
    };
    assert_golden(
        Packet::UnsubAck(unsuback_v5.clone()),
        V5,
        &[0xB0, 0x05, 0x00, 0x03, 0x00, 0x00, 0x11],
    );
    // 3.x has no UNSUBACK payload.
    assert_eq!(
        encode(&Packet::UnsubAck(unsuback_v5), V3_1_1),
        [0xB0, 0x02, 0x00, 0x03]
    );
}

#[test]
fn pings() {
    for version in [V3_1, V3_1_1, V5] {
        assert_golden(Packet::PingReq, version, &[0xC0, 0x00]);
        assert_golden(Packet::PingResp, version, &[0xD0, 0x00]);
    }
}

#[test]
fn disconnect() {
    let normal = Disconnect {
        reason_code: ReasonCode::NORMAL_DISCONNECTION,
        properties: DisconnectProperties::default(),
    };
    assert_golden(Packet::Disconnect(normal.clone()), V3_1_1, &[0xE0, 0x00]);
    assert_golden(Packet::Disconnect(normal), V5, &[0xE0, 0x00]);
    let taken_over = Disconnect {
        reason_code: ReasonCode::SessionTakenOver,
        properties: DisconnectProperties::default(),
    };
    // Encoded with an explicit empty property length for client interoperability...
    assert_golden(
        Packet::Disconnect(taken_over.clone()),
        V5,
        &[0xE0, 0x02, 0x8E, 0x00],
    );
    // ...while the shorter legal form still decodes.
    let mut short = bytes::BytesMut::from(&[0xE0, 0x01, 0x8E][..]);
    assert_eq!(
        crate::codec::decode_packet(&mut short, 1024, Some(V5)).unwrap(),
        Some(Packet::Disconnect(taken_over.clone()))
    );
    assert_eq!(
        encode(&Packet::Disconnect(taken_over), V3_1_1),
        [0xE0, 0x00]
    );
    let with_will = Disconnect {
        reason_code: ReasonCode::DisconnectWithWillMessage,
        properties: DisconnectProperties {
            session_expiry_interval: Some(0),
            ..DisconnectProperties::default()
        },
    };
    assert_golden(
        Packet::Disconnect(with_will),
        V5,
        &[0xE0, 0x07, 0x04, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00],
    );
}

#[test]
fn auth() {
    let success = Auth {
        reason_code: ReasonCode::Success,
        properties: AuthProperties::default(),
    };
    assert_golden(Packet::Auth(success), V5, &[0xF0, 0x00]);
    let continue_authentication = Auth {
        reason_code: ReasonCode::ContinueAuthentication,
        properties: AuthProperties {
            authentication_method: Some(string("m")),
            authentication_data: Some(Bytes::from_static(&[1, 2])),
            ..AuthProperties::default()
        },
    };
    #[rustfmt::skip]
    let bytes = [
        0xF0, 0x0B, 0x18,
        0x09, 0x15, 0x00, 0x01, b'm', 0x16, 0x00, 0x02, 0x01, 0x02,
    ];
    assert_golden(Packet::Auth(continue_authentication), V5, &bytes);
}
