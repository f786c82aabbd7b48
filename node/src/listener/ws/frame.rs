//! RFC 6455 frames for MQTT over WebSocket, server side.
//!
//! MQTT treats the payloads of binary frames as one byte stream, so frame boundaries carry no
//! meaning: the decoder unmasks data payloads straight into the MQTT read buffer as they arrive
//! and never holds a whole data frame. Control frames (at most 125 bytes) are decoded whole.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const OPCODE_CONTINUATION: u8 = 0x0;
const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;
const OPCODE_PONG: u8 = 0xA;

/// Close status codes (RFC 6455 section 7.4.1).
pub(super) const CLOSE_NORMAL: u16 = 1000;
pub(super) const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub(super) const CLOSE_UNSUPPORTED_DATA: u16 = 1003;

/// A control frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Control {
    /// Answer with a pong carrying the same payload.
    Ping(Bytes),
    /// Ignored.
    Pong,
    /// The client closes, with a status code if it gave one.
    Close(Option<u16>),
}

/// Why the client's frames are refused; the connection is closed with [`FrameError::close_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum FrameError {
    /// [RFC 6455 5.1] a client frame must be masked.
    #[error("unmasked client frame")]
    Unmasked,
    /// No extension was negotiated, so the reserved bits must be zero.
    #[error("reserved bits set")]
    ReservedBits,
    /// [MQTT-6.0.0-1] MQTT travels in binary frames only.
    #[error("text frame")]
    TextFrame,
    /// An opcode RFC 6455 does not define.
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// Control frames carry at most 125 bytes and are never fragmented.
    #[error("invalid control frame")]
    InvalidControlFrame,
    /// A continuation frame without a message to continue, or a new message before the last
    /// one ended.
    #[error("invalid fragmentation")]
    InvalidFragmentation,
    /// A 64-bit payload length with its most significant bit set.
    #[error("invalid payload length")]
    InvalidLength,
}

impl FrameError {
    /// Returns the status code of the close frame that answers the error.
    pub(super) fn close_code(self) -> u16 {
        match self {
            FrameError::TextFrame => CLOSE_UNSUPPORTED_DATA,
            _ => CLOSE_PROTOCOL_ERROR,
        }
    }
}

/// A parsed frame header.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    payload_len: u64,
    header_len: usize,
}

/// Parses the header at the start of `input`; `Ok(None)` until it is complete.
fn parse_header(input: &[u8]) -> Result<Option<Header>, FrameError> {
    let [first, second, ..] = *input else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    if second & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let (payload_len, len_bytes) = match second & 0x7F {
        126 => {
            let Some(bytes) = input.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 2)
        }
        127 => {
            let Some(bytes) = input.get(2..10) else {
                return Ok(None);
            };
            let mut array = [0u8; 8];
            array.copy_from_slice(bytes);
            let length = u64::from_be_bytes(array);
            if length >> 63 != 0 {
                return Err(FrameError::InvalidLength);
            }
            (length, 8)
        }
        length => (u64::from(length), 0),
    };
    let mask_start = 2 + len_bytes;
    let Some(mask) = input.get(mask_start..mask_start + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin: first & 0x80 != 0,
        opcode: first & 0x0F,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        payload_len,
        header_len: mask_start + 4,
    }))
}

fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    for (idx, byte) in data.iter_mut().enumerate() {
        *byte ^= mask[(offset + idx) % 4];
    }
}

/// Where the decoder is in the frame stream.
enum State {
    /// At a frame boundary.
    Header,
    /// Inside the payload of a data frame.
    Data {
        remaining: u64,
        mask: [u8; 4],
        mask_offset: usize,
    },
}

/// Decodes client frames incrementally.
pub(super) struct FrameDecoder {
    state: State,
    /// A data message started with FIN clear and has not ended.
    in_message: bool,
}

impl FrameDecoder {
    pub(super) fn new() -> FrameDecoder {
        FrameDecoder {
            state: State::Header,
            in_message: false,
        }
    }

    /// True if [`FrameDecoder::decode`] would make progress on `input`.
    pub(super) fn can_progress(&self, input: &[u8]) -> bool {
        match self.state {
            State::Data { .. } => !input.is_empty(),
            State::Header => match parse_header(input) {
                Ok(Some(header)) if header.opcode & 0x8 != 0 => {
                    input.len() as u64 >= header.header_len as u64 + header.payload_len
                }
                Ok(Some(_)) | Err(_) => true,
                Ok(None) => false,
            },
        }
    }

