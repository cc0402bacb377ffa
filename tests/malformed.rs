//! Malformed input from a client: answered with `pusher:error`, the socket stays open and
//! other clients are unaffected. Only an oversized message (1009) or invalid UTF-8 (1007)
//! closes the socket.
//! Rules: protocol-spec/connection.md ("Messages from the client") and protocol-spec/limits.md.

mod common;

use std::time::Duration;

use common::{APP_KEY, Client, QUIET, RECV_TIMEOUT, RawWs, Server, test_config};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// Every text the server must refuse with a `pusher:error` while keeping the socket open.
const BAD_TEXTS: &[&str] = &[
    "not json",
    "{\"event\":",
    "[1,2,3]",
    "\"pusher:ping\"",
    "42",
    "null",
    "{}",
    "{\"data\":{}}",
    "{\"event\":5,\"data\":{}}",
    "{\"event\":null}",
    "{\"event\":\"pusher:subscribe\",\"data\":{}}",
    "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":5}}",
    "{\"event\":\"pusher:subscribe\",\"data\":5}",
    "{\"event\":\"pusher:subscribe\"}",
    "{\"event\":\"pusher:subscribe\",\"data\":\"not json\"}",
    "{\"event\":\"pusher:unsubscribe\",\"data\":{}}",
    "{\"event\":\"client-x\",\"data\":{}}",
    "{\"event\":\"client-x\",\"channel\":5,\"data\":{}}",
    "{\"event\":\"hello\",\"data\":{}}",
    "{\"event\":\"\",\"data\":{}}",
];

#[tokio::test]
async fn each_malformed_message_gets_pusher_error_and_the_socket_stays_open() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    for text in BAD_TEXTS {
        client.send_text(*text).await;
        let frame = client.recv_json().await;
        assert!(
            frame["event"] == "pusher:error",
            "input {text:?} must get pusher:error, got {frame}"
        );
        common::assert_pusher_error(&frame, None);
        client.assert_alive().await;
    }
}

#[tokio::test]
async fn invalid_json_gets_pusher_error() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client.send_text("{not json").await;
    client.expect_pusher_error().await;
    client.assert_alive().await;
}

#[tokio::test]
async fn unknown_event_name_gets_pusher_error() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client
        .send_json(&json!({"event": "subscribe", "data": {"channel": "x"}}))
        .await;
    client.expect_pusher_error().await;
    client.expect_no_message(QUIET).await;
    client.assert_alive().await;
}

#[tokio::test]
async fn binary_frames_are_treated_like_text() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client
        .send(Message::binary(
            json!({"event": "pusher:ping", "data": {}})
                .to_string()
                .into_bytes(),
        ))
        .await;
    client
        .expect_json(&json!({"event": "pusher:pong", "data": {}}))
        .await;
    client
        .send(Message::binary(
            json!({"event": "pusher:subscribe", "data": {"auth": "", "channel": "bin"}})
                .to_string()
                .into_bytes(),
        ))
        .await;
    client
        .expect_json(&json!({
            "event": "pusher_internal:subscription_succeeded",
            "channel": "bin",
            "data": "{}"
        }))
        .await;
    client.send(Message::binary(b"not json".to_vec())).await;
    client.expect_pusher_error().await;
    client.assert_alive().await;
}

#[tokio::test]
async fn message_over_max_message_bytes_gets_error_then_close_1009() {
    let mut config = test_config();
    config.server.max_message_bytes = 1024;
    let server = Server::start(config).await;
    let mut client = server.client().await;
    // Exactly at the limit is fine.
    let at_limit = json!({"event": "pusher:ping", "data": {"pad": ""}}).to_string();
    let pad = "x".repeat(1024 - at_limit.len());
    let at_limit = json!({"event": "pusher:ping", "data": {"pad": pad}}).to_string();
    assert_eq!(at_limit.len(), 1024);
    client.send_text(at_limit).await;
    client
        .expect_json(&json!({"event": "pusher:pong", "data": {}}))
        .await;
    // One byte more is not.
    let over = json!({"event": "pusher:ping", "data": {"pad": format!("{pad}x")}}).to_string();
    client.send_text(over).await;
    let frame = client.recv_json().await;
    common::assert_pusher_error(&frame, None);
    match client.next_skipping_pings(common::RECV_TIMEOUT).await {
        common::Next::Frame(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_utf8_text_frame_is_closed_with_1007() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    client.send(Message::Frame(frame)).await;
    client.expect_close(1007).await;
}

#[tokio::test]
async fn bad_input_on_one_socket_does_not_affect_other_clients() {
    let server = Server::start_default().await;
    let mut bystander = server.client().await;
    bystander.subscribe("calm").await;
    let mut noisy = server.client().await;
    noisy.subscribe("calm").await;
    for text in BAD_TEXTS {
        noisy.send_text(*text).await;
        noisy.expect_pusher_error().await;
    }
    // A socket that is closed for an oversized message or bad UTF-8 harms no one either.
    let mut closed = Client::connect(server.addr).await;
    closed.subscribe("calm").await;
    let frame = Frame::message(vec![0xc3, 0x28], OpCode::Data(Data::Text), true);
    closed.send(Message::Frame(frame)).await;
    closed.expect_close(1007).await;

    bystander.expect_no_message(QUIET).await;
    server.api().publish("calm", "after", "storm").await;
    let expected = json!({"event": "after", "channel": "calm", "data": "storm"});
    bystander.expect_json(&expected).await;
    noisy.expect_json(&expected).await;
    noisy.assert_alive().await;
}

/// A masked client frame: FIN, `opcode`, and `payload` masked with a fixed key.
fn masked_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [9u8, 8, 7, 6];
    let mut frame = vec![first_byte, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test]
async fn websocket_protocol_violations_close_with_1002() {
    let server = Server::start_default().await;
    let violations: [(&str, Vec<u8>); 5] = [
        ("an unmasked frame", vec![0x81, 0x02, b'h', b'i']),
        ("reserved bits set", masked_frame(0xC1, b"hi")),
        ("an unknown opcode", masked_frame(0x83, b"hi")),
        (
            "a continuation with nothing to continue",
            masked_frame(0x80, b"hi"),
        ),
        ("a fragmented ping", masked_frame(0x09, b"hi")),
    ];
    for (what, bytes) in violations {
        eprintln!("sending {what}");
        let mut raw = RawWs::connect_app(server.addr).await;
        raw.send_raw(&bytes).await;
        raw.expect_close(1002, RECV_TIMEOUT).await;
    }
    server.client().await.assert_alive().await;
}

/// Bytes that arrive with the upgrade request are parsed before the new socket has ever been
/// reported writable. A protocol error among them must still close the socket with 1002,
/// and must not leave the connection's task spinning: on this test's single-threaded
/// runtime a spinning task would starve everything, so a watchdog ends the test instead of
/// letting it hang.
#[tokio::test]
async fn junk_sent_with_the_upgrade_request_closes_1002_and_stalls_nothing() {
    let watchdog = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = watchdog.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        if !done.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("junk_sent_with_the_upgrade_request: the server stopped making progress");
            std::process::exit(101);
        }
    });
    let server = Server::start_default().await;
    let junk = masked_frame(0xC1, b"reserved bits");
    let mut raw =
        RawWs::connect_then(server.addr, &format!("/app/{APP_KEY}?protocol=7"), &junk).await;
    raw.expect_connection_established().await;
    raw.expect_close(1002, RECV_TIMEOUT).await;
    let mut other = server.client().await;
    other.subscribe("after-junk").await;
    other.assert_alive().await;
    watchdog.store(true, std::sync::atomic::Ordering::SeqCst);
}
