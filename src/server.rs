//! The listener: accepts TCP connections, serves HTTP/1.1 on each (WebSocket upgrades on
//! `/app/{key}`, the HTTP API under `/apps/`), and runs the shutdown sequence.
//!
//! Shutdown: stop accepting, ask every WebSocket to close with 4200 through its outbox
//! (pusher-js reconnects at once, to another node or to this one when it is back), let HTTP
//! connections finish their request, and return once every connection task is gone or the
//! grace period ends.
//! Every connection task holds the shared [`ServerContext`], and with it the `tracker`
//! sender; the receiver sees the channel close when the last context is dropped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::apps::{App, AppStore};
use crate::channels::CloseRequest;
use crate::channels::registry::COUNT_INTERVAL;
use crate::config::{Config, ServerSettings};
use crate::http_api;
use crate::protocol::codes;
use crate::protocol::socket_id::SocketIds;
use crate::websocket::connection::ConnectionSettings;
use crate::websocket::keepalive::KeepaliveSettings;
use crate::websocket::live::LiveConnections;
use crate::websocket::upgrade;

/// What request handlers and connections share.
#[derive(Debug)]
pub struct ServerContext {
    pub apps: AppStore,
    pub settings: ServerSettings,
    pub socket_ids: SocketIds,
    /// Every open WebSocket, for the shutdown's close.
    pub live: Arc<LiveConnections>,
    /// Tells HTTP connections and background tasks that shutdown has begun.
    pub shutdown: watch::Receiver<bool>,
    /// Never sent on: `serve` waits until every clone of the context (and so of this
    /// sender) is gone.
    pub tracker: mpsc::Sender<()>,
    /// Shared by every connection, so each holds a pointer rather than a copy.
    pub connection_settings: Arc<ConnectionSettings>,
}

/// Serves on `listener` until `shutdown` resolves, then closes every connection.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (tracker, mut all_done) = mpsc::channel::<()>(1);
    let grace = config.server.shutdown_timeout;
    let ctx = Arc::new(ServerContext {
        apps: AppStore::new(&config.apps),
        socket_ids: SocketIds::new(rand::random::<u32>() % 1_000_000_000),
        live: Arc::default(),
        connection_settings: Arc::new(ConnectionSettings {
            keepalive: KeepaliveSettings {
                activity_timeout: config.server.activity_timeout,
                pong_timeout: config.server.pong_timeout,
            },
            write_timeout: config.server.write_timeout,
            max_message_bytes: config.server.max_message_bytes,
            outbox_limit_bytes: config.server.outbox_limit_bytes,
        }),
        settings: config.server,
        shutdown: stop_rx,
        tracker,
    });

    for app in ctx
        .apps
        .all()
        .filter(|a| a.config.subscription_count_events)
    {
        tokio::spawn(flush_subscription_counts(app.clone(), ctx.shutdown.clone()));
    }

    tokio::pin!(shutdown);
    let mut accept_backoff = Duration::from_millis(5);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    accept_backoff = Duration::from_millis(5);
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_connection(stream, ctx.clone()));
                }
                Err(e) => {
                    // Typically "too many open files": wait for descriptors to free up.
                    tracing::warn!("accept failed: {e}; retrying in {accept_backoff:?}");
                    tokio::time::sleep(accept_backoff).await;
                    accept_backoff = (accept_backoff * 2).min(Duration::from_secs(1));
                }
            },
        }
    }
    drop(listener);
    ctx.live.close_all(CloseRequest {
        code: Some(codes::RECONNECT_NOW),
        reason: "Server is shutting down; reconnect shortly".to_string(),
        announce: true,
    });
    let _ = stop_tx.send(true);
    drop(ctx);
    let _ = tokio::time::timeout(grace, all_done.recv()).await;
    Ok(())
}

/// Sends the subscription counts the registry held back to respect the once-a-second pace.
async fn flush_subscription_counts(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(COUNT_INTERVAL / 4);
    loop {
        tokio::select! {
            _ = tick.tick() => app.registry.flush_counts(),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, ctx: Arc<ServerContext>) {
    let mut stop = ctx.shutdown.clone();
    let handler_ctx = ctx.clone();
    let service = service_fn(move |req| {
        let ctx = handler_ctx.clone();
        async move { Ok::<_, std::convert::Infallible>(route(req, &ctx).await) }
    });
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn route(req: Request<Incoming>, ctx: &Arc<ServerContext>) -> Response<Full<Bytes>> {
    if fastwebsockets::upgrade::is_upgrade_request(&req) {
        return upgrade::upgrade(req, ctx);
    }
    http_api::handle(req, &ctx.apps, &ctx.socket_ids).await
}
