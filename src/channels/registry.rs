//! One app's channels and their subscribers.
//!
//! Channels are spread over shards by a hash of their name; each shard is a `parking_lot`
//! `RwLock` around a map, so publishes to different channels never contend and publishes to
//! the same channel share a read lock. Guards live for microseconds and never across an
//! `.await` or a socket write: a publish pushes a clone of one pre-encoded `Bytes` into each
//! subscriber's outbox (a bounded, non-blocking queue) and returns.
//!
//! Membership changes take the shard's write lock, and the frames they cause (the
//! subscriber's `subscription_succeeded` and cached event, `member_added` to the others,
//! subscription counts) are pushed under that same lock, so every subscriber sees a
//! channel's events in one order, and a new subscriber sees its `subscription_succeeded`
//! (then the cached event) before any event published after it joined.
//! Subscribe and unsubscribe are O(1): no scan of the channel's subscribers.
//!
//! Cache channels keep their last HTTP API event in the channel's entry, which therefore
//! outlives its subscribers until the cached event expires; expired, empty entries are swept
//! from a shard as new cache entries are added to it.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use super::outbox::Outbox;
use super::presence::{self, Member, Members};
use super::replica::{Applied, Replica, WaitingMember};
use crate::cluster::ClusterChannels;
use crate::cluster::wire::MemberEvent;
use crate::console::Console;
use crate::metrics::AppMetrics;
use crate::protocol::encode;
use crate::protocol::encode::Event;
use crate::protocol::socket_id::ConnId;
use crate::webhooks::AppWebhooks;

const SHARDS: usize = 32;
/// Subscription counts go out at most this often per channel.
pub(crate) const COUNT_INTERVAL: Duration = Duration::from_secs(1);
/// A shard is swept of expired cache-only entries whenever its size reaches a multiple of this.
const SWEEP_EVERY: usize = 256;

#[derive(Debug)]
struct Subscriber {
    outbox: Arc<Outbox>,
    /// The presence user this socket joined as; `None` on other channels.
    user_id: Option<Arc<str>>,
}

/// The last event published to a cache channel.
#[derive(Debug)]
struct Cached {
    frame: Bytes,
    data: Arc<str>,
    expires: Instant,
}

/// A subscriber waiting for its node to hear the channel from the other nodes.
#[derive(Debug)]
struct Waiting {
    conn: ConnId,
    outbox: Arc<Outbox>,
    cache: bool,
}

#[derive(Debug, Default)]
struct Channel {
    subscribers: HashMap<ConnId, Subscriber>,
    /// In a cluster, a channel's first local subscribers wait here, unacknowledged, until the
    /// node hears the channel's Redis channel; none do once `heard`.
    waiting: Vec<Waiting>,
    heard: bool,
    /// Presence: this node's sockets per user (on a single node, the member list itself).
    members: Option<Members>,
    /// Presence in a cluster: the cluster-wide member list, kept from Redis.
    replica: Option<Box<Replica>>,
    cache: Option<Cached>,
    count_sent: Option<Instant>,
    /// The cluster-wide count last sent (cluster only).
    count_last: usize,
    count_pending: bool,
}

type Shard = HashMap<Arc<str>, Channel>;

/// Subscriber and user counts of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChannelStats {
    pub subscriptions: usize,
    /// Distinct presence users; `None` for channels that are not presence channels.
    pub users: Option<usize>,
}

/// The outcome of a presence subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PresenceJoin {
    /// Joined; carries the registry's shared copy of the channel name.
    Joined(Arc<str>),
    Full {
        limit: usize,
    },
}

/// A cache channel's stored event, for `info=cache`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheInfo {
    pub data: Arc<str>,
    pub ttl: Duration,
}

#[derive(Debug)]
pub(crate) struct Registry {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
    subscription_counts: bool,
    /// Send subscription counts, cluster-wide ones, through the cluster link.
    cluster_counts: bool,
    /// Channels whose count changed within `COUNT_INTERVAL` of the last one sent.
    pending_counts: Mutex<Vec<Arc<str>>>,
    /// Told of each channel's first local subscriber and of its last.
    cluster: Option<ClusterChannels>,
    /// In a cluster: channels whose local subscriber count may have changed since the link
    /// last wrote this node's counts to Redis.
    touched: Mutex<Vec<Arc<str>>>,
    /// Told of occupancy, members, cache misses and counts, for the app's webhooks; replaced
    /// when a reload changes the app's targets.
    webhooks: RwLock<Option<Arc<AppWebhooks>>>,
    /// Counts each broadcast's deliveries, once per broadcast.
    metrics: Arc<AppMetrics>,
    /// Told of presence members joining and leaving while a console is open.
    console: Arc<Console>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(false, None)
    }
}

