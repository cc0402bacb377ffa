//! crier-bench: a load generator for Pusher-Channels-compatible WebSocket servers.
//!
//! It speaks the Pusher protocol v7 and the signed HTTP API like any client and imports
//! nothing from the server it measures. See BENCHMARKS.md for the method.

mod compare;
mod conn;
mod coord;
mod floor;
mod hist;
mod http;
mod publisher;
mod redis;
mod scenarios;
mod side_load;
mod sys;
mod worker;
mod ws;

use std::net::Ipv4Addr;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "crier-bench",
    version,
    about = "Load generator for Pusher-compatible servers (loopback only)"
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) g: Global,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct Global {
    /// WebSocket base URL of the server (loopback only).
    #[arg(
        long,
        global = true,
        env = "CRIER_BENCH_URL",
        default_value = "ws://127.0.0.1:6001"
    )]
    pub(crate) url: String,
    /// Several nodes of one cluster, comma-separated WebSocket base URLs (replaces --url):
    /// connections go round-robin over them (each channel's subscribers in turn over the
    /// nodes), and so do HTTP API publishes unless --api-url says otherwise.
    #[arg(long, global = true, env = "CRIER_BENCH_NODES", value_delimiter = ',')]
    pub(crate) nodes: Vec<String>,
    /// HTTP API base URL(s), comma-separated; publishes go round-robin over them. Default: the
    /// WebSocket host and port of every node.
    #[arg(
        long,
        global = true,
        env = "CRIER_BENCH_API_URL",
        value_delimiter = ','
    )]
    pub(crate) api_url: Vec<String>,
    #[arg(long, global = true, env = "CRIER_BENCH_APP_ID", default_value = "1")]
    pub(crate) app_id: String,
    #[arg(
        long,
        global = true,
        env = "CRIER_BENCH_KEY",
        default_value = "app-key"
    )]
    pub(crate) key: String,
    #[arg(
        long,
        global = true,
        env = "CRIER_BENCH_SECRET",
        default_value = "app-secret"
    )]
    pub(crate) secret: String,
    /// PID of the server process, for its RSS and CPU time (read from /proc). Several (comma-
    /// separated or repeated, also as --server-pids), in the order of --nodes: CPU and RSS are
    /// summed over them and also given node by node.
    #[arg(
        long = "server-pid",
        visible_alias = "server-pids",
        global = true,
        value_delimiter = ','
    )]
    pub(crate) server_pid: Vec<u32>,
    /// PID of the Redis server joining the nodes: its CPU is reported apart from the nodes'.
    #[arg(long, global = true)]
    pub(crate) redis_pid: Option<u32>,
    /// Redis joining the nodes (redis://127.0.0.1:PORT): its `INFO stats` is read before and
    /// after the measured phase (bytes in and out, commands) with a tiny RESP client.
    #[arg(long, global = true, env = "CRIER_BENCH_REDIS_URL")]
    pub(crate) redis_url: Option<String>,
    /// Hard limit on the whole run, seconds.
    #[arg(long, global = true, default_value_t = 300)]
    pub(crate) timeout_secs: u64,
    /// Worker processes holding the connections (0 = as many as --per-worker requires).
    #[arg(long, global = true, default_value_t = 0)]
    pub(crate) workers: usize,
    /// Most connections one worker process holds (the fd limit is 20,000 per process).
    #[arg(long, global = true, default_value_t = 19_000)]
    pub(crate) per_worker: usize,
    /// First client source address; connection i binds to src_base + i / conns_per_addr, and
    /// churn worker w uses the 250 addresses of the /24 block w+1 after it. Default: a fresh
    /// 127.x.y.1 block for every run, so ports left in TIME_WAIT by the last run (60 s) are
    /// never in the way (bind() slows down badly when most ports of an address are taken).
    #[arg(long, global = true)]
    pub(crate) src_base: Option<Ipv4Addr>,
    /// Connections per source address (bind() with port 0 gets ~14,000 ports per address).
    #[arg(long, global = true, default_value_t = 4_000)]
    pub(crate) conns_per_addr: usize,
    /// Handshakes in flight per worker (keep workers x this below the server's listen backlog).
    #[arg(long, global = true, default_value_t = 64)]
    pub(crate) connect_concurrency: usize,
    /// Timeout for one handshake or one subscribe, ms.
    #[arg(long, global = true, default_value_t = 15_000)]
    pub(crate) connect_timeout_ms: u64,
    /// Channel names are PREFIX0, PREFIX1, ...
    #[arg(long, global = true, default_value = "bench-")]
    pub(crate) channel_prefix: String,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// Open N connections, subscribe each, hold; connect/subscribe rate and server RSS per connection.
    Idle(IdleArgs),
    /// S subscribers, events over the HTTP API; deliveries/s, latency, loss, server CPU per delivery.
    Fanout(FanoutArgs),
    /// S sockets subscribe to one channel at once; subscribes/s for each 1,000 subscribers.
    SubscribeStorm(StormArgs),
    /// HTTP API events/s to a channel with subscribers and to one without.
    Publish(PublishArgs),
    /// Connections opening and closing at a given rate while a fan-out runs.
    Churn(ChurnArgs),
    /// CPU cost of one small write() to a loopback TCP socket (the floor of a fan-out).
    Floor(FloorArgs),
    /// Nodes of a cluster (--nodes): subscribers spread over the nodes (or all on one),
    /// sustained publishing through the nodes; loss, duplicates, latency, CPU of every node
    /// and of Redis, Redis bytes per publish.
    Cluster(ClusterArgs),
    /// N connections, then SIGTERM to --server-pid: closes per 100 ms (the drain's curve).
    Drain(DrainArgs),
    /// One scenario against several servers, runs alternating, the floor measured each round.
    Compare(CompareArgs),
    #[command(name = "__worker", hide = true)]
    Worker { spec: String },
}

