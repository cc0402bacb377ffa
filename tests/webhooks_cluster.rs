//! Webhooks from several nodes joined through a real `redis-server`: occupancy and
//! membership are the cluster's, so each change is sent once whatever the number of nodes
//! and sockets (occupied on two nodes: one channel_occupied; vacated only when the last node
//! empties; a channel or user moving to another node within the delay: nothing), client
//! events once, and a node killed with `kill -9` loses nothing: a webhook it was retrying, or
//! a channel_vacated it was holding back for the delay, is delivered by another node, and
//! its own channels and members are vacated and removed.
//!
//! Every request is checked by the receiver (key, HMAC signature of the body, shape).

mod common;

use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::webhook_receiver::{Answer, CrierProcess, Event, WebhookReceiver, show};
use common::*;
use crier::config::{KindSet, WebhookEntry, WebhookSettings, WebhookTarget};
use serde_json::{Value, json};

/// The debounce of channel_vacated and member_removed on the in-process nodes.
const DELAY: Duration = Duration::from_millis(800);
/// How long a webhook that should come is awaited (beyond any delay it has).
const ARRIVAL: Duration = Duration::from_secs(6);
/// How long to watch for webhooks that must not come (longer than DELAY plus a batch).
const SETTLE: Duration = Duration::from_millis(2000);
/// How long a webhook a killed node held may take to be taken over by another node: the
/// takeover waits for the entry to be idle about 30 s, plus a pass of the sweep.
const RECLAIM: Duration = Duration::from_secs(45);

fn settings() -> WebhookSettings {
    WebhookSettings {
        delay: DELAY,
        batch_window: Duration::from_millis(50),
        timeout: Duration::from_secs(1),
        retry_first: Duration::from_millis(200),
        retry_max: Duration::from_secs(1),
        retry_for: Duration::from_secs(120),
        ..WebhookSettings::default()
    }
}

fn all_events(url: String) -> WebhookTarget {
    WebhookTarget {
        url,
        kinds: KindSet::ALL,
        channel_prefix: None,
        channel_suffix: None,
        headers: vec![],
    }
}

/// A node of the cluster on `redis` with `prefix`, sending the default app's webhooks to
/// `targets`. Waits until it has joined (a subscriber's acknowledgement says so); its probe
/// channel is named `probe…`.
async fn node(
    redis: &RedisServer,
    prefix: &str,
    name: &str,
    targets: &[WebhookTarget],
    webhooks: &WebhookSettings,
) -> Server {
    let mut config = test_config();
    config.cluster.redis_url = Some(redis.url());
    config.cluster.prefix = prefix.to_string();
    config.cluster.node_id = Some(name.to_string());
    config.apps[0].webhooks = targets.to_vec();
    config.webhooks = webhooks.clone();
    let server = Server::start(config).await;
    let mut probe = server.client().await;
    probe.subscribe(&fresh_channel("probe")).await;
    server
}

/// The binary as a node of the cluster (so that it can be killed like a crashed machine),
/// with `targets` as `CRIER_APP_WEBHOOKS` and the given delay.
fn node_process(
    redis: &RedisServer,
    prefix: &str,
    name: &str,
    targets: &Value,
    delay: Duration,
) -> CrierProcess {
    let s = settings();
    let targets = targets.to_string();
    let delay = delay.as_millis().to_string();
    let retry_first = s.retry_first.as_millis().to_string();
    let timeout = s.timeout.as_millis().to_string();
    let retry_for = s.retry_for.as_secs().to_string();
    let batch_window = s.batch_window.as_millis().to_string();
    let redis_url = redis.url();
    CrierProcess::start(
        &[
            "--redis-url",
            &redis_url,
            "--redis-prefix",
            prefix,
            "--node-id",
            name,
        ],
        &[
            ("CRIER_APP_WEBHOOKS", &targets),
            ("CRIER_WEBHOOK_DELAY_MS", &delay),
            ("CRIER_WEBHOOK_RETRY_FIRST_MS", &retry_first),
            ("CRIER_WEBHOOK_TIMEOUT_MS", &timeout),
            ("CRIER_WEBHOOK_RETRY_FOR", &retry_for),
            ("CRIER_WEBHOOK_BATCH_WINDOW_MS", &batch_window),
        ],
    )
}

