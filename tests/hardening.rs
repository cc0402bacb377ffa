//! What a client with no credentials can make the server hold or say: unsigned bodies are
//! never read, slow or stalled HTTP clients are bounded in number and time, one socket's
//! subscriptions are capped and paced, replies never echo long input, and extreme values
//! are refused rather than overflowing.
//! Rules: protocol-spec/limits.md ("Unauthenticated clients") and protocol-spec/http-api.md.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads whatever the server sends until it closes the connection or `within` passes.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

fn status_of(response: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(response.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.parse().ok()
}

/// A request head for `POST /apps/1/events` that declares a body of `len` bytes.
fn post_head(query: &str, len: usize) -> String {
    format!(
        "POST /apps/1/events?{query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// Publishing and receiving still work: a new WebSocket subscribes and gets a signed publish.
async fn assert_service_works(server: &Server) {
    let mut client = server.client().await;
    let channel = fresh_channel("still-up");
    client.subscribe(&channel).await;
    server.api().publish(&channel, "ping", "{}").await;
    let frame = client.recv_json().await;
    assert_eq!(frame["event"], "ping", "{frame}");
}

#[tokio::test]
async fn unsigned_request_is_refused_before_its_body_is_read() {
    let server = Server::start(test_config()).await;
    // 1 MB declared, nothing sent: the answer comes at once, from the head alone.
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let head = post_head(
        "auth_key=app-key&auth_timestamp=1&auth_version=1.0&body_md5=00&auth_signature=00",
        1_000_000,
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let started = Instant::now();
    let (reply, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(
        status_of(&reply),
        Some(401),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(
        closed,
        "the connection is closed rather than left to drain 1 MB"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn header_only_flood_does_not_stop_clients_or_publishes() {
    let server = Server::start(test_config()).await;
    // 300 connections, each a head declaring 1 MB, then nothing.
    let mut flood = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        let head = post_head("auth_key=app-key&auth_signature=00", 1_000_000);
        s.write_all(head.as_bytes()).await.expect("write");
        flood.push(s);
    }
    assert_service_works(&server).await;
    for mut s in flood {
        let (reply, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        assert_eq!(status_of(&reply), Some(401));
        assert!(closed);
    }
}

#[tokio::test]
async fn signed_body_that_stalls_gets_408_after_the_http_timeout() {
    let mut config = test_config();
    config.server.http_timeout = Duration::from_secs(1);
    let server = Server::start(config).await;
    let body = json!({"name": "e", "channels": ["c"], "data": "x".repeat(1000)}).to_string();
    let req = server
        .api()
        .signed("POST", "/apps/1/events", &[], body.as_bytes());
    let query = req
        .params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(post_head(&query, body.len()).as_bytes())
        .await
        .expect("write head");
    stream
        .write_all(&body.as_bytes()[..100])
        .await
        .expect("write part of the body");
    let started = Instant::now();
    let (reply, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(
        status_of(&reply),
        Some(408),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn slow_request_head_is_closed_after_the_http_timeout() {
    let mut config = test_config();
    config.server.http_timeout = Duration::from_secs(1);
    let server = Server::start(config).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(4)).await;
    assert!(closed, "a head that never ends is dropped");
}

#[tokio::test]
async fn full_http_phase_evicts_the_oldest_stalled_connection_for_a_new_client() {
    let mut config = test_config();
    config.server.max_http_connections = 20;
    let server = Server::start(config).await;
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(b"GET /app/app-key?protocol=7 HTTP/1.1\r\n")
            .await
            .expect("write");
        stalled.push(s);
    }
    // Every place is taken by a connection less than a second old: a newcomer is refused at
    // once with 503, not queued.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut late = TcpStream::connect(server.addr).await.expect("connect");
    let (reply, closed) = read_until_closed(&mut late, Duration::from_secs(3)).await;
    assert_eq!(
        status_of(&reply),
        Some(503),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(closed);

    // Once they are older than a second, new clients take their places, oldest first.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_service_works(&server).await;
    let (_, first_closed) = read_until_closed(&mut stalled[0], Duration::from_secs(3)).await;
    assert!(first_closed, "the oldest stalled connection made room");
}

#[tokio::test]
async fn connections_per_ip_are_capped_when_configured() {
    let mut config = test_config();
    config.server.max_connections_per_ip = Some(3);
    let server = Server::start(config).await;
    let mut first = server.client().await;
    let _second = server.client().await;
    let _third = server.client().await;
    let mut fourth = TcpStream::connect(server.addr).await.expect("connect");
    let (reply, closed) = read_until_closed(&mut fourth, Duration::from_secs(3)).await;
    assert_eq!(
        status_of(&reply),
        Some(429),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(String::from_utf8_lossy(&reply).contains("Too many connections from 127.0.0.1"));
    assert!(closed);
    first
        .send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await;
    drop(first);
    // The closed socket gives its place back.
    let deadline = Instant::now() + RECV_TIMEOUT;
    loop {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let (reply, _) = read_until_closed(&mut s, Duration::from_secs(3)).await;
        if status_of(&reply) == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "the place was never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_counted() {
    let mut config = test_config();
    config.server.max_connections_per_ip = Some(1);
    config.server.trusted_proxies = vec![crier::config::IpRange::parse("127.0.0.1").expect("ip")];
    let server = Server::start(config).await;
    let upgrade = |client: &str| {
        format!(
            "GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Forwarded-For: {client}\r\n\r\n"
        )
    };
    let mut a = TcpStream::connect(server.addr).await.expect("connect");
    a.write_all(upgrade("203.0.113.1").as_bytes())
        .await
        .expect("write");
    let mut buf = [0u8; 12];
    a.read_exact(&mut buf).await.expect("read");
    assert_eq!(status_of(&buf), Some(101));
    // Another client through the same proxy is a different address...
    let mut b = TcpStream::connect(server.addr).await.expect("connect");
    b.write_all(upgrade("203.0.113.2").as_bytes())
        .await
        .expect("write");
    b.read_exact(&mut buf).await.expect("read");
    assert_eq!(status_of(&buf), Some(101));
    // ...and a second connection of the first one is over its limit.
    let mut c = TcpStream::connect(server.addr).await.expect("connect");
    c.write_all(upgrade("203.0.113.1").as_bytes())
        .await
        .expect("write");
    let (reply, _) = read_until_closed(&mut c, Duration::from_secs(3)).await;
    assert_eq!(
        status_of(&reply),
        Some(429),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

#[tokio::test]
async fn one_socket_holds_at_most_the_subscription_cap() {
    let mut config = test_config();
    config.apps[0].max_subscriptions_per_connection = 5;
    let server = Server::start(config).await;
    let mut client = server.client().await;
    let base = fresh_channel("cap");
    for i in 0..5 {
        client.subscribe(&format!("{base}-{i}")).await;
    }
    client.send_subscribe(&format!("{base}-5"), "", None).await;
    let error = client
        .expect_subscription_error(&format!("{base}-5"), 403)
        .await;
    assert_eq!(error["type"], "LimitReached", "{error}");
    // Subscribing again to a channel it holds is no new subscription.
    client.send_subscribe(&format!("{base}-0"), "", None).await;
    client.expect_subscribed(&format!("{base}-0")).await;
    client.unsubscribe(&format!("{base}-0")).await;
    client.subscribe(&format!("{base}-5")).await;
    let channels = server.api().get("/channels", &[]).await;
    let held = channels.ok()["channels"]
        .as_object()
        .map(|m| m.keys().filter(|k| k.starts_with(&base)).count());
    assert_eq!(held, Some(5));
}

#[tokio::test]
async fn subscribe_messages_are_paced_beyond_a_burst() {
    let mut config = test_config();
    config.apps[0].max_subscriptions_per_connection = 3;
    config.apps[0].subscriptions_per_second = 2;
    let server = Server::start(config).await;
    let mut client = server.client().await;
    let base = fresh_channel("pace");
    // The burst is as deep as the cap: a reconnecting client resubscribes everything at once.
    for i in 0..3 {
        client.subscribe(&format!("{base}-{i}")).await;
    }
    client.unsubscribe(&format!("{base}-0")).await;
    client.send_subscribe(&format!("{base}-3"), "", None).await;
    let error = client
        .expect_subscription_error(&format!("{base}-3"), 429)
        .await;
    assert_eq!(error["type"], "LimitReached", "{error}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client.subscribe(&format!("{base}-3")).await;
}

#[tokio::test]
async fn long_client_input_is_not_echoed_back() {
    let server = Server::start(test_config()).await;
    let mut client = server.client().await;
    let long = "x".repeat(200_000);

    client
        .send_json(&json!({"event": "pusher:subscribe", "data": {"channel": long}}))
        .await;
    let reply = client.recv_json().await;
    assert_eq!(reply["event"], "pusher:subscription_error");
    assert!(
        reply.to_string().len() < 3_000,
        "{} bytes",
        reply.to_string().len()
    );

    client.send_json(&json!({"event": long, "data": {}})).await;
    let reply = client.recv_json().await;
    assert_eq!(reply["event"], "pusher:error", "{reply}");
    assert!(
        reply.to_string().len() < 3_000,
        "{} bytes",
        reply.to_string().len()
    );
    client.assert_alive().await;

    let path = format!("/apps/{}/events", "9".repeat(10_000));
    let reply = http_request(server.addr, "POST", &path, b"{}".to_vec()).await;
    reply.assert_error(404);
    assert!(reply.text.len() < 3_000, "{} bytes", reply.text.len());
}

#[tokio::test]
async fn extreme_auth_timestamps_get_401() {
    let server = Server::start(test_config()).await;
    let api = server.api();
    for ts in ["-9223372036854775808", "9223372036854775807"] {
        let mut req = api.signed("GET", "/apps/1/channels", &[], b"");
        req.set_param("auth_timestamp", ts);
        api.sign(&mut req);
        let reply = api.send(&req).await;
        reply.assert_error(401);
        assert!(reply.text.contains("Timestamp expired"), "{}", reply.text);
    }
    assert_service_works(&server).await;
}

#[tokio::test]
async fn data_must_be_a_string_and_channel_and_channels_exclude_each_other() {
    let server = Server::start(test_config()).await;
    let api = server.api();
    let mut client = server.client().await;
    let channel = fresh_channel("shape");
    client.subscribe(&channel).await;

    let reply = api
        .post(
            "/events",
            &json!({"name": "e", "channels": [channel], "data": {"id": 1}}),
        )
        .await;
    reply.assert_error(400);
    assert!(reply.text.contains("string"), "{}", reply.text);

    let reply = api
        .post(
            "/events",
            &json!({"name": "e", "channels": [channel], "channel": channel, "data": "{}"}),
        )
        .await;
    reply.assert_error(400);
    assert!(reply.text.contains("not both"), "{}", reply.text);

    client.expect_no_message(QUIET).await;
}

/// Several hundred stalled connections from one client do not make the server refuse a
/// WebSocket that arrives later, nor delay a publish to it.
#[tokio::test]
async fn stalled_heads_beyond_the_cap_never_lock_out_a_late_client() {
    let mut config = test_config();
    config.server.max_http_connections = 100;
    let server = Server::start(config).await;
    let mut stalled = Vec::new();
    for _ in 0..400 {
        let Ok(mut s) = TcpStream::connect(server.addr).await else {
            continue;
        };
        let _ = s.write_all(b"POST /apps/1/events HTTP/1.1\r\n").await;
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_service_works(&server).await;
    drop(stalled);
}
