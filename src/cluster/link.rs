//! The node's connection to Redis: one multiplexed connection carries this node's publishes
//! (in order), its presence scripts and its lease; another its subscriptions and what
//! arrives on them. When Redis goes away, the link says so once, keeps dropping (and
//! counting) cross-node messages so nothing queues up, retries with a growing pause, and on
//! reconnect subscribes again to every channel the node has subscribers on and asserts its
//! presence users anew. It never makes a client wait on Redis longer than one round trip,
//! and never once Redis is known to be away.
//!
//! Leases: every second the node renews `P:node:N:alive` (3 s) and looks for nodes whose
//! lease is gone; the first node to find one runs the cleanup script, which removes that
//! node's presence users (announcing those it was the last node of) exactly once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::Script;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio::sync::{mpsc, watch};

use super::{Cluster, Outgoing, PresenceOp, Queues, TERMINATE, scripts, wire};
use crate::apps::AppStore;
use crate::channels::users::{termination, watch_channel};
use crate::protocol::channel::USER_CHANNEL_PREFIX;
use crate::protocol::socket_id::SocketId;

/// Longest pause between two attempts to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long one attempt to connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Publishes sent to Redis in one pipeline, at most.
const PUBLISH_BATCH: usize = 256;
/// Channels subscribed to in one command when subscribing anew.
const SUBSCRIBE_BATCH: usize = 512;
/// A node's lease, and how often it is renewed (and other nodes' leases checked).
pub(crate) const LEASE: Duration = Duration::from_secs(3);
pub(crate) const LEASE_RENEW: Duration = Duration::from_secs(1);
/// How often this node's changed subscription counts are written to Redis.
const COUNTS_EVERY: Duration = Duration::from_millis(100);

/// Longest any Redis command may take before the link gives the connection up (and, with
/// it, stops making anyone wait on Redis).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// `command`, failing if Redis has not answered within [`COMMAND_TIMEOUT`].
async fn within<T>(command: impl Future<Output = redis::RedisResult<T>>) -> redis::RedisResult<T> {
    match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "Redis did not answer in time",
        ))),
    }
}

/// Everything the link needs besides the cluster handle.
pub(crate) struct LinkContext {
    pub cluster: Arc<Cluster>,
    pub apps: AppStore,
    /// This node's part of socket ids, to recognise an excluded socket as one of ours.
    pub socket_node: u32,
}

struct Scripts {
    join: Script,
    leave: Script,
    snapshot: Script,
    cleanup: Script,
    signed_in: Script,
    signed_out: Script,
    occupy: Script,
    vacate: Script,
    count: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            join: Script::new(scripts::JOIN),
            leave: Script::new(scripts::LEAVE),
            snapshot: Script::new(scripts::SNAPSHOT),
            cleanup: Script::new(scripts::CLEANUP),
            signed_in: Script::new(scripts::SIGNED_IN),
            signed_out: Script::new(scripts::SIGNED_OUT),
            occupy: Script::new(scripts::OCCUPY),
            vacate: Script::new(scripts::VACATE),
            count: Script::new(scripts::COUNT),
        }
    }
}

