//! Connections still in the HTTP phase: before a WebSocket upgrade, or carrying HTTP API
//! requests. Their number is capped so that clients that open connections and then send
//! nothing (or a byte at a time) cannot take every descriptor and every kilobyte.
//!
//! At the cap, the connection that has been in the HTTP phase longest is closed to make room,
//! provided it has been there for at least [`EVICT_AFTER`]: a real handshake or publish takes
//! milliseconds, so the oldest are the stalled ones and a new client still gets in. When even
//! the oldest is younger than that (a burst of genuine connections), the newcomer is refused
//! with 503 at once and retries, while those in progress finish.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::task::AbortHandle;

/// How long a connection must have been in the HTTP phase before a newcomer may evict it.
pub(crate) const EVICT_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct HttpPhase {
    limit: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    next: u64,
    /// By admission order, so the first entry is the oldest.
    entries: BTreeMap<u64, Entry>,
    evicted: u64,
}

#[derive(Debug)]
struct Entry {
    since: Instant,
    /// The connection's task, once spawned.
    task: Option<AbortHandle>,
}

/// A connection's place in the HTTP phase, given back on drop.
#[derive(Debug)]
pub(crate) struct HttpTicket {
    id: u64,
    phase: Arc<HttpPhase>,
}

impl HttpPhase {
    pub(crate) fn new(limit: usize) -> Arc<HttpPhase> {
        Arc::new(HttpPhase {
            limit: limit.max(1),
            open: Mutex::default(),
        })
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// A place for a new connection, evicting the oldest stalled one when full; `None`: refuse.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<HttpTicket> {
        let mut open = self.open.lock();
        if open.entries.len() >= self.limit {
            let (&oldest, entry) = open.entries.first_key_value()?;
            if entry.since.elapsed() < EVICT_AFTER {
                return None;
            }
            if let Some(task) = open.entries.remove(&oldest).and_then(|e| e.task) {
                task.abort();
            }
            open.evicted += 1;
        }
        let id = open.next;
        open.next += 1;
        open.entries.insert(
            id,
            Entry {
                since: Instant::now(),
                task: None,
            },
        );
        Some(HttpTicket {
            id,
            phase: self.clone(),
        })
    }

    /// Records the task serving ticket `id`'s connection, so that it can be evicted. A task
    /// that already ended has no entry left, and nothing happens.
    pub(crate) fn attach(&self, id: u64, task: AbortHandle) {
        if let Some(entry) = self.open.lock().entries.get_mut(&id) {
            entry.task = Some(task);
        }
    }

    /// Connections in the HTTP phase now.
    pub(crate) fn len(&self) -> usize {
        self.open.lock().entries.len()
    }

    /// Connections closed to make room since the start.
    #[cfg(test)]
    pub(crate) fn evicted(&self) -> u64 {
        self.open.lock().evicted
    }
}

impl HttpTicket {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for HttpTicket {
    fn drop(&mut self) {
        self.phase.open.lock().entries.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_phase_refuses_while_everyone_is_young_then_evicts_the_oldest() {
        let phase = HttpPhase::new(2);
        let first = phase.admit().expect("room");
        let stalled = tokio::spawn(std::future::pending::<()>());
        phase.attach(first.id(), stalled.abort_handle());
        let _second = phase.admit().expect("room");
        assert!(phase.admit().is_none(), "both are younger than EVICT_AFTER");

        phase.open.lock().entries.values_mut().for_each(|e| {
            e.since -= EVICT_AFTER;
        });
        let third = phase.admit();
        assert!(third.is_some());
        assert_eq!(phase.len(), 2);
        assert_eq!(phase.evicted(), 1);
        assert!(stalled.await.is_err_and(|e| e.is_cancelled()));
        drop(first); // its entry is already gone
        assert_eq!(phase.len(), 2);
    }
}
