//! The swarm header every payload carries (run, publisher, sequence number, send time) and the
//! payload shapes: fixed-size binary or a text template such as a JSON telemetry record.
//!
//! Binary payloads start with the 24-byte header and are padded with zeros to the configured
//! size. Template payloads carry the header as a 48-character hex token in a `"swarm":"..."`
//! field, so a JSON template stays valid JSON.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::bail;
use bytes::{BufMut, BytesMut};

/// Size of the binary header.
pub(crate) const HEADER_LEN: usize = 24;
/// First bytes of a binary header.
const MAGIC: [u8; 2] = *b"SW";
/// Marker that precedes the hex header in a template payload.
const HEX_MARKER: &[u8] = b"\"swarm\":\"";
/// Length of the hex form of the header.
const HEX_LEN: usize = HEADER_LEN * 2;

/// What every swarm message carries, used for loss, duplicate and latency accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PayloadHeader {
    /// Random id of the run, so messages left over from an earlier run are recognised.
    pub(crate) run_id: u16,
    /// Global index of the publishing client.
    pub(crate) publisher_id: u32,
    /// Sequence number of the message within its publisher, from 0.
    pub(crate) seq: u64,
    /// Send time, nanoseconds since the Unix epoch (wall clock, shared by worker processes).
    pub(crate) sent_at_ns: u64,
}

impl PayloadHeader {
    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0..2].copy_from_slice(&MAGIC);
        bytes[2..4].copy_from_slice(&self.run_id.to_be_bytes());
        bytes[4..8].copy_from_slice(&self.publisher_id.to_be_bytes());
        bytes[8..16].copy_from_slice(&self.seq.to_be_bytes());
        bytes[16..24].copy_from_slice(&self.sent_at_ns.to_be_bytes());
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Option<PayloadHeader> {
        if bytes.len() < HEADER_LEN || bytes[0..2] != MAGIC {
            return None;
        }
        let u64_at = |idx: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[idx..idx + 8]);
            u64::from_be_bytes(word)
        };
        Some(PayloadHeader {
            run_id: u16::from_be_bytes([bytes[2], bytes[3]]),
            publisher_id: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            seq: u64_at(8),
            sent_at_ns: u64_at(16),
        })
    }

    /// Writes the 24-byte binary form.
    pub(crate) fn write_binary(self, dst: &mut BytesMut) {
        dst.put_slice(&self.to_bytes());
    }

    /// Writes the 48-character lowercase hex form.
    pub(crate) fn write_hex(self, dst: &mut BytesMut) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for byte in self.to_bytes() {
            dst.put_u8(DIGITS[usize::from(byte >> 4)]);
            dst.put_u8(DIGITS[usize::from(byte & 0x0f)]);
        }
    }

    /// Finds the header in a payload: binary at the start, or the hex token of a template.
    pub(crate) fn decode(payload: &[u8]) -> Option<PayloadHeader> {
        if payload.starts_with(&MAGIC) {
            return PayloadHeader::from_bytes(payload);
        }
        let start = payload
            .windows(HEX_MARKER.len())
            .position(|window| window == HEX_MARKER)?
            + HEX_MARKER.len();
        let hex = payload.get(start..start + HEX_LEN)?;
        let mut bytes = [0u8; HEADER_LEN];
        for (idx, pair) in hex.chunks_exact(2).enumerate() {
            bytes[idx] = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        PayloadHeader::from_bytes(&bytes)
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Returns the wall-clock time in nanoseconds since the Unix epoch.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(Vec<u8>),
    /// `{id}`: the client's index within its group.
    Id,
    /// `{seq}`: the message sequence number.
    Seq,
    /// `{ts_ms}`: the send time in milliseconds since the Unix epoch.
    TimestampMs,
    /// `{swarm}`: the hex header.
    Swarm,
    /// `{rand:LO-HI}`: a uniformly random integer.
    RandInt {
        low: i64,
        high: i64,
    },
    /// `{randf:LO-HI}`: a uniformly random number with two decimals.
    RandFloat {
        low: f64,
        high: f64,
    },
}

/// A payload template with `{id}`, `{seq}`, `{ts_ms}`, `{swarm}`, `{rand:LO-HI}` and
/// `{randf:LO-HI}` placeholders; any other brace is literal text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template {
    segments: Vec<Segment>,
    /// True when the header goes in front as binary because the template has no `{swarm}`
    /// and is not a JSON object.
    binary_prefix: bool,
}

