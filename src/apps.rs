//! The apps a server hosts: each app's settings, its channel registry, its signed-in users
//! and its live connection count, found by id (HTTP API) or by key (WebSocket URL).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::channels::{Registry, Users};
use crate::cluster::{Cluster, ClusterChannels};
use crate::config::AppConfig;
use crate::metrics::{AppMetrics, Families};
use crate::webhooks::{AppWebhooks, Taps};

/// One app at run time.
#[derive(Debug)]
pub struct App {
    pub config: AppConfig,
    pub registry: Registry,
    pub users: Users,
    /// The other nodes, when the server is part of a cluster.
    pub cluster: Option<ClusterChannels>,
    /// The app's webhooks, when it has targets.
    pub webhooks: Option<Arc<AppWebhooks>>,
    pub metrics: Arc<AppMetrics>,
    /// This node's HTTP API rate-limit windows.
    pub rate_windows: crate::http_api::rate_limit::Windows,
    connections: AtomicUsize,
    /// In a cluster: the other nodes' connections, as last read from Redis (each second).
    remote_connections: AtomicUsize,
}

/// Holds one of an app's connection slots; the slot is released on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    app: Arc<App>,
}

impl App {
    pub fn new(config: AppConfig) -> Self {
        App::in_cluster(config, None)
    }

    /// An app whose channels are shared with the other nodes of `cluster`.
    pub fn in_cluster(config: AppConfig, cluster: Option<&Arc<Cluster>>) -> Self {
        App::build(config, cluster, None, None)
    }

    /// An app in `cluster` (if any), signalling its webhooks through `taps` (if any) and
    /// counting into `families` (if any).
    pub fn build(
        config: AppConfig,
        cluster: Option<&Arc<Cluster>>,
        taps: Option<&Taps>,
        families: Option<&Families>,
    ) -> Self {
        let cluster = cluster.map(|c| ClusterChannels {
            cluster: c.clone(),
            app_id: Arc::from(config.id.as_str()),
        });
        let webhooks = taps.and_then(|t| t.for_app(&config, cluster.as_ref()));
        let mut registry = Registry::new(config.subscription_count_events, cluster.clone());
        registry.set_webhooks(webhooks.clone());
        let metrics = Arc::new(match families {
            Some(f) => f.for_app(&config.id),
            None => AppMetrics::detached(&config.id),
        });
        registry.set_metrics(metrics.clone());
        App {
            metrics,
            rate_windows: Default::default(),
            registry,
            users: Users::new(cluster.clone()),
            cluster,
            webhooks,
            config,
            connections: AtomicUsize::new(0),
            remote_connections: AtomicUsize::new(0),
        }
    }

    /// Takes a connection slot unless the app is at its `max_connections`.
    pub fn try_connect(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let limit = self
            .config
            .max_connections
            .unwrap_or(usize::MAX)
            .saturating_sub(self.remote_connections.load(Ordering::Relaxed));
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot { app: self.clone() })
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// The other nodes' connections to this app (cluster only).
    pub fn set_remote_connections(&self, n: usize) {
        self.remote_connections.store(n, Ordering::Relaxed);
    }
}

impl ConnectionSlot {
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.app.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Lookup of apps by id and by key. Built once at start-up; read-only afterwards.
#[derive(Debug, Clone)]
pub struct AppStore {
    by_id: Arc<HashMap<String, Arc<App>>>,
    by_key: Arc<HashMap<String, Arc<App>>>,
}

impl AppStore {
    pub fn new(apps: &[AppConfig]) -> Self {
        AppStore::in_cluster(apps, None)
    }

    pub fn in_cluster(apps: &[AppConfig], cluster: Option<&Arc<Cluster>>) -> Self {
        AppStore::build(apps, cluster, None, None)
    }

    pub fn build(
        apps: &[AppConfig],
        cluster: Option<&Arc<Cluster>>,
        taps: Option<&Taps>,
        families: Option<&Families>,
    ) -> Self {
        let apps: Vec<Arc<App>> = apps
            .iter()
            .cloned()
            .map(|c| Arc::new(App::build(c, cluster, taps, families)))
            .collect();
        AppStore {
            by_id: Arc::new(
                apps.iter()
                    .map(|a| (a.config.id.clone(), a.clone()))
                    .collect(),
            ),
            by_key: Arc::new(
                apps.iter()
                    .map(|a| (a.config.key.clone(), a.clone()))
                    .collect(),
            ),
        }
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.by_id.get(id)
    }

    pub fn by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.by_key.get(key)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<App>> {
        self.by_id.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_slots_respect_the_limit_and_are_released() {
        let app = Arc::new(App::new(AppConfig {
            max_connections: Some(1),
            ..AppConfig::default()
        }));
        let slot = app.try_connect();
        assert!(slot.is_some());
        assert!(app.try_connect().is_none());
        drop(slot);
        assert!(app.try_connect().is_some());
    }

    #[test]
    fn lookup_by_id_and_key() {
        let store = AppStore::new(&[AppConfig::default()]);
        assert!(store.by_id("1").is_some());
        assert!(store.by_key("app-key").is_some());
        assert!(store.by_key("nope").is_none());
    }
}
