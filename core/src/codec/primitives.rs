//! MQTT data representations (section 1.5): integers, variable byte integers, UTF-8 strings and
//! binary data, read zero-copy from a frame's [`Bytes`] and written to a [`BytesMut`].

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::codec::{DecodeError, PacketId};

/// Largest value of a variable byte integer (four bytes of seven bits).
pub(crate) const MAX_VARIABLE_INT: usize = 268_435_455;

/// Reads a one-byte integer.
pub(crate) fn read_u8(src: &mut Bytes) -> Result<u8, DecodeError> {
    if src.is_empty() {
        return Err(DecodeError::Malformed("packet ends inside a byte field"));
    }
    Ok(src.get_u8())
}

/// Reads a big-endian two-byte integer.
pub(crate) fn read_u16(src: &mut Bytes) -> Result<u16, DecodeError> {
    if src.len() < 2 {
        return Err(DecodeError::Malformed(
            "packet ends inside a two-byte integer",
        ));
    }
    Ok(src.get_u16())
}

/// Reads a big-endian four-byte integer.
pub(crate) fn read_u32(src: &mut Bytes) -> Result<u32, DecodeError> {
    if src.len() < 4 {
        return Err(DecodeError::Malformed(
            "packet ends inside a four-byte integer",
        ));
    }
    Ok(src.get_u32())
}

/// Reads a packet identifier, which must not be zero [MQTT-2.2.1-3].
pub(crate) fn read_packet_id(src: &mut Bytes) -> Result<PacketId, DecodeError> {
    let value = read_u16(src)?;
    PacketId::new(value).ok_or(DecodeError::ZeroPacketId)
}

/// Reads a variable byte integer of at most four bytes [MQTT-1.5.5-1].
pub(crate) fn read_variable_int(src: &mut Bytes) -> Result<u32, DecodeError> {
    let mut value = 0u32;
    for byte_idx in 0..4 {
        let byte = read_u8(src)?;
        value |= u32::from(byte & 0x7F) << (7 * byte_idx);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::Malformed(
        "variable byte integer longer than four bytes",
    ))
}

/// Splits the next `len` bytes off `src` without copying.
pub(crate) fn read_exact(src: &mut Bytes, len: usize) -> Result<Bytes, DecodeError> {
    if src.len() < len {
        return Err(DecodeError::Malformed("length field exceeds the packet"));
    }
    Ok(src.split_to(len))
}

/// Reads Binary Data: a two-byte length and that many bytes, sliced from the frame.
pub(crate) fn read_binary(src: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = read_u16(src)?;
    read_exact(src, usize::from(len))
}

/// Reads a UTF-8 Encoded String, sliced from the frame.
///
/// Rejects ill-formed UTF-8, which includes the surrogates U+D800..U+DFFF [MQTT-1.5.4-1], and
/// the null character U+0000 [MQTT-1.5.4-2].
pub(crate) fn read_string(src: &mut Bytes) -> Result<ByteString, DecodeError> {
    let bytes = read_binary(src)?;
    // [MQTT-1.5.4-2] U+0000 is a single zero byte in UTF-8 and never part of another sequence.
    if bytes.contains(&0) {
        return Err(DecodeError::InvalidUtf8);
    }
    // [MQTT-1.5.4-1] validated once here; the string then shares the frame's buffer.
    ByteString::try_from(bytes).map_err(|_| DecodeError::InvalidUtf8)
}

/// Reads a UTF-8 String Pair (a User Property).
pub(crate) fn read_string_pair(src: &mut Bytes) -> Result<(ByteString, ByteString), DecodeError> {
    let name = read_string(src)?;
    let value = read_string(src)?;
    Ok((name, value))
}

/// Returns the number of bytes `value` takes as a variable byte integer.
pub(crate) fn variable_int_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a variable byte integer with the minimum number of bytes [MQTT-1.5.5-1].
pub(crate) fn write_variable_int(dst: &mut BytesMut, value: usize) {
    debug_assert!(
        value <= MAX_VARIABLE_INT,
        "variable byte integer {value} too large"
    );
    let mut value = value;
    loop {
        // Truncation is intended: the low seven bits go into this byte.
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        dst.put_u8(byte);
        if value == 0 {
            return;
        }
    }
}

/// Returns the encoded size of Binary Data or a UTF-8 string of `len` bytes.
pub(crate) fn binary_len(len: usize) -> usize {
    2 + len
}

/// Writes Binary Data (or the bytes of a UTF-8 string) with its two-byte length.
///
/// Callers guarantee `bytes` is at most 65,535 bytes long; values decoded from the wire always
/// are, and the broker bounds what it builds.
pub(crate) fn write_binary(dst: &mut BytesMut, bytes: &[u8]) {
    debug_assert!(
        bytes.len() <= usize::from(u16::MAX),
        "field longer than 65,535 bytes"
    );
    // Truncation cannot happen for the field lengths guaranteed above.
    dst.put_u16(bytes.len() as u16);
    dst.put_slice(bytes);
}

/// Writes a UTF-8 Encoded String with its two-byte length.
pub(crate) fn write_string(dst: &mut BytesMut, string: &str) {
    write_binary(dst, string.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_int_round_trips_at_every_length_boundary() {
        for value in [
            0,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            MAX_VARIABLE_INT,
        ] {
            let mut dst = BytesMut::new();
            write_variable_int(&mut dst, value);
            assert_eq!(dst.len(), variable_int_len(value), "{value}");
            let mut src = dst.freeze();
            assert_eq!(read_variable_int(&mut src).unwrap() as usize, value);
            assert!(src.is_empty());
        }
    }

    #[test]
    fn variable_int_of_five_bytes_is_malformed() {
        let mut src = Bytes::from_static(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]);
        assert!(matches!(
            read_variable_int(&mut src),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn truncated_fields_are_malformed() {
        assert!(matches!(
            read_u16(&mut Bytes::from_static(&[1])),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            read_u32(&mut Bytes::from_static(&[1, 2, 3])),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            read_string(&mut Bytes::from_static(&[0, 3, b'a'])),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            read_variable_int(&mut Bytes::from_static(&[0x80])),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn string_is_a_slice_of_the_frame() {
        let frame = Bytes::from_static(&[0, 3, b'a', b'/', b'b', 9]);
        let mut src = frame.clone();
        let string = read_string(&mut src).unwrap();
        assert_eq!(&*string, "a/b");
        assert_eq!(string.as_bytes().as_ptr(), frame[2..].as_ptr());
        assert_eq!(&src[..], &[9]);
    }

    #[test]
    fn string_rejects_nul_and_ill_formed_utf8() {
        let mut with_nul = Bytes::from_static(&[0, 3, b'a', 0, b'b']);
        assert_eq!(read_string(&mut with_nul), Err(DecodeError::InvalidUtf8));
        // 0xED 0xA0 0x80 would be the surrogate U+D800 [MQTT-1.5.4-1].
        let mut surrogate = Bytes::from_static(&[0, 3, 0xED, 0xA0, 0x80]);
        assert_eq!(read_string(&mut surrogate), Err(DecodeError::InvalidUtf8));
        let mut truncated_sequence = Bytes::from_static(&[0, 1, 0xC3]);
        assert_eq!(
            read_string(&mut truncated_sequence),
            Err(DecodeError::InvalidUtf8)
        );
    }
}
