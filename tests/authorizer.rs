//! `crier::authorizer`, the helpers an app's auth endpoints are built from, judged by Crier
//! itself: every token it makes must let a real WebSocket client subscribe or sign in, and
//! every refusal must carry the right status. The endpoint tests go through a small hyper
//! app on `127.0.0.1:0` that serves `/pusher/auth` and `/pusher/user-auth` with
//! `channel_auth_reply` and `user_auth_reply`, posted to exactly as pusher-js posts.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crier::authorizer::{AuthError, AuthReply, Authorizer, PresenceMember, UserData};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use common::{APP_KEY, APP_SECRET, Server, data_json, fresh_channel, test_config};

/// A 32-byte master key, base64 (the one pusher-http-node's tests use).
const MASTER_KEY: &str = "zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=";

/// The app's user, as its framework would resolve it from a session.
#[derive(Debug)]
struct User {
    id: u64,
    name: String,
    rooms: Vec<u64>,
}

fn user(id: u64, name: &str) -> User {
    User {
        id,
        name: name.to_string(),
        rooms: vec![1, 2],
    }
}

/// The authorizer of the seed's example: own `private-user.{id}` channel, chat rooms the user
/// belongs to, and a few test prefixes; presence members show the user's name.
fn app_authorizer() -> Authorizer<User> {
    Authorizer::new(APP_KEY, APP_SECRET)
        .authorize(|channel, user: &User| {
            if let Some(id) = channel.strip_prefix("private-user.") {
                return id == user.id.to_string();
            }
            if let Some(room) = channel.strip_prefix("presence-chat.") {
                return user.rooms.iter().any(|r| r.to_string() == room);
            }
            channel.starts_with("presence-room")
                || channel.starts_with("private-encrypted-")
                || channel.starts_with("private-open")
        })
        .presence_data(|_channel, user: &User| PresenceMember {
            user_id: user.id.to_string(),
            user_info: Some(json!({"name": user.name})),
        })
        .user_data(|user: &User| UserData {
            id: user.id.to_string(),
            user_info: Some(json!({"name": user.name})),
            watchlist: Vec::new(),
        })
        .encryption_master_key_base64(MASTER_KEY)
        .unwrap_or_else(|e| panic!("master key: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The library calls, judged by Crier
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn private_channel_token_subscribes() {
    let server = Server::start(test_config()).await;
    let auth = app_authorizer();
    let mut client = server.client().await;
    let ada = user(7, "Ada");
    let response = auth
        .authorize_channel(&client.socket_id, "private-user.7", &ada)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (&response.channel_data, &response.shared_secret),
        (&None, &None)
    );
    client
        .send_subscribe("private-user.7", &response.auth, None)
        .await;
    client
        .expect_json(&json!({
            "event": "pusher_internal:subscription_succeeded",
            "channel": "private-user.7",
            "data": "{}"
        }))
        .await;

    // The token is bound to its socket: another connection cannot reuse it.
    let mut other = server.client().await;
    other
        .send_subscribe("private-user.7", &response.auth, None)
        .await;
    let frame = other.recv_json().await;
    assert_eq!(frame["event"], "pusher:subscription_error", "{frame}");
}

#[tokio::test]
async fn presence_tokens_subscribe_and_members_show_user_info() {
    let server = Server::start(test_config()).await;
    let auth = app_authorizer();
    let channel = fresh_channel("presence-room-");
    let (ada, bob) = (user(1, "Ada"), user(2, "Bob"));

    let mut first = server.client().await;
    let response = auth
        .authorize_channel(&first.socket_id, &channel, &ada)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        response.channel_data.as_deref(),
        Some(r#"{"user_id":"1","user_info":{"name":"Ada"}}"#)
    );
    first
        .send_subscribe(&channel, &response.auth, response.channel_data.as_deref())
        .await;
    let frame = first.expect_subscribed(&channel).await;
    assert_eq!(
        data_json(&frame),
        json!({"presence": {"ids": ["1"], "hash": {"1": {"name": "Ada"}}, "count": 1}})
    );

    let mut second = server.client().await;
    let response = auth
        .authorize_channel(&second.socket_id, &channel, &bob)
        .unwrap_or_else(|e| panic!("{e}"));
    second
        .send_subscribe(&channel, &response.auth, response.channel_data.as_deref())
        .await;
    let frame = second.expect_subscribed(&channel).await;
    let presence = &data_json(&frame)["presence"];
    assert_eq!(presence["count"], 2, "{frame}");
    assert_eq!(
        presence["hash"],
        json!({"1": {"name": "Ada"}, "2": {"name": "Bob"}})
    );

    first
        .expect_json(&json!({
            "event": "pusher_internal:member_added",
            "channel": channel,
            "data": r#"{"user_id":"2","user_info":{"name":"Bob"}}"#
        }))
        .await;
}

#[tokio::test]
async fn encrypted_channel_token_subscribes_and_carries_the_shared_secret() {
    let server = Server::start(test_config()).await;
    let auth = app_authorizer();
    let mut client = server.client().await;
    let channel = fresh_channel("private-encrypted-");
    let response = auth
        .authorize_channel(&client.socket_id, &channel, &user(1, "Ada"))
        .unwrap_or_else(|e| panic!("{e}"));
    let secret = response
        .shared_secret
        .clone()
        .unwrap_or_else(|| panic!("no shared_secret in {response:?}"));
    // base64 of 32 bytes: 43 characters and one `=`.
    assert_eq!(secret.len(), 44, "{secret}");
    assert!(secret.ends_with('=') && !secret.ends_with("=="), "{secret}");
    assert_eq!(response.channel_data, None);
    // pusher-js strips shared_secret and sends only auth.
    client.send_subscribe(&channel, &response.auth, None).await;
    client.expect_subscribed(&channel).await;

    // Each channel has its own secret.
    let other = auth
        .authorize_channel(
            &client.socket_id,
            &fresh_channel("private-encrypted-"),
            &user(1, "Ada"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(other.shared_secret, Some(secret));
}

#[tokio::test]
async fn user_token_signs_in() {
    let server = Server::start(test_config()).await;
    let auth = app_authorizer();
    let mut client = server.client().await;
    let response = auth
        .authenticate_user(&client.socket_id, &user(42, "Ada"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        response.user_data,
        r#"{"id":"42","user_info":{"name":"Ada"}}"#
    );
    client
        .send_signin(&response.auth, &response.user_data)
        .await;
    client
        .expect_json(&json!({
            "event": "pusher:signin_success",
            "data": {"user_data": response.user_data}
        }))
        .await;
    // What pusher-js does next: join its user channel with an empty auth.
    client.send_subscribe("#server-to-user-42", "", None).await;
    client.expect_subscribed("#server-to-user-42").await;
}

#[tokio::test]
async fn denied_channel_gets_403_and_no_token() {
    let server = Server::start(test_config()).await;
    let auth = app_authorizer();
    let mut client = server.client().await;
    let ada = user(7, "Ada");
    for channel in ["private-user.8", "presence-chat.3", "private-cache-x"] {
        let result = auth.authorize_channel(&client.socket_id, channel, &ada);
        assert_eq!(
            result,
            Err(AuthError::Forbidden(format!(
                "not allowed to subscribe to {channel}"
            )))
        );
        let body = format!("socket_id={}&channel_name={channel}", client.socket_id);
        let reply = auth.channel_auth_reply(
            Some("application/x-www-form-urlencoded"),
            body.as_bytes(),
            &ada,
        );
        assert_eq!(reply.status, 403);
        let json: Value = serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}"));
        assert!(json.get("auth").is_none(), "{json}");
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{json}"
        );
    }
    // And Crier still refuses the channel without a token.
    client.send_subscribe("private-user.8", "", None).await;
    let frame = client.recv_json().await;
    assert_eq!(frame["event"], "pusher:subscription_error", "{frame}");
}

// ---------------------------------------------------------------------------------------------
// The endpoint helpers behind a real HTTP app
// ---------------------------------------------------------------------------------------------

/// An app serving `/pusher/auth` and `/pusher/user-auth`; the logged-in user is named by the
/// `x-user` header (`id:name`), standing in for a session cookie. No header: 401, as an app
/// would answer a guest.
async fn start_app(auth: Authorizer<User>) -> SocketAddr {
    let auth = Arc::new(auth);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the app's listener");
    let addr = listener.local_addr().expect("the app's address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let auth = auth.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(auth.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn handle(
    auth: Arc<Authorizer<User>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let current_user = req
        .headers()
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(':'))
        .and_then(|(id, name)| Some(user(id.parse().ok()?, name)));
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await?.to_bytes();
    let reply = match (current_user, path.as_str()) {
        (None, _) => AuthReply {
            status: 401,
            body: r#"{"error":"log in first"}"#.to_string(),
        },
        (Some(user), "/pusher/auth") => {
            auth.channel_auth_reply(content_type.as_deref(), &body, &user)
        }
        (Some(user), "/pusher/user-auth") => {
            auth.user_auth_reply(content_type.as_deref(), &body, &user)
        }
        (Some(_), _) => AuthReply {
            status: 404,
            body: r#"{"error":"not found"}"#.to_string(),
        },
    };
    let response = Response::builder()
        .status(reply.status)
        .header("content-type", AuthReply::CONTENT_TYPE)
        .body(Full::new(Bytes::from(reply.body)))
        .unwrap_or_else(|e| panic!("response: {e}"));
    Ok(response)
}

/// What came back from the app.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    json: Value,
}

/// POSTs `body` to the app as a browser would, with the given content type and user.
async fn post(
    app: SocketAddr,
    path: &str,
    content_type: Option<&str>,
    as_user: Option<&str>,
    body: Vec<u8>,
) -> Answer {
    let exchange = async {
        let stream = TcpStream::connect(app).await.expect("connect to the app");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake with the app");
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method("POST")
            .uri(path)
            .header("host", app.to_string());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        if let Some(u) = as_user {
            request = request.header("x-user", u);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        let response = sender.send_request(request).await.expect("the app answers");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("the app's body")
            .to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("the app answered non-JSON {bytes:?}: {e}"));
        Answer {
            status,
            content_type,
            json,
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("POST {path} got no answer within 10 s"))
}

/// JavaScript's `encodeURIComponent`, which pusher-js applies to each form value.
fn encode_uri_component(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

#[tokio::test]
async fn endpoint_answers_a_form_body_exactly_as_pusher_js_sends_it() {
    let server = Server::start(test_config()).await;
    let app = start_app(app_authorizer()).await;
    let mut client = server.client().await;
    // Every channel-name character that encodeURIComponent escapes.
    let channel = format!("private-open_1@=,.;{}", fresh_channel(""));
    let body = format!(
        "socket_id={}&channel_name={}",
        encode_uri_component(&client.socket_id),
        encode_uri_component(&channel)
    );
    assert!(body.contains("%40%3D%2C.%3B"), "{body}");
    let answer = post(app, "/pusher/auth", FORM, Some("7:Ada"), body.into_bytes()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.content_type, "application/json");
    let expected = app_authorizer()
        .authorize_channel(&client.socket_id, &channel, &user(7, "Ada"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer.json, json!({"auth": expected.auth}));
    client.send_subscribe(&channel, &expected.auth, None).await;
    client.expect_subscribed(&channel).await;

    // Extra params configured in pusher-js (channelAuthorization.params) are ignored, and a
    // guest gets the app's own 401 before the authorizer runs.
    let body = format!(
        "socket_id={}&channel_name=private-user.7&_token=abc%20def",
        client.socket_id
    );
    let answer = post(
        app,
        "/pusher/auth",
        FORM,
        Some("7:Ada"),
        body.clone().into_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer = post(app, "/pusher/auth", FORM, None, body.into_bytes()).await;
    assert_eq!(answer.status, 401);
}

#[tokio::test]
async fn endpoint_answers_a_json_body_for_presence_and_encrypted_channels() {
    let server = Server::start(test_config()).await;
    let app = start_app(app_authorizer()).await;
    let mut client = server.client().await;

    // As Echo with a custom axios authorizer posts it.
    let body = json!({"socket_id": client.socket_id, "channel_name": "presence-chat.1"});
    let answer = post(
        app,
        "/pusher/auth",
        Some("application/json"),
        Some("5:Eve"),
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let channel_data = r#"{"user_id":"5","user_info":{"name":"Eve"}}"#;
    assert_eq!(answer.json["channel_data"], channel_data);
    assert!(
        answer.json.get("shared_secret").is_none(),
        "{:?}",
        answer.json
    );
    let token = answer.json["auth"].as_str().unwrap_or("").to_string();
    client
        .send_subscribe("presence-chat.1", &token, Some(channel_data))
        .await;
    let frame = client.expect_subscribed("presence-chat.1").await;
    assert_eq!(
        data_json(&frame)["presence"]["hash"]["5"],
        json!({"name": "Eve"})
    );

    // No content type at all: the body's first byte tells JSON from a form.
    let channel = fresh_channel("private-encrypted-");
    let body = json!({"socket_id": client.socket_id, "channel_name": channel});
    let answer = post(
        app,
        "/pusher/auth",
        None,
        Some("5:Eve"),
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        answer.json["shared_secret"].is_string(),
        "{:?}",
        answer.json
    );
    let token = answer.json["auth"].as_str().unwrap_or("").to_string();
    client.send_subscribe(&channel, &token, None).await;
    client.expect_subscribed(&channel).await;
}

#[tokio::test]
async fn endpoint_user_auth_signs_in() {
    let server = Server::start(test_config()).await;
    let app = start_app(app_authorizer()).await;
    let mut client = server.client().await;
    // pusher-js signin() posts only the socket id.
    let body = format!("socket_id={}", encode_uri_component(&client.socket_id));
    let answer = post(
        app,
        "/pusher/user-auth",
        FORM,
        Some("9:Ivy"),
        body.into_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let user_data = answer.json["user_data"].as_str().unwrap_or("").to_string();
    assert_eq!(user_data, r#"{"id":"9","user_info":{"name":"Ivy"}}"#);
    let token = answer.json["auth"].as_str().unwrap_or("").to_string();
    client.send_signin(&token, &user_data).await;
    client
        .expect_json(&json!({"event": "pusher:signin_success", "data": {"user_data": user_data}}))
        .await;

    let answer = post(
        app,
        "/pusher/user-auth",
        FORM,
        Some("9:Ivy"),
        b"socket_id=x".to_vec(),
    )
    .await;
    assert_eq!(answer.status, 400, "{answer:?}");
}

#[tokio::test]
async fn endpoint_refuses_denied_and_malformed_requests() {
    let app = start_app(app_authorizer()).await;
    let json_ct = Some("application/json");
    let cases: Vec<(Option<&str>, Vec<u8>, u16)> = vec![
        (
            FORM,
            b"socket_id=1.2&channel_name=private-user.8".to_vec(),
            403,
        ),
        (
            json_ct,
            br#"{"socket_id":"1.2","channel_name":"presence-chat.9"}"#.to_vec(),
            403,
        ),
        (FORM, Vec::new(), 400),
        (FORM, b"socket_id=1.2".to_vec(), 400),
        (FORM, b"channel_name=private-user.7".to_vec(), 400),
        (
            FORM,
            b"socket_id=abc&channel_name=private-user.7".to_vec(),
            400,
        ),
        (
            FORM,
            b"socket_id=1.2%3A&channel_name=private-user.7".to_vec(),
            400,
        ),
        (
            FORM,
            b"socket_id=1.2&channel_name=private-user%207".to_vec(),
            400,
        ),
        (FORM, b"socket_id=1.2&channel_name=my-channel".to_vec(), 400),
        (
            FORM,
            b"socket_id=1.2&channel_name=%23server-to-user-7".to_vec(),
            400,
        ),
        (
            FORM,
            b"socket_id=1.2&socket_id=1.3&channel_name=private-user.7".to_vec(),
            400,
        ),
        (
            FORM,
            b"socket_id=1.2&channel_name=private-user.%FF".to_vec(),
            400,
        ),
        (
            json_ct,
            b"socket_id=1.2&channel_name=private-user.7".to_vec(),
            400,
        ),
        (
            json_ct,
            br#"{"socket_id":1.2,"channel_name":"private-user.7"}"#.to_vec(),
            400,
        ),
        (json_ct, br#"{"socket_id":"1.2","#.to_vec(), 400),
        (json_ct, br#"["1.2","private-user.7"]"#.to_vec(), 400),
        (None, vec![b'x'; 64 * 1024 + 1], 400),
    ];
    for (content_type, body, status) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).to_string();
        let answer = post(app, "/pusher/auth", content_type, Some("7:Ada"), body).await;
        assert_eq!(
            answer.status, status,
            "{content_type:?} {shown}: {answer:?}"
        );
        assert!(answer.json.get("auth").is_none(), "{shown}: {answer:?}");
        assert!(
            answer.json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{shown}: {answer:?}"
        );
    }
    let answer = post(
        app,
        "/pusher/auth",
        FORM,
        Some("7:Ada"),
        b"socket_id=1.2&channel_name=my-channel".to_vec(),
    )
    .await;
    assert_eq!(
        answer.json,
        json!({"error": "public channels need no authorization"})
    );
}