impl Registry {
    /// `subscription_counts`: send `pusher_internal:subscription_count` on non-presence
    /// channels when their subscriber count changes.
    /// In a cluster the counts are the cluster's: the link sends them (see
    /// [`Registry::send_cluster_count`]), not the registry.
    pub(crate) fn new(subscription_counts: bool, cluster: Option<ClusterChannels>) -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            subscription_counts: subscription_counts && cluster.is_none(),
            cluster_counts: subscription_counts && cluster.is_some(),
            pending_counts: Mutex::new(Vec::new()),
            cluster,
            touched: Mutex::new(Vec::new()),
            webhooks: RwLock::new(None),
            metrics: Arc::new(AppMetrics::detached("")),
            console: Arc::default(),
        }
    }

    /// Reports presence members to `console` from now on.
    pub(crate) fn set_console(&mut self, console: Arc<Console>) {
        self.console = console;
    }

    /// Counts deliveries into `metrics` from now on.
    pub(crate) fn set_metrics(&mut self, metrics: Arc<AppMetrics>) {
        self.metrics = metrics;
    }

    /// Occupied channels and subscriptions on this node, for the metrics.
    pub(crate) fn totals(&self) -> (usize, usize) {
        let mut channels = 0;
        let mut subscriptions = 0;
        for shard in self.shards.iter() {
            let shard = shard.read();
            for ch in shard.values().filter(|ch| !ch.subscribers.is_empty()) {
                channels += 1;
                subscriptions += ch.subscribers.len();
            }
        }
        (channels, subscriptions)
    }

    /// Signals the app's webhooks from now on.
    pub(crate) fn set_webhooks(&self, webhooks: Option<Arc<AppWebhooks>>) {
        *self.webhooks.write() = webhooks;
    }

    /// Tells the webhooks what a change to `ch` did: whether the node's subscribers went from
    /// none to some (or back), whether a cache subscriber missed, and a non-presence
    /// channel's new count. Called under the shard lock, so a channel's signals keep order.
    fn notify(&self, ch: &Channel, channel: &str, before: usize, missed: bool) {
        let guard = self.webhooks.read();
        let Some(hooks) = guard.as_ref() else {
            return;
        };
        let after = ch.subscribers.len();
        if before == after && !missed {
            return;
        }
        let name: Arc<str> = Arc::from(channel);
        if (before == 0) != (after == 0) {
            hooks.occupancy(&name, after > 0);
        }
        if missed {
            hooks.cache_miss(&name);
        }
        if before != after && ch.members.is_none() {
            hooks.count(&name, after);
        }
    }

    fn signal_occupancy(&self, channel: &str, occupied: bool) {
        if let Some(hooks) = self.webhooks.read().as_ref() {
            hooks.occupancy(&Arc::from(channel), occupied);
        }
    }

    /// Notes that `channel`'s local count may change (cluster only).
    pub(crate) fn touch(&self, channel: &str) {
        if self.cluster.is_some() {
            self.touched.lock().push(Arc::from(channel));
        }
    }

    /// The channels touched since the last call, each once.
    pub(crate) fn take_touched(&self) -> Vec<Arc<str>> {
        let mut names = std::mem::take(&mut *self.touched.lock());
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Whether this app's subscribers get cluster-wide subscription counts.
    pub(crate) fn wants_cluster_counts(&self) -> bool {
        self.cluster_counts
    }

    /// Non-presence channels with local subscribers: the ones that get counts.
    pub(crate) fn counted_channels(&self) -> Vec<Arc<str>> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            out.extend(
                shard
                    .iter()
                    .filter(|(_, ch)| ch.members.is_none() && !ch.subscribers.is_empty())
                    .map(|(name, _)| name.clone()),
            );
        }
        out
    }

    /// Sends `pusher_internal:subscription_count` with the cluster's `total` to the local
    /// subscribers of `channel`, when it differs from the last one sent.
    pub(crate) fn send_cluster_count(&self, channel: &str, total: usize) {
        let mut shard = self.shard(channel).write();
        let Some(ch) = shard.get_mut(channel) else {
            return;
        };
        if ch.members.is_some() || ch.subscribers.is_empty() || ch.count_last == total {
            return;
        }
        ch.count_last = total;
        let data = format!("{{\"subscription_count\":{total}}}");
        let frame = Event::new("pusher_internal:subscription_count")
            .channel(channel)
            .text(&data)
            .to_frame();
        push_all(ch, &frame, None);
    }

    /// Sockets subscribed to `channel` on this node.
    pub(crate) fn local_count(&self, channel: &str) -> usize {
        self.shard(channel)
            .read()
            .get(channel)
            .map_or(0, |ch| ch.subscribers.len())
    }

    /// Before a channel's first local subscriber joins: whether it can be acknowledged at
    /// once (always on a single node; in a cluster, once the node hears the channel).
    fn first_local(&self, ch: &mut Channel, channel: &str) {
        if ch.subscribers.is_empty() && ch.waiting.is_empty() {
            ch.heard = self.cluster.as_ref().is_none_or(|c| c.want(channel));
        }
    }

    /// After a subscriber left: the node stops listening once the channel has nobody left.
    fn maybe_last_local(&self, ch: &mut Channel, channel: &str) {
        if ch.subscribers.is_empty() && ch.waiting.is_empty() {
            if let Some(cluster) = &self.cluster {
                cluster.unwant(channel);
            }
            ch.heard = false;
        }
    }

    /// The node now hears `channel` from the other nodes: its waiting subscribers join and
    /// are acknowledged, in the order they came.
    pub(crate) fn heard(&self, channel: &str) {
        self.touch(channel);
        let mut shard = self.shard(channel).write();
        let Some(ch) = shard.get_mut(channel) else {
            return;
        };
        ch.heard = true;
        let before = ch.subscribers.len();
        let waiting = std::mem::take(&mut ch.waiting);
        let mut added = false;
        let mut missed = false;
        for w in waiting {
            let joined = join(ch, channel, w.conn, &w.outbox, w.cache);
            added |= joined.added;
            missed |= joined.missed;
        }
        if added && self.subscription_counts {
            self.count_changed(ch, channel);
        }
        self.notify(ch, channel, before, missed);
    }

    /// Acknowledges the waiting presence sockets the replica now lists, and tells the
    /// webhooks what that changed.
    fn release(&self, ch: &mut Channel, channel: &str) {
        let before = ch.subscribers.len();
        let missed = release_members(ch, channel);
        self.notify(ch, channel, before, missed);
    }

    fn shard(&self, channel: &str) -> &RwLock<Shard> {
        let i = (self.hasher.hash_one(channel) as usize) % self.shards.len();
        &self.shards[i]
    }

    /// Adds `conn` to a non-presence channel and queues its `subscription_succeeded`, then,
    /// on a cache channel, the cached event or `pusher:cache_miss`. Subscribing again is
    /// harmless: the confirmation is simply sent again. Returns the registry's shared copy of
    /// the name, so the session can remember the subscription without another allocation.
    pub(crate) fn subscribe(
        &self,
        channel: &str,
        conn: ConnId,
        outbox: &Arc<Outbox>,
        cache: bool,
    ) -> Arc<str> {
        self.touch(channel);
        let mut shard = self.shard(channel).write();
        let key = shared_key(&shard, channel);
        let ch = shard.entry(key.clone()).or_default();
        if !ch.subscribers.contains_key(&conn) {
            self.first_local(ch, channel);
        }
        if !ch.heard {
            if !ch.waiting.iter().any(|w| w.conn == conn) {
                ch.waiting.push(Waiting {
                    conn,
                    outbox: outbox.clone(),
                    cache,
                });
            }
            return key;
        }
        let before = ch.subscribers.len();
        let joined = join(ch, channel, conn, outbox, cache);
        if joined.added && self.subscription_counts {
            self.count_changed(ch, channel);
        }
        self.notify(ch, channel, before, joined.missed);
        key
    }

    /// Adds `conn` to a presence channel as `member`. A user's first socket announces
    /// `member_added` to every other subscriber; the subscriber gets the member list.
    /// A full channel refuses new users but still admits another socket of a member.
    pub(crate) fn subscribe_presence(
        &self,
        channel: &str,
        conn: ConnId,
        outbox: &Arc<Outbox>,
        member: &Member,
        max_members: usize,
        cache: bool,
    ) -> PresenceJoin {
        if self.cluster.is_some() {
            return self.subscribe_presence_clustered(
                channel,
                conn,
                outbox,
                member,
                max_members,
                cache,
            );
        }
        let mut shard = self.shard(channel).write();
        let key = shared_key(&shard, channel);
        let ch = shard.entry(key.clone()).or_default();
        let before = ch.subscribers.len();
        let mut new_member = false;
        let members = ch.members.get_or_insert_with(Members::default);
        if !ch.subscribers.contains_key(&conn) {
            if !members.contains(&member.user_id) && members.count() >= max_members {
                self.maybe_last_local(ch, channel);
                if ch.subscribers.is_empty() && ch.cache.is_none() {
                    shard.remove(channel);
                }
                return PresenceJoin::Full { limit: max_members };
            }
            if members.join(member) {
                new_member = true;
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
        let missed = cache && send_cached(ch, channel, outbox);
        self.notify(ch, channel, before, missed);
        if new_member {
            if let Some(hooks) = self.webhooks.read().as_ref() {
                hooks.member(&key, &member.user_id, true);
            }
            self.console_member(channel, &member.user_id, true);
        }
        PresenceJoin::Joined(key)
    }

    /// Removes `conn` from `channel`; announces `member_removed` when it was its user's last
    /// socket. Unknown channels or connections are ignored.
    pub(crate) fn unsubscribe(&self, channel: &str, conn: ConnId) {
        self.touch(channel);
        let mut shard = self.shard(channel).write();
        let Some(ch) = shard.get_mut(channel) else {
            return;
        };
        if ch.replica.is_some() {
            return self.unsubscribe_clustered(&mut shard, channel, conn);
        }
        let before = ch.subscribers.len();
        let Some(sub) = ch.subscribers.remove(&conn) else {
            let before = ch.waiting.len();
            ch.waiting.retain(|w| w.conn != conn);
            if ch.waiting.len() != before {
                self.maybe_last_local(ch, channel);
                if ch.subscribers.is_empty() && ch.waiting.is_empty() && ch.cache.is_none() {
                    shard.remove(channel);
                }
            }
            return;
        };
        if let (Some(user_id), Some(members)) = (&sub.user_id, ch.members.as_mut())
            && members.leave(user_id)
        {
            if let Some(hooks) = self.webhooks.read().as_ref() {
                hooks.member(&Arc::from(channel), user_id, false);
            }
            self.console_member(channel, user_id, false);
            let removed = presence::member_removed_json(user_id);
            let frame = Event::new("pusher_internal:member_removed")
                .channel(channel)
                .text(&removed)
                .to_frame();
            for s in ch.subscribers.values() {
                s.outbox.push(frame.clone());
            }
        }
        self.notify(ch, channel, before, false);
        self.maybe_last_local(ch, channel);
        if ch.subscribers.is_empty() {
            if ch.waiting.is_empty() && !ch.cache.as_ref().is_some_and(Cached::fresh) {
                shard.remove(channel);
            }
        } else if self.subscription_counts {
            self.count_changed(ch, channel);
        }
    }

    /// A presence subscription in a cluster: the socket waits until the replica is ready and
    /// lists its user; a user's first socket on this node registers it in Redis, whose script
    /// decides `member_added` (or refuses a full channel) for the whole cluster.
    fn subscribe_presence_clustered(
        &self,
        channel: &str,
        conn: ConnId,
        outbox: &Arc<Outbox>,
        member: &Member,
        max_members: usize,
        cache: bool,
    ) -> PresenceJoin {
        self.touch(channel);
        let Some(cluster) = &self.cluster else {
            return PresenceJoin::Full { limit: 0 };
        };
        let down = cluster.is_down();
        let mut shard = self.shard(channel).write();
        let key = shared_key(&shard, channel);
        let ch = shard.entry(key.clone()).or_default();
        let replica = ch.replica.get_or_insert_with(Box::default);
        if let Some(sub) = ch.subscribers.get(&conn) {
            // Already a member through this socket: confirm again, announce nothing.
            let frame = succeeded_frame(channel, &replica.snapshot_json());
            sub.outbox.push(frame);
            return PresenceJoin::Joined(key);
        }
        if replica.waiting.iter().any(|w| w.conn == conn) {
            return PresenceJoin::Joined(key);
        }
        let first_on_node =
            ch.subscribers.is_empty() && ch.waiting.is_empty() && replica.waiting.is_empty();
        if down {
            // Redis is away: decide from this node's replica, and tell Redis when it is back.
            if !replica.members.contains_key(&member.user_id)
                && replica.members.len() >= max_members
            {
                if first_on_node && ch.cache.is_none() {
                    shard.remove(channel);
                }
                return PresenceJoin::Full { limit: max_members };
            }
            if replica.version.is_none() {
                replica.version = Some(0);
            }
        }
        if first_on_node {
            ch.heard = cluster.want(channel);
        }
        let replica = ch.replica.get_or_insert_with(Box::default);
        let local = ch.members.get_or_insert_with(Members::default);
        if local.join(member) {
            let info = member
                .info
                .as_ref()
                .map(|i| i.get().to_string())
                .unwrap_or_default();
            if down {
                if replica.change(true, &member.user_id, &info) == Applied::Added {
                    push_member_event(ch, channel, true, &member.user_id, member.info.as_deref());
                }
            } else {
                if ch.subscribers.is_empty() {
                    // The node's occupancy goes to Redis before the member does, so the
                    // cluster's `channel_occupied` precedes `member_added`. The later 0→1
                    // signal when the socket is released repeats it harmlessly: the node is
                    // already in the channel's occupancy set.
                    self.signal_occupancy(&key, true);
                }
                cluster.presence_join(channel, &member.user_id, info, max_members);
                self.console_member(channel, &member.user_id, true);
            }
        }
        if let Some(replica) = ch.replica.as_mut() {
            replica.waiting.push(WaitingMember {
                conn,
                outbox: outbox.clone(),
                member: member.clone(),
                cache,
            });
        }
        self.release(ch, channel);
        PresenceJoin::Joined(key)
    }

    fn unsubscribe_clustered(&self, shard: &mut Shard, channel: &str, conn: ConnId) {
        let Some(ch) = shard.get_mut(channel) else {
            return;
        };
        let before = ch.subscribers.len();
        let removed = ch.subscribers.remove(&conn);
        self.notify(ch, channel, before, false);
        let user = match removed {
            Some(sub) => sub.user_id,
            None => {
                let Some(replica) = ch.replica.as_mut() else {
                    return;
                };
                let Some(at) = replica.waiting.iter().position(|w| w.conn == conn) else {
                    return;
                };
                let user = replica.waiting.remove(at).member.user_id;
                if ch.subscribers.is_empty() && replica.waiting.is_empty() {
                    // It left before it was acknowledged: undo the occupancy signalled early.
                    self.signal_occupancy(channel, false);
                }
                Some(user)
            }
        };
        if let Some(user) = user {
            self.leave_local(ch, channel, &user);
        }
        self.drop_if_unused(shard, channel);
    }

    /// A clustered presence channel nobody on this node subscribes to or waits for any more:
    /// the node stops listening, and forgets it unless it keeps a fresh cached event.
    fn drop_if_unused(&self, shard: &mut Shard, channel: &str) {
        let Some(ch) = shard.get_mut(channel) else {
            return;
        };
        let unused = ch.subscribers.is_empty()
            && ch.waiting.is_empty()
            && ch.replica.as_ref().is_none_or(|r| r.waiting.is_empty());
        if unused {
            self.maybe_last_local(ch, channel);
            if !ch.cache.as_ref().is_some_and(Cached::fresh) {
                shard.remove(channel);
            }
        }
    }

    /// One socket of `user` left this node's presence channel; its last one leaves the
    /// cluster through Redis (or, with Redis away, the replica directly).
    fn leave_local(&self, ch: &mut Channel, channel: &str, user: &Arc<str>) {
        let last = ch.members.as_mut().is_some_and(|m| m.leave(user));
        if !last {
            return;
        }
        let Some(cluster) = &self.cluster else {
            return;
        };
        if cluster.is_down() {
            if let Some(replica) = ch.replica.as_mut()
                && replica.change(false, user, "") == Applied::Removed
            {
                push_member_event(ch, channel, false, user, None);
            }
        } else {
            cluster.presence_leave(channel, user);
            self.console_member(channel, user, false);
        }
    }

    /// A user's first socket (on this node) joined a presence channel, or its last left.
    fn console_member(&self, channel: &str, user_id: &str, added: bool) {
        if self.console.is_open() {
            let kind = if added {
                "member_added"
            } else {
                "member_removed"
            };
            self.console.record(
                kind,
                serde_json::json!({ "channel": channel, "user_id": user_id }),
            );
        }
    }

    /// A member event heard from Redis.
    pub(crate) fn apply_member_event(&self, channel: &str, event: MemberEvent) {
        self.touch(channel);
        let mut shard = self.shard(channel).write();
        let Some(ch) = shard.get_mut(channel) else {
            return;
        };
        let Some(replica) = ch.replica.as_mut() else {
            return;
        };
        let user: Arc<str> = Arc::from(event.user_id.as_str());
        match replica.apply(event) {
            Applied::Nothing => {}
            Applied::Added => {
                let info = replica.info(&user);
                push_member_event(ch, channel, true, &user, info.as_deref());
            }
            Applied::Removed => push_member_event(ch, channel, false, &user, None),
        }
        self.release(ch, channel);
    }

    /// The member list read from Redis at `version`: readies the replica, or, after a
    /// reconnect, brings it up to date and tells local subscribers what changed.
    pub(crate) fn install_members(
        &self,
        channel: &str,
        version: u64,
        members: Vec<(String, String)>,
    ) {
        self.touch(channel);
        let mut shard = self.shard(channel).write();
        let Some(ch) = shard.get_mut(channel) else {
            return;
        };
        let Some(replica) = ch.replica.as_mut() else {
            return;
        };
        let (added, removed) = replica.install(version, members);
        let infos: Vec<_> = added.iter().map(|u| (u.clone(), replica.info(u))).collect();
        for (user, info) in infos {
            push_member_event(ch, channel, true, &user, info.as_deref());
        }
        for user in removed {
            push_member_event(ch, channel, false, &user, None);
        }
        self.release(ch, channel);
    }

    /// Redis refused `user` (the channel is full cluster-wide): its waiting sockets get a
    /// `subscription_error`.
    pub(crate) fn refuse_member(&self, channel: &str, user: &str, limit: usize) {
        let mut shard = self.shard(channel).write();
        let Some(ch) = shard.get_mut(channel) else {
            return;
        };
        let Some(replica) = ch.replica.as_mut() else {
            return;
        };
        let (refused, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut replica.waiting)
            .into_iter()
            .partition(|w| &*w.member.user_id == user);
        replica.waiting = kept;
        let frame = encode::subscription_error_frame(
            channel,
            "LimitReached",
            &format!("The presence channel {channel} already has the maximum of {limit} members"),
            403,
        );
        for w in &refused {
            w.outbox.push(frame.clone());
            if let Some(local) = ch.members.as_mut() {
                local.leave(&w.member.user_id);
            }
        }
        let emptied =
            ch.subscribers.is_empty() && ch.replica.as_ref().is_none_or(|r| r.waiting.is_empty());
        if !refused.is_empty() && emptied {
            // Undo the occupancy signalled before the refused user's join.
            self.signal_occupancy(channel, false);
        }
        self.drop_if_unused(&mut shard, channel);
    }

    /// Redis went away: every presence socket still waiting joins from this node's replica.
    pub(crate) fn release_presence_waiting(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            let names: Vec<Arc<str>> = shard
                .iter()
                .filter(|(_, ch)| {
                    ch.replica
                        .as_ref()
                        .is_some_and(|r| !r.waiting.is_empty() || !r.is_ready())
                })
                .map(|(name, _)| name.clone())
                .collect();
            for name in names {
                let Some(ch) = shard.get_mut(&name) else {
                    continue;
                };
                let Some(replica) = ch.replica.as_mut() else {
                    continue;
                };
                if replica.version.is_none() {
                    replica.version = Some(0);
                }
                let users: Vec<Member> = replica.waiting.iter().map(|w| w.member.clone()).collect();
                for member in users {
                    let info = member
                        .info
                        .as_ref()
                        .map(|i| i.get().to_string())
                        .unwrap_or_default();
                    let Some(replica) = ch.replica.as_mut() else {
                        break;
                    };
                    if replica.change(true, &member.user_id, &info) == Applied::Added {
                        push_member_event(ch, &name, true, &member.user_id, member.info.as_deref());
                    }
                }
                self.release(ch, &name);
                self.touch(&name);
            }
        }
    }

    /// This node's presence users per channel, for asserting them anew in Redis.
    pub(crate) fn local_presence(&self) -> Vec<(Arc<str>, Vec<Member>)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            for (name, ch) in shard.iter() {
                if ch.replica.is_none() {
                    continue;
                }
                let Some(local) = ch.members.as_ref() else {
                    continue;
                };
                let ids = local.user_ids();
                let members = ids
                    .into_iter()
                    .map(|id| {
                        let info = ch.replica.as_ref().and_then(|r| {
                            r.info(&id).or_else(|| {
                                r.waiting
                                    .iter()
                                    .find(|w| *w.member.user_id == *id)
                                    .and_then(|w| w.member.info.clone())
                            })
                        });
                        Member {
                            user_id: Arc::from(id.as_str()),
                            info,
                        }
                    })
                    .collect();
                out.push((name.clone(), members));
            }
        }
        out
    }

    /// Pushes `frame` to every subscriber of `channel` but `except`; returns how many got it.
    pub(crate) fn publish(&self, channel: &str, frame: &Bytes, except: Option<ConnId>) -> usize {
        let shard = self.shard(channel).read();
        let Some(ch) = shard.get(channel) else {
            return 0;
        };
        let sent = push_all(ch, frame, except);
        drop(shard);
        self.metrics.delivered(sent, frame.len());
        sent
    }

    /// Keeps a cache channel's event without sending it (read from the cluster for the
    /// channel's first subscribers on this node).
    pub(crate) fn keep_cached(&self, channel: &str, frame: &Bytes, data: &str, ttl: Duration) {
        let mut shard = self.shard(channel).write();
        let ch = shard.entry(Arc::from(channel)).or_default();
        ch.cache = Some(Cached {
            frame: frame.clone(),
            data: Arc::from(data),
            expires: Instant::now() + ttl,
        });
    }

    /// Publishes to a cache channel and keeps the event for `ttl`.
    pub(crate) fn publish_cached(
        &self,
        channel: &str,
        frame: &Bytes,
        data: &str,
        ttl: Duration,
        except: Option<ConnId>,
    ) -> usize {
        let mut shard = self.shard(channel).write();
        let is_new = !shard.contains_key(channel);
        let ch = shard.entry(Arc::from(channel)).or_default();
        ch.cache = Some(Cached {
            frame: frame.clone(),
            data: Arc::from(data),
            expires: Instant::now() + ttl,
        });
        let sent = push_all(ch, frame, except);
        self.metrics.delivered(sent, frame.len());
        if is_new && shard.len().is_multiple_of(SWEEP_EVERY) {
            shard.retain(|_, ch| {
                !ch.subscribers.is_empty()
                    || !ch.waiting.is_empty()
                    || ch.cache.as_ref().is_some_and(Cached::fresh)
            });
        }
        sent
    }

    /// The cached event of a cache channel, if one is stored and fresh.
    pub(crate) fn cache(&self, channel: &str) -> Option<CacheInfo> {
        let shard = self.shard(channel).read();
        let cached = shard.get(channel)?.cache.as_ref().filter(|c| c.fresh())?;
        Some(CacheInfo {
            data: cached.data.clone(),
            ttl: cached.expires.saturating_duration_since(Instant::now()),
        })
    }

    /// The connections subscribed to `channel` on this node.
    pub(crate) fn subscriber_conns(&self, channel: &str) -> Vec<ConnId> {
        let shard = self.shard(channel).read();
        shard
            .get(channel)
            .map(|ch| ch.subscribers.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Counts for an occupied channel; `None` when nobody is subscribed.
    pub(crate) fn stats(&self, channel: &str) -> Option<ChannelStats> {
        let shard = self.shard(channel).read();
        shard
            .get(channel)
            .filter(|ch| !ch.subscribers.is_empty())
            .map(Channel::stats)
    }

    /// Every occupied channel whose name starts with `prefix`.
    pub(crate) fn channels(&self, prefix: &str) -> Vec<(String, ChannelStats)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            out.extend(
                shard
                    .iter()
                    .filter(|(name, ch)| !ch.subscribers.is_empty() && name.starts_with(prefix))
                    .map(|(name, ch)| (name.to_string(), ch.stats())),
            );
        }
        out
    }

    /// Distinct user ids of a presence channel (empty when unoccupied).
    pub(crate) fn users(&self, channel: &str) -> Vec<String> {
        let shard = self.shard(channel).read();
        shard
            .get(channel)
            .and_then(|ch| ch.members.as_ref())
            .map(Members::user_ids)
            .unwrap_or_default()
    }

    /// Sends the count now if the channel's last one is old enough, else marks it pending
    /// for [`Registry::flush_counts`]. Presence channels never get counts.
    fn count_changed(&self, ch: &mut Channel, name: &str) {
        if ch.members.is_some() {
            return;
        }
        let due = ch.count_sent.is_none_or(|t| t.elapsed() >= COUNT_INTERVAL);
        if due {
            send_count(ch, name);
        } else if !ch.count_pending {
            ch.count_pending = true;
            self.pending_counts.lock().push(Arc::from(name));
        }
    }

    /// Sends the counts that were held back; called periodically (several times a second).
    pub(crate) fn flush_counts(&self) {
        let pending = std::mem::take(&mut *self.pending_counts.lock());
        let mut again = Vec::new();
        for name in pending {
            let mut shard = self.shard(&name).write();
            let Some(ch) = shard.get_mut(&*name) else {
                continue;
            };
            if !ch.count_pending {
                continue;
            }
            if ch.count_sent.is_none_or(|t| t.elapsed() >= COUNT_INTERVAL) {
                ch.count_pending = false;
                if !ch.subscribers.is_empty() {
                    send_count(ch, &name);
                }
            } else {
                again.push(name.clone());
            }
        }
        if !again.is_empty() {
            self.pending_counts.lock().extend(again);
        }
    }
}

