//! The Rust broadcasting API over real sockets: one scenario, written once against
//! `Broadcaster`, runs through the embedded driver (Crier inside the test, no HTTP) and
//! through the remote driver (the signed HTTP API) and must look the same to WebSocket
//! clients; names and sizes are refused before anything is sent; the embedded server serves
//! like the binary. Rules: protocol-spec/rust-api.md.

mod common;

use std::net::SocketAddr;

use common::*;
use crier::broadcast::{BatchItem, BroadcastError, BroadcastEvent, Broadcaster, Channel};
use crier::client::{Client as HttpClient, ClientConfig};
use crier::{AppConfig, RunningServer, Server as Crier};
use serde::Serialize;
use serde_json::{Value, json};

async fn embedded() -> RunningServer {
    Crier::builder()
        .host("127.0.0.1")
        .port(0)
        .metrics_port(0)
        .start()
        .await
        .expect("the embedded server starts")
}

fn remote(addr: SocketAddr, secret: &str) -> Broadcaster {
    let client = HttpClient::new(ClientConfig::new(
        format!("http://{addr}"),
        APP_ID,
        APP_KEY,
        secret,
    ))
    .expect("a client");
    Broadcaster::remote(client)
}

#[derive(Serialize)]
struct OrderShipped {
    order_id: u64,
    tracking: String,
    #[serde(skip)]
    user_id: u64,
}

impl BroadcastEvent for OrderShipped {
    fn broadcast_on(&self) -> Vec<Channel> {
        vec![
            Channel::Public("orders".into()),
            Channel::Private(format!("user.{}", self.user_id)),
        ]
    }

    fn broadcast_when(&self) -> bool {
        !self.tracking.is_empty()
    }
}

#[derive(Serialize)]
struct Renamed {
    n: u8,
}

impl BroadcastEvent for Renamed {
    fn broadcast_on(&self) -> Vec<Channel> {
        vec![Channel::Presence("room".into())]
    }
    fn broadcast_as(&self) -> String {
        "room.renamed".into()
    }
    fn broadcast_with(&self) -> Result<Value, BroadcastError> {
        Ok(json!({ "renamed": self.n }))
    }
}

fn event(channel: &str, name: &str, data: Value) -> Value {
    json!({ "event": name, "channel": channel, "data": data.to_string() })
}

