//! Presence members of one channel, counted by user, not by socket: a user's first socket
//! makes it a member (and announces it), its last socket leaving removes it. Join and leave
//! are O(1); only the snapshot sent to a new subscriber walks the members (bounded by the
//! app's member limit).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

/// A presence user as authorised by `channel_data`.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// Normalised to a string, whether the app signed a number or a string.
    pub user_id: Arc<str>,
    /// `user_info` exactly as signed, or `None`.
    pub info: Option<Arc<RawValue>>,
}

#[derive(Debug)]
struct Entry {
    info: Option<Arc<RawValue>>,
    sockets: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Members {
    users: HashMap<Arc<str>, Entry>,
}

impl Members {
    pub(crate) fn count(&self) -> usize {
        self.users.len()
    }

    pub(crate) fn contains(&self, user_id: &str) -> bool {
        self.users.contains_key(user_id)
    }

    /// Adds a socket of `member`; true when the user was not a member before.
    pub(crate) fn join(&mut self, member: &Member) -> bool {
        match self.users.get_mut(&member.user_id) {
            Some(e) => {
                e.sockets += 1;
                false
            }
            None => {
                self.users.insert(
                    member.user_id.clone(),
                    Entry {
                        info: member.info.clone(),
                        sockets: 1,
                    },
                );
                true
            }
        }
    }

    /// Removes a socket of `user_id`; true when that was the user's last one.
    pub(crate) fn leave(&mut self, user_id: &str) -> bool {
        let Some(e) = self.users.get_mut(user_id) else {
            return false;
        };
        e.sockets = e.sockets.saturating_sub(1);
        if e.sockets == 0 {
            self.users.remove(user_id);
            true
        } else {
            false
        }
    }

    pub(crate) fn user_ids(&self) -> Vec<String> {
        self.users.keys().map(|k| k.to_string()).collect()
    }

    /// The `subscription_succeeded` data for these members.
    pub(crate) fn snapshot_json(&self) -> String {
        snapshot_json(
            self.users
                .iter()
                .map(|(k, e)| (k.as_ref(), e.info.as_deref())),
        )
    }
}

/// The `subscription_succeeded` data: `{"presence":{"ids":[…],"hash":{…},"count":N}}`.
/// Users without `user_info` keep their key in `hash` with `null`.
pub(crate) fn snapshot_json<'a>(
    members: impl Iterator<Item = (&'a str, Option<&'a RawValue>)>,
) -> String {
    #[derive(Serialize)]
    struct Presence<'a> {
        ids: Vec<&'a str>,
        hash: HashMap<&'a str, Option<&'a RawValue>>,
        count: usize,
    }
    #[derive(Serialize)]
    struct Wrapper<'a> {
        presence: Presence<'a>,
    }
    let hash: HashMap<&str, Option<&RawValue>> = members.collect();
    let w = Wrapper {
        presence: Presence {
            ids: hash.keys().copied().collect(),
            count: hash.len(),
            hash,
        },
    };
    serde_json::to_string(&w).unwrap_or_default()
}

/// `member_added` data: `{"user_id":"…","user_info":…}`.
pub(crate) fn member_added_json(member: &Member) -> String {
    #[derive(Serialize)]
    struct Added<'a> {
        user_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_info: Option<&'a RawValue>,
    }
    serde_json::to_string(&Added {
        user_id: &member.user_id,
        user_info: member.info.as_deref(),
    })
    .unwrap_or_default()
}

/// `member_removed` data: `{"user_id":"…"}`.
pub(crate) fn member_removed_json(user_id: &str) -> String {
    #[derive(Serialize)]
    struct Removed<'a> {
        user_id: &'a str,
    }
    serde_json::to_string(&Removed { user_id }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, info: Option<&str>) -> Member {
        Member {
            user_id: Arc::from(id),
            info: info.map(|i| {
                Arc::from(RawValue::from_string(i.to_string()).unwrap_or_else(|e| panic!("{e}")))
            }),
        }
    }

    #[test]
    fn counts_users_not_sockets() {
        let mut m = Members::default();
        assert!(m.join(&member("1", None)));
        assert!(!m.join(&member("1", None)));
        assert!(m.join(&member("2", None)));
        assert_eq!(m.count(), 2);
        assert!(!m.leave("1"));
        assert_eq!(m.count(), 2);
        assert!(m.leave("1"));
        assert_eq!(m.count(), 1);
        assert!(!m.leave("unknown"));
    }

    #[test]
    fn snapshot_keeps_users_without_info() {
        let mut m = Members::default();
        m.join(&member("1", Some(r#"{"name":"A"}"#)));
        m.join(&member("2", None));
        let v: serde_json::Value = serde_json::from_str(&m.snapshot_json()).unwrap_or_default();
        assert_eq!(v["presence"]["count"], 2);
        assert_eq!(v["presence"]["hash"]["1"]["name"], "A");
        assert!(
            v["presence"]["hash"]
                .as_object()
                .map(|h| h.contains_key("2"))
                .unwrap_or(false)
        );
        assert_eq!(v["presence"]["ids"].as_array().map(|a| a.len()), Some(2));
    }

    #[test]
    fn member_event_payloads() {
        assert_eq!(
            member_added_json(&member("3", Some(r#"{"name":"C"}"#))),
            r#"{"user_id":"3","user_info":{"name":"C"}}"#
        );
        assert_eq!(member_removed_json("3"), r#"{"user_id":"3"}"#);
    }
}
