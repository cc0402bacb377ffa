//! What abuse leaves behind in the server process, measured on the real binary from
//! `/proc/PID/status`: a slow unsigned body, frame headers that declare large frames, a flood
//! of connections that never finish their request, and a reader that stops reading.
//! Bounds are generous (a loaded two-core box): they tell "bounded" from "grows with the
//! attack", not fast from slow.
//! Rules: protocol-spec/limits.md ("Unauthenticated clients", "A slow reader").

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_crier");

/// The binary on a free port, with its stderr collected.
struct Crier {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Crier {
    fn start(env: &[(&str, &str)]) -> Crier {
        let mut cmd = Command::new(BIN);
        for (key, _) in std::env::vars() {
            if key.starts_with("CRIER_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(["--host", "127.0.0.1", "--port", "0"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start crier");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .split_whitespace()
            .nth(3)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Crier {
            child,
            addr,
            stderr,
        }
    }

    /// A field of /proc/PID/status in KiB (`VmRSS`, `VmSize`).
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in status"))
    }

    fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS") as f64 / 1024.0
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Connects and finishes the WebSocket handshake, with a read timeout set.
    fn websocket(&self) -> TcpStream {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(
            b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .expect("write upgrade");
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains("connection_established") {
            let n = s.read(&mut buf).expect("read handshake");
            assert!(n > 0, "closed during the handshake");
            got.extend_from_slice(&buf[..n]);
        }
        s
    }

    /// A signed publish through the API, answered 200; returns the channel's subscription count.
    fn publish(&self, channel: &str, data: &str) -> u64 {
        let body = serde_json::json!(
            {"name": "e", "channels": [channel], "data": data, "info": "subscription_count"}
        )
        .to_string();
        let md5 = hex::encode(<md5::Md5 as md5::Digest>::digest(body.as_bytes()));
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let query = format!("auth_key=app-key&auth_timestamp={ts}&auth_version=1.0&body_md5={md5}");
        let signature = {
            use hmac::{KeyInit, Mac};
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"app-secret").expect("key");
            mac.update(format!("POST\n/apps/1/events\n{query}").as_bytes());
            hex::encode(mac.finalize().into_bytes())
        };
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            s,
            "POST /apps/1/events?{query}&auth_signature={signature} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("write publish");
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 200"), "publish: {reply}");
        let json = reply.split("\r\n\r\n").nth(1).unwrap_or("");
        serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v["channels"][channel]["subscription_count"].as_u64())
            .unwrap_or(0)
    }
}

impl Drop for Crier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A masked client text frame.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x81u8];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
    out
}

fn subscribe(s: &mut TcpStream, channel: &str) {
    let msg = format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"{channel}"}}}}"#);
    s.write_all(&frame(msg.as_bytes())).expect("subscribe");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("subscription_succeeded") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn slow_unsigned_bodies_cost_no_memory() {
    let crier = Crier::start(&[]);
    let before = crier.rss_mib();
    // 300 clients each declare 1 MB and send most of it as fast as the server takes it.
    let chunk = vec![b'x'; 64 * 1024];
    let mut refused = 0;
    let mut streams = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(crier.addr).expect("connect");
        s.set_write_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let _ = s.write_all(
            b"POST /apps/1/events?auth_key=app-key&auth_signature=00 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n",
        );
        for _ in 0..15 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        streams.push(s);
    }
    for s in &mut streams {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut reply = [0u8; 12];
        if s.read_exact(&mut reply).is_ok() && reply.starts_with(b"HTTP/1.1 401") {
            refused += 1;
        }
    }
    let during = crier.rss_mib();
    // Each would hold ~1 MB if bodies were read before the signature: 300 MB in all.
    assert!(
        during - before < 40.0,
        "RSS went from {before:.1} to {during:.1} MiB"
    );
    assert!(refused >= 290, "only {refused} of 300 got their 401");
    let mut ws = crier.websocket();
    subscribe(&mut ws, "after-bodies");
    crier.publish("after-bodies", "still here");
}

