//! Watchlist events: a sign-in whose `user_data` lists `watchlist` ids hears which of them are
//! online (signed in on at least one socket) and later changes, as
//! `pusher_internal:watchlist_events`.
//! Rules: protocol-spec/watchlist.md.

mod common;

use common::{Client, QUIET, Server, assert_pusher_error, data_json, test_config};
use serde_json::{Value, json};

fn watching(id: &str, watchlist: &[&str]) -> String {
    json!({"id": id, "watchlist": watchlist}).to_string()
}

/// Reads the next frame, checks it is a channel-less `pusher_internal:watchlist_events`, and
/// compares its parsed `data` with `events`.
async fn expect_watchlist(client: &mut Client, events: Value) {
    let frame = client.recv_json().await;
    assert_eq!(
        frame["event"], "pusher_internal:watchlist_events",
        "expected watchlist events, got {frame}"
    );
    assert_eq!(
        frame.as_object().map(|o| o.len()),
        Some(2),
        "only `event` and `data` (no channel): {frame}"
    );
    assert_eq!(data_json(&frame), json!({ "events": events }), "{frame}");
}

fn online(ids: &[&str]) -> Value {
    json!({"name": "online", "user_ids": ids})
}

fn offline(ids: &[&str]) -> Value {
    json!({"name": "offline", "user_ids": ids})
}

async fn signed_in(server: &Server, id: &str) -> Client {
    let mut client = server.client().await;
    client.signin_as(id).await;
    client
}

#[tokio::test]
async fn signin_with_a_watchlist_reports_online_then_offline_ids_in_list_order() {
    let server = Server::start_default().await;
    let _b = signed_in(&server, "b").await;
    let _d = signed_in(&server, "d").await;
    let mut a = server.client().await;
    a.signin(&watching("a", &["b", "c", "d", "e"])).await;
    expect_watchlist(&mut a, json!([online(&["b", "d"]), offline(&["c", "e"])])).await;
    a.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn watchlist_status_lists_only_non_empty_groups() {
    let server = Server::start_default().await;
    let mut all_offline = server.client().await;
    all_offline.signin(&watching("a", &["x", "y"])).await;
    expect_watchlist(&mut all_offline, json!([offline(&["x", "y"])])).await;
    let _x = signed_in(&server, "x").await;
    let _y = signed_in(&server, "y").await;
    let mut all_online = server.client().await;
    all_online.signin(&watching("z", &["x", "y"])).await;
    expect_watchlist(&mut all_online, json!([online(&["x", "y"])])).await;
}

#[tokio::test]
async fn signin_without_a_watchlist_sends_no_watchlist_event() {
    let server = Server::start_default().await;
    let mut plain = server.client().await;
    plain.signin_as("a").await;
    let mut empty = server.client().await;
    empty.signin(&watching("a", &[])).await;
    plain.expect_no_message(QUIET).await;
    empty.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn watched_users_first_socket_announces_online_once() {
    let server = Server::start_default().await;
    let mut a = server.client().await;
    a.signin(&watching("a", &["b"])).await;
    expect_watchlist(&mut a, json!([offline(&["b"])])).await;
    // Connected but not signed in: still offline.
    let mut b1 = server.client().await;
    a.expect_no_message(QUIET).await;
    b1.signin_as("b").await;
    expect_watchlist(&mut a, json!([online(&["b"])])).await;
    let mut b2 = signed_in(&server, "b").await;
    a.expect_no_message(QUIET).await;
    b1.expect_no_message(QUIET).await;
    b2.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn watched_users_last_socket_closing_announces_offline() {
    let server = Server::start_default().await;
    let b1 = signed_in(&server, "b").await;
    let b2 = signed_in(&server, "b").await;
    let mut a = server.client().await;
    a.signin(&watching("a", &["b"])).await;
    expect_watchlist(&mut a, json!([online(&["b"])])).await;
    drop(b1);
    a.expect_no_message(QUIET).await;
    drop(b2);
    expect_watchlist(&mut a, json!([offline(&["b"])])).await;
    // Back online with a new socket.
    let _b3 = signed_in(&server, "b").await;
    expect_watchlist(&mut a, json!([online(&["b"])])).await;
}

#[tokio::test]
async fn watchlist_over_100_ids_watches_the_first_100_and_reports_4302() {
    let server = Server::start_default().await;
    let ids: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    // The 101st id is online, but it is not watched.
    let last = signed_in(&server, "u100").await;
    let mut a = server.client().await;
    a.signin(&watching("a", &refs)).await;
    expect_watchlist(&mut a, json!([offline(&refs[..100])])).await;
    let error = a.recv_json().await;
    assert_pusher_error(&error, Some(4302));
    a.assert_alive().await;
    drop(last);
    a.expect_no_message(QUIET).await;
    // Exactly 100 is within the limit.
    let mut hundred = server.client().await;
    hundred.signin(&watching("h", &refs[..100])).await;
    expect_watchlist(&mut hundred, json!([offline(&refs[..100])])).await;
    hundred.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn watchlist_events_off_sends_no_watchlist_events() {
    let mut config = test_config();
    config.apps[0].watchlist_events = false;
    let server = Server::start(config).await;
    let mut a = server.client().await;
    a.signin(&watching("a", &["b"])).await;
    a.expect_no_message(QUIET).await;
    let b = signed_in(&server, "b").await;
    a.expect_no_message(QUIET).await;
    drop(b);
    a.expect_no_message(QUIET).await;
    // Nor is the length limit reported for a list that is ignored.
    let ids: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut long = server.client().await;
    long.signin(&watching("l", &refs)).await;
    long.expect_no_message(QUIET).await;
}