impl Template {
    /// Parses a template.
    ///
    /// # Errors
    /// Returns an error naming an unknown placeholder such as `{speeed}` or a bad range.
    pub(crate) fn parse(text: &str) -> anyhow::Result<Template> {
        let mut segments = Vec::new();
        let mut literal = Vec::new();
        let mut rest = text;
        while let Some(open_idx) = rest.find('{') {
            literal.extend_from_slice(&rest.as_bytes()[..open_idx]);
            let after = &rest[open_idx + 1..];
            let placeholder = after.find('}').map(|close_idx| &after[..close_idx]);
            let segment = match placeholder {
                Some(name) if is_placeholder_like(name) => Some(parse_placeholder(name)?),
                _ => None,
            };
            match (segment, placeholder) {
                (Some(segment), Some(name)) => {
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(segment);
                    rest = &after[name.len() + 1..];
                }
                _ => {
                    literal.push(b'{');
                    rest = after;
                }
            }
        }
        literal.extend_from_slice(rest.as_bytes());
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        let has_swarm = segments.contains(&Segment::Swarm);
        if has_swarm && !text.contains("\"swarm\":\"{swarm}\"") {
            bail!("payload_template must write the header as `\"swarm\":\"{{swarm}}\"`");
        }
        let binary_prefix = !has_swarm && !insert_swarm_field(&mut segments);
        Ok(Template {
            segments,
            binary_prefix,
        })
    }

    /// Writes one payload.
    pub(crate) fn render(
        &self,
        header: PayloadHeader,
        client_idx: u32,
        rng: &mut FastRng,
        dst: &mut BytesMut,
    ) {
        use std::fmt::Write as _;
        if self.binary_prefix {
            header.write_binary(dst);
        }
        let mut text = String::new();
        for segment in &self.segments {
            text.clear();
            match segment {
                Segment::Literal(bytes) => dst.put_slice(bytes),
                Segment::Id => {
                    let _ = write!(text, "{client_idx}");
                }
                Segment::Seq => {
                    let _ = write!(text, "{}", header.seq);
                }
                Segment::TimestampMs => {
                    let _ = write!(text, "{}", header.sent_at_ns / 1_000_000);
                }
                Segment::Swarm => header.write_hex(dst),
                Segment::RandInt { low, high } => {
                    let span = u64::try_from(high - low).unwrap_or(0) + 1;
                    let value = low.saturating_add_unsigned(rng.next_u64() % span);
                    let _ = write!(text, "{value}");
                }
                Segment::RandFloat { low, high } => {
                    let value = low + (high - low) * rng.next_f64();
                    let _ = write!(text, "{value:.2}");
                }
            }
            dst.put_slice(text.as_bytes());
        }
    }
}

/// A placeholder is a lowercase name, optionally followed by `:` and arguments.
fn is_placeholder_like(name: &str) -> bool {
    let word = name.split(':').next().unwrap_or("");
    !word.is_empty()
        && word
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte == b'_')
}

