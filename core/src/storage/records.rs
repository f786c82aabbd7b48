//! Versioned binary encoding of the stored records, hand-written on `bytes`.
//!
//! Every value starts with a version byte ([`RECORD_VERSION`]); integers that are usually small
//! (lengths, ids) are LEB128 varints, strings and binaries are length-prefixed, optional fields
//! use a presence byte. A decoder refuses versions it does not know rather than guessing, so a
//! store written by a newer broker is reported, never misread.
//!
//! Times are absolute unix milliseconds (wall clock), because monotonic instants do not survive
//! a restart.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::codec::{PublishProperties, QoS, RetainHandling, SubscriptionOptions};

/// The only record version this build writes and reads.
pub const RECORD_VERSION: u8 = 1;

/// Why a stored value could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The value ended before the field.
    #[error("record truncated while reading {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// The value has bytes after the last field.
    #[error("record has trailing bytes")]
    TrailingBytes,
    /// The version byte is not one this build knows (written by a newer broker?).
    #[error("unsupported record version {version}")]
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// A field holds a value outside its range.
    #[error("invalid value in field {field}")]
    Invalid {
        /// The field being read.
        field: &'static str,
    },
}

/// A persistent session's metadata, keyed by client id in `Keyspace::Sessions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Client identifier.
    pub client_id: ByteString,
    /// Session incarnation id (`message::SessionId`).
    pub session_id: u64,
    /// Session Expiry Interval in seconds (`u32::MAX`: never expires).
    pub session_expiry_interval_secs: u32,
    /// When the session expires, unix ms; `None` while a client is connected (recovery then
    /// starts the interval at restart, since the connection is gone).
    pub expiry_deadline_unix_ms: Option<u64>,
}

/// One subscription of a session, in `Keyspace::Subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// Topic filter as subscribed (including a `$share/group/` prefix).
    pub topic_filter: ByteString,
    /// Subscription options.
    pub options: SubscriptionOptions,
    /// Subscription Identifier (1..=268,435,455), if one was given.
    pub subscription_id: Option<u32>,
}

/// State of an outbound QoS 1/2 delivery that has a packet id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflightState {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2); holds a message reference.
    Published {
        /// The shared message in `Keyspace::Messages`.
        message_id: u64,
    },
    /// PUBREC received and PUBREL sent, waiting for PUBCOMP; the message is no longer needed.
    PubRelSent,
}

/// An outbound in-flight delivery, in `Keyspace::OutboundInflight`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InflightRecord {
    /// Packet identifier (never 0).
    pub packet_id: u16,
    /// Where the handshake stands.
    pub state: InflightState,
    /// Delivered QoS.
    pub qos: QoS,
    /// RETAIN flag as delivered.
    pub retain: bool,
    /// Subscription identifiers of the delivery.
    pub subscription_ids: Vec<u32>,
}

/// A delivery waiting in a session's offline queue, in `Keyspace::OfflineQueue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRecord {
    /// The shared message in `Keyspace::Messages`; 0 when the message is inline.
    pub message_id: u64,
    /// Delivery QoS.
    pub qos: QoS,
    /// RETAIN flag as delivered.
    pub retain: bool,
    /// Subscription identifiers of the delivery.
    pub subscription_ids: Vec<u32>,
    /// The message itself, when only this entry refers to it (`message_id` is then 0): one
    /// write instead of three (message, reference count, entry) for the common 1:1 case.
    pub message: Option<MessageRecord>,
}

/// A published message, stored once (`Keyspace::Messages`), as a retained message
/// (`Keyspace::Retained`) or inside a will.
///
/// Of the PUBLISH properties only those forwarded to subscribers are kept: Topic Alias and
/// Subscription Identifiers are per connection and delivery, and Message Expiry Interval is
/// replaced by the absolute `expiry_unix_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// Topic name.
    pub topic: ByteString,
    /// Payload.
    pub payload: Bytes,
    /// Published QoS.
    pub qos: QoS,
    /// Published RETAIN flag.
    pub retain: bool,
    /// Forwarded properties (see the type docs for what is dropped).
    pub properties: PublishProperties,
    /// When the message expires, unix ms.
    pub expiry_unix_ms: Option<u64>,
}

