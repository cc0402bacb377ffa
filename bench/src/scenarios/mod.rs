//! The scenarios: each prints a human summary and, as its last line, one JSON object.
//! This module holds what they share (target, worker plan, connect and subscribe phases, CPU
//! figures); each scenario lives in its own file.

mod cluster;
mod drain;
mod fanout;
mod idle;
mod publish;
mod storm;

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::coord::{self, Workers};
use crate::floor::round3;
use crate::http::Api;
use crate::publisher::{self, PubCfg, PubResult};
use crate::sys::{CpuSnap, cpu_delta, rss_kb};
use crate::worker::{ChurnSpec, NodeAddr, WorkerSpec};
use crate::ws::WsTarget;
use crate::{Cli, Cmd, Global};

type Res<T> = Result<T, String>;

pub(crate) struct Ctx {
    pub(crate) g: Global,
    /// The WebSocket endpoints: --url, or every node of --nodes.
    pub(crate) nodes: Vec<WsTarget>,
    /// Where publishes go, round-robin: --api-url, or every node's host and port.
    pub(crate) apis: Vec<Api>,
    /// Server pids, in the order of the nodes.
    pub(crate) pids: Vec<String>,
    pub(crate) redis_pid: Option<String>,
    pub(crate) redis: Option<SocketAddr>,
    /// First source address of this run's connections.
    pub(crate) src_base: Ipv4Addr,
}

impl Ctx {
    /// What the run is pointed at, for the first human line.
    pub(crate) fn target(&self) -> String {
        if self.g.nodes.is_empty() {
            self.g.url.clone()
        } else {
            format!("{} node(s) {}", self.nodes.len(), self.g.nodes.join(","))
        }
    }

    /// CPU of the servers, of Redis and of the machine, and Redis's counters, now.
    pub(crate) fn snap(&self) -> CpuSnap {
        let pids: Vec<&str> = self.pids.iter().map(|p| p.as_str()).collect();
        let mut s = crate::sys::snap(&pids);
        s.redis = self.redis_pid.as_deref().map(crate::sys::proc_cpu);
        s.redis_info = self.redis.and_then(|a| match crate::redis::info_stats(a) {
            Ok(st) => Some(st),
            Err(e) => {
                eprintln!("crier-bench: redis INFO stats: {e}");
                None
            }
        });
        s
    }
}

/// Output collector: human lines go to stdout as they come; the JSON goes last.
pub(crate) struct Out {
    pub(crate) json: Map<String, Value>,
}

impl Out {
    fn new(scenario: &str) -> Self {
        let mut json = Map::new();
        json.insert("scenario".into(), json!(scenario));
        Out { json }
    }
    pub(crate) fn line(&self, s: impl AsRef<str>) {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{}", s.as_ref());
    }
    pub(crate) fn set(&mut self, k: &str, v: Value) {
        self.json.insert(k.into(), v);
    }
}

fn parse_hostport(url: &str, schemes: &[&str]) -> Res<(String, u16, SocketAddr)> {
    let (scheme, rest) = url.split_once("://").ok_or(format!("bad URL {url}"))?;
    if !schemes.contains(&scheme) {
        return Err(format!("URL scheme must be one of {schemes:?}: {url}"));
    }
    let hostport = rest.split('/').next().unwrap_or("");
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse::<u16>().map_err(|_| format!("bad port in {url}"))?,
        ),
        None => (hostport.to_string(), 80),
    };
    let addr = (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .find(|a| a.is_ipv4())
        .ok_or(format!("{host} has no IPv4 address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "refusing non-loopback target {addr}: crier-bench only loads loopback servers"
        ));
    }
    Ok((host, port, addr))
}

