//! Writes queued frames to the socket, several per syscall: a non-blocking vectored write
//! first, and a wait for writability only when the socket is full. The caller arms its write
//! timeout only then, which keeps timers off the common path: a fan-out performs one of
//! these per recipient.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::net::TcpStream;

pub(super) const MAX_IOVECS: usize = 64;

/// Fills `slices` with up to `MAX_IOVECS` frames and returns how many.
pub(super) fn gather<'a>(
    frames: &'a VecDeque<Bytes>,
    slices: &mut [IoSlice<'a>; MAX_IOVECS],
) -> usize {
    let count = frames.len().min(MAX_IOVECS);
    for (slot, frame) in slices.iter_mut().zip(frames.iter()) {
        *slot = IoSlice::new(frame);
    }
    count
}

/// Drops `written` bytes from the front of `frames`.
pub(super) fn consume(frames: &mut VecDeque<Bytes>, mut written: usize) {
    while written > 0 {
        let Some(front) = frames.front_mut() else {
            return;
        };
        if front.len() <= written {
            written -= front.len();
            frames.pop_front();
        } else {
            front.advance(written);
            written = 0;
        }
    }
}

/// Writes frames from the front of `frames` until none is left or the socket is full; in
/// the second case `cx`'s waker is kept with the socket. Sets `progressed` when any byte
/// went out, which is what the caller's write timeout measures.
pub(crate) fn poll_write_frames(
    cx: &mut Context<'_>,
    socket: &TcpStream,
    frames: &mut VecDeque<Bytes>,
    progressed: &mut bool,
) -> Poll<io::Result<()>> {
    while !frames.is_empty() {
        // Always `writev`, even for one frame: it costs about what `send` does here, and
        // keeps every write visible in /proc/PID/io (`syscw` counts write and writev, not
        // send), which is how crier-bench reports frames per write.
        let attempt = {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = gather(frames, &mut slices);
            socket.try_write_vectored(&slices[..count])
        };
        match attempt {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(written) => {
                *progressed = true;
                consume(frames, written);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready!(socket.poll_write_ready(cx))?;
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    Poll::Ready(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_handles_partial_frames() {
        let mut f: VecDeque<Bytes> =
            VecDeque::from([Bytes::from_static(b"abc"), Bytes::from_static(b"de")]);
        consume(&mut f, 4);
        assert_eq!(f.len(), 1);
        assert_eq!(&f[0][..], b"e");
        consume(&mut f, 1);
        assert!(f.is_empty());
    }
}
