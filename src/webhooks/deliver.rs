//! Sending one webhook request: signed once, posted with a deadline, retried with
//! exponential backoff until a 2xx or until `retry_for` after the webhook was created.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use serde_json::json;

use super::Stats;
use super::settings::{WebhookSettings, WebhookTarget};
use crate::console::Console;
use crate::protocol::auth::sign_bytes;

/// The HTTP(S) client every webhook request goes through; it keeps connections alive per
/// receiver.
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Bytes of a receiver's answer read (to keep the connection reusable), at most.
const MAX_ANSWER: usize = 64 * 1024;

/// A client for `http://` and `https://` receivers, trusting the system's root certificates
/// (and `SSL_CERT_FILE` / `SSL_CERT_DIR` when set).
pub(crate) fn client() -> HttpClient {
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(
                "webhooks: no system root certificates ({e}); https:// receivers will fail"
            );
            let roots = rustls::RootCertStore::empty();
            let tls = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls)
        }
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(4)));
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    // Without a timer the pool drops idle connections only when it next looks at them.
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(16)
        .build(connector)
}

/// A target with what signing its requests needs.
#[derive(Debug)]
pub(crate) struct Receiver {
    pub app_id: String,
    pub target: WebhookTarget,
    pub uri: hyper::Uri,
    pub app_key: String,
    pub app_secret: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Receiver {
    /// `None` when the target's URL or headers do not parse (the configuration checks them).
    pub(crate) fn new(
        app_id: &str,
        target: WebhookTarget,
        app_key: &str,
        app_secret: &str,
    ) -> Option<Receiver> {
        let uri = target.url.parse().ok()?;
        let headers = target
            .headers
            .iter()
            .map(|(n, v)| {
                Some((
                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Receiver {
            app_id: app_id.to_string(),
            target,
            uri,
            app_key: app_key.to_string(),
            app_secret: app_secret.to_string(),
            headers,
        })
    }

    /// Whether requests go out under this key and secret.
    pub(crate) fn signs_as(&self, key: &str, secret: &str) -> bool {
        self.app_key == key && self.app_secret == secret
    }

    fn request(&self, body: &Bytes, signature: &str) -> Option<hyper::Request<Full<Bytes>>> {
        let mut builder = hyper::Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("crier-webhooks/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-Pusher-Key", self.app_key.as_str())
            .header("X-Pusher-Signature", signature);
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        builder.body(Full::new(body.clone())).ok()
    }
}

/// How one attempt ended.
enum Attempt {
    /// With the receiver's status.
    Delivered(u16),
    Failed(String),
}

async fn attempt(
    client: &HttpClient,
    receiver: &Receiver,
    body: &Bytes,
    signature: &str,
    timeout: Duration,
) -> Attempt {
    let Some(request) = receiver.request(body, signature) else {
        return Attempt::Failed("the request could not be built".to_string());
    };
    let answered = tokio::time::timeout(timeout, async {
        let response = client.request(request).await.map_err(|e| {
            use std::error::Error;
            let mut reason = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                reason = format!("{reason}: {s}");
                source = s.source();
            }
            reason
        })?;
        let status = response.status();
        // Read (a bounded part of) the answer so the connection can serve the next request.
        let _ = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await;
        Ok::<_, String>(status)
    })
    .await;
    match answered {
        Ok(Ok(status)) if status.is_success() => Attempt::Delivered(status.as_u16()),
        Ok(Ok(status)) => Attempt::Failed(format!("answered {status}")),
        Ok(Err(reason)) => Attempt::Failed(reason),
        Err(_) => Attempt::Failed(format!("no answer within {timeout:?}")),
    }
}

/// Where a delivery's outcome is reported: the app's console, with the events' names.
pub(crate) struct Report {
    pub console: Arc<Console>,
    pub events: Vec<&'static str>,
}

impl Report {
    fn sent(&self, url: &str, status: u16) {
        self.console.record(
            "webhook_sent",
            json!({ "url": url, "events": self.events, "status": status }),
        );
    }

    fn failed(&self, url: &str, error: &str, attempt: u32, gave_up: bool) {
        self.console.record(
            "webhook_failed",
            json!({
                "url": url,
                "events": self.events,
                "error": error,
                "attempt": attempt,
                "gave_up": gave_up,
            }),
        );
    }
}

/// Delivers `body` (created at `time_ms`) to `receiver`: retried with backoff until a 2xx or
/// until `retry_for` after `time_ms`. Returns whether it was delivered. Each attempt's outcome
/// goes to `report`, when given.
pub(crate) async fn deliver(
    client: &HttpClient,
    receiver: &Receiver,
    settings: &WebhookSettings,
    stats: &Stats,
    body: Bytes,
    time_ms: u64,
    report: Option<Report>,
) -> bool {
    let signature = sign_bytes(&receiver.app_secret, &body);
    let give_up_at = time_ms.saturating_add(settings.retry_for.as_millis() as u64);
    let mut pause = settings.retry_first;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let reason = match attempt(client, receiver, &body, &signature, settings.timeout).await {
            Attempt::Delivered(status) => {
                Stats::add(&stats.delivered, 1);
                if let Some(report) = &report {
                    report.sent(&receiver.target.url, status);
                }
                return true;
            }
            Attempt::Failed(reason) => reason,
        };
        Stats::add(&stats.failed_attempts, 1);
        let now = super::now_ms();
        let give_up = now.saturating_add(pause.as_millis() as u64) > give_up_at;
        if let Some(report) = &report {
            report.failed(&receiver.target.url, &reason, attempts, give_up);
        }
        if give_up {
            Stats::add(&stats.given_up, 1);
            tracing::warn!(
                "webhook to {} given up after {attempts} attempt(s) over {:.1} s (last: {reason}); {} given up so far",
                receiver.target.url,
                now.saturating_sub(time_ms) as f64 / 1000.0,
                stats.given_up.load(std::sync::atomic::Ordering::Relaxed),
            );
            return false;
        }
        if attempts == 1 {
            tracing::warn!(
                "webhook to {} failed ({reason}); retrying for up to {:?}",
                receiver.target.url,
                settings.retry_for
            );
        } else {
            tracing::debug!(
                "webhook to {} failed again ({reason}); attempt {attempts}",
                receiver.target.url
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(settings.retry_max);
    }
}
