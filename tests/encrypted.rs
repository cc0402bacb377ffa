//! End-to-end encrypted channels (`private-encrypted-…`): authorised like private channels,
//! ciphertext relayed untouched, no client events, no multi-channel publishes.
//! Rules: protocol-spec/encrypted-channels.md.

mod common;

use common::{APP_KEY, APP_SECRET, QUIET, Server, channel_auth, fresh_channel};
use serde_json::json;

/// What pusher-http-node posts as `data`: a JSON string holding base64 nonce and ciphertext.
const CIPHERTEXT: &str =
    "{\"nonce\":\"4T8ePn+/Yk9RlJ3jG5nN0Q3lZ7a1cXvA\",\"ciphertext\":\"q0+/8Jz0W2x1n9Q==\"}";

#[tokio::test]
async fn encrypted_subscription_needs_a_private_style_signature() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    let channel = fresh_channel("private-encrypted-");
    let sid = client.socket_id.clone();
    let plain_name = channel.replacen("private-encrypted-", "private-", 1);
    for auth in [
        String::new(),
        format!("{APP_KEY}:00"),
        // Signed for the non-encrypted name, or with another secret.
        channel_auth(APP_KEY, APP_SECRET, &sid, &plain_name, None),
        channel_auth(APP_KEY, "other-secret", &sid, &channel, None),
    ] {
        client.send_subscribe(&channel, &auth, None).await;
        client.expect_subscription_error(&channel, 401).await;
    }
    client.subscribe_private(&channel).await;
    client
        .subscribe_private(&fresh_channel("private-encrypted-cache-"))
        .await;
}

#[tokio::test]
async fn ciphertext_is_relayed_byte_for_byte() {
    let server = Server::start_default().await;
    let channel = fresh_channel("private-encrypted-");
    let mut client = server.client().await;
    client.subscribe_private(&channel).await;
    let api = server.api();
    api.publish(&channel, "secret", CIPHERTEXT).await;
    client
        .expect_json(&json!({"event": "secret", "channel": channel, "data": CIPHERTEXT}))
        .await;
    let response = api
        .post(
            "/batch_events",
            &json!({"batch": [{"name": "again", "data": CIPHERTEXT, "channel": channel}]}),
        )
        .await;
    assert_eq!(response.ok(), &json!({}));
    let frame = client.recv_json().await;
    assert_eq!(
        frame["data"].as_str(),
        Some(CIPHERTEXT),
        "data string unchanged: {frame}"
    );
}

#[tokio::test]
async fn encrypted_cache_channel_caches_the_ciphertext() {
    let server = Server::start_default().await;
    let channel = fresh_channel("private-encrypted-cache-");
    server.api().publish(&channel, "secret", CIPHERTEXT).await;
    let mut client = server.client().await;
    client.subscribe_private(&channel).await;
    client
        .expect_json(&json!({"event": "secret", "channel": channel, "data": CIPHERTEXT}))
        .await;
}

#[tokio::test]
async fn client_events_on_encrypted_channels_are_refused() {
    let server = Server::start_default().await;
    let mut sender = server.client().await;
    let mut receiver = server.client().await;
    for channel in [
        fresh_channel("private-encrypted-"),
        fresh_channel("private-encrypted-cache-"),
    ] {
        for client in [&mut sender, &mut receiver] {
            client.subscribe_private(&channel).await;
            if channel.starts_with("private-encrypted-cache-") {
                let miss = client.recv_json().await;
                assert_eq!(miss["event"], "pusher:cache_miss", "{miss}");
            }
        }
        sender
            .send_json(&json!({"event": "client-x", "channel": channel, "data": {"a": 1}}))
            .await;
        sender.expect_pusher_error().await;
        receiver.expect_no_message(QUIET).await;
        sender.assert_alive().await;
    }
}

#[tokio::test]
async fn publishing_to_an_encrypted_channel_and_another_channel_is_400() {
    let server = Server::start_default().await;
    let encrypted = fresh_channel("private-encrypted-");
    let mut public = server.client().await;
    let mut secret = server.client().await;
    public.subscribe("plain").await;
    secret.subscribe_private(&encrypted).await;
    let api = server.api();
    for channels in [
        json!([encrypted, "plain"]),
        json!(["plain", encrypted]),
        json!([encrypted, fresh_channel("private-encrypted-")]),
    ] {
        api.post(
            "/events",
            &json!({"name": "e", "data": CIPHERTEXT, "channels": channels}),
        )
        .await
        .assert_error(400);
    }
    public.expect_no_message(QUIET).await;
    secret.expect_no_message(QUIET).await;
}
