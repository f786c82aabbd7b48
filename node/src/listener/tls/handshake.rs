//! The server side of a TLS handshake over a freshly accepted socket, driving the same
//! unbuffered rustls connection the transport then takes over.

use std::{io, sync::Arc};

use parking_lot::Mutex;
use rustls::{server::UnbufferedServerConnection, ServerConfig};
use tokio::net::TcpStream;

use super::{Processed, TlsState, TlsTransport};

/// Why a TLS handshake failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The peer's certificate was refused (unknown CA, expired, revoked, missing).
    #[error("client certificate refused: {0}")]
    ClientCertificate(rustls::Error),
    /// Another TLS error.
    #[error("tls: {0}")]
    Tls(rustls::Error),
    /// The socket failed or closed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl From<rustls::Error> for HandshakeError {
    fn from(error: rustls::Error) -> HandshakeError {
        match error {
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                HandshakeError::ClientCertificate(error)
            }
            error => HandshakeError::Tls(error),
        }
    }
}

/// Runs the server side of a TLS handshake on `tcp` with `config` (no timeout here: the
/// listener bounds it).
///
/// # Errors
/// Returns the TLS error (after sending its alert) or the socket error.
pub(crate) async fn accept(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
) -> Result<TlsTransport, HandshakeError> {
    let mut state = TlsState::new(UnbufferedServerConnection::new(config)?);
    loop {
        let mut plaintext = std::mem::take(&mut state.plaintext);
        let processed = state.process(&mut plaintext, None, false);
        state.plaintext = plaintext;
        // Send what the step produced, the alert of a failure included.
        while !state.try_flush(&tcp)? {
            tcp.writable().await?;
        }
        match processed? {
            Processed::Ready if !state.conn.is_handshaking() => break,
            Processed::Closed => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Processed::Ready | Processed::NeedInput => {
                if state.read_closed {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                }
                tcp.readable().await?;
                match state.read_socket(&tcp) {
                    Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
    }
    let peer_certificate = state
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| crate::listener::identity::peer_certificate(leaf.as_ref()))
        .map(Box::new);
    Ok(TlsTransport {
        tcp,
        state: Box::new(Mutex::new(state)),
        peer_certificate,
    })
}
