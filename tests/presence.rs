//! Presence channels: members are users, counted by user and not by socket; member_added and
//! member_removed go to the other subscribers only; limits on members and user_info.
//! Rules: protocol-spec/presence.md.

mod common;

use common::{Client, QUIET, Server, data_json, fresh_channel, test_config};
use serde_json::{Value, json};

/// Sorts `presence.ids` so membership can be compared exactly.
fn normalised(mut presence_data: Value) -> Value {
    if let Some(ids) = presence_data["presence"]["ids"].as_array_mut() {
        ids.sort_by_key(|id| id.to_string());
    }
    presence_data
}

async fn expect_member_added(client: &mut Client, channel: &str, user_id: &str, info: Value) {
    let frame = client.recv_json().await;
    assert_eq!(frame["event"], "pusher_internal:member_added", "{frame}");
    assert_eq!(frame["channel"], channel, "{frame}");
    assert_eq!(
        data_json(&frame),
        json!({"user_id": user_id, "user_info": info}),
        "member_added data"
    );
}

async fn expect_member_removed(client: &mut Client, channel: &str, user_id: &str) {
    let frame = client.recv_json().await;
    assert_eq!(frame["event"], "pusher_internal:member_removed", "{frame}");
    assert_eq!(frame["channel"], channel, "{frame}");
    assert_eq!(
        data_json(&frame),
        json!({"user_id": user_id}),
        "member_removed data"
    );
}

#[tokio::test]
async fn subscription_succeeded_lists_members_including_self() {
    let server = Server::start_default().await;
    let channel = fresh_channel("presence-room-");
    let mut a = server.client().await;
    let mut b = server.client().await;
    let first = a
        .subscribe_presence(&channel, "1", json!({"name": "A"}))
        .await;
    assert_eq!(
        first,
        json!({"presence": {"ids": ["1"], "hash": {"1": {"name": "A"}}, "count": 1}})
    );
    let second = b
        .subscribe_presence(&channel, "2", json!({"name": "B"}))
        .await;
    assert_eq!(
        normalised(second),
        json!({"presence": {
            "ids": ["1", "2"],
            "hash": {"1": {"name": "A"}, "2": {"name": "B"}},
            "count": 2
        }})
    );
}

#[tokio::test]
async fn numeric_user_id_is_normalised_to_a_string() {
    let server = Server::start_default().await;
    let channel = fresh_channel("presence-num-");
    let mut a = server.client().await;
    let mut b = server.client().await;
    let data = a
        .subscribe_presence(&channel, 10, json!({"name": "Mr. Pusher"}))
        .await;
    assert_eq!(
        data,
        json!({"presence": {"ids": ["10"], "hash": {"10": {"name": "Mr. Pusher"}}, "count": 1}})
    );
    b.subscribe_presence(&channel, 11, json!({})).await;
    expect_member_added(&mut a, &channel, "11", json!({})).await;
}

