//! The signed HTTP API: publishing (single and batch), channel queries, request
//! authentication, and every error status. Error bodies are JSON `{"error":"..."}`.
//! Rules: protocol-spec/http-api.md.

mod common;

use std::time::Duration;

use common::{
    Api, Client, QUIET, Server, fresh_channel, http_request, md5_hex, now_secs, test_config,
};
use serde_json::{Value, json};

fn sorted_users(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = body["users"]
        .as_array()
        .unwrap_or_else(|| panic!("users must be an array: {body}"))
        .iter()
        .map(|u| {
            assert_eq!(u.as_object().map(|o| o.len()), Some(1), "only id: {u}");
            u["id"].as_str().expect("id is a string").to_string()
        })
        .collect();
    ids.sort();
    ids
}

// ----- publishing --------------------------------------------------------------------------

#[tokio::test]
async fn publish_answers_empty_object_and_delivers_data_verbatim() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client.subscribe("news").await;
    // Odd spacing and escapes must survive byte for byte.
    let data = "{ \"text\" : \"caf\\u00e9 \u{2603}\", \"n\":1.50 }";
    let response = server
        .api()
        .post(
            "/events",
            &json!({"name": "update", "data": data, "channels": ["news"]}),
        )
        .await;
    assert_eq!(response.ok(), &json!({}));
    client
        .expect_json(&json!({"event": "update", "channel": "news", "data": data}))
        .await;
}

#[tokio::test]
async fn publish_accepts_a_single_channel_field() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client.subscribe("solo").await;
    let response = server
        .api()
        .post(
            "/events",
            &json!({"name": "e", "data": "d", "channel": "solo"}),
        )
        .await;
    assert_eq!(response.ok(), &json!({}));
    client
        .expect_json(&json!({"event": "e", "channel": "solo", "data": "d"}))
        .await;
}

#[tokio::test]
async fn publish_to_several_channels_reaches_each() {
    let server = Server::start_default().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe("multi-a").await;
    b.subscribe("multi-b").await;
    let response = server
        .api()
        .post(
            "/events",
            &json!({"name": "e", "data": "d", "channels": ["multi-a", "multi-b", "multi-empty"]}),
        )
        .await;
    assert_eq!(response.ok(), &json!({}));
    a.expect_json(&json!({"event": "e", "channel": "multi-a", "data": "d"}))
        .await;
    b.expect_json(&json!({"event": "e", "channel": "multi-b", "data": "d"}))
        .await;
}

#[tokio::test]
async fn laravel_style_event_names_are_routed_verbatim() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client.subscribe_private("private-App.Models.User.1").await;
    let name = "App\\Events\\OrderShipped";
    server
        .api()
        .publish("private-App.Models.User.1", name, "{}")
        .await;
    client
        .expect_json(&json!({"event": name, "channel": "private-App.Models.User.1", "data": "{}"}))
        .await;
    let exact = "e".repeat(200);
    server
        .api()
        .publish("private-App.Models.User.1", &exact, "{}")
        .await;
    client
        .expect_json(&json!({"event": exact, "channel": "private-App.Models.User.1", "data": "{}"}))
        .await;
}

