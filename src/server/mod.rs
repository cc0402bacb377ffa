//! The listener: accepts TCP connections, serves HTTP/1.1 on each (WebSocket upgrades on
//! `/app/{key}`, the HTTP API under `/apps/`), and runs the shutdown sequence.
//!
//! Shutdown: stop accepting, ask every WebSocket to close with 4200 through its outbox
//! (pusher-js reconnects at once, to another node or to this one when it is back), let HTTP
//! connections finish their request, and return once every connection task is gone or the
//! grace period ends.
//! Every connection task holds the shared `ServerContext`, and with it the `tracker`
//! sender; the receiver sees the channel close when the last context is dropped.
//!
//! What a client can hold before it has proved anything is bounded here: connections in the
//! HTTP phase (`http_phase`), connections per address (`client_ips`), the time a request's
//! head and body may take, the size of its head, and descriptors (`descriptors`): WebSockets
//! never take the ones kept for the HTTP phase, so signed publishes always get through.
//!
//! With TLS on ([`tls`]) every connection first completes its handshake, inside its own task
//! and within `http_timeout`, holding its HTTP-phase place meanwhile; then it is served
//! exactly as a plain one.

pub(crate) mod builder;
pub(crate) mod client_ips;
pub(crate) mod descriptors;
pub(crate) mod drain;
pub(crate) mod http_phase;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::apps::AppStore;
use crate::channels::registry::COUNT_INTERVAL;
use crate::cluster::Cluster;
use crate::cluster::link::{self, LinkContext};
use crate::config::{Config, ServerSettings};
use crate::console;
use crate::http_api;
use crate::metrics::Families;
use crate::metrics::collector::Gauges;
use crate::metrics::listener::{self, Health};
use crate::protocol::socket_id::SocketIds;
use crate::websocket::connection::ConnectionSettings;
use crate::websocket::keepalive::KeepaliveSettings;
use crate::websocket::live::LiveConnections;
use crate::websocket::upgrade;
use client_ips::{ClientIps, IpTicket};
use descriptors::Spare;
use http_phase::{HttpPhase, HttpTicket};
use tls::TlsCertificates;

/// Largest request head (request line and headers) a client may send; hyper's own minimum
/// is 8 KiB. Legitimate requests are a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Pending connections the kernel queues for accept. Tokio's default of 128 drops SYNs when
/// hundreds of clients connect at once (every pusher-js client reconnects together after a
/// restart), and a dropped SYN costs the client a 1 s retransmit.
const LISTEN_BACKLOG: u32 = 4096;

/// Resolves `host` (a name, an IPv4 or an IPv6 address, bracketed or not) and listens on its
/// first address.
pub async fn listen(host: &str, port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let resolved = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the host name resolves to no address",
            )
        })?;
    let socket = if resolved.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(resolved)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What request handlers and connections share.
#[derive(Debug)]
pub(crate) struct ServerContext {
    pub(crate) apps: AppStore,
    pub(crate) settings: ServerSettings,
    pub(crate) socket_ids: SocketIds,
    /// Every open WebSocket, for the shutdown's close.
    pub(crate) live: Arc<LiveConnections>,
    /// Tells HTTP connections and background tasks that shutdown has begun.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Never sent on: `serve` waits until every clone of the context (and so of this
    /// sender) is gone.
    pub(crate) _tracker: mpsc::Sender<()>,
    /// Shared by every connection, so each holds a pointer rather than a copy.
    pub(crate) connection_settings: Arc<ConnectionSettings>,
    /// Connections before their upgrade, or carrying HTTP API requests.
    pub(crate) http_phase: Arc<HttpPhase>,
    pub(crate) client_ips: Arc<ClientIps>,
    /// Open WebSockets past which new ones are refused with 4100, so that descriptors remain
    /// for the HTTP phase (and so for signed publishes).
    pub(crate) max_websockets: usize,
    /// `/up` and `/ready`; draining refuses new WebSockets.
    pub(crate) health: Arc<Health>,
}

/// What a running server can be told.
#[derive(Debug, Clone)]
pub enum Control {
    /// Stop taking WebSockets, close the open ones in waves over `server.drain_secs`, exit.
    Drain,
    /// Close every connection now and exit (a second stop during a drain does this too).
    Now,
    /// Serve these apps from now on (see `AppStore::reload`); the rest of the
    /// configuration is read only at start.
    Reload(Box<Config>),
}

