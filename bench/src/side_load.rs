//! Side loads that run beside a publish scenario: subscription churn on fresh channels (each
//! subscribe and unsubscribe makes the server queue webhooks) and a webhook receiver that
//! answers at once or never.

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::ws::{self, In, WsTarget};

/// How the receiver treats a webhook request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReceiverMode {
    /// Reads the request and answers 200 at once.
    Ok,
    /// Accepts the connection, keeps it open and never answers (the server times out).
    Hang,
}

/// Parses `ok:HOST:PORT` or `hang:HOST:PORT`.
pub(crate) fn parse_receiver(spec: &str) -> Result<(ReceiverMode, SocketAddr), String> {
    let (mode, addr) = spec.split_once(':').ok_or(format!(
        "--webhook-receiver {spec}: expected ok:HOST:PORT or hang:HOST:PORT"
    ))?;
    let mode = match mode {
        "ok" => ReceiverMode::Ok,
        "hang" => ReceiverMode::Hang,
        other => {
            return Err(format!(
                "--webhook-receiver mode {other}: expected ok or hang"
            ));
        }
    };
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("--webhook-receiver address {addr}: expected HOST:PORT"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("--webhook-receiver {addr}: loopback only"));
    }
    Ok((mode, addr))
}

#[derive(Default)]
pub(crate) struct ReceiverStats {
    pub(crate) connections: Cell<u64>,
    pub(crate) requests: Cell<u64>,
}

/// Serves webhooks on `addr` until the task is dropped.
pub(crate) async fn receiver(
    mode: ReceiverMode,
    addr: SocketAddr,
    stats: Rc<ReceiverStats>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let mut held: Vec<TcpStream> = Vec::new();
    loop {
        let (stream, _) = listener.accept().await?;
        stats.connections.set(stats.connections.get() + 1);
        match mode {
            ReceiverMode::Hang => held.push(stream),
            ReceiverMode::Ok => {
                let stats = stats.clone();
                tokio::task::spawn_local(answer_requests(stream, stats));
            }
        }
    }
}

async fn answer_requests(mut stream: TcpStream, stats: Rc<ReceiverStats>) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut tmp = [0u8; 8192];
    loop {
        // One request: headers, then Content-Length bytes of body.
        let (head_end, body_len) = loop {
            if let Some(p) = ws::find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (p + 4, len);
            }
            match stream.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        while buf.len() < head_end + body_len {
            match stream.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        buf.drain(..head_end + body_len);
        stats.requests.set(stats.requests.get() + 1);
        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        if stream.write_all(reply).await.is_err() {
            return;
        }
    }
}

#[derive(Default)]
pub(crate) struct ChurnStats {
    pub(crate) subscribes: Cell<u64>,
    pub(crate) errors: Cell<u64>,
}

/// Subscribes to a fresh channel and leaves the previous one, `rate` times per second in all,
/// over `conns` connections, until `stop` is set.
pub(crate) async fn subscription_churn(
    target: WsTarget,
    src: Ipv4Addr,
    channel_prefix: String,
    rate: f64,
    conns: usize,
    stop: Rc<Cell<bool>>,
    stats: Rc<ChurnStats>,
) {
    let conns = conns.max(1);
    let period = Duration::from_secs_f64(conns as f64 / rate.max(0.001));
    let mut tasks = Vec::new();
    for i in 0..conns {
        let (target, prefix, stop, stats) = (
            target.clone(),
            channel_prefix.clone(),
            stop.clone(),
            stats.clone(),
        );
        tasks.push(tokio::task::spawn_local(async move {
            let mut ignore = |_: In<'_>| {};
            let mut conn = match ws::open(&target, src, None, &mut ignore).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("crier-bench: churn connection: {e}");
                    stats.errors.set(stats.errors.get() + 1);
                    return;
                }
            };
            let mut tick = tokio::time::interval(period);
            let mut previous: Option<String> = None;
            let mut k = 0u64;
            while !stop.get() {
                tick.tick().await;
                let channel = format!("{prefix}{i}-{k}");
                k += 1;
                let sub =
                    format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"{channel}"}}}}"#);
                if conn.send_text(sub.as_bytes()).await.is_err() {
                    stats.errors.set(stats.errors.get() + 1);
                    return;
                }
                if let Some(old) = previous.replace(channel) {
                    let unsub =
                        format!(r#"{{"event":"pusher:unsubscribe","data":{{"channel":"{old}"}}}}"#);
                    if conn.send_text(unsub.as_bytes()).await.is_err() {
                        stats.errors.set(stats.errors.get() + 1);
                        return;
                    }
                }
                stats.subscribes.set(stats.subscribes.get() + 1);
                // Replies are small; read what is there so the server never sees a stalled reader.
                if let Err(e) = conn.try_read_all(&mut ignore, 16) {
                    eprintln!("crier-bench: churn connection: {e}");
                    stats.errors.set(stats.errors.get() + 1);
                    return;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