fn ctx(g: &Global) -> Res<Ctx> {
    let urls: Vec<String> = if g.nodes.is_empty() {
        vec![g.url.clone()]
    } else {
        g.nodes
            .iter()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect()
    };
    if urls.is_empty() {
        return Err("--nodes names no URL".into());
    }
    let mut nodes = Vec::new();
    let mut api_targets = Vec::new();
    for u in &urls {
        let (host, port, addr) = parse_hostport(u, &["ws"])?;
        nodes.push(WsTarget {
            addr,
            host_header: format!("{host}:{port}"),
            path: format!("/app/{}?protocol=7&client=crier-bench&version=0.1", g.key),
        });
        api_targets.push((host, port, addr));
    }
    if !g.api_url.is_empty() {
        api_targets = g
            .api_url
            .iter()
            .filter(|u| !u.trim().is_empty())
            .map(|u| parse_hostport(u.trim(), &["http"]))
            .collect::<Res<_>>()?;
    }
    let apis = api_targets
        .into_iter()
        .map(|(ahost, aport, aaddr)| Api {
            addr: aaddr,
            host_header: format!("{ahost}:{aport}"),
            app_id: g.app_id.clone(),
            key: g.key.clone(),
            secret: g.secret.clone(),
            mac: std::cell::OnceCell::new(),
        })
        .collect();
    let redis = match &g.redis_url {
        Some(u) => Some(crate::redis::parse_url(u)?),
        None => None,
    };
    let src_base = match g.src_base {
        Some(a) if a.octets()[0] == 127 => a,
        Some(_) => return Err("--src-base must be a 127.x.x.x address".into()),
        None => {
            // 127.16.0.1 .. 127.239.255.1: a new /24 block every 5 s (and per process).
            let blocks = 224 * 256u64;
            let b = (crate::sys::unix_secs() / 5 + std::process::id() as u64 * 7) % blocks;
            Ipv4Addr::new(127, 16 + (b / 256) as u8, (b % 256) as u8, 1)
        }
    };
    Ok(Ctx {
        g: g.clone(),
        nodes,
        apis,
        pids: g.server_pid.iter().map(|p| p.to_string()).collect(),
        redis_pid: g.redis_pid.map(|p| p.to_string()),
        redis,
        src_base,
    })
}

pub(crate) fn run(cli: Cli) -> i32 {
    let scenario = match &cli.cmd {
        Cmd::Idle(_) => "idle",
        Cmd::Fanout(_) => "fanout",
        Cmd::SubscribeStorm(_) => "subscribe-storm",
        Cmd::Publish(_) => "publish",
        Cmd::Churn(_) => "churn",
        Cmd::Floor(_) => "floor",
        Cmd::Cluster(_) => "cluster",
        Cmd::Drain(_) => "drain",
        Cmd::Compare(_) | Cmd::Worker { .. } => unreachable!(),
    };
    let mut out = Out::new(scenario);
    let c = match ctx(&cli.g) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("crier-bench: {e}");
            out.set("error", json!(e));
            println!("{}", Value::Object(out.json));
            return 2;
        }
    };
    // Other work on the machine skews every figure here: measure it for a moment first.
    let (b0, t0) = crate::sys::machine_jiffies();
    std::thread::sleep(Duration::from_millis(700));
    let (b1, t1) = crate::sys::machine_jiffies();
    let bg = if t1 > t0 {
        100.0 * (b1 - b0) as f64 / (t1 - t0) as f64
    } else {
        0.0
    };
    out.line(format!(
        "machine: {} CPUs; {bg:.0}% busy just before the run{}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        if bg > 10.0 {
            " (WARNING: other load present, figures will be skewed)"
        } else {
            ""
        }
    ));
    out.set("background_busy_pct", json!(bg.round()));
    out.set("src_base", json!(c.src_base.to_string()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let limit = Duration::from_secs(cli.g.timeout_secs);
    let r = local.block_on(&rt, async {
        let fut = async {
            match &cli.cmd {
                Cmd::Idle(a) => idle::idle(&c, a, &mut out).await,
                Cmd::Fanout(a) => fanout::fanout(&c, a, None, &mut out).await,
                Cmd::SubscribeStorm(a) => storm::storm(&c, a, &mut out).await,
                Cmd::Publish(a) => publish::publish(&c, a, &mut out).await,
                Cmd::Churn(a) => fanout::churn(&c, a, &mut out).await,
                Cmd::Floor(a) => crate::floor::run(a, &mut out),
                Cmd::Cluster(a) => cluster::cluster(&c, a, &mut out).await,
                Cmd::Drain(a) => drain::drain(&c, a, &mut out).await,
                Cmd::Compare(_) | Cmd::Worker { .. } => unreachable!(),
            }
        };
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "time limit of {} s reached (--timeout-secs)",
                cli.g.timeout_secs
            )),
        }
    });
    // Workers were dropped with the future (kill_on_drop).
    let code = match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("crier-bench: {e}");
            out.set("error", json!(e));
            1
        }
    };
    out.set("ok", json!(code == 0));
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{}", Value::Object(out.json));
    code
}

