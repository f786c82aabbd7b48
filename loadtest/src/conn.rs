//! One MQTT connection on a tokio TCP stream with Starling's codec: the CONNECT/CONNACK and
//! SUBSCRIBE/SUBACK handshakes, batched writes and packet decoding.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use starling_core::codec::{
    decode_packet, ByteString, ConnAck, Connect, ConnectProperties, Packet, PacketId,
    ProtocolVersion, ReasonCode, Subscribe, SubscribeProperties, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout_at, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::tls::TlsClient;

/// Largest packet accepted from the broker.
const MAX_PACKET_SIZE: usize = 16 * 1024 * 1024;
/// Read buffer reserved before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Read buffer of slow consumers, so that reading a chunk does not defeat the rate limit.
const SLOW_READ_CHUNK: usize = 2 * 1024;

/// What a client sends in CONNECT.
#[derive(Debug, Clone)]
pub(crate) struct ConnectParams {
    pub(crate) broker: SocketAddr,
    pub(crate) source: Option<IpAddr>,
    pub(crate) client_id: String,
    pub(crate) version: ProtocolVersion,
    pub(crate) clean_start: bool,
    pub(crate) keep_alive_secs: u16,
    pub(crate) session_expiry_secs: u32,
    pub(crate) timeout: Duration,
    pub(crate) slow_reader: bool,
    pub(crate) tls: Option<TlsClient>,
}

/// The byte stream under MQTT.
enum Transport {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    /// Reads into `buf`; cancel safe.
    async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Transport::Tcp(stream) => stream.read_buf(buf).await,
            Transport::Tls(stream) => stream.read_buf(buf).await,
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(stream) => stream.read(buf).await,
            Transport::Tls(stream) => stream.read(buf).await,
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Transport::Tcp(stream) => stream.write_all(bytes).await,
            Transport::Tls(stream) => {
                stream.write_all(bytes).await?;
                // TLS records may wait in rustls until flushed.
                stream.flush().await
            }
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(stream) => stream.shutdown().await,
            Transport::Tls(stream) => stream.shutdown().await,
        }
    }
}

/// Why a connection attempt failed.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// A socket error at `stage`.
    Io {
        stage: &'static str,
        error: io::Error,
    },
    /// No answer within the connect timeout at `stage`.
    Timeout { stage: &'static str },
    /// The broker refused with this CONNACK reason code.
    Refused(ReasonCode),
    /// A SUBACK refused a filter.
    SubscribeRefused(ReasonCode),
    /// The broker sent something unexpected.
    Protocol(String),
}

impl ConnectError {
    /// Returns a short label for counting errors by kind.
    pub(crate) fn kind(&self) -> String {
        match self {
            ConnectError::Io { error, .. } => match error.kind() {
                io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
                io::ErrorKind::AddrNotAvailable => "address not available".to_owned(),
                io::ErrorKind::UnexpectedEof => "closed by broker".to_owned(),
                _ if error.raw_os_error() == Some(24) => "too many open files".to_owned(),
                kind => format!("io: {kind}"),
            },
            ConnectError::Timeout { stage } => format!("timeout ({stage})"),
            ConnectError::Refused(code) => format!("connack 0x{:02x}", code.as_u8()),
            ConnectError::SubscribeRefused(code) => format!("suback 0x{:02x}", code.as_u8()),
            ConnectError::Protocol(_) => "protocol error".to_owned(),
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Io { stage, error } => write!(f, "{stage}: {error}"),
            ConnectError::Timeout { stage } => write!(f, "{stage}: no answer in time"),
            ConnectError::Refused(code) => {
                write!(f, "connack: refused with 0x{:02x} ({code:?})", code.as_u8())
            }
            ConnectError::SubscribeRefused(code) => {
                write!(f, "suback: refused with 0x{:02x} ({code:?})", code.as_u8())
            }
            ConnectError::Protocol(message) => write!(f, "protocol error: {message}"),
        }
    }
}

