//! One WebSocket connection's life inside a worker: connect, wait for
//! `pusher:connection_established`, subscribe when told, then read events (or, for a stalled
//! reader, never read again). Keeps per-connection state to a few words: the frame parser
//! holds bytes only for a partial frame, and the sequence tracker allocates only on reordering.

use std::cell::Cell;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Semaphore;

use crate::sys::now_ns;
use crate::worker::{PHASE_FINISH, Shared, SubRound};
use crate::ws::{self, In, WsConn};

/// Tracker of received sequence numbers per connection: everything below `next` was seen;
/// seen numbers above it (reordering) are kept in a set, which is empty in the usual in-order
/// case, and capped (a hole older than MAX_AHEAD arrivals is given up on).
#[derive(Default)]
#[allow(clippy::box_collection)] // one pointer per connection while in order, instead of three words
struct Seen {
    next: u64,
    ahead: Option<Box<std::collections::BTreeSet<u64>>>,
}

const MAX_AHEAD: usize = 4096;

impl Seen {
    fn record(&mut self, seq: u64) -> bool {
        if seq < self.next {
            return false;
        }
        if seq == self.next {
            self.next += 1;
            if let Some(set) = self.ahead.as_mut() {
                while set.first() == Some(&self.next) {
                    set.pop_first();
                    self.next += 1;
                }
                if set.is_empty() {
                    self.ahead = None;
                }
            }
            return true;
        }
        let set = self.ahead.get_or_insert_with(Default::default);
        if !set.insert(seq) {
            return false;
        }
        if set.len() > MAX_AHEAD {
            // give up on the oldest hole
            let first = set.pop_first().unwrap();
            self.next = first + 1;
            while set.first() == Some(&self.next) {
                set.pop_first();
                self.next += 1;
            }
        }
        true
    }
}

