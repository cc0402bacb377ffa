//! A webhook receiver for the tests: a real HTTP/1.1 server (plain or HTTPS) on a loopback
//! port that records every request Crier sends it — when it came, its headers, its raw body —
//! and checks each one as a Pusher backend would: `POST`, `Content-Type: application/json`,
//! `X-Pusher-Key` the app's key, `X-Pusher-Signature` the lower-case hex HMAC-SHA256 of the
//! raw body keyed with the app's secret, and a body `{"time_ms": <integer>, "events": [...]}`
//! with at least one event, each with a `name`. A request failing any check is kept as
//! invalid, and every accessor (and dropping the receiver) fails the test on it: no test
//! can pass while a webhook is badly signed.
//!
//! Its answers can be scripted: 200 by default, another status for the next few requests,
//! or no answer at all (the request hangs until Crier gives up on it). A receiver can also
//! be made first ([`WebhookReceiver::reserve`]) with nothing listening on its port, so that
//! Crier's connections are refused, and started there later ([`WebhookReceiver::listen`]).
//!
//! Waits are bounded: [`WebhookReceiver::wait_for_events`] and friends poll the recorded
//! events as they change, up to a deadline; [`WebhookReceiver::expect_no_more`] watches a
//! quiet window for events that must not come.
//!
//! [`CrierProcess`] runs the real binary, for what only it does: read a config file or the
//! environment, trust roots from `SSL_CERT_FILE`, die with `kill -9`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request as HyperRequest, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use hmac::{KeyInit, Mac};

/// Lower-case hex HMAC-SHA256 of `body` keyed with `secret`.
pub fn hmac_hex_bytes(secret: &str, body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// What the receiver does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Answers with this status and the body `{}`.
    Status(u16),
    /// Never answers; the connection stays open until the client drops it.
    Hang,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// Its place among all requests this receiver got (0 for the first).
    pub index: usize,
    /// When its body had been read.
    pub at: Instant,
    /// The same moment, in milliseconds since the Unix epoch.
    pub received_ms: u64,
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Every header, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Bytes,
    /// What was wrong with it; empty when it is a valid webhook.
    pub problems: Vec<String>,
    /// How the receiver answered it.
    pub answer: Answer,
    /// The body's `time_ms` (when valid).
    pub time_ms: u64,
    /// The body's `events` (when valid).
    pub events: Vec<Value>,
}

impl Request {
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The events' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| e["name"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} {} -> {:?}: {}",
            self.index,
            self.method,
            self.path,
            self.answer,
            String::from_utf8_lossy(&self.body)
        )?;
        if !self.problems.is_empty() {
            write!(f, " INVALID: {}", self.problems.join("; "))?;
        }
        Ok(())
    }
}

/// One event of a valid request.
#[derive(Debug, Clone)]
pub struct Event {
    /// The request it came in.
    pub request: usize,
    /// When that request arrived.
    pub at: Instant,
    /// The request's path.
    pub path: String,
    /// The request's `time_ms`.
    pub time_ms: u64,
    /// How the receiver answered the request (an event answered with an error is usually
    /// sent again).
    pub answer: Answer,
    /// The event object itself.
    pub json: Value,
}

impl Event {
    pub fn name(&self) -> &str {
        self.json["name"].as_str().unwrap_or("")
    }

    pub fn channel(&self) -> &str {
        self.json["channel"].as_str().unwrap_or("")
    }

    /// Whether it is `name` about `channel`.
    pub fn is(&self, name: &str, channel: &str) -> bool {
        self.name() == name && self.channel() == channel
    }

    /// Whether the receiver answered its request with a 2xx.
    pub fn acknowledged(&self) -> bool {
        matches!(self.answer, Answer::Status(s) if (200..300).contains(&s))
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[req #{} {} time_ms {} {:?}] {}",
            self.request, self.path, self.time_ms, self.answer, self.json
        )
    }
}

