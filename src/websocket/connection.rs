//! One WebSocket connection after the upgrade, served by a single task: it reads client
//! frames and hands complete messages to the [`Session`], drains the outbox to the socket,
//! keeps the connection alive, and closes it when asked. Publishers only ever see the outbox.
//!
//! One task instead of a reader and a writer: every step below is cancel-safe (the frame
//! reader keeps its state in itself, the outbox is drained synchronously, the keep-alive
//! timer is one pinned `Sleep` reset in place), so a `select!` can wait on all of them, and
//! an idle connection costs one task. While a write waits on a full socket the connection
//! does not read; its own client is the only one that can notice.
//!
//! Frames are read by [`FrameReader`], which holds no buffer while the socket is idle.
//! Control frames are answered through the outbox so that every byte written to the socket
//! comes from one place, in order. Fragments are reassembled here, under the same size limit
//! as whole messages.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::frame_reader::{Frame, FrameError, FrameReader, OpCode};
use super::keepalive::{Action, Keepalive, KeepaliveSettings};
use super::session::Session;
use super::socket_writer::write_frames;
use crate::apps::ConnectionSlot;
use crate::channels::outbox::Drained;
use crate::channels::{CloseRequest, Outbox};
use crate::protocol::codes;
use crate::protocol::encode;
use crate::protocol::socket_id::SocketId;

/// What a connection needs from the server.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    pub keepalive: KeepaliveSettings,
    pub write_timeout: Duration,
    pub max_message_bytes: usize,
    pub outbox_limit_bytes: usize,
}

/// Serves an accepted connection until it closes.
pub async fn run(
    mut stream: TcpStream,
    early_bytes: Bytes,
    slot: ConnectionSlot,
    socket_id: SocketId,
    settings: Arc<ConnectionSettings>,
    mut shutdown: watch::Receiver<bool>,
) {
    let outbox = Arc::new(Outbox::new(settings.outbox_limit_bytes));
    let app = slot.app().clone();
    let mut session = Session::new(app.clone(), socket_id, outbox.clone());
    session.greet(settings.keepalive.activity_timeout);
    let (mut read_half, mut write_half) = stream.split();
    let mut reader = FrameReader::new(early_bytes, settings.max_message_bytes);
    let mut message: Option<Vec<u8>> = None;

    let mut heard = Instant::now();
    let mut keepalive = Keepalive::new(settings.keepalive);
    let mut keepalive_at = Instant::from_std(keepalive.first_check(heard.into_std()));
    // "Authorized connections": without a sign-in (or a private or presence subscription)
    // by this deadline the connection is closed with 4009. It shares the keep-alive timer.
    let mut signin_deadline = app
        .config
        .require_signin
        .then(|| Instant::now() + app.config.signin_timeout);
    let timer = sleep_until(next_wake(keepalive_at, signin_deadline));
    tokio::pin!(timer);

    let mut shutting_down = *shutdown.borrow();
    if shutting_down {
        outbox.close(shutdown_request());
    }

    loop {
        tokio::select! {
            drained = outbox.drained() => match drained {
                Drained::Frames(frames) => {
                    if write_frames(&mut write_half, frames, settings.write_timeout).await.is_err() {
                        break;
                    }
                }
                Drained::Close(frames, request) => {
                    // Leave the channels first: a stalled peer may hold the final write for
                    // up to the write timeout, and nobody should count it meanwhile.
                    session.leave_all();
                    finish(&mut write_half, frames, request, settings.write_timeout).await;
                    break;
                }
            },
            frame = reader.next(&mut read_half) => {
                heard = Instant::now();
                match frame {
                    Ok(frame) => on_frame(frame, &mut message, &mut session, &outbox, settings.max_message_bytes),
                    Err(e) => close_for_error(&outbox, e, settings.max_message_bytes),
                }
            }
            () = &mut timer => {
                let now = Instant::now();
                if signin_deadline.is_some_and(|d| now >= d) {
                    signin_deadline = None;
                    if !session.is_authorized() {
                        outbox.close(CloseRequest {
                            code: Some(codes::UNAUTHORIZED),
                            reason: "Connection not authorized within timeout: sign in first".to_string(),
                            announce: true,
                        });
                    }
                }
                if now >= keepalive_at {
                    match keepalive.check(heard.into_std(), now.into_std()) {
                        Action::WaitUntil(at) => keepalive_at = Instant::from_std(at),
                        Action::Ping(at) => {
                            keepalive_at = Instant::from_std(at);
                            let ping = VecDeque::from([encode::ping_frame()]);
                            if write_frames(&mut write_half, ping, settings.write_timeout).await.is_err() {
                                break;
                            }
                        }
                        Action::Close => outbox.close(CloseRequest {
                            code: Some(codes::PONG_NOT_RECEIVED),
                            reason: "Pong reply not received in time".to_string(),
                            announce: true,
                        }),
                    }
                }
                timer.as_mut().reset(next_wake(keepalive_at, signin_deadline));
            }
            changed = shutdown.changed(), if !shutting_down => {
                if changed.is_err() || *shutdown.borrow() {
                    shutting_down = true;
                    outbox.close(shutdown_request());
                }
            }
        }
    }
    session.leave_all();
    drop(slot);
}

