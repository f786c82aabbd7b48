//! A fallible MQTT connection on the core codec, for clients that outlive a killed broker:
//! every failure (refused, reset, end of stream, undecodable bytes) is an `io::Error` the caller
//! handles, never a panic. [`Wire::recv`] is cancellation safe, so it can sit in a `select!`.

use std::{io, net::SocketAddr, time::Duration};

use bytes::BytesMut;
use starling_core::codec::{
    decode_packet, Ack, AckProperties, ConnAck, Connect, Disconnect, DisconnectProperties, Packet,
    PacketId, ProtocolVersion, ReasonCode,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::raw::connect_packet;

/// How long a connection attempt (TCP and CONNACK) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One MQTT connection; the caller drives the protocol.
pub struct Wire {
    stream: TcpStream,
    rbuf: BytesMut,
    /// Version negotiated by CONNECT.
    pub version: ProtocolVersion,
}

/// Returns a CONNECT that resumes (or creates) a persistent session: MQTT 5 with Session
/// Expiry Interval `session_expiry_secs` and `clean_start`; MQTT 3.x always with clean session
/// false, since a 3.x clean session is never persistent.
pub fn persistent_connect(
    version: ProtocolVersion,
    client_id: &str,
    clean_start: bool,
    session_expiry_secs: u32,
) -> Connect {
    let mut connect = connect_packet(version, client_id);
    connect.clean_start = clean_start && version.is_v5();
    if version.is_v5() {
        connect.properties.session_expiry_interval = Some(session_expiry_secs);
    }
    connect
}

/// Returns an ack (PUBACK, PUBREC, PUBREL, PUBCOMP) with reason Success.
pub fn success_ack(packet_id: PacketId) -> Ack {
    Ack {
        packet_id,
        reason_code: ReasonCode::Success,
        properties: AckProperties::default(),
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the broker closed the connection",
    )
}

impl Wire {
    /// Connects, sends `connect` and returns the CONNACK, whatever its reason code.
    ///
    /// # Errors
    /// Any I/O failure, a timeout, or a first packet that is not a CONNACK.
    pub async fn connect(addr: SocketAddr, connect: Connect) -> io::Result<(Wire, ConnAck)> {
        let attempt = async {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut wire = Wire {
                stream,
                rbuf: BytesMut::new(),
                version: connect.protocol,
            };
            wire.send(Packet::Connect(Box::new(connect))).await?;
            match wire.recv().await? {
                Packet::ConnAck(connack) => Ok((wire, connack)),
                other => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("expected CONNACK, got {other:?}"),
                )),
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no CONNACK in time"))?
    }

    /// Encodes and sends one packet.
    ///
    /// # Errors
    /// The write failed.
    pub async fn send(&mut self, packet: Packet) -> io::Result<()> {
        let mut buf = BytesMut::new();
        packet.encode(self.version, &mut buf);
        self.stream.write_all(&buf).await
    }

    /// Returns the next packet. Cancellation safe: bytes read stay buffered.
    ///
    /// # Errors
    /// The connection closed or failed, or the broker sent bytes that do not decode.
    pub async fn recv(&mut self) -> io::Result<Packet> {
        loop {
            match decode_packet(&mut self.rbuf, usize::MAX, Some(self.version)) {
                Ok(Some(packet)) => return Ok(packet),
                Ok(None) => {}
                Err(error) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("undecodable packet from the broker: {error}"),
                    ))
                }
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(closed());
            }
        }
    }

    /// Returns the next packet within `timeout`, `Ok(None)` if none came.
    ///
    /// # Errors
    /// As [`Wire::recv`].
    pub async fn recv_timeout(&mut self, timeout: Duration) -> io::Result<Option<Packet>> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Ok(result) => result.map(Some),
            Err(_elapsed) => Ok(None),
        }
    }

    /// Sends a normal DISCONNECT (an MQTT 5 session is kept for its expiry) and closes.
    pub async fn disconnect(mut self) {
        let _ = self
            .send(Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::NORMAL_DISCONNECTION,
                properties: DisconnectProperties::default(),
            }))
            .await;
        let _ = self.stream.shutdown().await;
    }
}