/// Runs the link until `stop` turns true, then removes this node's state from Redis.
pub(crate) async fn run(ctx: LinkContext, queues: Queues, mut stop: watch::Receiver<bool>) {
    let Queues {
        mut outgoing,
        mut presence,
    } = queues;
    let cluster = ctx.cluster.clone();
    let client = match redis::Client::open(cluster.redis_url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                "cluster: bad Redis URL {}: {e}; running as a single node",
                cluster.redis_url
            );
            return;
        }
    };
    let scripts = Scripts::new();
    let mut backoff = Duration::from_millis(100);
    let mut reported_down = false;
    let mut dropped_reported = 0u64;
    let mut first = true;
    loop {
        if *stop.borrow() {
            return;
        }
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(&client)).await;
        let failure = match connected {
            Ok(Ok((publisher, sink, stream))) => {
                backoff = Duration::from_millis(100);
                // `dropped` only grows (it is also a metric): the log gives what is new.
                let total = cluster.dropped.load(Ordering::Relaxed);
                let dropped = total - dropped_reported;
                dropped_reported = total;
                if reported_down {
                    tracing::warn!(
                        "cluster: Redis at {} is back; {dropped} cross-node messages were dropped meanwhile",
                        cluster.redis_url
                    );
                } else {
                    tracing::info!(
                        "cluster: node {} joined through Redis at {} (prefix {:?})",
                        cluster.node_id,
                        cluster.redis_url,
                        cluster.prefix
                    );
                }
                reported_down = false;
                let mut session = Session {
                    ctx: &ctx,
                    scripts: &scripts,
                    publisher,
                    sink,
                };
                let served = tokio::select! {
                    e = session.serve(stream, &mut outgoing, &mut presence, first) => Some(e),
                    _ = stop.wait_for(|s| *s) => None,
                };
                first = false;
                match served {
                    Some(e) => e,
                    None => {
                        session.leave_cluster().await;
                        return;
                    }
                }
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {CONNECT_TIMEOUT:?}"),
        };
        for key in cluster.interest.disconnected() {
            confirm(&ctx, &key);
        }
        for app in ctx.apps.all() {
            app.registry.release_presence_waiting();
        }
        if !reported_down {
            tracing::warn!(
                "cluster: node {}: Redis at {} unreachable ({failure}); serving this node's clients only, cross-node messages are dropped until it is back",
                cluster.node_id,
                cluster.redis_url
            );
            reported_down = true;
        }
        // Drop what is queued and what arrives while waiting, so nothing piles up; presence
        // is asserted as a whole on reconnect.
        let pause = tokio::time::sleep(backoff);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                message = outgoing.recv() => match message {
                    Some(_) => { cluster.dropped.fetch_add(1, Ordering::Relaxed); }
                    None => return,
                },
                op = presence.recv() => if op.is_none() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        // Counts are rewritten as a whole on reconnect; what changed meanwhile is moot.
        for app in ctx.apps.all() {
            app.registry.take_touched();
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect(
    client: &redis::Client,
) -> redis::RedisResult<(MultiplexedConnection, PubSubSink, PubSubStream)> {
    // Our own deadline (`within`) decides when Redis is too slow, not the client's 500 ms
    // default: a Redis busy for half a second is slow, not gone.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(COMMAND_TIMEOUT));
    let publisher = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let (sink, stream) = client.get_async_pubsub().await?.split();
    Ok((publisher, sink, stream))
}

/// One connected period of the link.
struct Session<'a> {
    ctx: &'a LinkContext,
    scripts: &'a Scripts,
    publisher: MultiplexedConnection,
    sink: PubSubSink,
}

impl Session<'_> {
    fn prefix(&self) -> &str {
        &self.ctx.cluster.prefix
    }

    fn node(&self) -> &str {
        &self.ctx.cluster.node_id
    }

    /// Serves until the connection fails; returns why.
    async fn serve(
        &mut self,
        stream: PubSubStream,
        outgoing: &mut mpsc::Receiver<Outgoing>,
        presence: &mut mpsc::Receiver<PresenceOp>,
        first: bool,
    ) -> String {
        let cluster = self.ctx.cluster.clone();
        if first {
            // A node restarted under the same id leaves nothing behind from its last life.
            if let Err(e) = self.cleanup(self.node().to_string(), true).await {
                return e.to_string();
            }
        }
        if let Err(e) = self.renew_lease().await {
            return e.to_string();
        }
        // Subscribe anew to every channel with local subscribers, assert this node's presence
        // users, then read the member lists and acknowledge the subscribers that waited.
        let all = cluster.interest.connected();
        let mut ready = Ok(());
        for chunk in all.chunks(SUBSCRIBE_BATCH) {
            let names: Vec<&str> = chunk.iter().map(|c| &*c.key).collect();
            ready = within(self.sink.subscribe(names)).await;
            if ready.is_err() {
                break;
            }
        }
        if ready.is_ok() {
            ready = within(self.assert_presence()).await;
        }
        for change in &all {
            if ready.is_ok() && is_presence(&cluster, &change.key) {
                ready = self.snapshot(&change.key).await;
            }
            if ready.is_ok() && change.confirm {
                ready = fetch_cache(self.ctx, &mut self.publisher, &change.key).await;
            }
            if ready.is_ok() {
                ready = fetch_online(self.ctx, &mut self.publisher, &change.key).await;
            }
        }
        // Heard now, or Redis failed meanwhile: either way nobody waits any longer.
        for change in all.iter().filter(|c| c.confirm) {
            confirm(self.ctx, &change.key);
        }
        if let Err(e) = ready {
            return e.to_string();
        }
        if let Err(e) = write_all_counts(self.ctx, &mut self.publisher).await {
            return e.to_string();
        }
        cluster.set_commands(Some(self.publisher.clone()));
        let served = self.serve_connected(stream, outgoing, presence).await;
        cluster.set_commands(None);
        served
    }

    async fn serve_connected(
        &mut self,
        mut stream: PubSubStream,
        outgoing: &mut mpsc::Receiver<Outgoing>,
        presence: &mut mpsc::Receiver<PresenceOp>,
    ) -> String {
        let cluster = self.ctx.cluster.clone();
        let mut sink = self.sink.clone();
        let mut commands = self.publisher.clone();
        let scripts = self.scripts;
        let ctx = self.ctx;
        let interest = async {
            loop {
                let changes = cluster.interest.take_changes();
                for (i, change) in changes.iter().enumerate() {
                    let mut done = if change.desired {
                        within(sink.subscribe(&*change.key)).await
                    } else {
                        within(sink.unsubscribe(&*change.key)).await
                    };
                    if done.is_ok() && change.desired && is_presence(&cluster, &change.key) {
                        done = within(snapshot(ctx, scripts, &mut commands, &change.key)).await;
                    }
                    if done.is_ok() && change.desired {
                        done = within(fetch_cache(ctx, &mut commands, &change.key)).await;
                    }
                    if done.is_ok() && change.desired {
                        done = within(fetch_online(ctx, &mut commands, &change.key)).await;
                    }
                    if let Err(e) = done {
                        // Redis failed: nobody waits for a channel it cannot hear.
                        for rest in changes[i..].iter().filter(|c| c.confirm) {
                            confirm(ctx, &rest.key);
                        }
                        return e.to_string();
                    }
                    if change.confirm {
                        confirm(ctx, &change.key);
                    }
                }
                cluster.interest.changed().await;
            }
        };
        let mut publisher = self.publisher.clone();
        let publishing = async {
            let mut batch = Vec::with_capacity(PUBLISH_BATCH);
            loop {
                if outgoing.recv_many(&mut batch, PUBLISH_BATCH).await == 0 {
                    return "the server is stopping".to_string();
                }
                let mut pipe = redis::pipe();
                for message in batch.drain(..) {
                    if let Some((key, frame, ttl)) = &message.cache {
                        pipe.cmd("SET")
                            .arg(key)
                            .arg(&frame[..])
                            .arg("PX")
                            .arg(ttl.as_millis().max(1) as u64)
                            .ignore();
                    }
                    pipe.publish(message.key, &message.payload[..]).ignore();
                }
                if let Err(e) = within(pipe.query_async::<()>(&mut publisher)).await {
                    return e.to_string();
                }
            }
        };
        let mut presence_conn = self.publisher.clone();
        let presence_ops = async {
            while let Some(op) = presence.recv().await {
                if let Err(e) = within(apply_presence(ctx, scripts, &mut presence_conn, op)).await {
                    return e.to_string();
                }
            }
            "the server is stopping".to_string()
        };
        let mut lease_conn = self.publisher.clone();
        let leases = async {
            let mut tick = tokio::time::interval(LEASE_RENEW);
            loop {
                tick.tick().await;
                if let Err(e) = within(lease_round(ctx, scripts, &mut lease_conn)).await {
                    return e.to_string();
                }
            }
        };
        let mut counts_conn = self.publisher.clone();
        let counts = async {
            let mut tick = tokio::time::interval(COUNTS_EVERY);
            loop {
                tick.tick().await;
                if let Err(e) = within(write_touched_counts(ctx, scripts, &mut counts_conn)).await {
                    return e.to_string();
                }
            }
        };
        let mut totals_conn = self.publisher.clone();
        let subscription_counts = async {
            let mut tick = tokio::time::interval(crate::channels::registry::COUNT_INTERVAL);
            loop {
                tick.tick().await;
                if let Err(e) = within(send_cluster_counts(ctx, &mut totals_conn)).await {
                    return e.to_string();
                }
            }
        };
        let receiving = async {
            while let Some(message) = stream.next().await {
                deliver(ctx, message.get_channel_name(), message.get_payload_bytes());
            }
            "the subscription connection closed".to_string()
        };
        tokio::select! {
            e = interest => e,
            e = publishing => e,
            e = presence_ops => e,
            e = leases => e,
            e = counts => e,
            e = subscription_counts => e,
            e = receiving => e,
        }
    }

    async fn renew_lease(&mut self) -> redis::RedisResult<bool> {
        renew(self.ctx, &mut self.publisher).await
    }

    async fn cleanup(&mut self, node: String, force: bool) -> redis::RedisResult<i64> {
        cleanup(self.ctx, self.scripts, &mut self.publisher, &node, force).await
    }

    async fn snapshot(&mut self, key: &str) -> redis::RedisResult<()> {
        snapshot(self.ctx, self.scripts, &mut self.publisher, key).await
    }

    /// Registers every presence user this node has, and unregisters what Redis still holds
    /// for this node but the node no longer has (users who left while Redis was away).
    async fn assert_presence(&mut self) -> redis::RedisResult<()> {
        let set = format!("{}:node:{}:presence", self.prefix(), self.node());
        let held: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&set)
            .query_async(&mut self.publisher)
            .await?;
        let mut local = std::collections::HashSet::new();
        let mut ops = Vec::new();
        for app in self.ctx.apps.all() {
            let app_id: Arc<str> = Arc::from(app.config.id.as_str());
            for (channel, members) in app.registry.local_presence() {
                for member in members {
                    local.insert(entry(&app_id, &channel, &member.user_id));
                    ops.push(PresenceOp::Join {
                        app_id: app_id.clone(),
                        channel: channel.clone(),
                        user_id: member.user_id.clone(),
                        info: member
                            .info
                            .as_ref()
                            .map(|i| i.get().to_string())
                            .unwrap_or_default(),
                        max_members: 0,
                    });
                }
            }
        }
        let online_set = format!("{}:node:{}:online", self.prefix(), self.node());
        let signed: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&online_set)
            .query_async(&mut self.publisher)
            .await?;
        let mut local_signed = std::collections::HashSet::new();
        for app in self.ctx.apps.all() {
            let app_id: Arc<str> = Arc::from(app.config.id.as_str());
            for user_id in app.users.signed_in_users() {
                local_signed.insert(format!("{app_id}\n{user_id}"));
                ops.push(PresenceOp::SignedIn {
                    app_id: app_id.clone(),
                    user_id,
                });
            }
        }
        for stale in signed.iter().filter(|e| !local_signed.contains(*e)) {
            if let Some((a, u)) = stale.split_once('\n') {
                ops.push(PresenceOp::SignedOut {
                    app_id: Arc::from(a),
                    user_id: Arc::from(u),
                });
            }
        }
        // The channels this node has subscribers of, for occupancy webhooks: what Redis holds
        // for the node is replaced by what the node has now.
        let occ_set = self.ctx.cluster.node_occupancy_key(self.node());
        let occupied: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&occ_set)
            .query_async(&mut self.publisher)
            .await?;
        let mut local_occupied = std::collections::HashSet::new();
        let now = crate::webhooks::now_ms();
        for app in self.ctx.apps.all() {
            if !app
                .webhooks
                .as_ref()
                .is_some_and(|w| w.wants_cluster_occupancy())
            {
                continue;
            }
            let app_id: Arc<str> = Arc::from(app.config.id.as_str());
            for (channel, _) in app.registry.channels("") {
                local_occupied.insert(format!("{app_id}\n{channel}"));
                ops.push(PresenceOp::Occupancy {
                    app_id: app_id.clone(),
                    channel: Arc::from(channel),
                    occupied: true,
                    time_ms: now,
                });
            }
        }
        for stale in occupied.iter().filter(|e| !local_occupied.contains(*e)) {
            if let Some((a, c)) = stale.split_once('\n') {
                ops.push(PresenceOp::Occupancy {
                    app_id: Arc::from(a),
                    channel: Arc::from(c),
                    occupied: false,
                    time_ms: now,
                });
            }
        }
        for stale in held.iter().filter(|e| !local.contains(*e)) {
            let mut parts = stale.splitn(3, '\n');
            if let (Some(a), Some(c), Some(u)) = (parts.next(), parts.next(), parts.next()) {
                ops.push(PresenceOp::Leave {
                    app_id: Arc::from(a),
                    channel: Arc::from(c),
                    user_id: Arc::from(u),
                });
            }
        }
        for op in ops {
            apply_presence(self.ctx, self.scripts, &mut self.publisher, op).await?;
        }
        Ok(())
    }

    /// On shutdown: this node's presence users leave the cluster now (announced once, by the
    /// script), and its lease goes, so no other node waits for it to expire.
    async fn leave_cluster(&mut self) {
        let node = self.node().to_string();
        let done = tokio::time::timeout(Duration::from_secs(2), async {
            let removed = self.cleanup(node.clone(), true).await?;
            redis::cmd("DEL")
                .arg(format!("{}:node:{node}:alive", self.prefix()))
                .query_async::<()>(&mut self.publisher)
                .await?;
            redis::cmd("SREM")
                .arg(format!("{}:nodes", self.prefix()))
                .arg(&node)
                .query_async::<()>(&mut self.publisher)
                .await?;
            Ok::<_, redis::RedisError>(removed)
        })
        .await;
        match done {
            Ok(Ok(n)) => tracing::info!(
                "cluster: node {node} left the cluster ({n} presence entries removed)"
            ),
            Ok(Err(e)) => tracing::warn!(
                "cluster: could not remove node {node}'s state: {e}; its lease expires in {LEASE:?}"
            ),
            Err(_) => tracing::warn!(
                "cluster: Redis did not answer in time; node {node}'s state goes when its lease expires"
            ),
        }
    }
}

