//! A chat room: an axum app with Crier inside it.
//!
//! - Crier serves the WebSockets on its own port (`CRIER_PORT`, default 6001);
//! - the app (`CHAT_PORT`, default 3000) serves the page, the presence channel's auth endpoint
//!   (`/broadcasting/auth`, built with `crier::authorizer`) and `POST /messages`, which
//!   broadcasts the message to everyone in the room but its sender (`to_others`);
//! - the page uses pusher-js from the npm package (or Laravel Echo with `?client=echo`): run
//!   `npm install` in `compat-tests/` first, or point `PUSHER_JS` / `ECHO_JS` at the files.
//!
//! ```sh
//! cargo run --release --example chat
//! # open http://127.0.0.1:3000/?user=ada and http://127.0.0.1:3000/?user=grace&client=echo
//! ```

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use crier::authorizer::{Authorizer, PresenceMember};
use crier::broadcast::Broadcaster;
use crier::{AppConfig, Server};
use serde::Deserialize;
use serde_json::json;

const APP_KEY: &str = "chat-key";
const APP_SECRET: &str = "chat-secret";
const ROOM: &str = "chat.room.1";

/// Who is signed in: here the `user` cookie the page's first request set. A real app takes
/// it from its session.
struct User {
    name: String,
}

struct Chat {
    broadcaster: Broadcaster,
    authorizer: Authorizer<User>,
    crier_port: u16,
    pusher_js: Bytes,
    echo_js: Bytes,
}

