//! MQTT over TLS: a [`Transport`] over a TCP socket, driven by rustls's unbuffered (sans-IO)
//! server connection, and the handshake that precedes it.
//!
//! The transport owns its TLS buffers, so an idle connection holds none: ciphertext read from
//! the socket is kept only while it ends in a partial record, encrypted records only until the
//! socket takes them. Readiness follows the socket, with two additions: read readiness is also
//! `Ready` while decrypted bytes or a whole record wait in the transport, and records the socket
//! did not take yet are pushed out by both `poll_read_ready` and `poll_write_ready`
//! (`has_pending_output` tells the connection task to ask for write readiness).

mod files;
mod handshake;

use std::{
    io,
    task::{ready, Context, Poll},
};

use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use rustls::{
    server::{ServerConnectionData, UnbufferedServerConnection},
    unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError, WriteTraffic},
};
use starling_core::transport::{PeerCertificate, Transport};
use tokio::net::TcpStream;

pub(crate) use files::TlsFiles;
pub(crate) use handshake::{accept, HandshakeError};

/// Largest plaintext one `try_write` encrypts: one full TLS record, so at most about 16 KiB
/// of records wait for the socket per connection.
const MAX_PLAINTEXT_PER_WRITE: usize = 16 * 1024;

/// Bytes read from the socket at least per read.
const MIN_READ_BYTES: usize = 8 * 1024;

/// Header of a TLS record: type, version, 16-bit length.
const RECORD_HEADER_BYTES: usize = 5;

/// A TLS server connection over a TCP socket.
pub(crate) struct TlsTransport {
    tcp: TcpStream,
    /// Boxed so that the transport, which the connection task holds by value, stays small.
    state: Box<Mutex<TlsState>>,
    /// The verified client certificate (mutual TLS); fixed after the handshake.
    peer_certificate: Option<Box<PeerCertificate>>,
}

struct TlsState {
    conn: UnbufferedServerConnection,
    /// Ciphertext read and not yet processed (a partial record); freed when empty.
    incoming: Vec<u8>,
    /// Records the socket has not taken yet; freed when empty.
    outgoing: BytesMut,
    /// Plaintext decrypted outside a read (during the handshake or a write), handed out by the
    /// next read.
    plaintext: BytesMut,
    /// The peer sent close_notify, or the socket reached EOF.
    read_closed: bool,
    /// close_notify is queued: nothing more may be written.
    close_notify_queued: bool,
    /// Send FIN once `outgoing` is empty.
    shutdown_pending: bool,
}

/// How [`TlsState::process`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Processed {
    /// Every whole record is handled and application data may be written.
    Ready,
    /// The handshake needs more bytes from the peer.
    NeedInput,
    /// Both sides sent close_notify.
    Closed,
}

fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

fn would_block() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

impl TlsState {
    fn new(conn: UnbufferedServerConnection) -> TlsState {
        TlsState {
            conn,
            incoming: Vec::new(),
            outgoing: BytesMut::new(),
            plaintext: BytesMut::new(),
            read_closed: false,
            close_notify_queued: false,
            shutdown_pending: false,
        }
    }