/// The map's own copy of `channel` when the channel exists, else a new one.
fn shared_key(shard: &Shard, channel: &str) -> Arc<str> {
    match shard.get_key_value(channel) {
        Some((key, _)) => key.clone(),
        None => Arc::from(channel),
    }
}

/// What [`join`] did.
struct Joined {
    /// The subscriber is new.
    added: bool,
    /// It subscribed to a cache channel with nothing cached.
    missed: bool,
}

/// Adds a non-presence subscriber and queues its `subscription_succeeded`, then, on a cache
/// channel, the cached event or `pusher:cache_miss`.
fn join(
    ch: &mut Channel,
    channel: &str,
    conn: ConnId,
    outbox: &Arc<Outbox>,
    cache: bool,
) -> Joined {
    let mut added = false;
    ch.subscribers.entry(conn).or_insert_with(|| {
        added = true;
        Subscriber {
            outbox: outbox.clone(),
            user_id: None,
        }
    });
    outbox.push(
        Event::new("pusher_internal:subscription_succeeded")
            .channel(channel)
            .text("{}")
            .to_frame(),
    );
    let missed = cache && send_cached(ch, channel, outbox);
    Joined { added, missed }
}

fn succeeded_frame(channel: &str, data: &str) -> Bytes {
    Event::new("pusher_internal:subscription_succeeded")
        .channel(channel)
        .text(data)
        .to_frame()
}