/// Waits until the binary node has joined the cluster: a subscriber's acknowledgement says so.
async fn joined(process: &CrierProcess) {
    let mut probe = Client::connect(process.addr).await;
    probe.subscribe(&fresh_channel("probe")).await;
}

fn occupied(channel: &str) -> Value {
    json!({"name": "channel_occupied", "channel": channel})
}

fn vacated(channel: &str) -> Value {
    json!({"name": "channel_vacated", "channel": channel})
}

fn member_added(channel: &str, user: &str) -> Value {
    json!({"name": "member_added", "channel": channel, "user_id": user})
}

fn member_removed(channel: &str, user: &str) -> Value {
    json!({"name": "member_removed", "channel": channel, "user_id": user})
}

/// Whether `e` is an occupancy or membership event about `channel`.
fn is_occupancy(e: &Event, channel: &str) -> bool {
    e.channel() == channel
        && matches!(
            e.name(),
            "channel_occupied" | "channel_vacated" | "member_added" | "member_removed"
        )
}

/// Events as sorted JSON texts: for comparing what arrived when the order between events
/// of different kinds (channel_occupied and member_added, say) is not part of the contract.
fn unordered(events: &[Value]) -> Vec<String> {
    let mut texts: Vec<String> = events.iter().map(Value::to_string).collect();
    texts.sort();
    texts
}

/// Occupancy and membership events about `channel`, as JSON, in arrival order.
fn about(receiver: &WebhookReceiver, channel: &str) -> Vec<Value> {
    receiver
        .events_where(|e| {
            e.channel() == channel
                && matches!(
                    e.name(),
                    "channel_occupied" | "channel_vacated" | "member_added" | "member_removed"
                )
        })
        .into_iter()
        .map(|e| e.json)
        .collect()
}

#[tokio::test]
async fn a_channel_on_two_nodes_is_occupied_once_and_vacated_once_when_both_empty() {
    let redis = RedisServer::start();
    let receiver = WebhookReceiver::start(APP_KEY, APP_SECRET).await;
    let targets = [all_events(receiver.url())];
    let a = node(&redis, "w1", "a", &targets, &settings()).await;
    let b = node(&redis, "w1", "b", &targets, &settings()).await;
    let channel = fresh_channel("private-shared-");

    let mut on_a = a.client().await;
    on_a.subscribe_private(&channel).await;
    receiver
        .wait_for("channel_occupied", &channel, ARRIVAL)
        .await;
    let mut on_b = b.client().await;
    on_b.subscribe_private(&channel).await;
    receiver
        .expect_no_more(|e| is_occupancy(e, &channel), SETTLE)
        .await;

    // Empty on a, still occupied on b: nothing.
    on_a.unsubscribe(&channel).await;
    on_a.assert_alive().await;
    receiver
        .expect_no_more(|e| is_occupancy(e, &channel), DELAY + SETTLE)
        .await;

    // Empty everywhere: one channel_vacated, after the delay.
    let left = Instant::now();
    drop(on_b);
    let event = receiver
        .wait_for("channel_vacated", &channel, DELAY + ARRIVAL)
        .await;
    let waited = event.at.duration_since(left);
    assert!(
        waited >= DELAY.mul_f32(0.9),
        "channel_vacated came {waited:?} after the last subscriber left; delay {DELAY:?}"
    );
    receiver
        .expect_no_more(|e| is_occupancy(e, &channel), SETTLE)
        .await;
    assert_eq!(
        about(&receiver, &channel),
        [occupied(&channel), vacated(&channel)],
        "{}",
        show(&receiver.events())
    );
}

