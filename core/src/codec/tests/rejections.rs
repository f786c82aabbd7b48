//! Rejection tests: every rule the decoder enforces, with the error it reports.

use bytes::BytesMut;

use super::{decode_all, MAX_PACKET_SIZE};
use crate::codec::ProtocolVersion::{V3_1, V3_1_1, V5};
use crate::codec::{decode_packet, DecodeError, Packet, ProtocolVersion, ReasonCode};

fn assert_rejected(bytes: &[u8], version: Option<ProtocolVersion>, expected: DecodeError) {
    assert_eq!(decode_all(bytes, version), Err(expected), "{bytes:02x?}");
}

fn assert_malformed(bytes: &[u8], version: Option<ProtocolVersion>) {
    let result = decode_all(bytes, version);
    assert!(
        matches!(result, Err(DecodeError::Malformed(_))),
        "{bytes:02x?} gave {result:?}"
    );
}

#[test]
fn oversized_frame_is_rejected_before_the_body_is_reserved() {
    // PUBLISH with the largest remaining length, 268,435,455; only the header has arrived.
    let mut src = BytesMut::with_capacity(5);
    src.extend_from_slice(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]);
    let capacity_before = src.capacity();
    assert_eq!(
        decode_packet(&mut src, MAX_PACKET_SIZE, Some(V5)),
        Err(DecodeError::PacketTooLarge {
            size: 268_435_455 + 5
        })
    );
    assert_eq!(src.capacity(), capacity_before);
    assert_eq!(src.len(), 5);
}

#[test]
fn maximum_packet_size_counts_the_fixed_header() {
    let pingreq = [0xC0, 0x00];
    let mut src = BytesMut::from(&pingreq[..]);
    assert_eq!(
        decode_packet(&mut src, 1, Some(V5)),
        Err(DecodeError::PacketTooLarge { size: 2 })
    );
    let mut src = BytesMut::from(&pingreq[..]);
    assert_eq!(
        decode_packet(&mut src, 2, Some(V5)),
        Ok(Some(Packet::PingReq))
    );
}

#[test]
fn incomplete_body_reserves_exactly_the_frame() {
    let mut src = BytesMut::from(&[0x30, 0x7F, 0x00][..]);
    assert_eq!(decode_packet(&mut src, MAX_PACKET_SIZE, Some(V5)), Ok(None));
    assert!(src.capacity() >= 0x7F + 2);
    assert_eq!(src.len(), 3);
}

#[test]
fn remaining_length_of_five_bytes_is_malformed() {
    let mut src = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01][..]);
    assert_eq!(
        decode_packet(&mut src, MAX_PACKET_SIZE, Some(V5)),
        Err(DecodeError::MalformedRemainingLength)
    );
    // Detected as soon as the fourth byte announces a fifth.
    let mut src = BytesMut::from(&[0x30, 0x80, 0x80, 0x80, 0x80][..]);
    assert_eq!(
        decode_packet(&mut src, MAX_PACKET_SIZE, Some(V5)),
        Err(DecodeError::MalformedRemainingLength)
    );
    let mut src = BytesMut::from(&[0x30, 0x80, 0x80, 0x80][..]);
    assert_eq!(decode_packet(&mut src, MAX_PACKET_SIZE, Some(V5)), Ok(None));
}

#[test]
fn reserved_packet_type_0_is_rejected() {
    assert_rejected(&[0x00, 0x00], Some(V5), DecodeError::InvalidPacketType(0));
}