#[tokio::test]
async fn socket_id_excludes_that_connection() {
    let server = Server::start_default().await;
    let mut me = server.client().await;
    let mut other = server.client().await;
    me.subscribe("room").await;
    other.subscribe("room").await;
    let response = server
        .api()
        .post(
            "/events",
            &json!({"name": "e", "data": "d", "channels": ["room"], "socket_id": me.socket_id}),
        )
        .await;
    assert_eq!(response.ok(), &json!({}));
    other
        .expect_json(&json!({"event": "e", "channel": "room", "data": "d"}))
        .await;
    me.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn publish_with_info_returns_counts_per_channel() {
    let server = Server::start_default().await;
    let public = fresh_channel("info-");
    let presence = fresh_channel("presence-info-");
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut b2 = server.client().await;
    a.subscribe(&public).await;
    b.subscribe(&public).await;
    a.subscribe_presence(&presence, "1", json!({})).await;
    b.subscribe_presence(&presence, "2", json!({})).await;
    b2.subscribe_presence(&presence, "2", json!({})).await;
    let response = server
        .api()
        .post(
            "/events",
            &json!({
                "name": "e", "data": "d", "channels": [public, presence],
                "info": "subscription_count,user_count"
            }),
        )
        .await;
    assert_eq!(
        response.ok(),
        &json!({"channels": {
            public.as_str(): {"subscription_count": 2},
            presence.as_str(): {"subscription_count": 3, "user_count": 2}
        }})
    );
    let only_users = server
        .api()
        .post(
            "/events",
            &json!({"name": "e", "data": "d", "channels": [presence], "info": "user_count"}),
        )
        .await;
    assert_eq!(
        only_users.ok(),
        &json!({"channels": {presence.as_str(): {"user_count": 2}}})
    );
}

#[tokio::test]
async fn events_to_one_app_never_reach_another_app() {
    let mut config = test_config();
    let mut second = config.apps[0].clone();
    second.id = "2".to_string();
    second.key = "second-key".to_string();
    second.secret = "second-secret".to_string();
    config.apps.push(second);
    let server = Server::start(config).await;
    let mut first_app = server.client().await;
    let mut second_app = Client::connect_app(server.addr, "second-key", "second-secret").await;
    first_app.subscribe("shared-name").await;
    second_app.subscribe("shared-name").await;
    let api2 = Api::for_app(server.addr, "2", "second-key", "second-secret");
    api2.publish("shared-name", "e", "two").await;
    second_app
        .expect_json(&json!({"event": "e", "channel": "shared-name", "data": "two"}))
        .await;
    first_app.expect_no_message(QUIET).await;
    // The first app's credentials do not sign for the second app.
    let mut wrong = api2.clone();
    wrong.key = common::APP_KEY.to_string();
    wrong.secret = common::APP_SECRET.to_string();
    wrong
        .post(
            "/events",
            &json!({"name": "e", "data": "d", "channels": ["x"]}),
        )
        .await
        .assert_error(401);
}

// ----- batch -------------------------------------------------------------------------------

#[tokio::test]
async fn batch_events_delivers_in_order_and_answers_empty_object() {
    let server = Server::start_default().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe("batch-a").await;
    b.subscribe("batch-b").await;
    let response = server
        .api()
        .post(
            "/batch_events",
            &json!({"batch": [
                {"name": "one", "data": "1", "channel": "batch-a"},
                {"name": "two", "data": "2", "channel": "batch-b"},
                {"name": "three", "data": "3", "channel": "batch-a"}
            ]}),
        )
        .await;
    assert_eq!(response.ok(), &json!({}));
    a.expect_json(&json!({"event": "one", "channel": "batch-a", "data": "1"}))
        .await;
    a.expect_json(&json!({"event": "three", "channel": "batch-a", "data": "3"}))
        .await;
    b.expect_json(&json!({"event": "two", "channel": "batch-b", "data": "2"}))
        .await;
}

#[tokio::test]
async fn batch_with_info_returns_one_entry_per_item_in_order() {
    let server = Server::start_default().await;
    let presence = fresh_channel("presence-batch-");
    let mut a = server.client().await;
    a.subscribe("batch-info").await;
    a.subscribe_presence(&presence, "1", json!({})).await;
    let response = server
        .api()
        .post(
            "/batch_events",
            &json!({"batch": [
                {"name": "e", "data": "1", "channel": "batch-info", "info": "subscription_count"},
                {"name": "e", "data": "2", "channel": "batch-info"},
                {"name": "e", "data": "3", "channel": presence, "info": "user_count,subscription_count"},
                {"name": "e", "data": "4", "channel": "batch-nobody", "info": "subscription_count"}
            ]}),
        )
        .await;
    assert_eq!(
        response.ok(),
        &json!({"batch": [
            {"subscription_count": 1},
            {},
            {"user_count": 1, "subscription_count": 1},
            {"subscription_count": 0}
        ]})
    );
}

#[tokio::test]
async fn batch_socket_id_excludes_per_item() {
    let server = Server::start_default().await;
    let mut me = server.client().await;
    let mut other = server.client().await;
    me.subscribe("batch-x").await;
    other.subscribe("batch-x").await;
    let response = server
        .api()
        .post(
            "/batch_events",
            &json!({"batch": [
                {"name": "mine", "data": "1", "channel": "batch-x", "socket_id": me.socket_id},
                {"name": "all", "data": "2", "channel": "batch-x"}
            ]}),
        )
        .await;
    assert_eq!(response.ok(), &json!({}));
    other
        .expect_json(&json!({"event": "mine", "channel": "batch-x", "data": "1"}))
        .await;
    other
        .expect_json(&json!({"event": "all", "channel": "batch-x", "data": "2"}))
        .await;
    me.expect_json(&json!({"event": "all", "channel": "batch-x", "data": "2"}))
        .await;
}

#[tokio::test]
async fn batch_of_more_than_10_is_refused_with_400_and_sends_nothing() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client.subscribe("batch-big").await;
    let items: Vec<Value> = (0..11)
        .map(|i| json!({"name": "e", "data": i.to_string(), "channel": "batch-big"}))
        .collect();
    server
        .api()
        .post("/batch_events", &json!({"batch": items}))
        .await
        .assert_error(400);
    client.expect_no_message(QUIET).await;
    let ten: Vec<Value> = items.into_iter().take(10).collect();
    assert_eq!(
        server
            .api()
            .post("/batch_events", &json!({"batch": ten}))
            .await
            .ok(),
        &json!({})
    );
}