#[tokio::test]
async fn a_channel_moving_to_another_node_within_the_delay_sends_nothing() {
    let redis = RedisServer::start();
    let receiver = WebhookReceiver::start(APP_KEY, APP_SECRET).await;
    let targets = [all_events(receiver.url())];
    let a = node(&redis, "w2", "a", &targets, &settings()).await;
    let b = node(&redis, "w2", "b", &targets, &settings()).await;
    let channel = fresh_channel("moving-");
    let mut on_a = a.client().await;
    on_a.subscribe(&channel).await;
    receiver
        .wait_for("channel_occupied", &channel, ARRIVAL)
        .await;

    // The page reloads and its new socket lands on the other node.
    drop(on_a);
    let mut on_b = b.client().await;
    on_b.subscribe(&channel).await;
    receiver
        .expect_no_more(|e| is_occupancy(e, &channel), DELAY + SETTLE)
        .await;
    assert_eq!(about(&receiver, &channel), [occupied(&channel)]);

    drop(on_b);
    receiver
        .wait_for("channel_vacated", &channel, DELAY + ARRIVAL)
        .await;
    receiver
        .expect_no_more(|e| is_occupancy(e, &channel), SETTLE)
        .await;
    assert_eq!(
        about(&receiver, &channel),
        [occupied(&channel), vacated(&channel)]
    );
}

