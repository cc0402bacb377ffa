//! What a WebSocket connection reads from and writes to: a plain TCP socket or a TLS
//! session over one. The connection task is generic over [`Transport`], so the plain path
//! stays the readiness-driven code it was (no buffer while idle, `writev` straight to the
//! socket) and pays nothing for TLS.
//!
//! TLS cannot wait for readability without a buffer, since rustls decrypts into its own and
//! then into the caller's; the caller's buffer is still given back whenever nothing partial
//! is left in it.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::socket_writer::{self, MAX_IOVECS, consume, gather};

pub(crate) trait Transport: AsyncWrite + Unpin + Send + 'static {
    /// Reads what is available into `buf`, first adding `grow` bytes of room if it is full;
    /// `Ok(0)` once the peer has closed. While nothing is available `buf` is left empty of
    /// any allocation if it held no bytes.
    fn poll_read_more(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        grow: usize,
    ) -> Poll<io::Result<usize>>;

    /// Writes frames from the front of `frames` until all are out (`Ready(Ok)`) or the
    /// socket is full (`Pending`, with `cx`'s waker kept). Sets `progressed` when any byte
    /// was taken.
    fn poll_write_frames(
        &mut self,
        cx: &mut Context<'_>,
        frames: &mut VecDeque<Bytes>,
        progressed: &mut bool,
    ) -> Poll<io::Result<()>>;
}

impl Transport for TcpStream {
    fn poll_read_more(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        grow: usize,
    ) -> Poll<io::Result<usize>> {
        loop {
            // Readiness first, so that an idle socket costs no buffer.
            ready!(self.poll_read_ready(cx))?;
            if buf.capacity() == buf.len() {
                buf.reserve(grow);
            }
            match self.try_read_buf(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if buf.is_empty() {
                        *buf = BytesMut::new();
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_write_frames(
        &mut self,
        cx: &mut Context<'_>,
        frames: &mut VecDeque<Bytes>,
        progressed: &mut bool,
    ) -> Poll<io::Result<()>> {
        socket_writer::poll_write_frames(cx, self, frames, progressed)
    }
}

impl Transport for TlsStream<TcpStream> {
    fn poll_read_more(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        grow: usize,
    ) -> Poll<io::Result<usize>> {
        if buf.capacity() == buf.len() {
            buf.reserve(grow);
        }
        // `read_buf` keeps no state of its own between polls, so a fresh one per poll is
        // the same as one kept across them.
        let read = std::pin::pin!(self.read_buf(buf)).poll(cx);
        if read.is_pending() && buf.is_empty() {
            *buf = BytesMut::new();
        }
        read
    }

    fn poll_write_frames(
        &mut self,
        cx: &mut Context<'_>,
        frames: &mut VecDeque<Bytes>,
        progressed: &mut bool,
    ) -> Poll<io::Result<()>> {
        while !frames.is_empty() {
            // rustls reports a write of nothing but empty slices as 0 bytes taken, which
            // would read as a dead socket below.
            if frames.iter().take(MAX_IOVECS).all(|f| f.is_empty()) {
                frames.drain(..frames.len().min(MAX_IOVECS));
                continue;
            }
            let written = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let count = gather(frames, &mut slices);
                ready!(Pin::new(&mut *self).poll_write_vectored(cx, &slices[..count]))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *progressed = true;
            consume(frames, written);
        }
        // rustls takes frames into its own buffer: they are out only once it is flushed.
        Pin::new(self).poll_flush(cx)
    }
}