/// The seed's examples, through whichever driver `b` is.
async fn seed_scenario(b: &Broadcaster, addr: SocketAddr) {
    let mut orders = Client::connect(addr).await;
    orders.subscribe("orders").await;
    let mut notifications = Client::connect(addr).await;
    notifications.subscribe("notifications").await;
    let mut user = Client::connect(addr).await;
    user.subscribe_private("private-user.7").await;
    let mut ada = Client::connect(addr).await;
    ada.subscribe_presence("presence-room", "ada", json!({}))
        .await;
    let mut grace = Client::connect(addr).await;
    grace
        .subscribe_presence("presence-room", "grace", json!({}))
        .await;
    ada.recv_json().await; // member_added grace

    b.channel(["orders", "notifications"])
        .emit("OrderUpdate", &json!({"id": 1}))
        .await
        .expect("emit to two channels");
    orders
        .expect_json(&event("orders", "OrderUpdate", json!({"id": 1})))
        .await;
    notifications
        .expect_json(&event("notifications", "OrderUpdate", json!({"id": 1})))
        .await;

    b.private("user.7")
        .emit("PrivateMessage", &"hello")
        .await
        .expect("private");
    user.expect_json(&event("private-user.7", "PrivateMessage", json!("hello")))
        .await;

    // to_others leaves the typing user out; when(false) sends nothing.
    b.presence("room")
        .to_others(ada.socket_id.clone())
        .emit("UserTyping", &"ada")
        .await
        .expect("to others");
    grace
        .expect_json(&event("presence-room", "UserTyping", json!("ada")))
        .await;
    b.channel("orders")
        .when(false)
        .emit("Skipped", &1)
        .await
        .expect("a skipped emit is fine");

    // An event type says where, as what and whether.
    b.broadcast(&OrderShipped {
        order_id: 9,
        tracking: "ABC".into(),
        user_id: 7,
    })
    .await
    .expect("broadcast");
    let shipped = json!({"order_id": 9, "tracking": "ABC"});
    orders
        .expect_json(&event("orders", "OrderShipped", shipped.clone()))
        .await;
    user.expect_json(&event("private-user.7", "OrderShipped", shipped))
        .await;
    b.broadcast(&OrderShipped {
        order_id: 10,
        tracking: String::new(),
        user_id: 7,
    })
    .await
    .expect("not broadcast when broadcast_when is false");
    b.broadcast(&Renamed { n: 3 }).await.expect("renamed");
    grace
        .expect_json(&event(
            "presence-room",
            "room.renamed",
            json!({"renamed": 3}),
        ))
        .await;
    // Only now: had the skipped emits gone out, they would have arrived before this.
    ada.expect_json(&event(
        "presence-room",
        "room.renamed",
        json!({"renamed": 3}),
    ))
    .await;
    orders.expect_no_message(QUIET).await;

    b.emit_batch(&[
        BatchItem::new("orders", "First", &1).expect("item"),
        BatchItem::new("notifications", "Second", &2).expect("item"),
    ])
    .await
    .expect("batch");
    orders
        .expect_json(&event("orders", "First", json!(1)))
        .await;
    notifications
        .expect_json(&event("notifications", "Second", json!(2)))
        .await;

    assert_eq!(
        b.members("presence-room").await.expect("members"),
        ["ada", "grace"]
    );
    let rooms = b.channels("presence-").await.expect("channels");
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].name, "presence-room");
    assert_eq!(rooms[0].user_count, Some(2));
    let all: Vec<String> = b
        .channels("")
        .await
        .expect("all channels")
        .into_iter()
        .map(|c| c.name)
        .collect();
    for name in ["notifications", "orders", "presence-room", "private-user.7"] {
        assert!(all.contains(&name.to_string()), "{name} in {all:?}");
    }

    let mut signed_in = Client::connect(addr).await;
    signed_in.signin_as("u-42").await;
    b.send_to_user("u-42", "Hello", &json!({"to": "you"}))
        .await
        .expect("send to user");
    signed_in
        .expect_json(&event(
            "#server-to-user-u-42",
            "Hello",
            json!({"to": "you"}),
        ))
        .await;
    b.terminate("u-42").await.expect("terminate");
    signed_in.expect_error_then_close(4009).await;
}

