//! Several Crier nodes joined through Redis, so that a publish on any node reaches the
//! subscribers on every node.
//!
//! Routing follows interest: each occupied channel of a node is one Redis pub/sub channel,
//! `{prefix}:{app_id}:{channel}`, subscribed on the node's first local subscriber and dropped
//! after its last ([`interest`]). A publish is delivered to the node's own subscribers
//! directly (no Redis on the local path, and it survives Redis's loss), encoded once, and
//! published once to Redis as `{origin, excluded socket, frame}` ([`wire`]); a receiving node
//! pushes the frame's bytes to its subscribers without decoding the event. Redis traffic per
//! publish therefore grows with the interested nodes, not with the cluster, and never with
//! subscribers.
//!
//! Ordering: every publish of a node goes out on one Redis connection, in order, and Redis
//! delivers a channel's messages to each subscriber in that order.
//!
//! When Redis is away ([`link`]) the node goes on serving its own clients; cross-node
//! messages are dropped and counted (the queue to Redis is bounded), the log says so once,
//! and on reconnect the node subscribes again to every channel it has subscribers on.

pub(crate) mod interest;
pub(crate) mod link;
pub(crate) mod queries;
pub(crate) mod scripts;
pub(crate) mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::config::ClusterSettings;
use interest::Interest;

/// Publishes waiting for the Redis connection; past it they are dropped (and counted).
pub(crate) const PUBLISH_QUEUE: usize = 16 * 1024;

/// One publish on its way to Redis.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub key: String,
    pub payload: Bytes,
    /// A cache channel's event, also kept in Redis for subscribers on nodes that were not
    /// listening: the key, the frame, and its time to live.
    pub cache: Option<(String, Bytes, Duration)>,
}

/// A node-level presence transition on its way to Redis: a user's first socket on this node
/// joined a channel, or its last one left.
#[derive(Debug)]
pub(crate) enum PresenceOp {
    Join {
        app_id: Arc<str>,
        channel: Arc<str>,
        user_id: Arc<str>,
        info: String,
        max_members: usize,
    },
    Leave {
        app_id: Arc<str>,
        channel: Arc<str>,
        user_id: Arc<str>,
    },
    /// The node's first subscriber of a channel joined, or its last one left (apps with
    /// occupancy webhooks only).
    Occupancy {
        app_id: Arc<str>,
        channel: Arc<str>,
        occupied: bool,
        time_ms: u64,
    },
    /// A user's first socket on this node signed in (watchlist online).
    SignedIn { app_id: Arc<str>, user_id: Arc<str> },
    /// A user's last socket on this node signed out.
    SignedOut { app_id: Arc<str>, user_id: Arc<str> },
}

/// The receiving ends of the queues the link drains.
#[derive(Debug)]
pub(crate) struct Queues {
    pub outgoing: mpsc::Receiver<Outgoing>,
    pub presence: mpsc::Receiver<PresenceOp>,
}

