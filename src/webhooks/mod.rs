//! Webhooks: the apps' backends learn that a channel filled or emptied, that a presence user
//! joined or left, that a browser sent a client event, that a cache channel was empty, and
//! how many subscribe to a channel.
//!
//! ```text
//!  registry / session ──signals──► single node: local::run (debounce, dedupe, count pacing)
//!        │                                          │
//!        └─ cluster: node-level transitions ──► Redis scripts decide once for the cluster,
//!                                               write a stream (queue::run reads it)
//!                                                   │
//!                                   dispatch: one queue per target, batches ──► deliver:
//!                                   signed POST, 4 s deadline, retries with backoff
//! ```
//!
//! The registry and the sessions only ever *signal*: a non-blocking `try_send` into a bounded
//! queue, never a socket write or a Redis call of their own. A receiver that hangs or fails
//! costs timeouts and retries in the webhook tasks, and a bounded amount of memory per target
//! ([`settings::WebhookSettings::queue_events`]); past it, events for that target are dropped
//! and counted, never queued without bound.

pub(crate) mod deliver;
pub(crate) mod dispatch;
pub(crate) mod event;
pub(crate) mod local;
pub(crate) mod queue;
pub(crate) mod settings;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use tokio::sync::watch;

use crate::cluster::{Cluster, ClusterChannels, PresenceOp};
use crate::config::{AppConfig, Config};
use dispatch::Dispatcher;
use settings::{KindSet, WebhookKind};

/// Signals waiting for the webhook task, at most; past it they are dropped and counted.
pub(crate) const SIGNAL_QUEUE: usize = 64 * 1024;

/// Milliseconds since the Unix epoch: a webhook's `time_ms`.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What happened, as the registry or a session saw it on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    /// The node's first subscriber of the channel joined (`true`), or its last left.
    Occupancy {
        channel: Arc<str>,
        occupied: bool,
    },
    /// A presence user's first socket joined (`true`), or its last one left (single node).
    Member {
        channel: Arc<str>,
        user_id: Arc<str>,
        added: bool,
    },
    ClientEvent {
        channel: Arc<str>,
        event: String,
        data: String,
        socket_id: String,
        user_id: Option<Arc<str>>,
    },
    CacheMiss {
        channel: Arc<str>,
    },
    /// A non-presence channel's subscriber count changed (single node).
    Count {
        channel: Arc<str>,
        count: usize,
    },
}

/// One signal of one app, with the time it happened.
#[derive(Debug, Clone)]
pub(crate) struct AppSignal {
    pub app_id: Arc<str>,
    pub time_ms: u64,
    pub signal: Signal,
}

/// Counters of the webhook pipeline, for the logs (and the metrics to come).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Webhook requests answered with 2xx.
    pub delivered: AtomicU64,
    /// Attempts that failed (non-2xx, refused, timed out) and were retried or given up.
    pub failed_attempts: AtomicU64,
    /// Requests given up after `retry_for`.
    pub given_up: AtomicU64,
    /// Events dropped because a queue was full.
    pub dropped: AtomicU64,
    /// Events waiting in the targets' queues now.
    pub queued: std::sync::atomic::AtomicI64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The running webhook pipeline's entry points, for building each app's [`AppWebhooks`].
#[derive(Debug, Clone)]
pub(crate) struct Taps {
    tx: mpsc::Sender<AppSignal>,
    clustered: bool,
    pub stats: Arc<Stats>,
    dispatcher: Arc<Dispatcher>,
}