/// Renders events one a line, for failure messages.
pub fn show(events: &[Event]) -> String {
    if events.is_empty() {
        return "(none)".to_string();
    }
    events
        .iter()
        .map(|e| format!("\n    {e}"))
        .collect::<String>()
}

struct State {
    requests: Vec<Request>,
    /// Answers for the next requests, front first.
    script: VecDeque<Answer>,
    /// The answer once the script is used up.
    otherwise: Answer,
}

struct Shared {
    key: String,
    secret: String,
    state: Mutex<State>,
    /// Bumped after each recorded request.
    changed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A webhook receiver; see the module documentation.
pub struct WebhookReceiver {
    shared: Arc<Shared>,
    port: u16,
    tls: Option<Tls>,
    /// The accept loop; it owns every connection's task, so aborting it ends them all.
    task: Option<JoinHandle<()>>,
}

struct Tls {
    acceptor: TlsAcceptor,
    cert_path: PathBuf,
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.cert_path);
    }
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Milliseconds since the Unix epoch, now.
pub fn wall_ms() -> u64 {
    now_ms()
}

impl WebhookReceiver {
    fn new(key: &str, secret: &str, tls: Option<Tls>) -> WebhookReceiver {
        let (changed, _) = watch::channel(0);
        WebhookReceiver {
            shared: Arc::new(Shared {
                key: key.to_string(),
                secret: secret.to_string(),
                state: Mutex::new(State {
                    requests: Vec::new(),
                    script: VecDeque::new(),
                    otherwise: Answer::Status(200),
                }),
                changed,
            }),
            port: free_port(),
            tls,
            task: None,
        }
    }

    /// A plain HTTP receiver for the app `key`/`secret`, listening.
    pub async fn start(key: &str, secret: &str) -> WebhookReceiver {
        let mut receiver = WebhookReceiver::new(key, secret, None);
        receiver.listen().await;
        receiver
    }

    /// A receiver whose port refuses connections until [`WebhookReceiver::listen`].
    pub fn reserve(key: &str, secret: &str) -> WebhookReceiver {
        WebhookReceiver::new(key, secret, None)
    }

