//! The console's HTTP side, under `/console` on the main port: the page and its assets
//! (embedded in the binary), and a small API every request of which carries
//! `Authorization: Bearer <token>`. The server's console token grants every app; an app's
//! secret grants that app. Without either the API answers 401 and reveals nothing; with the
//! console off (no token configured) everything under `/console` is 404.
//!
//! - `GET  /console/api/apps`: the apps the token grants.
//! - `GET  /console/api/apps/{id}/stream`: the live lines, as server-sent events, with a
//!   `stats` line each second.
//! - `GET  /console/api/apps/{id}/channels/{name}/users`: a presence channel's members.
//! - `POST /console/api/apps/{id}/events`: `{channel, name, data}`, published as the HTTP API
//!   publishes (so it shows in the log too).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

use super::encode;
use super::viewer::Stream;
use crate::apps::{App, AppStore};
use crate::cluster::queries::Scope;
use crate::http_api::counts::Counts;
use crate::http_api::events;
use crate::protocol::auth;
use crate::server::ServerContext;

/// The body of any console answer: a whole one, or the live stream.
pub(crate) type ConsoleBody = Either<Full<Bytes>, Stream>;

/// Channels listed in a `stats` line, busiest first; the rest are counted.
const STATS_CHANNELS: usize = 200;
const STATS_EVERY: Duration = Duration::from_secs(1);

const INDEX_HTML: &[u8] = include_bytes!("assets/index.html");
const CONSOLE_JS: &[u8] = include_bytes!("assets/console.js");
const CONSOLE_CSS: &[u8] = include_bytes!("assets/console.css");
const UPLOT_JS: &[u8] = include_bytes!("assets/uplot.iife.min.js");
const UPLOT_CSS: &[u8] = include_bytes!("assets/uplot.min.css");

/// Nothing but the server itself: the page fetches no script, style or data from elsewhere.
const PAGE_POLICY: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

