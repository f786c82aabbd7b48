//! Golden byte vectors for CONNECT, CONNACK and PUBLISH: each packet encodes to exactly these
//! bytes and decodes back.

use bytes::Bytes;

use super::{assert_golden, encode, packet_id, string};
use crate::codec::ProtocolVersion::{V3_1, V3_1_1, V5};
use crate::codec::{
    ConnAck, ConnAckProperties, Connect, ConnectProperties, LastWill, Packet, Publish,
    PublishProperties, QoS, ReasonCode, WillProperties,
};

#[test]
fn connect_v3_1() {
    let connect = Connect {
        protocol: V3_1,
        clean_start: true,
        keep_alive: 60,
        properties: ConnectProperties::default(),
        client_id: string("c1"),
        last_will: None,
        username: None,
        password: None,
    };
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x10,
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C,
        0x00, 0x02, b'c', b'1',
    ];
    assert_golden(Packet::Connect(Box::new(connect)), V3_1, &bytes);
}

#[test]
fn connect_v3_1_1_with_will_and_credentials() {
    let connect = Connect {
        protocol: V3_1_1,
        clean_start: true,
        keep_alive: 10,
        properties: ConnectProperties::default(),
        client_id: string("id"),
        last_will: Some(LastWill {
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: string("w"),
            payload: Bytes::from_static(b"bye"),
            properties: WillProperties::default(),
        }),
        username: Some(string("u")),
        password: Some(Bytes::from_static(b"p")),
    };
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x1C,
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xEE, 0x00, 0x0A,
        0x00, 0x02, b'i', b'd',
        0x00, 0x01, b'w',
        0x00, 0x03, b'b', b'y', b'e',
        0x00, 0x01, b'u',
        0x00, 0x01, b'p',
    ];
    assert_golden(Packet::Connect(Box::new(connect)), V3_1_1, &bytes);
}

#[test]
fn connect_v5_with_properties_and_will() {
    let connect = Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 30,
        properties: ConnectProperties {
            session_expiry_interval: Some(120),
            receive_maximum: Some(10),
            user_properties: vec![(string("k"), string("v"))],
            ..ConnectProperties::default()
        },
        client_id: string("c"),
        last_will: Some(LastWill {
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: string("w"),
            payload: Bytes::from_static(b"x"),
            properties: WillProperties {
                will_delay_interval: Some(5),
                payload_format_indicator: Some(1),
                content_type: Some(string("t")),
                ..WillProperties::default()
            },
        }),
        username: None,
        password: None,
    };
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x2F,
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x16, 0x00, 0x1E,
        0x0F,
        0x11, 0x00, 0x00, 0x00, 0x78,
        0x21, 0x00, 0x0A,
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',
        0x00, 0x01, b'c',
        0x0B,
        0x18, 0x00, 0x00, 0x00, 0x05,
        0x01, 0x01,
        0x03, 0x00, 0x01, b't',
        0x00, 0x01, b'w',
        0x00, 0x01, b'x',
    ];
    assert_golden(Packet::Connect(Box::new(connect)), V5, &bytes);
}

#[test]
fn connect_v5_allows_password_without_user_name() {
    let connect = Connect {
        protocol: V5,
        clean_start: false,
        keep_alive: 0,
        properties: ConnectProperties::default(),
        client_id: string(""),
        last_will: None,
        username: None,
        password: Some(Bytes::from_static(b"p")),
    };
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x10,
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x40, 0x00, 0x00,
        0x00,
        0x00, 0x00,
        0x00, 0x01, b'p',
    ];
    assert_golden(Packet::Connect(Box::new(connect)), V5, &bytes);
}

#[test]
fn connack_v3() {
    let accepted = ConnAck {
        session_present: true,
        reason_code: ReasonCode::Success,
        properties: ConnAckProperties::default(),
    };
    assert_golden(Packet::ConnAck(accepted), V3_1_1, &[0x20, 0x02, 0x01, 0x00]);
    let not_authorized = ConnAck {
        session_present: false,
        reason_code: ReasonCode::NotAuthorized,
        properties: ConnAckProperties::default(),
    };
    assert_golden(
        Packet::ConnAck(not_authorized),
        V3_1,
        &[0x20, 0x02, 0x00, 0x05],
    );
}

#[test]
fn connack_v3_maps_v5_reason_codes_to_return_codes() {
    let banned = Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: ReasonCode::Banned,
        properties: ConnAckProperties::default(),
    });
    assert_eq!(encode(&banned, V3_1_1), [0x20, 0x02, 0x00, 0x05]);
    let busy = Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: ReasonCode::ServerBusy,
        properties: ConnAckProperties::default(),
    });
    assert_eq!(encode(&busy, V3_1_1), [0x20, 0x02, 0x00, 0x03]);
}

#[test]
fn connack_v5_with_properties() {
    let connack = ConnAck {
        session_present: false,
        reason_code: ReasonCode::Success,
        properties: ConnAckProperties {
            receive_maximum: Some(20),
            maximum_qos: Some(QoS::AtLeastOnce),
            assigned_client_identifier: Some(string("a")),
            ..ConnAckProperties::default()
        },
    };
    #[rustfmt::skip]
    let bytes = [
        0x20, 0x0C, 0x00, 0x00,
        0x09, 0x21, 0x00, 0x14, 0x24, 0x01, 0x12, 0x00, 0x01, b'a',
    ];
    assert_golden(Packet::ConnAck(connack), V5, &bytes);
}

#[test]
fn publish_qos0_retained() {
    let publish = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: string("a/b"),
        packet_id: None,
        properties: PublishProperties::default(),
        payload: Bytes::from_static(b"hi"),
    };
    let bytes = [0x31, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
    assert_golden(Packet::Publish(publish.clone()), V3_1_1, &bytes);
    // MQTT 5.0 adds an empty property block.
    let bytes_v5 = [0x31, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x00, b'h', b'i'];
    assert_golden(Packet::Publish(publish), V5, &bytes_v5);
}

#[test]
fn publish_qos1_dup() {
    let publish = Publish {
        dup: true,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: string("t"),
        packet_id: Some(packet_id(10)),
        properties: PublishProperties::default(),
        payload: Bytes::from_static(b"x"),
    };
    let bytes = [0x3A, 0x06, 0x00, 0x01, b't', 0x00, 0x0A, b'x'];
    assert_golden(Packet::Publish(publish), V3_1, &bytes);
}

#[test]
fn publish_qos2_v5_with_properties() {
    let publish = Publish {
        dup: false,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: string("t"),
        packet_id: Some(packet_id(0x1234)),
        properties: PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            topic_alias: Some(packet_id(3)),
            user_properties: vec![(string("a"), string("b"))],
            subscription_identifiers: vec![1, 200],
            content_type: Some(string("j")),
            ..PublishProperties::default()
        },
        payload: Bytes::from_static(b"hey"),
    };
    #[rustfmt::skip]
    let bytes = [
        0x34, 0x23,
        0x00, 0x01, b't', 0x12, 0x34,
        0x1A,
        0x01, 0x01,
        0x02, 0x00, 0x00, 0x00, 0x3C,
        0x23, 0x00, 0x03,
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b',
        0x0B, 0x01,
        0x0B, 0xC8, 0x01,
        0x03, 0x00, 0x01, b'j',
        b'h', b'e', b'y',
    ];
    assert_golden(Packet::Publish(publish), V5, &bytes);
}