fn is_presence(cluster: &Cluster, key: &str) -> bool {
    cluster
        .parse_key(key)
        .is_some_and(|(_, channel)| channel.starts_with("presence-"))
}

/// `A\nC\nU`: one node's registration of a user on a channel.
fn entry(app_id: &str, channel: &str, user: &str) -> String {
    format!("{app_id}\n{channel}\n{user}")
}

fn presence_keys(prefix: &str, app_id: &str, channel: &str) -> [String; 3] {
    let base = format!("{prefix}:{app_id}:presence:{channel}");
    [
        format!("{base}:info"),
        format!("{base}:n"),
        format!("{base}:v"),
    ]
}

async fn apply_presence(
    ctx: &LinkContext,
    scripts: &Scripts,
    conn: &mut MultiplexedConnection,
    op: PresenceOp,
) -> redis::RedisResult<()> {
    let cluster = &ctx.cluster;
    let node_set = format!("{}:node:{}:presence", cluster.prefix, cluster.node_id);
    let online_set = format!("{}:node:{}:online", cluster.prefix, cluster.node_id);
    let signing_in = matches!(op, PresenceOp::SignedIn { .. });
    match op {
        PresenceOp::SignedIn { app_id, user_id } | PresenceOp::SignedOut { app_id, user_id } => {
            let script = if signing_in {
                &scripts.signed_in
            } else {
                &scripts.signed_out
            };
            let _: i64 = script
                .key(format!("{}:{app_id}:online", cluster.prefix))
                .key(&online_set)
                .arg(format!("{app_id}\n{user_id}"))
                .arg(&*user_id)
                .arg(cluster.key(&app_id, &watch_channel(&user_id)))
                .invoke_async(conn)
                .await?;
        }
        PresenceOp::Join {
            app_id,
            channel,
            user_id,
            info,
            max_members,
        } => {
            let [info_key, n_key, v_key] = presence_keys(&cluster.prefix, &app_id, &channel);
            let member: i64 = scripts
                .join
                .key(info_key)
                .key(n_key)
                .key(&node_set)
                .key(v_key)
                .key(cluster.webhook_delayed())
                .key(cluster.webhook_stream())
                .arg(entry(&app_id, &channel, &user_id))
                .arg(&*user_id)
                .arg(info)
                .arg(max_members)
                .arg(cluster.key(&app_id, &channel))
                .arg(member_webhooks(ctx, &app_id))
                .arg(&*app_id)
                .arg(&*channel)
                .arg(crate::webhooks::now_ms())
                .arg(scripts::STREAM_MAX)
                .invoke_async(conn)
                .await?;
            if member == 0
                && let Some(app) = ctx.apps.by_id(&app_id)
            {
                app.registry.refuse_member(&channel, &user_id, max_members);
            }
        }
        PresenceOp::Leave {
            app_id,
            channel,
            user_id,
        } => {
            let [info_key, n_key, v_key] = presence_keys(&cluster.prefix, &app_id, &channel);
            let _: i64 = scripts
                .leave
                .key(info_key)
                .key(n_key)
                .key(&node_set)
                .key(v_key)
                .key(cluster.webhook_delayed())
                .key(cluster.webhook_stream())
                .arg(entry(&app_id, &channel, &user_id))
                .arg(&*user_id)
                .arg(cluster.key(&app_id, &channel))
                .arg(member_webhooks(ctx, &app_id))
                .arg(&*app_id)
                .arg(&*channel)
                .arg(crate::webhooks::now_ms())
                .invoke_async(conn)
                .await?;
        }
        PresenceOp::Occupancy {
            app_id,
            channel,
            occupied,
            time_ms,
        } => {
            let script = if occupied {
                &scripts.occupy
            } else {
                &scripts.vacate
            };
            let _: i64 = script
                .key(cluster.occupancy_key(&app_id, &channel))
                .key(cluster.node_occupancy_key(&cluster.node_id))
                .key(cluster.webhook_delayed())
                .key(cluster.webhook_stream())
                .arg(&*cluster.node_id)
                .arg(format!("{app_id}\n{channel}"))
                .arg(&*app_id)
                .arg(&*channel)
                .arg(time_ms)
                .arg(scripts::STREAM_MAX)
                .invoke_async(conn)
                .await?;
        }
    }
    Ok(())
}