fn env_port(name: &str, default: u16) -> u16 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn read_asset(env: &str, default: &str) -> Bytes {
    let path = std::env::var(env).unwrap_or_else(|_| default.to_string());
    match std::fs::read(&path) {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) => {
            eprintln!("cannot read {path} ({e}); set {env} or run `npm install` in compat-tests/");
            Bytes::new()
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let crier_port = env_port("CRIER_PORT", 6001);
    let chat_port = env_port("CHAT_PORT", 3000);

    let crier = Server::builder()
        .host("127.0.0.1")
        .port(crier_port)
        .metrics_port(0)
        .app(AppConfig {
            id: "chat".into(),
            key: APP_KEY.into(),
            secret: APP_SECRET.into(),
            ..AppConfig::default()
        })
        .start()
        .await?;

    // The seed's two callbacks: who may join which channel, and who they are in a room.
    let authorizer = Authorizer::new(APP_KEY, APP_SECRET)
        .authorize(
            |channel, user: &User| match channel.strip_prefix("private-user.") {
                Some(owner) => owner == user.name,
                None => channel.starts_with("presence-chat.room."),
            },
        )
        .presence_data(|_channel, user: &User| PresenceMember {
            user_id: user.name.clone(),
            user_info: Some(json!({ "name": user.name })),
        });

    let chat = Arc::new(Chat {
        broadcaster: crier.broadcaster(),
        authorizer,
        crier_port: crier.local_addr().port(),
        pusher_js: read_asset(
            "PUSHER_JS",
            "compat-tests/node_modules/pusher-js/dist/web/pusher.min.js",
        ),
        echo_js: read_asset(
            "ECHO_JS",
            "compat-tests/node_modules/laravel-echo/dist/echo.iife.js",
        ),
    });
    let app = Router::new()
        .route("/", get(page))
        .route("/pusher.min.js", get(pusher_js))
        .route("/echo.iife.js", get(echo_js))
        .route("/broadcasting/auth", post(auth))
        .route("/messages", post(message))
        .with_state(chat);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", chat_port)).await?;
    println!(
        "chat listening on http://{} (crier on {})",
        listener.local_addr()?,
        crier.local_addr()
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    crier.shutdown().await?;
    Ok(())
}

#[derive(Deserialize)]
struct PageQuery {
    user: Option<String>,
    client: Option<String>,
}

fn user_from(headers: &HeaderMap) -> Option<User> {
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    cookies
        .split(';')
        .filter_map(|c| c.trim().strip_prefix("user="))
        .find(|name| !name.is_empty())
        .map(|name| User {
            name: name.to_string(),
        })
}

async fn page(State(chat): State<Arc<Chat>>, Query(q): Query<PageQuery>) -> Response {
    let user = q
        .user
        .filter(|u| !u.is_empty() && u.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "guest".to_string());
    let client = if q.client.as_deref() == Some("echo") {
        "echo"
    } else {
        "pusher"
    };
    let html = PAGE
        .replace("{{KEY}}", APP_KEY)
        .replace("{{PORT}}", &chat.crier_port.to_string())
        .replace("{{ROOM}}", ROOM)
        .replace("{{USER}}", &user)
        .replace("{{CLIENT}}", client);
    (
        [(
            header::SET_COOKIE,
            format!("user={user}; Path=/; SameSite=Strict"),
        )],
        Html(html),
    )
        .into_response()
}

async fn pusher_js(State(chat): State<Arc<Chat>>) -> Response {
    script(chat.pusher_js.clone())
}

async fn echo_js(State(chat): State<Arc<Chat>>) -> Response {
    script(chat.echo_js.clone())
}

fn script(body: Bytes) -> Response {
    if body.is_empty() {
        return StatusCode::NOT_FOUND.into_response();
    }
    ([(header::CONTENT_TYPE, "text/javascript")], body).into_response()
}

/// pusher-js and Echo post `socket_id` and `channel_name` here, form-encoded.
async fn auth(State(chat): State<Arc<Chat>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(user) = user_from(&headers) else {
        return (StatusCode::FORBIDDEN, "{\"error\":\"not signed in\"}").into_response();
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let reply = chat
        .authorizer
        .channel_auth_reply(content_type, &body, &user);
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        reply.body,
    )
        .into_response()
}

#[derive(Deserialize)]
struct NewMessage {
    text: String,
}

/// Broadcasts a message to the room, leaving out the sender's own socket (the page shows
/// its own message at once).
async fn message(
    State(chat): State<Arc<Chat>>,
    headers: HeaderMap,
    axum::Json(message): axum::Json<NewMessage>,
) -> Response {
    let Some(user) = user_from(&headers) else {
        return StatusCode::FORBIDDEN.into_response();
    };
    let socket_id = headers
        .get("x-socket-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let sent = chat
        .broadcaster
        .presence(ROOM)
        .to_others(socket_id)
        .when(!message.text.trim().is_empty())
        .emit(
            "MessageSent",
            &json!({ "user": user.name, "text": message.text }),
        )
        .await;
    match sent {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Chat</title><link rel="icon" href="data:,">
<style>
body { font: 15px system-ui, sans-serif; margin: 2rem; display: grid; grid-template-columns: 12rem 1fr; gap: 2rem; }
ul { list-style: none; padding: 0; } #messages li { margin: .3rem 0; } b { color: #2a6; }
</style></head>
<body>
<aside><h3>In the room</h3><ul id="members"></ul><p id="state">connecting…</p></aside>
<main><h3>Chat as {{USER}} <small>({{CLIENT}})</small></h3><ul id="messages"></ul>
<form id="send"><input id="text" autocomplete="off" placeholder="Say something"> <button>Send</button></form></main>
<script src="/pusher.min.js"></script>
<script src="/echo.iife.js"></script>
<script>
const me = "{{USER}}", useEcho = "{{CLIENT}}" === "echo";
const options = { wsHost: "127.0.0.1", wsPort: {{PORT}}, forceTLS: false, enabledTransports: ["ws"],
                  cluster: "local", authEndpoint: "/broadcasting/auth" };
const members = new Map();
function showMembers() {
  const ul = document.getElementById("members");
  ul.replaceChildren(...[...members.keys()].sort().map(id => {
    const li = document.createElement("li"); li.dataset.userId = id; li.textContent = members.get(id); return li; }));
}
function showMessage(user, text) {
  const li = document.createElement("li"); li.className = "message"; li.dataset.user = user;
  const b = document.createElement("b"); b.textContent = user + ": ";
  li.append(b, document.createTextNode(text)); document.getElementById("messages").append(li);
}
let socketId = () => null;
if (useEcho) {
  const echo = new Echo.default({ broadcaster: "pusher", key: "{{KEY}}", Pusher, ...options });
  socketId = () => echo.socketId();
  echo.join("{{ROOM}}")
    .here(users => { users.forEach(u => members.set(u.name, u.name)); showMembers(); document.getElementById("state").textContent = "joined"; })
    .joining(u => { members.set(u.name, u.name); showMembers(); })
    .leaving(u => { members.delete(u.name); showMembers(); })
    .listen(".MessageSent", e => showMessage(e.user, e.text));
} else {
  const pusher = new Pusher("{{KEY}}", options);
  socketId = () => pusher.connection.socket_id;
  const room = pusher.subscribe("presence-{{ROOM}}");
  room.bind("pusher:subscription_succeeded", m => { m.each(x => members.set(x.id, x.info.name)); showMembers(); document.getElementById("state").textContent = "joined"; });
  room.bind("pusher:member_added", x => { members.set(x.id, x.info.name); showMembers(); });
  room.bind("pusher:member_removed", x => { members.delete(x.id); showMembers(); });
  room.bind("MessageSent", e => showMessage(e.user, e.text));
}
document.getElementById("send").addEventListener("submit", async ev => {
  ev.preventDefault();
  const input = document.getElementById("text"), text = input.value; input.value = "";
  showMessage(me, text);
  await fetch("/messages", { method: "POST", headers: { "Content-Type": "application/json", "X-Socket-ID": socketId() },
                             body: JSON.stringify({ text }) });
});
</script></body></html>
"#;