/// Serves on `listener` until `shutdown` resolves, then closes every connection at once. With
/// `server.tls_cert` and `server.tls_key` set, serves TLS only; a certificate or key that
/// cannot be used is an `InvalidInput` error.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(Control::Now).await;
    });
    serve_until(listener, config, rx).await
}

/// Serves on `listener` until a [`Control`] arrives (or every sender is gone, which is
/// [`Control::Now`]).
pub async fn serve_until(
    listener: TcpListener,
    config: Config,
    stops: mpsc::Receiver<Control>,
) -> std::io::Result<()> {
    let tls = tls::from_settings(&config.server)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    serve_with_tls(listener, config, tls, stops).await
}

/// [`serve_until`] with the TLS configuration already loaded (the binary loads it first, to
/// report a bad file as a start failure); `None` serves plain HTTP whatever the settings say.
pub async fn serve_with_tls(
    listener: TcpListener,
    config: Config,
    tls: Option<Arc<TlsCertificates>>,
    stops: mpsc::Receiver<Control>,
) -> std::io::Result<()> {
    serve_inner(listener, config, tls, stops, None).await
}

/// What an embedding program gets once the server is up: its apps, and the node part of
/// its socket ids.
pub(crate) struct Started {
    pub(crate) apps: AppStore,
    pub(crate) socket_node: u32,
}

/// [`serve_with_tls`], telling `started` when the apps are built.
pub(crate) async fn serve_inner(
    listener: TcpListener,
    config: Config,
    tls: Option<Arc<TlsCertificates>>,
    mut stops: mpsc::Receiver<Control>,
    started: Option<tokio::sync::oneshot::Sender<Started>>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (tracker, mut all_done) = mpsc::channel::<()>(1);
    let grace = config.server.shutdown_timeout;
    let (max_http, max_websockets) = descriptor_budget(config.server.max_http_connections);
    let socket_node = rand::random::<u32>() % 1_000_000_000;
    let cluster = config
        .cluster
        .redis_url
        .as_deref()
        .map(|url| Cluster::new(&config.cluster, url));
    let taps =
        crate::webhooks::Taps::start(&config, cluster.as_ref().map(|(c, _)| c), stop_rx.clone());
    let families = Families::default();
    let apps = AppStore::build(
        &config.apps,
        cluster.as_ref().map(|(c, _)| c),
        taps.as_ref(),
        Some(&families),
    );
    if let Some(taps) = &taps {
        taps.attach(&apps);
    }
    let health = Arc::new(Health::new(cluster.as_ref().map(|(c, _)| c.clone())));
    if config.server.metrics_port != 0 {
        let registry = listener::registry(
            &families,
            Gauges {
                apps: apps.clone(),
                webhooks: taps.as_ref().map(|t| t.stats.clone()),
                cluster: cluster.as_ref().map(|(c, _)| c.clone()),
            },
        );
        tokio::spawn(listener::serve(
            (
                config.server.metrics_host.clone(),
                config.server.metrics_port,
            ),
            Arc::new(registry),
            health.clone(),
            stop_rx.clone(),
        ));
    }
    let ctx = Arc::new(ServerContext {
        http_phase: HttpPhase::new(max_http),
        client_ips: ClientIps::new(
            config.server.max_connections_per_ip,
            config.server.trusted_proxies.clone(),
        ),
        max_websockets,
        apps: apps.clone(),
        socket_ids: SocketIds::new(socket_node),
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
        _tracker: tracker,
        health,
    });

    if let Some((cluster, queues)) = cluster {
        let link = LinkContext {
            cluster,
            apps,
            socket_node,
        };
        tokio::spawn(link::run(link, queues, ctx.shutdown.clone()));
    }

    if let Some(started) = started {
        let _ = started.send(Started {
            apps: ctx.apps.clone(),
            socket_node,
        });
    }

    if let Some(tls) = &tls {
        tokio::spawn(tls::reload_on_sighup(tls.clone(), ctx.shutdown.clone())?);
    }

    tokio::spawn(flush_subscription_counts(
        ctx.apps.clone(),
        ctx.shutdown.clone(),
    ));

    let mut spare = Spare::new();
    let mut last_warning: Option<Instant> = None;
    let mut draining: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            stop = stops.recv() => match (stop, &draining) {
                (Some(Control::Reload(config)), _) => {
                    let r = ctx.apps.reload(&config.apps);
                    tracing::info!(
                        "apps reloaded: {} added {:?}, {} changed {:?}, {} removed {:?}",
                        r.added.len(), r.added, r.changed.len(), r.changed, r.removed.len(), r.removed
                    );
                }
                (Some(Control::Drain), None) => {
                    ctx.health.start_draining();
                    draining = Some(tokio::spawn(drain::run(
                        ctx.live.clone(),
                        ctx.settings.drain,
                    )));
                }
                (Some(_), Some(_)) => {
                    tracing::info!("second stop during the drain: closing the rest now");
                    break;
                }
                _ => break,
            },
            _ = async {
                match draining.as_mut() {
                    Some(task) => { let _ = task.await; }
                    None => std::future::pending::<()>().await,
                }
            } => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => admit(stream, peer, &ctx, tls.as_deref()),
                Err(e) => {
                    // Out of descriptors (or another transient failure): turn the waiting
                    // client away now rather than leave it, and the rest, in the queue.
                    let shed = spare.shed(&listener).await;
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        last_warning = Some(Instant::now());
                        tracing::warn!(
                            "accept failed: {e}; {} WebSockets and {} HTTP connections open{}",
                            ctx.live.len(),
                            ctx.http_phase.len(),
                            if shed { "; closing new connections until descriptors free up" } else { "" }
                        );
                    }
                    if !shed {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            },
        }
    }
    drop(listener);
    if let Some(task) = draining {
        task.abort();
    }
    ctx.health.start_draining();
    ctx.live.close_all(drain::request());
    for app in ctx.apps.all() {
        app.console.close_all();
    }
    let _ = stop_tx.send(true);
    drop(ctx);
    let _ = tokio::time::timeout(grace, all_done.recv()).await;
    Ok(())
}