/// `member_added` or `member_removed` to every subscriber of the channel on this node.
fn push_member_event(
    ch: &Channel,
    channel: &str,
    added: bool,
    user: &str,
    info: Option<&serde_json::value::RawValue>,
) {
    let frame = if added {
        let json = presence::member_added_json(&Member {
            user_id: Arc::from(user),
            info: info.map(|i| Arc::from(i.to_owned())),
        });
        Event::new("pusher_internal:member_added")
            .channel(channel)
            .text(&json)
            .to_frame()
    } else {
        Event::new("pusher_internal:member_removed")
            .channel(channel)
            .text(&presence::member_removed_json(user))
            .to_frame()
    };
    push_all(ch, &frame, None);
}

/// Acknowledges the waiting presence sockets whose user the ready replica now lists;
/// returns whether one of them found a cache channel empty.
fn release_members(ch: &mut Channel, channel: &str) -> bool {
    let Some(replica) = ch.replica.as_mut() else {
        return false;
    };
    if !replica.is_ready() || replica.waiting.is_empty() {
        return false;
    }
    let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut replica.waiting)
        .into_iter()
        .partition(|w| replica.members.contains_key(&w.member.user_id));
    replica.waiting = waiting;
    if ready.is_empty() {
        return false;
    }
    let mut missed = false;
    let frame = succeeded_frame(channel, &replica.snapshot_json());
    for w in ready {
        ch.subscribers.insert(
            w.conn,
            Subscriber {
                outbox: w.outbox.clone(),
                user_id: Some(w.member.user_id.clone()),
            },
        );
        w.outbox.push(frame.clone());
        if w.cache {
            missed |= send_cached(ch, channel, &w.outbox);
        }
    }
    missed
}