/// An established MQTT connection.
pub(crate) struct MqttConn {
    stream: Transport,
    read_buf: BytesMut,
    /// Packets queued by [`MqttConn::queue`] until [`MqttConn::flush`].
    write_buf: BytesMut,
    read_chunk: usize,
    pub(crate) version: ProtocolVersion,
}

impl MqttConn {
    /// Connects, sends CONNECT and waits for CONNACK.
    ///
    /// # Errors
    /// Returns a [`ConnectError`] for socket errors, timeouts and refusals.
    pub(crate) async fn connect(
        params: &ConnectParams,
    ) -> Result<(MqttConn, ConnAck), ConnectError> {
        let deadline = Instant::now() + params.timeout;
        let socket = match params.broker {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|error| ConnectError::Io {
            stage: "socket",
            error,
        })?;
        // Lets a port whose earlier connection is in TIME_WAIT be bound again.
        socket
            .set_reuseaddr(true)
            .map_err(|error| ConnectError::Io {
                stage: "socket",
                error,
            })?;
        if let Some(source) = params.source {
            socket
                .bind(SocketAddr::new(source, 0))
                .map_err(|error| ConnectError::Io {
                    stage: "bind",
                    error,
                })?;
        }
        let stream = timeout_at(deadline, socket.connect(params.broker))
            .await
            .map_err(|_| ConnectError::Timeout {
                stage: "tcp connect",
            })?
            .map_err(|error| ConnectError::Io {
                stage: "tcp connect",
                error,
            })?;
        stream.set_nodelay(true).map_err(|error| ConnectError::Io {
            stage: "tcp connect",
            error,
        })?;
        let stream = match &params.tls {
            None => Transport::Tcp(stream),
            Some(tls) => {
                let connector = TlsConnector::from(tls.config.clone());
                let handshake = connector.connect(tls.server_name.clone(), stream);
                let tls_stream = timeout_at(deadline, handshake)
                    .await
                    .map_err(|_| ConnectError::Timeout {
                        stage: "tls handshake",
                    })?
                    .map_err(|error| ConnectError::Io {
                        stage: "tls handshake",
                        error,
                    })?;
                Transport::Tls(Box::new(tls_stream))
            }
        };
        let mut conn = MqttConn {
            stream,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::with_capacity(256),
            read_chunk: if params.slow_reader {
                SLOW_READ_CHUNK
            } else {
                READ_CHUNK
            },
            version: params.version,
        };
        let connect = Connect {
            protocol: params.version,
            clean_start: params.clean_start,
            keep_alive: params.keep_alive_secs,
            properties: ConnectProperties {
                session_expiry_interval: (params.version.is_v5() && params.session_expiry_secs > 0)
                    .then_some(params.session_expiry_secs),
                ..ConnectProperties::default()
            },
            client_id: ByteString::from(params.client_id.as_str()),
            last_will: None,
            username: None,
            password: None,
        };
        connect.encode(&mut conn.write_buf);
        conn.flush().await.map_err(|error| ConnectError::Io {
            stage: "connect",
            error,
        })?;
        let packet = conn.next_packet_before(deadline, "connack").await?;
        match packet {
            Packet::ConnAck(connack) if connack.reason_code == ReasonCode::Success => {
                Ok((conn, connack))
            }
            Packet::ConnAck(connack) => Err(ConnectError::Refused(connack.reason_code)),
            other => Err(ConnectError::Protocol(format!(
                "expected CONNACK, got {:?}",
                other.packet_type()
            ))),
        }
    }