fn set_min(c: &Cell<u64>, v: u64) {
    if c.get() == 0 || v < c.get() {
        c.set(v);
    }
}
fn set_max(c: &Cell<u64>, v: u64) {
    if v > c.get() {
        c.set(v);
    }
}
fn inc(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// Extracts (seq, sent_ns) from a bench event: the data string is `cb|SEQ|SENT_NS|...`.
pub(crate) fn parse_bench(p: &[u8]) -> Option<(u64, u64)> {
    let i = ws::find(p, b"\"cb|")? + 4;
    let mut it = p[i..].split(|b| *b == b'|');
    let num = |s: &[u8]| -> Option<u64> {
        if s.is_empty() || s.len() > 20 {
            return None;
        }
        let mut v = 0u64;
        for b in s {
            if !b.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (b - b'0') as u64;
        }
        Some(v)
    };
    let seq = num(it.next()?)?;
    let t = num(it.next()?)?;
    Some((seq, t))
}

/// Per-connection protocol state fed by incoming messages.
struct Logic {
    sh: Rc<Shared>,
    established: bool,
    subscribed: bool,
    sub_error: bool,
    closed: Option<Option<u16>>,
    count_events: bool,
    seen: Seen,
    out: Vec<u8>, // pending pong payloads as (opcode, payload) encoded later
    pong_frames: Vec<(u8, Vec<u8>)>,
}

impl Logic {
    fn new(sh: Rc<Shared>, count_events: bool) -> Self {
        Logic {
            sh,
            established: false,
            subscribed: false,
            sub_error: false,
            closed: None,
            count_events,
            seen: Seen::default(),
            out: Vec::new(),
            pong_frames: Vec::new(),
        }
    }

    fn on(&mut self, m: In<'_>) {
        match m {
            In::Text(p) => {
                if let Some((seq, sent)) = parse_bench(p) {
                    if self.count_events {
                        let c = &self.sh.c;
                        let now = now_ns();
                        inc(&c.received_total);
                        if self.seen.record(seq) {
                            inc(&c.received_unique);
                            self.sh
                                .lat_hist
                                .borrow_mut()
                                .record(now.saturating_sub(sent) / 1000);
                        } else {
                            inc(&c.dups);
                        }
                        set_min(&c.t_first_recv, now);
                        set_max(&c.t_last_recv, now);
                    }
                    return;
                }
                self.on_control(p);
            }
            In::Ping(p) => {
                inc(&self.sh.c.ws_pings);
                self.pong_frames.push((0xA, p.to_vec()));
            }
            In::Pong => {}
            In::Close(code) => self.closed = Some(code),
        }
    }

    fn on_control(&mut self, p: &[u8]) {
        let v: Value = match serde_json::from_slice(p) {
            Ok(v) => v,
            Err(_) => {
                self.sh.err("invalid JSON from server");
                return;
            }
        };
        match v["event"].as_str().unwrap_or("") {
            "pusher:connection_established" => self.established = true,
            "pusher_internal:subscription_succeeded" => self.subscribed = true,
            "pusher:ping" => {
                inc(&self.sh.c.pusher_pings);
                self.pong_frames
                    .push((0x1, br#"{"event":"pusher:pong","data":{}}"#.to_vec()));
            }
            "pusher:pong" => {}
            "pusher:error" => {
                inc(&self.sh.c.pusher_errors);
                let code = v["data"]["code"].to_string();
                self.sh.err(format!("pusher:error code {code}"));
                if !self.established {
                    self.sub_error = true;
                }
            }
            "pusher:subscription_error" => {
                self.sub_error = true;
                self.sh
                    .err(format!("pusher:subscription_error {}", v["data"]));
            }
            _ => inc(&self.sh.c.other_events),
        }
    }
}

async fn flush(ws: &mut WsConn, lg: &mut Logic) -> std::io::Result<()> {
    if lg.pong_frames.is_empty() {
        return Ok(());
    }
    let frames = std::mem::take(&mut lg.pong_frames);
    let mut out = std::mem::take(&mut lg.out);
    for (op, p) in frames {
        ws.frame(&mut out, op, &p);
    }
    use tokio::io::AsyncWriteExt;
    let r = ws.stream.write_all(&out).await;
    out.clear();
    r
}

/// Reads once; returns false when the connection is over (closed, EOF or error).
async fn pump(ws: &mut WsConn, lg: &mut Logic) -> bool {
    let r = ws.read_some(&mut |m| lg.on(m)).await;
    let alive = match r {
        Ok(false) => lg.closed.is_none(),
        Ok(true) => false,
        Err(e) => {
            lg.sh.err(format!("read: {}", e.kind()));
            false
        }
    };
    if alive && flush(ws, lg).await.is_err() {
        return false;
    }
    alive
}

fn note_close(lg: &Logic) {
    match lg.closed {
        Some(code) => lg.sh.err(format!(
            "closed by server, code {}",
            code.map(|c| c.to_string()).unwrap_or("none".into())
        )),
        None => lg.sh.err("connection ended (EOF/error)"),
    }
}

async fn open_established(
    sh: &Rc<Shared>,
    lg: &mut Logic,
    node: usize,
    src: Ipv4Addr,
    rcvbuf: Option<u32>,
) -> Result<WsConn, String> {
    let mut ws = ws::open(&sh.targets[node], src, rcvbuf, &mut |m| lg.on(m))
        .await
        .map_err(|e| {
            let s = e.to_string();
            if s.starts_with("upgrade refused") {
                s
            } else {
                format!("connect: {}", e.kind())
            }
        })?;
    while !lg.established {
        if lg.sub_error {
            return Err("pusher:error before connection_established".into());
        }
        if !pump(&mut ws, lg).await {
            return Err("closed before connection_established".into());
        }
    }
    Ok(ws)
}

fn subscribe_msg(ch: &str) -> Vec<u8> {
    format!(r#"{{"event":"pusher:subscribe","data":{{"auth":"","channel":"{ch}"}}}}"#).into_bytes()
}

/// Connects and waits for `pusher:connection_established`; counts the outcome.
async fn open_conn(
    sh: &Rc<Shared>,
    gi: usize,
    lg: &mut Logic,
    rcvbuf: Option<u32>,
    sem: &Semaphore,
) -> Option<WsConn> {
    let spec = &sh.spec;
    let permit = sem.acquire().await.ok();
    let t0 = now_ns();
    let r = tokio::time::timeout(
        Duration::from_millis(spec.connect_timeout_ms),
        open_established(sh, lg, spec.node_of(gi), spec.src_of(gi), rcvbuf),
    )
    .await;
    drop(permit);
    let ws = match r {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            sh.err(e);
            inc(&sh.c.connect_failed);
            return None;
        }
        Err(_) => {
            sh.err("connect timeout");
            inc(&sh.c.connect_failed);
            return None;
        }
    };
    let t1 = now_ns();
    sh.conn_hist.borrow_mut().record((t1 - t0) / 1000);
    set_min(&sh.c.t_conn_first, t0);
    set_max(&sh.c.t_conn_last, t1);
    inc(&sh.c.connected);
    sh.connected_gi.borrow_mut()[gi - spec.conn_start] = true;
    Some(ws)
}

/// Reads until this connection's turn in a round numbered `next` or later comes; None when the
/// connection ended first. The worker wakes a connection only when its turn comes, so a batch
/// costs the client the work of its own connections, whatever the number still waiting.
async fn wait_turn(
    sh: &Shared,
    ws: &mut WsConn,
    lg: &mut Logic,
    gi: usize,
    next: u64,
) -> Option<SubRound> {
    let turn = &sh.turn[gi - sh.spec.conn_start];
    loop {
        let owes = sh.sub_round.borrow().n >= next;
        if owes && *sh.sub_upto.borrow() > gi as u64 {
            return Some(sh.sub_round.borrow().clone());
        }
        let alive = tokio::select! {
            alive = pump(ws, lg) => alive,
            _ = turn.notified() => true,
        };
        if !alive {
            note_close(lg);
            inc(&sh.c.closed_after_open);
            if owes {
                inc(&sh.c.sub_failed);
            }
            return None;
        }
    }
}

/// Subscribes to `ch` and waits for the acknowledgement; counts the outcome. False when the
/// connection cannot go on.
async fn subscribe(sh: &Shared, ws: &mut WsConn, lg: &mut Logic, ch: &str) -> bool {
    lg.subscribed = false;
    lg.sub_error = false;
    let ts = now_ns();
    set_min(&sh.c.t_sub_first, ts);
    if ws.send_text(&subscribe_msg(ch)).await.is_err() {
        sh.err("write subscribe failed");
        inc(&sh.c.sub_failed);
        return false;
    }
    let ok = tokio::time::timeout(Duration::from_millis(sh.spec.connect_timeout_ms), async {
        while !lg.subscribed && !lg.sub_error {
            if !pump(ws, lg).await {
                return false;
            }
        }
        lg.subscribed
    })
    .await;
    match ok {
        Ok(true) => {}
        Ok(false) => {
            if lg.sub_error {
                sh.err("subscription refused");
            } else {
                note_close(lg);
                inc(&sh.c.closed_after_open);
            }
            inc(&sh.c.sub_failed);
            return false;
        }
        Err(_) => {
            sh.err("subscribe timeout");
            inc(&sh.c.sub_failed);
            return false;
        }
    }
    let te = now_ns();
    sh.sub_hist.borrow_mut().record((te - ts) / 1000);
    set_max(&sh.c.t_sub_last, te);
    if sh.spec.record_sub_times {
        sh.sub_times.borrow_mut().push(te);
    }
    inc(&sh.c.subscribed);
    true
}

/// How a connection left the subscribe rounds.
enum End {
    /// Closed, or a subscribe failed: nothing more to do.
    Gone,
    /// A stalled reader, subscribed once: it holds without reading until the finish.
    Stalled,
}

/// Subscribes in every round when the connection's turn comes, reading in between.
async fn serve_rounds(
    sh: &Rc<Shared>,
    ws: &mut WsConn,
    lg: &mut Logic,
    gi: usize,
    stalled: bool,
) -> End {
    let spec = &sh.spec;
    let channel = spec.channel_of(gi);
    let base = format!("{}{}", spec.channel_prefix, channel);
    let (mut next, mut first) = (0u64, true);
    loop {
        let Some(round) = wait_turn(sh, ws, lg, gi, next).await else {
            return End::Gone;
        };
        if !subscribe(sh, ws, lg, &format!("{base}{}", round.suffix)).await {
            return End::Gone;
        }
        if stalled {
            inc(&sh.c.stalled_subscribed);
            return End::Stalled;
        }
        if first {
            sh.c.readers_per_channel.borrow_mut()[channel] += 1;
            first = false;
        }
        next = round.n + 1;
    }
}

/// A stalled reader never reads again; at the finish, look whether the server closed it.
async fn stalled_hold(sh: &Shared, ws: &mut WsConn, lg: &mut Logic) {
    let mut phase = sh.phase.subscribe();
    while *phase.borrow_and_update() < PHASE_FINISH {
        if phase.changed().await.is_err() {
            return;
        }
    }
    // Drain what the kernel holds without waiting: did the server give up on us?
    let mut closed = false;
    for _ in 0..256 {
        match ws.try_read_all(&mut |m| lg.on(m), 64) {
            Ok(Some(false)) if lg.closed.is_none() => continue,
            Ok(None) => break,
            _ => {
                closed = true;
                break;
            }
        }
    }
    if closed {
        inc(&sh.c.stalled_closed);
    }
    inc(&sh.c.stalled_checked);
}

pub(crate) async fn conn_task(sh: Rc<Shared>, gi: usize, sem: Rc<Semaphore>) {
    let stalled = sh.spec.is_stalled(gi);
    let mut lg = Logic::new(sh.clone(), !stalled);
    let rcvbuf = if stalled && sh.spec.stalled_rcvbuf > 0 {
        Some(sh.spec.stalled_rcvbuf)
    } else {
        None
    };
    let Some(mut ws) = open_conn(&sh, gi, &mut lg, rcvbuf, &sem).await else {
        return;
    };
    let end = serve_rounds(&sh, &mut ws, &mut lg, gi, stalled).await;
    // Out of later rounds: the next round's targets leave this connection out.
    sh.retired_gi.borrow_mut().push(gi);
    if let End::Stalled = end {
        stalled_hold(&sh, &mut ws, &mut lg).await;
    }
}

async fn churn_conn(sh: Rc<Shared>, n: u64) {
    let spec = &sh.spec;
    let cs = spec.churn.as_ref().unwrap();
    let src = Ipv4Addr::from(cs.src_base + (n % cs.n_addrs as u64) as u32);
    let channel = (n as usize) % spec.channels.max(1);
    let mut lg = Logic::new(sh.clone(), false);
    let t0 = now_ns();
    let body = async {
        let node = (n as usize) % sh.targets.len().max(1);
        let mut ws = open_established(&sh, &mut lg, node, src, None).await?;
        let ch = format!("{}{}", spec.channel_prefix, channel);
        ws.send_text(&subscribe_msg(&ch))
            .await
            .map_err(|e| format!("churn write: {}", e.kind()))?;
        while !lg.subscribed {
            if lg.sub_error || !pump(&mut ws, &mut lg).await {
                return Err("churn: subscribe failed".to_string());
            }
        }
        Ok::<WsConn, String>(ws)
    };
    let r = tokio::time::timeout(Duration::from_millis(spec.connect_timeout_ms), body).await;
    let mut ws = match r {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            sh.err(e);
            inc(&sh.c.churn_failed);
            return;
        }
        Err(_) => {
            sh.err("churn: timeout");
            inc(&sh.c.churn_failed);
            return;
        }
    };
    sh.churn_conn_hist
        .borrow_mut()
        .record((now_ns() - t0) / 1000);
    inc(&sh.c.churn_ok);
    let _ = tokio::time::timeout(Duration::from_millis(cs.hold_ms), async {
        while pump(&mut ws, &mut lg).await {}
    })
    .await;
    let mut out = Vec::new();
    ws.frame(&mut out, 0x8, &1000u16.to_be_bytes());
    use tokio::io::AsyncWriteExt;
    let _ = ws.stream.write_all(&out).await;
}

pub(crate) async fn churn_loop(sh: Rc<Shared>) {
    let cs = sh.spec.churn.clone().unwrap();
    if cs.rate_per_sec <= 0.0 {
        return;
    }
    let period = Duration::from_secs_f64(1.0 / cs.rate_per_sec);
    let start = tokio::time::Instant::now();
    let mut n: u64 = 0;
    while sh.churn_on.get() {
        let due = start + period.mul_f64(n as f64);
        tokio::time::sleep_until(due).await;
        if !sh.churn_on.get() {
            break;
        }
        n += 1;
        if sh.c.churn_inflight.get() as usize >= cs.max_inflight {
            inc(&sh.c.churn_skipped);
            continue;
        }
        inc(&sh.c.churn_started);
        inc(&sh.c.churn_inflight);
        let sh2 = sh.clone();
        tokio::task::spawn_local(async move {
            churn_conn(sh2.clone(), n + sh2.spec.id as u64 * 1_000_003).await;
            sh2.c.churn_inflight.set(sh2.c.churn_inflight.get() - 1);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn seen_window() {
        let mut s = Seen::default();
        assert!(s.record(0));
        assert!(s.record(2));
        assert!(!s.record(0));
        assert!(s.record(1));
        assert!(!s.record(2));
        assert_eq!(s.next, 3);
        assert!(s.record(200));
        assert!(!s.record(200));
        for i in 3..200 {
            assert!(s.record(i));
        }
        assert_eq!(s.next, 201);
        assert!(s.ahead.is_none());
    }
    #[test]
    fn bench_parse() {
        let p =
            br#"{"event":"bench-event","channel":"bench-0","data":"cb|17|1700000000123456789|xx"}"#;
        assert_eq!(parse_bench(p), Some((17, 1700000000123456789)));
        assert_eq!(parse_bench(br#"{"event":"x"}"#), None);
    }
}
