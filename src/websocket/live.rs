//! Every open WebSocket connection of the server, by connection id, so that shutdown can ask
//! each one to close through its outbox.
//!
//! A connection holds no shutdown receiver of its own: a watch receiver and the future that
//! waits on it would cost every idle connection about a hundred bytes, where an entry here
//! costs about thirty. The list is sharded so that connections opening and closing on both
//! cores rarely meet on a lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::channels::{CloseRequest, Outbox};
use crate::protocol::socket_id::ConnId;

const SHARDS: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct LiveConnections {
    shards: [Mutex<HashMap<ConnId, Arc<Outbox>>>; SHARDS],
    /// Set once shutdown begins; what every connection is asked to close with.
    closing: Mutex<Option<CloseRequest>>,
    count: AtomicUsize,
}

/// Keeps a connection in the list; removes it on drop.
#[derive(Debug)]
pub(crate) struct Listed {
    live: Arc<LiveConnections>,
    conn: ConnId,
}

impl LiveConnections {
    fn shard(&self, conn: ConnId) -> &Mutex<HashMap<ConnId, Arc<Outbox>>> {
        &self.shards[conn as usize % SHARDS]
    }

    /// Lists a connection. If the server is already closing, the outbox is asked to close
    /// at once, so a connection that opens during shutdown cannot be missed.
    pub(crate) fn add(self: &Arc<Self>, conn: ConnId, outbox: &Arc<Outbox>) -> Listed {
        self.shard(conn).lock().insert(conn, outbox.clone());
        self.count.fetch_add(1, Ordering::Relaxed);
        // `close_all` sets `closing` before it walks the shards, and both sides take the
        // shard's lock: either its walk finds this entry, or this sees `closing`.
        if let Some(request) = self.closing.lock().clone() {
            outbox.close(request);
        }
        Listed {
            live: self.clone(),
            conn,
        }
    }

    /// Asks every listed connection, and every one listed from now on, to close.
    pub(crate) fn close_all(&self, request: CloseRequest) {
        *self.closing.lock() = Some(request.clone());
        for shard in &self.shards {
            let outboxes: Vec<Arc<Outbox>> = shard.lock().values().cloned().collect();
            for outbox in outboxes {
                outbox.close(request.clone());
            }
        }
    }

    /// Asks up to `n` listed connections that are not closing yet to close; returns how many
    /// it asked. Used by the paced drain, a wave at a time.
    pub(crate) fn close_some(&self, n: usize, request: &CloseRequest) -> usize {
        let mut asked = 0;
        for shard in &self.shards {
            if asked == n {
                break;
            }
            let outboxes: Vec<Arc<Outbox>> = shard
                .lock()
                .values()
                .filter(|o| !o.is_closing())
                .take(n - asked)
                .cloned()
                .collect();
            for outbox in outboxes {
                outbox.close(request.clone());
                asked += 1;
            }
        }
        asked
    }

    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.live.shard(self.conn).lock().remove(&self.conn);
        self.live.count.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::outbox::Drained;

    fn request() -> CloseRequest {
        CloseRequest {
            code: Some(4200),
            reason: "bye".into(),
            announce: true,
        }
    }

    #[tokio::test]
    async fn close_all_reaches_listed_and_later_connections() {
        let live = Arc::new(LiveConnections::default());
        let early = Arc::new(Outbox::new(100));
        let _a = live.add(1, &early);
        live.close_all(request());
        assert!(matches!(early.drained().await, Drained::Close(_, r) if r.code == Some(4200)));
        let late = Arc::new(Outbox::new(100));
        let _b = live.add(2, &late);
        assert!(
            late.is_closing(),
            "a connection listed after shutdown began closes too"
        );
    }

    #[test]
    fn close_some_asks_only_connections_not_yet_closing() {
        let live = Arc::new(LiveConnections::default());
        let outboxes: Vec<_> = (0..5).map(|_| Arc::new(Outbox::new(100))).collect();
        let _listed: Vec<_> = outboxes
            .iter()
            .enumerate()
            .map(|(i, o)| live.add(i as ConnId, o))
            .collect();
        assert_eq!(live.close_some(2, &request()), 2);
        assert_eq!(outboxes.iter().filter(|o| o.is_closing()).count(), 2);
        assert_eq!(live.close_some(10, &request()), 3);
        assert!(outboxes.iter().all(|o| o.is_closing()));
        assert_eq!(live.close_some(10, &request()), 0);
    }

    #[test]
    fn dropping_the_listing_removes_it() {
        let live = Arc::new(LiveConnections::default());
        let listed = live.add(7, &Arc::new(Outbox::new(100)));
        assert_eq!(live.len(), 1);
        drop(listed);
        assert!(live.is_empty());
    }
}
