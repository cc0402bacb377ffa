//! `crier::client`, the signed HTTP API client, against a real Crier on `127.0.0.1:0`: what it
//! publishes reaches WebSocket subscribers byte for byte, its queries read Crier's answers,
//! names with awkward characters survive signing and escaping, and every failure (refusal,
//! silence, nonsense, bad URLs) is the documented `ClientError`, never a panic or a hang.
//! The signing vector from Pusher's docs is a unit test in `src/client/signing.rs`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{APP_ID, APP_KEY, APP_SECRET, QUIET, RECV_TIMEOUT, Server, test_config};
use crier::client::{BatchEvent, ChannelInfo, Client as Remote, ClientConfig, ClientError};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn remote_at(addr: SocketAddr, app_id: &str, key: &str, secret: &str) -> Remote {
    Remote::new(ClientConfig::new(
        format!("http://{addr}"),
        app_id,
        key,
        secret,
    ))
    .expect("a valid client configuration")
}

/// A client of the test server's default app.
fn remote(server: &Server) -> Remote {
    remote_at(server.addr, APP_ID, APP_KEY, APP_SECRET)
}

/// A client of whatever listens at `addr`, giving up after `timeout`.
fn remote_with_timeout(addr: SocketAddr, timeout: Duration) -> Remote {
    let mut config = ClientConfig::new(format!("http://{addr}"), APP_ID, APP_KEY, APP_SECRET);
    config.timeout = timeout;
    Remote::new(config).expect("a valid client configuration")
}

/// Awaits `f`, failing the test instead of hanging if it takes longer than [`RECV_TIMEOUT`].
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(RECV_TIMEOUT, f)
        .await
        .expect("the client call did not finish in time")
}

fn occupied(name: &str, subscription_count: Option<u64>, user_count: Option<u64>) -> ChannelInfo {
    ChannelInfo {
        name: name.to_string(),
        occupied: true,
        subscription_count,
        user_count,
    }
}

fn names(list: &[ChannelInfo]) -> Vec<&str> {
    list.iter().map(|c| c.name.as_str()).collect()
}

// ----- publishing ---------------------------------------------------------------------------

