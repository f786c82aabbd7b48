//! Fuzz target: decoding arbitrary bytes never panics, before CONNECT and in every version.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use starling_core::codec::{decode_packet, ProtocolVersion};

/// Small enough that oversized frames are exercised, large enough for any fuzz input.
const MAX_PACKET_SIZE: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let versions = [
        None,
        Some(ProtocolVersion::V3_1),
        Some(ProtocolVersion::V3_1_1),
        Some(ProtocolVersion::V5),
    ];
    for version in versions {
        let mut src = BytesMut::from(data);
        // Decodes packet after packet until the input is exhausted or rejected.
        while let Ok(Some(_packet)) = decode_packet(&mut src, MAX_PACKET_SIZE, version) {}
    }
});
