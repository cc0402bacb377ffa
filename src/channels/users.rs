//! Signed-in users of one app: which sockets each user is signed in on (for sending to a
//! user and terminating a user's connections), and who watches whom (watchlist online and
//! offline events). A user is online while it is signed in on at least one socket.
//!
//! One `parking_lot` mutex guards both maps so an online/offline change and the watchers it
//! is announced to are always consistent; it is held for map updates and outbox pushes only.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;

use super::outbox::{CloseRequest, Outbox};
use crate::cluster::ClusterChannels;
use crate::protocol::channel::USER_CHANNEL_PREFIX;
use crate::protocol::encode::Event;
use crate::protocol::socket_id::ConnId;

type Sockets = HashMap<ConnId, Arc<Outbox>>;

#[derive(Debug, Default)]
struct State {
    signed_in: HashMap<Arc<str>, Sockets>,
    watchers: HashMap<Arc<str>, Sockets>,
    /// In a cluster: watched users known to be signed in somewhere, as Redis last said.
    online_elsewhere: std::collections::HashSet<Arc<str>>,
}

#[derive(Debug, Default)]
pub(crate) struct Users {
    state: Mutex<State>,
    /// In a cluster, a node listens for `#server-to-user-{id}` while the user has a socket
    /// signed in on it.
    cluster: Option<ClusterChannels>,
}

#[derive(Serialize)]
struct WatchEvent<'a> {
    name: &'a str,
    user_ids: Vec<&'a str>,
}

#[derive(Serialize)]
struct WatchEvents<'a> {
    events: Vec<WatchEvent<'a>>,
}

fn watchlist_frame(events: Vec<WatchEvent<'_>>) -> Bytes {
    let data = serde_json::to_string(&WatchEvents { events }).unwrap_or_default();
    Event::new("pusher_internal:watchlist_events")
        .text(&data)
        .to_frame()
}

/// The pub/sub channel name (after the app) on which a user's cluster-wide online/offline
/// changes are published.
pub(crate) fn watch_channel(user: &str) -> String {
    format!("#watch:{user}")
}

/// How `terminate_connections` closes a user's sockets: 4009, so pusher-js does not
/// reconnect them on its own.
pub(crate) fn termination() -> CloseRequest {
    CloseRequest {
        code: Some(crate::protocol::codes::UNAUTHORIZED),
        reason: "Connection terminated by the app".to_string(),
        announce: true,
    }
}

impl Users {
    pub(crate) fn new(cluster: Option<ClusterChannels>) -> Self {
        Users {
            state: Mutex::default(),
            cluster,
        }
    }

    /// Records `conn` as signed in as `user`. With a watchlist, the socket is sent the
    /// current online/offline status of the users it watches and will hear of changes.
    /// The user's first socket announces `online` to its watchers.
    pub(crate) fn sign_in(
        &self,
        user: &Arc<str>,
        conn: ConnId,
        outbox: &Arc<Outbox>,
        watchlist: &[Arc<str>],
    ) {
        let mut st = self.state.lock();
        let sockets = st.signed_in.entry(user.clone()).or_default();
        let first = sockets.is_empty();
        sockets.insert(conn, outbox.clone());
        if first {
            match &self.cluster {
                None => announce(&st, user, "online", Some(conn)),
                Some(cluster) => {
                    cluster.want(&format!("{USER_CHANNEL_PREFIX}{user}"));
                    // Online is a cluster transition, announced from Redis (locally while
                    // Redis is away).
                    if cluster.is_down() {
                        announce(&st, user, "online", Some(conn));
                    } else {
                        cluster.signed_in(user);
                    }
                }
            }
        }
        if watchlist.is_empty() {
            return;
        }
        let (mut online, mut offline) = (Vec::new(), Vec::new());
        for watched in watchlist {
            let watchers = st.watchers.entry(watched.clone()).or_default();
            if watchers.is_empty()
                && let Some(cluster) = &self.cluster
            {
                cluster.want(&watch_channel(watched));
            }
            watchers.insert(conn, outbox.clone());
            if st.signed_in.get(watched).is_some_and(|s| !s.is_empty())
                || st.online_elsewhere.contains(watched)
            {
                online.push(watched.as_ref());
            } else {
                offline.push(watched.as_ref());
            }
        }
        let mut events = Vec::new();
        if !online.is_empty() {
            events.push(WatchEvent {
                name: "online",
                user_ids: online,
            });
        }
        if !offline.is_empty() {
            events.push(WatchEvent {
                name: "offline",
                user_ids: offline,
            });
        }
        outbox.push(watchlist_frame(events));
    }