#[tokio::test]
async fn member_added_goes_to_others_not_to_the_joiner() {
    let server = Server::start_default().await;
    let channel = fresh_channel("presence-join-");
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe_presence(&channel, "1", json!({"name": "A"}))
        .await;
    b.subscribe_presence(&channel, "3", json!({"name": "C"}))
        .await;
    expect_member_added(&mut a, &channel, "3", json!({"name": "C"})).await;
    b.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn second_socket_of_same_user_sends_no_member_added() {
    let server = Server::start_default().await;
    let channel = fresh_channel("presence-tabs-");
    let mut watcher = server.client().await;
    let mut tab1 = server.client().await;
    let mut tab2 = server.client().await;
    watcher.subscribe_presence(&channel, "w", json!(null)).await;
    tab1.subscribe_presence(&channel, "3", json!({"name": "C"}))
        .await;
    expect_member_added(&mut watcher, &channel, "3", json!({"name": "C"})).await;
    let data = tab2
        .subscribe_presence(&channel, "3", json!({"name": "C"}))
        .await;
    assert_eq!(
        data["presence"]["count"], 2,
        "two users, three sockets: {data}"
    );
    watcher.expect_no_message(QUIET).await;
    tab1.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn member_removed_only_after_the_users_last_socket_leaves() {
    let server = Server::start_default().await;
    let channel = fresh_channel("presence-leave-");
    let mut watcher = server.client().await;
    let mut tab1 = server.client().await;
    let mut tab2 = server.client().await;
    watcher.subscribe_presence(&channel, "w", json!({})).await;
    tab1.subscribe_presence(&channel, "3", json!({})).await;
    expect_member_added(&mut watcher, &channel, "3", json!({})).await;
    tab2.subscribe_presence(&channel, "3", json!({})).await;
    tab1.unsubscribe(&channel).await;
    watcher.expect_no_message(QUIET).await;
    drop(tab2);
    expect_member_removed(&mut watcher, &channel, "3").await;
    watcher.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn member_removed_on_unsubscribe() {
    let server = Server::start_default().await;
    let channel = fresh_channel("presence-unsub-");
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe_presence(&channel, "1", json!({})).await;
    b.subscribe_presence(&channel, "2", json!({})).await;
    expect_member_added(&mut a, &channel, "2", json!({})).await;
    b.unsubscribe(&channel).await;
    expect_member_removed(&mut a, &channel, "2").await;
    b.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn member_removed_on_disconnect() {
    let server = Server::start_default().await;
    let channel = fresh_channel("presence-drop-");
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe_presence(&channel, "1", json!({})).await;
    b.subscribe_presence(&channel, "2", json!({})).await;
    expect_member_added(&mut a, &channel, "2", json!({})).await;
    b.ws.close(None).await.expect("close");
    expect_member_removed(&mut a, &channel, "2").await;
}

#[tokio::test]
async fn resubscribing_to_presence_sends_no_second_member_added() {
    let server = Server::start_default().await;
    let channel = fresh_channel("presence-again-");
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe_presence(&channel, "1", json!({})).await;
    b.subscribe_presence(&channel, "2", json!({})).await;
    expect_member_added(&mut a, &channel, "2", json!({})).await;
    let again = b.subscribe_presence(&channel, "2", json!({})).await;
    assert_eq!(again["presence"]["count"], 2, "{again}");
    a.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn member_without_user_info_is_still_a_key_in_hash() {
    let server = Server::start_default().await;
    let channel = fresh_channel("presence-bare-");
    let mut a = server.client().await;
    let channel_data = json!({"user_id": "7"}).to_string();
    let auth = a.auth(&channel, Some(&channel_data));
    a.send_subscribe(&channel, &auth, Some(&channel_data)).await;
    let frame = a.expect_subscribed(&channel).await;
    let data = data_json(&frame);
    assert_eq!(data["presence"]["ids"], json!(["7"]), "{data}");
    assert_eq!(data["presence"]["count"], 1, "{data}");
    let hash = data["presence"]["hash"].as_object().expect("hash object");
    assert!(hash.contains_key("7"), "user 7 missing from hash: {data}");
}

#[tokio::test]
async fn presence_signature_must_cover_channel_data() {
    let server = Server::start_default().await;
    let channel = fresh_channel("presence-sig-");
    let mut a = server.client().await;
    let channel_data = common::presence_data("1", json!({}));
    // Signed without channel_data.
    let auth = a.auth(&channel, None);
    a.send_subscribe(&channel, &auth, Some(&channel_data)).await;
    let data = a.expect_subscription_error(&channel, 401).await;
    assert_eq!(data["type"], "AuthError");
    // Signed over different channel_data (user tries to claim another id).
    let signed = common::presence_data("1", json!({}));
    let auth = a.auth(&channel, Some(&signed));
    let claimed = common::presence_data("admin", json!({}));
    a.send_subscribe(&channel, &auth, Some(&claimed)).await;
    a.expect_subscription_error(&channel, 401).await;
    a.assert_alive().await;
}

#[tokio::test]
async fn missing_or_invalid_channel_data_is_refused_with_400() {
    let server = Server::start_default().await;
    let channel = fresh_channel("presence-cd-");
    let mut a = server.client().await;
    // No channel_data (and the socket is not signed in).
    let auth = a.auth(&channel, None);
    a.send_subscribe(&channel, &auth, None).await;
    a.expect_subscription_error(&channel, 400).await;
    // Correctly signed, but not usable as channel_data.
    for bad in [
        "not json",
        "{\"user_info\":{}}",
        "{\"user_id\":null}",
        "{\"user_id\":\"\"}",
        "[1]",
    ] {
        let auth = a.auth(&channel, Some(bad));
        a.send_subscribe(&channel, &auth, Some(bad)).await;
        a.expect_subscription_error(&channel, 400).await;
    }
    a.assert_alive().await;
}

#[tokio::test]
async fn member_limit_refuses_a_new_user_with_403() {
    let mut config = test_config();
    config.apps[0].max_presence_members = 2;
    let server = Server::start(config).await;
    let channel = fresh_channel("presence-full-");
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut c = server.client().await;
    a.subscribe_presence(&channel, "1", json!({})).await;
    b.subscribe_presence(&channel, "2", json!({})).await;
    let channel_data = common::presence_data("3", json!({}));
    let auth = c.auth(&channel, Some(&channel_data));
    c.send_subscribe(&channel, &auth, Some(&channel_data)).await;
    c.expect_subscription_error(&channel, 403).await;
    c.assert_alive().await;
    // The refused user was never announced.
    expect_member_added(&mut a, &channel, "2", json!({})).await;
    a.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn member_limit_still_admits_another_socket_of_a_present_user() {
    let mut config = test_config();
    config.apps[0].max_presence_members = 2;
    let server = Server::start(config).await;
    let channel = fresh_channel("presence-full-tab-");
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut b2 = server.client().await;
    a.subscribe_presence(&channel, "1", json!({})).await;
    b.subscribe_presence(&channel, "2", json!({})).await;
    let data = b2.subscribe_presence(&channel, "2", json!({})).await;
    assert_eq!(data["presence"]["count"], 2, "{data}");
}

#[tokio::test]
async fn oversized_user_info_is_refused_with_400() {
    let mut config = test_config();
    config.apps[0].max_presence_user_info_bytes = 100;
    let server = Server::start(config).await;
    let channel = fresh_channel("presence-big-");
    let mut a = server.client().await;
    let channel_data = common::presence_data("1", json!({"bio": "x".repeat(200)}));
    let auth = a.auth(&channel, Some(&channel_data));
    a.send_subscribe(&channel, &auth, Some(&channel_data)).await;
    a.expect_subscription_error(&channel, 400).await;
    // A small user_info on the same socket is fine.
    a.subscribe_presence(&channel, "1", json!({"bio": "short"}))
        .await;
}

#[tokio::test]
async fn presence_members_are_per_channel() {
    let server = Server::start_default().await;
    let one = fresh_channel("presence-one-");
    let two = fresh_channel("presence-two-");
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe_presence(&one, "1", json!({})).await;
    let data = b.subscribe_presence(&two, "2", json!({})).await;
    assert_eq!(
        data,
        json!({"presence": {"ids": ["2"], "hash": {"2": {}}, "count": 1}})
    );
    a.expect_no_message(QUIET).await;
}
