//! The debug console's server side over real sockets: it is off without a token, its API
//! reveals nothing without the right token, its stream reports what happens on the app
//! (connections, subscriptions, refusals, events, members, errors, closes) and its figures,
//! a viewer that stops reading loses lines (and is told how many) while deliveries go on, its
//! event creator publishes as the HTTP API does, and in a cluster a console on one node shows
//! the other nodes' traffic. The page itself is tested in Chromium
//! (compat-tests/browser/console.test.mjs). Rules: protocol-spec/console.md.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::*;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

const TOKEN: &str = "console-test-token";

fn console_config() -> crier::Config {
    let mut config = test_config();
    config.server.console_token = Some(TOKEN.to_string());
    let mut second = config.apps[0].clone();
    second.id = "2".into();
    second.key = "second-key".into();
    second.secret = "second-secret".into();
    config.apps.push(second);
    config
}

async fn console_server() -> Server {
    Server::start(console_config()).await
}

/// The answer to one console request, with `token` as its bearer token.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> hyper::Response<Incoming> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("authorization", b)])
        .unwrap_or_default();
    http_send(addr, method, path, &headers, body.as_bytes().to_vec()).await
}

/// Status and JSON body of a console request.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let response = request(addr, method, path, token, body).await;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// An open console stream.
struct Viewer {
    body: Incoming,
    pending: String,
}

impl Viewer {
    async fn open(addr: SocketAddr, app: &str, token: &str) -> Viewer {
        let response = request(
            addr,
            "GET",
            &format!("/console/api/apps/{app}/stream"),
            Some(token),
            "",
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "stream content type"
        );
        let mut viewer = Viewer {
            body: response.into_body(),
            pending: String::new(),
        };
        let hello = viewer.next(RECV_TIMEOUT).await.expect("hello line");
        assert_eq!(hello["type"], "hello", "{hello}");
        assert_eq!(hello["app_id"], app);
        viewer
    }

    /// The next line within `within`; `None` when the stream ended or nothing came.
    async fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let event: String = self.pending.drain(..end + 2).collect();
                let Some(data) = event.trim_end().strip_prefix("data: ") else {
                    continue;
                };
                return Some(serde_json::from_str(data).expect("a JSON line"));
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame()).await;
            match frame {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending.push_str(&String::from_utf8_lossy(&data));
                    }
                }
                _ => return None,
            }
        }
    }

    /// The first line of type `kind` for which `matches` holds, skipping others.
    async fn expect(&mut self, kind: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(line) if line["type"] == kind && matches(&line) => return line,
                Some(_) => {}
                None => panic!("no {kind} line within {RECV_TIMEOUT:?}"),
            }
        }
    }

    /// Whether a line of type `kind` matching arrives within `within`.
    async fn sees(
        &mut self,
        kind: &str,
        within: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(line) if line["type"] == kind && matches(&line) => return true,
                Some(_) => {}
                None => return false,
            }
        }
    }
}

#[tokio::test]
async fn the_console_is_off_without_a_token() {
    let server = Server::start_default().await;
    let (status, body) = call(server.addr, "GET", "/console", None, "").await;
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("console_token"),
        "{body}"
    );
    let (status, _) = call(
        server.addr,
        "GET",
        "/console/api/apps",
        Some(APP_SECRET),
        "",
    )
    .await;
    assert_eq!(status, 404, "an app secret does not turn the console on");
}