    /// Runs rustls over the buffered ciphertext: decrypted data goes to `sink`, handshake and
    /// alert records to `outgoing`; once application data may be sent, `encrypt` is encrypted
    /// and, with `close_notify`, the closing alert is queued.
    ///
    /// On a TLS error the alert rustls prepared is queued before the error is returned.
    fn process(
        &mut self,
        sink: &mut BytesMut,
        mut encrypt: Option<&[u8]>,
        mut close_notify: bool,
    ) -> Result<Processed, rustls::Error> {
        loop {
            let status = self.conn.process_tls_records(&mut self.incoming);
            let mut discard = status.discard;
            let outcome = match status.state {
                Err(error) => Err(error),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    let mut outcome = Ok(None);
                    while let Some(record) = traffic.next_record() {
                        match record {
                            Ok(record) => {
                                discard += record.discard;
                                sink.extend_from_slice(record.payload);
                            }
                            Err(error) => {
                                outcome = Err(error);
                                break;
                            }
                        }
                    }
                    outcome
                }
                Ok(ConnectionState::ReadEarlyData(mut early)) => {
                    // Early data is not enabled; should a client send it anyway, it is data.
                    while let Some(Ok(record)) = early.next_record() {
                        discard += record.discard;
                        sink.extend_from_slice(record.payload);
                    }
                    Ok(None)
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    encode_into(&mut self.outgoing, |buf| data.encode(buf));
                    Ok(None)
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    // `outgoing` keeps the records in order until the socket takes them.
                    transmit.done();
                    Ok(None)
                }
                Ok(ConnectionState::BlockedHandshake) => Ok(Some(Processed::NeedInput)),
                Ok(ConnectionState::PeerClosed) => {
                    self.read_closed = true;
                    Ok(None)
                }
                Ok(ConnectionState::Closed) => {
                    self.read_closed = true;
                    Ok(Some(Processed::Closed))
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    let mut outcome = Ok(Some(Processed::Ready));
                    if let Some(data) = encrypt.take() {
                        if let Err(error) = encrypt_into(&mut self.outgoing, data, &mut traffic) {
                            outcome = Err(error);
                        }
                    }
                    if std::mem::take(&mut close_notify) {
                        encrypt_close_notify(&mut self.outgoing, &mut traffic);
                    }
                    outcome
                }
                Ok(_) => Err(rustls::Error::General("unexpected TLS state".to_string())),
            };
            self.incoming.drain(..discard);
            match outcome {
                Ok(None) => {}
                Ok(Some(processed)) => {
                    self.release_incoming();
                    return Ok(processed);
                }
                Err(error) => {
                    self.queue_alert();
                    self.release_incoming();
                    return Err(error);
                }
            }
        }
    }

    /// Queues the alert rustls prepared after an error (best effort; a few steps at most).
    fn queue_alert(&mut self) {
        for _ in 0..4 {
            let status = self.conn.process_tls_records(&mut self.incoming);
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    encode_into(&mut self.outgoing, |buf| data.encode(buf));
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                _ => return,
            }
        }
    }

    fn release_incoming(&mut self) {
        if self.incoming.is_empty() && self.incoming.capacity() > 0 {
            self.incoming = Vec::new();
        }
    }

    /// True while a read can make progress without the socket.
    fn has_buffered_input(&self) -> bool {
        !self.plaintext.is_empty() || self.read_closed || self.has_whole_record()
    }

    fn has_whole_record(&self) -> bool {
        let Some(header) = self.incoming.get(..RECORD_HEADER_BYTES) else {
            return false;
        };
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        self.incoming.len() >= RECORD_HEADER_BYTES + length
    }

    /// Bytes to make room for before reading the socket: the rest of a partial record, or
    /// [`MIN_READ_BYTES`].
    fn read_size(&self) -> usize {
        let rest_of_record = match self.incoming.get(..RECORD_HEADER_BYTES) {
            Some(header) => {
                let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
                (RECORD_HEADER_BYTES + length).saturating_sub(self.incoming.len())
            }
            None => 0,
        };
        rest_of_record.max(MIN_READ_BYTES)
    }

    /// Reads the socket into `incoming` without waiting; `Ok(0)` at EOF.
    fn read_socket(&mut self, tcp: &TcpStream) -> io::Result<usize> {
        self.incoming.reserve(self.read_size());
        let result = tcp.try_read_buf(&mut self.incoming);
        if !matches!(result, Ok(n) if n > 0) {
            self.release_incoming();
        }
        result
    }

    /// Writes queued records without waiting; true once none remain (then a pending FIN is
    /// sent).
    fn try_flush(&mut self, tcp: &TcpStream) -> io::Result<bool> {
        while !self.outgoing.is_empty() {
            match tcp.try_write(&self.outgoing) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(num_bytes) => self.outgoing.advance(num_bytes),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) => return Err(error),
            }
        }
        if self.outgoing.capacity() > 0 {
            self.outgoing = BytesMut::new();
        }
        if std::mem::take(&mut self.shutdown_pending) {
            socket_shutdown_write(tcp)?;
        }
        Ok(true)
    }

    /// Writes queued records, registering for write readiness while the socket is full.
    fn poll_flush(&mut self, tcp: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.try_flush(tcp)? {
                return Poll::Ready(Ok(()));
            }
            ready!(tcp.poll_write_ready(cx))?;
        }
    }
}

fn socket_shutdown_write(tcp: &TcpStream) -> io::Result<()> {
    match Transport::shutdown_write(tcp) {
        // The peer may have closed first.
        Err(error) if error.kind() == io::ErrorKind::NotConnected => Ok(()),
        result => result,
    }
}

/// Appends what `encode` writes to `outgoing`, growing it to the size rustls asks for.
fn encode_into(
    outgoing: &mut BytesMut,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) {
    let start = outgoing.len();
    let mut room = 1024;
    loop {
        outgoing.resize(start + room, 0);
        match encode(&mut outgoing[start..]) {
            Ok(num_bytes) => {
                outgoing.truncate(start + num_bytes);
                return;
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                room = required_size;
            }
            Err(EncodeError::AlreadyEncoded) => {
                outgoing.truncate(start);
                return;
            }
        }
    }
}