/// A will waiting to be published, keyed by client id in `Keyspace::Wills`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillRecord {
    /// The will message.
    pub message: MessageRecord,
    /// Will Delay Interval in seconds.
    pub delay_secs: u32,
    /// When to publish it, unix ms; `None` while the client is connected.
    pub publish_deadline_unix_ms: Option<u64>,
}

/// Encodes any record into a fresh buffer.
pub trait Record: Sized {
    /// Appends the encoding (version byte first) to `dst`.
    fn encode(&self, dst: &mut BytesMut);

    /// Decodes one record that must span all of `src`.
    ///
    /// # Errors
    /// Returns a [`RecordError`] for truncated, trailing, unknown-version or invalid data.
    fn decode(src: Bytes) -> Result<Self, RecordError>;

    /// Bytes to reserve before encoding (an estimate; encoding grows the buffer if needed).
    fn size_hint(&self) -> usize {
        64
    }

    /// Encodes into a `Vec`.
    fn to_vec(&self) -> Vec<u8> {
        let mut dst = BytesMut::with_capacity(self.size_hint());
        self.encode(&mut dst);
        // Takes over the buffer without a copy (it is uniquely owned).
        Vec::from(dst)
    }
}

impl Record for SessionRecord {
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(RECORD_VERSION);
        put_str(dst, &self.client_id);
        put_varint(dst, self.session_id);
        dst.put_u32(self.session_expiry_interval_secs);
        put_opt_u64(dst, self.expiry_deadline_unix_ms);
    }

    fn decode(src: Bytes) -> Result<Self, RecordError> {
        let mut reader = Reader::new(src)?;
        let record = SessionRecord {
            client_id: reader.string("client_id")?,
            session_id: reader.varint("session_id")?,
            session_expiry_interval_secs: reader.u32("session_expiry_interval")?,
            expiry_deadline_unix_ms: reader.opt_u64("expiry_deadline")?,
        };
        reader.finish(record)
    }
}

impl Record for SubscriptionRecord {
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(RECORD_VERSION);
        put_str(dst, &self.topic_filter);
        // The SUBSCRIBE options byte layout [MQTT-3.8.3-1].
        let options = self.options.qos.as_u8()
            | u8::from(self.options.no_local) << 2
            | u8::from(self.options.retain_as_published) << 3
            | (self.options.retain_handling as u8) << 4;
        dst.put_u8(options);
        put_opt_u64(dst, self.subscription_id.map(u64::from));
    }

    fn decode(src: Bytes) -> Result<Self, RecordError> {
        let mut reader = Reader::new(src)?;
        let topic_filter = reader.string("topic_filter")?;
        let options_byte = reader.u8("options")?;
        let retain_handling = match options_byte >> 4 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(RecordError::Invalid { field: "options" }),
        };
        let options = SubscriptionOptions {
            qos: qos_from(options_byte & 0b11, "options")?,
            no_local: options_byte & 0b100 != 0,
            retain_as_published: options_byte & 0b1000 != 0,
            retain_handling,
        };
        let subscription_id = reader
            .opt_u64("subscription_id")?
            .map(|id| {
                u32::try_from(id).map_err(|_| RecordError::Invalid {
                    field: "subscription_id",
                })
            })
            .transpose()?;
        reader.finish(SubscriptionRecord {
            topic_filter,
            options,
            subscription_id,
        })
    }
}

impl Record for InflightRecord {
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(RECORD_VERSION);
        dst.put_u16(self.packet_id);
        match self.state {
            InflightState::Published { message_id } => {
                dst.put_u8(0);
                put_varint(dst, message_id);
            }
            InflightState::PubRelSent => dst.put_u8(1),
        }
        put_delivery(dst, self.qos, self.retain, &self.subscription_ids);
    }

    fn decode(src: Bytes) -> Result<Self, RecordError> {
        let mut reader = Reader::new(src)?;
        let packet_id = reader.u16("packet_id")?;
        if packet_id == 0 {
            return Err(RecordError::Invalid { field: "packet_id" });
        }
        let state = match reader.u8("state")? {
            0 => InflightState::Published {
                message_id: reader.varint("message_id")?,
            },
            1 => InflightState::PubRelSent,
            _ => return Err(RecordError::Invalid { field: "state" }),
        };
        let (qos, retain, subscription_ids) = reader.delivery()?;
        reader.finish(InflightRecord {
            packet_id,
            state,
            qos,
            retain,
            subscription_ids,
        })
    }
}