#[tokio::test]
async fn batch_is_validated_entirely_before_anything_is_sent() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client.subscribe("batch-v").await;
    let api = server.api();
    let bad_items = [
        json!({"name": "e", "data": "x", "channel": "bad channel"}),
        json!({"name": "e", "channel": "batch-v"}),
        json!({"data": "x", "channel": "batch-v"}),
        json!({"name": "pusher:e", "data": "x", "channel": "batch-v"}),
        json!({"name": "e", "data": "x"}),
    ];
    for bad in bad_items {
        let body = json!({"batch": [{"name": "first", "data": "1", "channel": "batch-v"}, bad]});
        api.post("/batch_events", &body).await.assert_error(400);
    }
    let too_big = json!({"batch": [
        {"name": "first", "data": "1", "channel": "batch-v"},
        {"name": "e", "data": "x".repeat(100 * 1024 + 1), "channel": "batch-v"}
    ]});
    api.post("/batch_events", &too_big).await.assert_error(413);
    client.expect_no_message(QUIET).await;
    for body in [json!({}), json!({"batch": "nope"}), json!([])] {
        api.post("/batch_events", &body).await.assert_error(400);
    }
}

// ----- channel queries ---------------------------------------------------------------------

#[tokio::test]
async fn get_channels_lists_occupied_channels_only() {
    let server = Server::start_default().await;
    let api = server.api();
    assert_eq!(
        api.get("/channels", &[]).await.ok(),
        &json!({"channels": {}})
    );
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe("list-a").await;
    b.subscribe("list-a").await;
    b.subscribe_private("private-list-b").await;
    a.subscribe("list-gone").await;
    a.unsubscribe("list-gone").await;
    a.assert_alive().await; // the unsubscribe has been processed
    assert_eq!(
        api.get("/channels", &[]).await.ok(),
        &json!({"channels": {"list-a": {}, "private-list-b": {}}})
    );
}

#[tokio::test]
async fn get_channels_filters_by_prefix() {
    let server = Server::start_default().await;
    let mut a = server.client().await;
    a.subscribe("filter-public").await;
    a.subscribe_private("private-filter").await;
    a.subscribe_presence("presence-filter", "1", json!({}))
        .await;
    let api = server.api();
    assert_eq!(
        api.get("/channels", &[("filter_by_prefix", "private-")])
            .await
            .ok(),
        &json!({"channels": {"private-filter": {}}})
    );
    assert_eq!(
        api.get("/channels", &[("filter_by_prefix", "nothing-")])
            .await
            .ok(),
        &json!({"channels": {}})
    );
}

#[tokio::test]
async fn get_channels_user_count_needs_the_presence_prefix() {
    let server = Server::start_default().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe_presence("presence-uc", "1", json!({})).await;
    b.subscribe_presence("presence-uc", "2", json!({})).await;
    let api = server.api();
    assert_eq!(
        api.get(
            "/channels",
            &[("filter_by_prefix", "presence-"), ("info", "user_count")]
        )
        .await
        .ok(),
        &json!({"channels": {"presence-uc": {"user_count": 2}}})
    );
    api.get("/channels", &[("info", "user_count")])
        .await
        .assert_error(400);
    api.get(
        "/channels",
        &[("filter_by_prefix", "private-"), ("info", "user_count")],
    )
    .await
    .assert_error(400);
}

