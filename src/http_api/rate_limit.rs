//! The HTTP API's per-app rate limits (`max_backend_events_per_second`,
//! `max_read_requests_per_second`, soketi's names): a fixed one-second window. On a single
//! node the window is one atomic word; in a cluster it is a Redis counter per app, kind and
//! second, so the limit holds for the cluster (one Redis round trip per limited request; apps
//! without a limit never pay it). With Redis unreachable a node falls back to its own window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::apps::App;
use crate::cluster::Cluster;

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Events published (each event of a batch counts).
    Events,
    /// Reads: channels, channel, channel users.
    Reads,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Events => "events",
            Kind::Reads => "reads",
        }
    }

    fn limit(self, app: &App) -> Option<u32> {
        match self {
            Kind::Events => app.config.max_backend_events_per_second,
            Kind::Reads => app.config.max_read_requests_per_second,
        }
    }
}

/// One node's windows for one app: the second (upper 32 bits) and what it counted.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    events: AtomicU64,
    reads: AtomicU64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Windows {
    /// Takes `n` from this second's allowance; false (and nothing taken) when over `limit`.
    fn take_local(&self, kind: Kind, n: u64, limit: u64) -> bool {
        let word = match kind {
            Kind::Events => &self.events,
            Kind::Reads => &self.reads,
        };
        let second = now_secs() & 0xFFFF_FFFF;
        word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
            let used = if w >> 32 == second {
                w & 0xFFFF_FFFF
            } else {
                0
            };
            (used + n <= limit).then_some(second << 32 | (used + n))
        })
        .is_ok()
    }
}

/// Whether `app` may do `n` more of `kind` this second; `Err(limit)` when it may not.
pub(crate) async fn check(app: &App, kind: Kind, n: u64) -> Result<(), u32> {
    let Some(limit) = kind.limit(app) else {
        return Ok(());
    };
    if let Some(channels) = &app.cluster
        && let Some(total) = take_cluster(&channels.cluster, &app.config.id, kind, n).await
    {
        return if total <= u64::from(limit) {
            Ok(())
        } else {
            Err(limit)
        };
    }
    if app.rate_windows.take_local(kind, n, u64::from(limit)) {
        Ok(())
    } else {
        Err(limit)
    }
}

/// Adds `n` to the cluster's count for this second; the new total, or `None` when Redis
/// does not answer in time.
async fn take_cluster(cluster: &Cluster, app_id: &str, kind: Kind, n: u64) -> Option<u64> {
    if cluster.is_down() {
        return None;
    }
    let mut conn = cluster.commands()?;
    let key = format!(
        "{}:{app_id}:rl:{}:{}",
        cluster.prefix,
        kind.name(),
        now_secs()
    );
    let mut pipe = redis::pipe();
    pipe.cmd("INCRBY")
        .arg(&key)
        .arg(n)
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(2000)
        .ignore();
    let query = pipe.query_async::<(u64,)>(&mut conn);
    match tokio::time::timeout(std::time::Duration::from_millis(500), query).await {
        Ok(Ok((total,))) => Some(total),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_admits_up_to_its_limit_then_refuses_without_counting() {
        let w = Windows::default();
        assert!(w.take_local(Kind::Events, 3, 5));
        assert!(w.take_local(Kind::Events, 2, 5));
        assert!(!w.take_local(Kind::Events, 1, 5));
        assert!(
            w.take_local(Kind::Reads, 5, 5),
            "reads have their own window"
        );
    }
}
