//! The node's connection to Redis: one connection carries this node's publishes (in order),
//! another its subscriptions and what arrives on them. When Redis goes away, the link says so
//! once, keeps dropping (and counting) cross-node publishes so nothing queues up, retries with
//! a growing pause, and on reconnect subscribes again to every channel the node has
//! subscribers on. It never makes a client wait on Redis for longer than one subscribe.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio::sync::{mpsc, watch};

use super::{Cluster, Outgoing, wire};
use crate::apps::AppStore;
use crate::protocol::socket_id::SocketId;

/// Longest pause between two attempts to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long one attempt to connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Publishes sent to Redis in one pipeline, at most.
const PUBLISH_BATCH: usize = 256;
/// Channels subscribed to in one command when subscribing anew.
const SUBSCRIBE_BATCH: usize = 512;

/// Everything the link needs besides the cluster handle.
pub struct LinkContext {
    pub cluster: Arc<Cluster>,
    pub apps: AppStore,
    /// This node's part of socket ids, to recognise an excluded socket as one of ours.
    pub socket_node: u32,
}

/// Runs the link until `stop` turns true.
pub async fn run(
    ctx: LinkContext,
    mut outgoing: mpsc::Receiver<Outgoing>,
    mut stop: watch::Receiver<bool>,
) {
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
    let mut backoff = Duration::from_millis(100);
    let mut reported_down = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(&client)).await;
        let failure = match connected {
            Ok(Ok((publisher, sink, stream))) => {
                backoff = Duration::from_millis(100);
                let dropped = cluster.dropped.swap(0, Ordering::Relaxed);
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
                let session = Session {
                    ctx: &ctx,
                    publisher,
                    sink,
                };
                tokio::select! {
                    e = session.serve(stream, &mut outgoing) => e,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {CONNECT_TIMEOUT:?}"),
        };
        for key in cluster.interest.disconnected() {
            confirm(&ctx, &key);
        }
        if !reported_down {
            tracing::warn!(
                "cluster: Redis at {} unreachable ({failure}); serving this node's clients only, cross-node messages are dropped until it is back",
                cluster.redis_url
            );
            reported_down = true;
        }
        // Drop what is queued and what arrives while waiting, so nothing piles up.
        let pause = tokio::time::sleep(backoff);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                message = outgoing.recv() => match message {
                    Some(_) => { cluster.dropped.fetch_add(1, Ordering::Relaxed); }
                    None => return,
                },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect(
    client: &redis::Client,
) -> redis::RedisResult<(MultiplexedConnection, PubSubSink, PubSubStream)> {
    let publisher = client.get_multiplexed_async_connection().await?;
    let (sink, stream) = client.get_async_pubsub().await?.split();
    Ok((publisher, sink, stream))
}

/// One connected period of the link.
struct Session<'a> {
    ctx: &'a LinkContext,
    publisher: MultiplexedConnection,
    sink: PubSubSink,
}

impl Session<'_> {
    /// Serves until the connection fails; returns why.
    async fn serve(
        mut self,
        mut stream: PubSubStream,
        outgoing: &mut mpsc::Receiver<Outgoing>,
    ) -> String {
        let cluster = &self.ctx.cluster;
        // Subscribe anew to every channel with local subscribers, then acknowledge the ones
        // that waited.
        let all = cluster.interest.connected();
        let mut subscribed = Ok(());
        for chunk in all.chunks(SUBSCRIBE_BATCH) {
            let names: Vec<&str> = chunk.iter().map(|c| &*c.key).collect();
            subscribed = self.sink.subscribe(names).await;
            if subscribed.is_err() {
                break;
            }
        }
        // Heard now, or Redis failed meanwhile: either way nobody waits any longer.
        for change in all.iter().filter(|c| c.confirm) {
            confirm(self.ctx, &change.key);
        }
        if let Err(e) = subscribed {
            return e.to_string();
        }
        let mut sink = self.sink.clone();
        let interest = async {
            loop {
                let changes = cluster.interest.take_changes();
                for (i, change) in changes.iter().enumerate() {
                    let done = if change.desired {
                        sink.subscribe(&*change.key).await
                    } else {
                        sink.unsubscribe(&*change.key).await
                    };
                    if let Err(e) = done {
                        // Redis failed: nobody waits for a channel it cannot hear.
                        for rest in changes[i..].iter().filter(|c| c.confirm) {
                            confirm(self.ctx, &rest.key);
                        }
                        return e.to_string();
                    }
                    if change.confirm {
                        confirm(self.ctx, &change.key);
                    }
                }
                cluster.interest.changed().await;
            }
        };
        let publisher = &mut self.publisher;
        let publishing = async {
            let mut batch = Vec::with_capacity(PUBLISH_BATCH);
            loop {
                if outgoing.recv_many(&mut batch, PUBLISH_BATCH).await == 0 {
                    return "the server is stopping".to_string();
                }
                let mut pipe = redis::pipe();
                for message in batch.drain(..) {
                    pipe.publish(message.key, &message.payload[..]).ignore();
                }
                if let Err(e) = pipe.query_async::<()>(publisher).await {
                    return e.to_string();
                }
            }
        };
        let receiving = async {
            while let Some(message) = stream.next().await {
                deliver(
                    self.ctx,
                    message.get_channel_name(),
                    message.get_payload_bytes(),
                );
            }
            "the subscription connection closed".to_string()
        };
        tokio::select! {
            e = interest => e,
            e = publishing => e,
            e = receiving => e,
        }
    }
}

/// Acknowledges the subscribers that waited for `key` to be heard.
fn confirm(ctx: &LinkContext, key: &str) {
    if let Some((app_id, channel)) = ctx.cluster.parse_key(key)
        && let Some(app) = ctx.apps.by_id(app_id)
    {
        app.registry.heard(channel);
    }
}

/// Pushes a publish from another node to this node's subscribers.
fn deliver(ctx: &LinkContext, key: &str, payload: &[u8]) {
    let Some((app_id, channel)) = ctx.cluster.parse_key(key) else {
        return;
    };
    let Some(app) = ctx.apps.by_id(app_id) else {
        return;
    };
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
    app.registry.publish(channel, &delivery.frame, except);
}