/// Whether `path` belongs to the console.
pub(crate) fn is_console_path(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

fn whole(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<ConsoleBody> {
    let mut r = Response::new(Either::Left(Full::new(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn json_answer(status: StatusCode, body: Value) -> Response<ConsoleBody> {
    whole(status, "application/json", Bytes::from(body.to_string()))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<ConsoleBody> {
    json_answer(status, json!({ "error": message.into() }))
}

/// Answers a request under `/console`.
pub(crate) async fn handle(req: Request<Incoming>, ctx: &ServerContext) -> Response<ConsoleBody> {
    let Some(token) = ctx.settings.console_token.as_deref() else {
        return error(
            StatusCode::NOT_FOUND,
            "The console is off: set server.console_token (or CRIER_CONSOLE_TOKEN) to turn it on",
        );
    };
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .collect();
    match segments.as_slice() {
        ["console"] => page(req.method(), "text/html; charset=utf-8", INDEX_HTML),
        ["console", "assets", name] => {
            let (content_type, bytes) = match *name {
                "console.js" => ("text/javascript; charset=utf-8", CONSOLE_JS),
                "console.css" => ("text/css; charset=utf-8", CONSOLE_CSS),
                "uplot.iife.min.js" => ("text/javascript; charset=utf-8", UPLOT_JS),
                "uplot.min.css" => ("text/css; charset=utf-8", UPLOT_CSS),
                _ => return error(StatusCode::NOT_FOUND, format!("No asset {name:?}")),
            };
            page(req.method(), content_type, bytes)
        }
        ["console", "api", rest @ ..] => {
            let grant = match Grant::of(&req, token, &ctx.apps) {
                Ok(grant) => grant,
                Err(message) => return error(StatusCode::UNAUTHORIZED, message),
            };
            let rest: Vec<String> = rest
                .iter()
                .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
                .collect();
            api(req, ctx, grant, &rest).await
        }
        _ => error(StatusCode::NOT_FOUND, format!("Not found: {path}")),
    }
}

fn page(
    method: &Method,
    content_type: &'static str,
    bytes: &'static [u8],
) -> Response<ConsoleBody> {
    if method != Method::GET && method != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "Use GET");
    }
    let mut r = whole(StatusCode::OK, content_type, Bytes::from_static(bytes));
    r.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static(PAGE_POLICY),
    );
    r
}

/// What a token opens: every app, or the one whose secret it is.
enum Grant {
    All,
    App(String),
}

impl Grant {
    fn of(req: &Request<Incoming>, console_token: &str, apps: &AppStore) -> Result<Grant, String> {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or("Missing console token (Authorization: Bearer <token>)")?;
        if same_secret(given, console_token) {
            return Ok(Grant::All);
        }
        apps.all()
            .find(|app| same_secret(given, &app.config.secret))
            .map(|app| Grant::App(app.config.id.clone()))
            .ok_or_else(|| "Wrong console token".to_string())
    }

    fn allows(&self, app_id: &str) -> bool {
        match self {
            Grant::All => true,
            Grant::App(id) => id == app_id,
        }
    }
}

/// Compares two secrets in constant time (as MACs of a fixed message).
fn same_secret(given: &str, expected: &str) -> bool {
    const MESSAGE: &str = "crier-console";
    auth::verify_parts(expected, &[MESSAGE], &auth::sign(given, MESSAGE))
}

async fn api(
    req: Request<Incoming>,
    ctx: &ServerContext,
    grant: Grant,
    rest: &[String],
) -> Response<ConsoleBody> {
    let method = req.method().clone();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    if rest.as_slice() == ["apps"] {
        if method != Method::GET {
            return error(StatusCode::METHOD_NOT_ALLOWED, "Use GET");
        }
        let mut apps: Vec<Value> = ctx
            .apps
            .all()
            .filter(|a| grant.allows(&a.config.id))
            .map(|a| json!({ "id": a.config.id, "key": a.config.key, "enabled": a.config.enabled }))
            .collect();
        apps.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        return json_answer(StatusCode::OK, json!({ "apps": apps }));
    }
    let ["apps", app_id, tail @ ..] = rest.as_slice() else {
        return error(StatusCode::NOT_FOUND, "Not found");
    };
    // An app the token does not open is answered as if it did not exist.
    let Some(app) = ctx.apps.by_id(app_id).filter(|_| grant.allows(app_id)) else {
        return error(StatusCode::NOT_FOUND, format!("No app with id {app_id:?}"));
    };
    match (tail, method) {
        (["stream"], Method::GET) => stream(ctx, &app),
        (["channels", channel, "users"], Method::GET) => {
            let counts = Counts::gather(&app, Scope::Users(channel)).await;
            let users: Vec<Value> = counts
                .users(channel)
                .into_iter()
                .map(|id| json!({ "id": id }))
                .collect();
            json_answer(StatusCode::OK, json!({ "users": users }))
        }
        (["events"], Method::POST) => publish(req, ctx, &app).await,
        (["stream"] | ["channels", _, "users"] | ["events"], _) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "Wrong method")
        }
        _ => error(StatusCode::NOT_FOUND, "Not found"),
    }
}

fn stream(ctx: &ServerContext, app: &Arc<App>) -> Response<ConsoleBody> {
    let console = app.console.clone();
    let viewer = console.join();
    let node = app.cluster.as_ref().map(|c| c.cluster.node_id.to_string());
    viewer.push(encode(
        "hello",
        json!({ "app_id": app.config.id, "cluster": node.is_some() }),
        node.as_deref(),
    ));
    tokio::spawn(report_stats(
        ctx.apps.clone(),
        app.config.id.clone(),
        viewer.clone(),
        ctx.shutdown.clone(),
    ));
    let mut r = Response::new(Either::Right(Stream::new(console, viewer)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies that buffer responses would hold the lines back.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// Pushes a `stats` line to `viewer` each second until it closes or the server stops.
async fn report_stats(
    apps: AppStore,
    app_id: String,
    viewer: Arc<super::viewer::Viewer>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(STATS_EVERY);
    let mut last: Option<(Instant, u64, u64, u64)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => {
                viewer.close();
                return;
            }
        }
        if viewer.is_closed() {
            return;
        }
        let Some(app) = apps.by_id(&app_id) else {
            viewer.push(encode(
                "error",
                json!({ "socket_id": null, "code": null, "message": "This app was removed from the configuration" }),
                None,
            ));
            viewer.close();
            return;
        };
        let now = (
            Instant::now(),
            app.metrics.sent.count(),
            app.metrics.received.count(),
            app.console.api_events(),
        );
        let rate = |then: u64, now_: u64, secs: f64| {
            if secs > 0.0 {
                ((now_.saturating_sub(then)) as f64 / secs * 10.0).round() / 10.0
            } else {
                0.0
            }
        };
        let (sent, received, api) = match last {
            Some((at, s, r, a)) => {
                let secs = now.0.duration_since(at).as_secs_f64();
                (
                    rate(s, now.1, secs),
                    rate(r, now.2, secs),
                    rate(a, now.3, secs),
                )
            }
            None => (0.0, 0.0, 0.0),
        };
        last = Some(now);
        viewer.push(stats_line(&app, sent, received, api).await);
    }
}

async fn stats_line(app: &App, sent: f64, received: f64, api: f64) -> Bytes {
    let counts = Counts::gather(app, Scope::All).await;
    let mut channels = counts.channels("");
    channels.sort_by(|a, b| {
        b.1.subscriptions
            .cmp(&a.1.subscriptions)
            .then_with(|| a.0.cmp(&b.0))
    });
    let total = channels.len();
    let listed: Vec<Value> = channels
        .into_iter()
        .take(STATS_CHANNELS)
        .map(|(name, stats)| {
            let mut entry = json!({ "name": name, "subscription_count": stats.subscriptions });
            if let Some(users) = stats.users {
                entry["user_count"] = users.into();
            }
            entry
        })
        .collect();
    let node = app.cluster.as_ref().map(|c| &*c.cluster.node_id);
    encode(
        "stats",
        json!({
            "connections": app.connection_count() + app.remote_connection_count(),
            "channels": listed,
            "channel_count": total,
            "sent_per_second": sent,
            "received_per_second": received,
            "api_events_per_second": api,
        }),
        node,
    )
}

/// `{channel, name, data}` from the page, published as `POST /events` would publish it.
async fn publish(
    req: Request<Incoming>,
    ctx: &ServerContext,
    app: &Arc<App>,
) -> Response<ConsoleBody> {
    let limit = app.config.max_event_payload_bytes.saturating_add(64 * 1024);
    let body = match tokio::time::timeout(
        ctx.settings.http_timeout,
        Limited::new(req.into_body(), limit).collect(),
    )
    .await
    {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(_)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("The event is larger than {limit} bytes"),
            );
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "The body did not arrive in time",
            );
        }
    };
    let Ok(form) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "The body is not JSON");
    };
    let data = match &form["data"] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let event = json!({
        "name": form["name"],
        "channel": form["channel"],
        "data": data,
    });
    match events::publish_json(app, event.to_string().as_bytes(), &ctx.socket_ids) {
        Ok(()) => json_answer(StatusCode::OK, json!({})),
        Err(e) => e.into_response().map(Either::Left),
    }
}