    /// Subscribes to `filters` and waits for the SUBACK.
    ///
    /// # Errors
    /// Returns a [`ConnectError`] for socket errors, a timeout or a refused filter.
    pub(crate) async fn subscribe(
        &mut self,
        filters: &[(String, SubscriptionOptions)],
        timeout: Duration,
    ) -> Result<(), ConnectError> {
        let deadline = Instant::now() + timeout;
        let packet_id = PacketId::new(1).expect("1 is not zero");
        let subscribe = Subscribe {
            packet_id,
            properties: SubscribeProperties::default(),
            filters: filters
                .iter()
                .map(|(filter, options)| (ByteString::from(filter.as_str()), *options))
                .collect(),
        };
        self.queue(&Packet::Subscribe(subscribe));
        self.flush().await.map_err(|error| ConnectError::Io {
            stage: "subscribe",
            error,
        })?;
        loop {
            // Messages of a resumed session may arrive before the SUBACK; they are dropped
            // here and their QoS 1/2 flow completes after a redelivery.
            match self.next_packet_before(deadline, "suback").await? {
                Packet::SubAck(suback) if suback.packet_id == packet_id => {
                    if let Some(code) = suback.reason_codes.iter().find(|code| code.as_u8() >= 0x80)
                    {
                        return Err(ConnectError::SubscribeRefused(*code));
                    }
                    return Ok(());
                }
                Packet::PingResp | Packet::Publish(_) | Packet::PubRel(_) => continue,
                other => {
                    return Err(ConnectError::Protocol(format!(
                        "expected SUBACK, got {:?}",
                        other.packet_type()
                    )))
                }
            }
        }
    }

    /// Reads until one packet is complete or `deadline` passes.
    async fn next_packet_before(
        &mut self,
        deadline: Instant,
        stage: &'static str,
    ) -> Result<Packet, ConnectError> {
        loop {
            match self.next_packet() {
                Ok(Some(packet)) => return Ok(packet),
                Ok(None) => {}
                Err(error) => {
                    // The first bytes tell e.g. a TLS alert (15 03 03) from an MQTT packet.
                    let head: Vec<String> = self
                        .read_buf
                        .iter()
                        .take(8)
                        .map(|byte| format!("{byte:02x}"))
                        .collect();
                    return Err(ConnectError::Protocol(format!(
                        "{error} (received {})",
                        head.join(" ")
                    )));
                }
            }
            let read = timeout_at(deadline, self.read_some())
                .await
                .map_err(|_| ConnectError::Timeout { stage })?;
            match read {
                Ok(0) => {
                    return Err(ConnectError::Io {
                        stage,
                        error: io::Error::new(io::ErrorKind::UnexpectedEof, "closed by broker"),
                    })
                }
                Ok(_) => {}
                Err(error) => return Err(ConnectError::Io { stage, error }),
            }
        }
    }

    /// Encodes a packet into the write buffer.
    pub(crate) fn queue(&mut self, packet: &Packet) {
        packet.encode(self.version, &mut self.write_buf);
    }

    /// Returns the write buffer, to encode packets into directly.
    pub(crate) fn write_buf(&mut self) -> &mut BytesMut {
        &mut self.write_buf
    }

    /// Writes everything queued.
    ///
    /// # Errors
    /// Returns the socket error.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.write_buf).await;
        self.write_buf.clear();
        result
    }

    /// Reads once; `Ok(0)` means the broker closed the connection. Cancel safe.
    pub(crate) async fn read_some(&mut self) -> io::Result<usize> {
        if self.read_buf.capacity() - self.read_buf.len() < self.read_chunk / 4 {
            self.read_buf.reserve(self.read_chunk);
        }
        self.stream.read_buf(&mut self.read_buf).await
    }

    /// Decodes the next complete packet from what has been read.
    ///
    /// # Errors
    /// Returns the decode error of a malformed packet.
    pub(crate) fn next_packet(
        &mut self,
    ) -> Result<Option<Packet>, starling_core::codec::DecodeError> {
        decode_packet(&mut self.read_buf, MAX_PACKET_SIZE, Some(self.version))
    }

    /// Flushes what is queued (a DISCONNECT), then waits up to `linger` for the broker to
    /// close first, so the TIME_WAIT state stays on the broker's side and does not block the
    /// client's ports for the next run; closes itself if the broker does not.
    pub(crate) async fn close(mut self, linger: Duration) {
        if self.flush().await.is_err() {
            return;
        }
        let deadline = Instant::now() + linger;
        let mut scratch = [0u8; 512];
        loop {
            match timeout_at(deadline, self.stream.read(&mut scratch)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => continue,
                Err(_) => break,
            }
        }
        let _ = self.stream.shutdown().await;
    }
}