/// `1` when the app's member events go to webhooks (the presence scripts then queue them).
fn member_webhooks(ctx: &LinkContext, app_id: &str) -> &'static str {
    let wanted = ctx
        .apps
        .by_id(app_id)
        .is_some_and(|a| a.webhooks.as_ref().is_some_and(|w| w.wants_members()));
    if wanted { "1" } else { "0" }
}

/// Reads a presence channel's member list and version into the registry's replica.
async fn snapshot(
    ctx: &LinkContext,
    scripts: &Scripts,
    conn: &mut MultiplexedConnection,
    key: &str,
) -> redis::RedisResult<()> {
    let Some((app_id, channel)) = ctx.cluster.parse_key(key) else {
        return Ok(());
    };
    let Some(app) = ctx.apps.by_id(app_id) else {
        return Ok(());
    };
    let [info_key, _, v_key] = presence_keys(&ctx.cluster.prefix, app_id, channel);
    let reply: Vec<redis::Value> = scripts
        .snapshot
        .key(info_key)
        .key(v_key)
        .invoke_async(conn)
        .await?;
    let mut values = reply.into_iter();
    let version = values
        .next()
        .and_then(|v| redis::from_redis_value::<u64>(v).ok())
        .unwrap_or(0);
    let mut members = Vec::new();
    while let (Some(user), Some(info)) = (values.next(), values.next()) {
        if let (Ok(user), Ok(info)) = (
            redis::from_redis_value::<String>(user),
            redis::from_redis_value::<String>(info),
        ) {
            members.push((user, info));
        }
    }
    app.registry.install_members(channel, version, members);
    Ok(())
}

