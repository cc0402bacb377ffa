//! The worker process: holds a share of the WebSocket connections, driven by the parent over
//! stdin (one JSON command a line) and reporting on stdout (one JSON event a line).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::LocalSet;

use crate::conn::{churn_loop, conn_task};
use crate::hist::Hist;
use crate::sys::{now_ns, rss_kb};
use crate::ws::WsTarget;

pub(crate) const PHASE_CONNECT: u8 = 0;
pub(crate) const PHASE_SUBSCRIBE: u8 = 1;
pub(crate) const PHASE_FINISH: u8 = 2;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct ChurnSpec {
    pub(crate) rate_per_sec: f64,
    pub(crate) hold_ms: u64,
    /// First source address for churn sockets (rotated over `n_addrs` addresses).
    pub(crate) src_base: u32,
    pub(crate) n_addrs: u32,
    pub(crate) max_inflight: usize,
}

/// One node's WebSocket endpoint.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct NodeAddr {
    pub(crate) addr: SocketAddr,
    pub(crate) host_header: String,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct WorkerSpec {
    pub(crate) id: usize,
    /// The nodes connections go to (one for a single server); see `node_of`.
    pub(crate) nodes: Vec<NodeAddr>,
    pub(crate) path: String,
    /// Global index of this worker's first connection, and how many it holds.
    pub(crate) conn_start: usize,
    pub(crate) conn_count: usize,
    pub(crate) total_conns: usize,
    pub(crate) stalled_count: usize,
    pub(crate) stalled_rcvbuf: u32,
    pub(crate) channels: usize,
    pub(crate) channel_prefix: String,
    pub(crate) src_base: u32,
    pub(crate) conns_per_addr: usize,
    pub(crate) connect_concurrency: usize,
    pub(crate) connect_timeout_ms: u64,
    pub(crate) record_sub_times: bool,
    pub(crate) churn: Option<ChurnSpec>,
    pub(crate) max_secs: u64,
}

impl WorkerSpec {
    /// Stalled sockets are spread evenly over the global index range.
    pub(crate) fn is_stalled(&self, gi: usize) -> bool {
        let (k, n) = (self.stalled_count, self.total_conns.max(1));
        k > 0 && ((gi + 1) * k / n) > (gi * k / n)
    }
    pub(crate) fn channel_of(&self, gi: usize) -> usize {
        gi % self.channels.max(1)
    }
    /// Connection `gi` is the k-th subscriber of its channel c (gi = c + k * channels) and goes
    /// to node (c + k) % nodes: every channel's subscribers go round-robin over the nodes,
    /// whatever the number of channels, and so do the connections overall.
    pub(crate) fn node_of(&self, gi: usize) -> usize {
        let ch = self.channels.max(1);
        (gi % ch + gi / ch) % self.nodes.len().max(1)
    }
    pub(crate) fn src_of(&self, gi: usize) -> Ipv4Addr {
        Ipv4Addr::from(self.src_base + (gi / self.conns_per_addr.max(1)) as u32)
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) connected: Cell<u64>,
    pub(crate) connect_failed: Cell<u64>,
    pub(crate) subscribed: Cell<u64>,
    pub(crate) sub_failed: Cell<u64>,
    pub(crate) readers_per_channel: RefCell<Vec<u64>>,
    pub(crate) stalled_subscribed: Cell<u64>,
    pub(crate) stalled_closed: Cell<u64>,
    pub(crate) stalled_checked: Cell<u64>,
    pub(crate) closed_after_open: Cell<u64>,
    pub(crate) received_unique: Cell<u64>,
    pub(crate) received_total: Cell<u64>,
    pub(crate) dups: Cell<u64>,
    pub(crate) t_first_recv: Cell<u64>,
    pub(crate) t_last_recv: Cell<u64>,
    pub(crate) t_conn_first: Cell<u64>,
    pub(crate) t_conn_last: Cell<u64>,
    pub(crate) t_sub_first: Cell<u64>,
    pub(crate) t_sub_last: Cell<u64>,
    pub(crate) pusher_pings: Cell<u64>,
    pub(crate) ws_pings: Cell<u64>,
    pub(crate) other_events: Cell<u64>,
    pub(crate) pusher_errors: Cell<u64>,
    // churn
    pub(crate) churn_started: Cell<u64>,
    pub(crate) churn_ok: Cell<u64>,
    pub(crate) churn_failed: Cell<u64>,
    pub(crate) churn_skipped: Cell<u64>,
    pub(crate) churn_inflight: Cell<u64>,
}

/// The subscribe round the parent has started: its number, and the suffix appended to every
/// channel name in it (empty in round 0 unless the parent gives one).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct SubRound {
    pub(crate) n: u64,
    pub(crate) suffix: String,
}