#[derive(Args, Debug, Clone)]
pub(crate) struct IdleArgs {
    #[arg(long, short = 'n', default_value_t = 2_000)]
    pub(crate) connections: usize,
    #[arg(long, default_value_t = 1)]
    pub(crate) channels: usize,
    /// Seconds to hold the connections after subscribing (RSS is read at the end).
    #[arg(long, default_value_t = 5)]
    pub(crate) hold_secs: u64,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct FanoutArgs {
    #[arg(long, short = 's', default_value_t = 2_000)]
    pub(crate) subscribers: usize,
    #[arg(long, default_value_t = 1)]
    pub(crate) channels: usize,
    /// Events to publish (upper bound).
    #[arg(long, short = 'e', default_value_t = 20)]
    pub(crate) events: u64,
    /// Milliseconds between events; 0 = as fast as the server accepts them.
    #[arg(long, default_value_t = 200.0)]
    pub(crate) interval_ms: f64,
    /// Upper bound on the publishing time, seconds.
    #[arg(long, default_value_t = 60)]
    pub(crate) duration_secs: u64,
    /// Concurrent keep-alive HTTP connections publishing.
    #[arg(long, default_value_t = 1)]
    pub(crate) http_conns: usize,
    /// Percentage of subscribers that subscribe and then never read.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) stalled_pct: f64,
    /// SO_RCVBUF of stalled sockets, bytes (0 = kernel default), so they fill up quickly.
    #[arg(long, default_value_t = 4096)]
    pub(crate) stalled_rcvbuf: u32,
    /// Pad the event data string to this many bytes.
    #[arg(long, default_value_t = 0)]
    pub(crate) data_bytes: usize,
    /// How long to wait for the last deliveries after publishing, ms.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) drain_ms: u64,
    /// The floor (µs per write, from `floor`) to compare server CPU per delivery with.
    #[arg(long)]
    pub(crate) floor_us: Option<f64>,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct StormArgs {
    #[arg(long, short = 's', default_value_t = 2_000)]
    pub(crate) subscribers: usize,
    /// Bucket size for the subscribe-rate curve.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) bucket: usize,
    /// Storms to run on the same connections, each on a fresh channel (PREFIX0-rR); the curve
    /// reported is the median of the rounds, batch by batch.
    #[arg(long, default_value_t = 1)]
    pub(crate) rounds: usize,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct PublishArgs {
    /// Seconds of publishing per phase (with subscribers, without).
    #[arg(long, default_value_t = 5)]
    pub(crate) duration_secs: u64,
    /// Upper bound on events per phase.
    #[arg(long, default_value_t = 2_000_000)]
    pub(crate) events: u64,
    #[arg(long, default_value_t = 8)]
    pub(crate) http_conns: usize,
    /// Subscribers on the channel of the first phase.
    #[arg(long, default_value_t = 1)]
    pub(crate) subscribers: usize,
    #[arg(long, default_value_t = 0)]
    pub(crate) data_bytes: usize,
    #[arg(long, default_value_t = 5_000)]
    pub(crate) drain_ms: u64,
    /// Beside the publishing, subscribe to this many fresh channels per second (and leave
    /// the previous one), so the server has occupancy and count webhooks to send.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) sub_churn_rate: f64,
    /// Connections the subscription churn runs on.
    #[arg(long, default_value_t = 4)]
    pub(crate) sub_churn_conns: usize,
    /// Run a webhook receiver for the server to send to: `ok:127.0.0.1:PORT` answers 200 at
    /// once, `hang:127.0.0.1:PORT` accepts and never answers.
    #[arg(long)]
    pub(crate) webhook_receiver: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct ChurnArgs {
    #[command(flatten)]
    pub(crate) fanout: FanoutArgs,
    /// New connections per second (each connects, subscribes, holds, closes).
    #[arg(long, default_value_t = 200.0)]
    pub(crate) churn_rate: f64,
    /// How long each churned connection stays, ms.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) churn_hold_ms: u64,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct CompareArgs {
    /// NAME=COMMAND, at least twice; the command (run by `sh`) must listen on `{port}`, e.g.
    /// `crier=target/release/crier --host 127.0.0.1 --port {port} --metrics-port 0`.
    #[arg(long, required = true)]
    pub(crate) server: Vec<String>,
    /// Rounds; each runs every server once (order alternating) after measuring the floor.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// The figure to compare: a dot path into the scenario's JSON result.
    #[arg(long, default_value = "cpu.server_cpu_us_per_delivery_schedstat")]
    pub(crate) metric: String,
    #[arg(long, default_value_t = 9_000)]
    pub(crate) floor_sockets: usize,
    #[arg(long, default_value_t = 300_000)]
    pub(crate) floor_writes: u64,
    /// The scenario and its options, after `--` (global options such as --app-id go here too).
    #[arg(last = true)]
    pub(crate) scenario: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct DrainArgs {
    #[arg(long, short = 'n', default_value_t = 10_000)]
    pub(crate) connections: usize,
    #[arg(long, default_value_t = 100)]
    pub(crate) channels: usize,
    /// Width of one bar of the curve, ms.
    #[arg(long, default_value_t = 100)]
    pub(crate) bucket_ms: u64,
    /// How long to wait for every close after the signal, seconds.
    #[arg(long, default_value_t = 30)]
    pub(crate) wait_secs: u64,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct FloorArgs {
    #[arg(long, default_value_t = 4)]
    pub(crate) sockets: usize,
    #[arg(long, default_value_t = 200_000)]
    pub(crate) writes: u64,
    /// Bytes per write.
    #[arg(long, default_value_t = 100)]
    pub(crate) size: usize,
    /// Disable TCP_NODELAY on the writing sockets.
    #[arg(long)]
    pub(crate) nagle: bool,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct ClusterArgs {
    #[arg(long, short = 's', default_value_t = 900)]
    pub(crate) subscribers: usize,
    /// Subscribers spread over C channels (connection i on channel i % C); publishes go
    /// round-robin over the channels.
    #[arg(long, default_value_t = 100)]
    pub(crate) channels: usize,
    /// Target publishes per second over all nodes; 0 = as fast as the nodes accept them.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) rate: f64,
    /// Seconds of publishing.
    #[arg(long, short = 'd', default_value_t = 5)]
    pub(crate) duration_secs: u64,
    /// Upper bound on publishes.
    #[arg(long, default_value_t = 10_000_000)]
    pub(crate) events: u64,
    /// Concurrent publishing tasks; each keeps one keep-alive connection per node. A paced
    /// rate needs about rate x request latency of them in flight, plus timer slack (1 ms).
    #[arg(long, default_value_t = 64)]
    pub(crate) http_conns: usize,
    /// Put every subscriber on this node (0-based index into --nodes) instead of spreading
    /// them over all nodes.
    #[arg(long)]
    pub(crate) subscribers_on: Option<usize>,
    /// Publish only through these nodes (0-based indexes into the API URLs, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub(crate) publish_via: Vec<usize>,
    /// Pad the event data string to this many bytes.
    #[arg(long, default_value_t = 0)]
    pub(crate) data_bytes: usize,
    /// How long to wait for the last deliveries after publishing, ms.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) drain_ms: u64,
    /// The servers' Redis key prefix: with --redis-url, `PUBSUB NUMSUB` on every channel's
    /// key shows how many nodes listen to it (interest routing).
    #[arg(long, default_value = "crier")]
    pub(crate) redis_prefix: String,
    /// p99 publish-to-receive latency a rate must stay under to count as sustained, ms.
    #[arg(long, default_value_t = 50.0)]
    pub(crate) max_p99_ms: f64,
}

fn main() {
    let cli = Cli::parse();
    if let Cmd::Worker { spec } = &cli.cmd {
        worker::run(spec);
        return;
    }
    if let Cmd::Compare(a) = &cli.cmd {
        std::process::exit(compare::run(a));
    }
    let code = scenarios::run(cli);
    std::process::exit(code);
}
