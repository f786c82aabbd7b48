//! Fuzz target: every packet that decodes re-encodes to bytes that decode to the same packet.
//!
//! Packets are compared, not bytes: remaining lengths and property blocks have several valid
//! encodings, and the encoder picks the short forms.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use starling_core::codec::{decode_packet, Packet, ProtocolVersion};

const MAX_PACKET_SIZE: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let versions = [
        None,
        Some(ProtocolVersion::V3_1),
        Some(ProtocolVersion::V3_1_1),
        Some(ProtocolVersion::V5),
    ];
    for start_version in versions {
        let mut src = BytesMut::from(data);
        let mut version = start_version;
        while let Ok(Some(packet)) = decode_packet(&mut src, MAX_PACKET_SIZE, version) {
            // Only CONNECT decodes without a version, and it carries its own.
            let (encode_version, decode_version) = match &packet {
                Packet::Connect(connect) => (connect.protocol, None),
                _ => (
                    version.expect("only CONNECT decodes before CONNECT"),
                    version,
                ),
            };
            let mut encoded = BytesMut::new();
            packet.encode(encode_version, &mut encoded);
            assert_eq!(encoded.len(), packet.encoded_len(encode_version));
            let decoded = decode_packet(&mut encoded, usize::MAX, decode_version)
                .expect("a re-encoded packet decodes")
                .expect("a re-encoded packet is complete");
            assert_eq!(decoded, packet);
            assert!(encoded.is_empty(), "re-encoded packet has trailing bytes");
            // After CONNECT the connection continues in the negotiated version.
            if let Packet::Connect(connect) = &packet {
                version = Some(connect.protocol);
            }
        }
    }
});