/// Rewrites this node's subscription counts as a whole (after a (re)connect).
async fn write_all_counts(
    ctx: &LinkContext,
    conn: &mut MultiplexedConnection,
) -> redis::RedisResult<()> {
    let key = ctx.cluster.counts_key(&ctx.cluster.node_id);
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("DEL").arg(&key).ignore();
    for app in ctx.apps.all() {
        app.registry.take_touched();
        for (channel, stats) in app.registry.channels("") {
            pipe.cmd("HSET")
                .arg(&key)
                .arg(format!("{}\n{channel}", app.config.id))
                .arg(stats.subscriptions)
                .ignore();
        }
    }
    pipe.query_async::<()>(conn).await
}

/// Writes the counts of the channels whose local subscribers changed, then, for apps with
/// `subscription_count` webhooks, queues the changed cluster-wide counts.
async fn write_touched_counts(
    ctx: &LinkContext,
    scripts: &Scripts,
    conn: &mut MultiplexedConnection,
) -> redis::RedisResult<()> {
    let key = ctx.cluster.counts_key(&ctx.cluster.node_id);
    let mut pipe = redis::pipe();
    let mut touched = Vec::new();
    for app in ctx.apps.all() {
        let channels = app.registry.take_touched();
        for channel in &channels {
            let field = format!("{}\n{channel}", app.config.id);
            match app.registry.local_count(channel) {
                0 => pipe.cmd("HDEL").arg(&key).arg(field).ignore(),
                n => pipe.cmd("HSET").arg(&key).arg(field).arg(n).ignore(),
            };
        }
        if !channels.is_empty() {
            touched.push((app, channels));
        }
    }
    if touched.is_empty() {
        return Ok(());
    }
    pipe.query_async::<()>(&mut *conn).await?;
    for (app, channels) in touched {
        if !app
            .webhooks
            .as_ref()
            .is_some_and(|w| w.wants_cluster_counts())
        {
            continue;
        }
        let counted: Vec<Arc<str>> = channels
            .into_iter()
            .filter(|c| !c.starts_with("presence-") && !c.starts_with("#"))
            .collect();
        let totals = super::queries::totals(&ctx.cluster, conn, &app.config.id, &counted).await?;
        let now = crate::webhooks::now_ms();
        for (channel, total) in counted.iter().zip(totals) {
            let event =
                crate::webhooks::event::WebhookEvent::subscription_count(channel, total, now);
            let queued: i64 = scripts
                .count
                .key(format!("{}:{}:wh:count", ctx.cluster.prefix, app.config.id))
                .key(ctx.cluster.webhook_stream())
                .arg(&**channel)
                .arg(total)
                .arg(now)
                .arg(&app.config.id)
                .arg(&*event.json)
                .arg(crate::webhooks::local::COUNT_BUSY)
                .arg(crate::webhooks::local::COUNT_EVERY.as_millis() as u64)
                .arg(scripts::STREAM_MAX)
                .invoke_async(&mut *conn)
                .await?;
            if queued == 2 {
                // Paced: asked again on a later round.
                app.registry.touch(channel);
            }
        }
    }
    Ok(())
}

