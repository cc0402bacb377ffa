//! One WebSocket connection after the upgrade. The task that runs [`run`] reads client
//! frames and hands complete messages to the [`Session`]; a second task (the writer) owns
//! the socket's write half and drains the outbox. Publishers only ever see the outbox.
//!
//! Frames are read by [`FrameReader`], which holds no buffer while the socket is idle.
//! Control frames are answered through the outbox so that every byte written to the socket
//! comes from one place, in order. Fragments are reassembled here, under the same size limit
//! as whole messages.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::frame_reader::{FrameError, FrameReader, OpCode};
use super::session::Session;
use super::writer::{self, WriterSettings};
use crate::apps::ConnectionSlot;
use crate::channels::{CloseRequest, Outbox};
use crate::protocol::codes;
use crate::protocol::encode;
use crate::protocol::socket_id::SocketId;

/// What a connection needs from the server.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    pub writer: WriterSettings,
    pub max_message_bytes: usize,
    pub outbox_limit_bytes: usize,
}

/// Serves an accepted connection until it closes.
pub async fn run(
    stream: TcpStream,
    early_bytes: Bytes,
    slot: ConnectionSlot,
    socket_id: SocketId,
    settings: ConnectionSettings,
    shutdown: watch::Receiver<bool>,
) {
    let (mut read_half, write_half) = stream.into_split();
    let outbox = Arc::new(Outbox::new(settings.outbox_limit_bytes));
    let mut session = Session::new(slot.app().clone(), socket_id, outbox.clone());
    session.greet(settings.writer.activity_timeout);

    let mut writer = tokio::spawn(writer::run(
        write_half,
        outbox.clone(),
        settings.writer,
        shutdown,
    ));

    let mut reader = FrameReader::new(early_bytes, settings.max_message_bytes);

    let mut message: Option<(OpCode, Vec<u8>)> = None;
    // "Authorized connections": without a sign-in (or a private or presence subscription)
    // by this deadline the connection is closed with 4009.
    let app = slot.app().clone();
    let signin_deadline = tokio::time::Instant::now() + app.config.signin_timeout;
    let mut must_authorize = app.config.require_signin;

    let ended_by_writer = loop {
        let frame = tokio::select! {
            biased;
            _ = &mut writer => break true,
            _ = outbox.closing() => break false,
            _ = tokio::time::sleep_until(signin_deadline), if must_authorize => {
                if session.is_authorized() {
                    must_authorize = false;
                    continue;
                }
                outbox.close(CloseRequest {
                    code: Some(codes::UNAUTHORIZED),
                    reason: "Connection not authorized within timeout: sign in first".to_string(),
                    announce: true,
                });
                break false;
            }
            frame = reader.next(&mut read_half) => frame,
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                close_for_error(&outbox, e, settings.max_message_bytes);
                break false;
            }
        };
        outbox.mark_activity();
        match frame.opcode {
            OpCode::Text | OpCode::Binary if frame.fin && message.is_none() => {
                if !handle_message(&mut session, &outbox, &frame.payload) {
                    break false;
                }
            }
            OpCode::Text | OpCode::Binary if message.is_none() => {
                message = Some((frame.opcode, frame.payload.to_vec()));
            }
            OpCode::Continuation if message.is_some() => {
                let Some((_, buf)) = message.as_mut() else {
                    break false;
                };
                if buf.len() + frame.payload.len() > settings.max_message_bytes {
                    too_big(&outbox, settings.max_message_bytes);
                    break false;
                }
                buf.extend_from_slice(&frame.payload);
                if frame.fin {
                    let whole = message.take().map(|(_, b)| b).unwrap_or_default();
                    if !handle_message(&mut session, &outbox, &whole) {
                        break false;
                    }
                }
            }
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                outbox.close(CloseRequest {
                    code: Some(codes::PROTOCOL_ERROR),
                    reason: "Unexpected continuation or interleaved message".to_string(),
                    announce: false,
                });
                break false;
            }
            OpCode::Ping => {
                outbox.push(encode::pong_frame(&frame.payload));
            }
            OpCode::Pong => {}
            OpCode::Close => {
                outbox.close(CloseRequest {
                    code: Some(codes::NORMAL_CLOSURE),
                    reason: String::new(),
                    announce: false,
                });
                break false;
            }
        }
    };
    session.leave_all();
    if !ended_by_writer {
        // Let the writer flush the close; a peer that stopped reading cannot hold us longer
        // than one write timeout.
        let grace = settings.writer.write_timeout + Duration::from_secs(1);
        if tokio::time::timeout(grace, &mut writer).await.is_err() {
            writer.abort();
        }
    }
    drop(slot);
}

/// Returns false when the connection must end (the message was not valid UTF-8).
fn handle_message(session: &mut Session, outbox: &Outbox, payload: &[u8]) -> bool {
    match std::str::from_utf8(payload) {
        Ok(text) => {
            session.handle_text(text);
            true
        }
        Err(_) => {
            outbox.close(CloseRequest {
                code: Some(codes::INVALID_PAYLOAD),
                reason: "Message is not valid UTF-8".to_string(),
                announce: false,
            });
            false
        }
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