#[tokio::test]
async fn get_channel_reports_occupied_and_only_the_requested_counts() {
    let server = Server::start_default().await;
    let api = server.api();
    assert_eq!(
        api.get("/channels/nobody-here", &[]).await.ok(),
        &json!({"occupied": false})
    );
    assert_eq!(
        api.get("/channels/nobody-here", &[("info", "subscription_count")])
            .await
            .ok(),
        &json!({"occupied": false, "subscription_count": 0})
    );
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe("counted").await;
    b.subscribe("counted").await;
    assert_eq!(
        api.get("/channels/counted", &[]).await.ok(),
        &json!({"occupied": true})
    );
    assert_eq!(
        api.get("/channels/counted", &[("info", "subscription_count")])
            .await
            .ok(),
        &json!({"occupied": true, "subscription_count": 2})
    );
    a.subscribe_presence("presence-counted", "1", json!({}))
        .await;
    b.subscribe_presence("presence-counted", "1", json!({}))
        .await;
    assert_eq!(
        api.get(
            "/channels/presence-counted",
            &[("info", "user_count,subscription_count")]
        )
        .await
        .ok(),
        &json!({"occupied": true, "user_count": 1, "subscription_count": 2})
    );
}

#[tokio::test]
async fn get_channel_user_count_on_non_presence_is_400() {
    let server = Server::start_default().await;
    let api = server.api();
    api.get("/channels/plain", &[("info", "user_count")])
        .await
        .assert_error(400);
    api.get("/channels/private-plain", &[("info", "user_count")])
        .await
        .assert_error(400);
}

#[tokio::test]
async fn get_channel_with_invalid_name_is_400() {
    let server = Server::start_default().await;
    let long = "a".repeat(201);
    server
        .api()
        .get(&format!("/channels/{long}"), &[])
        .await
        .assert_error(400);
}

#[tokio::test]
async fn get_users_lists_distinct_user_ids() {
    let server = Server::start_default().await;
    let api = server.api();
    assert_eq!(
        api.get("/channels/presence-empty/users", &[]).await.ok(),
        &json!({"users": []})
    );
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut b2 = server.client().await;
    a.subscribe_presence("presence-users", 1, json!({})).await;
    b.subscribe_presence("presence-users", "2", json!({})).await;
    b2.subscribe_presence("presence-users", "2", json!({}))
        .await;
    let body = api.get("/channels/presence-users/users", &[]).await;
    assert_eq!(
        sorted_users(body.ok()),
        vec!["1".to_string(), "2".to_string()]
    );
}

#[tokio::test]
async fn get_users_on_non_presence_is_400() {
    let server = Server::start_default().await;
    server
        .api()
        .get("/channels/private-x/users", &[])
        .await
        .assert_error(400);
    server
        .api()
        .get("/channels/public-x/users", &[])
        .await
        .assert_error(400);
}

// ----- authentication ----------------------------------------------------------------------