/// Sends each counted channel's cluster-wide subscription count to its local subscribers
/// when it changed: at most once a second, as on a single node.
async fn send_cluster_counts(
    ctx: &LinkContext,
    conn: &mut MultiplexedConnection,
) -> redis::RedisResult<()> {
    share_connection_counts(ctx, conn).await?;
    for app in ctx.apps.all().filter(|a| a.registry.wants_cluster_counts()) {
        let channels = app.registry.counted_channels();
        if channels.is_empty() {
            continue;
        }
        let totals = super::queries::totals(&ctx.cluster, conn, &app.config.id, &channels).await?;
        for (channel, total) in channels.iter().zip(totals) {
            app.registry.send_cluster_count(channel, total);
        }
    }
    Ok(())
}

/// Writes this node's connection count per app and reads the other nodes', so that
/// `max_connections` holds across the cluster. Between two reads (a second) the nodes admit
/// independently: a burst can overshoot the limit by what arrives in that second.
async fn share_connection_counts(
    ctx: &LinkContext,
    conn: &mut MultiplexedConnection,
) -> redis::RedisResult<()> {
    let limited: Vec<_> = ctx
        .apps
        .all()
        .filter(|a| a.config.max_connections.is_some() || a.console.is_open())
        .collect();
    if limited.is_empty() {
        return Ok(());
    }
    let cluster = &ctx.cluster;
    let mut pipe = redis::pipe();
    for app in &limited {
        pipe.cmd("HSET")
            .arg(cluster.connections_key(&cluster.node_id))
            .arg(&app.config.id)
            .arg(app.connection_count())
            .ignore();
    }
    pipe.cmd("SMEMBERS")
        .arg(format!("{}:nodes", cluster.prefix));
    let (nodes,): (Vec<String>,) = pipe.query_async(conn).await?;
    let others: Vec<&String> = nodes.iter().filter(|n| **n != *cluster.node_id).collect();
    for app in &limited {
        let mut pipe = redis::pipe();
        for node in &others {
            pipe.cmd("HGET")
                .arg(cluster.connections_key(node))
                .arg(&app.config.id);
        }
        let counts: Vec<Option<usize>> = if others.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(conn).await?
        };
        app.set_remote_connections(counts.into_iter().flatten().sum());
    }
    Ok(())
}

