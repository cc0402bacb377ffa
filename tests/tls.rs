//! TLS through real sockets and the real binary: the HTTP API over https and WebSockets over
//! wss, no plain fallback on the TLS port, a SIGHUP certificate reload that keeps open
//! connections, start failures for unusable files, and handshakes that cannot hold the
//! server up. Rules: protocol-spec/tls.md.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::binary::{self, run_to_exit};
use common::{APP_KEY, Api, ApiResponse, RECV_TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A certificate authority of the test's own.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1: (chain PEM, key PEM).
    fn server_cert(&self) -> (String, String) {
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server params");
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        (cert.pem(), key.serialize_pem())
    }

    /// A client configuration that trusts this CA only.
    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).expect("CA into the root store");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

/// A directory of its own in the temp directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("crier-tls-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn cert(&self) -> PathBuf {
        self.0.join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.0.join("key.pem")
    }

    /// Writes a server certificate from `ca` where the server reads it.
    fn install(&self, ca: &TestCa) {
        let (cert, key) = ca.server_cert();
        std::fs::write(self.cert(), cert).expect("write cert");
        std::fs::write(self.key(), key).expect("write key");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// The binary on a free loopback port.
fn crier() -> Command {
    let mut cmd = binary::crier();
    cmd.args(["--host", "127.0.0.1", "--port", "0"]);
    cmd
}

fn with_tls<'a>(cmd: &'a mut Command, dir: &TempDir) -> &'a mut Command {
    cmd.arg("--tls-cert")
        .arg(dir.cert())
        .arg("--tls-key")
        .arg(dir.key())
}