/// Sends the subscription counts the registries held back to respect the once-a-second pace,
/// for the apps that send counts (those a reload adds included).
async fn flush_subscription_counts(apps: AppStore, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(COUNT_INTERVAL / 4);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for app in apps.all().filter(|a| a.config.subscription_count_events) {
                    app.registry.flush_counts();
                }
            }
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// How many connections may be in the HTTP phase, and how many WebSockets may be open, within
/// the process's open-files limit: the HTTP phase gets at most a quarter of it.
fn descriptor_budget(max_http: usize) -> (usize, usize) {
    let Some(limit) = descriptors::open_files_limit() else {
        return (max_http, usize::MAX);
    };
    let usable = limit.saturating_sub(descriptors::RESERVED);
    let http = max_http.min(usable / 4).max(1);
    if http < max_http {
        tracing::warn!(
            "server.max_http_connections lowered from {max_http} to {http}: the open-files limit is {limit}"
        );
    }
    (http, usable.saturating_sub(http).max(1))
}

/// Takes a newly accepted connection into the HTTP phase, or answers it at once.
fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: &Arc<ServerContext>,
    tls: Option<&TlsCertificates>,
) {
    let peer_ip = peer.ip().to_canonical();
    let ip_ticket = if ctx.client_ips.is_trusted(peer_ip) {
        // Counted per request, by the client its X-Forwarded-For names.
        None
    } else {
        match ctx.client_ips.admit(peer_ip) {
            Ok(ticket) => ticket.map(Arc::new),
            Err(over) => {
                return refuse_raw(
                    stream,
                    tls.is_some(),
                    "429 Too Many Requests",
                    &format!(
                        "Too many connections from {}: the limit is {}",
                        over.ip, over.limit
                    ),
                );
            }
        }
    };
    let Some(ticket) = ctx.http_phase.admit() else {
        return refuse_raw(
            stream,
            tls.is_some(),
            "503 Service Unavailable",
            &format!(
                "Too many connections waiting to be served (limit {}); retry shortly",
                ctx.http_phase.limit()
            ),
        );
    };
    let _ = stream.set_nodelay(true);
    let phase = ctx.http_phase.clone();
    let id = ticket.id();
    let task = match tls {
        None => tokio::spawn(serve_connection(
            stream,
            peer_ip,
            ticket,
            ip_ticket,
            ctx.clone(),
        )),
        Some(tls) => tokio::spawn(serve_tls_connection(
            stream,
            tls.current(),
            peer_ip,
            ticket,
            ip_ticket,
            ctx.clone(),
        )),
    };
    phase.attach(id, task.abort_handle());
}

