//! Where the HTTP API's channel counts come from: this node's registry, or, in a cluster, the
//! totals every node keeps in Redis (see `cluster::queries`). With Redis away, a node answers
//! from its own counts rather than fail.

use crate::apps::App;
use crate::channels::{ChannelStats, Registry};
use crate::cluster::queries::{self, ClusterCounts, Scope};

pub(crate) enum Counts<'a> {
    Local(&'a Registry),
    Cluster(ClusterCounts),
}

impl Counts<'_> {
    /// The counts `scope` needs, cluster-wide when the app is in a cluster.
    pub(crate) async fn gather<'a>(app: &'a App, scope: Scope<'_>) -> Counts<'a> {
        if let Some(cluster) = &app.cluster
            && let Some(counts) = queries::fetch(&cluster.cluster, &cluster.app_id, scope).await
        {
            return Counts::Cluster(counts);
        }
        Counts::Local(&app.registry)
    }

    /// Counts of an occupied channel; `None` when nobody is subscribed.
    pub(crate) fn stats(&self, channel: &str) -> Option<ChannelStats> {
        match self {
            Counts::Local(registry) => registry.stats(channel),
            Counts::Cluster(c) => c.channels.get(channel).copied(),
        }
    }

    /// Occupied channels whose name starts with `prefix`.
    pub(crate) fn channels(&self, prefix: &str) -> Vec<(String, ChannelStats)> {
        match self {
            Counts::Local(registry) => registry.channels(prefix),
            Counts::Cluster(c) => c
                .channels
                .iter()
                .filter(|(name, _)| name.starts_with(prefix))
                .map(|(name, stats)| (name.clone(), *stats))
                .collect(),
        }
    }

    /// User ids of a presence channel (gathered with `Scope::Users`).
    pub(crate) fn users(&self, channel: &str) -> Vec<String> {
        match self {
            Counts::Local(registry) => registry.users(channel),
            Counts::Cluster(c) => c.users.clone(),
        }
    }
}
