//! Which Redis channels this node wants to hear, kept apart from the Redis link that
//! subscribes to them: the registry says "first local subscriber" or "last one gone" without
//! waiting, and the link catches up, coalescing changes (a channel that comes and goes ten
//! times before the link looks is one change). Bounded by the node's occupied channels.
//!
//! A new channel's first subscribers are acknowledged only once the node hears the channel
//! (`confirm`), so that any publish sent after their `subscription_succeeded` reaches them.
//! That holds from the node's start: until the link has connected once, subscribers wait.
//! Once Redis is known to be away nothing can be heard anyway, and waiting would hang every
//! subscribe: then the registry acknowledges at once and the link subscribes when Redis is
//! back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct Interest {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// The link found Redis unreachable (and has not reached it since).
    down: bool,
    wants: HashMap<Arc<str>, Want>,
    /// Keys changed since the link last looked, each once.
    queue: VecDeque<Arc<str>>,
}

#[derive(Debug, Default)]
struct Want {
    desired: bool,
    /// Subscribers wait for the link to confirm that the channel is heard.
    confirm: bool,
    queued: bool,
}

/// One key's state as the link should make it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Change {
    pub key: Arc<str>,
    pub desired: bool,
    pub confirm: bool,
}

impl Interest {
    /// The node has its first local subscriber on `key`. Returns true when the subscriber
    /// may be acknowledged at once (Redis is away); otherwise the link confirms later.
    pub(crate) fn want(&self, key: &str) -> bool {
        let mut state = self.state.lock();
        let down = state.down;
        let want = state.entry(key);
        want.desired = true;
        if down {
            return true;
        }
        want.confirm = true;
        state.enqueue(key);
        drop(state);
        self.changed.notify_one();
        false
    }

    pub(crate) fn is_down(&self) -> bool {
        self.state.lock().down
    }

    /// The node's last local subscriber on `key` is gone.
    pub(crate) fn unwant(&self, key: &str) {
        let mut state = self.state.lock();
        let Some(want) = state.wants.get_mut(key) else {
            return;
        };
        want.desired = false;
        want.confirm = false;
        state.enqueue(key);
        drop(state);
        self.changed.notify_one();
    }

    /// Waits until something changed.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The changes since the last call, each key once, in the order they first changed.
    /// Keys no longer desired are forgotten: the link unsubscribes and that is the end.
    pub(crate) fn take_changes(&self) -> Vec<Change> {
        let mut state = self.state.lock();
        let keys: Vec<Arc<str>> = state.queue.drain(..).collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(want) = state.wants.get_mut(&key) else {
                continue;
            };
            want.queued = false;
            // `confirm` stays set until the link has confirmed: a link that fails meanwhile
            // (or is cancelled) leaves it for `disconnected` to release.
            out.push(Change {
                key: key.clone(),
                desired: want.desired,
                confirm: want.confirm,
            });
            if !want.desired {
                state.wants.remove(&key);
            }
        }
        out
    }

    /// Redis is reachable (again): every desired key, to subscribe to anew and then confirm
    /// where subscribers wait. Changes from now on come through [`Interest::take_changes`].
    pub(crate) fn connected(&self) -> Vec<Change> {
        let mut state = self.state.lock();
        state.down = false;
        state.queue.clear();
        state.wants.retain(|_, w| w.desired);
        state
            .wants
            .iter_mut()
            .map(|(key, w)| {
                w.queued = false;
                Change {
                    key: key.clone(),
                    desired: true,
                    confirm: w.confirm,
                }
            })
            .collect()
    }

    /// The link confirmed `key`: its subscribers no longer wait.
    pub(crate) fn confirmed(&self, key: &str) {
        if let Some(want) = self.state.lock().wants.get_mut(key) {
            want.confirm = false;
        }
    }

    /// Redis went away: keys whose subscribers were waiting, to acknowledge now. Desired keys
    /// are kept for the resubscription.
    pub(crate) fn disconnected(&self) -> Vec<Arc<str>> {
        let mut state = self.state.lock();
        state.down = true;
        state.queue.clear();
        state.wants.retain(|_, w| w.desired);
        state
            .wants
            .iter_mut()
            .filter_map(|(key, w)| {
                w.queued = false;
                std::mem::take(&mut w.confirm).then(|| key.clone())
            })
            .collect()
    }
}

impl State {
    fn entry(&mut self, key: &str) -> &mut Want {
        self.wants.entry(Arc::from(key)).or_default()
    }

    fn enqueue(&mut self, key: &str) {
        let Some((shared, want)) = self.wants.get_key_value(key) else {
            return;
        };
        if want.queued {
            return;
        }
        let shared = shared.clone();
        if let Some(want) = self.wants.get_mut(key) {
            want.queued = true;
        }
        self.queue.push_back(shared);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_the_first_connection_subscribers_wait_and_are_confirmed_on_connect() {
        let i = Interest::default();
        assert!(!i.want("a"), "starting up: wait for the link");
        assert_eq!(
            i.connected(),
            vec![Change {
                key: "a".into(),
                desired: true,
                confirm: true
            }]
        );
    }

    #[test]
    fn while_disconnected_subscribers_are_acknowledged_at_once_and_kept_for_later() {
        let i = Interest::default();
        i.disconnected();
        assert!(i.want("a"));
        assert!(i.take_changes().is_empty());
        let again = i.connected();
        assert_eq!((&*again[0].key, again[0].confirm), ("a", false));
        assert!(!i.want("b"), "connected: wait for the link");
        assert_eq!(
            i.take_changes(),
            vec![Change {
                key: "b".into(),
                desired: true,
                confirm: true
            }]
        );
    }

    #[test]
    fn changes_coalesce_and_the_last_word_wins() {
        let i = Interest::default();
        i.connected();
        i.want("a");
        i.unwant("a");
        i.want("a");
        i.unwant("b"); // never wanted: nothing to do
        let changes = i.take_changes();
        assert_eq!(changes.len(), 1);
        assert!(changes[0].desired && changes[0].confirm);
        i.unwant("a");
        let changes = i.take_changes();
        assert!(!changes[0].desired && !changes[0].confirm);
        i.disconnected();
        assert!(i.connected().is_empty(), "forgotten once unwanted");
    }

    #[test]
    fn disconnect_releases_waiting_subscribers() {
        let i = Interest::default();
        i.connected();
        i.want("a");
        i.want("b");
        let mut released = i.disconnected();
        released.sort();
        assert_eq!(released, vec![Arc::<str>::from("a"), Arc::from("b")]);
        assert!(i.take_changes().is_empty());
        assert_eq!(i.connected().len(), 2, "still wanted after the reconnect");
    }
}
