//! Opening a connection: the handshake frame, and every way a connection is refused after
//! the upgrade (`pusher:error` then a close frame with the same code).
//! Rules: protocol-spec/connection.md.

mod common;

use std::time::Duration;

use common::{APP_KEY, Client, Server, data_json, test_config};
use serde_json::json;

#[tokio::test]
async fn first_frame_is_connection_established_with_socket_id_and_activity_timeout() {
    let mut config = test_config();
    config.server.activity_timeout = Duration::from_secs(7);
    let server = Server::start(config).await;
    let mut client = Client::open(server.addr, &format!("/app/{APP_KEY}?protocol=7"), None).await;
    let frame = client.recv_json().await;
    assert_eq!(frame["event"], "pusher:connection_established");
    assert_eq!(
        frame.as_object().map(|o| o.len()),
        Some(2),
        "only event and data: {frame}"
    );
    let data = data_json(&frame);
    let socket_id = data["socket_id"].as_str().expect("socket_id is a string");
    assert!(common::is_socket_id(socket_id), "{socket_id:?}");
    assert_eq!(
        data,
        json!({"socket_id": socket_id, "activity_timeout": 7}),
        "exact connection_established data"
    );
}

#[tokio::test]
async fn each_connection_gets_a_distinct_socket_id() {
    let server = Server::start_default().await;
    let mut ids = std::collections::HashSet::new();
    let mut clients = Vec::new();
    for _ in 0..5 {
        let client = server.client().await;
        assert!(ids.insert(client.socket_id.clone()), "duplicate socket id");
        clients.push(client);
    }
}

#[tokio::test]
async fn pusher_js_query_parameters_are_accepted() {
    let server = Server::start_default().await;
    let mut client = Client::open(
        server.addr,
        &format!("/app/{APP_KEY}?protocol=7&client=js&version=8.4.0&flash=false"),
        None,
    )
    .await;
    client.handshake().await;
    client.assert_alive().await;
}

#[tokio::test]
async fn protocol_versions_5_6_and_7_are_accepted() {
    let server = Server::start_default().await;
    for version in ["5", "6", "7"] {
        let mut client = Client::open(
            server.addr,
            &format!("/app/{APP_KEY}?protocol={version}"),
            None,
        )
        .await;
        client.handshake().await;
    }
}

#[tokio::test]
async fn unknown_app_key_is_refused_with_4001() {
    let server = Server::start_default().await;
    let mut client = Client::open(server.addr, "/app/no-such-key?protocol=7", None).await;
    client.expect_error_then_close(4001).await;
}

#[tokio::test]
async fn disabled_app_is_refused_with_4003() {
    let mut config = test_config();
    config.apps[0].enabled = false;
    let server = Server::start(config).await;
    let mut client = Client::open(server.addr, &format!("/app/{APP_KEY}?protocol=7"), None).await;
    client.expect_error_then_close(4003).await;
}

#[tokio::test]
async fn connection_over_max_connections_is_refused_with_4004() {
    let mut config = test_config();
    config.apps[0].max_connections = Some(2);
    let server = Server::start(config).await;
    let _a = server.client().await;
    let _b = server.client().await;
    let mut c = Client::open(server.addr, &format!("/app/{APP_KEY}?protocol=7"), None).await;
    c.expect_error_then_close(4004).await;
}

