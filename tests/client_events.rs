//! Client events (`client-*`): who may send them, where they go, what is refused, and the
//! per-connection rate limit. Refusals are `pusher:error` and never close the socket.
//! Rules: protocol-spec/client-events.md.

mod common;

use std::time::Duration;

use common::{Client, QUIET, Server, fresh_channel, test_config};
use serde_json::{Value, json};

fn client_event(channel: &str, name: &str, data: Value) -> Value {
    json!({"event": name, "channel": channel, "data": data})
}

/// Two clients of the default app subscribed to the same private channel.
async fn private_pair(server: &Server) -> (String, Client, Client) {
    let channel = fresh_channel("private-chat-");
    let mut sender = server.client().await;
    let mut receiver = server.client().await;
    sender.subscribe_private(&channel).await;
    receiver.subscribe_private(&channel).await;
    (channel, sender, receiver)
}

/// The sender is refused with a `pusher:error`, nothing is delivered, both stay usable.
async fn assert_refused(sender: &mut Client, receiver: &mut Client) {
    sender.expect_pusher_error().await;
    receiver.expect_no_message(QUIET).await;
    sender.assert_alive().await;
}

#[tokio::test]
async fn client_event_reaches_other_subscribers_with_object_data_unchanged() {
    let server = Server::start_default().await;
    let (channel, mut sender, mut receiver) = private_pair(&server).await;
    let mut third = server.client().await;
    third.subscribe_private(&channel).await;
    let event = client_event(
        &channel,
        "client-typing",
        json!({"user": "bob", "n": [1, 2.5, null]}),
    );
    sender.send_json(&event).await;
    receiver.expect_json(&event).await;
    third.expect_json(&event).await;
}

#[tokio::test]
async fn client_event_string_data_stays_a_string() {
    let server = Server::start_default().await;
    let (channel, mut sender, mut receiver) = private_pair(&server).await;
    let event = client_event(&channel, "client-s", json!("{\"already\":\"encoded\"}"));
    sender.send_json(&event).await;
    receiver.expect_json(&event).await;
}

