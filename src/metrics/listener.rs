//! The metrics listener: `GET /metrics` (Prometheus text), `/up` and `/ready`, on a port of
//! its own so that it can stay off the public network (soketi's 9601 by default).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cluster::Cluster;

/// Whether the server takes traffic: `/ready` answers 503 while it drains or, in a cluster,
/// while Redis is unreachable.
#[derive(Debug, Default)]
pub(crate) struct Health {
    draining: AtomicBool,
    cluster: Option<Arc<Cluster>>,
}

impl Health {
    pub(crate) fn new(cluster: Option<Arc<Cluster>>) -> Self {
        Health {
            draining: AtomicBool::new(false),
            cluster,
        }
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// `Err(why)` while the server should not get new traffic.
    pub(crate) fn ready(&self) -> Result<(), &'static str> {
        if self.is_draining() {
            return Err("draining: the server is shutting down");
        }
        if self.cluster.as_ref().is_some_and(|c| c.is_down()) {
            return Err("Redis is unreachable: this node serves only its own clients");
        }
        Ok(())
    }

    /// The answer to `GET /up` or `GET /ready`; `None` for other paths.
    pub(crate) fn answer(&self, path: &str) -> Option<Response<Full<Bytes>>> {
        let (status, body) = match path {
            "/up" => (StatusCode::OK, "{\"ok\":true}".to_string()),
            "/ready" => match self.ready() {
                Ok(()) => (StatusCode::OK, "{\"ready\":true}".to_string()),
                Err(why) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({ "ready": false, "error": why }).to_string(),
                ),
            },
            _ => return None,
        };
        Some(
            Response::builder()
                .status(status)
                .header("Content-Type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_default(),
        )
    }
}

/// Serves the listener until `stop` turns true. A port already taken is logged, not fatal:
/// the main port is what clients need.
pub(crate) async fn serve(
    addr: (String, u16),
    registry: Arc<Registry>,
    health: Arc<Health>,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match TcpListener::bind((addr.0.as_str(), addr.1)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                "metrics: cannot listen on {}:{}: {e}; /metrics is not served (server.metrics_port, 0 turns it off)",
                addr.0,
                addr.1
            );
            return;
        }
    };
    if let Ok(local) = listener.local_addr() {
        tracing::info!("metrics on http://{local}/metrics");
    }
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (registry, health) = (registry.clone(), health.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let answer = respond(&req, &registry, &health);
                        async move { Ok::<_, std::convert::Infallible>(answer) }
                    });
                    let _ = http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(std::time::Duration::from_secs(10))
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

fn respond(req: &Request<Incoming>, registry: &Registry, health: &Health) -> Response<Full<Bytes>> {
    if let Some(answer) = health.answer(req.uri().path()) {
        return answer;
    }
    if req.uri().path() != "/metrics" {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"not found: try /metrics\n")))
            .unwrap_or_default();
    }
    let mut text = String::with_capacity(16 * 1024);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        return Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Full::new(Bytes::from(format!(
                "cannot encode metrics: {e}\n"
            ))))
            .unwrap_or_default();
    }
    Response::builder()
        .header(
            "Content-Type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_default()
}

/// The whole registry: the per-app families and what is read at scrape time.
pub(crate) fn registry(families: &super::Families, gauges: super::collector::Gauges) -> Registry {
    let mut registry = Registry::with_prefix("crier");
    families.register(&mut registry);
    registry.register_collector(Box::new(gauges));
    registry
}