#[tokio::test]
async fn the_api_reveals_nothing_without_the_right_token() {
    let server = console_server().await;
    for token in [None, Some("wrong"), Some("")] {
        for path in [
            "/console/api/apps",
            "/console/api/apps/1/stream",
            "/console/api/apps/1/channels/presence-a/users",
        ] {
            let (status, body) = call(server.addr, "GET", path, token, "").await;
            assert_eq!(status, 401, "{path} with {token:?}");
            let text = body.to_string();
            assert!(
                !text.contains("app-key") && !text.contains("\"1\""),
                "{text}"
            );
        }
        let (status, _) = call(
            server.addr,
            "POST",
            "/console/api/apps/1/events",
            token,
            r#"{"channel":"a","name":"e","data":"d"}"#,
        )
        .await;
        assert_eq!(status, 401, "publish with {token:?}");
    }
    let (status, body) = call(server.addr, "GET", "/console/api/apps", Some(TOKEN), "").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["apps"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["1", "2"], "the console token opens every app");

    // An app's secret opens that app only; the other is answered as if it did not exist.
    let (status, body) = call(
        server.addr,
        "GET",
        "/console/api/apps",
        Some("second-secret"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["apps"],
        json!([{"id": "2", "key": "second-key", "enabled": true}])
    );
    let (status, _) = call(
        server.addr,
        "GET",
        "/console/api/apps/1/stream",
        Some("second-secret"),
        "",
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        server.addr,
        "POST",
        "/console/api/apps/1/events",
        Some("second-secret"),
        r#"{"channel":"a","name":"e","data":"d"}"#,
    )
    .await;
    assert_eq!(status, 404);
    let _ = Viewer::open(server.addr, "2", "second-secret").await;
}

#[tokio::test]
async fn the_page_and_its_assets_come_from_the_binary_alone() {
    let server = console_server().await;
    let response = request(server.addr, "GET", "/console", None, "").await;
    assert_eq!(response.status(), 200);
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap_or("")
        .to_string();
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    let page = response
        .into_body()
        .collect()
        .await
        .expect("page")
        .to_bytes();
    let page = String::from_utf8_lossy(&page).to_string();
    assert!(
        page.contains("/console/assets/console.js"),
        "the page loads its script"
    );
    for asset in [
        "console.js",
        "console.css",
        "uplot.iife.min.js",
        "uplot.min.css",
    ] {
        let response = request(
            server.addr,
            "GET",
            &format!("/console/assets/{asset}"),
            None,
            "",
        )
        .await;
        assert_eq!(response.status(), 200, "{asset}");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("asset")
            .to_bytes();
        assert!(body.len() > 100, "{asset} is empty");
        let text = String::from_utf8_lossy(&body);
        for outside in ["src=\"http", "href=\"http", "src='http", "@import url(http"] {
            assert!(!text.contains(outside), "{asset} refers outside: {outside}");
        }
    }
    for outside in ["src=\"http", "href=\"http", "src='http"] {
        assert!(
            !page.contains(outside),
            "the page refers outside: {outside}"
        );
    }
    let (status, _) = call(
        server.addr,
        "GET",
        "/console/assets/../Cargo.toml",
        None,
        "",
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_stream_reports_connections_subscriptions_events_and_members() {
    let server = console_server().await;
    let mut viewer = Viewer::open(server.addr, "1", TOKEN).await;

    let mut client = Client::open(
        server.addr,
        &format!("/app/{APP_KEY}?protocol=7"),
        Some("https://shop.example"),
    )
    .await;
    client.handshake().await;
    let socket = client.socket_id.clone();
    let opened = viewer
        .expect("connection_opened", |l| l["socket_id"] == socket.as_str())
        .await;
    assert_eq!(opened["origin"], "https://shop.example");

    client.subscribe("orders").await;
    viewer
        .expect("subscribed", |l| {
            l["socket_id"] == socket.as_str() && l["channel"] == "orders"
        })
        .await;

    client
        .send_subscribe(
            "private-orders",
            &format!("{APP_KEY}:{}", "0".repeat(64)),
            None,
        )
        .await;
    client
        .expect_subscription_error("private-orders", 401)
        .await;
    let refused = viewer
        .expect("subscription_refused", |l| l["channel"] == "private-orders")
        .await;
    assert_eq!(refused["status"], 401);
    assert!(
        refused["reason"]
            .as_str()
            .unwrap_or("")
            .contains("signature"),
        "{refused}"
    );

    client
        .subscribe_presence("presence-room", "ada", json!({"name": "Ada"}))
        .await;
    viewer
        .expect("member_added", |l| {
            l["channel"] == "presence-room" && l["user_id"] == "ada"
        })
        .await;
    let (status, users) = call(
        server.addr,
        "GET",
        "/console/api/apps/1/channels/presence-room/users",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!((status, users), (200, json!({"users": [{"id": "ada"}]})));

    client
        .send_json(&json!({
            "event": "client-typing",
            "channel": "presence-room",
            "data": {"who": "ada"}
        }))
        .await;
    let event = viewer
        .expect("client_event", |l| l["event"] == "client-typing")
        .await;
    assert_eq!(event["channel"], "presence-room");
    assert_eq!(event["user_id"], "ada");
    assert_eq!(event["socket_id"], socket.as_str());
    assert_eq!(
        serde_json::from_str::<Value>(event["data"].as_str().unwrap_or("")).ok(),
        Some(json!({"who": "ada"}))
    );

    let response = server
        .api()
        .post(
            "/events",
            &json!({"name": "shipped", "data": "{\"id\":7}", "channels": ["orders", "audit"], "socket_id": socket}),
        )
        .await;
    assert_eq!(response.ok(), &json!({}));
    let published = viewer
        .expect("api_event", |l| l["event"] == "shipped")
        .await;
    assert_eq!(published["channels"], json!(["orders", "audit"]));
    assert_eq!(published["data"], "{\"id\":7}");
    assert_eq!(
        published["socket_id"],
        socket.as_str(),
        "the excluded socket"
    );

    client.unsubscribe("orders").await;
    viewer
        .expect("unsubscribed", |l| l["channel"] == "orders")
        .await;

    // A message over the limit closes the connection with 1009.
    client.send_text("x".repeat(300 * 1024)).await;
    viewer
        .expect("member_removed", |l| {
            l["channel"] == "presence-room" && l["user_id"] == "ada"
        })
        .await;
    let closed = viewer
        .expect("connection_closed", |l| l["socket_id"] == socket.as_str())
        .await;
    assert_eq!(closed["code"], 1009);
    assert_eq!(closed["reason"], "message too big");
}

#[tokio::test]
async fn client_event_errors_are_reported() {
    let mut config = console_config();
    config.apps[0].client_events_per_second = 1;
    let server = Server::start(config).await;
    let mut viewer = Viewer::open(server.addr, "1", TOKEN).await;
    let mut client = server.client().await;
    client.subscribe_private("private-chat").await;
    for _ in 0..3 {
        client
            .send_json(&json!({"event": "client-x", "channel": "private-chat", "data": {}}))
            .await;
    }
    let error = viewer.expect("error", |l| l["code"] == 4301).await;
    assert_eq!(error["socket_id"], client.socket_id.as_str());
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("rate limit"),
        "{error}"
    );
}

#[tokio::test]
async fn the_stats_line_gives_connections_channels_and_rates() {
    let server = console_server().await;
    let mut viewer = Viewer::open(server.addr, "1", TOKEN).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe("news").await;
    b.subscribe("news").await;
    a.subscribe_presence("presence-lobby", "u1", json!({}))
        .await;
    let stats = viewer
        .expect("stats", |l| {
            l["connections"] == 2
                && l["channel_count"] == 2
                && l["channels"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["name"] == "news" && c["subscription_count"] == 2)
                })
        })
        .await;
    let lobby = stats["channels"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "presence-lobby"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(lobby["user_count"], 1, "{stats}");
    assert_eq!(stats["channel_count"], 2);
    for rate in [
        "sent_per_second",
        "received_per_second",
        "api_events_per_second",
    ] {
        assert!(stats[rate].is_number(), "{rate} in {stats}");
    }
    // A publish's two deliveries and one API event show in the next second's rates.
    server.api().publish("news", "tick", "1").await;
    viewer
        .expect("stats", |l| {
            l["sent_per_second"].as_f64().unwrap_or(0.0) > 0.0
                && l["api_events_per_second"].as_f64().unwrap_or(0.0) > 0.0
        })
        .await;
}

#[tokio::test]
async fn the_event_creator_publishes_as_the_http_api_does() {
    let server = console_server().await;
    let mut viewer = Viewer::open(server.addr, "1", TOKEN).await;
    let mut subscriber = server.client().await;
    subscriber.subscribe("test-channel").await;
    let (status, body) = call(
        server.addr,
        "POST",
        "/console/api/apps/1/events",
        Some(TOKEN),
        r#"{"channel":"test-channel","name":"hello","data":"{\"n\":1}"}"#,
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(
        subscriber.recv_json().await,
        json!({"event": "hello", "channel": "test-channel", "data": "{\"n\":1}"})
    );
    viewer.expect("api_event", |l| l["event"] == "hello").await;

    let (status, body) = call(
        server.addr,
        "POST",
        "/console/api/apps/1/events",
        Some(TOKEN),
        r#"{"channel":"no spaces allowed","name":"hello","data":"x"}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap_or("").contains("channel"),
        "{body}"
    );
    let (status, _) = call(
        server.addr,
        "POST",
        "/console/api/apps/1/events",
        Some(TOKEN),
        "not json",
    )
    .await;
    assert_eq!(status, 400);
    subscriber.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn a_viewer_that_stops_reading_loses_lines_and_is_told_while_delivery_goes_on() {
    let server = console_server().await;
    let stalled = Viewer::open(server.addr, "1", TOKEN).await;
    let mut subscriber = server.client().await;
    subscriber.subscribe("firehose").await;
    // 16 MB of console lines against a 4 MB queue and the socket buffers.
    const EVENTS: usize = 2000;
    let pad = "p".repeat(8 * 1024);
    let api = server.api();
    let reader = tokio::spawn(async move {
        for i in 0..EVENTS {
            let frame = subscriber.recv_json_within(Duration::from_secs(20)).await;
            let data = frame["data"].as_str().unwrap_or("");
            assert_eq!(data.get(..8), Some(format!("{i:08}").as_str()), "event {i}");
        }
    });
    for chunk in 0..EVENTS / 10 {
        let batch: Vec<Value> = (0..10)
            .map(|j| {
                json!({"name": "big", "channel": "firehose", "data": format!("{:08}{pad}", chunk * 10 + j)})
            })
            .collect();
        let response = api.post("/batch_events", &json!({ "batch": batch })).await;
        assert_eq!(response.status, 200, "{}", response.text);
    }
    tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the subscriber got every event in time")
        .expect("in order");
    let mut stalled = stalled;
    let dropped = stalled.expect("dropped", |_| true).await;
    assert!(dropped["count"].as_u64().unwrap_or(0) > 0, "{dropped}");
    // Lines after the loss arrive again.
    api.publish("firehose", "after", "x").await;
    stalled.expect("api_event", |l| l["event"] == "after").await;
}

#[tokio::test]
async fn the_stream_ends_when_the_server_stops() {
    let mut server = console_server().await;
    let mut viewer = Viewer::open(server.addr, "1", TOKEN).await;
    server.trigger_shutdown();
    let deadline = Instant::now() + RECV_TIMEOUT;
    while viewer.next(RECV_TIMEOUT).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the stream goes on after shutdown"
        );
    }
    server.wait_stopped(Duration::from_secs(5)).await;
}

/// A node of a cluster on `redis` with the console on.
async fn node(redis: &RedisServer, name: &str) -> Server {
    let mut config = console_config();
    config.cluster.redis_url = Some(redis.url());
    config.cluster.prefix = "console".to_string();
    config.cluster.node_id = Some(name.to_string());
    let server = Server::start(config).await;
    let mut probe = server.client().await;
    probe.subscribe(&fresh_channel("probe")).await;
    server
}

#[tokio::test]
async fn a_console_on_one_node_shows_the_whole_cluster() {
    let redis = RedisServer::start();
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    let mut viewer = Viewer::open(a.addr, "1", TOKEN).await;
    // Node b learns of the viewer through Redis within a lease round or two; until then its
    // lines go nowhere. Retry with fresh channels until one shows up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut on_b = b.client().await;
    loop {
        let channel = fresh_channel("far");
        on_b.subscribe(&channel).await;
        if viewer
            .sees("subscribed", Duration::from_millis(500), |l| {
                l["channel"] == channel.as_str() && l["node"] == "b"
            })
            .await
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node b's lines never reached a's console"
        );
    }
    // Now every line of b arrives, each once.
    on_b.subscribe_presence("presence-far", "grace", json!({}))
        .await;
    viewer
        .expect("member_added", |l| {
            l["user_id"] == "grace" && l["node"] == "b"
        })
        .await;
    let response = b
        .api()
        .post(
            "/events",
            &json!({"name": "from-b", "data": "1", "channel": "x"}),
        )
        .await;
    assert_eq!(response.status, 200);
    viewer
        .expect("api_event", |l| l["event"] == "from-b" && l["node"] == "b")
        .await;
    assert!(
        !viewer
            .sees("api_event", QUIET, |l| l["event"] == "from-b")
            .await,
        "a line arrived twice"
    );
    // The figures count b's connections too (the nodes' probes are gone by now).
    let _on_a = a.client().await;
    viewer.expect("stats", |l| l["connections"] == 2).await;

    // The viewer goes: a stops hearing the console channel, and b stops sending.
    drop(viewer);
    let key = "console:1:#console";
    let deadline = Instant::now() + RECV_TIMEOUT;
    while redis.listeners(key) != 0 {
        assert!(Instant::now() < deadline, "a still listens to {key}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn webhook_deliveries_and_failures_are_reported() {
    use common::webhook_receiver::WebhookReceiver;
    use crier::config::{KindSet, WebhookTarget};
    let ok = WebhookReceiver::start(APP_KEY, APP_SECRET).await;
    let refusing = WebhookReceiver::reserve(APP_KEY, APP_SECRET);
    let target = |url: String| WebhookTarget {
        url,
        kinds: KindSet::ALL,
        channel_prefix: None,
        channel_suffix: None,
        headers: vec![],
    };
    let mut config = console_config();
    config.apps[0].webhooks = vec![target(ok.url()), target(refusing.url())];
    config.webhooks.batch_window = Duration::from_millis(20);
    let server = Server::start(config).await;
    let mut viewer = Viewer::open(server.addr, "1", TOKEN).await;
    let mut client = server.client().await;
    client.subscribe("hooked").await;
    let sent = viewer
        .expect("webhook_sent", |l| l["url"] == ok.url().as_str())
        .await;
    let names = |l: &Value| -> Vec<String> {
        l["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        names(&sent).contains(&"channel_occupied".to_string()),
        "{sent}"
    );
    assert_eq!(sent["status"], 200);
    let failed = viewer
        .expect("webhook_failed", |l| l["url"] == refusing.url().as_str())
        .await;
    assert!(
        names(&failed).contains(&"channel_occupied".to_string()),
        "{failed}"
    );
    assert!(failed["attempt"].as_u64().unwrap_or(0) >= 1, "{failed}");
    assert_eq!(failed["gave_up"], false);
    assert!(
        !failed["error"].as_str().unwrap_or("").is_empty(),
        "{failed}"
    );
}