fn encrypt_into(
    outgoing: &mut BytesMut,
    data: &[u8],
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
) -> Result<(), rustls::Error> {
    let start = outgoing.len();
    // Per record: 5 bytes of header, a content type byte and a 16-byte tag (TLS 1.3), or an
    // explicit nonce and a tag (TLS 1.2).
    let mut room = data.len() + 64 * (data.len() / MAX_PLAINTEXT_PER_WRITE + 1);
    loop {
        outgoing.resize(start + room, 0);
        match traffic.encrypt(data, &mut outgoing[start..]) {
            Ok(num_bytes) => {
                outgoing.truncate(start + num_bytes);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                room = required_size;
            }
            Err(error) => {
                outgoing.truncate(start);
                return Err(rustls::Error::General(error.to_string()));
            }
        }
    }
}

fn encrypt_close_notify(
    outgoing: &mut BytesMut,
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
) {
    let start = outgoing.len();
    let mut room = 64;
    loop {
        outgoing.resize(start + room, 0);
        match traffic.queue_close_notify(&mut outgoing[start..]) {
            Ok(num_bytes) => {
                outgoing.truncate(start + num_bytes);
                return;
            }
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                room = required_size;
            }
            Err(_) => {
                outgoing.truncate(start);
                return;
            }
        }
    }
}

impl TlsTransport {
    /// Returns the negotiated protocol version, for logs.
    pub(crate) fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.state.lock().conn.protocol_version()
    }
}

impl Drop for TlsTransport {
    /// Sends close_notify if the connection task did not (the peer closed first, or the
    /// connection failed): best effort, without waiting.
    fn drop(&mut self) {
        let state = self.state.get_mut();
        if state.close_notify_queued {
            return;
        }
        state.close_notify_queued = true;
        let mut plaintext = std::mem::take(&mut state.plaintext);
        if state.process(&mut plaintext, None, true).is_ok() {
            let _ = state.try_flush(&self.tcp);
        }
    }
}

impl Transport for TlsTransport {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.state.lock();
        if let Poll::Ready(Err(error)) = state.poll_flush(&self.tcp, cx) {
            return Poll::Ready(Err(error));
        }
        if state.has_buffered_input() {
            return Poll::Ready(Ok(()));
        }
        drop(state);
        self.tcp.poll_read_ready(cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.state.lock().poll_flush(&self.tcp, cx)
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        state.try_flush(&self.tcp)?;
        let before = buf.len();
        if !state.plaintext.is_empty() {
            buf.extend_from_slice(&state.plaintext);
            state.plaintext = BytesMut::new();
        }
        loop {
            if !state.read_closed {
                state.process(buf, None, false).map_err(tls_error)?;
                if !state.outgoing.is_empty() {
                    // A key update or alert in answer to what was read.
                    state.try_flush(&self.tcp)?;
                }
            }
            let num_bytes = buf.len() - before;
            if num_bytes > 0 {
                return Ok(num_bytes);
            }
            if state.read_closed {
                return Ok(0);
            }
            match state.read_socket(&self.tcp) {
                Ok(0) => {
                    // EOF without close_notify: the end of the stream all the same.
                    state.read_closed = true;
                    return Ok(0);
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if !state.try_flush(&self.tcp)? {
            return Err(would_block());
        }
        if state.close_notify_queued {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let chunk = &buf[..buf.len().min(MAX_PLAINTEXT_PER_WRITE)];
        let mut plaintext = std::mem::take(&mut state.plaintext);
        let processed = state.process(&mut plaintext, Some(chunk), false);
        state.plaintext = plaintext;
        if processed.map_err(tls_error)? != Processed::Ready {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        state.try_flush(&self.tcp)?;
        Ok(chunk.len())
    }

    fn shutdown_write(&self) -> io::Result<()> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if !state.close_notify_queued {
            state.close_notify_queued = true;
            let mut plaintext = std::mem::take(&mut state.plaintext);
            // A failed connection has nothing left to close cleanly; FIN follows regardless.
            let _ = state.process(&mut plaintext, None, true);
            state.plaintext = plaintext;
        }
        state.shutdown_pending = true;
        state.try_flush(&self.tcp).map(|_| ())
    }

    fn has_pending_output(&self) -> bool {
        !self.state.lock().outgoing.is_empty()
    }

    fn peer_certificate(&self) -> Option<&PeerCertificate> {
        self.peer_certificate.as_deref()
    }
}