fn publish_body() -> Vec<u8> {
    json!({"name": "e", "data": "d", "channels": ["auth-test"]})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn bad_signature_is_401() {
    let server = Server::start_default().await;
    let api = server.api();
    let mut req = api.signed("POST", &api.path("/events"), &[], &publish_body());
    req.set_param("auth_signature", &"0".repeat(64));
    api.send(&req).await.assert_error(401);
    // Signed by the wrong secret.
    let mut wrong = api.clone();
    wrong.secret = "not-the-secret".to_string();
    wrong
        .post_raw("/events", &publish_body())
        .await
        .assert_error(401);
}

#[tokio::test]
async fn missing_auth_parameters_are_401() {
    let server = Server::start_default().await;
    let api = server.api();
    for missing in [
        "auth_signature",
        "auth_key",
        "auth_timestamp",
        "auth_version",
    ] {
        let mut req = api.signed("GET", &api.path("/channels"), &[], b"");
        req.remove_param(missing);
        if missing != "auth_signature" {
            api.sign(&mut req);
        }
        let response = api.send(&req).await;
        assert_eq!(response.status, 401, "without {missing}: {}", response.text);
    }
    let plain = http_request(server.addr, "GET", "/apps/1/channels", Vec::new()).await;
    plain.assert_error(401);
}

#[tokio::test]
async fn wrong_auth_key_is_401() {
    let server = Server::start_default().await;
    let api = server.api();
    let mut req = api.signed("POST", &api.path("/events"), &[], &publish_body());
    req.set_param("auth_key", "someone-else");
    api.sign(&mut req);
    api.send(&req).await.assert_error(401);
}

#[tokio::test]
async fn timestamp_older_than_600_seconds_is_401() {
    let server = Server::start_default().await;
    let api = server.api();
    let mut req = api.signed("GET", &api.path("/channels"), &[], b"");
    req.set_param("auth_timestamp", &(now_secs() - 700).to_string());
    api.sign(&mut req);
    api.send(&req).await.assert_error(401);
    // Within the window is fine.
    req.set_param("auth_timestamp", &(now_secs() - 300).to_string());
    api.sign(&mut req);
    api.send(&req).await.ok();
}

#[tokio::test]
async fn bad_body_md5_is_401() {
    let server = Server::start_default().await;
    let api = server.api();
    let mut req = api.signed("POST", &api.path("/events"), &[], &publish_body());
    req.set_param("body_md5", &md5_hex(b"something else"));
    api.sign(&mut req);
    api.send(&req).await.assert_error(401);
    // A body sent without body_md5 at all.
    let mut req = api.signed("POST", &api.path("/events"), &[], &publish_body());
    req.remove_param("body_md5");
    api.sign(&mut req);
    api.send(&req).await.assert_error(401);
}

#[tokio::test]
async fn body_md5_of_empty_body_is_accepted_on_get() {
    let server = Server::start_default().await;
    let api = server.api();
    let empty_md5 = md5_hex(b"");
    assert_eq!(empty_md5, "d41d8cd98f00b204e9800998ecf8427e");
    let req = api.signed(
        "GET",
        &api.path("/channels"),
        &[("body_md5", &empty_md5)],
        b"",
    );
    assert_eq!(api.send(&req).await.ok(), &json!({"channels": {}}));
}

#[tokio::test]
async fn url_encoded_query_values_are_signed_decoded() {
    let server = Server::start_default().await;
    let mut a = server.client().await;
    a.subscribe_presence("presence-enc", "1", json!({})).await;
    let api = server.api();
    let mut req = api.signed(
        "GET",
        &api.path("/channels/presence-enc"),
        &[("info", "user_count,subscription_count")],
        b"",
    );
    req.encode_all = true; // sends info=user_count%2Csubscription_count
    assert_eq!(
        api.send(&req).await.ok(),
        &json!({"occupied": true, "user_count": 1, "subscription_count": 1})
    );
}

#[tokio::test]
async fn signing_matches_the_documented_worked_example() {
    // From Pusher's REST API docs: proves this suite signs exactly as the SDKs do.
    let body =
        "{\"name\":\"foo\",\"channels\":[\"project-3\"],\"data\":\"{\\\"some\\\":\\\"data\\\"}\"}";
    assert_eq!(md5_hex(body.as_bytes()), "ec365a775a4cd0599faeb73354201b6f");
    let params: Vec<(String, String)> = [
        ("auth_key", "278d425bdf160c739803"),
        ("auth_timestamp", "1353088179"),
        ("auth_version", "1.0"),
        ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let to_sign = format!("POST\n/apps/3/events\n{}", common::signing_query(&params));
    assert_eq!(
        common::hmac_hex("7ad3773142a6692b25b8", &to_sign),
        "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
    );
    assert_eq!(
        common::channel_auth(
            "278d425bdf160c739803",
            "7ad3773142a6692b25b8",
            "1234.1234",
            "private-foobar",
            None
        ),
        "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    );
}

// ----- routing and status codes ------------------------------------------------------------

#[tokio::test]
async fn unknown_app_id_is_404() {
    let server = Server::start_default().await;
    let api = Api::for_app(server.addr, "999", common::APP_KEY, common::APP_SECRET);
    api.get("/channels", &[]).await.assert_error(404);
    api.post_raw("/events", &publish_body())
        .await
        .assert_error(404);
}

#[tokio::test]
async fn unknown_path_is_404() {
    let server = Server::start_default().await;
    let api = server.api();
    api.get("/nothing-here", &[]).await.assert_error(404);
    let req = api.signed("GET", "/not-apps/1/channels", &[], b"");
    api.send(&req).await.assert_error(404);
}

#[tokio::test]
async fn disabled_app_is_403() {
    let mut config = test_config();
    config.apps[0].enabled = false;
    let server = Server::start(config).await;
    server
        .api()
        .post_raw("/events", &publish_body())
        .await
        .assert_error(403);
}

#[tokio::test]
async fn malformed_publish_requests_are_400() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client.subscribe("val").await;
    let api = server.api();
    let hundred_and_one: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let cases = [
        json!({"data": "d", "channels": ["val"]}),
        json!({"name": "e", "channels": ["val"]}),
        json!({"name": "e", "data": "d"}),
        json!({"name": "e", "data": "d", "channels": []}),
        json!({"name": "e", "data": "d", "channels": hundred_and_one}),
        json!({"name": "e", "data": "d", "channels": ["val", "bad channel"]}),
        json!({"name": "e", "data": "d", "channels": ["val", "a".repeat(201)]}),
        json!({"name": "e", "data": "d", "channels": ["val"], "socket_id": "abc"}),
        json!({"name": "e", "data": "d", "channels": ["val"], "socket_id": "1.2.3"}),
        json!({"name": "e", "data": "d", "channels": ["val"], "socket_id": ".1"}),
        json!({"name": "x".repeat(201), "data": "d", "channels": ["val"]}),
        json!({"name": "pusher:fake", "data": "d", "channels": ["val"]}),
        json!({"name": 5, "data": "d", "channels": ["val"]}),
        json!({"name": "e", "data": "d", "channels": "val"}),
        json!([1, 2]),
    ];
    for case in cases {
        let response = api.post("/events", &case).await;
        assert_eq!(response.status, 400, "for {case}: {}", response.text);
        response.assert_error(400);
    }
    api.post_raw("/events", b"{not json")
        .await
        .assert_error(400);
    client.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn data_over_max_event_payload_bytes_is_413() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    client.subscribe("big").await;
    let api = server.api();
    let too_big = "x".repeat(100 * 1024 + 1);
    api.post(
        "/events",
        &json!({"name": "e", "data": too_big, "channels": ["big"]}),
    )
    .await
    .assert_error(413);
    client.expect_no_message(QUIET).await;
    let at_limit = "x".repeat(100 * 1024);
    api.publish("big", "e", &at_limit).await;
    let frame = client.recv_json().await;
    assert_eq!(frame["data"].as_str().map(str::len), Some(100 * 1024));
}

#[tokio::test]
async fn channel_becomes_unoccupied_when_its_last_subscriber_leaves() {
    let server = Server::start_default().await;
    let api = server.api();
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe("vacate").await;
    b.subscribe("vacate").await;
    a.unsubscribe("vacate").await;
    a.assert_alive().await;
    assert_eq!(
        api.get("/channels/vacate", &[("info", "subscription_count")])
            .await
            .ok(),
        &json!({"occupied": true, "subscription_count": 1})
    );
    b.ws.close(None).await.expect("close");
    let deadline = std::time::Instant::now() + common::RECV_TIMEOUT;
    while api.get("/channels/vacate", &[]).await.ok() != &json!({"occupied": false}) {
        assert!(std::time::Instant::now() < deadline, "still occupied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A channel named twice in one publish gets the event once, whether the list is short or
/// long (both ways of removing duplicates).
#[tokio::test]
async fn a_channel_listed_twice_gets_the_event_once() {
    let server = Server::start_default().await;
    let mut client = server.client().await;
    let channel = fresh_channel("twice-");
    client.subscribe(&channel).await;
    let api = server.api();
    let short = vec![channel.clone(), channel.clone()];
    let mut long: Vec<String> = (0..20).map(|i| format!("{channel}-other-{i}")).collect();
    long.push(channel.clone());
    long.push(channel.clone());
    for (round, channels) in [short, long].into_iter().enumerate() {
        let response = api
            .post(
                "/events",
                &json!({"name": "once", "data": round.to_string(), "channels": channels}),
            )
            .await;
        assert_eq!(response.ok(), &json!({}));
        client
            .expect_json(&json!({"event": "once", "channel": channel, "data": round.to_string()}))
            .await;
        client.expect_no_message(QUIET).await;
    }
}
