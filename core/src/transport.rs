//! The byte transport a connection task drives: readiness-based, so an idle connection holds
//! no read or write buffer.

use std::{
    future::Future,
    io,
    task::{Context, Poll},
};

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::codec::ReasonCode;

/// A full-duplex byte stream with readiness notifications (plain TCP today; TLS and WebSocket
/// adapters implement the same contract).
pub trait Transport: Send + Sync + 'static {
    /// Polls read readiness without a stored future; the waker is kept by the transport.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Polls write readiness without a stored future; the waker is kept by the transport.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Waits until a read may make progress (by default: polls `poll_read_ready`).
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::poll_fn(move |cx| self.poll_read_ready(cx))
    }
    /// Waits until a write may make progress (by default: polls `poll_write_ready`).
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::poll_fn(move |cx| self.poll_write_ready(cx))
    }
    /// Reads what is available without waiting; `WouldBlock` when nothing is.
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize>;
    /// Writes what fits without waiting; `WouldBlock` when nothing does.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Closes the write direction (TCP FIN) while reads continue.
    fn shutdown_write(&self) -> io::Result<()>;
    /// True while bytes accepted by `try_write` still wait for the socket (TLS records,
    /// WebSocket frames). The connection task then polls write readiness, and
    /// `poll_write_ready` pushes them out; it returns `Ready` only once they are gone.
    fn has_pending_output(&self) -> bool {
        false
    }
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

impl PeerCertificate {
    /// Returns the identity `source` names: the common name, or the first subject alternative
    /// name.
    pub fn identity(&self, source: CertIdentitySource) -> Option<&str> {
        match source {
            CertIdentitySource::CommonName => self.common_name.as_deref(),
            CertIdentitySource::SubjectAltName => {
                self.subject_alt_names.first().map(String::as_str)
            }
        }
    }
}

/// Which part of a verified client certificate names the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertIdentitySource {
    /// The subject common name (CN).
    #[default]
    CommonName,
    /// The first subject alternative name.
    SubjectAltName,
}

/// How a listener uses the identity of a verified client certificate (mutual TLS); set with
/// `Broker::set_listener_cert_identity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CertIdentityPolicy {
    /// Where the identity comes from.
    pub source: CertIdentitySource,
    /// The identity is the client's user name: authentication takes it instead of the CONNECT
    /// user name and needs no password.
    pub as_username: bool,
    /// The client id must equal the identity; an empty client id is given the identity.
    pub as_client_id: bool,
}

impl CertIdentityPolicy {
    /// Returns the user name a connection authenticates as when the listener takes it from
    /// the certificate (`cert_identity = "username"` or `"both"`): the CONNECT user name is then
    /// ignored and no password is needed. `None` when the listener does not, or when the client
    /// presented no certificate with the identity field (then the CONNECT credentials apply).
    pub fn username<'a>(&self, peer: Option<&'a PeerCertificate>) -> Option<&'a str> {
        if !self.as_username {
            return None;
        }
        peer?.identity(self.source)
    }

    /// Returns the identity of `peer` under this policy when the policy uses it at all.
    pub fn identity<'a>(&self, peer: Option<&'a PeerCertificate>) -> Option<&'a str> {
        if !(self.as_username || self.as_client_id) {
            return None;
        }
        peer?.identity(self.source)
    }
}

/// Why a CONNECT is refused under a listener's [`CertIdentityPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertIdentityRefusal {
    /// The listener binds the client id to the certificate, and the client presented none (or
    /// one without the identity field).
    NoIdentity,
    /// The CONNECT names a client id other than the certificate's identity.
    ClientIdMismatch,
}

impl CertIdentityRefusal {
    /// Returns the CONNACK reason code.
    pub fn reason_code(self) -> ReasonCode {
        match self {
            CertIdentityRefusal::NoIdentity => ReasonCode::NotAuthorized,
            CertIdentityRefusal::ClientIdMismatch => ReasonCode::ClientIdentifierNotValid,
        }
    }

