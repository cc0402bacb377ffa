//! The debug console: a page at `/console` that shows one app's traffic as it happens
//! (connections, subscriptions, events, presence, webhooks, errors), its current figures,
//! and a form that publishes a test event.
//!
//! Cost: every place that reports to the console first asks [`Console::is_open`], one relaxed
//! atomic load; with no console open nothing else happens (no formatting, no allocation, no
//! lock). With one open, a line is serialized once and handed to each viewer's bounded
//! queue ([`viewer`]); a viewer that reads too slowly loses lines and is told how many, and
//! never slows a delivery.
//!
//! In a cluster, a node with a viewer announces it in Redis (a lease per node and app, renewed
//! with the node's own lease, see `cluster::link`); every node that sees an announcement from
//! another node also publishes its lines for that app on the app's `#console` Redis channel,
//! which the watching nodes hear. So a console on any node shows the whole cluster, at the
//! cost of one Redis publish per line per node while someone watches, and one Redis read per
//! node per second while nobody does.

pub(crate) mod http;
pub(crate) mod viewer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::cluster::ClusterChannels;
use viewer::Viewer;

/// The cluster channel (in the app's key space) that carries console lines between nodes;
/// `#` cannot start a Pusher channel name, so no client can subscribe to it.
pub(crate) const CLUSTER_CHANNEL: &str = "#console";

/// One app's console: who watches, and where its lines go.
#[derive(Debug, Default)]
pub(crate) struct Console {
    /// Local viewers, or another node's: the one flag the hot paths read.
    open: AtomicBool,
    local: AtomicUsize,
    /// Another node of the cluster has a viewer on this app (as last read from Redis).
    remote: AtomicBool,
    viewers: Mutex<Vec<Arc<Viewer>>>,
    cluster: Option<ClusterChannels>,
    /// HTTP API events seen while open, for the per-second figure.
    api_events: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Console {
    pub(crate) fn new(cluster: Option<ClusterChannels>) -> Self {
        Console {
            cluster,
            ..Console::default()
        }
    }

    /// Whether anyone watches; callers build a line only when this is true.
    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// Whether a viewer is connected to this node.
    pub(crate) fn watched_here(&self) -> bool {
        self.local.load(Ordering::Relaxed) > 0
    }

    fn refresh_open(&self) {
        let open = self.watched_here() || self.remote.load(Ordering::Relaxed);
        self.open.store(open, Ordering::Relaxed);
    }

    /// Another node has (or no longer has) a viewer on this app.
    pub(crate) fn set_remote_watched(&self, watched: bool) {
        if self.remote.swap(watched, Ordering::Relaxed) != watched {
            self.refresh_open();
        }
    }

    /// Reports `kind` with `fields` (a JSON object) to every viewer of the cluster.
    pub(crate) fn record(&self, kind: &str, fields: Value) {
        if !self.is_open() {
            return;
        }
        let node = self.cluster.as_ref().map(|c| &*c.cluster.node_id);
        let line = encode(kind, fields, node);
        self.relay(&line);
        if self.remote.load(Ordering::Relaxed)
            && let Some(cluster) = &self.cluster
        {
            cluster.publish(CLUSTER_CHANNEL, None, &line);
        }
    }

    /// An HTTP API event: counted for the figures, and reported.
    pub(crate) fn api_event(&self, fields: Value) {
        self.api_events.fetch_add(1, Ordering::Relaxed);
        self.record("api_event", fields);
    }

    pub(crate) fn api_events(&self) -> u64 {
        self.api_events.load(Ordering::Relaxed)
    }

    /// Hands an encoded line (ours, or another node's) to this node's viewers.
    pub(crate) fn relay(&self, line: &Bytes) {
        for viewer in self.viewers.lock().iter() {
            viewer.push(line.clone());
        }
    }

    /// A new viewer on this node; it stops receiving once [`Console::leave`] is called.
    pub(crate) fn join(&self) -> Arc<Viewer> {
        let viewer = Arc::new(Viewer::default());
        let mut viewers = self.viewers.lock();
        viewers.push(viewer.clone());
        let first = self.local.fetch_add(1, Ordering::Relaxed) == 0;
        drop(viewers);
        self.refresh_open();
        if first && let Some(cluster) = &self.cluster {
            cluster.want(CLUSTER_CHANNEL);
        }
        viewer
    }

    pub(crate) fn leave(&self, viewer: &Arc<Viewer>) {
        let mut viewers = self.viewers.lock();
        let before = viewers.len();
        viewers.retain(|v| !Arc::ptr_eq(v, viewer));
        let left = before != viewers.len();
        let last = left && self.local.fetch_sub(1, Ordering::Relaxed) == 1;
        drop(viewers);
        self.refresh_open();
        if last && let Some(cluster) = &self.cluster {
            cluster.unwant(CLUSTER_CHANNEL);
        }
    }

    /// Ends every viewer's stream (the server is stopping).
    pub(crate) fn close_all(&self) {
        for viewer in self.viewers.lock().iter() {
            viewer.close();
        }
    }
}

/// One line as the page reads it: a server-sent event whose data is `fields` with `type`,
/// `time` and (in a cluster) `node` added.
pub(crate) fn encode(kind: &str, fields: Value, node: Option<&str>) -> Bytes {
    let mut object = match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    object.insert("type".into(), kind.into());
    object.insert("time".into(), now_ms().into());
    if let Some(node) = node {
        object.insert("node".into(), node.into());
    }
    let mut out = b"data: ".to_vec();
    // A map of JSON values always serializes.
    let _ = serde_json::to_writer(&mut out, &object);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(line: &Bytes) -> Value {
        let text = std::str::from_utf8(line).unwrap_or("");
        let json = text
            .strip_prefix("data: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .unwrap_or("");
        serde_json::from_str(json).unwrap_or(Value::Null)
    }

    #[test]
    fn closed_console_records_nothing() {
        let console = Console::new(None);
        assert!(!console.is_open());
        console.record("subscribed", json!({ "channel": "a" }));
        let viewer = console.join();
        assert!(console.is_open());
        console.record("subscribed", json!({ "channel": "b" }));
        let lines = viewer.take_all();
        assert_eq!(lines.len(), 1);
        let line = parse(&lines[0]);
        assert_eq!(line["type"], "subscribed");
        assert_eq!(line["channel"], "b");
        assert!(line["time"].as_u64().unwrap_or(0) > 0);
        console.leave(&viewer);
        assert!(!console.is_open());
    }

    #[test]
    fn a_remote_viewer_opens_the_console() {
        let console = Console::new(None);
        console.set_remote_watched(true);
        assert!(console.is_open());
        let viewer = console.join();
        console.leave(&viewer);
        assert!(console.is_open(), "another node still watches");
        console.set_remote_watched(false);
        assert!(!console.is_open());
    }
}