impl MessageRecord {
    /// Borrows the fields that are encoded.
    pub fn fields(&self) -> MessageFields<'_> {
        MessageFields {
            topic: &self.topic,
            payload: &self.payload,
            qos: self.qos,
            retain: self.retain,
            properties: &self.properties,
            expiry_unix_ms: self.expiry_unix_ms,
        }
    }
}

/// The stored fields of a message, borrowed: encodes a live message without building a
/// [`MessageRecord`] first (no clone of its properties, no reference count traffic).
#[derive(Debug, Clone, Copy)]
pub struct MessageFields<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Payload.
    pub payload: &'a [u8],
    /// Published QoS.
    pub qos: QoS,
    /// Published RETAIN flag.
    pub retain: bool,
    /// Properties; only the forwarded ones are encoded (see [`MessageRecord`]).
    pub properties: &'a PublishProperties,
    /// When the message expires, unix ms.
    pub expiry_unix_ms: Option<u64>,
}

impl MessageFields<'_> {
    fn encoded_size_hint(&self) -> usize {
        let properties = self.properties;
        96 + self.topic.len()
            + self.payload.len()
            + properties
                .response_topic
                .as_ref()
                .map_or(0, |topic| topic.len())
            + properties
                .correlation_data
                .as_ref()
                .map_or(0, |data| data.len())
            + properties
                .content_type
                .as_ref()
                .map_or(0, |content_type| content_type.len())
            + properties
                .user_properties
                .iter()
                .map(|(key, value)| key.len() + value.len() + 8)
                .sum::<usize>()
    }

    /// Encodes the fields as a [`MessageRecord`] (the `Keyspace::Messages` and
    /// `Keyspace::Retained` value).
    pub fn to_record_vec(&self) -> Vec<u8> {
        let mut dst = BytesMut::with_capacity(self.encoded_size_hint());
        dst.put_u8(RECORD_VERSION);
        put_message_body(&mut dst, self);
        Vec::from(dst)
    }
}

/// Encodes a [`QueueRecord`] from its parts, with the message borrowed when it is inline.
pub fn encode_queue_entry(
    message_id: u64,
    qos: QoS,
    retain: bool,
    subscription_ids: &[u32],
    inline: Option<&MessageFields<'_>>,
) -> Vec<u8> {
    let size_hint =
        32 + 5 * subscription_ids.len() + inline.map_or(0, |message| message.encoded_size_hint());
    let mut dst = BytesMut::with_capacity(size_hint);
    put_queue_entry(&mut dst, message_id, qos, retain, subscription_ids, inline);
    Vec::from(dst)
}

fn put_queue_entry(
    dst: &mut BytesMut,
    message_id: u64,
    qos: QoS,
    retain: bool,
    subscription_ids: &[u32],
    inline: Option<&MessageFields<'_>>,
) {
    dst.put_u8(RECORD_VERSION);
    put_varint(dst, message_id);
    put_delivery(dst, qos, retain, subscription_ids);
    match inline {
        None => dst.put_u8(0),
        Some(message) => {
            dst.put_u8(1);
            put_message_body(dst, message);
        }
    }
}

impl Record for QueueRecord {
    fn size_hint(&self) -> usize {
        32 + 5 * self.subscription_ids.len()
            + self
                .message
                .as_ref()
                .map_or(0, |message| message.fields().encoded_size_hint())
    }

    fn encode(&self, dst: &mut BytesMut) {
        let inline = self.message.as_ref().map(MessageRecord::fields);
        put_queue_entry(
            dst,
            self.message_id,
            self.qos,
            self.retain,
            &self.subscription_ids,
            inline.as_ref(),
        );
    }

    fn decode(src: Bytes) -> Result<Self, RecordError> {
        let mut reader = Reader::new(src)?;
        let message_id = reader.varint("message_id")?;
        let (qos, retain, subscription_ids) = reader.delivery()?;
        let message = match reader.u8("inline_message")? {
            0 => None,
            1 => Some(reader.message_body()?),
            _ => {
                return Err(RecordError::Invalid {
                    field: "inline_message",
                })
            }
        };
        reader.finish(QueueRecord {
            message_id,
            qos,
            retain,
            subscription_ids,
            message,
        })
    }
}

