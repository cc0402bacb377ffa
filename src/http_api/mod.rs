//! The signed HTTP API under `/apps/{app_id}/`. Routing and body reading live here; every
//! handler takes a [`auth::VerifiedRequest`], which only `auth::verify` produces. Handlers
//! never touch a socket: they publish through the app's registry.

pub(crate) mod auth;
pub(crate) mod channels;
pub(crate) mod counts;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod rate_limit;
pub(crate) mod users;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;

use crate::apps::{App, AppStore};
use crate::cluster::queries::Scope;
use crate::protocol::query;
use crate::protocol::socket_id::SocketIds;
use counts::Counts;
use error::{ApiError, json_response};

/// Extra room in a request body beyond the events' data (names, channels, JSON syntax).
const BODY_OVERHEAD: usize = 64 * 1024;

enum Route {
    Trigger,
    Batch,
    Channels,
    Channel(String),
    Users(String),
    Terminate(String),
}

impl Route {
    /// The route's place in [`metrics::ROUTES`] (its `route` label).
    fn metric(&self) -> usize {
        match self {
            Route::Trigger => 0,
            Route::Batch => 1,
            Route::Channels => 2,
            Route::Channel(_) => 3,
            Route::Users(_) => 4,
            Route::Terminate(_) => 5,
        }
    }
}

/// Answers one HTTP API request. `body_timeout` bounds how long reading its body may take.
pub(crate) async fn handle(
    req: Request<Incoming>,
    apps: &AppStore,
    socket_ids: &SocketIds,
    body_timeout: Duration,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let mut counted: Option<(Arc<App>, usize)> = None;
    let response = match dispatch(req, apps, socket_ids, body_timeout, started, &mut counted).await
    {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => e.into_response(),
    };
    if let Some((app, route)) = counted {
        app.metrics
            .http_request(route, response.status().as_u16(), started.elapsed());
    }
    response
}

/// `started`: when the request arrived. `counted`: set to the app and route once both are
/// known, for the metrics.
async fn dispatch(
    req: Request<Incoming>,
    apps: &AppStore,
    socket_ids: &SocketIds,
    body_timeout: Duration,
    started: Instant,
    counted: &mut Option<(Arc<App>, usize)>,
) -> Result<String, ApiError> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    if path == "/" || path == "/up" {
        return Ok("{\"ok\":true}".to_string());
    }
    let not_found = || ApiError::NotFound(format!("Not found: {path}"));
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (app, tail): (_, &[&str]) = match segments.as_slice() {
        ["apps", app_id, tail @ ..] => {
            let app = apps
                .by_id(app_id)
                .ok_or_else(|| ApiError::NotFound(format!("No app with id {app_id:?}")))?;
            (app.clone(), tail)
        }
        // The Python SDK calls terminate without `/apps/{id}`; the app is then the one
        // whose key signed the request.
        tail @ ["users", _, "terminate_connections"] => {
            let params = query::parse(parts.uri.query().unwrap_or(""));
            let key = query::get(&params, "auth_key").unwrap_or("");
            let app = apps
                .by_key(key)
                .ok_or_else(|| ApiError::Unauthorized(format!("Unknown auth_key {key:?}")))?;
            (app.clone(), tail)
        }
        _ => return Err(not_found()),
    };
    let (route, method) = match tail {
        ["events"] => (Route::Trigger, Method::POST),
        ["batch_events"] => (Route::Batch, Method::POST),
        ["channels"] => (Route::Channels, Method::GET),
        ["channels", name] => (Route::Channel(decode(name)), Method::GET),
        ["channels", name, "users"] => (Route::Users(decode(name)), Method::GET),
        ["users", user, "terminate_connections"] => (Route::Terminate(decode(user)), Method::POST),
        _ => return Err(not_found()),
    };
    *counted = Some((app.clone(), route.metric()));
    if parts.method != method {
        return Err(ApiError::MethodNotAllowed(format!(
            "{} is not allowed on {path}; use {method}",
            parts.method
        )));
    }
    let raw_query = parts.uri.query().unwrap_or("");
    let cfg = &app.config;
    let body_limit = cfg
        .max_event_payload_bytes
        .saturating_mul(cfg.max_batch_events)
        .saturating_add(BODY_OVERHEAD);
    // The signature covers the query, and the query carries the body's MD5: an unsigned
    // request is refused before a byte of its body is read.
    let head = auth::verify_head(app, parts.method.as_str(), path, raw_query)?;
    let body = read_body(body, body_limit, body_timeout).await?;
    let verified = head.with_body(body)?;
    if !verified.app.config.enabled {
        return Err(ApiError::Forbidden("Application disabled".into()));
    }
    let app = &verified.app;
    let limited = match &route {
        Route::Trigger => rate_limit::check(app, rate_limit::Kind::Events, 1).await,
        Route::Batch if app.config.max_backend_events_per_second.is_some() => {
            let n = events::batch_len(&verified.body);
            rate_limit::check(app, rate_limit::Kind::Events, n).await
        }
        Route::Batch => Ok(()),
        Route::Channels | Route::Channel(_) | Route::Users(_) => {
            rate_limit::check(app, rate_limit::Kind::Reads, 1).await
        }
        Route::Terminate(_) => Ok(()),
    };
    if let Err(limit) = limited {
        app.metrics.rate_limited(route.metric());
        let what = match route {
            Route::Trigger | Route::Batch => "events published",
            _ => "read requests",
        };
        return Err(ApiError::TooManyRequests(format!(
            "Rate limit exceeded: this app may have at most {limit} {what} per second"
        )));
    }
    match route {
        Route::Trigger | Route::Batch => {
            // Cluster counts are read only when the body asks for them (`info`); a single
            // node's are at hand, and its publish path never scans the body for this.
            let counts = if app.cluster.is_some() && mentions_info(&verified.body) {
                Counts::gather(app, Scope::All).await
            } else {
                Counts::Local(&app.registry)
            };
            let answer = match route {
                Route::Trigger => events::trigger(&verified, socket_ids, &counts),
                _ => events::batch(&verified, socket_ids, &counts),
            };
            if answer.is_ok() {
                app.metrics.fanout(started.elapsed());
            }
            answer
        }
        Route::Channels => channels::list(&verified, &Counts::gather(app, Scope::All).await),
        Route::Channel(name) => {
            let counts = Counts::gather(app, Scope::Channel(&name)).await;
            channels::info(&verified, &counts, &name)
        }
        Route::Users(name) => {
            channels::users(&Counts::gather(app, Scope::Users(&name)).await, &name)
        }
        Route::Terminate(user) => Ok(users::terminate(&verified, &user)),
    }
}

/// Whether an event body mentions `info` at all (it may still be inside a string; then the
/// counts are read for nothing, which is harmless).
fn mentions_info(body: &[u8]) -> bool {
    body.windows(6).any(|w| w == b"\"info\"")
}

/// The whole body, at most `limit` bytes, read within `timeout`.
async fn read_body(body: Incoming, limit: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::PayloadTooLarge(
            format!("Request body is larger than {limit} bytes"),
        )),
        Ok(Err(e)) => Err(ApiError::BadRequest(format!(
            "Could not read the request body: {e}"
        ))),
        Err(_) => Err(ApiError::RequestTimeout(format!(
            "The request body did not arrive within {} s",
            timeout.as_secs()
        ))),
    }
}
