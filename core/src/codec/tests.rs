//! Codec tests: golden byte vectors, rejection of every rule the decoder enforces, and
//! property-based round trips over arbitrary valid packets.

mod golden;
mod golden_acks;
mod property_rejections;
mod rejections;
mod roundtrip;
mod strategies;

use bytes::BytesMut;
use bytestring::ByteString;

use crate::codec::{decode_packet, DecodeError, Packet, PacketId, ProtocolVersion};

/// Maximum packet size used where a test does not exercise the limit.
const MAX_PACKET_SIZE: usize = 1 << 20;

fn packet_id(value: u16) -> PacketId {
    PacketId::new(value).unwrap()
}

fn string(text: &'static str) -> ByteString {
    ByteString::from_static(text)
}

/// Returns the version to decode `packet` with: CONNECT is decoded before any version is known.
fn decode_version(packet: &Packet, version: ProtocolVersion) -> Option<ProtocolVersion> {
    match packet {
        Packet::Connect(_) => None,
        _ => Some(version),
    }
}

/// Decodes exactly one whole packet from `bytes` and checks that nothing is left over.
fn decode_all(bytes: &[u8], version: Option<ProtocolVersion>) -> Result<Packet, DecodeError> {
    let mut src = BytesMut::from(bytes);
    let packet = decode_packet(&mut src, MAX_PACKET_SIZE, version)?.expect("a whole packet");
    assert!(src.is_empty(), "{} bytes left after {packet:?}", src.len());
    Ok(packet)
}

/// Encodes `packet` and checks that `encoded_len` predicted the size.
fn encode(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut dst = BytesMut::new();
    packet.encode(version, &mut dst);
    assert_eq!(
        dst.len(),
        packet.encoded_len(version),
        "encoded_len of {packet:?}"
    );
    dst.to_vec()
}

/// Checks that every strict prefix of `bytes` decodes to `Ok(None)` without consuming anything,
/// and that appending the rest then yields the packet.
fn assert_every_split_is_incomplete(bytes: &[u8], version: Option<ProtocolVersion>) {
    for split_idx in 0..bytes.len() {
        let mut src = BytesMut::from(&bytes[..split_idx]);
        assert_eq!(
            decode_packet(&mut src, MAX_PACKET_SIZE, version),
            Ok(None),
            "split at {split_idx} of {bytes:02x?}"
        );
        assert_eq!(src.len(), split_idx, "a partial frame must not be consumed");
        src.extend_from_slice(&bytes[split_idx..]);
        assert!(
            matches!(
                decode_packet(&mut src, MAX_PACKET_SIZE, version),
                Ok(Some(_))
            ),
            "split at {split_idx} of {bytes:02x?}"
        );
    }
}

/// Checks that `packet` encodes to exactly `bytes` in `version`, that `bytes` decodes back to
/// `packet`, and that every partial frame of `bytes` is incomplete.
fn assert_golden(packet: Packet, version: ProtocolVersion, bytes: &[u8]) {
    assert_eq!(encode(&packet, version), bytes, "encoding {packet:?}");
    let version_for_decode = decode_version(&packet, version);
    assert_eq!(decode_all(bytes, version_for_decode), Ok(packet));
    assert_every_split_is_incomplete(bytes, version_for_decode);
}
