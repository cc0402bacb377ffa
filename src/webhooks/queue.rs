//! A cluster's webhooks, kept in Redis until delivered.
//!
//! The cluster scripts (`crate::cluster::scripts`) decide each cluster-wide transition once
//! and add its event to the stream `P:wh:events`, or, for `channel_vacated` and
//! `member_removed`, to the delayed set `P:wh:delayed`. Every node runs this task:
//!
//! - it reads the stream through the consumer group `crier` (each entry goes to one node),
//!   hands the events to its [`Dispatcher`], and acknowledges and deletes an entry only once
//!   every target is done with it (delivered, or given up after `retry_for`);
//! - it moves delayed events that are due to the stream (`PROMOTE`, atomic: once);
//! - it claims entries another node read but has not acknowledged for `reclaim_after`
//!   (that node died mid-delivery), and keeps its own in-progress entries claimed, so a
//!   long retry is not taken over by another node;
//! - it adds this node's own events (client events, cache misses) to the stream.
//!
//! Delivery is therefore at least once. A duplicate needs a node to die after the receiver
//! answered 2xx but before the acknowledgement reached Redis, or a node stalled for longer
//! than `reclaim_after` while it still held the entry (README, "Webhooks").

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::Script;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio::sync::{mpsc, watch};

use super::dispatch::Dispatcher;
use super::event::{Done, WebhookEvent};
use super::local::CACHE_MISS_QUIET;
use super::settings::{WebhookKind, WebhookSettings};
use super::{AppSignal, Signal};
use crate::cluster::{Cluster, scripts};

const GROUP: &str = "crier";
/// Entries read at once.
const READ_BATCH: usize = 100;
/// How long one read waits for new entries.
const BLOCK: Duration = Duration::from_secs(1);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
const PROMOTE_EVERY: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the task needs.
pub(crate) struct QueueContext {
    pub cluster: Arc<Cluster>,
    pub dispatcher: Arc<Dispatcher>,
    pub settings: WebhookSettings,
}

/// Acknowledges a stream entry once the last target lets go of its event.
#[derive(Debug)]
struct StreamAck {
    id: String,
    acks: mpsc::UnboundedSender<String>,
    held: Arc<Mutex<HashSet<String>>>,
}

impl Done for StreamAck {}

impl Drop for StreamAck {
    fn drop(&mut self) {
        self.held.lock().remove(&self.id);
        let _ = self.acks.send(std::mem::take(&mut self.id));
    }
}

async fn within<T>(command: impl Future<Output = redis::RedisResult<T>>) -> redis::RedisResult<T> {
    within_for(COMMAND_TIMEOUT, command).await
}

async fn within_for<T>(
    limit: Duration,
    command: impl Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(limit, command).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "Redis did not answer in time",
        ))),
    }
}