    /// Returns the reason string.
    pub fn reason(self) -> &'static str {
        match self {
            CertIdentityRefusal::NoIdentity => "a client certificate with an identity is required",
            CertIdentityRefusal::ClientIdMismatch => {
                "client identifier must match the certificate identity"
            }
        }
    }
}

impl CertIdentityPolicy {
    /// Decides the client id of a CONNECT asking for `requested` (empty: none): `Ok(None)`
    /// when this policy does not bind client ids, `Ok(Some(identity))` when the identity is
    /// the client id.
    ///
    /// # Errors
    /// Refuses a connection without an identity, or with another non-empty client id.
    pub fn client_id<'a>(
        &self,
        peer: Option<&'a PeerCertificate>,
        requested: &str,
    ) -> Result<Option<&'a str>, CertIdentityRefusal> {
        if !self.as_client_id {
            return Ok(None);
        }
        let Some(identity) = peer.and_then(|peer| peer.identity(self.source)) else {
            return Err(CertIdentityRefusal::NoIdentity);
        };
        if !(requested.is_empty() || requested == identity) {
            return Err(CertIdentityRefusal::ClientIdMismatch);
        }
        Ok(Some(identity))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerCertificate {
        PeerCertificate {
            common_name: Some("device-7".to_string()),
            subject_alt_names: vec!["device-7.example.com".to_string()],
            serial_hex: "0a".to_string(),
        }
    }

    #[test]
    fn client_id_policy_binds_assigns_and_refuses() {
        let none = CertIdentityPolicy::default();
        assert_eq!(none.client_id(Some(&peer()), "other"), Ok(None));
        assert_eq!(none.identity(Some(&peer())), None);

        let by_cn = CertIdentityPolicy {
            as_client_id: true,
            ..CertIdentityPolicy::default()
        };
        let peer = peer();
        assert_eq!(by_cn.client_id(Some(&peer), ""), Ok(Some("device-7")));
        assert_eq!(
            by_cn.client_id(Some(&peer), "device-7"),
            Ok(Some("device-7"))
        );
        assert_eq!(
            by_cn.client_id(Some(&peer), "device-8"),
            Err(CertIdentityRefusal::ClientIdMismatch)
        );
        assert_eq!(
            by_cn.client_id(None, "device-7"),
            Err(CertIdentityRefusal::NoIdentity)
        );

        let by_san = CertIdentityPolicy {
            source: CertIdentitySource::SubjectAltName,
            as_username: true,
            as_client_id: false,
        };
        assert_eq!(by_san.identity(Some(&peer)), Some("device-7.example.com"));
        assert_eq!(by_san.username(Some(&peer)), Some("device-7.example.com"));
        assert_eq!(by_san.username(None), None);
        assert_eq!(by_cn.username(Some(&peer)), None, "client id only");
        assert_eq!(by_san.client_id(Some(&peer), "x"), Ok(None));
    }
}

/// A client's address in 16 bytes instead of `SocketAddr`'s 32 (kept for every connection, in
/// its state and in the registry): IPv4 inline, IPv6 boxed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAddr {
    /// An IPv4 peer.
    V4(std::net::SocketAddrV4),
    /// An IPv6 peer.
    V6(Box<std::net::SocketAddrV6>),
}

impl From<std::net::SocketAddr> for PeerAddr {
    fn from(addr: std::net::SocketAddr) -> PeerAddr {
        match addr {
            std::net::SocketAddr::V4(addr) => PeerAddr::V4(addr),
            std::net::SocketAddr::V6(addr) => PeerAddr::V6(Box::new(addr)),
        }
    }
}

impl PeerAddr {
    /// The address as a `SocketAddr`.
    pub fn to_socket_addr(&self) -> std::net::SocketAddr {
        match self {
            PeerAddr::V4(addr) => std::net::SocketAddr::V4(*addr),
            PeerAddr::V6(addr) => std::net::SocketAddr::V6(**addr),
        }
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerAddr::V4(addr) => addr.fmt(f),
            PeerAddr::V6(addr) => addr.fmt(f),
        }
    }
}
