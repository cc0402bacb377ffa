//! Users: `pusher:signin`, the `#server-to-user-{id}` channel, sending to a user through the
//! HTTP API, terminating a user's connections, presence authorised by sign-in, and
//! "authorized connections" (the sign-in deadline).
//! Rules: protocol-spec/users.md.

mod common;

use std::time::{Duration, Instant};

use common::{
    APP_KEY, APP_SECRET, Client, QUIET, Server, channel_auth, data_json, fresh_channel,
    presence_data, signin_auth, test_config,
};
use serde_json::{Value, json};

/// Expects the next frame to be `pusher:error` with code 4009 (a refused sign-in).
async fn expect_signin_refused(client: &mut Client) {
    let frame = client.recv_json().await;
    common::assert_pusher_error(&frame, Some(4009));
}

/// A user-channel event as every recipient must see it.
fn user_event(user: &str, name: &str, data: &str) -> Value {
    json!({"event": name, "channel": format!("#server-to-user-{user}"), "data": data})
}

/// A server whose app requires sign-in within one second.
async fn strict_server(require_signin: bool) -> Server {
    let mut config = test_config();
    config.apps[0].require_signin = require_signin;
    config.apps[0].signin_timeout = Duration::from_secs(1);
    Server::start(config).await
}

// ----- sign-in --------------------------------------------------------------------------------

#[tokio::test]
async fn signin_answers_signin_success_with_the_same_user_data_string() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    // Odd spacing and escapes: the string comes back exactly as sent, never re-encoded.
    let user_data = "{ \"id\" : \"alice\", \"user_info\": {\"name\":\"Al\\u00efce \u{2603}\"} }";
    let auth = client.signin_token(user_data);
    client.send_signin(&auth, user_data).await;
    client
        .expect_json(&json!({"event": "pusher:signin_success", "data": {"user_data": user_data}}))
        .await;
    client.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn signin_with_a_bad_signature_gets_4009_and_the_socket_stays_open() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    let user_data = json!({"id": "alice"}).to_string();
    let sid = client.socket_id.clone();
    let bad = [
        signin_auth(APP_KEY, "other-secret", &sid, &user_data),
        signin_auth(APP_KEY, APP_SECRET, "1.1", &user_data),
        signin_auth(APP_KEY, APP_SECRET, &sid, "{\"id\":\"bob\"}"),
        signin_auth("other-key", APP_SECRET, &sid, &user_data),
        // A channel-style signature over the same text is not a sign-in signature.
        channel_auth(APP_KEY, APP_SECRET, &sid, &user_data, None),
        format!("{APP_KEY}:zz"),
        String::new(),
    ];
    for auth in &bad {
        client.send_signin(auth, &user_data).await;
        expect_signin_refused(&mut client).await;
    }
    client.assert_alive().await;
    client.signin(&user_data).await;
}

#[tokio::test]
async fn user_data_must_be_an_object_with_a_non_empty_string_id() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    for user_data in [
        "[{\"id\":\"alice\"}]",
        "\"alice\"",
        "not json",
        "{\"id\":\"alice\"",
        "{}",
        "{\"user_info\":{\"name\":\"A\"}}",
        "{\"id\":\"\"}",
        "{\"id\":null}",
        "{\"id\":12}",
        "{\"id\":[\"alice\"]}",
    ] {
        // Validly signed: only the content is wrong.
        let auth = client.signin_token(user_data);
        client.send_signin(&auth, user_data).await;
        expect_signin_refused(&mut client).await;
    }
    client.assert_alive().await;
    client.signin_as("alice").await;
}

#[tokio::test]
async fn signing_in_again_as_the_same_user_succeeds_and_as_another_is_refused() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client.signin_as("alice").await;
    client
        .signin(&json!({"id": "alice", "user_info": {"v": 2}}).to_string())
        .await;
    let bob = json!({"id": "bob"}).to_string();
    let auth = client.signin_token(&bob);
    client.send_signin(&auth, &bob).await;
    expect_signin_refused(&mut client).await;
    // Still alice: alice's events arrive, bob's do not.
    let api = server.api();
    api.publish("#server-to-user-bob", "e", "for-bob").await;
    api.publish("#server-to-user-alice", "e", "for-alice").await;
    client
        .expect_json(&user_event("alice", "e", "for-alice"))
        .await;
}

// ----- the user channel -------------------------------------------------------------------------

#[tokio::test]
async fn user_channel_subscription_succeeds_only_for_the_signed_in_user() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    // pusher-js subscribes with an empty auth and no channel_data.
    client
        .send_subscribe("#server-to-user-alice", "", None)
        .await;
    client
        .expect_subscription_error("#server-to-user-alice", 403)
        .await;
    client.signin_as("alice").await;
    client.send_subscribe("#server-to-user-bob", "", None).await;
    client
        .expect_subscription_error("#server-to-user-bob", 403)
        .await;
    client.subscribe("#server-to-user-alice").await;
}

