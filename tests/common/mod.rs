//! What every integration test needs: a real Crier started through `crier::serve` on
//! `127.0.0.1:0`, a WebSocket client that speaks Pusher protocol 7, a bare-bones WebSocket
//! client for the cases a real client library hides (pings it answers by itself, invalid
//! UTF-8), channel-auth signing, and a signed HTTP API client.
//!
//! Waits are bounded, never fixed sleeps: a frame that should come is awaited for up to
//! [`RECV_TIMEOUT`] (generous, for a loaded 2-core box); a frame that should *not* come is
//! watched for [`QUIET`]. Each test file uses a different subset of these helpers.
#![allow(dead_code)] // each test binary compiles this module and uses only part of it

pub mod binary;
pub mod redis_server;
pub mod webhook_receiver;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use md5::{Digest, Md5};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use crier::Config;

/// How long a test waits for something that should happen.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a test watches for something that should not happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// The built-in default app, which `Config::default()` serves.
pub const APP_ID: &str = "1";
pub const APP_KEY: &str = "app-key";
pub const APP_SECRET: &str = "app-secret";

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// The configuration tests start from: the default app, a short shutdown grace.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.server.host = "127.0.0.1".to_string();
    c.server.port = 0;
    c.server.shutdown_timeout = Duration::from_secs(2);
    c.server.metrics_port = 0;
    c
}

/// A running Crier. Dropping it triggers shutdown (the oneshot sender goes away).
pub struct Server {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start(config: Config) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local address of the listener");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(crier::serve(listener, config, async {
            rx.await.ok();
        }));
        Server {
            addr,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub async fn start_default() -> Server {
        Server::start(test_config()).await
    }

    /// Resolves the shutdown future passed to `serve`.
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for `serve` to return; panics if it takes longer than `within` or fails.
    pub async fn wait_stopped(&mut self, within: Duration) {
        let handle = self.handle.take().expect("server already awaited");
        match tokio::time::timeout(within, handle).await {
            Err(_) => panic!("serve did not return within {within:?} after shutdown"),
            Ok(Err(join)) => panic!("serve panicked: {join}"),
            Ok(Ok(Err(io))) => panic!("serve returned an error: {io}"),
            Ok(Ok(Ok(()))) => {}
        }
    }

    pub fn api(&self) -> Api {
        Api::new(self.addr)
    }

    /// A connected client of the default app (connection_established already read).
    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}

// ---------------------------------------------------------------------------------------------
// Signing
// ---------------------------------------------------------------------------------------------

/// Lower-case hex HMAC-SHA256 of `message` keyed with `secret`.
pub fn hmac_hex(secret: &str, message: &str) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Lower-case hex MD5.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// `key:hex(hmac(secret, "socket_id:channel[:channel_data]"))`.
pub fn channel_auth(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    let to_sign = match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    };
    format!("{key}:{}", hmac_hex(secret, &to_sign))
}

/// `key:hex(hmac(secret, "socket_id::user::user_data"))`: the `auth` of a `pusher:signin`.
pub fn signin_auth(key: &str, secret: &str, socket_id: &str, user_data: &str) -> String {
    format!(
        "{key}:{}",
        hmac_hex(secret, &format!("{socket_id}::user::{user_data}"))
    )
}

