//! Keep-alive: `pusher:ping`, WebSocket ping frames, and the server's own liveness check
//! (ping after `activity_timeout` of client silence, close 4201 after `pong_timeout`).
//! These use the bare client where tungstenite would answer pings by itself.
//! Rules: protocol-spec/keepalive.md.

mod common;

use std::time::{Duration, Instant};

use common::{OP_PING, OP_PONG, OP_TEXT, RECV_TIMEOUT, RawNext, RawWs, Server, test_config};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const ACTIVITY: Duration = Duration::from_secs(1);
const PONG: Duration = Duration::from_millis(500);

fn fast_keepalive() -> common::Config {
    let mut config = test_config();
    config.server.activity_timeout = ACTIVITY;
    config.server.pong_timeout = PONG;
    config
}

#[tokio::test]
async fn pusher_ping_is_answered_with_pusher_pong() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client
        .send_json(&json!({"event": "pusher:ping", "data": {}}))
        .await;
    client
        .expect_json(&json!({"event": "pusher:pong", "data": {}}))
        .await;
}

#[tokio::test]
async fn websocket_ping_frame_is_answered_with_pong_frame() {
    let server = Server::start_default().await;
    let mut raw = RawWs::connect_app(server.addr).await;
    raw.send_frame(OP_PING, b"are-you-there").await;
    match raw.read_frame(RECV_TIMEOUT).await {
        RawNext::Frame {
            opcode: OP_PONG,
            payload,
        } => assert_eq!(payload, b"are-you-there"),
        other => panic!("expected a pong frame echoing the payload, got {other:?}"),
    }
}

#[tokio::test]
async fn server_sends_ping_frame_after_activity_timeout_of_silence() {
    let server = Server::start(fast_keepalive()).await;
    // Measured from before the upgrade request, the client's last frame: never too early.
    let silent_since = Instant::now();
    let mut raw = RawWs::connect_app(server.addr).await;
    match raw.read_frame(ACTIVITY + RECV_TIMEOUT).await {
        RawNext::Frame {
            opcode: OP_PING, ..
        } => {}
        other => panic!("expected a ping frame, got {other:?}"),
    }
    let waited = silent_since.elapsed();
    assert!(
        waited >= ACTIVITY,
        "pinged after only {waited:?} of silence (activity_timeout is {ACTIVITY:?})"
    );
}

#[tokio::test]
async fn client_silent_after_ping_is_closed_with_4201() {
    let server = Server::start(fast_keepalive()).await;
    let mut raw = RawWs::connect_app(server.addr).await;
    match raw.read_frame(ACTIVITY + RECV_TIMEOUT).await {
        RawNext::Frame {
            opcode: OP_PING, ..
        } => {}
        other => panic!("expected a ping frame, got {other:?}"),
    }
    let pinged_at = Instant::now();
    raw.expect_close(4201, PONG + RECV_TIMEOUT).await;
    // Half the timeout as margin: reading the ping may lag its sending on a loaded box.
    assert!(
        pinged_at.elapsed() >= PONG / 2,
        "closed {:?} after the ping, pong_timeout is {PONG:?}",
        pinged_at.elapsed()
    );
}

#[tokio::test]
async fn pong_frame_keeps_the_connection_open() {
    let server = Server::start(fast_keepalive()).await;
    let mut raw = RawWs::connect_app(server.addr).await;
    for round in 0..2 {
        match raw.read_frame(ACTIVITY + RECV_TIMEOUT).await {
            RawNext::Frame {
                opcode: OP_PING,
                payload,
            } => raw.send_frame(OP_PONG, &payload).await,
            other => panic!("round {round}: expected a ping frame, got {other:?}"),
        }
    }
    // Two full activity + pong periods have passed; the socket still answers.
    raw.send_json(&json!({"event": "pusher:ping", "data": {}}))
        .await;
    match raw.read_frame(RECV_TIMEOUT).await {
        RawNext::Frame {
            opcode: OP_TEXT,
            payload,
        } => assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&payload).expect("JSON"),
            json!({"event": "pusher:pong", "data": {}})
        ),
        other => panic!("expected pusher:pong, got {other:?}"),
    }
}

#[tokio::test]
async fn any_message_answers_a_ping() {
    let server = Server::start(fast_keepalive()).await;
    let mut raw = RawWs::connect_app(server.addr).await;
    match raw.read_frame(ACTIVITY + RECV_TIMEOUT).await {
        RawNext::Frame {
            opcode: OP_PING, ..
        } => {}
        other => panic!("expected a ping frame, got {other:?}"),
    }
    // A text message instead of a pong frame.
    raw.send_json(&json!({"event": "pusher:ping", "data": {}}))
        .await;
    match raw.read_frame(RECV_TIMEOUT).await {
        RawNext::Frame {
            opcode: OP_TEXT, ..
        } => {}
        other => panic!("expected pusher:pong, got {other:?}"),
    }
    // The next thing the server does is ping again after another silent period, not close.
    match raw.read_frame(ACTIVITY + RECV_TIMEOUT).await {
        RawNext::Frame {
            opcode: OP_PING, ..
        } => {}
        other => panic!("expected another ping frame (not a close), got {other:?}"),
    }
}

#[tokio::test]
async fn client_messages_count_as_activity() {
    let server = Server::start(fast_keepalive()).await;
    let mut raw = RawWs::connect_app(server.addr).await;
    // Talk every 250 ms for 2.5 activity timeouts; the server must never need to ping.
    let until = Instant::now() + ACTIVITY * 5 / 2;
    while Instant::now() < until {
        raw.send_json(&json!({"event": "pusher:ping", "data": {}}))
            .await;
        match raw.read_frame(RECV_TIMEOUT).await {
            RawNext::Frame {
                opcode: OP_TEXT, ..
            } => {}
            other => panic!("expected only pusher:pong while active, got {other:?}"),
        }
        match raw.read_frame(Duration::from_millis(250)).await {
            RawNext::TimedOut => {}
            other => panic!("expected nothing while active, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn tungstenite_client_that_reads_stays_connected() {
    // A normal client library answers ping frames by itself and is never dropped.
    let server = Server::start(fast_keepalive()).await;
    let mut client = server.client().await;
    let mut pings = 0;
    let deadline = Instant::now() + (ACTIVITY + RECV_TIMEOUT) * 2;
    while pings < 2 {
        assert!(Instant::now() < deadline, "no second ping frame");
        match client.next_within(ACTIVITY + RECV_TIMEOUT).await {
            common::Next::Frame(Message::Ping(_)) => pings += 1,
            other => panic!("expected only ping frames, got {other:?}"),
        }
    }
    client.assert_alive().await;
}