impl Taps {
    /// Starts the pipeline: the dispatcher's workers, and the local task (single node) or the
    /// Redis queue task (cluster). A single node always starts it (idle, it costs one waiting
    /// task), so a reload can add the first target; a cluster node only when some app has
    /// targets, since its queue task reads Redis. `None` when not started.
    pub(crate) fn start(
        config: &Config,
        cluster: Option<&Arc<Cluster>>,
        stop: watch::Receiver<bool>,
    ) -> Option<Taps> {
        if cluster.is_some() && config.apps.iter().all(|a| a.webhooks.is_empty()) {
            return None;
        }
        let stats = Arc::new(Stats::default());
        let dispatcher = Dispatcher::start(&config.apps, &config.webhooks, stats.clone());
        let (tx, rx) = mpsc::channel(SIGNAL_QUEUE);
        match cluster {
            None => {
                tokio::spawn(local::run(
                    rx,
                    dispatcher.clone(),
                    config.webhooks.clone(),
                    stop,
                ));
            }
            Some(cluster) => {
                let ctx = queue::QueueContext {
                    cluster: cluster.clone(),
                    dispatcher: dispatcher.clone(),
                    settings: config.webhooks.clone(),
                };
                tokio::spawn(queue::run(ctx, rx, stop));
            }
        }
        Some(Taps {
            tx,
            clustered: cluster.is_some(),
            stats,
            dispatcher,
        })
    }

    /// Reports deliveries to the consoles of `apps` (the server's apps, once built).
    pub(crate) fn attach(&self, apps: &crate::apps::AppStore) {
        self.dispatcher.attach(apps);
    }

    /// Sends to the apps' targets as `apps` lists them from now on (a reload).
    pub(crate) fn reconfigure(&self, apps: &[AppConfig]) {
        self.dispatcher.reconfigure(apps);
    }

    /// The hooks of one app; `None` when it has no targets.
    pub(crate) fn for_app(
        &self,
        config: &AppConfig,
        cluster: Option<&ClusterChannels>,
    ) -> Option<Arc<AppWebhooks>> {
        let kinds = config
            .webhooks
            .iter()
            .fold(KindSet::default(), |k, t| k.union(t.kinds));
        if kinds.is_empty() {
            return None;
        }
        let hooks = match cluster {
            Some(channels) if self.clustered => {
                AppWebhooks::clustered(channels.clone(), kinds, self.tx.clone(), self.stats.clone())
            }
            _ => AppWebhooks::local(&config.id, kinds, self.tx.clone(), self.stats.clone()),
        };
        Some(Arc::new(hooks))
    }
}

/// Where an app's signals go.
#[derive(Debug, Clone)]
enum Route {
    /// Single node: the local webhook task.
    Local(mpsc::Sender<AppSignal>),
    /// Cluster: occupancy goes through the cluster link's scripts; the node's own events
    /// (client events, cache misses) straight to the Redis queue task.
    Cluster {
        channels: ClusterChannels,
        direct: mpsc::Sender<AppSignal>,
    },
}

/// One app's webhook hooks, held by its registry and sessions. Every method is a cheap test
/// of the kinds the app's targets take, then at most one non-blocking send.
#[derive(Debug)]
pub(crate) struct AppWebhooks {
    app_id: Arc<str>,
    kinds: KindSet,
    route: Route,
    stats: Arc<Stats>,
}

impl AppWebhooks {
    /// Hooks for a single node, sending into the local webhook task.
    pub(crate) fn local(
        app_id: &str,
        kinds: KindSet,
        tx: mpsc::Sender<AppSignal>,
        stats: Arc<Stats>,
    ) -> AppWebhooks {
        AppWebhooks {
            app_id: Arc::from(app_id),
            kinds,
            route: Route::Local(tx),
            stats,
        }
    }

    /// Hooks for a node of a cluster.
    pub(crate) fn clustered(
        channels: ClusterChannels,
        kinds: KindSet,
        direct: mpsc::Sender<AppSignal>,
        stats: Arc<Stats>,
    ) -> AppWebhooks {
        AppWebhooks {
            app_id: channels.app_id.clone(),
            kinds,
            route: Route::Cluster { channels, direct },
            stats,
        }
    }

    pub(crate) fn wants(&self, kind: WebhookKind) -> bool {
        self.kinds.contains(kind)
    }

    /// Whether presence member events are decided for webhooks (by the cluster scripts).
    pub(crate) fn wants_members(&self) -> bool {
        self.wants(WebhookKind::MemberAdded) || self.wants(WebhookKind::MemberRemoved)
    }