impl Record for MessageRecord {
    fn size_hint(&self) -> usize {
        self.fields().encoded_size_hint()
    }

    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(RECORD_VERSION);
        put_message_body(dst, &self.fields());
    }

    fn decode(src: Bytes) -> Result<Self, RecordError> {
        let mut reader = Reader::new(src)?;
        let record = reader.message_body()?;
        reader.finish(record)
    }
}

impl Record for WillRecord {
    fn size_hint(&self) -> usize {
        self.message.fields().encoded_size_hint() + 16
    }

    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(RECORD_VERSION);
        put_message_body(dst, &self.message.fields());
        dst.put_u32(self.delay_secs);
        put_opt_u64(dst, self.publish_deadline_unix_ms);
    }

    fn decode(src: Bytes) -> Result<Self, RecordError> {
        let mut reader = Reader::new(src)?;
        let record = WillRecord {
            message: reader.message_body()?,
            delay_secs: reader.u32("delay")?,
            publish_deadline_unix_ms: reader.opt_u64("publish_deadline")?,
        };
        reader.finish(record)
    }
}

const PROP_PAYLOAD_FORMAT: u8 = 1;
const PROP_RESPONSE_TOPIC: u8 = 1 << 1;
const PROP_CORRELATION_DATA: u8 = 1 << 2;
const PROP_CONTENT_TYPE: u8 = 1 << 3;

fn put_message_body(dst: &mut BytesMut, message: &MessageFields<'_>) {
    put_str(dst, message.topic);
    put_bytes(dst, message.payload);
    dst.put_u8(message.qos.as_u8() | u8::from(message.retain) << 2);
    put_opt_u64(dst, message.expiry_unix_ms);
    let properties = message.properties;
    let mut present = 0u8;
    if properties.payload_format_indicator.is_some() {
        present |= PROP_PAYLOAD_FORMAT;
    }
    if properties.response_topic.is_some() {
        present |= PROP_RESPONSE_TOPIC;
    }
    if properties.correlation_data.is_some() {
        present |= PROP_CORRELATION_DATA;
    }
    if properties.content_type.is_some() {
        present |= PROP_CONTENT_TYPE;
    }
    dst.put_u8(present);
    if let Some(indicator) = properties.payload_format_indicator {
        dst.put_u8(indicator);
    }
    if let Some(response_topic) = &properties.response_topic {
        put_str(dst, response_topic);
    }
    if let Some(correlation_data) = &properties.correlation_data {
        put_bytes(dst, correlation_data);
    }
    if let Some(content_type) = &properties.content_type {
        put_str(dst, content_type);
    }
    put_varint(dst, properties.user_properties.len() as u64);
    for (name, value) in &properties.user_properties {
        put_str(dst, name);
        put_str(dst, value);
    }
}

fn put_delivery(dst: &mut BytesMut, qos: QoS, retain: bool, subscription_ids: &[u32]) {
    dst.put_u8(qos.as_u8() | u8::from(retain) << 2);
    put_varint(dst, subscription_ids.len() as u64);
    for id in subscription_ids {
        put_varint(dst, u64::from(*id));
    }
}

fn put_varint(dst: &mut BytesMut, mut value: u64) {
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            dst.put_u8(byte);
            return;
        }
        dst.put_u8(byte | 0x80);
    }
}

fn put_bytes(dst: &mut BytesMut, bytes: &[u8]) {
    put_varint(dst, bytes.len() as u64);
    dst.put_slice(bytes);
}

fn put_str(dst: &mut BytesMut, text: &str) {
    put_bytes(dst, text.as_bytes());
}

fn put_opt_u64(dst: &mut BytesMut, value: Option<u64>) {
    match value {
        None => dst.put_u8(0),
        Some(value) => {
            dst.put_u8(1);
            put_varint(dst, value);
        }
    }
}

fn qos_from(bits: u8, field: &'static str) -> Result<QoS, RecordError> {
    QoS::from_u8(bits).map_err(|_| RecordError::Invalid { field })
}

/// A cursor over one stored value.
struct Reader {
    src: Bytes,
}

impl Reader {
    fn new(mut src: Bytes) -> Result<Reader, RecordError> {
        if !src.has_remaining() {
            return Err(RecordError::Truncated { field: "version" });
        }
        let version = src.get_u8();
        if version != RECORD_VERSION {
            return Err(RecordError::UnsupportedVersion { version });
        }
        Ok(Reader { src })
    }

