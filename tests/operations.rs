//! Operations: Prometheus metrics that move with the traffic, `/up` and `/ready`, the paced
//! drain, the HTTP API's rate limits (one node and a cluster).
//! Rules: protocol-spec/operations.md.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::{Api, Client, http_request, test_config};
use crier::config::AppConfig;
use crier::server::{Control, serve_until};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A server started with [`serve_until`], so a test can ask it to drain.
struct Node {
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
    stops: mpsc::Sender<Control>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Node {
    async fn start(mut config: crier::Config, with_metrics: bool) -> Node {
        let metrics = with_metrics.then(|| {
            let port = free_port();
            config.server.metrics_host = "127.0.0.1".to_string();
            config.server.metrics_port = port;
            SocketAddr::from(([127, 0, 0, 1], port))
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (stops, rx) = mpsc::channel(2);
        let handle = tokio::spawn(serve_until(listener, config, rx));
        let node = Node {
            addr,
            metrics,
            stops,
            handle,
        };
        if let Some(m) = metrics {
            wait_until("the metrics listener answers", || async move {
                common::probe(m, "/up").await == Some(200)
            })
            .await;
        }
        node
    }

    async fn scrape(&self) -> String {
        let addr = self.metrics.expect("started with metrics");
        let response = http_request(addr, "GET", "/metrics", Vec::new()).await;
        assert_eq!(response.status, 200, "{}", response.text);
        response.text
    }

    async fn stop(&self, stop: Control) {
        self.stops
            .send(stop)
            .await
            .expect("the server listens for stops");
    }
}

/// The value of the sample `name{labels}` (labels exactly as printed), 0 when absent.
fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name_and_labels).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_move_with_connections_deliveries_and_api_requests() {
    let node = Node::start(test_config(), true).await;
    let before = node.scrape().await;
    assert_eq!(sample(&before, "crier_connections{app=\"1\"}"), 0.0);

    let mut a = Client::connect(node.addr).await;
    let mut b = Client::connect(node.addr).await;
    a.subscribe("metrics-room").await;
    b.subscribe("metrics-room").await;
    let api = Api::new(node.addr);
    for i in 0..3 {
        api.publish("metrics-room", "tick", &format!("{i}")).await;
    }
    for client in [&mut a, &mut b] {
        for _ in 0..3 {
            assert_eq!(client.recv_json().await["event"], "tick");
        }
    }
    let missing = api
        .post("/events", &json!({"name": "x", "data": "{}"}))
        .await;
    assert_eq!(missing.status, 400);

    let text = node.scrape().await;
    assert_eq!(sample(&text, "crier_connections{app=\"1\"}"), 2.0, "{text}");
    assert_eq!(sample(&text, "crier_subscriptions{app=\"1\"}"), 2.0);
    assert_eq!(sample(&text, "crier_channels{app=\"1\"}"), 1.0);
    assert_eq!(
        sample(&text, "crier_connections_opened_total{app=\"1\"}"),
        2.0
    );
    assert_eq!(
        sample(&text, "crier_ws_messages_sent_total{app=\"1\"}"),
        6.0
    );
    assert!(sample(&text, "crier_ws_sent_bytes_total{app=\"1\"}") > 6.0 * 40.0);
    assert_eq!(
        sample(&text, "crier_ws_messages_received_total{app=\"1\"}"),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "crier_http_requests_total{app=\"1\",route=\"events\",status=\"200\"}"
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "crier_http_requests_total{app=\"1\",route=\"events\",status=\"400\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "crier_http_request_duration_seconds_count{app=\"1\",route=\"events\"}"
        ),
        4.0
    );
    assert_eq!(
        sample(&text, "crier_publish_fanout_seconds_count{app=\"1\"}"),
        3.0
    );

    a.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await;
    drop(a);
    wait_until("the closed connection is counted", || async {
        let text = node.scrape().await;
        sample(&text, "crier_connections{app=\"1\"}") == 1.0
            && sample(
                &text,
                "crier_connections_closed_total{app=\"1\",code=\"1000\"}",
            ) == 1.0
    })
    .await;
}

#[tokio::test]
async fn rejected_client_events_are_counted() {
    let mut config = test_config();
    config.apps[0].client_events_per_second = 1;
    let node = Node::start(config, true).await;
    let mut client = Client::connect(node.addr).await;
    client.subscribe_private("private-metrics").await;
    for _ in 0..3 {
        client
            .send_json(&json!({"event": "client-x", "channel": "private-metrics", "data": {}}))
            .await;
    }
    client.expect_pusher_error().await;
    wait_until("a rejected client event is counted", || async {
        sample(
            &node.scrape().await,
            "crier_client_events_rejected_total{app=\"1\"}",
        ) >= 1.0
    })
    .await;
}

#[tokio::test]
async fn up_and_ready_answer_on_both_ports_and_ready_turns_503_while_draining() {
    let mut config = test_config();
    config.server.drain = Duration::from_secs(30);
    let node = Node::start(config, true).await;
    let metrics = node.metrics.expect("metrics");
    for addr in [node.addr, metrics] {
        assert_eq!(
            http_request(addr, "GET", "/up", Vec::new()).await.status,
            200
        );
        assert_eq!(
            http_request(addr, "GET", "/ready", Vec::new()).await.status,
            200
        );
    }
    // Connections to drain, so that the drain lasts.
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(Client::connect(node.addr).await);
    }
    node.stop(Control::Drain).await;
    for addr in [node.addr, metrics] {
        wait_until("/ready turns 503", || async move {
            http_request(addr, "GET", "/ready", Vec::new()).await.status == 503
        })
        .await;
        assert_eq!(
            http_request(addr, "GET", "/up", Vec::new()).await.status,
            200,
            "/up stays 200 while the process serves"
        );
    }
    // New WebSockets are refused; the HTTP API still answers.
    let upgrade = http_request_upgrade(node.addr).await;
    assert!(upgrade.starts_with("HTTP/1.1 503"), "{upgrade}");
    let api = Api::new(node.addr);
    assert_eq!(api.get("/channels", &[]).await.status, 200);
    node.stop(Control::Now).await;
    for mut client in clients {
        let (code, _) = client.drain_until_closed(Duration::from_secs(5)).await;
        assert_eq!(code, Some(4200));
    }
}

/// Sends a WebSocket upgrade request and returns the response head.
async fn http_request_upgrade(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /app/{}?protocol=7 HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        common::APP_KEY
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("an answer")
        .expect("read");
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[tokio::test]
async fn the_drain_spreads_its_closes_over_drain_secs_then_the_server_exits() {
    let mut config = test_config();
    config.server.drain = Duration::from_secs(2);
    let node = Node::start(config, false).await;
    let total = 60;
    let mut clients = Vec::new();
    for _ in 0..total {
        clients.push(Client::connect(node.addr).await);
    }
    let signalled = Instant::now();
    node.stop(Control::Drain).await;
    let mut waits = Vec::new();
    for mut client in clients {
        waits.push(tokio::spawn(async move {
            let (code, _) = client.drain_until_closed(Duration::from_secs(10)).await;
            (code, signalled.elapsed())
        }));
    }
    let mut per_slot = std::collections::BTreeMap::<u128, usize>::new();
    for wait in waits {
        let (code, at) = wait.await.expect("client task");
        assert_eq!(code, Some(4200));
        *per_slot.entry(at.as_millis() / 250).or_default() += 1;
    }
    // Spread: no quarter second holds more than half of the closes, and they span several.
    let busiest = per_slot.values().copied().max().unwrap_or(0);
    assert!(
        busiest <= total / 2,
        "closes per 250 ms: {per_slot:?} (all at once is not a paced drain)"
    );
    assert!(per_slot.len() >= 4, "closes per 250 ms: {per_slot:?}");
    let result = tokio::time::timeout(Duration::from_secs(10), node.handle)
        .await
        .expect("the server exits after the drain")
        .expect("serve task");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn a_second_stop_during_the_drain_closes_the_rest_at_once() {
    let mut config = test_config();
    config.server.drain = Duration::from_secs(600);
    let node = Node::start(config, false).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(Client::connect(node.addr).await);
    }
    node.stop(Control::Drain).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.stop(Control::Now).await;
    for mut client in clients {
        let (code, _) = client.drain_until_closed(Duration::from_secs(5)).await;
        assert_eq!(code, Some(4200));
    }
    let result = tokio::time::timeout(Duration::from_secs(10), node.handle)
        .await
        .expect("the server exits")
        .expect("serve task");
    assert!(result.is_ok(), "{result:?}");
}

fn limited_app(id: &str, events: u32, reads: u32) -> AppConfig {
    AppConfig {
        id: id.to_string(),
        key: format!("{id}-key"),
        secret: format!("{id}-secret"),
        max_backend_events_per_second: Some(events),
        max_read_requests_per_second: Some(reads),
        ..AppConfig::default()
    }
}

/// Publishes `n` events as fast as possible; (accepted, refused with 429).
async fn publish_burst(api: &Api, n: usize) -> (usize, usize) {
    let (mut ok, mut limited) = (0, 0);
    for i in 0..n {
        let response = api
            .post(
                "/events",
                &json!({"name": "burst", "data": format!("{i}"), "channels": ["burst"]}),
            )
            .await;
        match response.status {
            200 => ok += 1,
            429 => {
                response.assert_error(429);
                assert!(
                    response.json["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("at most 5 events")),
                    "{}",
                    response.text
                );
                limited += 1;
            }
            other => panic!("unexpected status {other}: {}", response.text),
        }
    }
    (ok, limited)
}

#[tokio::test]
async fn rate_limits_answer_429_while_other_apps_keep_publishing() {
    let mut config = test_config();
    config.apps = vec![limited_app("limited", 5, 2), AppConfig::default()];
    let node = Node::start(config, true).await;
    let limited = Api::for_app(node.addr, "limited", "limited-key", "limited-secret");
    let free = Api::new(node.addr);
    let (ok, refused) = publish_burst(&limited, 20).await;
    // 20 requests sent back to back span at most two one-second windows.
    assert!((5..=10).contains(&ok), "accepted {ok}");
    assert!(refused >= 10, "refused {refused}");
    for i in 0..20 {
        free.publish("open", "e", &format!("{i}")).await;
    }
    // A batch counts each of its events.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let batch: Vec<_> = (0..6)
        .map(|i| json!({"name": "b", "data": format!("{i}"), "channel": "burst"}))
        .collect();
    let response = limited
        .post("/batch_events", &json!({ "batch": batch }))
        .await;
    response.assert_error(429);
    // Reads have their own limit.
    let statuses: Vec<u16> = {
        let mut s = Vec::new();
        for _ in 0..6 {
            s.push(limited.get("/channels", &[]).await.status);
        }
        s
    };
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 200).count() <= 4,
        "{statuses:?}"
    );
    let text = node.scrape().await;
    assert!(
        sample(
            &text,
            "crier_http_rate_limited_total{app=\"limited\",route=\"events\"}"
        ) >= 10.0,
        "{text}"
    );
}

#[tokio::test]
async fn in_a_cluster_the_rate_limit_holds_for_the_whole_cluster() {
    let redis = RedisServer::start();
    let mut nodes = Vec::new();
    for name in ["rl-a", "rl-b"] {
        let mut config = test_config();
        config.cluster.redis_url = Some(redis.url());
        config.cluster.node_id = Some(name.to_string());
        config.apps = vec![limited_app("limited", 5, 100)];
        nodes.push(Node::start(config, false).await);
    }
    // Let both links connect.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut accepted = 0;
    for _ in 0..2 {
        for node in &nodes {
            let api = Api::for_app(node.addr, "limited", "limited-key", "limited-secret");
            let (ok, _) = publish_burst(&api, 10).await;
            accepted += ok;
        }
    }
    // 40 requests over both nodes, back to back: at most two windows of 5 for the cluster
    // (per node it would be up to 20).
    assert!(
        accepted <= 10,
        "accepted {accepted} of 40 across the cluster"
    );
    assert!(accepted >= 5, "accepted {accepted}");
}

#[tokio::test]
async fn in_a_cluster_ready_is_503_while_redis_is_unreachable_and_redis_link_up_says_so() {
    let mut redis = RedisServer::start();
    let mut config = test_config();
    config.cluster.redis_url = Some(redis.url());
    config.cluster.node_id = Some("ready-node".to_string());
    let node = Node::start(config, true).await;
    wait_until("the node is ready once its link is up", || async {
        common::probe(node.addr, "/ready").await == Some(200)
    })
    .await;
    assert_eq!(sample(&node.scrape().await, "crier_redis_link_up"), 1.0);
    redis.stop();
    wait_until("/ready turns 503 without Redis", || async {
        common::probe(node.addr, "/ready").await == Some(503)
    })
    .await;
    assert_eq!(sample(&node.scrape().await, "crier_redis_link_up"), 0.0);
    assert_eq!(common::probe(node.addr, "/up").await, Some(200));
    redis.restart();
    wait_until("/ready is 200 again once Redis is back", || async {
        common::probe(node.addr, "/ready").await == Some(200)
    })
    .await;
}