// ----- sending to a user ----------------------------------------------------------------------

#[tokio::test]
async fn event_to_a_user_reaches_every_socket_signed_in_as_that_user_only() {
    let server = Server::start_default().await;
    let mut subscribed = server.client().await;
    let mut signed_only = server.client().await;
    let mut bob = server.client().await;
    let mut anonymous = server.client().await;
    subscribed.signin_as("alice").await;
    subscribed.subscribe("#server-to-user-alice").await;
    signed_only.signin_as("alice").await;
    bob.signin_as("bob").await;
    bob.subscribe("#server-to-user-bob").await;
    let data = "{\"text\" : \"hi \\u00e9\"}";
    let response = server
        .api()
        .post(
            "/events",
            &json!({"name": "App\\Notify", "data": data, "channels": ["#server-to-user-alice"]}),
        )
        .await;
    assert_eq!(response.ok(), &json!({}));
    let expected = user_event("alice", "App\\Notify", data);
    subscribed.expect_json(&expected).await;
    signed_only.expect_json(&expected).await;
    bob.expect_no_message(QUIET).await;
    anonymous.expect_no_message(QUIET).await;
    // A user signed in nowhere: accepted, delivered to nobody.
    server
        .api()
        .publish("#server-to-user-nobody", "e", "lost")
        .await;
    subscribed.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn event_to_a_user_skips_the_excluded_socket_id() {
    let server = Server::start_default().await;
    let mut first = server.client().await;
    let mut second = server.client().await;
    first.signin_as("alice").await;
    second.signin_as("alice").await;
    let response = server
        .api()
        .post(
            "/events",
            &json!({
                "name": "e",
                "data": "d",
                "channel": "#server-to-user-alice",
                "socket_id": first.socket_id,
            }),
        )
        .await;
    assert_eq!(response.ok(), &json!({}));
    second.expect_json(&user_event("alice", "e", "d")).await;
    first.expect_no_message(QUIET).await;
}

// ----- terminating a user's connections -------------------------------------------------------

#[tokio::test]
async fn terminate_connections_closes_every_socket_of_that_user_with_4009() {
    let server = Server::start_default().await;
    let mut alice1 = server.client().await;
    let mut alice2 = server.client().await;
    let mut bob = server.client().await;
    let mut presence_only = server.client().await;
    alice1.signin_as("alice").await;
    alice2.signin_as("alice").await;
    bob.signin_as("bob").await;
    // A presence identity is not a sign-in: it is not terminated.
    presence_only
        .subscribe_presence(&fresh_channel("presence-t-"), "alice", json!({}))
        .await;
    let response = server.api().terminate("alice").await;
    assert_eq!(response.ok(), &json!({}));
    alice1.expect_error_then_close(4009).await;
    alice2.expect_error_then_close(4009).await;
    bob.expect_no_message(QUIET).await;
    bob.assert_alive().await;
    presence_only.assert_alive().await;
    // The user may come back.
    let mut again = server.client().await;
    again.signin_as("alice").await;
    server
        .api()
        .publish("#server-to-user-alice", "e", "back")
        .await;
    again.expect_json(&user_event("alice", "e", "back")).await;
}

#[tokio::test]
async fn terminate_connections_for_a_user_signed_in_nowhere_answers_empty_object() {
    let server = Server::start_default().await;
    let mut bob = server.client().await;
    bob.signin_as("bob").await;
    assert_eq!(server.api().terminate("nobody").await.ok(), &json!({}));
    bob.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn terminated_user_leaves_its_presence_channels() {
    let server = Server::start_default().await;
    let channel = fresh_channel("presence-kick-");
    let mut watcher = server.client().await;
    let mut alice = server.client().await;
    watcher.subscribe_presence(&channel, "w", json!({})).await;
    alice.signin_as("alice").await;
    let auth = alice.auth(&channel, None);
    alice.send_subscribe(&channel, &auth, None).await;
    alice.expect_subscribed(&channel).await;
    let added = watcher.recv_json().await;
    assert_eq!(added["event"], "pusher_internal:member_added", "{added}");
    server.api().terminate("alice").await.ok();
    alice.expect_error_then_close(4009).await;
    watcher
        .expect_json(&json!({
            "event": "pusher_internal:member_removed",
            "channel": channel,
            "data": "{\"user_id\":\"alice\"}"
        }))
        .await;
    let users = server
        .api()
        .get(&format!("/channels/{channel}/users"), &[])
        .await;
    assert_eq!(users.ok(), &json!({"users": [{"id": "w"}]}));
}

#[tokio::test]
async fn terminate_connections_without_the_apps_prefix_uses_the_signing_key() {
    let server = Server::start_default().await;
    let mut alice = server.client().await;
    alice.signin_as("alice").await;
    let api = server.api();
    let path = "/users/alice/terminate_connections";
    // Signed over another path than the one sent: refused.
    let mut wrong = api.signed(
        "POST",
        "/apps/1/users/alice/terminate_connections",
        &[],
        b"{}",
    );
    wrong.path = path.to_string();
    api.send(&wrong).await.assert_error(401);
    // An unknown key: refused.
    let unknown = common::Api::for_app(server.addr, "1", "no-such-key", APP_SECRET);
    let stranger = unknown.signed("POST", path, &[], b"{}");
    unknown.send(&stranger).await.assert_error(401);
    alice.assert_alive().await;
    // Signed with the app's key over the path as sent: works.
    let request = api.signed("POST", path, &[], b"{}");
    assert_eq!(api.send(&request).await.ok(), &json!({}));
    alice.expect_error_then_close(4009).await;
}

// ----- presence authorised by sign-in -----------------------------------------------------------

#[tokio::test]
async fn presence_without_channel_data_uses_the_signed_in_user() {
    let server = Server::start_default().await;
    let channel = fresh_channel("presence-signin-");
    let mut watcher = server.client().await;
    let mut client = server.client().await;
    watcher.subscribe_presence(&channel, "w", json!(null)).await;
    let auth = client.auth(&channel, None);
    // Not signed in yet: there is nobody to be.
    client.send_subscribe(&channel, &auth, None).await;
    client.expect_subscription_error(&channel, 400).await;
    client
        .signin(&json!({"id": "alice", "user_info": {"name": "Alice"}}).to_string())
        .await;
    // The signature covers `socket_id:channel` only; one over channel_data that is not sent
    // is refused.
    let cd = presence_data("alice", json!({"name": "Alice"}));
    let auth_with_data = client.auth(&channel, Some(&cd));
    client.send_subscribe(&channel, &auth_with_data, None).await;
    client.expect_subscription_error(&channel, 401).await;
    client.send_subscribe(&channel, &auth, None).await;
    let frame = client.expect_subscribed(&channel).await;
    let mut data = data_json(&frame);
    data["presence"]["ids"]
        .as_array_mut()
        .expect("ids is an array")
        .sort_by_key(|v| v.to_string());
    assert_eq!(
        data,
        json!({"presence": {
            "ids": ["alice", "w"],
            "hash": {"alice": {"name": "Alice"}, "w": null},
            "count": 2
        }})
    );
    watcher
        .expect_json(&json!({
            "event": "pusher_internal:member_added",
            "channel": channel,
            "data": json!({"user_id": "alice", "user_info": {"name": "Alice"}}).to_string()
        }))
        .await;
}

#[tokio::test]
async fn presence_channel_data_on_a_signed_in_socket_decides_the_member() {
    let server = Server::start_default().await;
    let channel = fresh_channel("presence-override-");
    let mut client = server.client().await;
    client
        .signin(&json!({"id": "alice", "user_info": {"name": "Alice"}}).to_string())
        .await;
    let data = client
        .subscribe_presence(&channel, "other", json!({"name": "O"}))
        .await;
    assert_eq!(
        data,
        json!({"presence": {"ids": ["other"], "hash": {"other": {"name": "O"}}, "count": 1}})
    );
}

// ----- authorized connections -----------------------------------------------------------------

#[tokio::test]
async fn require_signin_closes_sockets_that_do_not_authorize_in_time() {
    let server = strict_server(true).await;
    let started = Instant::now();
    let mut idle = server.client().await;
    let mut public = server.client().await;
    let mut failed = server.client().await;
    // Neither a public subscription nor a refused sign-in counts.
    public.subscribe("news").await;
    let user_data = json!({"id": "alice"}).to_string();
    failed.send_signin("app-key:00", &user_data).await;
    expect_signin_refused(&mut failed).await;
    for client in [&mut idle, &mut public, &mut failed] {
        client.expect_error_then_close(4009).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the 1 s deadline: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn signing_in_in_time_keeps_the_socket_open_past_the_deadline() {
    let server = strict_server(true).await;
    let mut client = server.client().await;
    client.signin_as("alice").await;
    client.expect_no_message(Duration::from_millis(1500)).await;
    client.assert_alive().await;
}

#[tokio::test]
async fn private_or_presence_subscription_in_time_keeps_the_socket_open() {
    let server = strict_server(true).await;
    let mut private = server.client().await;
    let mut presence = server.client().await;
    let mut idle = server.client().await;
    private.subscribe_private("private-ok").await;
    presence
        .subscribe_presence(&fresh_channel("presence-ok-"), "p", json!({}))
        .await;
    // The control socket proves the deadline has passed.
    idle.expect_error_then_close(4009).await;
    private.expect_no_message(Duration::from_millis(300)).await;
    private.assert_alive().await;
    presence.assert_alive().await;
}

#[tokio::test]
async fn without_require_signin_nothing_is_closed_for_lack_of_sign_in() {
    let server = strict_server(false).await;
    let mut idle = server.client().await;
    let mut public = server.client().await;
    public.subscribe("news").await;
    idle.expect_no_message(Duration::from_millis(1500)).await;
    idle.assert_alive().await;
    public.assert_alive().await;
}