fn parse_placeholder(name: &str) -> anyhow::Result<Segment> {
    let (word, args) = match name.split_once(':') {
        Some((word, args)) => (word, Some(args)),
        None => (name, None),
    };
    let segment = match (word, args) {
        ("id", None) => Segment::Id,
        ("seq", None) => Segment::Seq,
        ("ts_ms", None) => Segment::TimestampMs,
        ("swarm", None) => Segment::Swarm,
        ("rand", Some(range)) => {
            let (low, high) = parse_range::<i64>(range, name)?;
            Segment::RandInt { low, high }
        }
        ("randf", Some(range)) => {
            let (low, high) = parse_range::<f64>(range, name)?;
            Segment::RandFloat { low, high }
        }
        _ => bail!(
            "unknown placeholder `{{{name}}}` in payload_template (known: {{id}}, {{seq}}, \
             {{ts_ms}}, {{swarm}}, {{rand:LO-HI}}, {{randf:LO-HI}})"
        ),
    };
    Ok(segment)
}

fn parse_range<T>(range: &str, name: &str) -> anyhow::Result<(T, T)>
where
    T: std::str::FromStr + PartialOrd + Copy,
{
    // Split on the '-' that follows the first character, so a negative low bound works.
    let split_idx = range
        .char_indices()
        .skip(1)
        .find(|&(_, ch)| ch == '-')
        .map(|(idx, _)| idx);
    let parsed = split_idx.and_then(|idx| {
        let low = range[..idx].trim().parse::<T>().ok()?;
        let high = range[idx + 1..].trim().parse::<T>().ok()?;
        Some((low, high))
    });
    match parsed {
        Some((low, high)) if low <= high => Ok((low, high)),
        _ => bail!("placeholder `{{{name}}}` needs a range LO-HI with LO <= HI"),
    }
}

/// Puts `"swarm":"{swarm}",` right after the opening `{` of a JSON object template; returns
/// false when the template is not a JSON object.
fn insert_swarm_field(segments: &mut Vec<Segment>) -> bool {
    let Some(Segment::Literal(first)) = segments.first_mut() else {
        return false;
    };
    let Some(brace_idx) = first.iter().position(|byte| !byte.is_ascii_whitespace()) else {
        return false;
    };
    if first[brace_idx] != b'{' {
        return false;
    }
    let tail = first.split_off(brace_idx + 1);
    let closes_at_once =
        tail.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'}') && segments.len() == 1;
    let mut inserted = vec![
        Segment::Literal(b"\"swarm\":\"".to_vec()),
        Segment::Swarm,
        Segment::Literal(if closes_at_once {
            b"\"".to_vec()
        } else {
            b"\",".to_vec()
        }),
    ];
    if !tail.is_empty() {
        inserted.push(Segment::Literal(tail));
    }
    segments.splice(1..1, inserted);
    true
}

/// How payloads are built.
#[derive(Debug, Clone)]
pub(crate) enum PayloadShape {
    /// The binary header padded with zeros to `size` bytes.
    Binary { size: usize },
    /// A rendered template.
    Template(Template),
}

impl PayloadShape {
    /// Writes one payload for `header` sent by the client with index `client_idx` in its group.
    pub(crate) fn write(
        &self,
        header: PayloadHeader,
        client_idx: u32,
        rng: &mut FastRng,
        dst: &mut BytesMut,
    ) {
        match self {
            PayloadShape::Binary { size } => {
                header.write_binary(dst);
                dst.put_bytes(0, size.saturating_sub(HEADER_LEN));
            }
            PayloadShape::Template(template) => template.render(header, client_idx, rng, dst),
        }
    }
}

/// A small xorshift generator: payload randomness needs speed, not quality.
#[derive(Debug, Clone)]
pub(crate) struct FastRng(u64);

