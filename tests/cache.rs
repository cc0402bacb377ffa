//! Cache channels (`cache-`, `private-cache-`, `presence-cache-`, `private-encrypted-cache-`):
//! the last event published through the HTTP API is handed to each new subscriber, or
//! `pusher:cache_miss` when there is none; `GET /channels/{name}?info=cache`; expiry.
//! Rules: protocol-spec/cache-channels.md.

mod common;

use std::time::{Duration, Instant};

use common::{Client, QUIET, Server, fresh_channel, test_config};
use serde_json::{Value, json};

fn cache_miss(channel: &str) -> Value {
    json!({"event": "pusher:cache_miss", "channel": channel})
}

fn event(name: &str, channel: &str, data: &str) -> Value {
    json!({"event": name, "channel": channel, "data": data})
}

/// Subscribes to any kind of cache channel with a valid authorisation and reads its
/// `subscription_succeeded` (but not what follows it).
async fn join(client: &mut Client, channel: &str) {
    if channel.starts_with("presence-") {
        client.subscribe_presence(channel, "u", json!({})).await;
    } else if channel.starts_with("private-") {
        let auth = client.auth(channel, None);
        client.send_subscribe(channel, &auth, None).await;
        client
            .expect_json(&json!({
                "event": "pusher_internal:subscription_succeeded",
                "channel": channel,
                "data": "{}"
            }))
            .await;
    } else {
        client.subscribe(channel).await;
    }
}

const PREFIXES: [&str; 4] = [
    "cache-",
    "private-cache-",
    "presence-cache-",
    "private-encrypted-cache-",
];

async fn server_with_ttl(ttl: Duration) -> Server {
    let mut config = test_config();
    config.apps[0].cache_ttl = ttl;
    Server::start(config).await
}

