//! The apps a server hosts: each app's settings, its channel registry, its signed-in users
//! and its live connection count, found by id (HTTP API) or by key (WebSocket URL).
//!
//! The list can be replaced while the server runs ([`AppStore::reload`], SIGHUP in the
//! binary). An app whose settings changed becomes a new [`App`] that shares the old one's
//! run-time state (channels, users, connection counts, metrics): new connections and requests
//! see the new settings, open connections keep the ones they started with, and a publish
//! still reaches every subscriber.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

use crate::channels::{Registry, Users};
use crate::cluster::{Cluster, ClusterChannels};
use crate::config::AppConfig;
use crate::console::Console;
use crate::metrics::{AppMetrics, Families};
use crate::webhooks::{AppWebhooks, Taps};

/// One app at run time.
#[derive(Debug)]
pub(crate) struct App {
    pub config: AppConfig,
    pub registry: Arc<Registry>,
    pub users: Arc<Users>,
    /// The other nodes, when the server is part of a cluster.
    pub cluster: Option<ClusterChannels>,
    /// The app's webhooks, when it has targets.
    pub webhooks: Option<Arc<AppWebhooks>>,
    pub metrics: Arc<AppMetrics>,
    /// The debug console's viewers of this app.
    pub console: Arc<Console>,
    /// This node's HTTP API rate-limit windows.
    pub rate_windows: Arc<crate::http_api::rate_limit::Windows>,
    connections: Arc<AtomicUsize>,
    /// In a cluster: the other nodes' connections, as last read from Redis (each second).
    remote_connections: Arc<AtomicUsize>,
}

/// Holds one of an app's connection slots; the slot is released on drop.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    app: Arc<App>,
}

impl App {
    #[cfg(test)]
    pub(crate) fn new(config: AppConfig) -> Self {
        App::in_cluster(config, None)
    }

    /// An app whose channels are shared with the other nodes of `cluster`.
    #[cfg(test)]
    pub(crate) fn in_cluster(config: AppConfig, cluster: Option<&Arc<Cluster>>) -> Self {
        App::build(config, cluster, None, None)
    }

    /// An app in `cluster` (if any), signalling its webhooks through `taps` (if any) and
    /// counting into `families` (if any).
    pub(crate) fn build(
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
        let console = Arc::new(Console::new(cluster.clone()));
        registry.set_console(console.clone());
        App {
            metrics,
            console,
            rate_windows: Default::default(),
            registry: Arc::new(registry),
            users: Arc::new(Users::new(cluster.clone())),
            cluster,
            webhooks,
            config,
            connections: Default::default(),
            remote_connections: Default::default(),
        }
    }

    /// This app with new settings, keeping its run-time state; `webhooks` are its hooks for
    /// the new settings' targets. Whether subscribers get subscription counts is fixed when
    /// the app is first built.
    fn reconfigured(&self, config: AppConfig, webhooks: Option<Arc<AppWebhooks>>) -> App {
        self.registry.set_webhooks(webhooks.clone());
        App {
            config,
            registry: self.registry.clone(),
            users: self.users.clone(),
            cluster: self.cluster.clone(),
            webhooks,
            metrics: self.metrics.clone(),
            console: self.console.clone(),
            rate_windows: self.rate_windows.clone(),
            connections: self.connections.clone(),
            remote_connections: self.remote_connections.clone(),
        }
    }

