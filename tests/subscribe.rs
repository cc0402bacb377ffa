//! Subscribing and unsubscribing: public, private and encrypted channels, channel-name
//! rules, and `pusher:subscription_error` (the socket always stays open).
//! Rules: protocol-spec/subscriptions.md.

mod common;

use common::{Client, QUIET, Server, channel_auth, fresh_channel};
use serde_json::json;

#[tokio::test]
async fn public_subscribe_succeeds_with_data_empty_object_string() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client
        .send_json(
            &json!({"event": "pusher:subscribe", "data": {"auth": "", "channel": "my-channel"}}),
        )
        .await;
    client
        .expect_json(&json!({
            "event": "pusher_internal:subscription_succeeded",
            "channel": "my-channel",
            "data": "{}"
        }))
        .await;
}

#[tokio::test]
async fn subscribe_without_auth_field_succeeds_on_public_channel() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client
        .send_json(&json!({"event": "pusher:subscribe", "data": {"channel": "no-auth"}}))
        .await;
    client
        .expect_json(&json!({
            "event": "pusher_internal:subscription_succeeded",
            "channel": "no-auth",
            "data": "{}"
        }))
        .await;
}

#[tokio::test]
async fn subscribe_data_may_be_a_json_string() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client
        .send_json(&json!({
            "event": "pusher:subscribe",
            "data": "{\"auth\":\"\",\"channel\":\"stringly\"}"
        }))
        .await;
    client
        .expect_json(&json!({
            "event": "pusher_internal:subscription_succeeded",
            "channel": "stringly",
            "data": "{}"
        }))
        .await;
}

#[tokio::test]
async fn subscribed_socket_receives_published_events() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client.subscribe("news").await;
    server.api().publish("news", "headline", "{\"n\":1}").await;
    client
        .expect_json(&json!({"event": "headline", "channel": "news", "data": "{\"n\":1}"}))
        .await;
}

#[tokio::test]
async fn resubscribing_is_idempotent() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client.subscribe("twice").await;
    client.subscribe("twice").await;
    server.api().publish("twice", "e", "once").await;
    client
        .expect_json(&json!({"event": "e", "channel": "twice", "data": "once"}))
        .await;
    client.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn unsubscribe_sends_nothing_and_stops_events() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client.subscribe("leaving").await;
    client.unsubscribe("leaving").await;
    client.expect_no_message(QUIET).await;
    server.api().publish("leaving", "e", "x").await;
    client.expect_no_message(QUIET).await;
    client.assert_alive().await;
}

#[tokio::test]
async fn unsubscribe_from_a_channel_not_held_is_ignored() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client.unsubscribe("never-joined").await;
    client.expect_no_message(QUIET).await;
    client.assert_alive().await;
}

#[tokio::test]
async fn private_subscribe_with_valid_signature_succeeds() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client.subscribe_private("private-room").await;
}

#[tokio::test]
async fn private_signature_over_channel_data_is_accepted() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    let channel_data = "{\"extra\":true}";
    let auth = client.auth("private-with-data", Some(channel_data));
    client
        .send_subscribe("private-with-data", &auth, Some(channel_data))
        .await;
    client
        .expect_json(&json!({
            "event": "pusher_internal:subscription_succeeded",
            "channel": "private-with-data",
            "data": "{}"
        }))
        .await;
}

#[tokio::test]
async fn private_subscribe_with_bad_signature_gets_auth_error_and_socket_stays_open() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    let forged = format!("{}:{}", client.key, "0".repeat(64));
    client.send_subscribe("private-x", &forged, None).await;
    let data = client.expect_subscription_error("private-x", 401).await;
    assert_eq!(data["type"], "AuthError");
    // Still open, and a later valid subscribe to the same channel works.
    client.subscribe_private("private-x").await;
}

#[tokio::test]
async fn private_subscribe_without_auth_gets_auth_error() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client.send_subscribe("private-x", "", None).await;
    let data = client.expect_subscription_error("private-x", 401).await;
    assert_eq!(data["type"], "AuthError");
    client
        .send_json(&json!({"event": "pusher:subscribe", "data": {"channel": "private-y"}}))
        .await;
    let data = client.expect_subscription_error("private-y", 401).await;
    assert_eq!(data["type"], "AuthError");
    client.assert_alive().await;
}