struct Plan {
    total: usize,
    stalled: usize,
    channels: usize,
    record_sub_times: bool,
    churn: Option<ChurnSpec>,
    reserve_fds: usize,
}

fn plan(c: &Ctx, p: &Plan) -> Vec<WorkerSpec> {
    let cap = c.g.per_worker.saturating_sub(p.reserve_fds).max(1);
    let w = if c.g.workers > 0 {
        c.g.workers
    } else {
        p.total.div_ceil(cap).max(1)
    };
    (0..w)
        .map(|i| {
            let start = i * p.total / w;
            let end = (i + 1) * p.total / w;
            let churn = p.churn.clone().map(|mut cs| {
                // The /24 block i+1 after the stable connections' block, wrapping inside 127/8.
                let base = u32::from(c.src_base) & 0xffff_ff00;
                cs.src_base =
                    0x7f00_0000 | (base.wrapping_add(((i as u32) + 1) << 8) & 0x00ff_ff00) | 1;
                cs.n_addrs = 250;
                cs
            });
            WorkerSpec {
                id: i,
                nodes: c
                    .nodes
                    .iter()
                    .map(|n| NodeAddr {
                        addr: n.addr,
                        host_header: n.host_header.clone(),
                    })
                    .collect(),
                path: c.nodes[0].path.clone(),
                conn_start: start,
                conn_count: end - start,
                total_conns: p.total,
                stalled_count: p.stalled,
                stalled_rcvbuf: 0,
                channels: p.channels.max(1),
                channel_prefix: c.g.channel_prefix.clone(),
                src_base: u32::from(c.src_base),
                conns_per_addr: c.g.conns_per_addr,
                connect_concurrency: c.g.connect_concurrency,
                connect_timeout_ms: c.g.connect_timeout_ms,
                record_sub_times: p.record_sub_times,
                churn,
                max_secs: c.g.timeout_secs + 60,
            }
        })
        .collect()
}

fn secs(a: u64, b: u64) -> f64 {
    if b > a { (b - a) as f64 / 1e9 } else { 0.0 }
}
fn rate(n: u64, s: f64) -> f64 {
    if s > 0.0 { (n as f64 / s).round() } else { 0.0 }
}