#[tokio::test]
async fn subscribing_with_nothing_cached_gets_succeeded_then_cache_miss() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    for prefix in PREFIXES {
        let channel = fresh_channel(prefix);
        join(&mut client, &channel).await;
        client.expect_json(&cache_miss(&channel)).await;
    }
    client.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn non_cache_channels_get_no_cache_miss() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    for prefix in [
        "public-",
        "private-",
        "presence-",
        "private-encrypted-",
        "cachex-",
    ] {
        join(&mut client, &fresh_channel(prefix)).await;
    }
    client.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn new_subscriber_gets_succeeded_then_the_last_published_event() {
    let server = Server::start_default().await;
    let api = server.api();
    let mut client = server.client().await;
    for prefix in PREFIXES {
        let channel = fresh_channel(prefix);
        api.publish(&channel, "first", "1").await;
        let data = "{ \"v\" : \"caf\\u00e9\" }";
        api.publish(&channel, "App\\Second", data).await;
        join(&mut client, &channel).await;
        client
            .expect_json(&event("App\\Second", &channel, data))
            .await;
    }
    client.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn current_subscribers_get_a_cached_event_once_as_usual() {
    let server = Server::start_default().await;
    let channel = fresh_channel("cache-live-");
    let mut client = server.client().await;
    join(&mut client, &channel).await;
    client.expect_json(&cache_miss(&channel)).await;
    server.api().publish(&channel, "e", "live").await;
    client.expect_json(&event("e", &channel, "live")).await;
    client.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn batch_events_are_cached_too() {
    let server = Server::start_default().await;
    let channel = fresh_channel("cache-batch-");
    let response = server
        .api()
        .post(
            "/batch_events",
            &json!({"batch": [
                {"name": "one", "data": "1", "channel": channel},
                {"name": "two", "data": "2", "channel": channel},
            ]}),
        )
        .await;
    response.ok();
    let mut client = server.client().await;
    join(&mut client, &channel).await;
    client.expect_json(&event("two", &channel, "2")).await;
}

#[tokio::test]
async fn client_events_on_private_cache_channels_are_delivered_but_not_cached() {
    let server = Server::start_default().await;
    let channel = fresh_channel("private-cache-chat-");
    server.api().publish(&channel, "api", "from-api").await;
    let mut sender = server.client().await;
    let mut receiver = server.client().await;
    for client in [&mut sender, &mut receiver] {
        join(client, &channel).await;
        client
            .expect_json(&event("api", &channel, "from-api"))
            .await;
    }
    let whisper = json!({"event": "client-typing", "channel": channel, "data": {"t": 1}});
    sender.send_json(&whisper).await;
    receiver.expect_json(&whisper).await;
    let mut late = server.client().await;
    join(&mut late, &channel).await;
    late.expect_json(&event("api", &channel, "from-api")).await;
    late.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn cached_event_outlives_the_channels_subscribers() {
    let server = Server::start_default().await;
    let channel = fresh_channel("cache-gone-");
    let mut first = server.client().await;
    join(&mut first, &channel).await;
    first.expect_json(&cache_miss(&channel)).await;
    server.api().publish(&channel, "e", "kept").await;
    first.expect_json(&event("e", &channel, "kept")).await;
    drop(first);
    let mut second = server.client().await;
    join(&mut second, &channel).await;
    second.expect_json(&event("e", &channel, "kept")).await;
}

#[tokio::test]
async fn info_cache_reports_the_cached_data_and_remaining_ttl() {
    let server = server_with_ttl(Duration::from_secs(60)).await;
    let api = server.api();
    let channel = fresh_channel("cache-info-");
    let path = format!("/channels/{channel}");
    let before = api.get(&path, &[("info", "cache")]).await;
    assert_eq!(before.ok(), &json!({"occupied": false, "cache": null}));
    let data = "{\"price\":\"1.50\"}";
    api.publish(&channel, "tick", data).await;
    let mut client = server.client().await;
    join(&mut client, &channel).await;
    let after = api.get(&path, &[("info", "cache")]).await;
    let body = after.ok();
    let ttl = body["cache"]["ttl"]
        .as_u64()
        .unwrap_or_else(|| panic!("ttl must be a whole number of seconds: {body}"));
    assert!(
        (50..=60).contains(&ttl),
        "ttl is the remaining time, at most cache_ttl: {body}"
    );
    // `data` is the event's data string, not the whole event.
    assert_eq!(
        body,
        &json!({"occupied": true, "cache": {"data": data, "ttl": ttl}})
    );
}

#[tokio::test]
async fn info_cache_on_a_channel_that_is_not_a_cache_channel_is_400() {
    let server = Server::start_default().await;
    let api = server.api();
    for channel in ["news", "private-x", "presence-x", "private-encrypted-x"] {
        api.get(&format!("/channels/{channel}"), &[("info", "cache")])
            .await
            .assert_error(400);
    }
}

#[tokio::test]
async fn a_cache_entry_alone_is_not_occupancy() {
    let server = Server::start_default().await;
    let api = server.api();
    let channel = fresh_channel("cache-lonely-");
    api.publish(&channel, "e", "d").await;
    let info = api.get(&format!("/channels/{channel}"), &[]).await;
    assert_eq!(info.ok(), &json!({"occupied": false}));
    let list = api
        .get("/channels", &[("filter_by_prefix", &channel)])
        .await;
    assert_eq!(list.ok(), &json!({"channels": {}}));
    // Once someone subscribes it is listed as usual.
    let mut client = server.client().await;
    join(&mut client, &channel).await;
    let list = api
        .get("/channels", &[("filter_by_prefix", &channel)])
        .await;
    assert_eq!(list.ok(), &json!({"channels": {channel.clone(): {}}}));
}

#[tokio::test]
async fn cached_event_expires_after_cache_ttl() {
    let server = server_with_ttl(Duration::from_secs(1)).await;
    let api = server.api();
    let channel = fresh_channel("cache-expire-");
    let mut fresh = server.client().await;
    let mut late = server.client().await;
    let published = Instant::now();
    api.publish(&channel, "e", "short-lived").await;
    join(&mut fresh, &channel).await;
    fresh
        .expect_json(&event("e", &channel, "short-lived"))
        .await;
    tokio::time::sleep_until((published + Duration::from_millis(1200)).into()).await;
    join(&mut late, &channel).await;
    late.expect_json(&cache_miss(&channel)).await;
    let info = api
        .get(&format!("/channels/{channel}"), &[("info", "cache")])
        .await;
    assert_eq!(info.ok()["cache"], json!(null), "{}", info.text);
}

#[tokio::test]
async fn publishing_again_restarts_the_ttl() {
    let server = server_with_ttl(Duration::from_secs(2)).await;
    let api = server.api();
    let channel = fresh_channel("cache-refresh-");
    let mut client = server.client().await;
    let first = Instant::now();
    api.publish(&channel, "e", "one").await;
    tokio::time::sleep_until((first + Duration::from_millis(1200)).into()).await;
    api.publish(&channel, "e", "two").await;
    // Past the first event's expiry, well within the second's.
    tokio::time::sleep_until((first + Duration::from_millis(2300)).into()).await;
    join(&mut client, &channel).await;
    client.expect_json(&event("e", &channel, "two")).await;
}