    /// Decodes what `input` holds: data payloads are unmasked onto `out`; stops at the first
    /// control frame, which it returns (call again after handling it), or when `input` needs
    /// more bytes (`Ok(None)`).
    ///
    /// # Errors
    /// Returns the protocol violation; the connection must then close.
    pub(super) fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<Option<Control>, FrameError> {
        loop {
            match &mut self.state {
                State::Data {
                    remaining,
                    mask,
                    mask_offset,
                } => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let num_bytes = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    let start = out.len();
                    out.extend_from_slice(&input[..num_bytes]);
                    unmask(&mut out[start..], *mask, *mask_offset);
                    input.advance(num_bytes);
                    *remaining -= num_bytes as u64;
                    *mask_offset = (*mask_offset + num_bytes) % 4;
                    if *remaining == 0 {
                        self.state = State::Header;
                    }
                }
                State::Header => {
                    let Some(header) = parse_header(input)? else {
                        return Ok(None);
                    };
                    if header.opcode & 0x8 != 0 {
                        return self.decode_control(&header, input);
                    }
                    match header.opcode {
                        OPCODE_BINARY if !self.in_message => {}
                        OPCODE_CONTINUATION if self.in_message => {}
                        OPCODE_BINARY | OPCODE_CONTINUATION => {
                            return Err(FrameError::InvalidFragmentation)
                        }
                        OPCODE_TEXT => return Err(FrameError::TextFrame),
                        opcode => return Err(FrameError::UnknownOpcode(opcode)),
                    }
                    self.in_message = !header.fin;
                    input.advance(header.header_len);
                    if header.payload_len > 0 {
                        self.state = State::Data {
                            remaining: header.payload_len,
                            mask: header.mask,
                            mask_offset: 0,
                        };
                    }
                }
            }
        }
    }

    fn decode_control(
        &mut self,
        header: &Header,
        input: &mut BytesMut,
    ) -> Result<Option<Control>, FrameError> {
        if !header.fin || header.payload_len > 125 {
            return Err(FrameError::InvalidControlFrame);
        }
        let payload_len = header.payload_len as usize;
        if input.len() < header.header_len + payload_len {
            return Ok(None);
        }
        input.advance(header.header_len);
        let mut payload = input.split_to(payload_len);
        unmask(&mut payload, header.mask, 0);
        match header.opcode {
            OPCODE_PING => Ok(Some(Control::Ping(payload.freeze()))),
            OPCODE_PONG => Ok(Some(Control::Pong)),
            OPCODE_CLOSE => match payload.len() {
                0 => Ok(Some(Control::Close(None))),
                1 => Err(FrameError::InvalidControlFrame),
                _ => Ok(Some(Control::Close(Some(u16::from_be_bytes([
                    payload[0], payload[1],
                ]))))),
            },
            opcode => Err(FrameError::UnknownOpcode(opcode)),
        }
    }
}

fn encode_header(opcode: u8, payload_len: usize, out: &mut BytesMut) {
    out.put_u8(0x80 | opcode);
    if payload_len < 126 {
        out.put_u8(payload_len as u8);
    } else if let Ok(length) = u16::try_from(payload_len) {
        out.put_u8(126);
        out.put_u16(length);
    } else {
        out.put_u8(127);
        out.put_u64(payload_len as u64);
    }
}

/// Appends a binary frame (server frames are not masked).
pub(super) fn encode_binary(payload: &[u8], out: &mut BytesMut) {
    out.reserve(payload.len() + 10);
    encode_header(OPCODE_BINARY, payload.len(), out);
    out.extend_from_slice(payload);
}

