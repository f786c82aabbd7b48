//! MQTT over WebSocket: a [`Transport`] that carries the MQTT byte stream in binary frames over
//! another transport (TCP for `ws`, TLS for `wss`), after the HTTP upgrade in `upgrade`.
//!
//! Incoming frames are unmasked straight into the connection's read buffer (a packet may span
//! frames and a frame may hold several packets); each write becomes one binary frame. Pings are
//! answered, a close frame is answered and ends the stream. Like the TLS transport it holds no
//! buffer while idle and pushes out frames the inner transport did not take yet from both
//! readiness polls.

mod frame;
mod upgrade;

use std::{
    io,
    task::{ready, Context, Poll},
};

use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use starling_core::transport::{PeerCertificate, Transport};

pub(crate) use upgrade::{accept, UpgradeError};

use self::frame::{Control, FrameDecoder};

/// Largest payload of one frame the broker sends.
const MAX_PAYLOAD_PER_WRITE: usize = 16 * 1024;

/// Bytes read from the inner transport at least per read.
const MIN_READ_BYTES: usize = 4 * 1024;

/// A WebSocket server connection over `T`.
pub(crate) struct WsTransport<T: Transport> {
    inner: T,
    state: Mutex<WsState>,
}

struct WsState {
    /// Frame bytes read and not yet decoded (a partial header or control frame); freed when
    /// empty.
    input: BytesMut,
    /// Frames the inner transport has not taken yet; freed when empty.
    output: BytesMut,
    decoder: FrameDecoder,
    /// The client sent a close frame, or the inner stream ended.
    read_closed: bool,
    /// The broker's close frame is queued: nothing more may be written.
    close_sent: bool,
    /// Close the inner write direction once `output` is empty.
    shutdown_pending: bool,
}

impl<T: Transport> WsTransport<T> {
    /// Wraps `inner` after the upgrade; `leftover` holds frame bytes that arrived with the
    /// HTTP request.
    fn new(inner: T, leftover: BytesMut) -> WsTransport<T> {
        WsTransport {
            inner,
            state: Mutex::new(WsState {
                input: leftover,
                output: BytesMut::new(),
                decoder: FrameDecoder::new(),
                read_closed: false,
                close_sent: false,
                shutdown_pending: false,
            }),
        }
    }
}

impl WsState {
    /// Writes queued frames to `inner` without waiting; true once none remain (then a pending
    /// shutdown is passed on).
    fn try_flush<T: Transport>(&mut self, inner: &T) -> io::Result<bool> {
        while !self.output.is_empty() {
            match inner.try_write(&self.output) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(num_bytes) => self.output.advance(num_bytes),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) => return Err(error),
            }
        }
        if self.output.capacity() > 0 {
            self.output = BytesMut::new();
        }
        if std::mem::take(&mut self.shutdown_pending) {
            inner.shutdown_write()?;
        }
        Ok(true)
    }

    fn poll_flush<T: Transport>(
        &mut self,
        inner: &T,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.try_flush(inner)? {
                return Poll::Ready(Ok(()));
            }
            ready!(inner.poll_write_ready(cx))?;
        }
    }

    fn queue_close(&mut self, code: u16) {
        if !std::mem::replace(&mut self.close_sent, true) {
            frame::encode_close(code, &mut self.output);
        }
    }

    /// Decodes the buffered frames onto `out`, answering control frames.
    fn decode(&mut self, out: &mut BytesMut) -> io::Result<()> {
        while !self.read_closed {
            match self.decoder.decode(&mut self.input, out) {
                Ok(None) => break,
                Ok(Some(Control::Ping(payload))) => {
                    if !self.close_sent {
                        frame::encode_pong(&payload, &mut self.output);
                    }
                }
                Ok(Some(Control::Pong)) => {}
                Ok(Some(Control::Close(code))) => {
                    self.read_closed = true;
                    self.queue_close(code.unwrap_or(frame::CLOSE_NORMAL));
                }
                Err(error) => {
                    self.read_closed = true;
                    self.queue_close(error.close_code());
                    return Err(io::Error::new(io::ErrorKind::InvalidData, error));
                }
            }
        }
        if self.input.is_empty() && self.input.capacity() > 0 {
            self.input = BytesMut::new();
        }
        Ok(())
    }
}

impl<T: Transport> Drop for WsTransport<T> {
    /// Sends a close frame if the connection task did not (the client vanished or the
    /// connection failed): best effort, without waiting.
    fn drop(&mut self) {
        let state = self.state.get_mut();
        state.queue_close(frame::CLOSE_NORMAL);
        let _ = state.try_flush(&self.inner);
    }
}

impl<T: Transport> Transport for WsTransport<T> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.state.lock();
        if let Poll::Ready(Err(error)) = state.poll_flush(&self.inner, cx) {
            return Poll::Ready(Err(error));
        }
        if state.read_closed || state.decoder.can_progress(&state.input) {
            return Poll::Ready(Ok(()));
        }
        drop(state);
        self.inner.poll_read_ready(cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.state.lock().poll_flush(&self.inner, cx))?;
        if self.inner.has_pending_output() {
            return self.inner.poll_write_ready(cx);
        }
        Poll::Ready(Ok(()))
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        state.try_flush(&self.inner)?;
        let before = buf.len();
        loop {
            let decoded = state.decode(buf);
            if !state.output.is_empty() {
                // Pongs and close frames go out at once; a failure to send them is moot.
                let _ = state.try_flush(&self.inner);
            }
            decoded?;
            let num_bytes = buf.len() - before;
            if num_bytes > 0 {
                return Ok(num_bytes);
            }
            if state.read_closed {
                return Ok(0);
            }
            state.input.reserve(MIN_READ_BYTES);
            match self.inner.try_read_buf(&mut state.input) {
                Ok(0) => {
                    state.read_closed = true;
                    return Ok(0);
                }
                Ok(_) => {}
                Err(error) => {
                    if state.input.is_empty() {
                        state.input = BytesMut::new();
                    }
                    return Err(error);
                }
            }
        }
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if !state.try_flush(&self.inner)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if state.close_sent {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let chunk = &buf[..buf.len().min(MAX_PAYLOAD_PER_WRITE)];
        frame::encode_binary(chunk, &mut state.output);
        state.try_flush(&self.inner)?;
        Ok(chunk.len())
    }

    fn shutdown_write(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        state.queue_close(frame::CLOSE_NORMAL);
        state.shutdown_pending = true;
        state.try_flush(&self.inner).map(|_| ())
    }

    fn has_pending_output(&self) -> bool {
        !self.state.lock().output.is_empty() || self.inner.has_pending_output()
    }

    fn peer_certificate(&self) -> Option<&PeerCertificate> {
        self.inner.peer_certificate()
    }
}