    /// An HTTPS receiver with a fresh self-signed certificate for `localhost` and
    /// `127.0.0.1`, written as PEM to [`WebhookReceiver::cert_path`] (point `SSL_CERT_FILE`
    /// at it so that Crier trusts it). Its [`WebhookReceiver::url`] names `localhost`.
    pub async fn start_tls(key: &str, secret: &str) -> WebhookReceiver {
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("generate a self-signed certificate");
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let cert_path = std::env::temp_dir().join(format!(
            "crier-webhook-test-{}-{}.pem",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&cert_path, certified.cert.pem()).expect("write the certificate PEM");
        let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
        );
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key_der)
        .expect("a TLS server configuration");
        let tls = Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert_path,
        };
        let mut receiver = WebhookReceiver::new(key, secret, Some(tls));
        receiver.listen().await;
        receiver
    }

    /// Starts listening on the receiver's port (again, after [`WebhookReceiver::reserve`]).
    pub async fn listen(&mut self) {
        assert!(self.task.is_none(), "the receiver already listens");
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cannot listen on {addr}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let shared = self.shared.clone();
        let acceptor = self.tls.as_ref().map(|t| t.acceptor.clone());
        self.task = Some(tokio::spawn(accept_loop(listener, shared, acceptor)));
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM file of an HTTPS receiver's certificate.
    pub fn cert_path(&self) -> &std::path::Path {
        &self.tls.as_ref().expect("an HTTPS receiver").cert_path
    }

    /// `http://127.0.0.1:PORT/webhook`, or `https://localhost:PORT/webhook` over TLS.
    pub fn url(&self) -> String {
        self.url_with_path("/webhook")
    }

    /// The receiver's URL with another path (to tell several targets apart).
    pub fn url_with_path(&self, path: &str) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}{path}", self.port),
            None => format!("http://127.0.0.1:{}{path}", self.port),
        }
    }

    // ----- scripted answers ------------------------------------------------------------------

    /// Answers the next `times` requests (after any already scripted) with `answer`.
    pub fn answer_next(&self, answer: Answer, times: usize) {
        let mut state = self.shared.lock();
        state.script.extend(std::iter::repeat_n(answer, times));
    }

    /// Answers the next `times` requests with `status`.
    pub fn fail_next(&self, status: u16, times: usize) {
        self.answer_next(Answer::Status(status), times);
    }

    /// Leaves the next `times` requests unanswered.
    pub fn hang_next(&self, times: usize) {
        self.answer_next(Answer::Hang, times);
    }

    /// From now on answers every request with `answer` (the script is dropped).
    pub fn answer_always(&self, answer: Answer) {
        let mut state = self.shared.lock();
        state.script.clear();
        state.otherwise = answer;
    }

    /// Never answers from now on.
    pub fn hang_forever(&self) {
        self.answer_always(Answer::Hang);
    }

    /// Answers 200 from now on.
    pub fn answer_ok(&self) {
        self.answer_always(Answer::Status(200));
    }

    // ----- what was received -----------------------------------------------------------------

    /// Panics if any request so far was not a valid, correctly signed webhook.
    pub fn assert_all_valid(&self) {
        let state = self.shared.lock();
        let invalid: Vec<String> = state
            .requests
            .iter()
            .filter(|r| !r.is_valid())
            .map(|r| format!("\n    {r}"))
            .collect();
        assert!(
            invalid.is_empty(),
            "the webhook receiver got invalid requests:{}",
            invalid.concat()
        );
    }

    /// Forgets every request so far (for the receiver's own test, which sends invalid ones).
    pub fn clear(&self) {
        self.shared.lock().requests.clear();
    }

    /// Every request so far (valid or not).
    pub fn requests(&self) -> Vec<Request> {
        self.assert_all_valid();
        self.shared.lock().requests.clone()
    }

    /// Every event of every request so far, in arrival order, each with its request's
    /// `time_ms`. Events sent again after a failed attempt appear once per attempt.
    pub fn events(&self) -> Vec<Event> {
        self.assert_all_valid();
        let state = self.shared.lock();
        state
            .requests
            .iter()
            .flat_map(|r| {
                r.events.iter().map(move |e| Event {
                    request: r.index,
                    at: r.at,
                    path: r.path.clone(),
                    time_ms: r.time_ms,
                    answer: r.answer,
                    json: e.clone(),
                })
            })
            .collect()
    }

    /// The events that `pred` accepts.
    pub fn events_where(&self, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
        self.events().into_iter().filter(|e| pred(e)).collect()
    }

    /// The events named `name` about `channel`.
    pub fn events_of(&self, name: &str, channel: &str) -> Vec<Event> {
        self.events_where(|e| e.is(name, channel))
    }

    /// Waits (up to `within`) until `pred` accepts everything received so far; returns it.
    pub async fn wait_for_events(
        &self,
        pred: impl Fn(&[Event]) -> bool,
        within: Duration,
    ) -> Vec<Event> {
        let deadline = Instant::now() + within;
        let mut changes = self.shared.changed.subscribe();
        loop {
            changes.borrow_and_update();
            let events = self.events();
            if pred(&events) {
                return events;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "the awaited webhooks did not arrive within {within:?}; received:{}",
                    show(&events)
                );
            }
            let _ = tokio::time::timeout(left, changes.changed()).await;
        }
    }

    /// Waits (up to `within`) for an event that `pred` accepts; returns the first such.
    pub async fn wait_for_event(&self, pred: impl Fn(&Event) -> bool, within: Duration) -> Event {
        let events = self
            .wait_for_events(|events| events.iter().any(&pred), within)
            .await;
        events
            .into_iter()
            .find(|e| pred(e))
            .expect("an accepted event")
    }

    /// Waits (up to `within`) for `name` about `channel`; returns the first such event.
    pub async fn wait_for(&self, name: &str, channel: &str, within: Duration) -> Event {
        self.wait_for_event(|e| e.is(name, channel), within).await
    }

    /// Waits (up to `within`) until at least `n` events that `pred` accepts have arrived;
    /// returns them all.
    pub async fn wait_for_count(
        &self,
        pred: impl Fn(&Event) -> bool,
        n: usize,
        within: Duration,
    ) -> Vec<Event> {
        let events = self
            .wait_for_events(
                |events| events.iter().filter(|e| pred(e)).count() >= n,
                within,
            )
            .await;
        events.into_iter().filter(|e| pred(e)).collect()
    }

    /// Waits (up to `within`) until `pred` accepts the requests received so far.
    pub async fn wait_for_requests(
        &self,
        pred: impl Fn(&[Request]) -> bool,
        within: Duration,
    ) -> Vec<Request> {
        let deadline = Instant::now() + within;
        let mut changes = self.shared.changed.subscribe();
        loop {
            changes.borrow_and_update();
            let requests = self.requests();
            if pred(&requests) {
                return requests;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let list: String = requests.iter().map(|r| format!("\n    {r}")).collect();
                panic!(
                    "the awaited webhook requests did not arrive within {within:?}; received:{list}"
                );
            }
            let _ = tokio::time::timeout(left, changes.changed()).await;
        }
    }

    /// Watches for `window` and fails if any event `pred` accepts arrives in it.
    pub async fn expect_no_more(&self, pred: impl Fn(&Event) -> bool, window: Duration) {
        let before = self.events().len();
        tokio::time::sleep(window).await;
        let late: Vec<Event> = self
            .events()
            .into_iter()
            .skip(before)
            .filter(|e| pred(e))
            .collect();
        assert!(
            late.is_empty(),
            "expected no more such webhooks within {window:?}, got:{}",
            show(&late)
        );
    }

    /// Watches for `window` and fails if any request at all arrives in it.
    pub async fn expect_no_requests(&self, window: Duration) {
        let before = self.requests().len();
        tokio::time::sleep(window).await;
        let requests = self.requests();
        let late: String = requests[before..]
            .iter()
            .map(|r| format!("\n    {r}"))
            .collect();
        assert!(
            late.is_empty(),
            "expected no webhook request within {window:?}, got:{late}"
        );
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if !std::thread::panicking() {
            self.assert_all_valid();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tls: Option<TlsAcceptor>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, request).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            let Ok(Ok(stream)) =
                                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                            else {
                                return;
                            };
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn handle(shared: &Shared, request: HyperRequest<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().to_string();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).to_string(),
            )
        })
        .collect();
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        // The client went away mid-body: nothing to record.
        Err(_) => return reply(400),
    };
    let (time_ms, events, problems) = check(shared, &method, &headers, &body);
    let answer = {
        let mut state = shared.lock();
        let answer = state.script.pop_front().unwrap_or(state.otherwise);
        let index = state.requests.len();
        state.requests.push(Request {
            index,
            at: Instant::now(),
            received_ms: now_ms(),
            method,
            path,
            headers,
            body,
            problems,
            answer,
            time_ms,
            events,
        });
        answer
    };
    shared.changed.send_modify(|n| *n += 1);
    match answer {
        Answer::Status(status) => reply(status),
        Answer::Hang => std::future::pending().await,
    }
}