#[tokio::test]
async fn closing_a_connection_frees_its_slot_under_max_connections() {
    let mut config = test_config();
    config.apps[0].max_connections = Some(1);
    let server = Server::start(config).await;
    let mut first = server.client().await;
    first
        .ws
        .close(None)
        .await
        .expect("close the first connection");
    // The server notices the close asynchronously: retry until a slot is free.
    let deadline = std::time::Instant::now() + common::RECV_TIMEOUT;
    loop {
        let mut next = Client::open(server.addr, &format!("/app/{APP_KEY}?protocol=7"), None).await;
        let frame = next.recv_json().await;
        if frame["event"] == "pusher:connection_established" {
            break;
        }
        assert_eq!(frame["data"]["code"], 4004, "{frame}");
        assert!(
            std::time::Instant::now() < deadline,
            "slot never freed after the only connection closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn wrong_path_is_refused_with_4005() {
    let server = Server::start_default().await;
    let mut client = Client::open(server.addr, "/foo?protocol=7", None).await;
    client.expect_error_then_close(4005).await;
}

#[tokio::test]
async fn missing_protocol_is_refused_with_4008() {
    let server = Server::start_default().await;
    let mut client = Client::open(server.addr, &format!("/app/{APP_KEY}"), None).await;
    client.expect_error_then_close(4008).await;
    let mut client = Client::open(server.addr, &format!("/app/{APP_KEY}?client=js"), None).await;
    client.expect_error_then_close(4008).await;
}

#[tokio::test]
async fn non_numeric_protocol_is_refused_with_4006() {
    let server = Server::start_default().await;
    for bad in ["abc", "7a", "seven"] {
        let mut client =
            Client::open(server.addr, &format!("/app/{APP_KEY}?protocol={bad}"), None).await;
        client.expect_error_then_close(4006).await;
    }
}

#[tokio::test]
async fn unsupported_protocol_version_is_refused_with_4007() {
    let server = Server::start_default().await;
    for bad in ["4", "8", "1"] {
        let mut client =
            Client::open(server.addr, &format!("/app/{APP_KEY}?protocol={bad}"), None).await;
        client.expect_error_then_close(4007).await;
    }
}

fn origins_config(origins: &[&str]) -> common::Config {
    let mut config = test_config();
    config.apps[0].allowed_origins = origins.iter().map(|o| o.to_string()).collect();
    config
}

async fn connect_with_origin(server: &Server, origin: &str) -> Client {
    Client::open(
        server.addr,
        &format!("/app/{APP_KEY}?protocol=7"),
        Some(origin),
    )
    .await
}

#[tokio::test]
async fn origin_not_in_allowed_origins_is_refused_with_4009() {
    let server = Server::start(origins_config(&["https://a.example"])).await;
    for origin in [
        "https://b.example",
        "http://a.example",
        "https://a.example.evil.com",
    ] {
        let mut client = connect_with_origin(&server, origin).await;
        client.expect_error_then_close(4009).await;
    }
}

#[tokio::test]
async fn exact_allowed_origin_is_accepted() {
    let server = Server::start(origins_config(&["https://a.example"])).await;
    let mut client = connect_with_origin(&server, "https://a.example").await;
    client.handshake().await;
}

#[tokio::test]
async fn wildcard_origin_allows_the_domain_and_its_subdomains_only() {
    let server = Server::start(origins_config(&["*.example.com"])).await;
    for origin in [
        "https://chat.example.com",
        "https://a.b.example.com",
        "https://example.com",
    ] {
        let mut client = connect_with_origin(&server, origin).await;
        client.handshake().await;
    }
    for origin in ["https://badexample.com", "https://example.com.evil.org"] {
        let mut client = connect_with_origin(&server, origin).await;
        client.expect_error_then_close(4009).await;
    }
}

#[tokio::test]
async fn empty_allowed_origins_accepts_any_origin_and_none() {
    let server = Server::start_default().await;
    let mut client = connect_with_origin(&server, "https://anything.test").await;
    client.handshake().await;
    let mut client = Client::open(server.addr, &format!("/app/{APP_KEY}?protocol=7"), None).await;
    client.handshake().await;
}

#[tokio::test]
async fn each_app_is_reached_by_its_own_key() {
    let mut config = test_config();
    let mut second = config.apps[0].clone();
    second.id = "2".to_string();
    second.key = "second-key".to_string();
    second.secret = "second-secret".to_string();
    second.enabled = false;
    config.apps.push(second);
    let server = Server::start(config).await;
    server.client().await;
    let mut client = Client::open(server.addr, "/app/second-key?protocol=7", None).await;
    client.expect_error_then_close(4003).await;
}