/// Runs until `stop` turns true. `direct` carries this node's own events for the stream.
pub(crate) async fn run(
    ctx: QueueContext,
    mut direct: mpsc::Receiver<AppSignal>,
    mut stop: watch::Receiver<bool>,
) {
    let client = match redis::Client::open(ctx.cluster.redis_url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("webhooks: bad Redis URL: {e}; cluster webhooks are off");
            return;
        }
    };
    let (acks_tx, mut acks) = mpsc::unbounded_channel::<String>();
    let held: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut backoff = Duration::from_millis(100);
    let mut reported = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let failure = match connect(&client).await {
            Ok((commands, reader)) => {
                backoff = Duration::from_millis(100);
                reported = false;
                let session = Session {
                    ctx: &ctx,
                    acks_tx: &acks_tx,
                    held: &held,
                };
                tokio::select! {
                    e = session.serve(commands, reader, &mut direct, &mut acks) => e,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            Err(e) => e.to_string(),
        };
        if !reported {
            tracing::warn!(
                "webhooks: Redis unavailable ({failure}); webhooks wait in Redis (and this node's own in a bounded queue) until it is back"
            );
            reported = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect(
    client: &redis::Client,
) -> redis::RedisResult<(MultiplexedConnection, MultiplexedConnection)> {
    let quick = redis::AsyncConnectionConfig::new().set_response_timeout(Some(COMMAND_TIMEOUT));
    let blocking =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(BLOCK + COMMAND_TIMEOUT));
    let commands = within(client.get_multiplexed_async_connection_with_config(&quick)).await?;
    // Blocking reads get a connection of their own, so they never hold up other commands.
    let reader = within(client.get_multiplexed_async_connection_with_config(&blocking)).await?;
    Ok((commands, reader))
}

struct Session<'a> {
    ctx: &'a QueueContext,
    acks_tx: &'a mpsc::UnboundedSender<String>,
    held: &'a Arc<Mutex<HashSet<String>>>,
}

impl Session<'_> {
    fn stream(&self) -> String {
        self.ctx.cluster.webhook_stream()
    }

    /// Serves until Redis fails; returns why.
    async fn serve(
        &self,
        commands: MultiplexedConnection,
        mut reader: MultiplexedConnection,
        direct: &mut mpsc::Receiver<AppSignal>,
        acks: &mut mpsc::UnboundedReceiver<String>,
    ) -> String {
        let stream = self.stream();
        let mut conn = commands.clone();
        let created: redis::RedisResult<()> = within(
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn),
        )
        .await;
        if let Err(e) = created
            && e.code() != Some("BUSYGROUP")
        {
            return e.to_string();
        }
        let node = self.ctx.cluster.node_id.to_string();

        let reading = async {
            loop {
                let reply: redis::RedisResult<Option<StreamReadReply>> = within_for(
                    BLOCK + COMMAND_TIMEOUT,
                    redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(GROUP)
                        .arg(&node)
                        .arg("COUNT")
                        .arg(READ_BATCH)
                        .arg("BLOCK")
                        .arg(BLOCK.as_millis() as u64)
                        .arg("STREAMS")
                        .arg(&stream)
                        .arg(">")
                        .query_async(&mut reader),
                )
                .await;
                match reply {
                    Ok(reply) => {
                        for key in reply.map(|r| r.keys).unwrap_or_default() {
                            for entry in key.ids {
                                self.hand_over(entry);
                            }
                        }
                    }
                    Err(e) => return e.to_string(),
                }
            }
        };

        let mut ack_conn = commands.clone();
        let acknowledging = async {
            let mut ids = Vec::new();
            loop {
                if acks.recv_many(&mut ids, 512).await == 0 {
                    return "the server is stopping".to_string();
                }
                let mut pipe = redis::pipe();
                pipe.cmd("XACK").arg(&stream).arg(GROUP).arg(&ids).ignore();
                pipe.cmd("XDEL").arg(&stream).arg(&ids).ignore();
                if let Err(e) = within(pipe.query_async::<()>(&mut ack_conn)).await {
                    // Not acknowledged: the entries will be delivered again after a reclaim.
                    return e.to_string();
                }
                ids.clear();
            }
        };

        let mut promote_conn = commands.clone();
        let promote = Script::new(scripts::PROMOTE);
        let promoting = async {
            let mut tick = tokio::time::interval(PROMOTE_EVERY);
            loop {
                tick.tick().await;
                let cutoff =
                    super::now_ms().saturating_sub(self.ctx.settings.delay.as_millis() as u64);
                let moved: redis::RedisResult<i64> = within(
                    promote
                        .key(self.ctx.cluster.webhook_delayed())
                        .key(&stream)
                        .arg(cutoff)
                        .arg(500)
                        .arg(scripts::STREAM_MAX)
                        .invoke_async(&mut promote_conn),
                )
                .await;
                if let Err(e) = moved {
                    return e.to_string();
                }
            }
        };

        let mut claim_conn = commands.clone();
        let reclaiming = async {
            let every = (self.ctx.settings.reclaim_after / 3).max(Duration::from_millis(100));
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = self.reclaim(&mut claim_conn, &node).await {
                    return e.to_string();
                }
            }
        };

        let mut direct_conn = commands.clone();
        let cache_miss = Script::new(scripts::CACHE_MISS);
        let forwarding = async {
            while let Some(signal) = direct.recv().await {
                if let Err(e) = self.forward(&mut direct_conn, &cache_miss, signal).await {
                    return e.to_string();
                }
            }
            "the server is stopping".to_string()
        };

        tokio::select! {
            e = reading => e,
            e = acknowledging => e,
            e = promoting => e,
            e = reclaiming => e,
            e = forwarding => e,
        }
    }

    /// Hands a stream entry's event to the dispatcher; the entry is acknowledged when every
    /// target is done with it (at once, when none takes it).
    fn hand_over(&self, entry: StreamId) {
        if !self.held.lock().insert(entry.id.clone()) {
            return;
        }
        let ack = Arc::new(StreamAck {
            id: entry.id.clone(),
            acks: self.acks_tx.clone(),
            held: self.held.clone(),
        });
        let Some((app_id, mut event)) = decode(&entry) else {
            tracing::debug!("webhooks: skipped a stream entry that is not Crier's");
            return;
        };
        event.done = Some(ack);
        self.ctx.dispatcher.submit(&app_id, event);
    }

    /// Keeps this node's in-progress entries its own, and takes over the entries of nodes
    /// that read them and stopped.
    async fn reclaim(
        &self,
        conn: &mut MultiplexedConnection,
        node: &str,
    ) -> redis::RedisResult<()> {
        let stream = self.stream();
        let mine: Vec<String> = self.held.lock().iter().cloned().collect();
        for chunk in mine.chunks(512) {
            let _: redis::Value = within(
                redis::cmd("XCLAIM")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg(node)
                    .arg(0)
                    .arg(chunk)
                    .arg("JUSTID")
                    .query_async(conn),
            )
            .await?;
        }
        let mut start = "0-0".to_string();
        for _ in 0..10 {
            let reply: StreamAutoClaimReply = within(
                redis::cmd("XAUTOCLAIM")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg(node)
                    .arg(self.ctx.settings.reclaim_after.as_millis() as u64)
                    .arg(&start)
                    .arg("COUNT")
                    .arg(READ_BATCH)
                    .query_async(conn),
            )
            .await?;
            if !reply.claimed.is_empty() {
                tracing::info!(
                    "webhooks: took over {} webhook(s) another node left undelivered",
                    reply.claimed.len()
                );
            }
            for entry in reply.claimed {
                self.hand_over(entry);
            }
            if reply.next_stream_id == "0-0" {
                break;
            }
            start = reply.next_stream_id;
        }
        Ok(())
    }

    /// Adds one of this node's own events to the stream.
    async fn forward(
        &self,
        conn: &mut MultiplexedConnection,
        cache_miss: &Script,
        signal: AppSignal,
    ) -> redis::RedisResult<()> {
        let stream = self.stream();
        let AppSignal {
            app_id,
            time_ms,
            signal,
        } = signal;
        match signal {
            Signal::CacheMiss { channel } => {
                let _: i64 = within(
                    cache_miss
                        .key(format!(
                            "{}:{app_id}:wh:miss:{channel}",
                            self.ctx.cluster.prefix
                        ))
                        .key(&stream)
                        .arg(CACHE_MISS_QUIET.as_millis() as u64)
                        .arg(&*app_id)
                        .arg(&*channel)
                        .arg(time_ms)
                        .arg(scripts::STREAM_MAX)
                        .invoke_async(conn),
                )
                .await?;
            }
            Signal::ClientEvent {
                channel,
                event,
                data,
                socket_id,
                user_id,
            } => {
                let e = WebhookEvent::client_event(
                    &channel,
                    &event,
                    &data,
                    &socket_id,
                    user_id.as_deref(),
                    time_ms,
                );
                let _: String = within(
                    redis::cmd("XADD")
                        .arg(&stream)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(scripts::STREAM_MAX)
                        .arg("*")
                        .arg("a")
                        .arg(&*app_id)
                        .arg("t")
                        .arg(time_ms)
                        .arg("k")
                        .arg(WebhookKind::ClientEvent.name())
                        .arg("c")
                        .arg(&*channel)
                        .arg("e")
                        .arg(&*e.json)
                        .query_async(conn),
                )
                .await?;
            }
            // Decided by the cluster scripts, never sent here.
            Signal::Occupancy { .. } | Signal::Member { .. } | Signal::Count { .. } => {}
        }
        Ok(())
    }
}

/// The app and event a stream entry holds.
fn decode(entry: &StreamId) -> Option<(String, WebhookEvent)> {
    let app_id: String = entry.get("a")?;
    let time_ms: u64 = entry.get("t")?;
    let kind = WebhookKind::parse(&entry.get::<String>("k")?)?;
    let channel: String = entry.get("c")?;
    let event = if let Some(json) = entry.get::<String>("e") {
        WebhookEvent::new(kind, Arc::from(channel.as_str()), time_ms, json)
    } else {
        match kind {
            WebhookKind::MemberAdded | WebhookKind::MemberRemoved => {
                let user: String = entry.get("u")?;
                WebhookEvent::member(kind, &channel, &user, time_ms)
            }
            WebhookKind::ChannelOccupied | WebhookKind::ChannelVacated | WebhookKind::CacheMiss => {
                WebhookEvent::channel(kind, &channel, time_ms)
            }
            WebhookKind::ClientEvent | WebhookKind::SubscriptionCount => return None,
        }
    };
    Some((app_id, event))
}
