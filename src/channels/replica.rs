//! A node's copy of a presence channel's cluster-wide member list.
//!
//! In a cluster, Redis holds each presence channel's members and the scripts that change
//! them publish every member event, numbered, on the channel's pub/sub channel. A node that
//! has local subscribers keeps this replica: a snapshot read once (with the version it is
//! at), then the events after it, in Redis's order. Events heard before the snapshot arrives
//! wait in `early`; those the snapshot already includes are skipped by version.
//!
//! A local subscriber is acknowledged once the replica is ready and lists its own user, so
//! its `subscription_succeeded` carries the exact cluster list, itself included, and it never
//! gets a `member_added` for itself.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::outbox::Outbox;
use super::presence::Member;
use crate::cluster::wire::MemberEvent;
use crate::protocol::socket_id::ConnId;

/// A presence subscriber waiting for its user to be a member of the replica.
#[derive(Debug)]
pub(crate) struct WaitingMember {
    pub conn: ConnId,
    pub outbox: Arc<Outbox>,
    pub member: Member,
    pub cache: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Replica {
    /// The version of `members`; `None` until the snapshot arrives.
    pub version: Option<u64>,
    pub members: HashMap<Arc<str>, Option<Arc<RawValue>>>,
    pub early: Vec<MemberEvent>,
    pub waiting: Vec<WaitingMember>,
}

/// What applying an event changed, for the frames to push.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    Nothing,
    Added,
    Removed,
}

impl Replica {
    pub(crate) fn is_ready(&self) -> bool {
        self.version.is_some()
    }

    /// Applies one event heard from Redis; events older than the replica are skipped.
    pub(crate) fn apply(&mut self, event: MemberEvent) -> Applied {
        let Some(version) = self.version else {
            self.early.push(event);
            return Applied::Nothing;
        };
        if event.version <= version {
            return Applied::Nothing;
        }
        self.version = Some(event.version);
        self.change(event.added, &event.user_id, &event.info)
    }

    /// Adds or removes a member locally (also used while Redis is away).
    pub(crate) fn change(&mut self, added: bool, user_id: &str, info: &str) -> Applied {
        if added {
            let info = (!info.is_empty())
                .then(|| RawValue::from_string(info.to_string()).ok().map(Arc::from))
                .flatten();
            match self.members.insert(Arc::from(user_id), info) {
                None => Applied::Added,
                Some(_) => Applied::Nothing,
            }
        } else if self.members.remove(user_id).is_some() {
            Applied::Removed
        } else {
            Applied::Nothing
        }
    }

    /// Installs a snapshot; returns the users added and removed relative to the replica as
    /// it was, when it was ready (after a reconnect), so local subscribers can be told.
    pub(crate) fn install(
        &mut self,
        version: u64,
        members: Vec<(String, String)>,
    ) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
        let was_ready = self.is_ready();
        let mut fresh: HashMap<Arc<str>, Option<Arc<RawValue>>> = HashMap::new();
        for (user, info) in members {
            let info = (!info.is_empty())
                .then(|| RawValue::from_string(info).ok().map(Arc::from))
                .flatten();
            fresh.insert(Arc::from(user), info);
        }
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        if was_ready {
            added = fresh
                .keys()
                .filter(|u| !self.members.contains_key(*u))
                .cloned()
                .collect();
            removed = self
                .members
                .keys()
                .filter(|u| !fresh.contains_key(*u))
                .cloned()
                .collect();
        }
        self.members = fresh;
        self.version = Some(version);
        let early = std::mem::take(&mut self.early);
        for event in early {
            self.apply(event);
        }
        (added, removed)
    }

    pub(crate) fn info(&self, user_id: &str) -> Option<Arc<RawValue>> {
        self.members.get(user_id).cloned().flatten()
    }

    /// The `subscription_succeeded` data, as on a single node.
    pub(crate) fn snapshot_json(&self) -> String {
        super::presence::snapshot_json(self.members.iter().map(|(k, v)| (k.as_ref(), v.as_deref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(added: bool, version: u64, user: &str) -> MemberEvent {
        MemberEvent {
            added,
            version,
            user_id: user.into(),
            info: String::new(),
        }
    }

    #[test]
    fn events_before_the_snapshot_wait_and_old_ones_are_skipped() {
        let mut r = Replica::default();
        assert_eq!(r.apply(event(true, 3, "b")), Applied::Nothing);
        assert_eq!(r.apply(event(true, 4, "c")), Applied::Nothing);
        // The snapshot was read at version 3: it has a and b, not c.
        r.install(
            3,
            vec![("a".into(), String::new()), ("b".into(), String::new())],
        );
        assert_eq!(r.version, Some(4));
        let mut users: Vec<&str> = r.members.keys().map(|k| &**k).collect();
        users.sort();
        assert_eq!(users, ["a", "b", "c"]);
        assert_eq!(r.apply(event(false, 4, "c")), Applied::Nothing, "not newer");
        assert_eq!(r.apply(event(false, 5, "c")), Applied::Removed);
    }

    #[test]
    fn a_new_snapshot_reports_the_difference() {
        let mut r = Replica::default();
        r.install(1, vec![("a".into(), String::new())]);
        let (added, removed) = r.install(9, vec![("b".into(), "{\"n\":1}".into())]);
        assert_eq!(
            (added, removed),
            (vec![Arc::from("b")], vec![Arc::from("a")])
        );
        assert_eq!(
            r.info("b").map(|v| v.get().to_string()).as_deref(),
            Some("{\"n\":1}")
        );
    }
}