/// This node's handle on the cluster, shared by the registries and the HTTP API.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub node_id: Arc<str>,
    pub prefix: String,
    pub redis_url: String,
    pub interest: Interest,
    outgoing: mpsc::Sender<Outgoing>,
    presence: mpsc::Sender<PresenceOp>,
    /// Cross-node messages lost while Redis was away or the queue was full.
    pub dropped: AtomicU64,
    /// A connection for the HTTP API's cluster-wide queries, while the link is connected.
    commands: parking_lot::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl Cluster {
    /// The handle, and the receiving ends of its queues for [`link::run`].
    pub(crate) fn new(settings: &ClusterSettings, redis_url: &str) -> (Arc<Cluster>, Queues) {
        let node_id: Arc<str> = match &settings.node_id {
            Some(id) => Arc::from(id.as_str()),
            None => Arc::from(format!("node-{:08x}", rand::random::<u32>())),
        };
        let (tx, outgoing) = mpsc::channel(PUBLISH_QUEUE);
        let (presence_tx, presence) = mpsc::channel(PUBLISH_QUEUE);
        let cluster = Arc::new(Cluster {
            node_id,
            prefix: settings.prefix.clone(),
            redis_url: redis_url.to_string(),
            interest: Interest::default(),
            outgoing: tx,
            presence: presence_tx,
            dropped: AtomicU64::new(0),
            commands: parking_lot::Mutex::new(None),
        });
        (cluster, Queues { outgoing, presence })
    }

    /// A connection to Redis for queries; `None` while the link is not connected.
    pub(crate) fn commands(&self) -> Option<redis::aio::MultiplexedConnection> {
        self.commands.lock().clone()
    }

    pub(crate) fn set_commands(&self, conn: Option<redis::aio::MultiplexedConnection>) {
        *self.commands.lock() = conn;
    }

    /// This node's subscription counts: field `APP\nCHANNEL`, value the local count.
    pub(crate) fn counts_key(&self, node: &str) -> String {
        format!("{}:node:{node}:subs", self.prefix)
    }

    /// This node's connection count per app id.
    pub(crate) fn connections_key(&self, node: &str) -> String {
        format!("{}:node:{node}:conns", self.prefix)
    }

    /// The stream of webhook events every node delivers from.
    pub(crate) fn webhook_stream(&self) -> String {
        format!("{}:wh:events", self.prefix)
    }

    /// `channel_vacated` and `member_removed` webhooks waiting out their delay.
    pub(crate) fn webhook_delayed(&self) -> String {
        format!("{}:wh:delayed", self.prefix)
    }

    /// The nodes with subscribers of an app's channel (for occupancy webhooks).
    pub(crate) fn occupancy_key(&self, app_id: &str, channel: &str) -> String {
        format!("{}:{app_id}:occ:{channel}", self.prefix)
    }

    /// The channels a node has subscribers of, as `A\nC` (for occupancy webhooks).
    pub(crate) fn node_occupancy_key(&self, node: &str) -> String {
        format!("{}:node:{node}:occ", self.prefix)
    }

    /// Redis is known to be unreachable: presence is kept locally until it is back.
    pub(crate) fn is_down(&self) -> bool {
        self.interest.is_down()
    }

    /// Queues a presence transition for Redis. A full queue (Redis far behind) drops it and
    /// counts it; the node's presence is asserted anew on every reconnect.
    pub(crate) fn presence(&self, op: PresenceOp) {
        if self.presence.try_send(op).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Redis channel of an app's channel.
    pub(crate) fn key(&self, app_id: &str, channel: &str) -> String {
        format!("{}:{app_id}:{channel}", self.prefix)
    }

    /// The app id and channel a Redis channel of this cluster stands for.
    pub(crate) fn parse_key<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix(':')?
            .split_once(':')
    }

    /// Sends a publish that was delivered locally to the other nodes. Never waits: a full
    /// queue (Redis away or too slow) drops the message and counts it.
    pub(crate) fn publish(&self, app_id: &str, channel: &str, except: Option<&str>, frame: &Bytes) {
        self.send(Outgoing {
            key: self.key(app_id, channel),
            payload: wire::encode(&self.node_id, except, frame),
            cache: None,
        });
    }

    /// Like [`Cluster::publish`] for a cache channel: the event is also kept in Redis for `ttl`.
    pub(crate) fn publish_cached(
        &self,
        app_id: &str,
        channel: &str,
        except: Option<&str>,
        frame: &Bytes,
        ttl: Duration,
    ) {
        self.send(Outgoing {
            key: self.key(app_id, channel),
            payload: wire::encode(&self.node_id, except, frame),
            cache: Some((self.cache_key(app_id, channel), frame.clone(), ttl)),
        });
    }

    /// Where a cache channel's last event is kept.
    pub(crate) fn cache_key(&self, app_id: &str, channel: &str) -> String {
        format!("{}:{app_id}:cache:{channel}", self.prefix)
    }

    fn send(&self, outgoing: Outgoing) {
        if self.outgoing.try_send(outgoing).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The message that asks every node to close a user's sockets (`terminate_connections`).
pub(crate) const TERMINATE: &[u8] = b"T1";

/// What a registry needs to tell the cluster about its channels.
#[derive(Debug, Clone)]
pub(crate) struct ClusterChannels {
    pub cluster: Arc<Cluster>,
    pub app_id: Arc<str>,
}

impl ClusterChannels {
    /// First local subscriber; true when it may be acknowledged at once.
    pub(crate) fn want(&self, channel: &str) -> bool {
        self.cluster
            .interest
            .want(&self.cluster.key(&self.app_id, channel))
    }

    /// Last local subscriber gone.
    pub(crate) fn unwant(&self, channel: &str) {
        self.cluster
            .interest
            .unwant(&self.cluster.key(&self.app_id, channel));
    }

    pub(crate) fn publish(&self, channel: &str, except: Option<&str>, frame: &Bytes) {
        self.cluster.publish(&self.app_id, channel, except, frame);
    }

    pub(crate) fn publish_cached(
        &self,
        channel: &str,
        except: Option<&str>,
        frame: &Bytes,
        ttl: Duration,
    ) {
        self.cluster
            .publish_cached(&self.app_id, channel, except, frame, ttl);
    }

    pub(crate) fn is_down(&self) -> bool {
        self.cluster.is_down()
    }

    /// Asks every node to close the sockets signed in as `user`.
    pub(crate) fn terminate(&self, user: &str) {
        self.cluster.send(Outgoing {
            key: self.cluster.key(
                &self.app_id,
                &format!("{}{user}", crate::protocol::channel::USER_CHANNEL_PREFIX),
            ),
            payload: Bytes::from_static(TERMINATE),
            cache: None,
        });
    }

    /// A user's first socket on this node signed in.
    pub(crate) fn signed_in(&self, user_id: &Arc<str>) {
        self.cluster.presence(PresenceOp::SignedIn {
            app_id: self.app_id.clone(),
            user_id: user_id.clone(),
        });
    }

    /// A user's last socket on this node signed out.
    pub(crate) fn signed_out(&self, user_id: &Arc<str>) {
        self.cluster.presence(PresenceOp::SignedOut {
            app_id: self.app_id.clone(),
            user_id: user_id.clone(),
        });
    }

    /// A user's first socket on this node joined `channel`.
    pub(crate) fn presence_join(
        &self,
        channel: &str,
        user_id: &Arc<str>,
        info: String,
        max_members: usize,
    ) {
        self.cluster.presence(PresenceOp::Join {
            app_id: self.app_id.clone(),
            channel: Arc::from(channel),
            user_id: user_id.clone(),
            info,
            max_members,
        });
    }

    /// A user's last socket on this node left `channel`.
    pub(crate) fn presence_leave(&self, channel: &str, user_id: &Arc<str>) {
        self.cluster.presence(PresenceOp::Leave {
            app_id: self.app_id.clone(),
            channel: Arc::from(channel),
            user_id: user_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_the_prefix() {
        let settings = ClusterSettings {
            prefix: "crier:test".into(),
            ..ClusterSettings::default()
        };
        let (cluster, _rx) = Cluster::new(&settings, "redis://127.0.0.1:1");
        let key = cluster.key("app-1", "presence-room:1");
        assert_eq!(key, "crier:test:app-1:presence-room:1");
        assert_eq!(cluster.parse_key(&key), Some(("app-1", "presence-room:1")));
        assert_eq!(cluster.parse_key("other:app-1:x"), None);
        assert!(cluster.node_id.starts_with("node-"));
    }
}