    /// Takes a connection slot unless the app is at its `max_connections`.
    pub(crate) fn try_connect(self: &Arc<Self>) -> Option<ConnectionSlot> {
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

    pub(crate) fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// The other nodes' connections to this app, as last read (cluster only, and only for
    /// apps with `max_connections` or a console open).
    pub(crate) fn remote_connection_count(&self) -> usize {
        self.remote_connections.load(Ordering::Relaxed)
    }

    /// The other nodes' connections to this app (cluster only).
    pub(crate) fn set_remote_connections(&self, n: usize) {
        self.remote_connections.store(n, Ordering::Relaxed);
    }
}

impl ConnectionSlot {
    pub(crate) fn app(&self) -> &Arc<App> {
        &self.app
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.app.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Lookup of apps by id and by key; cloning shares the same list, which
/// [`AppStore::reload`] can replace.
#[derive(Debug, Clone)]
pub(crate) struct AppStore {
    current: Arc<RwLock<Arc<Lookup>>>,
    builder: Arc<Builder>,
}

#[derive(Debug, Default)]
struct Lookup {
    by_id: HashMap<String, Arc<App>>,
    by_key: HashMap<String, Arc<App>>,
}

impl Lookup {
    fn of(apps: impl Iterator<Item = Arc<App>>) -> Lookup {
        let mut lookup = Lookup::default();
        for app in apps {
            lookup.by_key.insert(app.config.key.clone(), app.clone());
            lookup.by_id.insert(app.config.id.clone(), app);
        }
        lookup
    }
}

/// What building an app needs besides its settings.
#[derive(Debug, Default)]
struct Builder {
    cluster: Option<Arc<Cluster>>,
    taps: Option<Taps>,
    families: Option<Families>,
}

/// What a reload changed, by app id.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Reloaded {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl AppStore {
    #[cfg(test)]
    pub(crate) fn new(apps: &[AppConfig]) -> Self {
        AppStore::in_cluster(apps, None)
    }

    #[cfg(test)]
    pub(crate) fn in_cluster(apps: &[AppConfig], cluster: Option<&Arc<Cluster>>) -> Self {
        AppStore::build(apps, cluster, None, None)
    }

    pub(crate) fn build(
        apps: &[AppConfig],
        cluster: Option<&Arc<Cluster>>,
        taps: Option<&Taps>,
        families: Option<&Families>,
    ) -> Self {
        let builder = Builder {
            cluster: cluster.cloned(),
            taps: taps.cloned(),
            families: families.cloned(),
        };
        let lookup = Lookup::of(apps.iter().map(|c| Arc::new(builder.app(c.clone()))));
        AppStore {
            current: Arc::new(RwLock::new(Arc::new(lookup))),
            builder: Arc::new(builder),
        }
    }

    pub(crate) fn by_id(&self, id: &str) -> Option<Arc<App>> {
        self.current.read().by_id.get(id).cloned()
    }

    pub(crate) fn by_key(&self, key: &str) -> Option<Arc<App>> {
        self.current.read().by_key.get(key).cloned()
    }

    /// The apps now.
    pub(crate) fn all(&self) -> impl Iterator<Item = Arc<App>> + use<> {
        let lookup = self.current.read().clone();
        let apps: Vec<Arc<App>> = lookup.by_id.values().cloned().collect();
        apps.into_iter()
    }

    /// Replaces the list with `configs` (already validated): new ids are added, changed
    /// settings apply from now on, missing ids are removed (their open connections stay
    /// until they close).
    pub(crate) fn reload(&self, configs: &[AppConfig]) -> Reloaded {
        let old = self.current.read().clone();
        let mut reloaded = Reloaded::default();
        let apps: Vec<Arc<App>> = configs
            .iter()
            .map(|config| match old.by_id.get(&config.id) {
                Some(app) if app.config == *config => app.clone(),
                Some(app) => {
                    reloaded.changed.push(config.id.clone());
                    let hooks = if app.config.webhooks == config.webhooks
                        && app.config.key == config.key
                        && app.config.secret == config.secret
                    {
                        app.webhooks.clone()
                    } else {
                        self.builder.hooks(config, app.cluster.as_ref())
                    };
                    Arc::new(app.reconfigured(config.clone(), hooks))
                }
                None => {
                    reloaded.added.push(config.id.clone());
                    Arc::new(self.builder.app(config.clone()))
                }
            })
            .collect();
        reloaded.removed = old
            .by_id
            .keys()
            .filter(|id| !configs.iter().any(|c| &c.id == *id))
            .cloned()
            .collect();
        if let Some(taps) = &self.builder.taps {
            taps.reconfigure(configs);
        } else if configs.iter().any(|c| !c.webhooks.is_empty()) {
            tracing::warn!(
                "webhooks: this cluster node started without webhook targets; targets added by a reload take effect after a restart"
            );
        }
        *self.current.write() = Arc::new(Lookup::of(apps.into_iter()));
        reloaded
    }
}

impl Builder {
    fn hooks(
        &self,
        config: &AppConfig,
        cluster: Option<&ClusterChannels>,
    ) -> Option<Arc<AppWebhooks>> {
        self.taps.as_ref().and_then(|t| t.for_app(config, cluster))
    }

    fn app(&self, config: AppConfig) -> App {
        App::build(
            config,
            self.cluster.as_ref(),
            self.taps.as_ref(),
            self.families.as_ref(),
        )
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
