//! One app's channels and their subscribers.
//!
//! Channels are spread over shards by a hash of their name; each shard is a `parking_lot`
//! `RwLock` around a map, so publishes to different channels never contend and publishes to
//! the same channel share a read lock. Guards live for microseconds and never across an
//! `.await` or a socket write: a publish pushes a clone of one pre-encoded `Bytes` into each
//! subscriber's outbox (a bounded, non-blocking queue) and returns.
//!
//! Membership changes take the shard's write lock, and the frames they cause (the
//! subscriber's `subscription_succeeded`, `member_added` to the others) are pushed under that
//! same lock, so every subscriber sees a channel's events in one order, and a new subscriber
//! sees its `subscription_succeeded` before any event published after it joined.
//! Subscribe and unsubscribe are O(1): no scan of the channel's subscribers.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

use super::outbox::Outbox;
use super::presence::{self, Member, Members};
use crate::protocol::encode::Event;
use crate::protocol::socket_id::ConnId;

const SHARDS: usize = 32;

#[derive(Debug)]
struct Subscriber {
    outbox: Arc<Outbox>,
    /// The presence user this socket joined as; `None` on other channels.
    user_id: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct Channel {
    subscribers: HashMap<ConnId, Subscriber>,
    members: Option<Members>,
}

type Shard = HashMap<Arc<str>, Channel>;

/// Subscriber and user counts of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelStats {
    pub subscriptions: usize,
    /// Distinct presence users; `None` for channels that are not presence channels.
    pub users: Option<usize>,
}

/// Why a presence subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceJoin {
    Joined,
    Full { limit: usize },
}

#[derive(Debug)]
pub struct Registry {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Registry {
    fn shard(&self, channel: &str) -> &RwLock<Shard> {
        let i = (self.hasher.hash_one(channel) as usize) % self.shards.len();
        &self.shards[i]
    }

    /// Adds `conn` to a non-presence channel and queues its `subscription_succeeded`.
    /// Subscribing again is harmless: the confirmation is simply sent again.
    pub fn subscribe(&self, channel: &str, conn: ConnId, outbox: &Arc<Outbox>) {
        let frame = Event::new("pusher_internal:subscription_succeeded")
            .channel(channel)
            .text("{}")
            .to_frame();
        let mut shard = self.shard(channel).write();
        let ch = shard.entry(Arc::from(channel)).or_default();
        ch.subscribers.entry(conn).or_insert_with(|| Subscriber {
            outbox: outbox.clone(),
            user_id: None,
        });
        outbox.push(frame);
    }

    /// Adds `conn` to a presence channel as `member`. A user's first socket announces
    /// `member_added` to every other subscriber; the subscriber gets the member list.
    /// A full channel refuses new users but still admits another socket of a member.
    pub fn subscribe_presence(
        &self,
        channel: &str,
        conn: ConnId,
        outbox: &Arc<Outbox>,
        member: &Member,
        max_members: usize,
    ) -> PresenceJoin {
        let mut shard = self.shard(channel).write();
        let ch = shard.entry(Arc::from(channel)).or_default();
        let members = ch.members.get_or_insert_with(Members::default);
        let already = ch.subscribers.contains_key(&conn);
        if !already {
            if !members.contains(&member.user_id) && members.count() >= max_members {
                if ch.subscribers.is_empty() {
                    shard.remove(channel);
                }
                return PresenceJoin::Full { limit: max_members };
            }
            if members.join(member) {
                let added = presence::member_added_json(member);
                let frame = Event::new("pusher_internal:member_added")
                    .channel(channel)
                    .text(&added)
                    .to_frame();
                for sub in ch.subscribers.values() {
                    sub.outbox.push(frame.clone());
                }
            }
            ch.subscribers.insert(
                conn,
                Subscriber {
                    outbox: outbox.clone(),
                    user_id: Some(member.user_id.clone()),
                },
            );
        }
        let snapshot = ch
            .members
            .as_ref()
            .map(Members::snapshot_json)
            .unwrap_or_default();
        let frame = Event::new("pusher_internal:subscription_succeeded")
            .channel(channel)
            .text(&snapshot)
            .to_frame();
        outbox.push(frame);
        PresenceJoin::Joined
    }

    /// Removes `conn` from `channel`; announces `member_removed` when it was its user's last
    /// socket. Unknown channels or connections are ignored.
    pub fn unsubscribe(&self, channel: &str, conn: ConnId) {
        let mut shard = self.shard(channel).write();
        let Some(ch) = shard.get_mut(channel) else {
            return;
        };
        let Some(sub) = ch.subscribers.remove(&conn) else {
            return;
        };
        if let (Some(user_id), Some(members)) = (&sub.user_id, ch.members.as_mut())
            && members.leave(user_id)
        {
            let removed = presence::member_removed_json(user_id);
            let frame = Event::new("pusher_internal:member_removed")
                .channel(channel)
                .text(&removed)
                .to_frame();
            for s in ch.subscribers.values() {
                s.outbox.push(frame.clone());
            }
        }
        if ch.subscribers.is_empty() {
            shard.remove(channel);
        }
    }