/// Answers a connection that will not be served with a complete HTTP response, written
/// without waiting, and closes it. A TLS connection is closed without an answer: plain text
/// would be garbage to its client, and a handshake would spend the very resources being
/// protected on someone already over a limit.
fn refuse_raw(stream: TcpStream, tls: bool, status: &str, message: &str) {
    if tls {
        return;
    }
    let body = serde_json::json!({ "error": message }).to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

/// Completes the TLS handshake, within `http_timeout` and while holding the connection's
/// HTTP-phase place (so a client that never finishes it is evicted or timed out like a slow
/// request head), then serves the connection as a plain one.
async fn serve_tls_connection(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    peer_ip: std::net::IpAddr,
    phase: HttpTicket,
    ip_ticket: Option<Arc<IpTicket>>,
    ctx: Arc<ServerContext>,
) {
    let mut stop = ctx.shutdown.clone();
    let handshake = tokio::time::timeout(
        ctx.settings.http_timeout,
        tokio_rustls::TlsAcceptor::from(config).accept(stream),
    );
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!("TLS handshake with {peer_ip} failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!("TLS handshake with {peer_ip} timed out");
                return;
            }
        },
        _ = stop.wait_for(|s| *s) => return,
    };
    serve_connection(stream, peer_ip, phase, ip_ticket, ctx).await
}

/// Serves HTTP/1.1 on one connection until it closes or upgrades; `_phase` holds its place
/// in the HTTP phase until then (or until it is evicted, which aborts this task).
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    peer_ip: std::net::IpAddr,
    _phase: HttpTicket,
    ip_ticket: Option<Arc<IpTicket>>,
    ctx: Arc<ServerContext>,
) {
    let mut stop = ctx.shutdown.clone();
    let handler_ctx = ctx.clone();
    let service = service_fn(move |req| {
        let ctx = handler_ctx.clone();
        let ip_ticket = ip_ticket.clone();
        async move { Ok::<_, std::convert::Infallible>(route(req, peer_ip, ip_ticket, &ctx).await) }
    });
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        // Covers a slow head and an idle keep-alive connection alike.
        .header_read_timeout(ctx.settings.http_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
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

/// Every answer is whole except the console's live stream.
type Body = http_body_util::Either<Full<Bytes>, console::viewer::Stream>;

async fn route(
    req: Request<Incoming>,
    peer_ip: std::net::IpAddr,
    mut ip_ticket: Option<Arc<IpTicket>>,
    ctx: &Arc<ServerContext>,
) -> Response<Body> {
    use http_body_util::Either;
    if ctx.client_ips.is_limited() && ctx.client_ips.is_trusted(peer_ip) {
        let client = ctx.client_ips.forwarded_client(peer_ip, req.headers());
        match ctx.client_ips.admit(client) {
            Ok(ticket) => ip_ticket = ticket.map(Arc::new),
            Err(over) => {
                return http_api::error::ApiError::TooManyRequests(format!(
                    "Too many connections from {}: the limit is {}",
                    over.ip, over.limit
                ))
                .into_response()
                .map(Either::Left);
            }
        }
    }
    if console::http::is_console_path(req.uri().path())
        && !fastwebsockets::upgrade::is_upgrade_request(&req)
    {
        return console::http::handle(req, ctx).await;
    }
    route_whole(req, ip_ticket, ctx).await.map(Either::Left)
}

async fn route_whole(
    req: Request<Incoming>,
    ip_ticket: Option<Arc<IpTicket>>,
    ctx: &Arc<ServerContext>,
) -> Response<Full<Bytes>> {
    if fastwebsockets::upgrade::is_upgrade_request(&req) {
        if ctx.health.is_draining() {
            return http_api::error::ApiError::Unavailable(
                "Server is shutting down; connect to another node".to_string(),
            )
            .into_response();
        }
        return upgrade::upgrade(req, ctx, ip_ticket);
    }
    if let Some(answer) = ctx.health.answer(req.uri().path()) {
        return answer;
    }
    http_api::handle(req, &ctx.apps, &ctx.socket_ids, ctx.settings.http_timeout).await
}
