//! Several Crier nodes joined through a real `redis-server`: publishes, exclusions and client
//! events cross nodes exactly once and in order, a subscription is acknowledged only once
//! cross-node events will reach it, nodes listen only to channels they have subscribers on,
//! prefixes separate clusters, and losing Redis costs only cross-node delivery, which comes
//! back with Redis.
//! Rules: protocol-spec/cluster.md.

mod common;

use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::*;
use serde_json::json;

/// A node of the cluster on `redis`, with `prefix`.
async fn node(redis: &RedisServer, prefix: &str, name: &str) -> Server {
    let mut config = test_config();
    config.cluster.redis_url = Some(redis.url());
    config.cluster.prefix = prefix.to_string();
    config.cluster.node_id = Some(name.to_string());
    let server = Server::start(config).await;
    // The node has joined once its link listens: a subscriber's acknowledgement says so.
    let mut probe = server.client().await;
    probe.subscribe(&fresh_channel("probe")).await;
    server
}

/// Waits until the Redis channel for `channel` has `n` listening nodes.
async fn wait_listeners(redis: &RedisServer, prefix: &str, channel: &str, n: usize) {
    let key = format!("{prefix}:1:{channel}");
    let deadline = Instant::now() + RECV_TIMEOUT;
    while redis.listeners(&key) != n {
        assert!(
            Instant::now() < deadline,
            "{key} has {} listeners, expected {n}",
            redis.listeners(&key)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn expect_event(client: &mut Client, channel: &str, name: &str, data: &str) {
    let frame = client.recv_json().await;
    assert_eq!(
        frame,
        json!({"event": name, "channel": channel, "data": data}),
        "{frame}"
    );
}

#[tokio::test]
async fn a_publish_on_one_node_reaches_every_node_exactly_once() {
    let redis = RedisServer::start();
    let a = node(&redis, "t1", "a").await;
    let b = node(&redis, "t1", "b").await;
    let c = node(&redis, "t1", "c").await;
    let channel = fresh_channel("everywhere");
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    let mut on_c = c.client().await;
    let mut also_on_c = c.client().await;
    for client in [&mut on_a, &mut on_b, &mut on_c, &mut also_on_c] {
        client.subscribe(&channel).await;
    }
    a.api().publish(&channel, "hello", "{\"n\":1}").await;
    for client in [&mut on_a, &mut on_b, &mut on_c, &mut also_on_c] {
        expect_event(client, &channel, "hello", "{\"n\":1}").await;
    }
    for client in [&mut on_a, &mut on_b, &mut on_c, &mut also_on_c] {
        client.expect_no_message(QUIET).await;
    }
}

#[tokio::test]
async fn events_published_through_one_node_arrive_in_publish_order() {
    let redis = RedisServer::start();
    let a = node(&redis, "t2", "a").await;
    let b = node(&redis, "t2", "b").await;
    let channel = fresh_channel("ordered");
    let mut on_b = b.client().await;
    on_b.subscribe(&channel).await;
    let api = a.api();
    for i in 0..100 {
        api.publish(&channel, "n", &i.to_string()).await;
    }
    for i in 0..100 {
        expect_event(&mut on_b, &channel, "n", &i.to_string()).await;
    }
}

#[tokio::test]
async fn a_publish_sent_after_the_acknowledgement_is_never_missed() {
    let redis = RedisServer::start();
    let a = node(&redis, "t3", "a").await;
    let b = node(&redis, "t3", "b").await;
    let api = a.api();
    let mut on_b = b.client().await;
    // Each channel is new to node b: its subscription_succeeded may come only once b hears
    // the channel, so the publish right after it must arrive.
    for i in 0..30 {
        let channel = fresh_channel(&format!("fresh-{i}"));
        on_b.subscribe(&channel).await;
        api.publish(&channel, "first", "x").await;
        expect_event(&mut on_b, &channel, "first", "x").await;
    }
    // With Redis frozen, node b cannot hear a new channel: it must not acknowledge it yet.
    let channel = fresh_channel("frozen");
    redis.freeze();
    on_b.send_subscribe(&channel, "", None).await;
    let early = on_b.next_within(Duration::from_millis(500)).await;
    redis.thaw();
    assert!(
        matches!(early, Next::TimedOut),
        "acknowledged before the node could hear the channel: {early:?}"
    );
    on_b.expect_subscribed(&channel).await;
    api.publish(&channel, "first", "y").await;
    expect_event(&mut on_b, &channel, "first", "y").await;
}

#[tokio::test]
async fn socket_id_exclusion_works_across_nodes() {
    let redis = RedisServer::start();
    let a = node(&redis, "t4", "a").await;
    let b = node(&redis, "t4", "b").await;
    let channel = fresh_channel("except");
    let mut excluded = b.client().await;
    let mut other = b.client().await;
    let mut on_a = a.client().await;
    for client in [&mut excluded, &mut other, &mut on_a] {
        client.subscribe(&channel).await;
    }
    let reply = a
        .api()
        .post(
            "/events",
            &json!({"name": "e", "data": "d", "channels": [channel], "socket_id": excluded.socket_id}),
        )
        .await;
    reply.ok();
    expect_event(&mut other, &channel, "e", "d").await;
    expect_event(&mut on_a, &channel, "e", "d").await;
    excluded.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn client_events_cross_nodes_and_never_echo() {
    let redis = RedisServer::start();
    let a = node(&redis, "t5", "a").await;
    let b = node(&redis, "t5", "b").await;
    let channel = fresh_channel("private-chat-");
    let mut sender = a.client().await;
    let mut receiver = b.client().await;
    sender.subscribe_private(&channel).await;
    receiver.subscribe_private(&channel).await;
    let event = json!({"event": "client-typing", "channel": channel, "data": {"who": "ann"}});
    sender.send_json(&event).await;
    receiver.expect_json(&event).await;
    sender.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn nodes_listen_only_to_channels_with_local_subscribers() {
    let redis = RedisServer::start();
    let a = node(&redis, "t6", "a").await;
    let _b = node(&redis, "t6", "b").await;
    let channel = fresh_channel("interest");
    let mut first = a.client().await;
    let mut second = a.client().await;
    first.subscribe(&channel).await;
    second.subscribe(&channel).await;
    // One Redis subscription for the node, however many local subscribers; none on b.
    wait_listeners(&redis, "t6", &channel, 1).await;
    first.unsubscribe(&channel).await;
    tokio::time::sleep(QUIET).await;
    wait_listeners(&redis, "t6", &channel, 1).await;
    second.unsubscribe(&channel).await;
    wait_listeners(&redis, "t6", &channel, 0).await;
    // A channel nobody subscribes to anywhere is not listened to at all.
    let listened = redis.channels("t6:1:*");
    assert!(
        !listened.iter().any(|c| c.ends_with(&channel)),
        "{listened:?}"
    );
}

#[tokio::test]
async fn clusters_with_different_prefixes_share_redis_without_seeing_each_other() {
    let redis = RedisServer::start();
    let blue = node(&redis, "blue", "a").await;
    let green = node(&redis, "green", "b").await;
    let channel = fresh_channel("shared-name");
    let mut on_blue = blue.client().await;
    let mut on_green = green.client().await;
    on_blue.subscribe(&channel).await;
    on_green.subscribe(&channel).await;
    blue.api().publish(&channel, "e", "blue only").await;
    expect_event(&mut on_blue, &channel, "e", "blue only").await;
    on_green.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn without_redis_nodes_serve_their_own_clients_and_recover_when_it_returns() {
    let mut redis = RedisServer::start();
    let a = node(&redis, "t8", "a").await;
    let b = node(&redis, "t8", "b").await;
    let channel = fresh_channel("outage");
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    on_a.subscribe(&channel).await;
    on_b.subscribe(&channel).await;

    redis.stop();
    // Publishes still answer 200 and reach the node's own subscribers.
    a.api().publish(&channel, "during", "1").await;
    expect_event(&mut on_a, &channel, "during", "1").await;
    on_b.expect_no_message(QUIET).await;
    // New subscriptions are acknowledged without Redis.
    let mut late = a.client().await;
    late.subscribe(&fresh_channel("outage-new")).await;

    redis.restart();
    // Each node subscribes again by itself: cross-node delivery comes back without a restart.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    loop {
        n += 1;
        a.api().publish(&channel, "after", &n.to_string()).await;
        expect_event(&mut on_a, &channel, "after", &n.to_string()).await;
        if let Next::Frame(message) = on_b.next_within(Duration::from_millis(300)).await {
            let frame: serde_json::Value =
                serde_json::from_str(message.to_text().unwrap_or("")).unwrap_or_default();
            assert_eq!(frame["event"], "after", "{frame}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cross-node delivery did not come back"
        );
    }
    // And from the other side too.
    b.api().publish(&channel, "back", "b").await;
    expect_event(&mut on_a, &channel, "back", "b").await;
}