/// Appends a pong answering a ping's payload.
pub(super) fn encode_pong(payload: &[u8], out: &mut BytesMut) {
    encode_header(OPCODE_PONG, payload.len(), out);
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code`.
pub(super) fn encode_close(code: u16, out: &mut BytesMut) {
    encode_header(OPCODE_CLOSE, 2, out);
    out.put_u16(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_header(opcode, payload.len(), &mut out);
        if !fin {
            out[0] &= 0x7F;
        }
        out[1] |= 0x80;
        out.extend_from_slice(&mask);
        let start = out.len();
        out.extend_from_slice(payload);
        unmask(&mut out[start..], mask, 0);
        out.to_vec()
    }

    #[test]
    fn data_is_unmasked_across_fragments_and_arbitrary_splits() {
        let mut wire = Vec::new();
        wire.extend(client_frame(false, OPCODE_BINARY, b"hello ", [1, 2, 3, 4]));
        wire.extend(client_frame(
            false,
            OPCODE_CONTINUATION,
            b"mqtt",
            [9, 8, 7, 6],
        ));
        wire.extend(client_frame(true, OPCODE_PING, b"p", [5, 5, 5, 5]));
        wire.extend(client_frame(
            true,
            OPCODE_CONTINUATION,
            b" world",
            [0xAA, 0, 0xFF, 3],
        ));
        let long = vec![0x5Au8; 70_000];
        wire.extend(client_frame(true, OPCODE_BINARY, &long, [3, 1, 4, 1]));
        for chunk_size in [1, 3, 7, 1000, wire.len()] {
            let mut decoder = FrameDecoder::new();
            let mut input = BytesMut::new();
            let mut out = BytesMut::new();
            let mut controls = Vec::new();
            for chunk in wire.chunks(chunk_size) {
                input.extend_from_slice(chunk);
                while let Some(control) = decoder.decode(&mut input, &mut out).unwrap() {
                    controls.push(control);
                }
                assert!(!decoder.can_progress(&input), "chunk size {chunk_size}");
            }
            assert_eq!(&out[..16], b"hello mqtt world");
            assert_eq!(out.len(), 16 + long.len(), "chunk size {chunk_size}");
            assert!(out[16..].iter().all(|byte| *byte == 0x5A));
            assert_eq!(controls, vec![Control::Ping(Bytes::from_static(b"p"))]);
            assert!(input.is_empty());
        }
    }

    #[test]
    fn protocol_violations_are_refused() {
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (
                {
                    let mut frame = client_frame(true, OPCODE_BINARY, b"x", [1, 1, 1, 1]);
                    frame[1] &= 0x7F;
                    frame.truncate(2);
                    frame.push(b'x');
                    frame
                },
                FrameError::Unmasked,
            ),
            (
                client_frame(true, OPCODE_TEXT, b"x", [1, 2, 3, 4]),
                FrameError::TextFrame,
            ),
            (
                client_frame(true, OPCODE_CONTINUATION, b"x", [1, 2, 3, 4]),
                FrameError::InvalidFragmentation,
            ),
            (
                client_frame(false, OPCODE_PING, b"x", [1, 2, 3, 4]),
                FrameError::InvalidControlFrame,
            ),
            (
                client_frame(true, 0x3, b"x", [1, 2, 3, 4]),
                FrameError::UnknownOpcode(0x3),
            ),
            (
                {
                    let mut frame = client_frame(true, OPCODE_BINARY, b"x", [1, 2, 3, 4]);
                    frame[0] |= 0x40;
                    frame
                },
                FrameError::ReservedBits,
            ),
        ];
        for (wire, expected) in cases {
            let mut decoder = FrameDecoder::new();
            let mut input = BytesMut::from(&wire[..]);
            let mut out = BytesMut::new();
            assert_eq!(decoder.decode(&mut input, &mut out), Err(expected));
        }
        // A new binary message while a fragmented one is open.
        let mut wire = client_frame(false, OPCODE_BINARY, b"a", [1, 2, 3, 4]);
        wire.extend(client_frame(true, OPCODE_BINARY, b"b", [1, 2, 3, 4]));
        let mut input = BytesMut::from(&wire[..]);
        let mut out = BytesMut::new();
        assert_eq!(
            FrameDecoder::new().decode(&mut input, &mut out),
            Err(FrameError::InvalidFragmentation)
        );
    }

    #[test]
    fn close_frames_carry_their_code() {
        let mut input = BytesMut::from(
            &client_frame(true, OPCODE_CLOSE, &1001u16.to_be_bytes(), [7, 7, 7, 7])[..],
        );
        let mut out = BytesMut::new();
        assert_eq!(
            FrameDecoder::new().decode(&mut input, &mut out),
            Ok(Some(Control::Close(Some(1001))))
        );
        let mut encoded = BytesMut::new();
        encode_close(CLOSE_NORMAL, &mut encoded);
        assert_eq!(&encoded[..], &[0x88, 0x02, 0x03, 0xE8]);
        encoded.clear();
        encode_binary(&[0u8; 300], &mut encoded);
        assert_eq!(&encoded[..4], &[0x82, 126, 0x01, 0x2C]);
        assert_eq!(encoded.len(), 304);
    }
}