/// Parses the JSON held in a frame's string `data`; panics if `data` is not a JSON string.
pub fn data_json(frame: &Value) -> Value {
    let text = frame["data"]
        .as_str()
        .unwrap_or_else(|| panic!("expected `data` to be a JSON-encoded string in {frame}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("`data` of {frame} is not JSON: {e}"))
}

/// Asserts that `data` of a `pusher:error` frame is `{"code":code,"message":"..."}`.
pub fn assert_pusher_error(frame: &Value, code: Option<u16>) {
    assert_eq!(
        frame["event"], "pusher:error",
        "expected pusher:error, got {frame}"
    );
    let data = &frame["data"];
    assert!(
        data.is_object(),
        "pusher:error data must be an object: {frame}"
    );
    let message = data["message"].as_str().unwrap_or("");
    assert!(!message.is_empty(), "pusher:error needs a message: {frame}");
    match code {
        Some(code) => assert_eq!(data["code"], json!(code), "wrong code in {frame}"),
        None => assert!(
            data["code"].is_null() || data["code"].is_u64(),
            "code must be null or an integer: {frame}"
        ),
    }
}

/// A presence `channel_data` string.
pub fn presence_data(user_id: impl Into<Value>, user_info: Value) -> String {
    json!({"user_id": user_id.into(), "user_info": user_info}).to_string()
}

fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A channel name unused by any other test in this process.
pub fn fresh_channel(prefix: &str) -> String {
    format!("{prefix}{}", unique())
}

// ---------------------------------------------------------------------------------------------
// WebSocket client (tokio-tungstenite)
// ---------------------------------------------------------------------------------------------

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the next read produced.
#[derive(Debug)]
pub enum Next {
    Frame(Message),
    /// The stream ended (EOF or error) without a frame.
    Ended(String),
    TimedOut,
}

/// A Pusher client over tokio-tungstenite. tungstenite answers ping frames by itself.
pub struct Client {
    pub ws: Ws,
    pub socket_id: String,
    pub key: String,
    pub secret: String,
}

impl Client {
    /// Connects to the default app and reads `pusher:connection_established`.
    pub async fn connect(addr: SocketAddr) -> Client {
        Client::connect_app(addr, APP_KEY, APP_SECRET).await
    }

    pub async fn connect_app(addr: SocketAddr, key: &str, secret: &str) -> Client {
        let mut client = Client::open(addr, &format!("/app/{key}?protocol=7"), None).await;
        client.key = key.to_string();
        client.secret = secret.to_string();
        client.handshake().await;
        client
    }

    /// Completes the WebSocket upgrade only; reads nothing. Panics when the upgrade itself
    /// is refused, since Crier rejects connections after the upgrade.
    pub async fn open(addr: SocketAddr, path_and_query: &str, origin: Option<&str>) -> Client {
        let url = format!("ws://{addr}{path_and_query}");
        let mut request = url
            .as_str()
            .into_client_request()
            .expect("a valid WebSocket URL");
        if let Some(origin) = origin {
            request.headers_mut().insert(
                "Origin",
                HeaderValue::from_str(origin).expect("a valid header value"),
            );
        }
        let (ws, _) =
            match tokio::time::timeout(RECV_TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
            {
                Err(_) => panic!("WebSocket upgrade of {url} timed out"),
                Ok(Err(e)) => {
                    panic!("WebSocket upgrade of {url} failed (must upgrade, then reject): {e}")
                }
                Ok(Ok(pair)) => pair,
            };
        Client {
            ws,
            socket_id: String::new(),
            key: APP_KEY.to_string(),
            secret: APP_SECRET.to_string(),
        }
    }

    /// Reads `pusher:connection_established`, checks its shape and keeps the socket id.
    /// Returns the parsed `data`.
    pub async fn handshake(&mut self) -> Value {
        let frame = self.recv_json().await;
        assert_eq!(
            frame["event"], "pusher:connection_established",
            "first frame must be connection_established: {frame}"
        );
        let data = data_json(&frame);
        let socket_id = data["socket_id"]
            .as_str()
            .unwrap_or_else(|| panic!("socket_id must be a string: {frame}"));
        assert!(
            is_socket_id(socket_id),
            "socket_id {socket_id:?} must match ^\\d+\\.\\d+$"
        );
        self.socket_id = socket_id.to_string();
        data
    }

    pub async fn send(&mut self, message: Message) {
        tokio::time::timeout(RECV_TIMEOUT, self.ws.send(message))
            .await
            .expect("sending a frame timed out")
            .expect("sending a frame failed");
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.send(Message::text(text.into())).await;
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(value.to_string()).await;
    }

    /// The next frame of any kind, or how the wait ended.
    pub async fn next_within(&mut self, within: Duration) -> Next {
        match tokio::time::timeout(within, self.ws.next()).await {
            Err(_) => Next::TimedOut,
            Ok(None) => Next::Ended("end of stream".to_string()),
            Ok(Some(Err(e))) => Next::Ended(e.to_string()),
            Ok(Some(Ok(message))) => Next::Frame(message),
        }
    }

    /// The next text or binary message as JSON, skipping ping/pong frames.
    pub async fn recv_json(&mut self) -> Value {
        self.recv_json_within(RECV_TIMEOUT).await
    }

    pub async fn recv_json_within(&mut self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left).await {
                Next::Frame(Message::Text(t)) => return parse_json(t.as_bytes()),
                Next::Frame(Message::Binary(b)) => return parse_json(&b),
                Next::Frame(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Next::Frame(Message::Close(c)) => panic!("expected a message, got close {c:?}"),
                Next::Ended(why) => panic!("expected a message, the socket ended: {why}"),
                Next::TimedOut => panic!("no message within {within:?}"),
            }
        }
    }

    /// Asserts the next message equals `expected` exactly.
    pub async fn expect_json(&mut self, expected: &Value) {
        let got = self.recv_json().await;
        assert_eq!(&got, expected);
    }

    /// Asserts that no message (and no close) arrives within `within`.
    pub async fn expect_no_message(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.next_within(left).await {
                Next::TimedOut => return,
                Next::Frame(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Next::Frame(Message::Text(t)) => panic!("expected no message, got {t}"),
                Next::Frame(Message::Binary(b)) => panic!("expected no message, got binary {b:?}"),
                Next::Frame(Message::Close(c)) => panic!("expected no message, got close {c:?}"),
                Next::Ended(why) => panic!("expected the socket to stay open, it ended: {why}"),
            }
        }
    }

    /// Asserts the socket is closed with `code`. A `pusher:error` carrying the same code may
    /// come first; any other message fails. Returns the close reason.
    pub async fn expect_close(&mut self, code: u16) -> String {
        self.expect_close_within(code, RECV_TIMEOUT).await
    }

    pub async fn expect_close_within(&mut self, code: u16, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left).await {
                Next::Frame(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Next::Frame(Message::Text(t)) => {
                    let frame = parse_json(t.as_bytes());
                    assert!(
                        frame["event"] == "pusher:error" && frame["data"]["code"] == json!(code),
                        "expected close {code}, got {frame}"
                    );
                }
                Next::Frame(Message::Binary(b)) => panic!("expected close {code}, got {b:?}"),
                Next::Frame(Message::Close(Some(f))) => {
                    assert_eq!(
                        u16::from(f.code),
                        code,
                        "wrong close code (reason {:?})",
                        f.reason
                    );
                    return f.reason.to_string();
                }
                Next::Frame(Message::Close(None)) => {
                    panic!("expected close {code}, got a close frame without a code")
                }
                Next::Ended(why) => panic!("expected close {code}, the socket ended: {why}"),
                Next::TimedOut => panic!("no close {code} within {within:?}"),
            }
        }
    }

    /// The rejection pattern: `pusher:error` `{"code":code,"message":…}`, then close `code`.
    /// Returns the error message.
    pub async fn expect_error_then_close(&mut self, code: u16) -> String {
        let frame = self.recv_json().await;
        assert_pusher_error(&frame, Some(code));
        let message = frame["data"]["message"].as_str().unwrap_or("").to_string();
        match self.next_skipping_pings(RECV_TIMEOUT).await {
            Next::Frame(Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), code, "close code after {frame}");
            }
            other => panic!("expected close {code} after {frame}, got {other:?}"),
        }
        message
    }

    /// The next frame that is not a ping or pong.
    pub async fn next_skipping_pings(&mut self, within: Duration) -> Next {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left).await {
                Next::Frame(Message::Ping(_) | Message::Pong(_)) => continue,
                other => return other,
            }
        }
    }

    /// Reads until the socket ends in any way (close frame, EOF or error) within `within`.
    /// Returns the close code if a close frame came, and how many messages arrived first.
    pub async fn drain_until_closed(&mut self, within: Duration) -> (Option<u16>, usize) {
        let deadline = Instant::now() + within;
        let mut messages = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left).await {
                Next::Frame(Message::Text(_) | Message::Binary(_)) => messages += 1,
                Next::Frame(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Next::Frame(Message::Close(c)) => return (c.map(|f| u16::from(f.code)), messages),
                Next::Ended(_) => return (None, messages),
                Next::TimedOut => {
                    panic!("socket still open after {within:?} ({messages} messages read)")
                }
            }
        }
    }

    /// `pusher:ping` answered by exactly `pusher:pong`: the connection still works.
    pub async fn assert_alive(&mut self) {
        self.send_json(&json!({"event": "pusher:ping", "data": {}}))
            .await;
        self.expect_json(&json!({"event": "pusher:pong", "data": {}}))
            .await;
    }

    /// Sends `pusher:subscribe` with the given fields.
    pub async fn send_subscribe(&mut self, channel: &str, auth: &str, channel_data: Option<&str>) {
        let mut data = json!({"auth": auth, "channel": channel});
        if let Some(cd) = channel_data {
            data["channel_data"] = json!(cd);
        }
        self.send_json(&json!({"event": "pusher:subscribe", "data": data}))
            .await;
    }

    /// Asserts the next message is `subscription_succeeded` for `channel`; returns it.
    pub async fn expect_subscribed(&mut self, channel: &str) -> Value {
        let frame = self.recv_json().await;
        assert_eq!(
            frame["event"], "pusher_internal:subscription_succeeded",
            "expected subscription_succeeded for {channel}, got {frame}"
        );
        assert_eq!(frame["channel"], channel, "{frame}");
        frame
    }

    /// Subscribes to a public channel and checks the exact success frame.
    pub async fn subscribe(&mut self, channel: &str) {
        self.send_subscribe(channel, "", None).await;
        self.expect_json(&json!({
            "event": "pusher_internal:subscription_succeeded",
            "channel": channel,
            "data": "{}"
        }))
        .await;
    }

    /// A valid auth string for this socket.
    pub fn auth(&self, channel: &str, channel_data: Option<&str>) -> String {
        channel_auth(
            &self.key,
            &self.secret,
            &self.socket_id,
            channel,
            channel_data,
        )
    }

    /// Subscribes to a private (or encrypted) channel with a valid signature.
    pub async fn subscribe_private(&mut self, channel: &str) {
        let auth = self.auth(channel, None);
        self.send_subscribe(channel, &auth, None).await;
        self.expect_json(&json!({
            "event": "pusher_internal:subscription_succeeded",
            "channel": channel,
            "data": "{}"
        }))
        .await;
    }

    /// Subscribes to a presence channel as `user_id`; returns the parsed success `data`.
    pub async fn subscribe_presence(
        &mut self,
        channel: &str,
        user_id: impl Into<Value>,
        user_info: Value,
    ) -> Value {
        let channel_data = presence_data(user_id, user_info);
        let auth = self.auth(channel, Some(&channel_data));
        self.send_subscribe(channel, &auth, Some(&channel_data))
            .await;
        let frame = self.expect_subscribed(channel).await;
        data_json(&frame)
    }

    /// A valid sign-in `auth` for this socket and `user_data`.
    pub fn signin_token(&self, user_data: &str) -> String {
        signin_auth(&self.key, &self.secret, &self.socket_id, user_data)
    }

    /// Sends `pusher:signin` with the given fields.
    pub async fn send_signin(&mut self, auth: &str, user_data: &str) {
        self.send_json(&json!({
            "event": "pusher:signin",
            "data": {"auth": auth, "user_data": user_data}
        }))
        .await;
    }

    /// Signs in with a valid signature and checks the exact `pusher:signin_success` frame.
    /// Frames that follow it (watchlist events, errors) are left unread.
    pub async fn signin(&mut self, user_data: &str) {
        let auth = self.signin_token(user_data);
        self.send_signin(&auth, user_data).await;
        self.expect_json(&json!({
            "event": "pusher:signin_success",
            "data": {"user_data": user_data}
        }))
        .await;
    }

    /// Signs in as `id` with `user_data` `{"id":id}`.
    pub async fn signin_as(&mut self, id: &str) {
        self.signin(&json!({ "id": id }).to_string()).await;
    }

    pub async fn unsubscribe(&mut self, channel: &str) {
        self.send_json(&json!({"event": "pusher:unsubscribe", "data": {"channel": channel}}))
            .await;
    }

    /// Asserts the next message is `pusher:subscription_error` for `channel` with `status`.
    /// Returns its `data`.
    pub async fn expect_subscription_error(&mut self, channel: &str, status: u16) -> Value {
        let frame = self.recv_json().await;
        assert_eq!(frame["event"], "pusher:subscription_error", "{frame}");
        assert_eq!(frame["channel"], channel, "{frame}");
        let data = &frame["data"];
        assert!(
            data.is_object(),
            "subscription_error data must be an object: {frame}"
        );
        assert_eq!(data["status"], json!(status), "{frame}");
        assert!(data["type"].is_string(), "`type` must be a string: {frame}");
        assert!(
            data["error"].as_str().is_some_and(|e| !e.is_empty()),
            "`error` must be a non-empty string: {frame}"
        );
        data.clone()
    }

    /// Asserts the next message is a `pusher:error` (code null or integer); returns it.
    pub async fn expect_pusher_error(&mut self) -> Value {
        let frame = self.recv_json().await;
        assert_pusher_error(&frame, None);
        frame
    }
}