/// The earlier of the keep-alive check and the sign-in deadline.
fn next_wake(keepalive_at: Instant, signin_deadline: Option<Instant>) -> Instant {
    signin_deadline.map_or(keepalive_at, |d| d.min(keepalive_at))
}

fn shutdown_request() -> CloseRequest {
    CloseRequest {
        code: Some(codes::RECONNECT_NOW),
        reason: "Server is shutting down; reconnect shortly".to_string(),
        announce: true,
    }
}

/// Writes what was queued, then (unless the peer is gone) `pusher:error` and the close frame.
async fn finish(
    socket: &mut tokio::net::tcp::WriteHalf<'_>,
    mut frames: VecDeque<Bytes>,
    request: CloseRequest,
    write_timeout: Duration,
) {
    if let Some(code) = request.code {
        if request.announce {
            frames.push_back(encode::error_frame(Some(code), &request.reason));
        }
        frames.push_back(encode::close_frame(code, &request.reason));
        let _ = write_frames(socket, frames, write_timeout).await;
    }
    let _ = tokio::time::timeout(write_timeout, socket.shutdown()).await;
}

/// Applies one frame: messages go to the session, control frames are answered.
fn on_frame(
    frame: Frame,
    message: &mut Option<Vec<u8>>,
    session: &mut Session,
    outbox: &Outbox,
    limit: usize,
) {
    match frame.opcode {
        OpCode::Text | OpCode::Binary if frame.fin && message.is_none() => {
            handle_message(session, outbox, &frame.payload);
        }
        OpCode::Text | OpCode::Binary if message.is_none() => {
            *message = Some(frame.payload.to_vec());
        }
        OpCode::Continuation if message.is_some() => {
            let Some(buf) = message.as_mut() else {
                return;
            };
            if buf.len() + frame.payload.len() > limit {
                *message = None;
                return too_big(outbox, limit);
            }
            buf.extend_from_slice(&frame.payload);
            if frame.fin {
                let whole = message.take().unwrap_or_default();
                handle_message(session, outbox, &whole);
            }
        }
        OpCode::Text | OpCode::Binary | OpCode::Continuation => outbox.close(CloseRequest {
            code: Some(codes::PROTOCOL_ERROR),
            reason: "Unexpected continuation or interleaved message".to_string(),
            announce: false,
        }),
        OpCode::Ping => {
            outbox.push(encode::pong_frame(&frame.payload));
        }
        OpCode::Pong => {}
        OpCode::Close => outbox.close(CloseRequest {
            code: Some(codes::NORMAL_CLOSURE),
            reason: String::new(),
            announce: false,
        }),
    }
}

/// Hands a complete message to the session; invalid UTF-8 closes the connection with 1007.
fn handle_message(session: &mut Session, outbox: &Outbox, payload: &[u8]) {
    match std::str::from_utf8(payload) {
        Ok(text) => session.handle_text(text),
        Err(_) => outbox.close(CloseRequest {
            code: Some(codes::INVALID_PAYLOAD),
            reason: "Message is not valid UTF-8".to_string(),
            announce: false,
        }),
    }
}

fn too_big(outbox: &Outbox, limit: usize) {
    outbox.close(CloseRequest {
        code: Some(codes::MESSAGE_TOO_BIG),
        reason: format!("Message larger than the limit of {limit} bytes"),
        announce: true,
    });
}

fn close_for_error(outbox: &Outbox, error: FrameError, limit: usize) {
    let (code, reason) = match error {
        FrameError::TooLarge => return too_big(outbox, limit),
        FrameError::Closed => (None, "Connection lost"),
        FrameError::Protocol(reason) => (Some(codes::PROTOCOL_ERROR), reason),
    };
    outbox.close(CloseRequest {
        code,
        reason: reason.to_string(),
        announce: false,
    });
}
