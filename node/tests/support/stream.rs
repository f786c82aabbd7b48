//! Test clients for the TLS and WebSocket listeners: a TLS connector (tokio-rustls), a
//! minimal WebSocket client that writes exactly the frames a test asks for, and an MQTT client
//! on the core codec over either.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use bytes::{Buf, BufMut, BytesMut};
use rustls::ClientConfig;
use starling_core::codec::{
    decode_packet, ConnAck, Packet, ProtocolVersion, QoS, ReasonCode, Subscribe,
    SubscribeProperties,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{client::TlsStream, TlsConnector};

use super::{
    pki::server_name,
    raw::{connect_packet, options, publish_packet},
    PROMPTLY,
};

/// Connects over TLS to `addr` with `config` (server name 127.0.0.1).
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    tokio::time::timeout(
        PROMPTLY,
        TlsConnector::from(config).connect(server_name(), tcp),
    )
    .await
    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// Something that carries MQTT bytes: a stream as it is, or WebSocket frames.
pub trait MqttLink: Send {
    /// Sends MQTT bytes.
    fn send_bytes(
        &mut self,
        bytes: &[u8],
    ) -> impl std::future::Future<Output = io::Result<()>> + Send;
    /// Receives more MQTT bytes into `buf`; `Ok(0)` when the peer closed.
    fn recv_bytes(
        &mut self,
        buf: &mut BytesMut,
    ) -> impl std::future::Future<Output = io::Result<usize>> + Send;
}

/// A byte stream used as it is (TCP or TLS).
pub struct Plain<S>(pub S);

impl<S: AsyncRead + AsyncWrite + Unpin + Send> MqttLink for Plain<S> {
    async fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes).await?;
        self.0.flush().await
    }

    async fn recv_bytes(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        self.0.read_buf(buf).await
    }
}

/// A WebSocket frame as the test client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit.
    pub fin: bool,
    /// Opcode.
    pub opcode: u8,
    /// Payload.
    pub payload: Vec<u8>,
}

/// A minimal WebSocket client over `S`.
pub struct WsClient<S> {
    stream: S,
    input: BytesMut,
    /// The HTTP response to the upgrade.
    pub response: String,
}

