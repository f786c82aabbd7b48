//! Property-based round trips: decode(encode(p)) == p for arbitrary valid packets of every
//! kind in every protocol version, and every split of an encoding is an incomplete frame.

use bytes::BytesMut;
use proptest::prelude::*;

use super::strategies::packet;
use super::{decode_all, decode_version, encode, MAX_PACKET_SIZE};
use crate::codec::ProtocolVersion::{V3_1, V3_1_1, V5};
use crate::codec::{decode_packet, Packet, ProtocolVersion};

fn assert_round_trip(packet: &Packet, version: ProtocolVersion) -> Result<(), TestCaseError> {
    let bytes = encode(packet, version);
    let decoded = decode_all(&bytes, decode_version(packet, version));
    prop_assert_eq!(decoded, Ok(packet.clone()));
    Ok(())
}

fn assert_split_is_incomplete(
    packet: &Packet,
    version: ProtocolVersion,
    split_idx: prop::sample::Index,
) -> Result<(), TestCaseError> {
    let bytes = encode(packet, version);
    let split_idx = split_idx.index(bytes.len());
    let mut src = BytesMut::from(&bytes[..split_idx]);
    let version = decode_version(packet, version);
    prop_assert_eq!(decode_packet(&mut src, MAX_PACKET_SIZE, version), Ok(None));
    src.extend_from_slice(&bytes[split_idx..]);
    prop_assert_eq!(
        decode_packet(&mut src, MAX_PACKET_SIZE, version),
        Ok(Some(packet.clone()))
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip_v3_1(packet in packet(V3_1)) {
        assert_round_trip(&packet, V3_1)?;
    }

    #[test]
    fn round_trip_v3_1_1(packet in packet(V3_1_1)) {
        assert_round_trip(&packet, V3_1_1)?;
    }

    #[test]
    fn round_trip_v5(packet in packet(V5)) {
        assert_round_trip(&packet, V5)?;
    }

    #[test]
    fn every_prefix_is_incomplete(
        (version, packet) in prop_oneof![Just(V3_1), Just(V3_1_1), Just(V5)]
            .prop_flat_map(|version| (Just(version), packet(version))),
        split_idx in any::<prop::sample::Index>(),
    ) {
        assert_split_is_incomplete(&packet, version, split_idx)?;
    }

    #[test]
    fn consecutive_packets_decode_in_order(packets in prop::collection::vec(packet(V5), 1..6)) {
        let mut src = BytesMut::new();
        for packet in &packets {
            packet.encode(V5, &mut src);
        }
        for packet in &packets {
            let version = decode_version(packet, V5);
            prop_assert_eq!(
                decode_packet(&mut src, MAX_PACKET_SIZE, version),
                Ok(Some(packet.clone()))
            );
        }
        prop_assert!(src.is_empty());
    }
}

#[test]
fn publish_payload_and_topic_share_the_read_buffer() {
    let bytes = [0x30, 0x08, 0x00, 0x01, b't', 0x00, b'a', b'b', b'c', b'd'];
    let mut src = BytesMut::from(&bytes[..]);
    let buffer_start = src.as_ptr() as usize;
    let buffer_end = buffer_start + src.len();
    let Ok(Some(Packet::Publish(publish))) = decode_packet(&mut src, MAX_PACKET_SIZE, Some(V5))
    else {
        panic!("a publish");
    };
    let payload_start = publish.payload.as_ptr() as usize;
    assert!((buffer_start..buffer_end).contains(&payload_start));
    assert_eq!(&publish.payload[..], b"abcd");
    let topic_start = publish.topic.as_bytes().as_ptr() as usize;
    assert!((buffer_start..buffer_end).contains(&topic_start));
}

#[test]
fn publish_frame_len_is_the_whole_packet() {
    let Ok(Packet::Publish(publish)) = decode_all(
        &[0x30, 0x08, 0x00, 0x01, b't', 0x00, b'a', b'b', b'c', b'd'],
        Some(V5),
    ) else {
        panic!("a publish");
    };
    assert_eq!(publish.encoded_len(V5), 8);
    assert_eq!(publish.frame_len(V5), 10);
    assert_eq!(publish.frame_len(V3_1_1), 9);
    assert_eq!(Packet::Publish(publish).encoded_len(V5), 10);
}
