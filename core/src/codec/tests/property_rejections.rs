//! Property decoding rules: allowed sets per packet, duplicates, value ranges and lengths.

use super::{decode_all, string};
use crate::codec::ProtocolVersion::V5;
use crate::codec::{DecodeError, Packet};

/// Builds a packet from its first byte and a body shorter than 128 bytes.
fn frame(first_byte: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    let mut bytes = vec![first_byte, body.len() as u8];
    bytes.extend_from_slice(body);
    bytes
}

/// Concatenates `before`, a Property Length of `props.len()`, `props` and `after`.
fn with_props(before: &[u8], props: &[u8], after: &[u8]) -> Vec<u8> {
    assert!(props.len() < 128);
    let mut body = before.to_vec();
    body.push(props.len() as u8);
    body.extend_from_slice(props);
    body.extend_from_slice(after);
    body
}

fn publish(props: &[u8]) -> Result<Packet, DecodeError> {
    let body = with_props(&[0x00, 0x01, b't'], props, b"payload");
    decode_all(&frame(0x30, &body), Some(V5))
}

fn connect(props: &[u8]) -> Result<Packet, DecodeError> {
    let before = [0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00];
    let body = with_props(&before, props, &[0x00, 0x00]);
    decode_all(&frame(0x10, &body), None)
}

fn connect_with_will(will_props: &[u8]) -> Result<Packet, DecodeError> {
    let before = [
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    let body = with_props(&before, will_props, &[0x00, 0x01, b'w', 0x00, 0x00]);
    decode_all(&frame(0x10, &body), None)
}

fn connack(props: &[u8]) -> Result<Packet, DecodeError> {
    decode_all(
        &frame(0x20, &with_props(&[0x00, 0x00], props, &[])),
        Some(V5),
    )
}

fn subscribe(props: &[u8]) -> Result<Packet, DecodeError> {
    let body = with_props(&[0x00, 0x01], props, &[0x00, 0x01, b'a', 0x00]);
    decode_all(&frame(0x82, &body), Some(V5))
}

#[test]
fn unknown_or_misplaced_properties_are_rejected() {
    assert_eq!(
        publish(&[0x7F, 0x00]),
        Err(DecodeError::InvalidProperty(0x7F))
    );
    assert_eq!(
        publish(&[0x80, 0x01]),
        Err(DecodeError::InvalidProperty(0x80))
    );
    // Session Expiry Interval belongs to CONNECT, CONNACK and DISCONNECT.
    assert_eq!(
        publish(&[0x11, 0x00, 0x00, 0x00, 0x01]),
        Err(DecodeError::InvalidProperty(0x11))
    );
    assert_eq!(
        connect(&[0x24, 0x01]),
        Err(DecodeError::InvalidProperty(0x24))
    );
    assert_eq!(
        connect_with_will(&[0x11, 0x00, 0x00, 0x00, 0x01]),
        Err(DecodeError::InvalidProperty(0x11))
    );
    let unsubscribe = with_props(&[0x00, 0x01], &[0x1F, 0x00, 0x00], &[0x00, 0x01, b'a']);
    assert_eq!(
        decode_all(&frame(0xA2, &unsubscribe), Some(V5)),
        Err(DecodeError::InvalidProperty(0x1F))
    );
    let puback = with_props(&[0x00, 0x01, 0x00], &[0x11, 0x00, 0x00, 0x00, 0x01], &[]);
    assert_eq!(
        decode_all(&frame(0x40, &puback), Some(V5)),
        Err(DecodeError::InvalidProperty(0x11))
    );
}

#[test]
fn non_repeatable_properties_are_rejected_twice() {
    assert_eq!(
        publish(&[0x23, 0x00, 0x01, 0x23, 0x00, 0x02]),
        Err(DecodeError::DuplicateProperty(0x23))
    );
    assert_eq!(
        subscribe(&[0x0B, 0x01, 0x0B, 0x02]),
        Err(DecodeError::DuplicateProperty(0x0B))
    );
    assert_eq!(
        connect(&[0x21, 0x00, 0x01, 0x21, 0x00, 0x01]),
        Err(DecodeError::DuplicateProperty(0x21))
    );
    assert_eq!(
        connack(&[0x1F, 0x00, 0x00, 0x1F, 0x00, 0x00]),
        Err(DecodeError::DuplicateProperty(0x1F))
    );
}

#[test]
fn repeatable_properties_keep_their_order() {
    #[rustfmt::skip]
    let props = [
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'2',
        0x0B, 0x05,
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'1',
        0x0B, 0x03,
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'0',
    ];
    let Ok(Packet::Publish(publish)) = publish(&props) else {
        panic!("publish with repeated properties must decode");
    };
    assert_eq!(
        publish.properties.user_properties,
        vec![
            (string("k"), string("2")),
            (string("a"), string("1")),
            (string("k"), string("0")),
        ]
    );
    assert_eq!(publish.properties.subscription_identifiers, vec![5, 3]);
    assert_eq!(&publish.payload[..], b"payload");
}

#[test]
fn out_of_range_property_values_are_rejected() {
    let cases = [
        (publish(&[0x23, 0x00, 0x00]), 0x23),
        (publish(&[0x01, 0x02]), 0x01),
        (publish(&[0x0B, 0x00]), 0x0B),
        (subscribe(&[0x0B, 0x00]), 0x0B),
        (connect(&[0x21, 0x00, 0x00]), 0x21),
        (connect(&[0x27, 0x00, 0x00, 0x00, 0x00]), 0x27),
        (connect(&[0x17, 0x02]), 0x17),
        (connect(&[0x19, 0x02]), 0x19),
        (connect_with_will(&[0x01, 0x02]), 0x01),
        (connack(&[0x21, 0x00, 0x00]), 0x21),
        (connack(&[0x27, 0x00, 0x00, 0x00, 0x00]), 0x27),
        (connack(&[0x24, 0x02]), 0x24),
        (connack(&[0x25, 0x02]), 0x25),
        (connack(&[0x28, 0x02]), 0x28),
        (connack(&[0x29, 0x02]), 0x29),
        (connack(&[0x2A, 0x02]), 0x2A),
    ];
    for (result, id) in cases {
        assert_eq!(
            result,
            Err(DecodeError::InvalidPropertyValue(id)),
            "{id:#04x}"
        );
    }
}

#[test]
fn property_lengths_must_fit() {
    // Property Length 5 but only 2 bytes follow in the whole packet.
    let overrun = [0x30, 0x06, 0x00, 0x01, b't', 0x05, 0x01, 0x01];
    assert!(matches!(
        decode_all(&overrun, Some(V5)),
        Err(DecodeError::Malformed(_))
    ));
    // Message Expiry Interval needs four bytes, the block has two.
    assert!(matches!(
        publish(&[0x02, 0x00]),
        Err(DecodeError::Malformed(_))
    ));
    // A string property running past its block.
    assert!(matches!(
        connack(&[0x1F, 0x00, 0x05, b'a']),
        Err(DecodeError::Malformed(_))
    ));
    // Property Length itself must be a valid variable byte integer.
    let bad_length = [0x30, 0x08, 0x00, 0x01, b't', 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
    assert!(matches!(
        decode_all(&bad_length, Some(V5)),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn invalid_utf8_in_string_properties_is_rejected() {
    assert_eq!(
        publish(&[0x03, 0x00, 0x01, 0x00]),
        Err(DecodeError::InvalidUtf8)
    );
    assert_eq!(
        publish(&[0x26, 0x00, 0x01, b'k', 0x00, 0x01, 0xFF]),
        Err(DecodeError::InvalidUtf8)
    );
}