impl FastRng {
    /// Seeds the generator; a zero seed is replaced because xorshift would stay at zero.
    pub(crate) fn new(seed: u64) -> FastRng {
        FastRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Returns a number in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_for_test() -> PayloadHeader {
        PayloadHeader {
            run_id: 0xBEEF,
            publisher_id: 70_000,
            seq: 1 << 40,
            sent_at_ns: 1_700_000_000_123_456_789,
        }
    }

    #[test]
    fn binary_payload_round_trips_seq_and_timestamp() {
        let shape = PayloadShape::Binary { size: 64 };
        let mut dst = BytesMut::new();
        shape.write(header_for_test(), 3, &mut FastRng::new(1), &mut dst);
        assert_eq!(dst.len(), 64);
        assert_eq!(PayloadHeader::decode(&dst), Some(header_for_test()));
    }

    #[test]
    fn binary_payload_is_never_shorter_than_the_header() {
        let shape = PayloadShape::Binary { size: 4 };
        let mut dst = BytesMut::new();
        shape.write(header_for_test(), 0, &mut FastRng::new(1), &mut dst);
        assert_eq!(dst.len(), HEADER_LEN);
    }

    #[test]
    fn json_template_gets_a_swarm_field_and_stays_json() {
        let template = Template::parse(
            r#"{"vehicle":"car-{id}","speed":{rand:0-200},"battery":{randf:10-100},"seq":{seq}}"#,
        )
        .unwrap();
        let mut dst = BytesMut::new();
        template.render(header_for_test(), 42, &mut FastRng::new(7), &mut dst);
        let text = std::str::from_utf8(&dst).unwrap();
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(value["vehicle"], "car-42");
        assert_eq!(value["seq"], 1u64 << 40);
        assert!(value["speed"].as_i64().unwrap() <= 200);
        assert_eq!(PayloadHeader::decode(&dst), Some(header_for_test()));
    }

    #[test]
    fn empty_json_object_template_stays_json() {
        let template = Template::parse("{}").unwrap();
        let mut dst = BytesMut::new();
        template.render(header_for_test(), 0, &mut FastRng::new(7), &mut dst);
        let value: serde_json::Value = serde_json::from_slice(&dst).unwrap();
        assert!(value["swarm"].is_string());
    }

    #[test]
    fn explicit_swarm_placeholder_is_used_once() {
        let template = Template::parse(r#"{"a":1,"swarm":"{swarm}"}"#).unwrap();
        let mut dst = BytesMut::new();
        template.render(header_for_test(), 0, &mut FastRng::new(7), &mut dst);
        let text = std::str::from_utf8(&dst).unwrap();
        assert_eq!(text.matches("swarm").count(), 1, "{text}");
        assert_eq!(PayloadHeader::decode(&dst), Some(header_for_test()));
    }

    #[test]
    fn swarm_placeholder_outside_its_field_is_rejected() {
        let error = Template::parse(r#"{"h":"{swarm}"}"#).unwrap_err();
        assert!(
            error.to_string().contains("\"swarm\":\"{swarm}\""),
            "{error}"
        );
    }

    #[test]
    fn plain_text_template_gets_a_binary_prefix() {
        let template = Template::parse("hello {id}").unwrap();
        let mut dst = BytesMut::new();
        template.render(header_for_test(), 9, &mut FastRng::new(7), &mut dst);
        assert_eq!(&dst[HEADER_LEN..], b"hello 9");
        assert_eq!(PayloadHeader::decode(&dst), Some(header_for_test()));
    }

    #[test]
    fn unknown_placeholder_is_named() {
        let error = Template::parse(r#"{"speed":{speeed}}"#).unwrap_err();
        assert!(error.to_string().contains("{speeed}"), "{error}");
    }

    #[test]
    fn negative_random_range_is_accepted() {
        let template = Template::parse("{rand:-5-5}").unwrap();
        let mut dst = BytesMut::new();
        template.render(header_for_test(), 0, &mut FastRng::new(3), &mut dst);
        let value: i64 = std::str::from_utf8(&dst[HEADER_LEN..])
            .unwrap()
            .parse()
            .unwrap();
        assert!((-5..=5).contains(&value));
    }

    #[test]
    fn foreign_payload_has_no_header() {
        assert_eq!(PayloadHeader::decode(b"hello world"), None);
        assert_eq!(PayloadHeader::decode(b""), None);
    }
}