fn push_all(ch: &Channel, frame: &Bytes, except: Option<ConnId>) -> usize {
    let mut sent = 0;
    for (conn, sub) in &ch.subscribers {
        if Some(*conn) != except && sub.outbox.push(frame.clone()) {
            sent += 1;
        }
    }
    sent
}

/// Sends a cache channel's event, or `pusher:cache_miss`; returns whether it missed.
fn send_cached(ch: &Channel, channel: &str, outbox: &Outbox) -> bool {
    match ch.cache.as_ref().filter(|c| c.fresh()) {
        Some(cached) => {
            outbox.push(cached.frame.clone());
            false
        }
        None => {
            outbox.push(Event::new("pusher:cache_miss").channel(channel).to_frame());
            true
        }
    }
}

fn send_count(ch: &mut Channel, channel: &str) {
    ch.count_sent = Some(Instant::now());
    let data = format!("{{\"subscription_count\":{}}}", ch.subscribers.len());
    let frame = Event::new("pusher_internal:subscription_count")
        .channel(channel)
        .text(&data)
        .to_frame();
    push_all(ch, &frame, None);
}

impl Cached {
    fn fresh(&self) -> bool {
        Instant::now() < self.expires
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
    use super::super::outbox::drained_texts;
    use super::*;

    fn outbox() -> Arc<Outbox> {
        Arc::new(Outbox::new(1 << 20))
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
        r.subscribe("c", 1, &a, false);
        r.subscribe("c", 2, &b, false);
        drained_texts(&a).await;
        drained_texts(&b).await;
        let frame = Event::new("e").channel("c").text("x").to_frame();
        assert_eq!(r.publish("c", &frame, Some(1)), 1);
        assert!(!b.is_closing());
        assert_eq!(drained_texts(&b).await.len(), 1);
        assert_eq!(r.publish("nobody", &frame, None), 0);
    }

    #[tokio::test]
    async fn presence_announces_first_socket_and_last_leave_only() {
        let r = Registry::default();
        let (a, b1, b2) = (outbox(), outbox(), outbox());
        assert_eq!(
            r.subscribe_presence("presence-x", 1, &a, &member("a"), 10, false),
            PresenceJoin::Joined(Arc::from("presence-x"))
        );
        drained_texts(&a).await;
        r.subscribe_presence("presence-x", 2, &b1, &member("b"), 10, false);
        assert_eq!(drained_texts(&a).await.len(), 1, "member_added for b");
        r.subscribe_presence("presence-x", 3, &b2, &member("b"), 10, false);
        assert_eq!(
            r.stats("presence-x"),
            Some(ChannelStats {
                subscriptions: 3,
                users: Some(2)
            })
        );
        r.unsubscribe("presence-x", 2);
        r.unsubscribe("presence-x", 3);
        let got = drained_texts(&a).await;
        assert_eq!(got.len(), 1, "only one member_removed: {got:?}");
        assert!(got[0].contains("member_removed"));
        r.unsubscribe("presence-x", 1);
        assert_eq!(r.stats("presence-x"), None);
    }

    #[tokio::test]
    async fn full_presence_channel_admits_existing_members_only() {
        let r = Registry::default();
        let (a, a2, b) = (outbox(), outbox(), outbox());
        r.subscribe_presence("presence-x", 1, &a, &member("a"), 1, false);
        assert_eq!(
            r.subscribe_presence("presence-x", 2, &b, &member("b"), 1, false),
            PresenceJoin::Full { limit: 1 }
        );
        assert_eq!(
            r.subscribe_presence("presence-x", 3, &a2, &member("a"), 1, false),
            PresenceJoin::Joined(Arc::from("presence-x"))
        );
    }

    #[test]
    fn channels_filters_by_prefix() {
        let r = Registry::default();
        let o = outbox();
        r.subscribe("a-1", 1, &o, false);
        r.subscribe("b-1", 1, &o, false);
        let names: Vec<String> = r.channels("a-").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["a-1".to_string()]);
        assert_eq!(r.channels("").len(), 2);
    }