#[tokio::test]
async fn the_seed_scenario_through_the_embedded_driver() {
    let crier = embedded().await;
    seed_scenario(&crier.broadcaster(), crier.local_addr()).await;
    crier.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_seed_scenario_through_the_remote_driver() {
    let crier = embedded().await;
    let b = remote(crier.local_addr(), APP_SECRET);
    seed_scenario(&b, crier.local_addr()).await;
}

#[tokio::test]
async fn clients_lists_socket_ids_embedded_and_is_unsupported_remotely() {
    let crier = embedded().await;
    let mut a = Client::connect(crier.local_addr()).await;
    let mut b = Client::connect(crier.local_addr()).await;
    a.subscribe("lobby").await;
    b.subscribe("lobby").await;
    let mut expected = vec![a.socket_id.clone(), b.socket_id.clone()];
    expected.sort();
    assert_eq!(
        crier.broadcaster().clients("lobby").await.expect("clients"),
        expected
    );
    let err = remote(crier.local_addr(), APP_SECRET)
        .clients("lobby")
        .await
        .expect_err("the HTTP API cannot list sockets");
    assert!(matches!(err, BroadcastError::Unsupported(_)), "{err:?}");
}

#[tokio::test]
async fn names_and_sizes_are_refused_before_anything_is_sent() {
    let crier = embedded().await;
    let mut watcher = Client::connect(crier.local_addr()).await;
    watcher.subscribe("orders").await;
    // The remote driver points at a port where nothing listens: a refusal must come from the
    // checks, never from a connection attempt.
    let nowhere = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    for b in [crier.broadcaster(), remote(nowhere, APP_SECRET)] {
        let bad_channel = b.channel("no spaces").emit("E", &1).await;
        assert!(
            matches!(bad_channel, Err(BroadcastError::InvalidChannel(_))),
            "{bad_channel:?}"
        );
        let long_name = b.channel("orders").emit(&"e".repeat(201), &1).await;
        assert!(
            matches!(long_name, Err(BroadcastError::InvalidEvent(_))),
            "{long_name:?}"
        );
        let reserved = b.channel("orders").emit("pusher:x", &1).await;
        assert!(
            matches!(reserved, Err(BroadcastError::InvalidEvent(_))),
            "{reserved:?}"
        );
        let big = b.channel("orders").emit("E", &"x".repeat(200 * 1024)).await;
        assert!(
            matches!(big, Err(BroadcastError::TooLarge { .. })),
            "{big:?}"
        );
        let channels: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
        let many = b.channel(channels).emit("E", &1).await;
        assert!(matches!(many, Err(BroadcastError::TooMany(_))), "{many:?}");
        let items: Vec<BatchItem> = (0..11)
            .map(|i| BatchItem::new("orders", "E", &i).expect("item"))
            .collect();
        let batch = b.emit_batch(&items).await;
        assert!(
            matches!(batch, Err(BroadcastError::TooMany(_))),
            "{batch:?}"
        );
        let bad_item = b
            .emit_batch(&[
                BatchItem::new("orders", "E", &1).expect("item"),
                BatchItem::new("bad channel", "E", &1).expect("item"),
            ])
            .await;
        assert!(
            matches!(bad_item, Err(BroadcastError::InvalidChannel(_))),
            "{bad_item:?}"
        );
        let user = b.send_to_user("", "E", &1).await;
        assert!(
            matches!(user, Err(BroadcastError::InvalidChannel(_))),
            "{user:?}"
        );
    }
    watcher.expect_no_message(QUIET).await;
    // The embedded driver applies the app's own limit, smaller than the default here.
    let mut config = crier::Config::default();
    config.server.host = "127.0.0.1".into();
    config.server.port = 0;
    config.server.metrics_port = 0;
    config.apps[0].max_event_payload_bytes = 100;
    let small = Crier::builder()
        .config(config)
        .start()
        .await
        .expect("start");
    let over = small
        .broadcaster()
        .channel("a")
        .emit("E", &"x".repeat(200))
        .await;
    assert!(
        matches!(over, Err(BroadcastError::TooLarge { limit: 100, .. })),
        "{over:?}"
    );
}

#[tokio::test]
async fn the_remote_driver_reports_the_servers_refusals() {
    let crier = embedded().await;
    let wrong = remote(crier.local_addr(), "not-the-secret");
    let err = wrong
        .channel("orders")
        .emit("E", &1)
        .await
        .expect_err("a wrong secret is refused");
    match err {
        BroadcastError::Rejected { status, message } => {
            assert_eq!(status, 401);
            assert!(message.contains("ignature"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn the_event_name_defaults_to_the_type_name() {
    let event = OrderShipped {
        order_id: 1,
        tracking: "t".into(),
        user_id: 1,
    };
    assert_eq!(event.broadcast_as(), "OrderShipped");
}

#[tokio::test]
async fn the_embedded_server_serves_like_the_binary_and_stops_on_request() {
    let crier = embedded().await;
    let addr = crier.local_addr();
    // The HTTP API, signed, and a WebSocket client, as against the binary.
    let mut client = Client::connect(addr).await;
    client.subscribe("news").await;
    Api::new(addr).publish("news", "e", "d").await;
    client
        .expect_json(&json!({"event": "e", "channel": "news", "data": "d"}))
        .await;
    // A second app is reachable through its own broadcaster.
    assert!(crier.broadcaster_for("nope").is_none());
    crier.shutdown().await.expect("shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port is closed after shutdown"
    );

    // Settings are checked as the binary checks its file.
    let bad = Crier::builder()
        .port(0)
        .app(AppConfig {
            id: String::new(),
            ..AppConfig::default()
        })
        .start()
        .await
        .expect_err("an empty app id is refused");
    assert!(bad.to_string().contains("apps[0].id"), "{bad}");
    let second = Crier::builder()
        .host("127.0.0.1")
        .port(0)
        .metrics_port(0)
        .app(AppConfig::default())
        .app(AppConfig {
            id: "2".into(),
            key: "k2".into(),
            secret: "s2".into(),
            ..AppConfig::default()
        })
        .start()
        .await
        .expect("two apps");
    let mut on_two = Client::connect_app(second.local_addr(), "k2", "s2").await;
    on_two.subscribe("x").await;
    second
        .broadcaster_for("2")
        .expect("app 2")
        .channel("x")
        .emit("E", &1)
        .await
        .expect("emit to app 2");
    on_two
        .expect_json(&json!({"event": "E", "channel": "x", "data": "1"}))
        .await;
}
