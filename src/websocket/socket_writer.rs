//! Writes queued frames to the socket, several per syscall. The first attempt is a
//! non-blocking vectored write with no timer; only when the socket is full does the write
//! wait, and then under `write_timeout` (a write that makes no progress for that long ends
//! the connection). Keeping the timer off the common path matters: a fan-out performs one
//! of these per recipient.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::AsyncWrite;
use tokio::net::tcp::WriteHalf;
use tokio::time::timeout;

const MAX_IOVECS: usize = 64;

/// Fills `slices` with up to `MAX_IOVECS` frames and returns how many.
fn gather<'a>(frames: &'a VecDeque<Bytes>, slices: &mut [IoSlice<'a>; MAX_IOVECS]) -> usize {
    let count = frames.len().min(MAX_IOVECS);
    for (slot, frame) in slices.iter_mut().zip(frames.iter()) {
        *slot = IoSlice::new(frame);
    }
    count
}

/// Drops `written` bytes from the front of `frames`.
fn consume(frames: &mut VecDeque<Bytes>, mut written: usize) {
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

/// Writes every frame in `frames`.
pub async fn write_frames(
    socket: &mut WriteHalf<'_>,
    mut frames: VecDeque<Bytes>,
    write_timeout: Duration,
) -> io::Result<()> {
    while !frames.is_empty() {
        let attempt = {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = gather(&frames, &mut slices);
            socket.try_write_vectored(&slices[..count])
        };
        let written = match attempt {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The iovec array is built inside each poll, so it is not part of this
                // future's state.
                let wait = std::future::poll_fn(|cx| {
                    let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                    let count = gather(&frames, &mut slices);
                    Pin::new(&mut *socket).poll_write_vectored(cx, &slices[..count])
                });
                match timeout(write_timeout, wait).await {
                    Ok(result) => result?,
                    Err(_) => {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out"));
                    }
                }
            }
            Err(e) => return Err(e),
        };
        if written == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "socket closed"));
        }
        consume(&mut frames, written);
    }
    Ok(())
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
