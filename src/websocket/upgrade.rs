//! Admission of WebSocket connections. Every refusal happens *after* the upgrade, as a
//! `pusher:error` followed by a close frame with the same code: pusher-js stops retrying on
//! 40xx codes, whereas an HTTP-level refusal would send it cycling through transports.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::connection;
use crate::apps::{AppStore, ConnectionSlot};
use crate::protocol::{codes, encode, query};
use crate::server::ServerContext;
use crate::server::client_ips::IpTicket;

/// The verdict on an upgrade request.
#[derive(Debug)]
pub(crate) enum Admission {
    /// The slot, and the request's origin when the app's console is open (to report it).
    Accept(ConnectionSlot, Option<Box<str>>),
    Refuse {
        code: u16,
        message: String,
    },
}

fn refuse(code: u16, message: impl Into<String>) -> Admission {
    Admission::Refuse {
        code,
        message: message.into(),
    }
}

/// Decides whether a WebSocket may open: path, app, protocol version, origin, quota.
pub(crate) fn admit<B>(req: &Request<B>, apps: &AppStore) -> Admission {
    let path = req.uri().path();
    let Some(key) = path.strip_prefix("/app/").map(|k| k.trim_end_matches('/')) else {
        return refuse(codes::PATH_NOT_FOUND, format!("Path not found: {path}"));
    };
    if key.is_empty() || key.contains('/') {
        return refuse(codes::PATH_NOT_FOUND, format!("Path not found: {path}"));
    }
    let Some(app) = apps.by_key(key) else {
        return refuse(
            codes::APP_DOES_NOT_EXIST,
            format!("Application does not exist: no app has the key {key}"),
        );
    };
    if !app.config.enabled {
        return refuse(codes::APP_DISABLED, "Application disabled");
    }
    let params = query::parse(req.uri().query().unwrap_or(""));
    match query::get(&params, "protocol") {
        None => return refuse(codes::NO_PROTOCOL_VERSION, "No protocol version supplied"),
        Some(v) => match v.parse::<u32>() {
            Err(_) => {
                return refuse(
                    codes::INVALID_VERSION_FORMAT,
                    format!("Invalid version string format: {v:?}"),
                );
            }
            Ok(5..=7) => {}
            Ok(n) => {
                return refuse(
                    codes::UNSUPPORTED_PROTOCOL,
                    format!("Unsupported protocol version {n}; 5, 6 and 7 are supported"),
                );
            }
        },
    }
    let origin = req
        .headers()
        .get(hyper::header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if !origin_allowed(&app.config.allowed_origins, origin) {
        return refuse(
            codes::UNAUTHORIZED,
            format!("Origin not allowed: {}", origin.unwrap_or("(none)")),
        );
    }
    match app.try_connect() {
        Some(slot) => {
            let origin = app
                .console
                .is_open()
                .then(|| origin.map(Box::from))
                .flatten();
            Admission::Accept(slot, origin)
        }
        None => refuse(
            codes::OVER_CONNECTION_QUOTA,
            "Application is over connection quota",
        ),
    }
}

/// Whether `origin` matches the app's list. An empty list or `*` allows everything;
/// `https://a.example` matches exactly, `a.example` matches that host, `*.a.example` matches
/// the domain and its subdomains. With a list configured, a missing Origin is refused.
fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    if allowed.is_empty() || allowed.iter().any(|a| a == "*") {
        return true;
    }
    let Some(origin) = origin else {
        return false;
    };
    let origin = origin.to_ascii_lowercase();
    let host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(&origin)
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    allowed.iter().any(|entry| {
        let entry = entry.to_ascii_lowercase();
        if entry.contains("://") {
            entry.trim_end_matches('/') == origin.trim_end_matches('/')
        } else if let Some(domain) = entry.strip_prefix("*.") {
            host == domain || host.ends_with(&format!(".{domain}"))
        } else {
            host == entry
        }
    })
}

/// Answers an upgrade request with 101 and starts the connection's tasks. `ip_ticket` counts
/// the connection against its client's address for as long as it lives.
pub(crate) fn upgrade(
    mut req: Request<Incoming>,
    ctx: &Arc<ServerContext>,
    ip_ticket: Option<Arc<IpTicket>>,
) -> Response<Full<Bytes>> {
    let admission = if ctx.live.len() >= ctx.max_websockets {
        refuse(
            codes::OVER_CAPACITY,
            "Over capacity: this server holds as many connections as its descriptors allow",
        )
    } else {
        admit(&req, &ctx.apps)
    };
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(e) => {
            let mut r = Response::new(Full::new(Bytes::from(format!(
                "WebSocket upgrade failed: {e}\n"
            ))));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return r;
        }
    };
    // The task owns a clone of the context for its whole life, which is what lets `serve`
    // wait for it on shutdown.
    let ctx = ctx.clone();
    // A per-address ticket rides along only when the limit is on: the default task carries
    // a zero-sized guard instead of an `Option`.
    match ip_ticket {
        None => spawn_websocket(upgrade, admission, ctx, ()),
        Some(ticket) => spawn_websocket(upgrade, admission, ctx, ticket),
    }
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Full::new(Bytes::new()))
}