fn reply(status: u16) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("a valid response")
}

/// Everything a Pusher backend checks; returns `time_ms`, the events and the problems found.
fn check(
    shared: &Shared,
    method: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u64, Vec<Value>, Vec<String>) {
    let mut problems = Vec::new();
    if method != "POST" {
        problems.push(format!("method {method}, expected POST"));
    }
    let only = |name: &str| -> Result<&str, String> {
        let values: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        match values.as_slice() {
            [one] => Ok(one),
            [] => Err(format!("no {name} header")),
            many => Err(format!("{} {name} headers: {many:?}", many.len())),
        }
    };
    match only("content-type") {
        Ok("application/json") => {}
        Ok(other) => problems.push(format!(
            "content-type {other:?}, expected \"application/json\""
        )),
        Err(e) => problems.push(e),
    }
    match only("x-pusher-key") {
        Ok(key) if key == shared.key => {}
        Ok(key) => problems.push(format!("x-pusher-key {key:?}, expected {:?}", shared.key)),
        Err(e) => problems.push(e),
    }
    let expected = hmac_hex_bytes(&shared.secret, body);
    match only("x-pusher-signature") {
        Ok(signature) if signature == expected => {}
        Ok(signature) => problems.push(format!(
            "x-pusher-signature {signature:?}, expected {expected:?} (hex HMAC-SHA256 of the body)"
        )),
        Err(e) => problems.push(e),
    }
    let mut time_ms = 0;
    let mut events = Vec::new();
    match serde_json::from_slice::<Value>(body) {
        Err(e) => problems.push(format!("body is not JSON: {e}")),
        Ok(Value::Object(map)) => {
            for key in map.keys() {
                if key != "time_ms" && key != "events" {
                    problems.push(format!("unexpected body field {key:?}"));
                }
            }
            match map.get("time_ms").and_then(Value::as_u64) {
                Some(t) => time_ms = t,
                None => problems.push("time_ms must be a non-negative integer".to_string()),
            }
            match map.get("events").and_then(Value::as_array) {
                Some(list) if !list.is_empty() => {
                    for event in list {
                        if event["name"].as_str().is_none_or(str::is_empty) {
                            problems.push(format!("event without a name: {event}"));
                        }
                    }
                    events = list.clone();
                }
                Some(_) => problems.push("events is empty".to_string()),
                None => problems.push("events must be an array".to_string()),
            }
        }
        Ok(other) => problems.push(format!("body must be a JSON object, got {other}")),
    }
    (time_ms, events, problems)
}

