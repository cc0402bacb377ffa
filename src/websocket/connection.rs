//! One WebSocket connection after the upgrade, served by a single task: it reads client
//! frames and hands complete messages to the [`Session`], drains the outbox to the socket,
//! keeps the connection alive, and closes it when asked. Publishers only ever see the outbox.
//!
//! The task's future is written by hand ([`Connection::poll`]) rather than as a `select!`
//! loop, because its size is what an idle connection costs: an `async` loop keeps a future
//! for every branch it waits on (the outbox's `Notified`, the socket's readiness waiter, a
//! shutdown receiver) and the compiler lays them out generously. Here the socket keeps the
//! task's waker in tokio's own registration, the outbox keeps it under its lock, and one
//! timer serves the keep-alive, the sign-in deadline and the write timeout. Shutdown arrives
//! through the outbox like any other close (see [`LiveConnections`]).
//!
//! Frames are read by [`FrameReader`], which holds no buffer while the socket is idle.
//! Control frames are answered through the outbox so that every byte written to the socket
//! comes from one place, in order. Fragments are reassembled here, under the same size limit
//! as whole messages. Reading goes on while a write waits on a full socket; what the client
//! asks for meanwhile queues in the outbox, under its limit.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, Sleep, sleep_until};

use super::frame_reader::{Frame, FrameError, FrameReader, OpCode};
use super::keepalive::{Action, Keepalive, KeepaliveSettings};
use super::live::{Listed, LiveConnections};
use super::session::Session;
use super::transport::Transport;
use crate::apps::ConnectionSlot;
use crate::channels::{CloseRequest, Outbox};
use crate::protocol::codes;
use crate::protocol::encode;
use crate::protocol::socket_id::SocketId;
use crate::websocket::close_log;

/// What a connection needs from the server.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSettings {
    pub keepalive: KeepaliveSettings,
    pub write_timeout: Duration,
    pub max_message_bytes: usize,
    pub outbox_limit_bytes: usize,
}

/// Serves an accepted connection until it closes.
///
/// The arguments are moved straight into [`Connection::open`] inside this future. Building
/// the `Connection` outside and awaiting a method that takes it by value makes the compiler
/// keep both in the task's future (1,088 bytes instead of 784), and an idle connection pays
/// for every byte of it.
pub(crate) async fn run<S: Transport>(
    stream: S,
    early_bytes: Bytes,
    slot: ConnectionSlot,
    socket_id: SocketId,
    origin: Option<Box<str>>,
    settings: Arc<ConnectionSettings>,
    live: &Arc<LiveConnections>,
) {
    let mut conn = Connection::open(stream, early_bytes, slot, socket_id, origin, settings, live);
    let timer = sleep_until(conn.next_wake());
    tokio::pin!(timer);
    poll_fn(|cx| conn.poll(cx, timer.as_mut())).await;
    conn.session.leave_all();
    let app = conn._slot.app();
    app.metrics.closed(conn.closing);
    close_log::closed(&app.config.id, conn.session.socket_id(), conn.closing);
    if app.console.is_open() {
        app.console.record(
            "connection_closed",
            serde_json::json!({
                "socket_id": conn.session.socket_id().to_string(),
                "code": conn.closing,
                "reason": conn.closing.map_or("connection lost", close_log::meaning),
            }),
        );
    }
}

struct Connection<S> {
    stream: S,
    outbox: Arc<Outbox>,
    session: Session,
    reader: FrameReader,
    /// A fragmented message being reassembled.
    message: Option<Vec<u8>>,
    /// Frames taken from the outbox and not yet fully written.
    writing: VecDeque<Bytes>,
    /// The outbox asked to close (with this code): once `writing` is out, the connection ends.
    closing: Option<u16>,
    /// A close has been requested (a read error among the reasons): stop reading.
    done_reading: bool,
    heard: Instant,
    keepalive: Keepalive,
    keepalive_at: Instant,
    /// "Authorized connections": without a sign-in (or a private or presence subscription)
    /// by this deadline the connection is closed with 4009.
    signin_deadline: Option<Instant>,
    /// Set while a write waits on a full socket; cleared whenever bytes go out.
    write_deadline: Option<Instant>,
    settings: Arc<ConnectionSettings>,
    _listed: Listed,
    _slot: ConnectionSlot,
}

/// Whether the connection goes on after a timer event.
enum Next {
    Continue,
    End,
}

impl<S: Transport> Connection<S> {
    fn open(
        stream: S,
        early_bytes: Bytes,
        slot: ConnectionSlot,
        socket_id: SocketId,
        origin: Option<Box<str>>,
        settings: Arc<ConnectionSettings>,
        live: &Arc<LiveConnections>,
    ) -> Self {
        let outbox = Arc::new(Outbox::new(settings.outbox_limit_bytes));
        let app = slot.app().clone();
        app.metrics.opened.inc();
        if app.console.is_open() {
            app.console.record(
                "connection_opened",
                serde_json::json!({ "socket_id": socket_id.to_string(), "origin": origin }),
            );
        }
        let session = Session::new(app.clone(), socket_id, outbox.clone());
        session.greet(settings.keepalive.activity_timeout);
        let heard = Instant::now();
        let keepalive = Keepalive::new(settings.keepalive);
        let keepalive_at = Instant::from_std(keepalive.first_check(heard.into_std()));
        Connection {
            _listed: live.add(socket_id.conn, &outbox),
            stream,
            outbox,
            session,
            reader: FrameReader::new(early_bytes, settings.max_message_bytes),
            message: None,
            writing: VecDeque::new(),
            closing: None,
            done_reading: false,
            heard,
            keepalive,
            keepalive_at,
            signin_deadline: app
                .config
                .require_signin
                .then(|| heard + app.config.signin_timeout),
            write_deadline: None,
            settings,
            _slot: slot,
        }
    }

