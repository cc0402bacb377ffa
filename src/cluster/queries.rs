//! Cluster-wide answers for the HTTP API, read from what every node keeps in Redis rather
//! than by asking every node: each node's subscription counts (`P:node:N:subs`, written by its
//! link at most every 100 ms) and each presence channel's member list. A node that died stops
//! counting once its lease expires and its keys are cleaned up (within 5 s).

use std::collections::HashMap;
use std::time::Duration;

use super::Cluster;
use crate::channels::ChannelStats;

/// Longest a query may wait on Redis before the node answers from its own counts.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// What to read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope<'a> {
    /// One channel's counts.
    Channel(&'a str),
    /// Every channel of the app.
    All,
    /// A presence channel's user ids.
    Users(&'a str),
}

/// Counts for the whole cluster.
#[derive(Debug, Default)]
pub(crate) struct ClusterCounts {
    /// Occupied channels (in the scope) and their counts.
    pub channels: HashMap<String, ChannelStats>,
    /// The user ids of the presence channel asked for with `Scope::Users`.
    pub users: Vec<String>,
}

/// The counts, or `None` when Redis does not answer (the caller falls back to local ones).
pub(crate) async fn fetch(
    cluster: &Cluster,
    app_id: &str,
    scope: Scope<'_>,
) -> Option<ClusterCounts> {
    let conn = cluster.commands()?;
    match tokio::time::timeout(QUERY_TIMEOUT, read(cluster, conn, app_id, scope)).await {
        Ok(Ok(counts)) => Some(counts),
        Ok(Err(e)) => {
            tracing::debug!("cluster: counts query failed: {e}");
            None
        }
        Err(_) => None,
    }
}

async fn read(
    cluster: &Cluster,
    mut conn: redis::aio::MultiplexedConnection,
    app_id: &str,
    scope: Scope<'_>,
) -> redis::RedisResult<ClusterCounts> {
    let mut out = ClusterCounts::default();
    if let Scope::Users(channel) = scope {
        let info = format!("{}:{app_id}:presence:{channel}:info", cluster.prefix);
        out.users = redis::cmd("HKEYS").arg(info).query_async(&mut conn).await?;
        return Ok(out);
    }
    let nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{}:nodes", cluster.prefix))
        .query_async(&mut conn)
        .await?;
    let mut totals: HashMap<String, usize> = HashMap::new();
    match scope {
        Scope::Channel(channel) => {
            let field = format!("{app_id}\n{channel}");
            let mut pipe = redis::pipe();
            for node in &nodes {
                pipe.cmd("HGET").arg(cluster.counts_key(node)).arg(&field);
            }
            let counts: Vec<Option<usize>> = pipe.query_async(&mut conn).await?;
            let total: usize = counts.into_iter().flatten().sum();
            if total > 0 {
                totals.insert(channel.to_string(), total);
            }
        }
        Scope::All | Scope::Users(_) => {
            let mut pipe = redis::pipe();
            for node in &nodes {
                pipe.cmd("HGETALL").arg(cluster.counts_key(node));
            }
            let per_node: Vec<HashMap<String, usize>> = pipe.query_async(&mut conn).await?;
            let app_prefix = format!("{app_id}\n");
            for counts in per_node {
                for (field, n) in counts {
                    if let Some(channel) = field.strip_prefix(&app_prefix)
                        && n > 0
                    {
                        *totals.entry(channel.to_string()).or_default() += n;
                    }
                }
            }
        }
    }
    let presence: Vec<&String> = totals
        .keys()
        .filter(|c| c.starts_with("presence-"))
        .collect();
    let mut users = HashMap::new();
    if !presence.is_empty() {
        let mut pipe = redis::pipe();
        for channel in &presence {
            pipe.cmd("HLEN").arg(format!(
                "{}:{app_id}:presence:{channel}:info",
                cluster.prefix
            ));
        }
        let lens: Vec<usize> = pipe.query_async(&mut conn).await?;
        users = presence
            .into_iter()
            .cloned()
            .zip(lens)
            .collect::<HashMap<_, _>>();
    }
    out.channels = totals
        .into_iter()
        .map(|(channel, subscriptions)| {
            let stats = ChannelStats {
                subscriptions,
                users: users.get(&channel).copied(),
            };
            (channel, stats)
        })
        .collect();
    Ok(out)
}

/// Cluster-wide subscription counts of `channels` (0 where nobody is subscribed).
pub(crate) async fn totals(
    cluster: &Cluster,
    conn: &mut redis::aio::MultiplexedConnection,
    app_id: &str,
    channels: &[std::sync::Arc<str>],
) -> redis::RedisResult<Vec<usize>> {
    let nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{}:nodes", cluster.prefix))
        .query_async(&mut *conn)
        .await?;
    if nodes.is_empty() || channels.is_empty() {
        return Ok(vec![0; channels.len()]);
    }
    let mut pipe = redis::pipe();
    for channel in channels {
        for node in &nodes {
            pipe.cmd("HGET")
                .arg(cluster.counts_key(node))
                .arg(format!("{app_id}\n{channel}"));
        }
    }
    let counts: Vec<Option<usize>> = pipe.query_async(&mut *conn).await?;
    Ok(counts
        .chunks(nodes.len())
        .map(|per_node| per_node.iter().flatten().sum())
        .collect())
}