    fn wants_occupancy(&self) -> bool {
        self.wants(WebhookKind::ChannelOccupied) || self.wants(WebhookKind::ChannelVacated)
    }

    fn send(&self, tx: &mpsc::Sender<AppSignal>, signal: Signal) {
        let message = AppSignal {
            app_id: self.app_id.clone(),
            time_ms: now_ms(),
            signal,
        };
        if tx.try_send(message).is_err() {
            Stats::add(&self.stats.dropped, 1);
        }
    }

    /// The node's first subscriber of `channel` joined (`occupied`), or its last one left.
    /// Called under the channel's shard lock, so a channel's signals keep their order.
    pub(crate) fn occupancy(&self, channel: &Arc<str>, occupied: bool) {
        if !self.wants_occupancy() {
            return;
        }
        match &self.route {
            Route::Local(tx) => self.send(
                tx,
                Signal::Occupancy {
                    channel: channel.clone(),
                    occupied,
                },
            ),
            Route::Cluster { channels, .. } => {
                channels.cluster.presence(PresenceOp::Occupancy {
                    app_id: self.app_id.clone(),
                    channel: channel.clone(),
                    occupied,
                    time_ms: now_ms(),
                });
            }
        }
    }

    /// A presence user's first socket joined, or its last one left. In a cluster the
    /// presence scripts decide this for the whole cluster, so nodes never signal it.
    pub(crate) fn member(&self, channel: &Arc<str>, user_id: &Arc<str>, added: bool) {
        if !self.wants_members() {
            return;
        }
        if let Route::Local(tx) = &self.route {
            self.send(
                tx,
                Signal::Member {
                    channel: channel.clone(),
                    user_id: user_id.clone(),
                    added,
                },
            );
        }
    }

    pub(crate) fn client_event(
        &self,
        channel: &str,
        event: &str,
        data: &serde_json::value::RawValue,
        socket_id: String,
        user_id: Option<Arc<str>>,
    ) {
        if !self.wants(WebhookKind::ClientEvent) {
            return;
        }
        // `data` as a string: the client's string, or the JSON text of anything else.
        let text = data.get();
        let data = if text.starts_with('"') {
            serde_json::from_str::<String>(text).unwrap_or_else(|_| text.to_string())
        } else {
            text.to_string()
        };
        self.send(
            self.direct(),
            Signal::ClientEvent {
                channel: Arc::from(channel),
                event: event.to_string(),
                data,
                socket_id,
                user_id,
            },
        );
    }

    /// A subscriber of a cache channel found nothing cached.
    pub(crate) fn cache_miss(&self, channel: &Arc<str>) {
        if self.wants(WebhookKind::CacheMiss) {
            self.send(
                self.direct(),
                Signal::CacheMiss {
                    channel: channel.clone(),
                },
            );
        }
    }

    /// A channel's subscriber count on a single node (a cluster's counts are the link's).
    pub(crate) fn count(&self, channel: &Arc<str>, count: usize) {
        if !self.wants(WebhookKind::SubscriptionCount) {
            return;
        }
        if let Route::Local(tx) = &self.route {
            self.send(
                tx,
                Signal::Count {
                    channel: channel.clone(),
                    count,
                },
            );
        }
    }

    /// Whether the link should send this app's cluster-wide counts as webhooks.
    pub(crate) fn wants_cluster_counts(&self) -> bool {
        matches!(self.route, Route::Cluster { .. }) && self.wants(WebhookKind::SubscriptionCount)
    }

    pub(crate) fn wants_cluster_occupancy(&self) -> bool {
        matches!(self.route, Route::Cluster { .. }) && self.wants_occupancy()
    }

    fn direct(&self) -> &mpsc::Sender<AppSignal> {
        match &self.route {
            Route::Local(tx) => tx,
            Route::Cluster { direct, .. } => direct,
        }
    }
}