/// The binary serving TLS, and its address.
struct Running {
    process: binary::Running,
    addr: SocketAddr,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        let process = binary::Running::start(cmd);
        let line = process.wait_for_line("listening on ");
        assert!(
            line.contains("WebSocket wss://"),
            "the startup line must show wss://: {line}"
        );
        let rest = &line[line.find("listening on ").unwrap_or(0) + "listening on ".len()..];
        let addr = rest
            .split_whitespace()
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse the address in {line:?}"));
        Running { process, addr }
    }

    fn wait_for_line(&self, needle: &str) -> String {
        self.process.wait_for_line(needle)
    }

    fn hangup(&self) {
        self.process.signal("HUP");
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

async fn tls_connect(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("a valid server name");
    tokio::time::timeout(RECV_TIMEOUT, connector.connect(name, tcp))
        .await
        .unwrap_or_else(|_| panic!("TLS handshake with {addr} timed out"))
}

/// One signed HTTP API request over https, on a fresh connection.
async fn https_send(
    addr: SocketAddr,
    connector: &TlsConnector,
    req: &common::ApiRequest,
) -> ApiResponse {
    let exchange = async {
        let stream = tls_connect(addr, connector).await.expect("TLS handshake");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(req.method.as_str())
            .uri(format!("{}?{}", req.path, req.query()))
            .header("host", format!("localhost:{}", addr.port()))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(req.body.clone())))
            .expect("a valid request");
        let response = sender.send_request(request).await.expect("HTTP response");
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("HTTP body")
            .to_bytes();
        ApiResponse {
            status,
            text: String::from_utf8_lossy(&bytes).into_owned(),
            json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("https request answered within 10 s")
}

async fn https_publish(addr: SocketAddr, connector: &TlsConnector, channel: &str, data: &str) {
    let api = Api::new(addr);
    let body = json!({"name": "greeting", "data": data, "channels": [channel]}).to_string();
    let req = api.signed("POST", &api.path("/events"), &[], body.as_bytes());
    let response = https_send(addr, connector, &req).await;
    assert_eq!(response.ok(), &json!({}), "publish over https");
}

/// A Pusher subscriber over wss.
struct WssClient {
    ws: WebSocketStream<TlsStream<TcpStream>>,
}

impl WssClient {
    async fn connect(addr: SocketAddr, connector: &TlsConnector) -> WssClient {
        let stream = tls_connect(addr, connector).await.expect("TLS handshake");
        let url = format!("wss://localhost:{}/app/{APP_KEY}?protocol=7", addr.port());
        let (ws, _) =
            tokio::time::timeout(RECV_TIMEOUT, tokio_tungstenite::client_async(url, stream))
                .await
                .expect("WebSocket upgrade within the timeout")
                .expect("WebSocket upgrade over TLS");
        let mut client = WssClient { ws };
        let hello = client.recv_json().await;
        assert_eq!(hello["event"], "pusher:connection_established", "{hello}");
        client
    }

    async fn recv_json(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(RECV_TIMEOUT, self.ws.next())
                .await
                .expect("a frame within the timeout")
                .expect("the connection is open")
                .expect("a good frame");
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).expect("JSON frame");
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    async fn subscribe(&mut self, channel: &str) {
        let subscribe = json!({"event": "pusher:subscribe", "data": {"channel": channel}});
        self.ws
            .send(Message::text(subscribe.to_string()))
            .await
            .expect("send subscribe");
        let frame = self.recv_json().await;
        assert_eq!(
            frame["event"], "pusher_internal:subscription_succeeded",
            "{frame}"
        );
    }

    async fn expect_event(&mut self, channel: &str, data: &str) {
        let frame = self.recv_json().await;
        assert_eq!(frame["event"], "greeting", "{frame}");
        assert_eq!(frame["channel"], channel, "{frame}");
        assert_eq!(frame["data"], data, "{frame}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn https_publish_reaches_a_wss_subscriber() {
    let ca = TestCa::new("crier test CA");
    let dir = TempDir::new();
    dir.install(&ca);
    let server = Running::start(with_tls(&mut crier(), &dir));
    let connector = ca.connector();

    let mut subscriber = WssClient::connect(server.addr, &connector).await;
    subscriber.subscribe("tls-news").await;
    https_publish(server.addr, &connector, "tls-news", "over TLS").await;
    subscriber.expect_event("tls-news", "over TLS").await;

    // Larger than rustls's outgoing buffer: written in parts, all of it arrives, in order.
    let big = "x".repeat(90_000);
    https_publish(server.addr, &connector, "tls-news", &big).await;
    https_publish(server.addr, &connector, "tls-news", "after the big one").await;
    subscriber.expect_event("tls-news", &big).await;
    subscriber
        .expect_event("tls-news", "after the big one")
        .await;
}

#[tokio::test]
async fn plain_http_and_ws_to_the_tls_port_fail() {
    let ca = TestCa::new("crier test CA");
    let dir = TempDir::new();
    dir.install(&ca);
    let server = Running::start(with_tls(&mut crier(), &dir));

    // Plain HTTP: whatever comes back is not an HTTP response.
    let mut tcp = TcpStream::connect(server.addr).await.expect("TCP connect");
    tcp.write_all(b"GET /apps/1/channels HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write request");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(RECV_TIMEOUT, tcp.read_to_end(&mut answer))
        .await
        .expect("the server closes a plain-text connection");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP must not be served on the TLS port: {:?}",
        String::from_utf8_lossy(&answer)
    );

    // Plain WebSocket: the upgrade fails.
    let tcp = TcpStream::connect(server.addr).await.expect("TCP connect");
    let url = format!("ws://{}/app/{APP_KEY}?protocol=7", server.addr);
    let upgrade = tokio::time::timeout(RECV_TIMEOUT, tokio_tungstenite::client_async(url, tcp))
        .await
        .expect("the plain upgrade ends within the timeout");
    assert!(
        upgrade.is_err(),
        "a ws:// upgrade must fail on the TLS port"
    );

    // TLS still works on the same port afterwards.
    let mut subscriber = WssClient::connect(server.addr, &ca.connector()).await;
    subscriber.subscribe("after-plain").await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_keeps_open_connections() {
    let old_ca = TestCa::new("old CA");
    let new_ca = TestCa::new("new CA");
    let dir = TempDir::new();
    dir.install(&old_ca);
    let server = Running::start(with_tls(&mut crier(), &dir));

    let mut before = WssClient::connect(server.addr, &old_ca.connector()).await;
    before.subscribe("reload").await;

    dir.install(&new_ca);
    server.hangup();
    server.wait_for_line("TLS certificate reloaded from");

    // New handshakes present the new certificate...
    let mut after = WssClient::connect(server.addr, &new_ca.connector()).await;
    after.subscribe("reload").await;
    let refused = tls_connect(server.addr, &old_ca.connector()).await;
    assert!(
        refused.is_err(),
        "a client trusting only the old CA must fail the handshake after the reload"
    );
    // ...and the connection opened before the reload still receives events.
    https_publish(server.addr, &new_ca.connector(), "reload", "after reload").await;
    before.expect_event("reload", "after reload").await;
    after.expect_event("reload", "after reload").await;

    // A reload that fails keeps the certificate in use.
    std::fs::write(dir.cert(), "not a certificate").expect("overwrite cert");
    server.hangup();
    let warning = server.wait_for_line("TLS certificate not reloaded");
    assert!(warning.contains("server.tls_cert"), "{warning}");
    let mut third = WssClient::connect(server.addr, &new_ca.connector()).await;
    third.subscribe("reload").await;
}

#[test]
fn unusable_certificate_or_key_exits_2_naming_the_setting() {
    let ca = TestCa::new("crier test CA");
    let dir = TempDir::new();
    dir.install(&ca);
    let missing = dir.0.join("missing.pem");

    let (code, output) = run_to_exit(
        crier()
            .arg("--tls-cert")
            .arg(&missing)
            .arg("--tls-key")
            .arg(dir.key()),
    );
    assert_eq!(code, Some(2), "{output}");
    assert!(
        output.contains("server.tls_cert: cannot read"),
        "must name the setting: {output}"
    );

    // A key file with no key in it (the certificate given twice).
    let (code, output) = run_to_exit(
        crier()
            .arg("--tls-cert")
            .arg(dir.cert())
            .arg("--tls-key")
            .arg(dir.cert()),
    );
    assert_eq!(code, Some(2), "{output}");
    assert!(
        output.contains("server.tls_key: no private key found in"),
        "must name the setting: {output}"
    );
    assert!(!output.contains("listening on"), "{output}");
}

#[tokio::test]
async fn a_client_that_never_says_hello_holds_nobody_up_and_is_dropped() {
    let ca = TestCa::new("crier test CA");
    let dir = TempDir::new();
    dir.install(&ca);
    // Longer than the clients below wait for their own handshakes: were handshakes done in
    // the accept loop, theirs would wait behind the silent one and time out.
    let server = Running::start(with_tls(&mut crier(), &dir).args(["--http-timeout", "7"]));
    let connector = ca.connector();

    let mut silent = TcpStream::connect(server.addr).await.expect("TCP connect");

    // Meanwhile others connect, subscribe and publish.
    let mut subscriber = WssClient::connect(server.addr, &connector).await;
    subscriber.subscribe("busy").await;
    https_publish(server.addr, &connector, "busy", "not blocked").await;
    subscriber.expect_event("busy", "not blocked").await;

    // The silent client's handshake runs out of time and its connection is closed.
    let mut sink = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut sink))
        .await
        .expect("the server closes a connection that never starts its handshake");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "nothing but a close is expected: {read:?}"
    );
}

#[tokio::test]
async fn per_address_limit_applies_before_the_handshake() {
    let ca = TestCa::new("crier test CA");
    let dir = TempDir::new();
    dir.install(&ca);
    let server =
        Running::start(with_tls(&mut crier(), &dir).args(["--max-connections-per-ip", "1"]));
    let connector = ca.connector();

    let mut first = WssClient::connect(server.addr, &connector).await;
    first.subscribe("limited").await;
    let second = tls_connect(server.addr, &connector).await;
    assert!(
        second.is_err(),
        "a second connection from the same address must be closed before any handshake"
    );
    drop(first);
    // The place frees up once the first connection is gone.
    let deadline = Instant::now() + RECV_TIMEOUT;
    loop {
        if tls_connect(server.addr, &connector).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the per-address place must free up after the first connection closes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