#[test]
fn wrong_fixed_header_flags_are_rejected() {
    // [MQTT-2.1.3-1] PUBREL, SUBSCRIBE and UNSUBSCRIBE need 0b0010, every other type 0.
    let cases: [(&[u8], u8); 8] = [
        (&[0x60, 0x02, 0x00, 0x01], 6),
        (&[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00], 8),
        (&[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'], 10),
        (&[0x41, 0x02, 0x00, 0x01], 4),
        (&[0x72, 0x02, 0x00, 0x01], 7),
        (&[0xC1, 0x00], 12),
        (&[0xE8, 0x00], 14),
        (&[0x12, 0x00], 1),
    ];
    for (bytes, packet_type) in cases {
        assert_rejected(bytes, Some(V3_1_1), DecodeError::InvalidFlags(packet_type));
    }
}

#[test]
fn pings_with_a_body_are_malformed() {
    assert_malformed(&[0xC0, 0x01, 0x00], Some(V3_1_1));
    assert_malformed(&[0xD0, 0x01, 0x00], Some(V5));
}

#[test]
fn first_packet_must_be_connect_and_only_once() {
    assert_rejected(
        &[0xC0, 0x00],
        None,
        DecodeError::Protocol("first packet must be CONNECT"),
    );
    // Rejected from the fixed header alone, before the body is reserved.
    let mut src = BytesMut::with_capacity(2);
    src.extend_from_slice(&[0x30, 0x7F]);
    let capacity_before = src.capacity();
    assert_eq!(
        decode_packet(&mut src, MAX_PACKET_SIZE, None),
        Err(DecodeError::Protocol("first packet must be CONNECT"))
    );
    assert_eq!(src.capacity(), capacity_before);
    let connect = [
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x00,
    ];
    assert!(decode_all(&connect, None).is_ok());
    assert_rejected(
        &connect,
        Some(V3_1_1),
        DecodeError::Protocol("second CONNECT"),
    );
}

/// Builds a CONNECT for `name` and `level` with connect flags `flags`, keep alive 0 and `rest`
/// after the keep alive.
fn connect_bytes(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, flags, 0x00, 0x00]);
    body.extend_from_slice(rest);
    let mut bytes = vec![0x10, body.len() as u8];
    bytes.extend_from_slice(&body);
    bytes
}

#[test]
fn connect_with_wrong_protocol_name_or_level_is_rejected() {
    let client_id = [0x00, 0x00];
    assert_rejected(
        &connect_bytes(b"MQTX", 4, 0x02, &client_id),
        None,
        DecodeError::InvalidProtocolName,
    );
    assert_rejected(
        &connect_bytes(b"MQTT", 6, 0x02, &client_id),
        None,
        DecodeError::UnsupportedProtocolVersion(6),
    );
    assert_rejected(
        &connect_bytes(b"MQIsdp", 4, 0x02, &client_id),
        None,
        DecodeError::UnsupportedProtocolVersion(4),
    );
    assert_rejected(
        &connect_bytes(b"MQTT", 3, 0x02, &client_id),
        None,
        DecodeError::UnsupportedProtocolVersion(3),
    );
    // Invalid UTF-8 in the protocol name is just a wrong name.
    assert_rejected(
        &connect_bytes(&[0xFF, 0xFE], 4, 0x02, &client_id),
        None,
        DecodeError::InvalidProtocolName,
    );
}

#[test]
fn connect_flag_rules_are_enforced() {
    let client_id = [0x00, 0x00];
    // [MQTT-3.1.2-3] reserved flag.
    assert_malformed(&connect_bytes(b"MQTT", 4, 0x03, &client_id), None);
    // [MQTT-3.1.2-13] will QoS without the will flag (3.1.1 numbering).
    assert_malformed(&connect_bytes(b"MQTT", 4, 0x08, &client_id), None);
    // [MQTT-3.1.2-15] will retain without the will flag.
    assert_malformed(&connect_bytes(b"MQTT", 5, 0x20, &[0x00, 0x00, 0x00]), None);
    // [MQTT-3.1.2-14] will QoS 3.
    let will = [0x00, 0x00, 0x00, 0x01, b'w', 0x00, 0x00];
    assert_rejected(
        &connect_bytes(b"MQTT", 4, 0x1C, &will),
        None,
        DecodeError::InvalidQoS,
    );
    // [MQTT-3.1.2-22] 3.1.1 password without user name.
    let password = [0x00, 0x00, 0x00, 0x01, b'p'];
    assert_malformed(&connect_bytes(b"MQTT", 4, 0x40, &password), None);
    // 3.1 tolerates it.
    assert!(decode_all(&connect_bytes(b"MQIsdp", 3, 0x40, &password), None).is_ok());
}

#[test]
fn connect_with_trailing_or_missing_bytes_is_malformed() {
    assert_malformed(&connect_bytes(b"MQTT", 4, 0x02, &[0x00, 0x00, 0x00]), None);
    // User name flag set but no user name.
    assert_malformed(&connect_bytes(b"MQTT", 4, 0x82, &[0x00, 0x00]), None);
    // MQTT 5.0 without the property block.
    assert_malformed(&connect_bytes(b"MQTT", 5, 0x02, &[]), None);
}