fn parse_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "server sent non-JSON text {:?}: {e}",
            String::from_utf8_lossy(bytes)
        )
    })
}

pub fn is_socket_id(s: &str) -> bool {
    match s.split_once('.') {
        Some((a, b)) => {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Bare WebSocket client: no automatic pong, any bytes on the wire
// ---------------------------------------------------------------------------------------------

pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// One frame as read off the wire.
#[derive(Debug)]
pub enum RawNext {
    Frame { opcode: u8, payload: Vec<u8> },
    Ended,
    TimedOut,
}

/// A minimal RFC 6455 client that does only what the test tells it to.
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Upgrades `path_and_query`; panics unless the answer is 101.
    pub async fn connect(addr: SocketAddr, path_and_query: &str) -> RawWs {
        RawWs::connect_then(addr, path_and_query, &[]).await
    }

    /// Like [`RawWs::connect`], with `trailing` sent in the same write as the request, so
    /// the server reads those bytes together with the upgrade.
    pub async fn connect_then(addr: SocketAddr, path_and_query: &str, trailing: &[u8]) -> RawWs {
        let mut stream = TcpStream::connect(addr).await.expect("TCP connect");
        let mut request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes();
        request.extend_from_slice(trailing);
        stream
            .write_all(&request)
            .await
            .expect("write upgrade request");
        let mut raw = RawWs {
            stream,
            buf: Vec::new(),
        };
        let head_end = loop {
            if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                raw.fill(RECV_TIMEOUT).await,
                "connection ended during the upgrade"
            );
        };
        let head = String::from_utf8_lossy(&raw.buf[..head_end]).to_string();
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "expected 101 Switching Protocols, got {head}"
        );
        raw.buf.drain(..head_end);
        raw
    }

    /// Upgrades on the default app and reads `connection_established`.
    pub async fn connect_app(addr: SocketAddr) -> RawWs {
        let mut raw = RawWs::connect(addr, &format!("/app/{APP_KEY}?protocol=7")).await;
        raw.expect_connection_established().await;
        raw
    }

    /// Reads more bytes; false on EOF or error.
    async fn fill(&mut self, within: Duration) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(within, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// Sends one final, masked frame.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut frame = vec![0x80 | opcode];
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len <= u16::MAX as usize {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream
            .write_all(&frame)
            .await
            .expect("write a WebSocket frame");
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_frame(OP_TEXT, value.to_string().as_bytes()).await;
    }

    /// Sends bytes as they are, for frames a real client would never build.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write raw bytes");
    }

    /// Reads `pusher:connection_established`; panics on anything else.
    pub async fn expect_connection_established(&mut self) {
        match self.read_frame(RECV_TIMEOUT).await {
            RawNext::Frame {
                opcode: OP_TEXT,
                payload,
            } => {
                let frame = parse_json(&payload);
                assert_eq!(frame["event"], "pusher:connection_established", "{frame}");
            }
            other => panic!("expected connection_established, got {other:?}"),
        }
    }

    /// Reads one frame within `within`.
    pub async fn read_frame(&mut self, within: Duration) -> RawNext {
        let deadline = Instant::now() + within;
        loop {
            if let Some((opcode, payload, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return RawNext::Frame { opcode, payload };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return RawNext::TimedOut;
            }
            match tokio::time::timeout(left, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return RawNext::TimedOut,
                Ok(Ok(0)) | Ok(Err(_)) => return RawNext::Ended,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Reads a close frame and returns its code; text frames before it fail the test unless
    /// they are a `pusher:error` with the same code.
    pub async fn expect_close(&mut self, code: u16, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left).await {
                RawNext::Frame {
                    opcode: OP_CLOSE,
                    payload,
                } => {
                    assert!(payload.len() >= 2, "close frame without a code");
                    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code);
                    return;
                }
                RawNext::Frame {
                    opcode: OP_TEXT,
                    payload,
                } => {
                    let frame = parse_json(&payload);
                    assert!(
                        frame["event"] == "pusher:error" && frame["data"]["code"] == json!(code),
                        "expected close {code}, got {frame}"
                    );
                }
                other => panic!("expected close {code}, got {other:?}"),
            }
        }
    }
}

/// Parses one unfragmented server frame from the front of `buf`.
fn parse_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    let mask = if masked {
        if buf.len() < at + 4 {
            return None;
        }
        let m = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(m)
    } else {
        None
    };
    if buf.len() < at + len {
        return None;
    }
    let mut payload = buf[at..at + len].to_vec();
    if let Some(m) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    Some((opcode, payload, at + len))
}