#[tokio::test]
async fn private_auth_with_wrong_key_gets_auth_error() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    // Correct signature, wrong key part.
    let auth = channel_auth(
        "other-key",
        &client.secret,
        &client.socket_id,
        "private-k",
        None,
    );
    client.send_subscribe("private-k", &auth, None).await;
    let data = client.expect_subscription_error("private-k", 401).await;
    assert_eq!(data["type"], "AuthError");
    // A signature with no key part at all.
    let bare = auth
        .split_once(':')
        .map(|(_, sig)| sig.to_string())
        .unwrap_or_default();
    client.send_subscribe("private-k", &bare, None).await;
    client.expect_subscription_error("private-k", 401).await;
}

#[tokio::test]
async fn private_signature_for_another_socket_or_channel_is_refused() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    let other_socket = channel_auth(&client.key, &client.secret, "1.1", "private-s", None);
    client
        .send_subscribe("private-s", &other_socket, None)
        .await;
    client.expect_subscription_error("private-s", 401).await;
    let other_channel = client.auth("private-t", None);
    client
        .send_subscribe("private-s", &other_channel, None)
        .await;
    client.expect_subscription_error("private-s", 401).await;
    let wrong_secret = channel_auth(
        &client.key,
        "not-the-secret",
        &client.socket_id,
        "private-s",
        None,
    );
    client
        .send_subscribe("private-s", &wrong_secret, None)
        .await;
    client.expect_subscription_error("private-s", 401).await;
}

#[tokio::test]
async fn encrypted_channel_is_authorised_like_private() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client.send_subscribe("private-encrypted-x", "", None).await;
    client
        .expect_subscription_error("private-encrypted-x", 401)
        .await;
    client.subscribe_private("private-encrypted-x").await;
    // The ciphertext string is relayed verbatim.
    let ciphertext = "{\"nonce\":\"bm9uY2U=\",\"ciphertext\":\"Y2lwaGVy\"}";
    server
        .api()
        .publish("private-encrypted-x", "secret", ciphertext)
        .await;
    client
        .expect_json(
            &json!({"event": "secret", "channel": "private-encrypted-x", "data": ciphertext}),
        )
        .await;
}

#[tokio::test]
async fn invalid_channel_names_are_refused_with_400() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    let too_long = "a".repeat(201);
    for name in [
        too_long.as_str(),
        "has space",
        "colon:here",
        "slash/here",
        "caf\u{e9}",
        "star*",
        "private-x!",
    ] {
        client.send_subscribe(name, "", None).await;
        client.expect_subscription_error(name, 400).await;
    }
    client.assert_alive().await;
}

#[tokio::test]
async fn channel_name_of_200_allowed_characters_is_accepted() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    let base = "AZaz09_-=@,.;";
    let name: String = base.chars().cycle().take(200).collect();
    client.subscribe(&name).await;
}

#[tokio::test]
async fn hash_prefixed_channels_are_refused_with_400() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    for name in ["#foo", "#private-bar"] {
        client.send_subscribe(name, "", None).await;
        client.expect_subscription_error(name, 400).await;
    }
    client.assert_alive().await;
}

#[tokio::test]
async fn failed_subscription_leaves_other_subscriptions_working() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client.subscribe("keep").await;
    client.send_subscribe("private-nope", "bad", None).await;
    client.expect_subscription_error("private-nope", 401).await;
    server.api().publish("keep", "e", "still").await;
    client
        .expect_json(&json!({"event": "e", "channel": "keep", "data": "still"}))
        .await;
}

#[tokio::test]
async fn events_reach_only_subscribers_of_that_channel() {
    let server = Server::start_default().await;
    let a_name = fresh_channel("chan-a-");
    let b_name = fresh_channel("chan-b-");
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut idle = server.client().await;
    a.subscribe(&a_name).await;
    b.subscribe(&b_name).await;
    server.api().publish(&a_name, "e", "for-a").await;
    a.expect_json(&json!({"event": "e", "channel": a_name, "data": "for-a"}))
        .await;
    b.expect_no_message(QUIET).await;
    idle.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn disconnecting_removes_the_socket_from_its_channels() {
    let server = Server::start_default().await;
    let mut gone = server.client().await;
    gone.subscribe("short-lived").await;
    drop(gone);
    let api = server.api();
    let deadline = std::time::Instant::now() + common::RECV_TIMEOUT;
    loop {
        let info = api.get("/channels/short-lived", &[]).await;
        if info.ok() == &json!({"occupied": false}) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "channel still occupied after its only subscriber disconnected: {}",
            info.text
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A fresh connection can use the same channel normally.
    let mut again = Client::connect(server.addr).await;
    again.subscribe("short-lived").await;
}