#[tokio::test]
async fn members_are_added_and_removed_once_per_user_across_the_cluster() {
    let redis = RedisServer::start();
    let receiver = WebhookReceiver::start(APP_KEY, APP_SECRET).await;
    let targets = [all_events(receiver.url())];
    let a = node(&redis, "w3", "a", &targets, &settings()).await;
    let b = node(&redis, "w3", "b", &targets, &settings()).await;
    let c = node(&redis, "w3", "c", &targets, &settings()).await;
    let channel = fresh_channel("presence-cluster-");

    // Ann on every node, twice on a; Bob on b.
    let mut ann_sockets = Vec::new();
    for server in [&a, &a, &b, &c] {
        let mut ann = server.client().await;
        ann.subscribe_presence(&channel, "ann", json!({"name": "Ann"}))
            .await;
        ann_sockets.push(ann);
    }
    let mut bob = b.client().await;
    bob.subscribe_presence(&channel, "bob", json!({})).await;
    receiver
        .wait_for_events(
            |events| {
                events
                    .iter()
                    .any(|e| e.json == member_added(&channel, "ann"))
                    && events
                        .iter()
                        .any(|e| e.json == member_added(&channel, "bob"))
            },
            ARRIVAL,
        )
        .await;
    receiver
        .expect_no_more(|e| is_occupancy(e, &channel), SETTLE)
        .await;
    assert_eq!(
        unordered(&about(&receiver, &channel)),
        unordered(&[
            occupied(&channel),
            member_added(&channel, "ann"),
            member_added(&channel, "bob")
        ]),
        "{}",
        show(&receiver.events())
    );

    // Ann's sockets go one by one; only the last one anywhere removes her.
    let last = ann_sockets.pop().expect("ann on c");
    for socket in ann_sockets.drain(..) {
        drop(socket);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    receiver
        .expect_no_more(|e| e.name() == "member_removed", DELAY + SETTLE)
        .await;
    drop(last);
    receiver
        .wait_for_event(
            |e| e.json == member_removed(&channel, "ann"),
            DELAY + ARRIVAL,
        )
        .await;
    // Bob is still there: the channel stays occupied.
    receiver
        .expect_no_more(|e| is_occupancy(e, &channel), SETTLE)
        .await;
    assert_eq!(
        unordered(&about(&receiver, &channel)),
        unordered(&[
            occupied(&channel),
            member_added(&channel, "ann"),
            member_added(&channel, "bob"),
            member_removed(&channel, "ann")
        ]),
        "{}",
        show(&receiver.events())
    );
    drop(bob);
}

#[tokio::test]
async fn a_member_moving_to_another_node_within_the_delay_sends_nothing() {
    let redis = RedisServer::start();
    let receiver = WebhookReceiver::start(APP_KEY, APP_SECRET).await;
    let targets = [all_events(receiver.url())];
    let a = node(&redis, "w4", "a", &targets, &settings()).await;
    let b = node(&redis, "w4", "b", &targets, &settings()).await;
    let channel = fresh_channel("presence-moving-");
    let mut host = a.client().await;
    host.subscribe_presence(&channel, "host", json!({})).await;
    let mut ann = a.client().await;
    ann.subscribe_presence(&channel, "ann", json!({})).await;
    receiver
        .wait_for_event(|e| e.json == member_added(&channel, "ann"), ARRIVAL)
        .await;
    drop(ann);
    let mut ann = b.client().await;
    ann.subscribe_presence(&channel, "ann", json!({})).await;
    receiver
        .expect_no_more(|e| is_occupancy(e, &channel), DELAY + SETTLE)
        .await;
    let about_ann = receiver.events_where(|e| e.json["user_id"] == "ann");
    assert_eq!(about_ann.len(), 1, "{}", show(&about_ann));
}

#[tokio::test]
async fn a_client_event_is_sent_once_whatever_the_number_of_nodes() {
    let redis = RedisServer::start();
    let receiver = WebhookReceiver::start(APP_KEY, APP_SECRET).await;
    let targets = [WebhookEntry {
        url: Some(receiver.url()),
        event_types: Some(vec!["client_event".into()]),
        ..Default::default()
    }
    .check()
    .expect("a valid target")];
    let a = node(&redis, "w5", "a", &targets, &settings()).await;
    let b = node(&redis, "w5", "b", &targets, &settings()).await;
    let c = node(&redis, "w5", "c", &targets, &settings()).await;
    let private = fresh_channel("private-cluster-");
    let presence = fresh_channel("presence-cluster-");
    let mut listeners = Vec::new();
    for server in [&a, &c] {
        let mut client = server.client().await;
        client.subscribe_private(&private).await;
        client
            .subscribe_presence(&presence, "listener", json!({}))
            .await;
        listeners.push(client);
    }
    let mut sender = b.client().await;
    sender.subscribe_private(&private).await;
    sender.subscribe_presence(&presence, "ann", json!({})).await;
    for listener in &mut listeners {
        // Ann's arrival, announced to the listeners on other nodes.
        let added = listener.recv_json().await;
        assert_eq!(added["event"], "pusher_internal:member_added", "{added}");
    }

    let whisper = json!({"event": "client-w", "channel": private, "data": {"x": 1}});
    sender.send_json(&whisper).await;
    let hello = json!({"event": "client-hello", "channel": presence, "data": "hi"});
    sender.send_json(&hello).await;
    for listener in &mut listeners {
        listener.expect_json(&whisper).await;
        let got = listener.recv_json().await;
        assert_eq!(got["event"], "client-hello", "{got}");
    }
    receiver
        .wait_for_count(|e| e.name() == "client_event", 2, ARRIVAL)
        .await;
    receiver.expect_no_more(|_| true, SETTLE).await;
    let events = receiver.events();
    assert_eq!(events.len(), 2, "{}", show(&events));
    let on_private = receiver.wait_for("client_event", &private, ARRIVAL).await;
    assert_eq!(on_private.json["socket_id"], sender.socket_id.as_str());
    assert_eq!(on_private.json["event"], "client-w");
    assert_eq!(
        serde_json::from_str::<Value>(on_private.json["data"].as_str().unwrap_or("")).ok(),
        Some(json!({"x": 1})),
        "{on_private}"
    );
    let on_presence = receiver.wait_for("client_event", &presence, ARRIVAL).await;
    assert_eq!(
        on_presence.json,
        json!({
            "name": "client_event",
            "channel": presence,
            "event": "client-hello",
            "data": "hi",
            "socket_id": sender.socket_id,
            "user_id": "ann",
        })
    );
}

#[tokio::test]
async fn subscription_count_is_the_cluster_s_count() {
    let redis = RedisServer::start();
    let receiver = WebhookReceiver::start(APP_KEY, APP_SECRET).await;
    let targets = [WebhookEntry {
        url: Some(receiver.url()),
        event_types: Some(vec!["subscription_count".into()]),
        channel_prefix: Some("counted-".into()),
        ..Default::default()
    }
    .check()
    .expect("a valid target")];
    let a = node(&redis, "w6", "a", &targets, &settings()).await;
    let b = node(&redis, "w6", "b", &targets, &settings()).await;
    let channel = fresh_channel("counted-");
    let latest_is = |n: u64| {
        let channel = channel.clone();
        move |events: &[Event]| {
            events
                .iter()
                .rev()
                .find(|e| e.is("subscription_count", &channel))
                .is_some_and(|e| e.json["subscription_count"] == n)
        }
    };
    let mut on_a = a.client().await;
    on_a.subscribe(&channel).await;
    receiver.wait_for_events(latest_is(1), ARRIVAL).await;
    let mut on_b = b.client().await;
    on_b.subscribe(&channel).await;
    let mut also_on_b = b.client().await;
    also_on_b.subscribe(&channel).await;
    receiver.wait_for_events(latest_is(3), ARRIVAL).await;
    drop(on_a);
    receiver.wait_for_events(latest_is(2), ARRIVAL).await;
    // Nothing later says otherwise.
    receiver
        .expect_no_more(|e| e.json["subscription_count"] != 2, SETTLE)
        .await;
    for e in receiver.events() {
        assert_eq!(
            e.json,
            json!({
                "name": "subscription_count",
                "channel": channel,
                "subscription_count": e.json["subscription_count"].as_u64(),
            }),
            "{e}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// kill -9
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_webhook_a_killed_node_was_retrying_is_delivered_by_another_node() {
    let redis = RedisServer::start();
    let receiver = WebhookReceiver::start(APP_KEY, APP_SECRET).await;
    let target = json!([{
        "url": receiver.url(),
        "event_types": ["channel_occupied"],
        "channel_prefix": "doomed-",
    }]);
    let targets = [WebhookEntry {
        url: Some(receiver.url()),
        event_types: Some(vec!["channel_occupied".into()]),
        channel_prefix: Some("doomed-".into()),
        ..Default::default()
    }
    .check()
    .expect("a valid target")];
    let _a = node(&redis, "k1", "a", &targets, &settings()).await;
    let mut doomed = node_process(&redis, "k1", "doomed", &target, DELAY);
    joined(&doomed).await;

    // The receiver fails: the doomed node holds the webhook and retries it.
    receiver.answer_always(Answer::Status(500));
    let channel = fresh_channel("doomed-");
    let mut client = Client::connect(doomed.addr).await;
    client.subscribe(&channel).await;
    let failed = receiver.wait_for_requests(|r| r.len() >= 2, ARRIVAL).await;
    assert_eq!(failed[0].events, [occupied(&channel)]);

    doomed.kill();
    let killed = Instant::now();
    receiver.answer_ok();
    let delivered = receiver
        .wait_for_event(
            |e| e.is("channel_occupied", &channel) && e.acknowledged(),
            RECLAIM,
        )
        .await;
    assert_eq!(
        delivered.time_ms,
        failed[0].time_ms,
        "the webhook taken over must keep its time_ms ({:?} after the kill)",
        killed.elapsed()
    );
    assert_eq!(delivered.json, occupied(&channel));
    // Delivered once: nothing more about it.
    receiver
        .expect_no_more(|e| is_occupancy(e, &channel), Duration::from_secs(3))
        .await;
    let acknowledged = receiver.events_where(|e| e.channel() == channel && e.acknowledged());
    assert_eq!(acknowledged.len(), 1, "{}", show(&acknowledged));
}

#[tokio::test]
async fn a_channel_vacated_a_killed_node_was_holding_back_is_delivered_by_another_node() {
    let redis = RedisServer::start();
    let receiver = WebhookReceiver::start(APP_KEY, APP_SECRET).await;
    // A long delay on the doomed node: it dies while holding the vacated back.
    let delay = Duration::from_secs(4);
    let target = json!([{"url": receiver.url(), "channel_prefix": "doomed-"}]);
    let targets = [WebhookEntry {
        url: Some(receiver.url()),
        channel_prefix: Some("doomed-".into()),
        ..Default::default()
    }
    .check()
    .expect("a valid target")];
    let webhooks = WebhookSettings {
        delay,
        ..settings()
    };
    let _a = node(&redis, "k2", "a", &targets, &webhooks).await;
    let mut doomed = node_process(&redis, "k2", "doomed", &target, delay);
    joined(&doomed).await;
    let channel = fresh_channel("doomed-");
    let mut client = Client::connect(doomed.addr).await;
    client.subscribe(&channel).await;
    receiver
        .wait_for("channel_occupied", &channel, ARRIVAL)
        .await;

    // The last subscriber leaves; the node dies before the delay is over.
    client.unsubscribe(&channel).await;
    client.assert_alive().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    doomed.kill();
    let killed = Instant::now();
    assert!(
        receiver.events_of("channel_vacated", &channel).is_empty(),
        "vacated before the delay: {}",
        show(&receiver.events())
    );
    receiver
        .wait_for("channel_vacated", &channel, RECLAIM)
        .await;
    let took = killed.elapsed();
    receiver
        .expect_no_more(|e| is_occupancy(e, &channel), Duration::from_secs(3))
        .await;
    assert_eq!(
        about(&receiver, &channel),
        [occupied(&channel), vacated(&channel)],
        "(vacated {took:?} after the kill)"
    );
}

#[tokio::test]
async fn a_killed_node_s_channels_are_vacated_and_its_members_removed_once() {
    let redis = RedisServer::start();
    let receiver = WebhookReceiver::start(APP_KEY, APP_SECRET).await;
    let target = json!([{"url": receiver.url(), "channel_prefix": "presence-doomed-"}]);
    let targets = [WebhookEntry {
        url: Some(receiver.url()),
        channel_prefix: Some("presence-doomed-".into()),
        ..Default::default()
    }
    .check()
    .expect("a valid target")];
    let a = node(&redis, "k3", "a", &targets, &settings()).await;
    let mut doomed = node_process(&redis, "k3", "doomed", &target, DELAY);
    joined(&doomed).await;
    // Carl only on the doomed node, in a channel only it has; Dana on both nodes in another.
    let lonely = fresh_channel("presence-doomed-lonely-");
    let shared = fresh_channel("presence-doomed-shared-");
    let mut carl = Client::connect(doomed.addr).await;
    carl.subscribe_presence(&lonely, "carl", json!({})).await;
    let mut dana_doomed = Client::connect(doomed.addr).await;
    dana_doomed
        .subscribe_presence(&shared, "dana", json!({}))
        .await;
    let mut dana = a.client().await;
    dana.subscribe_presence(&shared, "dana", json!({})).await;
    receiver
        .wait_for_events(
            |events| {
                [
                    occupied(&lonely),
                    member_added(&lonely, "carl"),
                    occupied(&shared),
                    member_added(&shared, "dana"),
                ]
                .iter()
                .all(|wanted| events.iter().any(|e| &e.json == wanted))
            },
            ARRIVAL,
        )
        .await;

    doomed.kill();
    receiver
        .wait_for_events(
            |events| {
                events
                    .iter()
                    .any(|e| e.json == member_removed(&lonely, "carl"))
                    && events.iter().any(|e| e.json == vacated(&lonely))
            },
            RECLAIM,
        )
        .await;
    receiver
        .expect_no_more(|_| true, DELAY + Duration::from_secs(3))
        .await;
    // Each exactly once (removal and vacating in either order).
    assert_eq!(
        unordered(&about(&receiver, &lonely)),
        unordered(&[
            occupied(&lonely),
            member_added(&lonely, "carl"),
            member_removed(&lonely, "carl"),
            vacated(&lonely),
        ]),
        "{}",
        show(&receiver.events())
    );
    // Dana still has a socket on node a: neither removed nor vacated.
    assert_eq!(
        unordered(&about(&receiver, &shared)),
        unordered(&[occupied(&shared), member_added(&shared, "dana")]),
        "{}",
        show(&receiver.events())
    );
    drop(dana);
}