/// Opcodes of RFC 6455.
pub mod opcode {
    /// Continuation frame.
    pub const CONTINUATION: u8 = 0x0;
    /// Text frame.
    pub const TEXT: u8 = 0x1;
    /// Binary frame.
    pub const BINARY: u8 = 0x2;
    /// Close frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping frame.
    pub const PING: u8 = 0x9;
    /// Pong frame.
    pub const PONG: u8 = 0xA;
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> WsClient<S> {
    /// Sends an upgrade request for `path` offering `protocols` and returns the client with
    /// the response head; the upgrade may have been refused (see `response`).
    pub async fn upgrade(mut stream: S, path: &str, protocols: &str) -> io::Result<WsClient<S>> {
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        if !protocols.is_empty() {
            request.push_str(&format!("Sec-WebSocket-Protocol: {protocols}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut input = BytesMut::new();
        let head_len = loop {
            if let Some(idx) = input.windows(4).position(|window| window == b"\r\n\r\n") {
                break idx + 4;
            }
            let read = tokio::time::timeout(PROMPTLY, stream.read_buf(&mut input))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            if read == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        };
        let response = String::from_utf8_lossy(&input[..head_len]).into_owned();
        input.advance(head_len);
        Ok(WsClient {
            stream,
            input,
            response,
        })
    }

    /// Sends one masked frame.
    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mask = [0x37, 0xFA, 0x21, 0x3D];
        let mut out = BytesMut::new();
        out.put_u8(if fin { 0x80 } else { 0 } | opcode);
        if payload.len() < 126 {
            out.put_u8(0x80 | payload.len() as u8);
        } else if payload.len() <= usize::from(u16::MAX) {
            out.put_u8(0x80 | 126);
            out.put_u16(payload.len() as u16);
        } else {
            out.put_u8(0x80 | 127);
            out.put_u64(payload.len() as u64);
        }
        out.put_slice(&mask);
        out.extend(
            payload
                .iter()
                .enumerate()
                .map(|(idx, byte)| byte ^ mask[idx % 4]),
        );
        self.stream.write_all(&out).await?;
        self.stream.flush().await
    }

    /// Receives the next frame; `Ok(None)` when the connection closed.
    pub async fn recv_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if self.input.len() >= 2 {
                let first = self.input[0];
                let second = self.input[1];
                assert_eq!(second & 0x80, 0, "server frames are never masked");
                let (length, header_len) = match second & 0x7F {
                    126 if self.input.len() >= 4 => (
                        usize::from(u16::from_be_bytes([self.input[2], self.input[3]])),
                        4,
                    ),
                    127 if self.input.len() >= 10 => {
                        let mut bytes = [0u8; 8];
                        bytes.copy_from_slice(&self.input[2..10]);
                        (u64::from_be_bytes(bytes) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    length => (usize::from(length), 2),
                };
                if header_len > 0 && self.input.len() >= header_len + length {
                    self.input.advance(header_len);
                    let payload = self.input.split_to(length).to_vec();
                    return Ok(Some(Frame {
                        fin: first & 0x80 != 0,
                        opcode: first & 0x0F,
                        payload,
                    }));
                }
            }
            if self.stream.read_buf(&mut self.input).await? == 0 {
                return Ok(None);
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> MqttLink for WsClient<S> {
    async fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.send_frame(true, opcode::BINARY, bytes).await
    }

    async fn recv_bytes(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            match self.recv_frame().await? {
                None => return Ok(0),
                Some(frame) if frame.opcode == opcode::CLOSE => return Ok(0),
                Some(frame)
                    if frame.opcode == opcode::BINARY || frame.opcode == opcode::CONTINUATION =>
                {
                    buf.extend_from_slice(&frame.payload);
                    if !frame.payload.is_empty() {
                        return Ok(frame.payload.len());
                    }
                }
                Some(_) => {}
            }
        }
    }
}

/// An MQTT client on the core codec over any [`MqttLink`].
pub struct MqttClient<L> {
    /// The link; tests may write frames through it directly.
    pub link: L,
    rbuf: BytesMut,
    version: ProtocolVersion,
    next_packet_id: u16,
}

impl<L: MqttLink> MqttClient<L> {
    /// Wraps a link over which nothing was sent yet.
    pub fn new(link: L, version: ProtocolVersion) -> MqttClient<L> {
        MqttClient {
            link,
            rbuf: BytesMut::new(),
            version,
            next_packet_id: 0,
        }
    }

    /// Sends CONNECT for `client_id` (clean start) and returns the CONNACK.
    pub async fn connect(&mut self, client_id: &str) -> io::Result<ConnAck> {
        let connect = connect_packet(self.version, client_id);
        self.send(Packet::Connect(Box::new(connect))).await?;
        match self.recv(PROMPTLY).await? {
            Some(Packet::ConnAck(connack)) => Ok(connack),
            Some(other) => panic!("expected CONNACK, got {other:?}"),
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }

    /// Connects and asserts success.
    pub async fn connect_ok(link: L, client_id: &str) -> MqttClient<L> {
        let mut client = MqttClient::new(link, ProtocolVersion::V5);
        let connack = client.connect(client_id).await.expect("CONNACK");
        assert_eq!(connack.reason_code, ReasonCode::Success, "{connack:?}");
        client
    }

    /// Encodes and sends one packet.
    pub async fn send(&mut self, packet: Packet) -> io::Result<()> {
        let mut buf = BytesMut::new();
        packet.encode(self.version, &mut buf);
        self.link.send_bytes(&buf).await
    }

    /// Returns the next packet within `timeout`; `Ok(None)` when the broker closed.
    pub async fn recv(&mut self, timeout: Duration) -> io::Result<Option<Packet>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(packet) = decode_packet(&mut self.rbuf, usize::MAX, Some(self.version))
                .expect("the broker sent a valid packet")
            {
                return Ok(Some(packet));
            }
            let read = tokio::time::timeout_at(deadline, self.link.recv_bytes(&mut self.rbuf))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            if read == 0 {
                return Ok(None);
            }
        }
    }

    /// Subscribes to `filter` and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.next_packet_id += 1;
        let packet_id = starling_core::codec::PacketId::new(self.next_packet_id).expect("non-zero");
        self.send(Packet::Subscribe(Subscribe {
            packet_id,
            properties: SubscribeProperties::default(),
            filters: vec![(filter.into(), options(qos))],
        }))
        .await
        .expect("send SUBSCRIBE");
        match self.recv(PROMPTLY).await.expect("SUBACK") {
            Some(Packet::SubAck(suback)) => assert_eq!(suback.packet_id, packet_id),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes at QoS 0.
    pub async fn publish(&mut self, topic: &str, payload: &[u8]) -> io::Result<()> {
        self.send(Packet::Publish(publish_packet(
            topic,
            QoS::AtMostOnce,
            0,
            payload,
        )))
        .await
    }

    /// Receives the next PUBLISH (QoS 0) and returns topic and payload.
    pub async fn recv_publish(&mut self) -> (String, Vec<u8>) {
        match self.recv(PROMPTLY).await.expect("PUBLISH") {
            Some(Packet::Publish(publish)) => (publish.topic.to_string(), publish.payload.to_vec()),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}