pub(crate) struct Shared {
    pub(crate) spec: WorkerSpec,
    /// One target per node, in the order of `spec.nodes`.
    pub(crate) targets: Vec<WsTarget>,
    pub(crate) phase: watch::Sender<u8>,
    pub(crate) sub_upto: watch::Sender<u64>,
    pub(crate) sub_round: watch::Sender<SubRound>,
    pub(crate) connected_gi: RefCell<Vec<bool>>,
    /// Connections done with subscribing (closed, failed or stalled), taken out of
    /// `connected_gi` when the next round starts.
    pub(crate) retired_gi: RefCell<Vec<usize>>,
    /// One wake-up per connection, given when its turn to subscribe comes: a batch wakes its
    /// own connections only, not every connection still waiting.
    pub(crate) turn: Vec<Notify>,
    /// Connections below this global index have been told their turn in the current round.
    pub(crate) told_upto: Cell<u64>,
    pub(crate) c: Counters,
    pub(crate) errors: RefCell<BTreeMap<String, u64>>,
    pub(crate) conn_hist: RefCell<Hist>,
    pub(crate) sub_hist: RefCell<Hist>,
    pub(crate) lat_hist: RefCell<Hist>,
    pub(crate) churn_conn_hist: RefCell<Hist>,
    pub(crate) sub_times: RefCell<Vec<u64>>,
    pub(crate) churn_on: Cell<bool>,
}

impl Shared {
    pub(crate) fn err(&self, what: impl Into<String>) {
        let mut m = self.errors.borrow_mut();
        let k: String = what.into();
        if m.len() < 50 || m.contains_key(&k) {
            *m.entry(k).or_insert(0) += 1;
        }
    }
}

fn emit(v: Value) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{v}");
    let _ = o.flush();
}

fn errors_json(sh: &Shared) -> Value {
    json!(sh.errors.borrow().clone())
}