#[test]
fn invalid_utf8_and_nul_in_topic_are_rejected() {
    for version in [V3_1_1, V5] {
        let props: &[u8] = if version.is_v5() { &[0x00] } else { &[] };
        let mut with_nul = vec![0x30, 0x00, 0x00, 0x03, b'a', 0x00, b'b'];
        with_nul.extend_from_slice(props);
        with_nul[1] = (with_nul.len() - 2) as u8;
        assert_rejected(&with_nul, Some(version), DecodeError::InvalidUtf8);
        let mut ill_formed = vec![0x30, 0x00, 0x00, 0x02, 0xC3, 0x28];
        ill_formed.extend_from_slice(props);
        ill_formed[1] = (ill_formed.len() - 2) as u8;
        assert_rejected(&ill_formed, Some(version), DecodeError::InvalidUtf8);
    }
}

#[test]
fn publish_flag_and_packet_id_rules_are_enforced() {
    // [MQTT-3.3.1-4] QoS 3.
    assert_rejected(
        &[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01],
        Some(V3_1_1),
        DecodeError::InvalidQoS,
    );
    // [MQTT-3.3.1-2] DUP with QoS 0.
    assert_malformed(&[0x38, 0x03, 0x00, 0x01, b't'], Some(V3_1_1));
    // [MQTT-2.2.1-3] packet identifier 0.
    assert_rejected(
        &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00],
        Some(V3_1_1),
        DecodeError::ZeroPacketId,
    );
    // Truncated topic.
    assert_malformed(&[0x30, 0x03, 0x00, 0x05, b't'], Some(V3_1_1));
    // QoS 1 without room for the packet identifier.
    assert_malformed(&[0x32, 0x04, 0x00, 0x01, b't', 0x00], Some(V3_1_1));
}

#[test]
fn ack_rules_are_enforced() {
    assert_rejected(
        &[0x40, 0x02, 0x00, 0x00],
        Some(V3_1_1),
        DecodeError::ZeroPacketId,
    );
    // 3.x acks are exactly two bytes.
    assert_malformed(&[0x40, 0x03, 0x00, 0x01, 0x00], Some(V3_1_1));
    assert_malformed(&[0x40, 0x01, 0x00], Some(V5));
    // Reason codes must belong to the packet.
    assert_rejected(
        &[0x40, 0x03, 0x00, 0x01, 0x92],
        Some(V5),
        DecodeError::InvalidReasonCode(0x92),
    );
    assert_rejected(
        &[0x50, 0x03, 0x00, 0x01, 0x04],
        Some(V5),
        DecodeError::InvalidReasonCode(0x04),
    );
    assert_rejected(
        &[0x62, 0x03, 0x00, 0x01, 0x10],
        Some(V5),
        DecodeError::InvalidReasonCode(0x10),
    );
    assert_rejected(
        &[0x70, 0x03, 0x00, 0x01, 0x80],
        Some(V5),
        DecodeError::InvalidReasonCode(0x80),
    );
    // Every code of the lists is accepted.
    for code in [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99] {
        assert!(decode_all(&[0x40, 0x03, 0x00, 0x01, code], Some(V5)).is_ok());
        assert!(decode_all(&[0x50, 0x03, 0x00, 0x01, code], Some(V5)).is_ok());
    }
    for code in [0x00, 0x92] {
        assert!(decode_all(&[0x62, 0x03, 0x00, 0x01, code], Some(V5)).is_ok());
        assert!(decode_all(&[0x70, 0x03, 0x00, 0x01, code], Some(V5)).is_ok());
    }
}