    /// Forgets `conn`; the user's last socket announces `offline` to its watchers.
    pub(crate) fn sign_out(&self, user: &str, conn: ConnId, watchlist: &[Arc<str>]) {
        let mut st = self.state.lock();
        for watched in watchlist {
            if let Some(w) = st.watchers.get_mut(watched) {
                w.remove(&conn);
                if w.is_empty() {
                    st.watchers.remove(watched);
                    st.online_elsewhere.remove(watched);
                    if let Some(cluster) = &self.cluster {
                        cluster.unwant(&watch_channel(watched));
                    }
                }
            }
        }
        let Some(sockets) = st.signed_in.get_mut(user) else {
            return;
        };
        sockets.remove(&conn);
        if sockets.is_empty() {
            st.signed_in.remove(user);
            match &self.cluster {
                None => announce(&st, user, "offline", None),
                Some(cluster) => {
                    cluster.unwant(&format!("{USER_CHANNEL_PREFIX}{user}"));
                    if cluster.is_down() {
                        announce(&st, user, "offline", None);
                    } else {
                        let user: Arc<str> = Arc::from(user);
                        cluster.signed_out(&user);
                    }
                }
            }
        }
    }

    /// Pushes `frame` to every socket signed in as `user` but `except`.
    pub(crate) fn send(&self, user: &str, frame: &Bytes, except: Option<ConnId>) -> usize {
        let st = self.state.lock();
        let Some(sockets) = st.signed_in.get(user) else {
            return 0;
        };
        sockets
            .iter()
            .filter(|(conn, o)| Some(**conn) != except && o.push(frame.clone()))
            .count()
    }

    /// Asks every socket signed in as `user` to close; returns how many there were.
    pub(crate) fn terminate(&self, user: &str, request: &CloseRequest) -> usize {
        let st = self.state.lock();
        let Some(sockets) = st.signed_in.get(user) else {
            return 0;
        };
        for outbox in sockets.values() {
            outbox.close(request.clone());
        }
        sockets.len()
    }

    /// Redis says `user` came online or went offline cluster-wide (or, read afresh, whether it
    /// is online): local watchers hear of it when that changes what they were told.
    pub(crate) fn cluster_status(&self, user: &str, online: bool, fresh_read: bool) {
        let mut st = self.state.lock();
        if !st.watchers.contains_key(user) {
            return;
        }
        // A user signed in here is online, whatever a read racing its registration says, and
        // the watchers were told so when they signed in.
        let locally = st.signed_in.get(user).is_some_and(|s| !s.is_empty());
        let online = online || (fresh_read && locally);
        let changed = if online {
            st.online_elsewhere.insert(Arc::from(user))
        } else {
            st.online_elsewhere.remove(user)
        };
        if changed && !(fresh_read && locally) {
            announce(&st, user, if online { "online" } else { "offline" }, None);
        }
    }

    /// Users signed in on this node (for asserting them anew in Redis).
    pub(crate) fn signed_in_users(&self) -> Vec<Arc<str>> {
        self.state.lock().signed_in.keys().cloned().collect()
    }

    #[cfg(test)]
    pub(crate) fn is_online(&self, user: &str) -> bool {
        self.state
            .lock()
            .signed_in
            .get(user)
            .is_some_and(|s| !s.is_empty())
    }
}

fn announce(st: &State, user: &str, name: &str, except: Option<ConnId>) {
    let Some(watchers) = st.watchers.get(user) else {
        return;
    };
    let frame = watchlist_frame(vec![WatchEvent {
        name,
        user_ids: vec![user],
    }]);
    for (conn, outbox) in watchers {
        if Some(*conn) != except {
            outbox.push(frame.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::outbox::drained_texts;
    use super::*;

    fn outbox() -> Arc<Outbox> {
        Arc::new(Outbox::new(1 << 20))
    }

    #[tokio::test]
    async fn watchers_hear_first_sign_in_and_last_sign_out() {
        let users = Users::default();
        let (watcher, b1, b2) = (outbox(), outbox(), outbox());
        let alice: Arc<str> = Arc::from("alice");
        let bob: Arc<str> = Arc::from("bob");
        users.sign_in(&alice, 1, &watcher, std::slice::from_ref(&bob));
        let got = drained_texts(&watcher).await;
        assert!(
            got[0].contains(r#"{\"name\":\"offline\",\"user_ids\":[\"bob\"]}"#),
            "{got:?}"
        );
        users.sign_in(&bob, 2, &b1, &[]);
        users.sign_in(&bob, 3, &b2, &[]);
        let got = drained_texts(&watcher).await;
        assert_eq!(got.len(), 1, "online once: {got:?}");
        assert!(got[0].contains("online"));
        users.sign_out("bob", 2, &[]);
        assert!(users.is_online("bob"));
        users.sign_out("bob", 3, &[]);
        assert!(!users.is_online("bob"));
        let got = drained_texts(&watcher).await;
        assert!(got[0].contains("offline"), "{got:?}");
    }

    #[tokio::test]
    async fn send_and_terminate_reach_only_that_user() {
        let users = Users::default();
        let (a, b) = (outbox(), outbox());
        users.sign_in(&Arc::from("a"), 1, &a, &[]);
        users.sign_in(&Arc::from("b"), 2, &b, &[]);
        assert_eq!(users.send("a", &Bytes::from_static(b"\x81\x01x"), None), 1);
        assert_eq!(drained_texts(&a).await.len(), 1);
        let req = CloseRequest {
            code: Some(4009),
            reason: "bye".into(),
            announce: true,
        };
        assert_eq!(users.terminate("a", &req), 1);
        assert!(a.is_closing());
        assert!(!b.is_closing());
    }
}