// ---------------------------------------------------------------------------------------------
// Signed HTTP API client
// ---------------------------------------------------------------------------------------------

/// A response from the HTTP API: status, raw text, and the body as JSON (`Null` if not JSON).
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub text: String,
    pub json: Value,
}

impl ApiResponse {
    /// Asserts status 200 and returns the JSON body.
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "expected 200, body {}", self.text);
        &self.json
    }

    /// Asserts an error status with a JSON `{"error":"..."}` body.
    pub fn assert_error(&self, status: u16) {
        assert_eq!(self.status, status, "wrong status, body {}", self.text);
        assert!(
            self.json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "error body must be JSON {{\"error\":\"...\"}}, got {:?}",
            self.text
        );
    }
}

/// A request about to be sent; tests may tamper with it after signing.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    /// Every query parameter, `auth_signature` included.
    pub params: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Percent-encode every reserved character (as Guzzle does) instead of only the ones
    /// that must be.
    pub encode_all: bool,
}

impl ApiRequest {
    pub fn set_param(&mut self, key: &str, value: &str) {
        match self.params.iter_mut().find(|(k, _)| k == key) {
            Some(p) => p.1 = value.to_string(),
            None => self.params.push((key.to_string(), value.to_string())),
        }
    }

    pub fn remove_param(&mut self, key: &str) {
        self.params.retain(|(k, _)| k != key);
    }