#[test]
fn declared_frame_lengths_reserve_nothing() {
    let crier = Crier::start(&[]);
    let mut sockets: Vec<TcpStream> = (0..400).map(|_| crier.websocket()).collect();
    let before = crier.status_kib("VmSize") as f64 / 1024.0;
    // Each declares a 200,000-byte frame and sends only its header.
    let mut header = vec![0x81u8, 0x80 | 127];
    header.extend_from_slice(&200_000u64.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    for s in &mut sockets {
        s.write_all(&header).expect("write header");
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = crier.status_kib("VmSize") as f64 / 1024.0;
    // Reserving the declared length would take 400 x 200 KB = 78 MiB.
    assert!(
        after - before < 30.0,
        "virtual memory went from {before:.1} to {after:.1} MiB"
    );
}

#[test]
fn half_open_flood_leaves_no_lasting_memory() {
    let crier = Crier::start(&[("CRIER_MAX_HTTP_CONNECTIONS", "4000")]);
    let baseline = crier.rss_mib();
    let mut peak: f64 = 0.0;
    for _round in 0..2 {
        let mut flood = Vec::new();
        for _ in 0..3000 {
            let Ok(mut s) = TcpStream::connect(crier.addr) else {
                continue;
            };
            let _ = s.write_all(b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\n");
            flood.push(s);
        }
        std::thread::sleep(Duration::from_millis(500));
        peak = peak.max(crier.rss_mib());
        drop(flood);
    }
    // Most of what the flood cost must come back, within seconds, with the server idle.
    let given_back = |after: f64| after - baseline <= ((peak - baseline) / 4.0).min(30.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut after = crier.rss_mib();
    while !given_back(after) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        after = crier.rss_mib();
    }
    eprintln!("half-open flood: baseline {baseline:.1}, peak {peak:.1}, after {after:.1} MiB");
    assert!(
        peak - baseline > 20.0,
        "the flood should have cost something: baseline {baseline:.1}, peak {peak:.1} MiB"
    );
    assert!(
        given_back(after),
        "RSS stayed at {after:.1} MiB after the flood (baseline {baseline:.1}, peak {peak:.1})"
    );
}

#[test]
fn reader_that_never_reads_is_dropped_and_the_log_says_why() {
    let crier = Crier::start(&[
        ("CRIER_WRITE_TIMEOUT", "1"),
        ("CRIER_OUTBOX_LIMIT_BYTES", "65536"),
        ("CRIER_LOG", "info"),
    ]);
    let mut stalled = crier.websocket();
    subscribe(&mut stalled, "flooded");
    // Publish until the stalled reader's socket and then its outbox are full: it is asked to
    // close with 4100 and leaves the channel. Events are small next to the outbox, so that it
    // overflows only once the socket takes nothing (or, on a busy machine, the connection's
    // task has not run for a while).
    let data = "y".repeat(8_000);
    let deadline = Instant::now() + Duration::from_secs(30);
    while crier.publish("flooded", &data) > 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled reader was never closed"
        );
    }
    // Either the 4100 could not reach it, and after the write timeout the log says so...
    let deadline = Instant::now() + Duration::from_secs(5);
    while !crier.stderr().contains("dropped without its close 4100") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if crier.stderr().contains("dropped without its close 4100") {
        return;
    }
    // ...or it got into the socket, and the reader finds it at the end of what it reads.
    let mut all = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = stalled.read(&mut buf) {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    let close_4100 = all
        .windows(4)
        .any(|w| w[0] == 0x88 && w[2..4] == 4100u16.to_be_bytes());
    assert!(
        close_4100,
        "the reader was closed with neither a 4100 frame ({} bytes read) nor a log line; stderr: {}",
        all.len(),
        crier.stderr()
    );
    drop(stalled);
}