    /// Pushes `frame` to every subscriber of `channel` but `except`; returns how many got it.
    pub fn publish(&self, channel: &str, frame: &Bytes, except: Option<ConnId>) -> usize {
        let shard = self.shard(channel).read();
        let Some(ch) = shard.get(channel) else {
            return 0;
        };
        let mut sent = 0;
        for (conn, sub) in &ch.subscribers {
            if Some(*conn) != except && sub.outbox.push(frame.clone()) {
                sent += 1;
            }
        }
        sent
    }

    /// Counts for an occupied channel; `None` when nobody is subscribed.
    pub fn stats(&self, channel: &str) -> Option<ChannelStats> {
        let shard = self.shard(channel).read();
        shard.get(channel).map(Channel::stats)
    }

    /// Every occupied channel whose name starts with `prefix`.
    pub fn channels(&self, prefix: &str) -> Vec<(String, ChannelStats)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            out.extend(
                shard
                    .iter()
                    .filter(|(name, _)| name.starts_with(prefix))
                    .map(|(name, ch)| (name.to_string(), ch.stats())),
            );
        }
        out
    }

    /// Distinct user ids of a presence channel (empty when unoccupied).
    pub fn users(&self, channel: &str) -> Vec<String> {
        let shard = self.shard(channel).read();
        shard
            .get(channel)
            .and_then(|ch| ch.members.as_ref())
            .map(Members::user_ids)
            .unwrap_or_default()
    }
}

impl Channel {
    fn stats(&self) -> ChannelStats {
        ChannelStats {
            subscriptions: self.subscribers.len(),
            users: self.members.as_ref().map(Members::count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::outbox::Drained;
    use super::*;

    fn outbox() -> Arc<Outbox> {
        Arc::new(Outbox::new(1 << 20))
    }

    async fn texts(o: &Outbox) -> Vec<String> {
        match o.drained().await {
            Drained::Frames(f) => f
                .iter()
                .map(|b| String::from_utf8_lossy(&b[2..]).to_string())
                .collect(),
            Drained::Close(..) => panic!("closed"),
        }
    }

    fn member(id: &str) -> Member {
        Member {
            user_id: Arc::from(id),
            info: None,
        }
    }

    #[tokio::test]
    async fn publish_skips_the_excluded_connection() {
        let r = Registry::default();
        let (a, b) = (outbox(), outbox());
        r.subscribe("c", 1, &a);
        r.subscribe("c", 2, &b);
        texts(&a).await;
        texts(&b).await;
        let frame = Event::new("e").channel("c").text("x").to_frame();
        assert_eq!(r.publish("c", &frame, Some(1)), 1);
        assert!(!b.is_closing());
        assert_eq!(texts(&b).await.len(), 1);
        assert_eq!(r.publish("nobody", &frame, None), 0);
    }

    #[tokio::test]
    async fn presence_announces_first_socket_and_last_leave_only() {
        let r = Registry::default();
        let (a, b1, b2) = (outbox(), outbox(), outbox());
        assert_eq!(
            r.subscribe_presence("presence-x", 1, &a, &member("a"), 10),
            PresenceJoin::Joined
        );
        texts(&a).await;
        r.subscribe_presence("presence-x", 2, &b1, &member("b"), 10);
        assert_eq!(texts(&a).await.len(), 1, "member_added for b");
        r.subscribe_presence("presence-x", 3, &b2, &member("b"), 10);
        assert_eq!(
            r.stats("presence-x"),
            Some(ChannelStats {
                subscriptions: 3,
                users: Some(2)
            })
        );
        r.unsubscribe("presence-x", 2);
        r.unsubscribe("presence-x", 3);
        let got = texts(&a).await;
        assert_eq!(got.len(), 1, "only one member_removed: {got:?}");
        assert!(got[0].contains("member_removed"));
        r.unsubscribe("presence-x", 1);
        assert_eq!(r.stats("presence-x"), None);
    }

    #[tokio::test]
    async fn full_presence_channel_admits_existing_members_only() {
        let r = Registry::default();
        let (a, a2, b) = (outbox(), outbox(), outbox());
        r.subscribe_presence("presence-x", 1, &a, &member("a"), 1);
        assert_eq!(
            r.subscribe_presence("presence-x", 2, &b, &member("b"), 1),
            PresenceJoin::Full { limit: 1 }
        );
        assert_eq!(
            r.subscribe_presence("presence-x", 3, &a2, &member("a"), 1),
            PresenceJoin::Joined
        );
    }

    #[test]
    fn channels_filters_by_prefix() {
        let r = Registry::default();
        let o = outbox();
        r.subscribe("a-1", 1, &o);
        r.subscribe("b-1", 1, &o);
        let names: Vec<String> = r.channels("a-").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["a-1".to_string()]);
        assert_eq!(r.channels("").len(), 2);
    }
}