    pub fn query(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    encode(k, self.encode_all),
                    encode(v, self.encode_all)
                )
            })
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn encode(s: &str, all: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (!all && matches!(b, b',' | b':' | b'@' | b';' | b'/'));
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The string-to-sign's query part: every param but `auth_signature`, keys lower-cased,
/// sorted, joined as `k=v` with `&`, values unescaped.
pub fn signing_query(params: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, &str)> = params
        .iter()
        .filter(|(k, _)| k != "auth_signature")
        .map(|(k, v)| (k.to_lowercase(), v.as_str()))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A client of one app's HTTP API.
#[derive(Debug, Clone)]
pub struct Api {
    pub addr: SocketAddr,
    pub app_id: String,
    pub key: String,
    pub secret: String,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api::for_app(addr, APP_ID, APP_KEY, APP_SECRET)
    }

    pub fn for_app(addr: SocketAddr, id: &str, key: &str, secret: &str) -> Api {
        Api {
            addr,
            app_id: id.to_string(),
            key: key.to_string(),
            secret: secret.to_string(),
        }
    }

    /// `/apps/{id}{suffix}`.
    pub fn path(&self, suffix: &str) -> String {
        format!("/apps/{}{suffix}", self.app_id)
    }

    /// Builds a signed request: the given params plus auth_key, auth_timestamp,
    /// auth_version, body_md5 (when there is a body) and auth_signature.
    pub fn signed(
        &self,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
        body: &[u8],
    ) -> ApiRequest {
        let mut req = ApiRequest {
            method: method.to_string(),
            path: path.to_string(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
            encode_all: false,
        };
        req.set_param("auth_key", &self.key);
        req.set_param("auth_timestamp", &now_secs().to_string());
        req.set_param("auth_version", "1.0");
        if !body.is_empty() {
            req.set_param("body_md5", &md5_hex(body));
        }
        self.sign(&mut req);
        req
    }

    /// (Re)computes `auth_signature` over the request as it now stands.
    pub fn sign(&self, req: &mut ApiRequest) {
        req.remove_param("auth_signature");
        let to_sign = format!(
            "{}\n{}\n{}",
            req.method,
            req.path,
            signing_query(&req.params)
        );
        let signature = hmac_hex(&self.secret, &to_sign);
        req.set_param("auth_signature", &signature);
    }

    pub async fn send(&self, req: &ApiRequest) -> ApiResponse {
        http_request(
            self.addr,
            &req.method,
            &format!("{}?{}", req.path, req.query()),
            req.body.clone(),
        )
        .await
    }

    /// Signed `POST /apps/{id}{suffix}` with a JSON body.
    pub async fn post(&self, suffix: &str, body: &Value) -> ApiResponse {
        self.post_raw(suffix, body.to_string().as_bytes()).await
    }

    pub async fn post_raw(&self, suffix: &str, body: &[u8]) -> ApiResponse {
        let req = self.signed("POST", &self.path(suffix), &[], body);
        self.send(&req).await
    }

    /// Signed `GET /apps/{id}{suffix}` with query params.
    pub async fn get(&self, suffix: &str, params: &[(&str, &str)]) -> ApiResponse {
        let req = self.signed("GET", &self.path(suffix), params, b"");
        self.send(&req).await
    }

    /// Signed `POST /apps/{id}/users/{user}/terminate_connections` with body `{}`.
    pub async fn terminate(&self, user: &str) -> ApiResponse {
        self.post(&format!("/users/{user}/terminate_connections"), &json!({}))
            .await
    }

    /// Publishes one event to one channel and asserts `200 {}`.
    pub async fn publish(&self, channel: &str, name: &str, data: &str) {
        let response = self
            .post(
                "/events",
                &json!({"name": name, "data": data, "channels": [channel]}),
            )
            .await;
        assert_eq!(response.ok(), &json!({}), "publish response");
    }
}

/// The status of `GET path` at `addr`, or `None` while nothing listens there.
pub async fn probe(addr: SocketAddr, path: &str) -> Option<u16> {
    TcpStream::connect(addr).await.ok()?;
    Some(http_request(addr, "GET", path, Vec::new()).await.status)
}

/// One HTTP/1.1 request on a fresh connection, with extra `headers`; the response with its
/// body still to read (a stream, for the console). Its head must arrive within 10 s.
pub async fn http_send(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> hyper::Response<hyper::body::Incoming> {
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .expect("TCP connect to the API");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(connection);
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("host", addr.to_string());
        if !body.is_empty() {
            builder = builder.header("content-type", "application/json");
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        sender.send_request(request).await.expect("HTTP response")
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path_and_query} got no response within 10 s"))
}

/// One HTTP/1.1 request on a fresh connection; the whole exchange is bounded by 10 s.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    body: Vec<u8>,
) -> ApiResponse {
    let response = http_send(addr, method, path_and_query, &[], body).await;
    let status = response.status().as_u16();
    let bytes = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .unwrap_or_else(|_| panic!("{method} {path_and_query}: no whole body within 10 s"))
        .expect("HTTP body")
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    ApiResponse { status, text, json }
}