/// How long a node's announcement of a console viewer lasts unless renewed (each second).
const CONSOLE_LEASE: Duration = Duration::from_secs(5);

/// Announces the apps this node's console viewers watch, and learns which apps other nodes'
/// viewers watch, so this node sends them its console lines (see `console`). One sorted set,
/// `{prefix}:consoles`, holds `{node}` newline `{app}` members scored by expiry: with no console open
/// anywhere this costs each node one read a second.
async fn share_console_watch(
    ctx: &LinkContext,
    conn: &mut MultiplexedConnection,
) -> redis::RedisResult<()> {
    let cluster = &ctx.cluster;
    let key = format!("{}:consoles", cluster.prefix);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut pipe = redis::pipe();
    for app in ctx.apps.all().filter(|a| a.console.watched_here()) {
        pipe.cmd("ZADD")
            .arg(&key)
            .arg(now + CONSOLE_LEASE.as_millis() as u64)
            .arg(format!("{}\n{}", cluster.node_id, app.config.id))
            .ignore();
    }
    pipe.cmd("ZREMRANGEBYSCORE")
        .arg(&key)
        .arg("-inf")
        .arg(now)
        .ignore();
    pipe.cmd("ZRANGE").arg(&key).arg(0).arg(-1);
    let (members,): (Vec<String>,) = pipe.query_async(conn).await?;
    let watched: std::collections::HashSet<&str> = members
        .iter()
        .filter_map(|m| m.split_once('\n'))
        .filter(|(node, _)| *node != &*cluster.node_id)
        .map(|(_, app)| app)
        .collect();
    for app in ctx.apps.all() {
        app.console
            .set_remote_watched(watched.contains(app.config.id.as_str()));
    }
    Ok(())
}

/// Renews this node's lease; returns whether the lease was still there (false: it had
/// lapsed, and another node may have cleaned up this node's state).
async fn renew(ctx: &LinkContext, conn: &mut MultiplexedConnection) -> redis::RedisResult<bool> {
    let cluster = &ctx.cluster;
    let (previous,): (Option<String>,) = redis::pipe()
        .cmd("SET")
        .arg(format!("{}:node:{}:alive", cluster.prefix, cluster.node_id))
        .arg(1)
        .arg("PX")
        .arg(LEASE.as_millis() as u64)
        .arg("GET")
        .cmd("SADD")
        .arg(format!("{}:nodes", cluster.prefix))
        .arg(&*cluster.node_id)
        .ignore()
        .query_async(conn)
        .await?;
    Ok(previous.is_some())
}

async fn cleanup(
    ctx: &LinkContext,
    scripts: &Scripts,
    conn: &mut MultiplexedConnection,
    node: &str,
    force: bool,
) -> redis::RedisResult<i64> {
    scripts
        .cleanup
        .arg(&ctx.cluster.prefix)
        .arg(node)
        .arg(if force { "1" } else { "0" })
        .arg(crate::webhooks::now_ms())
        .invoke_async(conn)
        .await
}

/// Renews this node's lease and cleans up after nodes whose lease is gone.
async fn lease_round(
    ctx: &LinkContext,
    scripts: &Scripts,
    conn: &mut MultiplexedConnection,
) -> redis::RedisResult<()> {
    if !renew(ctx, conn).await? {
        // The lease lapsed (Redis or this node stalled for seconds): other nodes may have
        // removed this node's state. Start a new session, which asserts all of it anew.
        return Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "this node's lease lapsed; asserting its state anew",
        )));
    }
    share_console_watch(ctx, conn).await?;
    let nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{}:nodes", ctx.cluster.prefix))
        .query_async(conn)
        .await?;
    for node in nodes.iter().filter(|n| **n != *ctx.cluster.node_id) {
        let removed = cleanup(ctx, scripts, conn, node, false).await?;
        if removed >= 0 {
            tracing::warn!(
                "cluster: node {node} stopped renewing its lease; removed its {removed} presence entries"
            );
        }
    }
    Ok(())
}

