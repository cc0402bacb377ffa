//! Subscription counts (`subscription_count_events`): subscribers of a non-presence channel
//! hear `pusher_internal:subscription_count` when the number of subscriptions changes, at
//! most once a second per channel.
//! Rules: protocol-spec/subscription-counts.md.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Next, QUIET, Server, data_json, fresh_channel, test_config};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Two counts of one channel never arrive closer than this (1 s, less scheduling slack).
const MIN_GAP: Duration = Duration::from_millis(800);
/// Longer than a count interval plus one flush tick.
const OVER_A_SECOND: Duration = Duration::from_millis(1500);

async fn counting_server() -> Server {
    let mut config = test_config();
    config.apps[0].subscription_count_events = true;
    Server::start(config).await
}

/// Reads the next frame, checks it is exactly a subscription count for `channel`, and
/// returns the count with the time it arrived.
async fn next_count(client: &mut Client, channel: &str) -> (u64, Instant) {
    let frame = client.recv_json().await;
    let at = Instant::now();
    assert_eq!(
        frame["event"], "pusher_internal:subscription_count",
        "expected a subscription count, got {frame}"
    );
    let text = frame["data"].as_str().unwrap_or("");
    let count = text
        .strip_prefix("{\"subscription_count\":")
        .and_then(|rest| rest.strip_suffix('}'))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("data must be \"{{\\\"subscription_count\\\":N}}\": {frame}"));
    assert_eq!(
        frame,
        json!({
            "event": "pusher_internal:subscription_count",
            "channel": channel,
            "data": format!("{{\"subscription_count\":{count}}}")
        })
    );
    (count, at)
}

#[tokio::test]
async fn subscriber_gets_the_count_after_subscription_succeeded() {
    let server = counting_server().await;
    let mut client = server.client().await;
    let public = fresh_channel("count-");
    client.subscribe(&public).await;
    client
        .expect_json(&json!({
            "event": "pusher_internal:subscription_count",
            "channel": public,
            "data": "{\"subscription_count\":1}"
        }))
        .await;
    let private = fresh_channel("private-count-");
    client.subscribe_private(&private).await;
    assert_eq!(next_count(&mut client, &private).await.0, 1);
}

#[tokio::test]
async fn changes_within_a_second_are_coalesced_into_one_later_count() {
    let server = counting_server().await;
    let channel = fresh_channel("count-burst-");
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut c = server.client().await;
    a.subscribe(&channel).await;
    let (first, first_at) = next_count(&mut a, &channel).await;
    assert_eq!(first, 1);
    b.subscribe(&channel).await;
    c.subscribe(&channel).await;
    let (count, at) = next_count(&mut a, &channel).await;
    assert_eq!(count, 3, "one count carrying the latest number");
    assert!(
        at - first_at >= MIN_GAP,
        "two counts {:?} apart",
        at - first_at
    );
    assert_eq!(next_count(&mut b, &channel).await.0, 3);
    assert_eq!(next_count(&mut c, &channel).await.0, 3);
    for client in [&mut a, &mut b, &mut c] {
        client.expect_no_message(QUIET).await;
    }
}

#[tokio::test]
async fn leaving_updates_the_count_of_the_remaining_subscribers() {
    let server = counting_server().await;
    let channel = fresh_channel("count-leave-");
    let mut a = server.client().await;
    let mut b = server.client().await;
    let c = {
        let mut c = server.client().await;
        a.subscribe(&channel).await;
        b.subscribe(&channel).await;
        c.subscribe(&channel).await;
        c
    };
    while next_count(&mut a, &channel).await.0 != 3 {}
    while next_count(&mut b, &channel).await.0 != 3 {}
    b.unsubscribe(&channel).await;
    drop(c);
    while next_count(&mut a, &channel).await.0 != 1 {}
    a.expect_no_message(QUIET).await;
    b.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn never_two_counts_within_a_second_and_the_last_is_current() {
    let server = counting_server().await;
    let channel = fresh_channel("count-churn-");
    let mut watcher = server.client().await;
    let mut churner = server.client().await;
    watcher.subscribe(&channel).await;
    let churn = async {
        // Join and leave every 100 ms for about 2 s, ending subscribed (count 2). What the
        // churner itself receives is left unread.
        for _ in 0..10 {
            churner.send_subscribe(&channel, "", None).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            churner.unsubscribe(&channel).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        churner.send_subscribe(&channel, "", None).await;
    };
    let watch = async {
        let mut seen = vec![next_count(&mut watcher, &channel).await];
        // Counts keep coming while the churn lasts, then stop at the final one.
        let end = Instant::now() + Duration::from_secs(4);
        while Instant::now() < end {
            let left = end - Instant::now();
            match watcher.next_within(left).await {
                Next::TimedOut => break,
                Next::Frame(Message::Text(t)) => {
                    let frame: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
                    assert_eq!(
                        frame["event"], "pusher_internal:subscription_count",
                        "{frame}"
                    );
                    let data = data_json(&frame);
                    let count = data["subscription_count"].as_u64().expect("a count");
                    seen.push((count, Instant::now()));
                }
                Next::Frame(_) => {}
                Next::Ended(why) => panic!("watcher ended: {why}"),
            }
        }
        seen
    };
    let ((), seen) = tokio::join!(churn, watch);
    let counts: Vec<u64> = seen.iter().map(|(c, _)| *c).collect();
    assert!(
        seen.len() >= 2 && seen.len() <= 5,
        "about one count a second over ~2 s: {counts:?}"
    );
    for pair in seen.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(gap >= MIN_GAP, "two counts {gap:?} apart: {counts:?}");
    }
    assert_eq!(counts.last(), Some(&2), "the last count is current");
}

#[tokio::test]
async fn presence_channels_never_get_subscription_counts() {
    let server = counting_server().await;
    let channel = fresh_channel("presence-count-");
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe_presence(&channel, "a", json!({})).await;
    b.subscribe_presence(&channel, "b", json!({})).await;
    let added = a.recv_json().await;
    assert_eq!(added["event"], "pusher_internal:member_added", "{added}");
    b.unsubscribe(&channel).await;
    let removed = a.recv_json().await;
    assert_eq!(
        removed["event"], "pusher_internal:member_removed",
        "{removed}"
    );
    a.expect_no_message(OVER_A_SECOND).await;
    b.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn no_subscription_counts_when_the_feature_is_off() {
    let server = Server::start_default().await;
    let channel = fresh_channel("count-off-");
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe(&channel).await;
    b.subscribe(&channel).await;
    a.expect_no_message(OVER_A_SECOND).await;
    b.expect_no_message(QUIET).await;
}