    /// Makes every step that can make progress, then waits on all of them at once: the
    /// socket (readable, or writable while a write is pending), the outbox and the timer.
    fn poll(&mut self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>) -> Poll<()> {
        loop {
            // A write waiting on a full socket (the write timeout is armed only then): a reader
            // this slow has likely overflowed its outbox, and then its 4100 goes right behind
            // the frame on the wire. Off the common path, where writes never wait.
            if self.write_deadline.is_some()
                && !self.writing.is_empty()
                && self.closing.is_none()
                && let Some(request) = self.outbox.overflowed()
                && !self.begin_close(request)
            {
                return Poll::Ready(());
            }
            let mut progressed = false;
            let written =
                match self
                    .stream
                    .poll_write_frames(cx, &mut self.writing, &mut progressed)
                {
                    Poll::Ready(Ok(())) => {
                        self.write_deadline = None;
                        true
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {
                        if progressed || self.write_deadline.is_none() {
                            self.write_deadline =
                                Some(Instant::now() + self.settings.write_timeout);
                        }
                        false
                    }
                };
            // Not `writing.is_empty()`: over TLS the frames can all be taken while the
            // encrypted bytes still wait for the socket, and a close must not cut them off.
            if written {
                if self.closing.is_some() {
                    let _ = Pin::new(&mut self.stream).poll_shutdown(cx);
                    return Poll::Ready(());
                }
                if let Poll::Ready(close) = self.outbox.poll_drain(cx, &mut self.writing) {
                    let go_on = match close {
                        None => true,
                        Some(request) => self.begin_close(request),
                    };
                    if go_on {
                        continue;
                    }
                    return Poll::Ready(());
                }
            }
            if self.closing.is_none()
                && !self.done_reading
                && let Poll::Ready(frame) = self.reader.poll_next(cx, &mut self.stream)
            {
                self.heard = Instant::now();
                let limit = self.settings.max_message_bytes;
                match frame {
                    Ok(frame) => on_frame(
                        frame,
                        &mut self.message,
                        &mut self.session,
                        &self.outbox,
                        limit,
                    ),
                    Err(e) => close_for_error(&self.outbox, e, limit),
                }
                // Once a close is asked for, by this frame or by anyone, nothing more the
                // client says matters; a read error would also repeat forever while a write
                // waits on the socket.
                self.done_reading = self.outbox.is_closing();
                // A client that never stops sending would keep the timer below from being
                // polled; its deadlines (sign-in, write timeout) still apply.
                if self.heard >= self.next_wake()
                    && let Next::End = self.on_timer()
                {
                    return Poll::Ready(());
                }
                continue;
            }
            let wake = self.next_wake();
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if let Next::End = self.on_timer() {
                return Poll::Ready(());
            }
        }
    }

    /// Starts closing after the frames already in `writing`; false when the connection
    /// should end without writing anything (the peer is gone).
    fn begin_close(&mut self, request: CloseRequest) -> bool {
        // Leave the channels first: a stalled peer may hold the final write for up to the
        // write timeout, and nobody should count it meanwhile.
        self.session.leave_all();
        let Some(code) = request.code else {
            return false;
        };
        self.closing = Some(code);
        if code == codes::OVER_CAPACITY {
            // The outbox overflowed and dropped its queue; drop what was taken from it too
            // (all but the frame on the wire, which may be half written), so the 4100 is the
            // next thing a reader that wakes up gets, not a megabyte of stale events.
            self.writing.truncate(1);
        }
        if request.announce {
            self.writing
                .push_back(encode::error_frame(Some(code), &request.reason));
        }
        self.writing
            .push_back(encode::close_frame(code, &request.reason));
        true
    }

    /// The earliest of the keep-alive check, the sign-in deadline and the write timeout.
    fn next_wake(&self) -> Instant {
        [self.signin_deadline, self.write_deadline]
            .into_iter()
            .flatten()
            .fold(self.keepalive_at, Instant::min)
    }

    fn on_timer(&mut self) -> Next {
        let now = Instant::now();
        if self.write_deadline.is_some_and(|d| now >= d) {
            // The peer took nothing for the whole write timeout: nothing more can reach it,
            // a close frame included, so the log is where the reason goes.
            let waited = self.settings.write_timeout.as_secs_f32();
            match self.closing {
                Some(code) => tracing::info!(
                    "socket {}: dropped without its close {code}: the client read nothing for {waited} s",
                    self.session.socket_id()
                ),
                None => tracing::info!(
                    "socket {}: dropped: the client read nothing for {waited} s",
                    self.session.socket_id()
                ),
            }
            return Next::End;
        }
        if self.signin_deadline.is_some_and(|d| now >= d) {
            self.signin_deadline = None;
            if !self.session.is_authorized() {
                self.outbox.close(CloseRequest {
                    code: Some(codes::UNAUTHORIZED),
                    reason: "Connection not authorized within timeout: sign in first".to_string(),
                    announce: true,
                });
            }
        }
        if now >= self.keepalive_at {
            match self.keepalive.check(self.heard.into_std(), now.into_std()) {
                Action::WaitUntil(at) => self.keepalive_at = Instant::from_std(at),
                Action::Ping(at) => {
                    self.keepalive_at = Instant::from_std(at);
                    self.outbox.push(encode::ping_frame());
                }
                Action::Close => self.outbox.close(CloseRequest {
                    code: Some(codes::PONG_NOT_RECEIVED),
                    reason: "Pong reply not received in time".to_string(),
                    announce: true,
                }),
            }
        }
        Next::Continue
    }
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