/// Before a cache channel's first local subscribers are acknowledged: the last event the
/// cluster keeps for it, so they get it (or `cache_miss`) as on the node that published it.
async fn fetch_cache(
    ctx: &LinkContext,
    conn: &mut MultiplexedConnection,
    key: &str,
) -> redis::RedisResult<()> {
    let Some((app_id, channel)) = ctx.cluster.parse_key(key) else {
        return Ok(());
    };
    if !crate::protocol::channel::classify(channel).is_ok_and(|s| s.cache) {
        return Ok(());
    }
    let Some(app) = ctx.apps.by_id(app_id) else {
        return Ok(());
    };
    let (frame, ttl_ms): (Option<Vec<u8>>, i64) = redis::pipe()
        .cmd("GET")
        .arg(ctx.cluster.cache_key(app_id, channel))
        .cmd("PTTL")
        .arg(ctx.cluster.cache_key(app_id, channel))
        .query_async(conn)
        .await?;
    if let Some(frame) = frame
        && ttl_ms > 0
        && let Some(data) = frame_data(&frame)
    {
        app.registry.keep_cached(
            channel,
            &Bytes::from(frame),
            &data,
            Duration::from_millis(ttl_ms as u64),
        );
    }
    Ok(())
}

/// For a watched user's channel: whether the user is signed in anywhere, read afresh (a node
/// starts watching, or Redis is back).
async fn fetch_online(
    ctx: &LinkContext,
    conn: &mut MultiplexedConnection,
    key: &str,
) -> redis::RedisResult<()> {
    let Some((app_id, channel)) = ctx.cluster.parse_key(key) else {
        return Ok(());
    };
    let Some(user) = channel.strip_prefix("#watch:") else {
        return Ok(());
    };
    let Some(app) = ctx.apps.by_id(app_id) else {
        return Ok(());
    };
    let nodes: Option<i64> = redis::cmd("HGET")
        .arg(format!("{}:{app_id}:online", ctx.cluster.prefix))
        .arg(user)
        .query_async(conn)
        .await?;
    app.users.cluster_status(user, nodes.unwrap_or(0) > 0, true);
    Ok(())
}

/// The `data` string of an encoded event frame (server frames are unmasked).
fn frame_data(frame: &[u8]) -> Option<String> {
    let header = match frame.get(1)? & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    let event: serde_json::Value = serde_json::from_slice(frame.get(header..)?).ok()?;
    event["data"].as_str().map(str::to_string)
}

/// Acknowledges the subscribers that waited for `key` to be heard.
fn confirm(ctx: &LinkContext, key: &str) {
    ctx.cluster.interest.confirmed(key);
    if let Some((app_id, channel)) = ctx.cluster.parse_key(key)
        && let Some(app) = ctx.apps.by_id(app_id)
    {
        app.registry.heard(channel);
    }
}

/// Applies what another node (or a presence script) published on a channel this node hears.
fn deliver(ctx: &LinkContext, key: &str, payload: &[u8]) {
    let Some((app_id, channel)) = ctx.cluster.parse_key(key) else {
        return;
    };
    let Some(app) = ctx.apps.by_id(app_id) else {
        return;
    };
    if let Some(event) = wire::decode_member(payload) {
        app.registry.apply_member_event(channel, event);
        return;
    }
    if let Some(watched) = channel.strip_prefix("#watch:")
        && let Some(online) = match payload {
            b"W1+" => Some(true),
            b"W1-" => Some(false),
            _ => None,
        }
    {
        app.users.cluster_status(watched, online, false);
        return;
    }
    if channel == crate::console::CLUSTER_CHANNEL {
        let payload = Bytes::copy_from_slice(payload);
        if let Some(line) = wire::decode(&payload)
            && line.origin != &*ctx.cluster.node_id
        {
            app.console.relay(&line.frame);
        }
        return;
    }
    let user = channel.strip_prefix(USER_CHANNEL_PREFIX);
    if let Some(user) = user
        && payload == TERMINATE
    {
        app.users.terminate(user, &termination());
        return;
    }
    let payload = Bytes::copy_from_slice(payload);
    let Some(delivery) = wire::decode(&payload) else {
        tracing::debug!("cluster: ignored a message on {key} that is not Crier's");
        return;
    };
    if delivery.origin == &*ctx.cluster.node_id {
        // Delivered locally when it was published.
        return;
    }
    let except = delivery
        .except
        .and_then(SocketId::parse)
        .filter(|id| id.node == ctx.socket_node)
        .map(|id| id.conn);
    if user.is_some() || !crate::protocol::channel::classify(channel).is_ok_and(|s| s.cache) {
        match user {
            Some(user) => app.users.send(user, &delivery.frame, except),
            None => app.registry.publish(channel, &delivery.frame, except),
        };
        return;
    }
    // A cache channel: this node keeps the event too, for its next subscribers.
    let data = frame_data(&delivery.frame).unwrap_or_default();
    app.registry.publish_cached(
        channel,
        &delivery.frame,
        &data,
        app.config.cache_ttl,
        except,
    );
}
