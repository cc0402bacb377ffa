//! Bytes over HTTP/1.1: one keep-alive connection pool per [`Client`](super::Client), plain
//! TCP or TLS (rustls, the system's root certificates), one exchange bounded in time and in
//! the size of the answer. Knows nothing of Pusher.
//!
//! No request is retried: a trigger is not idempotent, and the caller knows better whether
//! publishing twice is worse than not at all. (hyper still resends a request that never left
//! because a pooled connection turned out to be closed; that cannot publish twice.)

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::error::ClientError;

/// The pooled HTTP(S) client.
pub(super) type Http = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Largest answer read, in bytes. Every Pusher answer is far smaller; a larger one is refused
/// rather than buffered.
pub(super) const MAX_ANSWER: usize = 1024 * 1024;

/// How long an idle pooled connection is kept. Below the usual server-side idle timeouts
/// (60 s and up), so the client tends to close first rather than reuse a closing connection.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Idle connections kept per host: enough for bursts of concurrent triggers.
const POOL_MAX_IDLE: usize = 32;

/// A client for `http://` and `https://`. With `https`, the system's root certificates (and
/// `SSL_CERT_FILE` / `SSL_CERT_DIR`) must be readable: otherwise every request would fail
/// later with a less helpful certificate error.
pub(super) fn http_client(https: bool, connect_timeout: Duration) -> Result<Http, ClientError> {
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(builder) => builder,
        Err(e) if https => {
            return Err(ClientError::InvalidConfig(format!(
                "https needs the system's root certificates, and none could be loaded: {e}"
            )));
        }
        // Plain http never uses them.
        Err(_) => {
            let tls = rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls)
        }
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        // Without a timer the idle timeout is only checked when a connection is taken out;
        // with one, idle connections are also closed in the background.
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        .build(connector))
}

/// An answer: its status and (at most [`MAX_ANSWER`] bytes of) its body.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) body: Bytes,
    /// Whether the body went on past [`MAX_ANSWER`] (the rest was not read).
    pub(super) truncated: bool,
}

/// Sends `request` and reads the answer, all within `timeout`.
pub(super) async fn exchange(
    http: &Http,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Answer, ClientError> {
    match tokio::time::timeout(timeout, send(http, request)).await {
        Ok(answer) => answer,
        Err(_) => Err(ClientError::Timeout),
    }
}

async fn send(http: &Http, request: Request<Full<Bytes>>) -> Result<Answer, ClientError> {
    let response = http
        .request(request)
        .await
        .map_err(|e| ClientError::Transport(with_causes(&e)))?;
    let status = response.status();
    let mut body = response.into_body();
    let mut buffer = Vec::new();
    let mut truncated = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ClientError::Transport(format!("reading the answer: {}", with_causes(&e)))
        })?;
        // Trailers, if any, carry nothing the client uses.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let room = MAX_ANSWER - buffer.len();
        if data.len() > room {
            // The rest is left unread; the connection is then dropped, not reused.
            buffer.extend_from_slice(&data[..room]);
            truncated = true;
            break;
        }
        buffer.extend_from_slice(&data);
    }
    Ok(Answer {
        status,
        body: Bytes::from(buffer),
        truncated,
    })
}

/// An error and its sources, joined: hyper's own message alone ("client error (Connect)")
/// rarely says what went wrong.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