// ---------------------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------------------

/// A file in the temp directory, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(suffix: &str, text: &str) -> TempFile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "crier-webhook-test-{}-{}{suffix}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).expect("write a temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `target/release/crier` (the build's binary) as a child process on a free loopback port.
/// Its log goes to a temp file, shown when a test fails while it runs.
pub struct CrierProcess {
    child: std::process::Child,
    pub addr: SocketAddr,
    log: TempFile,
}

impl CrierProcess {
    /// Starts the binary with `args` (after `--host 127.0.0.1 --port 0`) and `envs` (no other
    /// `CRIER_*` variable is inherited); waits for its listening line.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> CrierProcess {
        use std::io::BufRead;
        let log = TempFile::new(".log", "");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_crier"));
        for (key, _) in std::env::vars() {
            if key.starts_with("CRIER_") || key == "SSL_CERT_FILE" || key == "SSL_CERT_DIR" {
                cmd.env_remove(key);
            }
        }
        cmd.env("CRIER_LOG", "info,crier=debug");
        for (key, value) in envs {
            cmd.env(key, value);
        }
        let stderr = std::fs::File::create(&log.0).expect("create the log file");
        let mut child = cmd
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start the crier binary");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let addr = line.split_whitespace().nth(3).and_then(|a| a.parse().ok());
        let mut process = CrierProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        match addr {
            Some(addr) => process.addr = addr,
            None => panic!(
                "crier did not start: stdout {line:?}, log:\n{}",
                process.log_text()
            ),
        }
        process
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log.0).unwrap_or_default()
    }

    /// SIGHUP: the binary re-reads its configuration; returns once its log says so.
    pub async fn reload(&self) {
        let before = self.log_text().matches("apps reloaded").count();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.log_text().matches("apps reloaded").count() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "no reload logged within 10 s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `kill -9`: the node dies like a crashed machine.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for CrierProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- log of crier on {} (last {} lines) ---\n{}",
                self.addr,
                tail.len(),
                tail.join("\n")
            );
        }
    }
}