async fn wait_until(deadline_ms: u64, mut done: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + Duration::from_millis(deadline_ms);
    while !done() && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A new subscribe round on the same connections: per-round counts start from zero, and the
/// connections that are gone no longer count towards a batch's target.
fn start_round(sh: &Shared, round: SubRound) {
    let c = &sh.c;
    for cell in [&c.subscribed, &c.sub_failed, &c.t_sub_first, &c.t_sub_last] {
        cell.set(0);
    }
    *sh.sub_hist.borrow_mut() = Hist::new();
    sh.sub_times.borrow_mut().clear();
    let mut connected = sh.connected_gi.borrow_mut();
    for gi in sh.retired_gi.borrow().iter() {
        connected[gi - sh.spec.conn_start] = false;
    }
    sh.sub_round.send_replace(round);
    sh.told_upto.set(0);
}

/// Wakes the connections whose turn the new `upto` brings (each once per round).
fn tell_turns(sh: &Shared, upto: u64) {
    let start = sh.spec.conn_start as u64;
    let from = sh.told_upto.get().max(start);
    let to = upto.min(start + sh.spec.conn_count as u64);
    for gi in from..to {
        sh.turn[(gi - start) as usize].notify_one();
    }
    sh.told_upto.set(to.max(from));
}

async fn worker_main(spec: WorkerSpec) {
    let targets = spec
        .nodes
        .iter()
        .map(|n| WsTarget {
            addr: n.addr,
            host_header: n.host_header.clone(),
            path: spec.path.clone(),
        })
        .collect();
    let (tx, _rx) = watch::channel(PHASE_CONNECT);
    let (utx, _urx) = watch::channel(0u64);
    let (rtx, _rrx) = watch::channel(SubRound::default());
    let sh = Rc::new(Shared {
        spec: spec.clone(),
        targets,
        phase: tx,
        sub_upto: utx,
        sub_round: rtx,
        connected_gi: RefCell::new(vec![false; spec.conn_count]),
        retired_gi: RefCell::new(Vec::new()),
        turn: (0..spec.conn_count).map(|_| Notify::new()).collect(),
        told_upto: Cell::new(0),
        c: Counters::default(),
        errors: RefCell::new(BTreeMap::new()),
        conn_hist: RefCell::new(Hist::new()),
        sub_hist: RefCell::new(Hist::new()),
        lat_hist: RefCell::new(Hist::new()),
        churn_conn_hist: RefCell::new(Hist::new()),
        sub_times: RefCell::new(Vec::new()),
        churn_on: Cell::new(false),
    });
    *sh.c.readers_per_channel.borrow_mut() = vec![0; spec.channels.max(1)];
    let rss0 = rss_kb("self").unwrap_or(0);
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let sem = Rc::new(Semaphore::new(spec.connect_concurrency.max(1)));
    let n = spec.conn_count as u64;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            _ => return, // parent gone
        };
        let cmd: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let timeout_ms = cmd["timeout_ms"].as_u64().unwrap_or(60_000);
        match cmd["cmd"].as_str().unwrap_or("") {
            "connect" => {
                for gi in spec.conn_start..spec.conn_start + spec.conn_count {
                    tokio::task::spawn_local(conn_task(sh.clone(), gi, sem.clone()));
                }
                let c = &sh.c;
                wait_until(timeout_ms, || {
                    c.connected.get() + c.connect_failed.get() >= n
                })
                .await;
                emit(
                    json!({"ev": "connected", "ok": c.connected.get(), "failed": c.connect_failed.get(),
                    "t_first": c.t_conn_first.get(), "t_last": c.t_conn_last.get(),
                    "hist": sh.conn_hist.borrow().to_json(), "errors": errors_json(&sh),
                    "rss_kb": rss_kb("self").unwrap_or(0), "rss0_kb": rss0}),
                );
            }
            "subscribe" => {
                // Subscribe every connection whose global index is below `upto` (default: all).
                let upto = cmd["upto"].as_u64().unwrap_or(u64::MAX);
                let t_cmd = now_ns();
                let round = SubRound {
                    n: cmd["round"].as_u64().unwrap_or(0),
                    suffix: cmd["channel_suffix"].as_str().unwrap_or("").to_string(),
                };
                if *sh.sub_round.borrow() != round {
                    start_round(&sh, round);
                }
                let target = sh
                    .connected_gi
                    .borrow()
                    .iter()
                    .enumerate()
                    .filter(|(i, ok)| **ok && ((spec.conn_start + i) as u64) < upto)
                    .count() as u64;
                sh.phase.send_replace(PHASE_SUBSCRIBE);
                sh.sub_upto.send_replace(upto);
                tell_turns(&sh, upto);
                let c = &sh.c;
                wait_until(timeout_ms, || {
                    c.subscribed.get() + c.sub_failed.get() >= target
                })
                .await;
                let mut times = std::mem::take(&mut *sh.sub_times.borrow_mut());
                times.sort_unstable();
                emit(
                    json!({"ev": "subscribed", "ok": c.subscribed.get(), "failed": c.sub_failed.get(),
                    "t_cmd": t_cmd, "t_first": c.t_sub_first.get(), "t_last": c.t_sub_last.get(),
                    "stalled": c.stalled_subscribed.get(),
                    "hist": sh.sub_hist.borrow().to_json(), "times": times, "errors": errors_json(&sh),
                    "rss_kb": rss_kb("self").unwrap_or(0), "cpu_ticks": crate::sys::cpu_ticks("self").unwrap_or(0)}),
                );
            }
            "churn_start" => {
                if spec.churn.is_some() && !sh.churn_on.get() {
                    sh.churn_on.set(true);
                    tokio::task::spawn_local(churn_loop(sh.clone()));
                }
                emit(json!({"ev": "churn_started"}));
            }
            "churn_stop" => {
                sh.churn_on.set(false);
                let c = &sh.c;
                wait_until(timeout_ms, || c.churn_inflight.get() == 0).await;
                emit(
                    json!({"ev": "churn_stopped", "started": c.churn_started.get(), "ok": c.churn_ok.get(),
                    "failed": c.churn_failed.get(), "skipped": c.churn_skipped.get(),
                    "inflight": c.churn_inflight.get(), "hist": sh.churn_conn_hist.borrow().to_json()}),
                );
            }
            "stats" => {
                let c = &sh.c;
                emit(
                    json!({"ev": "stats", "received": c.received_unique.get(), "closed": c.closed_after_open.get()}),
                );
            }
            "finish" => {
                let published: Vec<u64> = cmd["published"]
                    .as_array()
                    .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(0)).collect())
                    .unwrap_or_default();
                let expected: u64 =
                    sh.c.readers_per_channel
                        .borrow()
                        .iter()
                        .enumerate()
                        .map(|(ch, r)| r * published.get(ch).copied().unwrap_or(0))
                        .sum();
                let c = &sh.c;
                wait_until(timeout_ms, || c.received_unique.get() >= expected).await;
                let t_done = now_ns();
                let cpu_ticks = crate::sys::cpu_ticks("self").unwrap_or(0);
                sh.phase.send_replace(PHASE_FINISH);
                wait_until(5_000, || {
                    c.stalled_checked.get() >= c.stalled_subscribed.get()
                })
                .await;
                emit(
                    json!({"ev": "result", "expected": expected, "received": c.received_unique.get(),
                    "received_total": c.received_total.get(), "dups": c.dups.get(),
                    "t_first_recv": c.t_first_recv.get(), "t_last_recv": c.t_last_recv.get(), "t_done": t_done,
                    "closed": c.closed_after_open.get(), "stalled": c.stalled_subscribed.get(),
                    "stalled_closed": c.stalled_closed.get(),
                    "pusher_pings": c.pusher_pings.get(), "ws_pings": c.ws_pings.get(),
                    "pusher_errors": c.pusher_errors.get(), "other_events": c.other_events.get(),
                    "lat": sh.lat_hist.borrow().to_json(), "errors": errors_json(&sh),
                    "rss_kb": rss_kb("self").unwrap_or(0), "cpu_ticks": cpu_ticks}),
                );
            }
            "exit" => return,
            _ => {}
        }
    }
}

pub(crate) fn run(spec_json: &str) {
    let spec: WorkerSpec = serde_json::from_str(spec_json).expect("worker spec");
    let max = spec.max_secs;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(max));
        eprintln!("crier-bench worker: time limit reached, exiting");
        std::process::exit(3);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = LocalSet::new();
    local.block_on(&rt, worker_main(spec));
    std::process::exit(0);
}
