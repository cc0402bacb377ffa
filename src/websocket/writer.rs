//! The writing half of a connection: drains the outbox to the socket, keeps the connection
//! alive, and closes it when asked (overflow, shutdown, a protocol error, the peer leaving).
//!
//! Frames arrive pre-encoded; a batch goes out as vectored writes of up to 64 frames, so a
//! burst costs one syscall instead of one per frame. Each write that makes no progress for
//! `write_timeout` ends the connection.
//!
//! Keep-alive: once the client has been silent for `activity_timeout` (the reader stamps
//! every frame it receives), the writer sends a WebSocket ping; if nothing at all arrives
//! within `pong_timeout` after it, it closes with 4201 (pusher-js then reconnects at once).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};

use crate::channels::CloseRequest;
use crate::channels::outbox::{Drained, Outbox};
use crate::protocol::codes;
use crate::protocol::encode;

const MAX_IOVECS: usize = 64;

#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    pub activity_timeout: Duration,
    pub pong_timeout: Duration,
    pub write_timeout: Duration,
}

/// Runs until the connection is closed; returns when the socket's write side is done.
pub async fn run(
    mut socket: OwnedWriteHalf,
    outbox: Arc<Outbox>,
    settings: WriterSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    // Set while a ping is unanswered: when it was sent.
    let mut pinged_at: Option<Instant> = None;
    let mut next_check = Instant::now() + settings.activity_timeout;
    let mut shutting_down = *shutdown.borrow();
    if shutting_down {
        outbox.close(shutdown_request());
    }
    loop {
        tokio::select! {
            drained = outbox.drained() => match drained {
                Drained::Frames(frames) => {
                    if write_frames(&mut socket, frames, settings.write_timeout).await.is_err() {
                        return;
                    }
                }
                Drained::Close(mut frames, request) => {
                    if let Some(code) = request.code {
                        if request.announce {
                            frames.push_back(encode::error_frame(Some(code), &request.reason));
                        }
                        frames.push_back(encode::close_frame(code, &request.reason));
                        let _ = write_frames(&mut socket, frames, settings.write_timeout).await;
                    }
                    let _ = timeout(settings.write_timeout, socket.shutdown()).await;
                    return;
                }
            },
            _ = sleep_until(next_check) => {
                let heard = Instant::from_std(outbox.last_activity());
                let now = Instant::now();
                match pinged_at {
                    // `heard` has millisecond precision: a reply within the ping's millisecond counts.
                    Some(sent) if heard + Duration::from_millis(1) > sent => {
                        pinged_at = None;
                        next_check = heard + settings.activity_timeout;
                    }
                    Some(_) => {
                        outbox.close(CloseRequest {
                            code: Some(codes::PONG_NOT_RECEIVED),
                            reason: "Pong reply not received in time".to_string(),
                            announce: true,
                        });
                    }
                    None if now >= heard + settings.activity_timeout => {
                        pinged_at = Some(now);
                        next_check = now + settings.pong_timeout;
                        let ping = VecDeque::from([encode::ping_frame()]);
                        if write_frames(&mut socket, ping, settings.write_timeout).await.is_err() {
                            return;
                        }
                    }
                    None => next_check = heard + settings.activity_timeout,
                }
            },
            changed = shutdown.changed(), if !shutting_down => {
                if changed.is_err() || *shutdown.borrow() {
                    shutting_down = true;
                    outbox.close(shutdown_request());
                }
            },
        }
    }
}

fn shutdown_request() -> CloseRequest {
    CloseRequest {
        code: Some(codes::RECONNECT_NOW),
        reason: "Server is shutting down; reconnect shortly".to_string(),
        announce: true,
    }
}

/// Writes every frame, several per syscall.
async fn write_frames(
    socket: &mut OwnedWriteHalf,
    mut frames: VecDeque<Bytes>,
    write_timeout: Duration,
) -> io::Result<()> {
    while !frames.is_empty() {
        // The iovec array is built inside the poll function, on the stack of each poll, so
        // it is not part of this future's state: an idle connection's writer stays small.
        let write = std::future::poll_fn(|cx| {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = frames.len().min(MAX_IOVECS);
            for (slot, frame) in slices.iter_mut().zip(frames.iter()) {
                *slot = IoSlice::new(frame);
            }
            Pin::new(&mut *socket).poll_write_vectored(cx, &slices[..count])
        });
        let written = match timeout(write_timeout, write).await {
            Ok(result) => result?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        };
        if written == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "socket closed"));
        }
        let mut left = written;
        while left > 0 {
            let Some(front) = frames.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                frames.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
    }
    Ok(())
}