/// Completes the upgrade in a task of its own and serves the WebSocket, or sends the refusal
/// decided before it; `guard` lives as long as the task.
///
/// The task is an `async` block, not an `async fn`: the function form keeps its arguments
/// beside its locals, and the larger future cost every idle connection 140 bytes (the task
/// moved up an allocator size class; measured with crier-bench idle).
fn spawn_websocket<G: Send + 'static>(
    upgrade: fastwebsockets::upgrade::UpgradeFut,
    admission: Admission,
    ctx: Arc<ServerContext>,
    guard: G,
) {
    tokio::spawn(async move {
        let _guard = guard;
        let Ok(ws) = upgrade.await else {
            return;
        };
        let upgraded = ws.into_inner().into_inner();
        let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => parts,
            Err(other) => {
                match serve_tls(other, admission, ctx) {
                    Ok(connection) => connection.await,
                    Err(_) => tracing::warn!("upgraded connection is neither TCP nor TLS over TCP"),
                }
                return;
            }
        };
        // Register the socket with the I/O driver afresh. Its first registration still holds
        // the waker of the HTTP connection task that did the handshake, which kept that
        // finished task's memory (about 1.1 KB) alive for as long as the WebSocket lived
        // (found with heaptrack; see BENCHMARKS.md).
        let Ok(stream) = parts
            .io
            .into_inner()
            .into_std()
            .and_then(TcpStream::from_std)
        else {
            return;
        };
        // Written out rather than through `serve_upgraded`: an `async fn` keeps its arguments
        // beside its locals, and every idle connection would pay for them.
        match admission {
            Admission::Accept(slot, origin) => {
                let settings = ctx.connection_settings.clone();
                let socket_id = ctx.socket_ids.next();
                connection::run(
                    stream,
                    parts.read_buf,
                    slot,
                    socket_id,
                    origin,
                    settings,
                    &ctx.live,
                )
                .await;
            }
            // Boxed: this future is larger than a connection's, and the task is sized for
            // the larger of the two for as long as the connection lives.
            Admission::Refuse { code, message } => {
                Box::pin(send_refusal(stream, code, &message)).await
            }
        }
    });
}

/// The task's TLS branch, boxed: a TLS session is far larger than a socket, and plain
/// connections' tasks would otherwise be sized for it. Built outside the task's `async`
/// block so that no TLS stream is ever one of that block's locals (a moved-from local still
/// takes room in the future). tokio-rustls cannot rebuild a stream from its parts, so the
/// socket keeps its first registration.
fn serve_tls(
    upgraded: hyper::upgrade::Upgraded,
    admission: Admission,
    ctx: Arc<ServerContext>,
) -> Result<Pin<Box<impl Future<Output = ()> + Send>>, hyper::upgrade::Upgraded> {
    let parts = upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>()?;
    Ok(Box::pin(async move {
        let stream = parts.io.into_inner();
        match admission {
            Admission::Accept(slot, origin) => {
                let settings = ctx.connection_settings.clone();
                let socket_id = ctx.socket_ids.next();
                connection::run(
                    stream,
                    parts.read_buf,
                    slot,
                    socket_id,
                    origin,
                    settings,
                    &ctx.live,
                )
                .await;
            }
            Admission::Refuse { code, message } => send_refusal(stream, code, &message).await,
        }
    }))
}

/// Writes `pusher:error` and a close frame, then waits briefly for the client's close.
async fn send_refusal<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, code: u16, message: &str) {
    let mut out = encode::error_frame(Some(code), message).to_vec();
    out.extend_from_slice(&encode::close_frame(code, message));
    let wait = Duration::from_secs(2);
    if tokio::time::timeout(wait, stream.write_all(&out))
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::time::timeout(wait, stream.shutdown()).await;
    let mut sink = [0u8; 256];
    let _ = tokio::time::timeout(wait, async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn origins() {
        assert!(origin_allowed(&[], None));
        assert!(origin_allowed(&list(&["*"]), Some("https://x.y")));
        let l = list(&["https://app.example", "*.example.org", "plain.example"]);
        assert!(origin_allowed(&l, Some("https://app.example")));
        assert!(!origin_allowed(&l, Some("http://app.example")));
        assert!(origin_allowed(&l, Some("https://a.b.example.org")));
        assert!(origin_allowed(&l, Some("https://example.org")));
        assert!(!origin_allowed(&l, Some("https://badexample.org")));
        assert!(origin_allowed(&l, Some("http://plain.example:8080")));
        assert!(!origin_allowed(&l, Some("https://evil.example")));
        assert!(!origin_allowed(&l, None));
    }
}