    #[tokio::test]
    async fn cache_channel_hands_the_last_event_to_new_subscribers() {
        let r = Registry::default();
        let a = outbox();
        r.subscribe("cache-x", 1, &a, true);
        let got = drained_texts(&a).await;
        assert!(got[1].contains("pusher:cache_miss"), "{got:?}");
        let frame = Event::new("e").channel("cache-x").text("v1").to_frame();
        r.publish_cached("cache-x", &frame, "v1", Duration::from_secs(60), None);
        r.unsubscribe("cache-x", 1);
        assert_eq!(
            r.stats("cache-x"),
            None,
            "a cache entry alone is not occupancy"
        );
        let b = outbox();
        r.subscribe("cache-x", 2, &b, true);
        let got = drained_texts(&b).await;
        assert_eq!(got.len(), 2);
        assert!(got[1].contains("\"data\":\"v1\""), "{got:?}");
        assert_eq!(
            r.cache("cache-x").map(|c| c.data.to_string()),
            Some("v1".to_string())
        );
    }

    #[tokio::test]
    async fn subscription_counts_are_coalesced() {
        let r = Registry::new(true, None);
        let (a, b, c) = (outbox(), outbox(), outbox());
        r.subscribe("ch", 1, &a, false);
        let got = drained_texts(&a).await;
        assert!(got[1].contains("{\\\"subscription_count\\\":1}"), "{got:?}");
        r.subscribe("ch", 2, &b, false);
        r.subscribe("ch", 3, &c, false);
        let early = tokio::time::timeout(Duration::from_millis(50), a.drained()).await;
        assert!(early.is_err(), "no second count within a second");
        tokio::time::sleep(COUNT_INTERVAL).await;
        r.flush_counts();
        let got = drained_texts(&a).await;
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("{\\\"subscription_count\\\":3}"), "{got:?}");
    }
}
