//! Limits that protect the server and other clients: a slow reader's bounded outbox, the write
//! timeout for a reader that is stuck, and the per-app publish limits taken from config.
//! Rules: protocol-spec/limits.md.

mod common;

use std::time::{Duration, Instant};

use common::{Client, QUIET, Server, test_config};
use serde_json::{Value, json};

const EVENT_BYTES: usize = 60 * 1024;
/// 200 events of 60 KB: 12 MB, three times what loopback socket buffers held on the reference
/// box (about 4 MB, mostly the server's send buffer at `net.ipv4.tcp_wmem` max) plus the outbox.
const EVENTS: usize = 200;

/// Subscribes a slow client (which then stops reading) and a fast one (read by a task) to
/// `firehose`, publishes [`EVENTS`] large events over the HTTP API, and checks the fast client
/// got every one of them, in order. Returns the slow client, never read since subscribing,
/// and the fast one.
async fn firehose(server: &Server) -> (Client, Client) {
    let api = server.api();
    let mut slow = server.client().await;
    slow.subscribe("firehose").await;
    let mut fast = server.client().await;
    fast.subscribe("firehose").await;

    let reader = tokio::spawn(async move {
        for expected in 0..EVENTS {
            let frame: Value = fast.recv_json_within(Duration::from_secs(15)).await;
            assert_eq!(frame["event"], "big", "{frame:.200}");
            assert_eq!(frame["channel"], "firehose");
            let data = frame["data"].as_str().expect("data string");
            let index: usize = data[..8].parse().expect("index prefix");
            assert_eq!(index, expected, "fast client saw events out of order");
            assert_eq!(data.len(), EVENT_BYTES, "event {index} truncated");
        }
        fast
    });

    let pad = "p".repeat(EVENT_BYTES - 8);
    for i in 0..EVENTS {
        api.publish("firehose", "big", &format!("{i:08}{pad}"))
            .await;
    }
    let fast = match tokio::time::timeout(Duration::from_secs(30), reader).await {
        Ok(Ok(fast)) => fast,
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => panic!("fast reader failed: {e}"),
        Err(_) => panic!("fast client did not get all {EVENTS} events within 30 s"),
    };
    (slow, fast)
}

/// Waits until `firehose` has exactly `n` subscribers.
async fn wait_for_subscribers(server: &Server, n: u64, within: Duration) {
    let api = server.api();
    let deadline = Instant::now() + within;
    loop {
        let info = api
            .get("/channels/firehose", &[("info", "subscription_count")])
            .await;
        let count = info.ok()["subscription_count"].as_u64();
        if count == Some(n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "firehose still has {count:?} subscribers after {within:?}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn slow_reader_is_closed_with_4100_while_others_receive_every_event() {
    let mut config = test_config();
    config.server.outbox_limit_bytes = 256 * 1024;
    // Long enough that only the outbox limit, not a stalled write, can end the slow client.
    config.server.write_timeout = Duration::from_secs(60);
    let server = Server::start(config).await;
    let (mut slow, _fast) = firehose(&server).await;
    // The slow client reads again: what the kernel buffered, then the close. An unbounded
    // outbox would instead hand it all the events and no close.
    let (code, read) = slow.drain_until_closed(Duration::from_secs(15)).await;
    assert_eq!(
        code,
        Some(4100),
        "close code for an overflowing outbox ({read} events read)"
    );
    assert!(read < EVENTS, "slow client got all {EVENTS} events");
    wait_for_subscribers(&server, 1, common::RECV_TIMEOUT).await;
}

#[tokio::test]
async fn stuck_reader_is_dropped_after_write_timeout() {
    let mut config = test_config();
    // An outbox big enough for every event: only the write timeout can end the stuck reader.
    config.server.outbox_limit_bytes = 64 * 1024 * 1024;
    config.server.write_timeout = Duration::from_secs(1);
    let server = Server::start(config).await;
    let (mut stuck, _fast) = firehose(&server).await;
    wait_for_subscribers(&server, 1, Duration::from_secs(1) + common::RECV_TIMEOUT).await;
    let (_, read) = stuck.drain_until_closed(Duration::from_secs(15)).await;
    assert!(read < EVENTS, "stuck client got all {EVENTS} events");
}

#[tokio::test]
async fn configured_max_event_channels_is_enforced() {
    let mut config = test_config();
    config.apps[0].max_event_channels = 3;
    let server = Server::start(config).await;
    let api = server.api();
    api.post(
        "/events",
        &json!({"name": "e", "data": "d", "channels": ["a", "b", "c", "d"]}),
    )
    .await
    .assert_error(400);
    assert_eq!(
        api.post(
            "/events",
            &json!({"name": "e", "data": "d", "channels": ["a", "b", "c"]})
        )
        .await
        .ok(),
        &json!({})
    );
}

#[tokio::test]
async fn configured_max_batch_events_is_enforced() {
    let mut config = test_config();
    config.apps[0].max_batch_events = 2;
    let server = Server::start(config).await;
    let api = server.api();
    let item = json!({"name": "e", "data": "d", "channel": "a"});
    api.post("/batch_events", &json!({"batch": [item, item, item]}))
        .await
        .assert_error(400);
    assert_eq!(
        api.post("/batch_events", &json!({"batch": [item, item]}))
            .await
            .ok(),
        &json!({})
    );
}

#[tokio::test]
async fn configured_max_event_payload_bytes_is_enforced() {
    let mut config = test_config();
    config.apps[0].max_event_payload_bytes = 1000;
    let server = Server::start(config).await;
    let mut client = server.client().await;
    client.subscribe("sized").await;
    let api = server.api();
    api.post(
        "/events",
        &json!({"name": "e", "data": "x".repeat(1001), "channels": ["sized"]}),
    )
    .await
    .assert_error(413);
    client.expect_no_message(QUIET).await;
    api.publish("sized", "e", &"x".repeat(1000)).await;
    let frame = client.recv_json().await;
    assert_eq!(frame["data"].as_str().map(str::len), Some(1000));
}

/// The limit is on the data string itself, not on its escaped form in the request body: a
/// string of 1,000 quotes takes 2,000 characters in JSON and is still within 1,000 bytes.
#[tokio::test]
async fn max_event_payload_bytes_counts_the_data_unescaped() {
    let mut config = test_config();
    config.apps[0].max_event_payload_bytes = 1000;
    let server = Server::start(config).await;
    let mut client = server.client().await;
    client.subscribe("quoted").await;
    let api = server.api();
    api.post(
        "/events",
        &json!({"name": "e", "data": "\"".repeat(1001), "channels": ["quoted"]}),
    )
    .await
    .assert_error(413);
    client.expect_no_message(QUIET).await;
    api.publish("quoted", "e", &"\"".repeat(1000)).await;
    let frame = client.recv_json().await;
    assert_eq!(frame["data"].as_str(), Some("\"".repeat(1000).as_str()));
}