    fn finish<T>(self, record: T) -> Result<T, RecordError> {
        if self.src.has_remaining() {
            return Err(RecordError::TrailingBytes);
        }
        Ok(record)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, RecordError> {
        if self.src.remaining() < 1 {
            return Err(RecordError::Truncated { field });
        }
        Ok(self.src.get_u8())
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, RecordError> {
        if self.src.remaining() < 2 {
            return Err(RecordError::Truncated { field });
        }
        Ok(self.src.get_u16())
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, RecordError> {
        if self.src.remaining() < 4 {
            return Err(RecordError::Truncated { field });
        }
        Ok(self.src.get_u32())
    }

    fn varint(&mut self, field: &'static str) -> Result<u64, RecordError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8(field)?;
            value |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RecordError::Invalid { field })
    }

    fn bytes(&mut self, field: &'static str) -> Result<Bytes, RecordError> {
        let len = self.varint(field)?;
        let len = usize::try_from(len).map_err(|_| RecordError::Invalid { field })?;
        if self.src.remaining() < len {
            return Err(RecordError::Truncated { field });
        }
        Ok(self.src.split_to(len))
    }

    fn string(&mut self, field: &'static str) -> Result<ByteString, RecordError> {
        let bytes = self.bytes(field)?;
        ByteString::try_from(bytes).map_err(|_| RecordError::Invalid { field })
    }

    fn opt_u64(&mut self, field: &'static str) -> Result<Option<u64>, RecordError> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => self.varint(field).map(Some),
            _ => Err(RecordError::Invalid { field }),
        }
    }

    fn flags(&mut self, field: &'static str) -> Result<(QoS, bool), RecordError> {
        let byte = self.u8(field)?;
        if byte & !0b111 != 0 {
            return Err(RecordError::Invalid { field });
        }
        Ok((qos_from(byte & 0b11, field)?, byte & 0b100 != 0))
    }

    fn delivery(&mut self) -> Result<(QoS, bool, Vec<u32>), RecordError> {
        let (qos, retain) = self.flags("delivery_flags")?;
        let num_ids = self.varint("subscription_ids")?;
        // Each id takes at least one byte, which bounds the allocation by the value's size.
        if num_ids > self.src.remaining() as u64 {
            return Err(RecordError::Truncated {
                field: "subscription_ids",
            });
        }
        let mut subscription_ids = Vec::with_capacity(num_ids as usize);
        for _ in 0..num_ids {
            let id = self.varint("subscription_ids")?;
            let id = u32::try_from(id).map_err(|_| RecordError::Invalid {
                field: "subscription_ids",
            })?;
            subscription_ids.push(id);
        }
        Ok((qos, retain, subscription_ids))
    }

    fn message_body(&mut self) -> Result<MessageRecord, RecordError> {
        let topic = self.string("topic")?;
        let payload = self.bytes("payload")?;
        let (qos, retain) = self.flags("message_flags")?;
        let expiry_unix_ms = self.opt_u64("expiry")?;
        let present = self.u8("properties")?;
        let mut properties = PublishProperties::default();
        if present & PROP_PAYLOAD_FORMAT != 0 {
            properties.payload_format_indicator = Some(self.u8("payload_format_indicator")?);
        }
        if present & PROP_RESPONSE_TOPIC != 0 {
            properties.response_topic = Some(self.string("response_topic")?);
        }
        if present & PROP_CORRELATION_DATA != 0 {
            properties.correlation_data = Some(self.bytes("correlation_data")?);
        }
        if present & PROP_CONTENT_TYPE != 0 {
            properties.content_type = Some(self.string("content_type")?);
        }
        let num_user_properties = self.varint("user_properties")?;
        // Each pair takes at least two bytes.
        if num_user_properties > self.src.remaining() as u64 {
            return Err(RecordError::Truncated {
                field: "user_properties",
            });
        }
        for _ in 0..num_user_properties {
            let name = self.string("user_properties")?;
            let value = self.string("user_properties")?;
            properties.user_properties.push((name, value));
        }
        Ok(MessageRecord {
            topic,
            payload,
            qos,
            retain,
            properties,
            expiry_unix_ms,
        })
    }
}
