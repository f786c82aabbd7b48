//! The byte transport a connection task drives: readiness-based, so an idle connection holds
//! no read or write buffer.

use std::{
    future::Future,
    io,
    task::{Context, Poll},
};

use bytes::BytesMut;
use tokio::net::TcpStream;

/// A full-duplex byte stream with readiness notifications (plain TCP today; TLS and WebSocket
/// adapters implement the same contract).
pub trait Transport: Send + Sync + 'static {
    /// Polls read readiness without a stored future; the waker is kept by the transport.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Polls write readiness without a stored future; the waker is kept by the transport.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Waits until a read may make progress.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Waits until a write may make progress.
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Reads what is available without waiting; `WouldBlock` when nothing is.
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize>;
    /// Writes what fits without waiting; `WouldBlock` when nothing does.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Closes the write direction (TCP FIN) while reads continue.
    fn shutdown_write(&self) -> io::Result<()>;
    /// The verified client certificate of a mutual-TLS connection, if any.
    fn peer_certificate(&self) -> Option<&PeerCertificate> {
        None
    }
}

/// Identity taken from a verified client certificate (mutual TLS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCertificate {
    /// Subject common name.
    pub common_name: Option<String>,
    /// Subject alternative names (DNS names, URIs, e-mail addresses, IPs as text).
    pub subject_alt_names: Vec<String>,
    /// Serial number in lowercase hex, no separators (for bans).
    pub serial_hex: String,
}

/// Index of the listener a connection arrived on (see `Broker::register_listener`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ListenerId(pub u16);

impl Transport for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }

    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        TcpStream::readable(self)
    }

    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
        TcpStream::writable(self)
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        TcpStream::try_read_buf(self, buf)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        socket2::SockRef::from(self).shutdown(std::net::Shutdown::Write)
    }
}
