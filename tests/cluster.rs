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

/// The user ids in a `subscription_succeeded` data's presence hash, sorted.
fn member_ids(data: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = data["presence"]["hash"]
        .as_object()
        .map(|h| h.keys().cloned().collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

async fn expect_member_event(client: &mut Client, channel: &str, event: &str, user: &str) {
    let frame = client.recv_json().await;
    assert_eq!(frame["event"], event, "{frame}");
    assert_eq!(frame["channel"], channel, "{frame}");
    assert_eq!(data_json(&frame)["user_id"], user, "{frame}");
}

#[tokio::test]
async fn presence_members_are_counted_across_the_cluster() {
    let redis = RedisServer::start();
    let a = node(&redis, "p1", "a").await;
    let b = node(&redis, "p1", "b").await;
    let c = node(&redis, "p1", "c").await;
    let channel = fresh_channel("presence-room-");
    let mut ann = a.client().await;
    let joined = ann
        .subscribe_presence(&channel, "ann", json!({"name": "Ann"}))
        .await;
    assert_eq!(member_ids(&joined), ["ann"]);

    // Bob's first socket, on another node: Ann is told, Bob gets both.
    let mut bob = b.client().await;
    let joined = bob
        .subscribe_presence(&channel, "bob", json!({"name": "Bob"}))
        .await;
    assert_eq!(member_ids(&joined), ["ann", "bob"]);
    assert_eq!(joined["presence"]["hash"]["ann"]["name"], "Ann");
    let added = ann.recv_json().await;
    assert_eq!(added["event"], "pusher_internal:member_added", "{added}");
    assert_eq!(
        data_json(&added),
        json!({"user_id": "bob", "user_info": {"name": "Bob"}})
    );

    // Bob's second socket, on a third node: nobody is told again.
    let mut bob_again = c.client().await;
    let joined = bob_again
        .subscribe_presence(&channel, "bob", json!({"name": "Bob"}))
        .await;
    assert_eq!(member_ids(&joined), ["ann", "bob"]);
    ann.expect_no_message(QUIET).await;
    bob.expect_no_message(QUIET).await;

    // Bob leaves only when his last socket anywhere goes.
    drop(bob);
    ann.expect_no_message(QUIET).await;
    drop(bob_again);
    expect_member_event(&mut ann, &channel, "pusher_internal:member_removed", "bob").await;
    ann.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn the_presence_member_limit_holds_across_the_cluster() {
    let redis = RedisServer::start();
    let mut config = test_config();
    config.cluster.redis_url = Some(redis.url());
    config.cluster.prefix = "p2".into();
    config.apps[0].max_presence_members = 2;
    let a = Server::start(config.clone()).await;
    let b = Server::start(config).await;
    let channel = fresh_channel("presence-full-");
    let mut one = a.client().await;
    one.subscribe_presence(&channel, "1", json!({})).await;
    let mut two = b.client().await;
    two.subscribe_presence(&channel, "2", json!({})).await;
    let mut three = a.client().await;
    let data = presence_data("3", json!({}));
    let auth = three.auth(&channel, Some(&data));
    three.send_subscribe(&channel, &auth, Some(&data)).await;
    let error = three.expect_subscription_error(&channel, 403).await;
    assert_eq!(error["type"], "LimitReached", "{error}");
    // Another socket of a member still gets in.
    let mut two_again = a.client().await;
    two_again.subscribe_presence(&channel, "2", json!({})).await;
}

/// A node as its own process, so that it can be killed like a crashed machine.
struct NodeProcess {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl NodeProcess {
    fn start(redis: &RedisServer, prefix: &str, name: &str) -> NodeProcess {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_crier"));
        for (key, _) in std::env::vars() {
            if key.starts_with("CRIER_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args([
                "--redis-url",
                &redis.url(),
                "--redis-prefix",
                prefix,
                "--node-id",
                name,
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start a crier node");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .split_whitespace()
            .nth(3)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        NodeProcess { child, addr }
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_killed_node_s_members_are_removed_within_five_seconds_exactly_once() {
    let redis = RedisServer::start();
    let a = node(&redis, "p3", "a").await;
    let doomed = NodeProcess::start(&redis, "p3", "doomed");
    let channel = fresh_channel("presence-crash-");
    let mut ann = a.client().await;
    ann.subscribe_presence(&channel, "ann", json!({})).await;
    // Carl on the doomed node only; Dana on both nodes.
    let mut carl = Client::connect(doomed.addr).await;
    carl.subscribe_presence(&channel, "carl", json!({})).await;
    expect_member_event(&mut ann, &channel, "pusher_internal:member_added", "carl").await;
    let mut dana_doomed = Client::connect(doomed.addr).await;
    dana_doomed
        .subscribe_presence(&channel, "dana", json!({}))
        .await;
    expect_member_event(&mut ann, &channel, "pusher_internal:member_added", "dana").await;
    let mut dana = a.client().await;
    dana.subscribe_presence(&channel, "dana", json!({})).await;

    doomed.signal("-KILL");
    let killed = Instant::now();
    expect_member_event(&mut ann, &channel, "pusher_internal:member_removed", "carl").await;
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "removed after {:?}",
        killed.elapsed()
    );
    // Dana still has a socket on node a: she stays, and nothing else is announced.
    ann.expect_no_message(Duration::from_secs(2)).await;
    let mut late = a.client().await;
    let joined = late.subscribe_presence(&channel, "eve", json!({})).await;
    assert_eq!(member_ids(&joined), ["ann", "dana", "eve"]);
}

#[tokio::test]
async fn a_node_stopped_with_sigterm_removes_its_members_at_once() {
    let redis = RedisServer::start();
    let a = node(&redis, "p4", "a").await;
    let leaving = NodeProcess::start(&redis, "p4", "leaving");
    let channel = fresh_channel("presence-deploy-");
    let mut ann = a.client().await;
    ann.subscribe_presence(&channel, "ann", json!({})).await;
    let mut carl = Client::connect(leaving.addr).await;
    carl.subscribe_presence(&channel, "carl", json!({})).await;
    expect_member_event(&mut ann, &channel, "pusher_internal:member_added", "carl").await;
    leaving.signal("-TERM");
    let stopped = Instant::now();
    expect_member_event(&mut ann, &channel, "pusher_internal:member_removed", "carl").await;
    assert!(
        stopped.elapsed() < Duration::from_millis(1500),
        "removed after {:?}, not at once",
        stopped.elapsed()
    );
    ann.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn presence_is_whole_again_after_redis_restarts_empty() {
    let mut redis = RedisServer::start();
    let a = node(&redis, "p5", "a").await;
    let b = node(&redis, "p5", "b").await;
    let channel = fresh_channel("presence-restart-");
    let mut ann = a.client().await;
    ann.subscribe_presence(&channel, "ann", json!({})).await;
    let mut bob = b.client().await;
    bob.subscribe_presence(&channel, "bob", json!({})).await;
    expect_member_event(&mut ann, &channel, "pusher_internal:member_added", "bob").await;

    redis.restart();
    // Every node asserts its users anew: a newcomer anywhere sees both, without a restart.
    wait_for_whole_list(&a, &channel).await;
}

/// Joins `channel` on `server` as a probe until the member list is `ann`, `bob` and the
/// probe (at most 15 s): the cluster's presence has been asserted anew.
async fn wait_for_whole_list(server: &Server, channel: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut probe = server.client().await;
        let joined = probe.subscribe_presence(channel, "probe", json!({})).await;
        if member_ids(&joined) == ["ann", "bob", "probe"] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "member list never came back: {joined}"
        );
        drop(probe);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `GET suffix` on `api` until `check` accepts the JSON answer (counts reach Redis
/// within 100 ms of a change, a dead node's within its 3 s lease).
async fn wait_for_answer(
    api: &Api,
    suffix: &str,
    params: &[(&str, &str)],
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let reply = api.get(suffix, params).await;
        let json = reply.ok().clone();
        if check(&json) {
            return json;
        }
        assert!(Instant::now() < deadline, "{suffix}: last answer {json}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn http_api_queries_answer_for_the_whole_cluster_on_any_node() {
    let redis = RedisServer::start();
    let a = node(&redis, "q1", "a").await;
    let b = node(&redis, "q1", "b").await;
    let c = node(&redis, "q1", "c").await;
    let crashing = NodeProcess::start(&redis, "q1", "crashing");
    let public = fresh_channel("counted-");
    let room = fresh_channel("presence-counted-");
    let mut sockets = Vec::new();
    for server in [&a, &a, &b] {
        let mut client = server.client().await;
        client.subscribe(&public).await;
        sockets.push(client);
    }
    let mut far = Client::connect(crashing.addr).await;
    far.subscribe(&public).await;
    let mut ann = a.client().await;
    ann.subscribe_presence(&room, "ann", json!({})).await;
    let mut bob = b.client().await;
    bob.subscribe_presence(&room, "bob", json!({})).await;

    // Asked on node c, which has no subscriber at all.
    let api = c.api();
    let one = format!("/channels/{public}");
    wait_for_answer(&api, &one, &[("info", "subscription_count")], |j| {
        j == &json!({"occupied": true, "subscription_count": 4})
    })
    .await;
    let all = wait_for_answer(&api, "/channels", &[("info", "subscription_count")], |j| {
        j["channels"][&public]["subscription_count"] == 4
            && j["channels"][&room]["subscription_count"] == 2
    })
    .await;
    assert!(
        all["channels"].as_object().is_some_and(|m| m.len() >= 2),
        "{all}"
    );
    wait_for_answer(
        &api,
        "/channels",
        &[("filter_by_prefix", "presence-"), ("info", "user_count")],
        |j| j["channels"][&room] == json!({"user_count": 2}),
    )
    .await;
    let users = api.get(&format!("/channels/{room}/users"), &[]).await;
    let mut ids: Vec<String> = users.ok()["users"]
        .as_array()
        .map(|u| {
            u.iter()
                .filter_map(|x| x["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    assert_eq!(ids, ["ann", "bob"]);

    // A node that dies stops counting within its lease.
    crashing.signal("-KILL");
    wait_for_answer(&api, &one, &[("info", "subscription_count")], |j| {
        j == &json!({"occupied": true, "subscription_count": 3})
    })
    .await;
    // The last subscriber anywhere gone: unoccupied everywhere.
    drop(sockets);
    wait_for_answer(&a.api(), &one, &[], |j| j == &json!({"occupied": false})).await;
}

#[tokio::test]
async fn events_to_a_user_and_terminating_a_user_reach_every_node() {
    let redis = RedisServer::start();
    let a = node(&redis, "u1", "a").await;
    let b = node(&redis, "u1", "b").await;
    let c = node(&redis, "u1", "c").await;
    let mut on_b = b.client().await;
    on_b.signin_as("zoe").await;
    let mut on_c = c.client().await;
    on_c.signin_as("zoe").await;
    let mut other = b.client().await;
    other.signin_as("yan").await;
    let key = "u1:1:#server-to-user-zoe";
    wait_listeners(&redis, "u1", "#server-to-user-zoe", 2).await;
    assert_eq!(redis.listeners(key), 2);

    a.api().publish("#server-to-user-zoe", "note", "hi").await;
    for client in [&mut on_b, &mut on_c] {
        expect_event(client, "#server-to-user-zoe", "note", "hi").await;
        client.expect_no_message(QUIET).await;
    }
    other.expect_no_message(QUIET).await;

    a.api().terminate("zoe").await.ok();
    on_b.expect_error_then_close(4009).await;
    on_c.expect_error_then_close(4009).await;
    other.assert_alive().await;
    // Nobody signed in as zoe anywhere: no node listens for her any more.
    wait_listeners(&redis, "u1", "#server-to-user-zoe", 0).await;
}

#[tokio::test]
async fn a_cache_channel_s_last_event_is_shared_by_every_node() {
    let redis = RedisServer::start();
    let a = node(&redis, "k1", "a").await;
    let b = node(&redis, "k1", "b").await;
    let channel = fresh_channel("cache-shared-");
    // Nobody anywhere has seen the channel: a miss.
    let mut first = b.client().await;
    first.subscribe(&channel).await;
    let miss = first.recv_json().await;
    assert_eq!(miss["event"], "pusher:cache_miss", "{miss}");
    drop(first);
    wait_listeners(&redis, "k1", &channel, 0).await;

    // Published on node a while nobody listens; a newcomer on node b still gets it.
    a.api().publish(&channel, "price", "42").await;
    let mut late = b.client().await;
    late.subscribe(&channel).await;
    expect_event(&mut late, &channel, "price", "42").await;
    // Node b keeps what it hears from then on for its own newcomers too.
    a.api().publish(&channel, "price", "43").await;
    expect_event(&mut late, &channel, "price", "43").await;
    let mut later = b.client().await;
    later.subscribe(&channel).await;
    expect_event(&mut later, &channel, "price", "43").await;
}

/// Reads frames until a `pusher_internal:subscription_count` with `n` arrives.
async fn expect_count(client: &mut Client, channel: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no subscription_count {n} on {channel}");
        let frame = client.recv_json_within(left).await;
        if frame["event"] == "pusher_internal:subscription_count"
            && data_json(&frame)["subscription_count"] == n
        {
            assert_eq!(frame["channel"], channel);
            return;
        }
    }
}

#[tokio::test]
async fn subscription_count_events_carry_the_cluster_count() {
    let redis = RedisServer::start();
    let mut config = test_config();
    config.cluster.redis_url = Some(redis.url());
    config.cluster.prefix = "sc".into();
    config.apps[0].subscription_count_events = true;
    let a = Server::start(config.clone()).await;
    let b = Server::start(config).await;
    let channel = fresh_channel("counted-live-");
    let mut watcher = a.client().await;
    watcher.subscribe(&channel).await;
    let mut second = a.client().await;
    second.subscribe(&channel).await;
    let mut remote = b.client().await;
    remote.subscribe(&channel).await;
    expect_count(&mut watcher, &channel, 3).await;
    expect_count(&mut remote, &channel, 3).await;
    drop(remote);
    expect_count(&mut watcher, &channel, 2).await;
}

#[tokio::test]
async fn max_connections_holds_across_the_cluster() {
    let redis = RedisServer::start();
    let mut config = test_config();
    config.cluster.redis_url = Some(redis.url());
    config.cluster.prefix = "mc".into();
    config.apps[0].max_connections = Some(3);
    let a = Server::start(config.clone()).await;
    let b = Server::start(config).await;
    let _one = a.client().await;
    let _two = a.client().await;
    // Each node writes its count and reads the others' once a second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _three = b.client().await;
    let mut four = Client::open(b.addr, "/app/app-key?protocol=7", None).await;
    four.expect_error_then_close(4004).await;
}

/// The watchlist events in a frame, as `(name, user_ids)`.
async fn watch_events(client: &mut Client) -> serde_json::Value {
    let frame = client.recv_json().await;
    assert_eq!(
        frame["event"], "pusher_internal:watchlist_events",
        "{frame}"
    );
    data_json(&frame)["events"].clone()
}

#[tokio::test]
async fn watchlists_follow_a_user_across_the_cluster() {
    let redis = RedisServer::start();
    let a = node(&redis, "w1", "a").await;
    let b = node(&redis, "w1", "b").await;
    let c = node(&redis, "w1", "c").await;
    let mut watcher = a.client().await;
    watcher
        .signin(&json!({"id": "wat", "watchlist": ["zed"]}).to_string())
        .await;
    assert_eq!(
        watch_events(&mut watcher).await,
        json!([{"name": "offline", "user_ids": ["zed"]}])
    );
    wait_listeners(&redis, "w1", "#watch:zed", 1).await;

    // Zed's first socket anywhere: online, once; a second one on another node: nothing.
    let mut zed_b = b.client().await;
    zed_b.signin_as("zed").await;
    assert_eq!(
        watch_events(&mut watcher).await,
        json!([{"name": "online", "user_ids": ["zed"]}])
    );
    let mut zed_c = c.client().await;
    zed_c.signin_as("zed").await;
    watcher.expect_no_message(QUIET).await;

    // A watcher signing in on a node where zed is not: told online.
    let mut late = c.client().await;
    late.signin(&json!({"id": "late", "watchlist": ["zed"]}).to_string())
        .await;
    assert_eq!(
        watch_events(&mut late).await,
        json!([{"name": "online", "user_ids": ["zed"]}])
    );

    // Offline only after zed's last socket anywhere.
    drop(zed_b);
    watcher.expect_no_message(QUIET).await;
    drop(zed_c);
    assert_eq!(
        watch_events(&mut watcher).await,
        json!([{"name": "offline", "user_ids": ["zed"]}])
    );
    watcher.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn a_frozen_redis_holds_nobody_and_lapsed_leases_are_repaired() {
    let redis = RedisServer::start();
    let a = node(&redis, "f1", "a").await;
    let b = node(&redis, "f1", "b").await;
    let room = fresh_channel("presence-frozen-");
    let mut ann = a.client().await;
    ann.subscribe_presence(&room, "ann", json!({})).await;
    let mut bob = b.client().await;
    bob.subscribe_presence(&room, "bob", json!({})).await;

    redis.freeze();
    let frozen = Instant::now();
    // A channel new to node a cannot be heard: after the link's command timeout the node
    // treats Redis as away and acknowledges, rather than hold the subscriber.
    let mut waiting = a.client().await;
    let channel = fresh_channel("frozen-new");
    waiting.send_subscribe(&channel, "", None).await;
    let frame = waiting.recv_json_within(Duration::from_secs(5)).await;
    assert_eq!(
        frame["event"], "pusher_internal:subscription_succeeded",
        "{frame}"
    );
    // Longer than a lease: when Redis wakes, every lease has lapsed.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(frozen.elapsed())).await;
    redis.thaw();

    wait_for_whole_list(&a, &room).await;
    // Cross-node delivery works again too.
    let shared = fresh_channel("after-freeze");
    let mut on_b = b.client().await;
    on_b.subscribe(&shared).await;
    a.api().publish(&shared, "e", "x").await;
    expect_event(&mut on_b, &shared, "e", "x").await;
}