#[test]
fn subscribe_rules_are_enforced() {
    // [MQTT-3.8.3-3] no topic filter.
    assert_rejected(
        &[0x82, 0x02, 0x00, 0x01],
        Some(V3_1_1),
        DecodeError::Protocol("subscribe without topic filters"),
    );
    assert_rejected(
        &[0x82, 0x03, 0x00, 0x01, 0x00],
        Some(V5),
        DecodeError::Protocol("subscribe without topic filters"),
    );
    let with_options = |options: u8, version: ProtocolVersion| {
        let mut bytes = vec![0x82, 0x00, 0x00, 0x01];
        if version.is_v5() {
            bytes.push(0x00);
        }
        bytes.extend_from_slice(&[0x00, 0x01, b'a', options]);
        bytes[1] = (bytes.len() - 2) as u8;
        decode_all(&bytes, Some(version))
    };
    // [MQTT-3.8.3-5] reserved bits 6-7.
    assert!(matches!(
        with_options(0x40, V5),
        Err(DecodeError::Malformed(_))
    ));
    // Retain handling 3.
    assert!(matches!(
        with_options(0x30, V5),
        Err(DecodeError::Malformed(_))
    ));
    assert_eq!(with_options(0x03, V5), Err(DecodeError::InvalidQoS));
    assert_eq!(with_options(0x03, V3_1_1), Err(DecodeError::InvalidQoS));
    // [MQTT-3.8.3-4] 3.x upper six bits.
    for options in [0x04, 0x08, 0x10, 0x80] {
        assert!(matches!(
            with_options(options, V3_1_1),
            Err(DecodeError::Malformed(_))
        ));
    }
    assert!(with_options(0x2E, V5).is_ok());
    // Option byte missing after the filter.
    assert_malformed(&[0x82, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'], Some(V3_1_1));
}

#[test]
fn unsubscribe_without_filters_is_a_protocol_error() {
    // [MQTT-3.10.3-2]
    assert_rejected(
        &[0xA2, 0x02, 0x00, 0x01],
        Some(V3_1_1),
        DecodeError::Protocol("unsubscribe without topic filters"),
    );
    assert_rejected(
        &[0xA2, 0x03, 0x00, 0x01, 0x00],
        Some(V5),
        DecodeError::Protocol("unsubscribe without topic filters"),
    );
}

#[test]
fn suback_and_unsuback_codes_are_checked() {
    assert_rejected(
        &[0x90, 0x03, 0x00, 0x01, 0x83],
        Some(V3_1_1),
        DecodeError::InvalidReasonCode(0x83),
    );
    assert_rejected(
        &[0x90, 0x04, 0x00, 0x01, 0x00, 0x99],
        Some(V5),
        DecodeError::InvalidReasonCode(0x99),
    );
    for code in [
        0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
    ] {
        assert!(decode_all(&[0x90, 0x04, 0x00, 0x01, 0x00, code], Some(V5)).is_ok());
    }
    assert_rejected(
        &[0xB0, 0x04, 0x00, 0x01, 0x00, 0x10],
        Some(V5),
        DecodeError::InvalidReasonCode(0x10),
    );
    for code in [0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91] {
        assert!(decode_all(&[0xB0, 0x04, 0x00, 0x01, 0x00, code], Some(V5)).is_ok());
    }
    // 3.x UNSUBACK has no payload.
    assert_malformed(&[0xB0, 0x03, 0x00, 0x01, 0x00], Some(V3_1_1));
}

#[test]
fn connack_rules_are_enforced() {
    assert_rejected(
        &[0x20, 0x02, 0x00, 0x06],
        Some(V3_1_1),
        DecodeError::InvalidReasonCode(6),
    );
    // [MQTT-3.2.2-1] reserved acknowledge flags.
    assert_malformed(&[0x20, 0x02, 0x02, 0x00], Some(V3_1_1));
    assert_malformed(&[0x20, 0x03, 0x80, 0x00, 0x00], Some(V5));
    assert_rejected(
        &[0x20, 0x03, 0x00, 0x01, 0x00],
        Some(V5),
        DecodeError::InvalidReasonCode(0x01),
    );
    // MQTT 5.0 CONNACK always has a property block.
    assert_malformed(&[0x20, 0x02, 0x00, 0x00], Some(V5));
}

#[test]
fn disconnect_and_auth_rules_are_enforced() {
    assert_malformed(&[0xE0, 0x01, 0x00], Some(V3_1_1));
    assert_rejected(
        &[0xE0, 0x01, 0x01],
        Some(V5),
        DecodeError::InvalidReasonCode(0x01),
    );
    assert_rejected(
        &[0xF0, 0x00],
        Some(V3_1_1),
        DecodeError::InvalidPacketType(15),
    );
    assert_rejected(
        &[0xF0, 0x00],
        Some(V3_1),
        DecodeError::InvalidPacketType(15),
    );
    assert_rejected(
        &[0xF0, 0x02, 0x80, 0x00],
        Some(V5),
        DecodeError::InvalidReasonCode(0x80),
    );
    assert_eq!(
        decode_all(&[0xF0, 0x01, 0x19], Some(V5)).map(|packet| packet.packet_type()),
        Ok(crate::codec::PacketType::Auth)
    );
}

#[test]
fn error_reason_codes_are_total() {
    assert_eq!(
        DecodeError::PacketTooLarge { size: 1 }.reason_code(),
        ReasonCode::PacketTooLarge
    );
    assert_eq!(
        DecodeError::Malformed("x").reason_code(),
        ReasonCode::MalformedPacket
    );
    assert_eq!(
        DecodeError::Protocol("x").reason_code(),
        ReasonCode::ProtocolError
    );
}