#[tokio::test]
async fn trigger_reaches_a_subscriber_with_the_data_verbatim() {
    let server = Server::start(test_config()).await;
    let mut ws = server.client().await;
    ws.subscribe("news").await;
    // Odd spacing, escapes and non-ASCII must survive byte for byte.
    let data = "{ \"text\" : \"caf\\u00e9 \u{2603}\", \"n\":1.50 }";
    bounded(remote(&server).trigger(&["news"], "story", data, None))
        .await
        .expect("trigger");
    ws.expect_json(&json!({"event": "story", "channel": "news", "data": data}))
        .await;
    ws.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn trigger_to_several_channels_reaches_each_once() {
    let server = Server::start(test_config()).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut both = server.client().await;
    a.subscribe("a").await;
    b.subscribe_private("private-b").await;
    both.subscribe("a").await;
    both.subscribe_private("private-b").await;
    bounded(remote(&server).trigger(&["a", "private-b"], "e", "d", None))
        .await
        .expect("trigger");
    a.expect_json(&json!({"event": "e", "channel": "a", "data": "d"}))
        .await;
    b.expect_json(&json!({"event": "e", "channel": "private-b", "data": "d"}))
        .await;
    both.expect_json(&json!({"event": "e", "channel": "a", "data": "d"}))
        .await;
    both.expect_json(&json!({"event": "e", "channel": "private-b", "data": "d"}))
        .await;
    for ws in [&mut a, &mut b, &mut both] {
        ws.expect_no_message(QUIET).await;
    }
}

#[tokio::test]
async fn trigger_skips_the_excluded_socket_id() {
    let server = Server::start(test_config()).await;
    let mut sender = server.client().await;
    let mut other = server.client().await;
    sender.subscribe("chat").await;
    other.subscribe("chat").await;
    let sender_id = sender.socket_id.clone();
    bounded(remote(&server).trigger(&["chat"], "typing", "\"ada\"", Some(&sender_id)))
        .await
        .expect("trigger");
    other
        .expect_json(&json!({"event": "typing", "channel": "chat", "data": "\"ada\""}))
        .await;
    sender.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn trigger_batch_publishes_each_event_to_its_channel() {
    let server = Server::start(test_config()).await;
    let mut x = server.client().await;
    let mut y = server.client().await;
    let mut y_excluded = server.client().await;
    x.subscribe("x").await;
    y.subscribe("y").await;
    y_excluded.subscribe("y").await;
    let events = [
        BatchEvent {
            channel: "x".into(),
            name: "first".into(),
            data: "{\"n\": 1}".into(),
            socket_id: None,
        },
        BatchEvent {
            channel: "y".into(),
            name: "second".into(),
            data: "2".into(),
            socket_id: Some(y_excluded.socket_id.clone()),
        },
        BatchEvent {
            channel: "x".into(),
            name: "third".into(),
            data: "".into(),
            socket_id: None,
        },
    ];
    bounded(remote(&server).trigger_batch(&events))
        .await
        .expect("trigger_batch");
    x.expect_json(&json!({"event": "first", "channel": "x", "data": "{\"n\": 1}"}))
        .await;
    x.expect_json(&json!({"event": "third", "channel": "x", "data": ""}))
        .await;
    y.expect_json(&json!({"event": "second", "channel": "y", "data": "2"}))
        .await;
    y_excluded.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn a_refused_trigger_is_a_status_error_with_the_servers_message() {
    let server = Server::start(test_config()).await;
    let refused = bounded(remote(&server).trigger(&["a"], "pusher:reserved", "d", None)).await;
    match refused {
        Err(ClientError::Status { status: 400, body }) => {
            let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON error body");
            assert!(body["error"].is_string(), "{body}");
        }
        other => panic!("expected a 400, got {other:?}"),
    }
}

// ----- queries ------------------------------------------------------------------------------

#[tokio::test]
async fn channels_lists_occupied_channels_by_prefix_with_user_counts() {
    let server = Server::start(test_config()).await;
    let mut one = server.client().await;
    let mut two = server.client().await;
    one.subscribe("room-a").await;
    one.subscribe_private("private-z").await;
    one.subscribe_presence("presence-x", "u1", json!({})).await;
    two.subscribe_presence("presence-x", "u2", json!({})).await;
    two.subscribe_presence("presence-y", "u2", json!({})).await;
    let api = remote(&server);

    let all = bounded(api.channels(None, false)).await.expect("channels");
    assert_eq!(
        all,
        vec![
            occupied("presence-x", None, None),
            occupied("presence-y", None, None),
            occupied("private-z", None, None),
            occupied("room-a", None, None),
        ]
    );
    let presence = bounded(api.channels(Some("presence-"), true))
        .await
        .expect("channels with user_count");
    assert_eq!(
        presence,
        vec![
            occupied("presence-x", None, Some(2)),
            occupied("presence-y", None, Some(1)),
        ]
    );
    let without_counts = bounded(api.channels(Some("presence-"), false))
        .await
        .expect("channels");
    assert_eq!(names(&without_counts), ["presence-x", "presence-y"]);
    assert!(without_counts.iter().all(|c| c.user_count.is_none()));
    // user_count is only asked for with a presence prefix; elsewhere it is left out, not a 400.
    let rooms = bounded(api.channels(Some("room-"), true))
        .await
        .expect("channels without a presence prefix");
    assert_eq!(rooms, vec![occupied("room-a", None, None)]);
    let none = bounded(api.channels(Some("nothing-"), false))
        .await
        .expect("channels");
    assert_eq!(none, vec![]);
}

#[tokio::test]
async fn channel_reports_occupancy_and_counts() {
    let server = Server::start(test_config()).await;
    let mut one = server.client().await;
    let mut two = server.client().await;
    let mut three = server.client().await;
    one.subscribe("room").await;
    two.subscribe("room").await;
    one.subscribe_presence("presence-r", "u1", json!({})).await;
    two.subscribe_presence("presence-r", "u2", json!({})).await;
    // A second connection of the same user: one more subscription, no more users.
    three
        .subscribe_presence("presence-r", "u1", json!({}))
        .await;
    let api = remote(&server);

    assert_eq!(
        bounded(api.channel("room")).await.expect("channel"),
        occupied("room", Some(2), None)
    );
    assert_eq!(
        bounded(api.channel("presence-r")).await.expect("channel"),
        occupied("presence-r", Some(3), Some(2))
    );
    let empty = bounded(api.channel("nobody-here")).await.expect("channel");
    assert!(!empty.occupied, "{empty:?}");
    assert_eq!(empty.name, "nobody-here");
    assert_eq!(empty.subscription_count.unwrap_or(0), 0);
}

#[tokio::test]
async fn users_lists_a_presence_channels_user_ids() {
    let server = Server::start(test_config()).await;
    let mut one = server.client().await;
    let mut two = server.client().await;
    let mut three = server.client().await;
    one.subscribe_presence("presence-u", "alice", json!({"name": "A"}))
        .await;
    two.subscribe_presence("presence-u", 7, json!({})).await;
    three
        .subscribe_presence("presence-u", "alice", json!({}))
        .await;
    let api = remote(&server);
    let mut users = bounded(api.users("presence-u")).await.expect("users");
    users.sort();
    assert_eq!(users, ["7", "alice"]);
    assert_eq!(
        bounded(api.users("presence-empty")).await.expect("users"),
        Vec::<String>::new()
    );
    // Users of a non-presence channel are a 400 from the server, passed on as such.
    let refused = bounded(api.users("public")).await;
    assert!(
        matches!(refused, Err(ClientError::Status { status: 400, .. })),
        "{refused:?}"
    );
}

// ----- users --------------------------------------------------------------------------------

#[tokio::test]
async fn terminate_user_connections_closes_that_users_signed_in_sockets() {
    let server = Server::start(test_config()).await;
    // Every character a user id may have beyond letters and digits goes through the path.
    let user = "u_1-a=b@c,d.e;f";
    let mut target = server.client().await;
    let mut bystander = server.client().await;
    target.signin_as(user).await;
    bystander.signin_as("someone-else").await;
    bounded(remote(&server).terminate_user_connections(user))
        .await
        .expect("terminate_user_connections");
    target.expect_error_then_close(4009).await;
    bystander.assert_alive().await;
    // Nobody signed in as that id: still a success, even with characters that must be
    // escaped in a path (a wrong escape or signature would be a 401 or 404).
    for nobody in ["nobody", "odd id/with?chars#%", ".."] {
        bounded(remote(&server).terminate_user_connections(nobody))
            .await
            .unwrap_or_else(|e| panic!("terminate_user_connections({nobody:?}): {e}"));
    }
}

#[tokio::test]
async fn send_to_user_reaches_the_signed_in_user_through_the_user_channel() {
    let server = Server::start(test_config()).await;
    let mut x = server.client().await;
    let mut other = server.client().await;
    x.signin_as("x").await;
    x.subscribe("#server-to-user-x").await;
    other.signin_as("y").await;
    let api = remote(&server);
    let data = "{\"text\":\"hi \\u00e9\"}";
    bounded(api.send_to_user("x", "notify", data))
        .await
        .expect("send_to_user");
    x.expect_json(&json!({"event": "notify", "channel": "#server-to-user-x", "data": data}))
        .await;
    other.expect_no_message(QUIET).await;
    // The `#` of a user channel is escaped in the path and still signs correctly. (Crier
    // delivers user channels through sign-ins, not the channel registry, so their occupancy
    // is not what this checks.)
    let info = bounded(api.channel("#server-to-user-x"))
        .await
        .expect("channel with # in the path");
    assert_eq!(info.name, "#server-to-user-x");
}

// ----- names, escaping and signing ----------------------------------------------------------

#[tokio::test]
async fn channel_names_with_special_characters_work_end_to_end() {
    let server = Server::start(test_config()).await;
    let name = "private-a@b,c;d=e";
    let presence = "presence-q@r,s;t=u";
    let mut ws = server.client().await;
    ws.subscribe_private(name).await;
    ws.subscribe_presence(presence, "p@q", json!({})).await;
    let api = remote(&server);
    bounded(api.trigger(&[name], "e", "d", None))
        .await
        .expect("trigger");
    ws.expect_json(&json!({"event": "e", "channel": name, "data": "d"}))
        .await;
    assert_eq!(
        bounded(api.channel(name)).await.expect("channel"),
        occupied(name, Some(1), None)
    );
    assert_eq!(bounded(api.users(presence)).await.expect("users"), ["p@q"]);
    // The prefix goes through the query string.
    let listed = bounded(api.channels(Some("private-a@b,c;d="), false))
        .await
        .expect("channels");
    assert_eq!(names(&listed), [name]);
    let listed = bounded(api.channels(Some("presence-q@r,s;"), true))
        .await
        .expect("channels");
    assert_eq!(listed, vec![occupied(presence, None, Some(1))]);
}

#[tokio::test]
async fn query_values_with_reserved_characters_are_signed_as_the_server_reads_them() {
    let server = Server::start(test_config()).await;
    let api = remote(&server);
    for prefix in ["a+b", "a b", "a&b=c", "100%", "#?/", "caf\u{e9}", "x%2Cy"] {
        let listed = bounded(api.channels(Some(prefix), false)).await;
        assert_eq!(listed, Ok(vec![]), "prefix {prefix:?}");
    }
}

// ----- refusals -----------------------------------------------------------------------------

#[tokio::test]
async fn a_wrong_secret_is_refused_with_401() {
    let server = Server::start(test_config()).await;
    let api = remote_at(server.addr, APP_ID, APP_KEY, "not-the-secret");
    match bounded(api.trigger(&["a"], "e", "d", None)).await {
        Err(ClientError::Status { status: 401, body }) => {
            assert!(body.contains("signature"), "{body}")
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    let read = bounded(api.channels(None, false)).await;
    assert!(
        matches!(read, Err(ClientError::Status { status: 401, .. })),
        "{read:?}"
    );
    let wrong_key = remote_at(server.addr, APP_ID, "not-the-key", APP_SECRET);
    let refused = bounded(wrong_key.channel("a")).await;
    assert!(
        matches!(refused, Err(ClientError::Status { status: 401, .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_unknown_app_id_is_refused_with_404() {
    let server = Server::start(test_config()).await;
    let api = remote_at(server.addr, "no-such-app", APP_KEY, APP_SECRET);
    let refused = bounded(api.trigger(&["a"], "e", "d", None)).await;
    assert!(
        matches!(refused, Err(ClientError::Status { status: 404, .. })),
        "{refused:?}"
    );
}

// ----- misbehaving servers ------------------------------------------------------------------

/// Reads one HTTP/1.1 request (head, then a `Content-Length` body) so that closing the socket
/// afterwards does not reset it under the client's feet.
async fn read_request(stream: &mut TcpStream) -> Option<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Some(())
}

/// A server that answers every request on every connection with `answer` and then closes.
async fn canned(answer: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                if read_request(&mut stream).await.is_some() {
                    let _ = stream.write_all(&answer).await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    });
    addr
}

fn http_answer(status: &str, body: &[u8]) -> Vec<u8> {
    let mut answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body);
    answer
}

#[tokio::test]
async fn a_server_that_accepts_but_never_answers_gives_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let api = remote_with_timeout(addr, Duration::from_millis(300));
    assert_eq!(
        bounded(api.trigger(&["a"], "e", "d", None)).await,
        Err(ClientError::Timeout)
    );
    assert_eq!(
        bounded(api.channels(None, false)).await,
        Err(ClientError::Timeout)
    );
}

#[tokio::test]
async fn a_server_that_stalls_mid_answer_gives_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            if read_request(&mut stream).await.is_some() {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"chan")
                    .await;
            }
            held.push(stream);
        }
    });
    let api = remote_with_timeout(addr, Duration::from_millis(300));
    assert_eq!(
        bounded(api.channels(None, false)).await,
        Err(ClientError::Timeout)
    );
}

#[tokio::test]
async fn nonsense_answers_are_errors_never_panics() {
    let timeout = Duration::from_secs(2);
    // A 2xx that is not what the endpoint returns.
    let not_json = remote_with_timeout(canned(http_answer("200 OK", b"<html>")).await, timeout);
    assert!(matches!(
        bounded(not_json.channels(None, false)).await,
        Err(ClientError::InvalidResponse(_))
    ));
    assert!(matches!(
        bounded(not_json.channel("a")).await,
        Err(ClientError::InvalidResponse(_))
    ));
    assert!(matches!(
        bounded(not_json.users("presence-a")).await,
        Err(ClientError::InvalidResponse(_))
    ));
    // A trigger only needs the 2xx.
    assert_eq!(
        bounded(not_json.trigger(&["a"], "e", "d", None)).await,
        Ok(())
    );

    let wrong_shape = remote_with_timeout(
        canned(http_answer(
            "200 OK",
            br#"{"channels":{"a":{"user_count":"many"}}}"#,
        ))
        .await,
        timeout,
    );
    assert!(matches!(
        bounded(wrong_shape.channels(None, false)).await,
        Err(ClientError::InvalidResponse(_))
    ));

    // An answer over the 1 MiB bound is not buffered.
    let huge = vec![b' '; 2 * 1024 * 1024];
    let too_large = remote_with_timeout(canned(http_answer("200 OK", &huge)).await, timeout);
    assert!(matches!(
        bounded(too_large.channels(None, false)).await,
        Err(ClientError::InvalidResponse(_))
    ));

    // A non-2xx is a status error carrying the body.
    let busy = remote_with_timeout(
        canned(http_answer("503 Service Unavailable", b"busy, \xffsorry")).await,
        timeout,
    );
    assert_eq!(
        bounded(busy.trigger(&["a"], "e", "d", None)).await,
        Err(ClientError::Status {
            status: 503,
            body: "busy, \u{fffd}sorry".to_string()
        })
    );

    // Not HTTP at all, or no answer before the connection closes.
    for answer in [
        b"hello\r\n\r\n".to_vec(),
        Vec::new(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}".to_vec(),
    ] {
        let broken = remote_with_timeout(canned(answer.clone()).await, timeout);
        let got = bounded(broken.channels(None, false)).await;
        assert!(
            matches!(got, Err(ClientError::Transport(_))),
            "{:?}: {got:?}",
            String::from_utf8_lossy(&answer)
        );
    }

    // Nobody listening.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("local address");
    drop(closed);
    let refused = bounded(remote_with_timeout(addr, timeout).trigger(&["a"], "e", "d", None)).await;
    assert!(
        matches!(refused, Err(ClientError::Transport(_))),
        "{refused:?}"
    );
}

// ----- configuration ------------------------------------------------------------------------

#[tokio::test]
async fn from_url_reads_the_pusher_url_form() {
    let server = Server::start(test_config()).await;
    let mut ws = server.client().await;
    ws.subscribe("from-url").await;
    let url = format!(
        "http://{APP_KEY}:{APP_SECRET}@{}/apps/{APP_ID}",
        server.addr
    );
    let api = Remote::from_url(&url).expect("a valid PUSHER_URL");
    assert_eq!(
        (api.key(), api.secret(), api.app_id()),
        (APP_KEY, APP_SECRET, APP_ID)
    );
    bounded(api.trigger(&["from-url"], "e", "d", None))
        .await
        .expect("trigger");
    ws.expect_json(&json!({"event": "e", "channel": "from-url", "data": "d"}))
        .await;

    let https = Remote::from_url("https://k:s@api-eu.pusher.com/apps/42/").expect("https form");
    assert_eq!(
        (https.key(), https.secret(), https.app_id()),
        ("k", "s", "42")
    );
    let shown = format!("{https:?}");
    assert!(shown.contains("https://api-eu.pusher.com"), "{shown}");

    for bad in [
        "",
        "not a url",
        "api.pusher.com/apps/1",
        "ftp://k:s@host/apps/1",
        "http://host/apps/1",
        "http://k@host/apps/1",
        "http://k:s@host",
        "http://k:s@host/apps/",
        "http://k:s@host/other/1",
        "http://k:s@/apps/1",
        "http://k:s@host/apps/1?x=y",
        "http://k:s@ho st/apps/1",
    ] {
        match Remote::from_url(bad) {
            Err(ClientError::InvalidConfig(message)) => assert!(!message.is_empty()),
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
}

#[test]
fn configurations_are_checked_and_debug_output_hides_the_secret() {
    let hosted = Remote::for_pusher_cluster("mt1", "1", "key", "super-secret").expect("cluster");
    let shown = format!("{hosted:?}");
    assert!(shown.contains("https://api-mt1.pusher.com"), "{shown}");
    assert!(!shown.contains("super-secret"), "{shown}");
    let config = ClientConfig::new("http://h", "1", "k", "super-secret");
    assert!(!format!("{config:?}").contains("super-secret"));
    assert_eq!(config.timeout, Duration::from_secs(10));
    for cluster in ["", "mt1.evil.example/", "a b"] {
        assert!(
            matches!(
                Remote::for_pusher_cluster(cluster, "1", "k", "s"),
                Err(ClientError::InvalidConfig(_))
            ),
            "{cluster:?}"
        );
    }
    let mut zero = ClientConfig::new("http://h:1", "1", "k", "s");
    zero.timeout = Duration::ZERO;
    for bad in [
        ClientConfig::new("http://h:1", "", "k", "s"),
        ClientConfig::new("http://h:1", "1", "", "s"),
        ClientConfig::new("http://h:1", "1", "k", ""),
        ClientConfig::new("http://h:1/prefix", "1", "k", "s"),
        ClientConfig::new("ws://h:1", "1", "k", "s"),
        ClientConfig::new("h:1", "1", "k", "s"),
        zero,
    ] {
        let shown = format!("{bad:?}");
        assert!(
            matches!(Remote::new(bad), Err(ClientError::InvalidConfig(_))),
            "{shown}"
        );
    }
}

// ----- connections --------------------------------------------------------------------------

/// A TCP proxy to `target` that counts the connections it accepts.
async fn counting_proxy(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn sequential_requests_reuse_kept_alive_connections() {
    let server = Server::start(test_config()).await;
    let mut ws = server.client().await;
    ws.subscribe("seq").await;
    let (proxy, accepted) = counting_proxy(server.addr).await;
    let api = remote_at(proxy, APP_ID, APP_KEY, APP_SECRET);
    const REQUESTS: usize = 40;
    for i in 0..REQUESTS {
        bounded(api.trigger(&["seq"], "n", &i.to_string(), None))
            .await
            .expect("trigger");
    }
    for i in 0..REQUESTS {
        ws.expect_json(&json!({"event": "n", "channel": "seq", "data": i.to_string()}))
            .await;
    }
    let connections = accepted.load(Ordering::SeqCst);
    // One connection when each is back in the pool before the next request; a handful if
    // the pool sometimes lags a response behind. Never one per request.
    assert!(
        (1..=4).contains(&connections),
        "{connections} connections for {REQUESTS} sequential requests"
    );
}

#[tokio::test]
async fn clones_share_the_client_across_tasks() {
    let server = Server::start(test_config()).await;
    let mut ws = server.client().await;
    ws.subscribe("many").await;
    let api = remote(&server);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move { api.trigger(&["many"], "n", &i.to_string(), None).await })
        })
        .collect();
    for task in tasks {
        bounded(task)
            .await
            .expect("the task did not panic")
            .expect("trigger");
    }
    let mut seen: Vec<u32> = Vec::new();
    for _ in 0..16 {
        let frame = ws.recv_json().await;
        seen.push(
            frame["data"]
                .as_str()
                .and_then(|d| d.parse().ok())
                .unwrap_or_else(|| panic!("unexpected frame {frame}")),
        );
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..16).collect::<Vec<_>>());
}