#[tokio::test]
async fn client_event_is_not_echoed_to_the_sender() {
    let server = Server::start_default().await;
    let (channel, mut sender, mut receiver) = private_pair(&server).await;
    let event = client_event(&channel, "client-echo", json!({}));
    sender.send_json(&event).await;
    receiver.expect_json(&event).await;
    sender.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn client_event_on_presence_carries_the_senders_user_id() {
    let server = Server::start_default().await;
    let channel = fresh_channel("presence-chat-");
    let mut sender = server.client().await;
    let mut receiver = server.client().await;
    sender.subscribe_presence(&channel, 42, json!({})).await;
    receiver.subscribe_presence(&channel, "7", json!({})).await;
    let added = sender.recv_json().await;
    assert_eq!(added["event"], "pusher_internal:member_added", "{added}");
    // A client-supplied user_id is replaced by the authorised one.
    sender
        .send_json(
            &json!({"event": "client-hi", "channel": channel, "data": {"a": 1}, "user_id": "999"}),
        )
        .await;
    receiver
        .expect_json(
            &json!({"event": "client-hi", "channel": channel, "data": {"a": 1}, "user_id": "42"}),
        )
        .await;
}

#[tokio::test]
async fn client_event_on_public_channel_is_refused() {
    let server = Server::start_default().await;
    let channel = fresh_channel("public-");
    let mut sender = server.client().await;
    let mut receiver = server.client().await;
    sender.subscribe(&channel).await;
    receiver.subscribe(&channel).await;
    sender
        .send_json(&client_event(&channel, "client-x", json!({})))
        .await;
    assert_refused(&mut sender, &mut receiver).await;
}

#[tokio::test]
async fn client_event_from_unsubscribed_socket_is_refused() {
    let server = Server::start_default().await;
    let (channel, _member, mut receiver) = private_pair(&server).await;
    let mut outsider = server.client().await;
    outsider
        .send_json(&client_event(&channel, "client-x", json!({})))
        .await;
    assert_refused(&mut outsider, &mut receiver).await;
}

#[tokio::test]
async fn client_event_after_unsubscribing_is_refused() {
    let server = Server::start_default().await;
    let (channel, mut sender, mut receiver) = private_pair(&server).await;
    sender.unsubscribe(&channel).await;
    sender
        .send_json(&client_event(&channel, "client-x", json!({})))
        .await;
    assert_refused(&mut sender, &mut receiver).await;
}

#[tokio::test]
async fn client_events_disabled_for_the_app_are_refused() {
    let mut config = test_config();
    config.apps[0].client_events = false;
    let server = Server::start(config).await;
    let (channel, mut sender, mut receiver) = private_pair(&server).await;
    sender
        .send_json(&client_event(&channel, "client-x", json!({})))
        .await;
    assert_refused(&mut sender, &mut receiver).await;
}

#[tokio::test]
async fn client_event_on_encrypted_channel_is_refused() {
    let server = Server::start_default().await;
    let channel = fresh_channel("private-encrypted-");
    let mut sender = server.client().await;
    let mut receiver = server.client().await;
    sender.subscribe_private(&channel).await;
    receiver.subscribe_private(&channel).await;
    sender
        .send_json(&client_event(&channel, "client-x", json!({})))
        .await;
    assert_refused(&mut sender, &mut receiver).await;
}

#[tokio::test]
async fn client_event_name_over_200_characters_is_refused() {
    let server = Server::start_default().await;
    let (channel, mut sender, mut receiver) = private_pair(&server).await;
    let long = format!("client-{}", "x".repeat(194)); // 201 characters
    sender
        .send_json(&client_event(&channel, &long, json!({})))
        .await;
    assert_refused(&mut sender, &mut receiver).await;
    let exact = format!("client-{}", "x".repeat(193)); // 200 characters
    let event = client_event(&channel, &exact, json!({}));
    sender.send_json(&event).await;
    receiver.expect_json(&event).await;
}

#[tokio::test]
async fn client_events_over_the_rate_limit_get_4301_and_are_not_delivered() {
    let mut config = test_config();
    config.apps[0].client_events_per_second = 3;
    let server = Server::start(config).await;
    let (channel, mut sender, mut receiver) = private_pair(&server).await;
    for i in 0..5 {
        sender
            .send_json(&client_event(&channel, "client-burst", json!({"i": i})))
            .await;
    }
    for i in 0..3 {
        receiver
            .expect_json(&client_event(&channel, "client-burst", json!({"i": i})))
            .await;
    }
    receiver.expect_no_message(QUIET).await;
    // One 4301 refusal per rejected event (at least one), then the socket still works.
    common::assert_pusher_error(&sender.recv_json().await, Some(4301));
    sender
        .send_json(&json!({"event": "pusher:ping", "data": {}}))
        .await;
    let mut refusals = 1;
    loop {
        let frame = sender.recv_json().await;
        if frame == json!({"event": "pusher:pong", "data": {}}) {
            break;
        }
        common::assert_pusher_error(&frame, Some(4301));
        refusals += 1;
    }
    assert!(refusals <= 2, "{refusals} refusals for 2 excess events");
}

#[tokio::test]
async fn client_events_flow_again_after_the_rate_window() {
    let mut config = test_config();
    config.apps[0].client_events_per_second = 2;
    let server = Server::start(config).await;
    let (channel, mut sender, mut receiver) = private_pair(&server).await;
    for i in 0..3 {
        sender
            .send_json(&client_event(&channel, "client-r", json!({"i": i})))
            .await;
    }
    for i in 0..2 {
        receiver
            .expect_json(&client_event(&channel, "client-r", json!({"i": i})))
            .await;
    }
    common::assert_pusher_error(&sender.recv_json().await, Some(4301));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let event = client_event(&channel, "client-r", json!({"i": "later"}));
    sender.send_json(&event).await;
    receiver.expect_json(&event).await;
    sender.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn refused_client_event_does_not_disturb_the_channel() {
    let server = Server::start_default().await;
    let (channel, mut sender, mut receiver) = private_pair(&server).await;
    sender
        .send_json(&client_event(&channel, "not-a-client-event", json!({})))
        .await;
    assert_refused(&mut sender, &mut receiver).await;
    let event = client_event(&channel, "client-ok", json!({"after": true}));
    sender.send_json(&event).await;
    receiver.expect_json(&event).await;
}