fn errors_line(out: &Out, e: &std::collections::BTreeMap<String, u64>) {
    if !e.is_empty() {
        out.line(format!(
            "  errors: {}",
            e.iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
}

fn listen_overflows() -> u64 {
    // TcpExt ListenOverflows: SYNs dropped because a listener's accept queue was full.
    let s = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = s.lines();
    while let (Some(h), Some(v)) = (lines.next(), lines.next()) {
        if h.starts_with("TcpExt:") {
            let i = h.split_whitespace().position(|k| k == "ListenOverflows");
            if let Some(i) = i {
                return v
                    .split_whitespace()
                    .nth(i)
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0);
            }
        }
    }
    0
}

fn budget(c: &Ctx, total: usize) -> u64 {
    c.g.connect_timeout_ms + (total as u64 / 100) * 1000 // generous: 100 conns/s at worst
}

/// Connect phase on every worker; returns the number connected.
async fn connect_phase(c: &Ctx, w: &mut Workers, total: usize, out: &mut Out) -> Res<u64> {
    let lo0 = listen_overflows();
    let rs = w
        .cmd(json!({"cmd": "connect"}), "connected", budget(c, total))
        .await
        .map_err(|e| e.to_string())?;
    let overflows = listen_overflows().saturating_sub(lo0);
    let ok = coord::sum(&rs, "ok");
    let failed = coord::sum(&rs, "failed");
    let s = secs(coord::min_nz(&rs, "t_first"), coord::max(&rs, "t_last"));
    let h = coord::hist(&rs, "hist");
    let client_rss: u64 = coord::sum(&rs, "rss_kb") - coord::sum(&rs, "rss0_kb");
    out.line(format!(
        "connect:   {ok}/{total} connected ({failed} failed) in {s:.2} s = {:.0} conn/s; handshake {}",
        rate(ok, s),
        h.line_ms()
    ));
    if overflows > 0 {
        out.line(format!(
            "  {overflows} SYN(s) dropped by a full accept queue (ListenOverflows; each costs a 1 s retransmit): the server's listen backlog is smaller than --connect-concurrency x workers"
        ));
    }
    errors_line(out, &coord::errors(&rs));
    out.set(
        "connect",
        json!({"ok": ok, "failed": failed, "secs": round3(s), "per_sec": rate(ok, s), "latency": h.summary_ms(),
               "client_rss_kb_per_conn": if ok > 0 { round3(client_rss as f64 / ok as f64) } else { 0.0 },
               "workers": w.len(), "listen_overflows": overflows, "errors": coord::errors(&rs)}),
    );
    if ok == 0 {
        return Err("no connection could be opened".into());
    }
    Ok(ok)
}

/// Connect phase then subscribe phase on every worker; returns (connected, subscribed, sub reports).
async fn connect_subscribe(
    c: &Ctx,
    w: &mut Workers,
    total: usize,
    out: &mut Out,
) -> Res<(u64, u64, Vec<Value>)> {
    let ok = connect_phase(c, w, total, out).await?;
    let rs2 = w
        .cmd(json!({"cmd": "subscribe"}), "subscribed", budget(c, total))
        .await
        .map_err(|e| e.to_string())?;
    let sok = coord::sum(&rs2, "ok");
    let sfailed = coord::sum(&rs2, "failed");
    let s2 = secs(coord::min_nz(&rs2, "t_first"), coord::max(&rs2, "t_last"));
    let h2 = coord::hist(&rs2, "hist");
    out.line(format!(
        "subscribe: {sok}/{ok} subscribed ({sfailed} failed) in {s2:.2} s = {:.0} sub/s; subscribe {}",
        rate(sok, s2),
        h2.line_ms()
    ));
    errors_line(out, &coord::errors(&rs2));
    out.set(
        "subscribe",
        json!({"ok": sok, "failed": sfailed, "secs": round3(s2), "per_sec": rate(sok, s2), "latency": h2.summary_ms(),
               "errors": coord::errors(&rs2)}),
    );
    Ok((ok, sok, rs2))
}

/// VmRSS summed over the server processes, KiB.
fn rss(c: &Ctx) -> Option<u64> {
    if c.pids.is_empty() {
        return None;
    }
    c.pids.iter().map(|p| rss_kb(p)).sum()
}

/// CPU figures between two snapshots; `worker_secs` is the CPU the worker processes used.
#[allow(clippy::too_many_arguments)]
fn cpu_fields(
    c: &Ctx,
    a: &CpuSnap,
    b: &CpuSnap,
    per: u64,
    unit: &str,
    out: &mut Out,
    floor_us: Option<f64>,
    worker_secs: f64,
) {
    let (stat, sched, machine) = cpu_delta(a, b);
    let wall = secs(a.wall_ns, b.wall_ns);
    let n = per.max(1) as f64;
    let client = b.own_ticks.saturating_sub(a.own_ticks) as f64 / 100.0 + worker_secs;
    let mut j = json!({"wall_secs": round3(wall), "machine_busy_secs": round3(machine),
                       format!("machine_cpu_us_per_{unit}"): round3(machine * 1e6 / n),
                       "client_cpu_secs": round3(client),
                       format!("client_cpu_us_per_{unit}"): round3(client * 1e6 / n)});
    out.line(format!(
        "client CPU: {client:.2} s = {:.2} µs per {unit} (bench processes; they share the 2 cores with the server)",
        client * 1e6 / n
    ));
    if !c.pids.is_empty() {
        let us = stat * 1e6 / n;
        let us_s = sched * 1e6 / n;
        j["server_cpu_secs"] = json!(round3(stat));
        j["server_cpu_secs_schedstat"] = json!(round3(sched));
        j[format!("server_cpu_us_per_{unit}")] = json!(round3(us));
        j[format!("server_cpu_us_per_{unit}_schedstat")] = json!(round3(us_s));
        let mut line = format!(
            "server CPU{}: {stat:.2} s (stat; {sched:.3} s schedstat) over {wall:.2} s = {us:.2} µs per {unit} ({us_s:.2} schedstat); whole machine {:.2} µs per {unit}",
            if c.pids.len() > 1 {
                format!(" (sum of {} nodes)", c.pids.len())
            } else {
                String::new()
            },
            machine * 1e6 / n
        );
        let writes = b.write_syscalls.saturating_sub(a.write_syscalls);
        j["server_write_syscalls"] = json!(writes);
        if writes > 0 {
            // How many frames leave per write: above 1 when queued frames are coalesced.
            let per_write = n / writes as f64;
            let units = match unit.strip_suffix('y') {
                Some(stem) => format!("{stem}ies"),
                None => format!("{unit}s"),
            };
            j[format!("{units}_per_server_write")] = json!(round3(per_write));
            line.push_str(&format!(
                "; {writes} write calls = {per_write:.2} {units} per write"
            ));
        }
        if let Some(f) = floor_us {
            let ratio = us_s / f;
            j["floor_us"] = json!(f);
            j["ratio_to_floor"] = json!(round3(ratio));
            line.push_str(&format!("; {ratio:.2}x the floor of {f} µs"));
        }
        out.line(line);
        if c.pids.len() > 1 {
            // Node by node (schedstat seconds), in the order of --server-pid.
            let per: Vec<f64> = a
                .per_pid
                .iter()
                .zip(&b.per_pid)
                .map(|(x, y)| y.1.saturating_sub(x.1) as f64 / 1e9)
                .collect();
            out.line(format!(
                "  per node (schedstat s, order of --server-pid): {}",
                per.iter()
                    .enumerate()
                    .map(|(i, v)| format!("#{i} {v:.3}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            j["server_cpu_secs_per_node_schedstat"] =
                json!(per.iter().map(|v| round3(*v)).collect::<Vec<_>>());
        }
    } else {
        out.line(format!(
            "machine CPU: {:.2} µs per {unit} (no --server-pid for the server's own)",
            machine * 1e6 / n
        ));
    }
    if let (Some(x), Some(y)) = (a.redis, b.redis) {
        let (rt, rs) = (
            y.0.saturating_sub(x.0) as f64 / 100.0,
            y.1.saturating_sub(x.1) as f64 / 1e9,
        );
        out.line(format!(
            "redis CPU: {rt:.2} s (stat; {rs:.3} s schedstat) = {:.2} µs per {unit}",
            rs * 1e6 / n
        ));
        j["redis_cpu_secs"] = json!(round3(rt));
        j["redis_cpu_secs_schedstat"] = json!(round3(rs));
        j[format!("redis_cpu_us_per_{unit}")] = json!(round3(rs * 1e6 / n));
    }
    if let Some((out_b, in_b, cmds)) = redis_traffic(a, b) {
        out.line(format!(
            "redis traffic: {out_b} bytes out ({:.1} per {unit}), {in_b} bytes in ({:.1} per {unit}), {cmds} commands",
            out_b as f64 / n,
            in_b as f64 / n
        ));
        j["redis_output_bytes"] = json!(out_b);
        j["redis_input_bytes"] = json!(in_b);
        j["redis_commands"] = json!(cmds);
        j[format!("redis_output_bytes_per_{unit}")] = json!(round3(out_b as f64 / n));
        j[format!("redis_input_bytes_per_{unit}")] = json!(round3(in_b as f64 / n));
    }
    out.set("cpu", j);
}

/// Redis bytes out, bytes in and commands between two snapshots, without the bench's own
/// INFO exchange (the first reply is counted out by the second read, and one INFO command
/// and its request on each side).
fn redis_traffic(a: &CpuSnap, b: &CpuSnap) -> Option<(u64, u64, u64)> {
    let (x, y) = (a.redis_info.as_ref()?, b.redis_info.as_ref()?);
    let req = crate::redis::encode(&["INFO", "stats"]).len() as u64;
    Some((
        y.net_output_bytes
            .saturating_sub(x.net_output_bytes)
            .saturating_sub(x.reply_bytes),
        y.net_input_bytes
            .saturating_sub(x.net_input_bytes)
            .saturating_sub(req),
        y.commands.saturating_sub(x.commands).saturating_sub(1),
    ))
}
