//! Who the user is, as the app's callbacks state it, and the JSON strings that carry it: a
//! presence member becomes `channel_data`, a signed-in user becomes `user_data`. Both are
//! checked against the rules Crier's own session applies when the client sends them back
//! (presence data through `protocol::member_data` itself; sign-in ids also against the user
//! channel they name), so a token made here is never refused there for its content.

use serde::Serialize;
use serde_json::Value;

use super::error::AuthError;
use crate::protocol::channel::{USER_CHANNEL_PREFIX, classify};
use crate::protocol::clip::clip;
use crate::protocol::limits::MAX_USER_ID_LEN;
use crate::protocol::member_data;

/// A presence channel member, as the app's presence-data callback describes the user.
///
/// `user_id` becomes the member's key (`members.me.id` in pusher-js): non-empty, at most 128
/// bytes. `user_info` is what other members see (`members.me.info`, Echo's `here()`): a
/// JSON object, at most 1 KB once encoded; `None` or JSON `null` leaves it out.
///
/// ```
/// use crier::authorizer::PresenceMember;
/// use serde_json::json;
///
/// let member = PresenceMember {
///     user_id: "42".to_string(),
///     user_info: Some(json!({"name": "Ada", "avatar": "/img/ada.png"})),
/// };
/// assert_eq!(member.user_id, "42");
/// ```
#[derive(Debug, Clone)]
pub struct PresenceMember {
    /// The member's id, always sent as a JSON string.
    pub user_id: String,
    /// Shown to the other members; must be a JSON object when present.
    pub user_info: Option<Value>,
}

/// A signed-in user (pusher-js `signin()`), as the app's user-data callback describes it.
///
/// `id` is the identity the connection takes: non-empty, at most 128 bytes, and made of the
/// channel-name characters `A-Z a-z 0-9 _ - = @ , . ;`, since pusher-js subscribes to
/// `#server-to-user-<id>` right after signing in. `user_info` follows the rules of
/// [`PresenceMember::user_info`]. `watchlist` names the user ids whose online status this user
/// follows (the app must have watchlist events enabled); empty leaves it out.
///
/// ```
/// use crier::authorizer::UserData;
/// use serde_json::json;
///
/// let user = UserData {
///     id: "42".to_string(),
///     user_info: Some(json!({"name": "Ada"})),
///     watchlist: vec!["7".to_string(), "8".to_string()],
/// };
/// assert_eq!(user.watchlist.len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct UserData {
    /// The user's id.
    pub id: String,
    /// Public details of the user; must be a JSON object when present.
    pub user_info: Option<Value>,
    /// User ids to watch; may be empty.
    pub watchlist: Vec<String>,
}

/// `channel_data` with a fixed field order and `user_id` always a string.
#[derive(Serialize)]
struct ChannelData<'a> {
    user_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_info: Option<&'a Value>,
}

/// `user_data` with a fixed field order.
#[derive(Serialize)]
struct SignedUserData<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_info: Option<&'a Value>,
    #[serde(skip_serializing_if = "no_ids")]
    watchlist: &'a [String],
}

fn no_ids(list: &&[String]) -> bool {
    list.is_empty()
}

/// A JSON string of `value`; the callbacks' plain data always encodes.
fn to_json(value: &impl Serialize) -> Result<String, AuthError> {
    serde_json::to_string(value)
        .map_err(|e| AuthError::Forbidden(format!("could not encode the user: {e}")))
}

fn check_id(what: &str, id: &str) -> Result<(), AuthError> {
    if id.is_empty() {
        return Err(AuthError::Forbidden(format!("{what} must not be empty")));
    }
    if id.len() > MAX_USER_ID_LEN {
        return Err(AuthError::Forbidden(format!(
            "{what} {} is {} bytes long; at most {MAX_USER_ID_LEN} are allowed",
            clip(id, 64),
            id.len()
        )));
    }
    Ok(())
}

/// `user_info` as it will be sent: `None` for absent or `null`, else an object that fits.
fn check_info(info: Option<&Value>, max_bytes: usize) -> Result<Option<&Value>, AuthError> {
    match info {
        None | Some(Value::Null) => Ok(None),
        Some(value @ Value::Object(_)) => {
            let size = to_json(value)?.len();
            if size > max_bytes {
                return Err(AuthError::Forbidden(format!(
                    "user_info is {size} bytes as JSON; at most {max_bytes} are allowed"
                )));
            }
            Ok(Some(value))
        }
        Some(_) => Err(AuthError::Forbidden(
            "user_info must be a JSON object".to_string(),
        )),
    }
}

impl PresenceMember {
    /// The presence `channel_data` string, or why this member cannot join.
    pub(super) fn channel_data(&self, max_info_bytes: usize) -> Result<String, AuthError> {
        let user_info = check_info(self.user_info.as_ref(), max_info_bytes)?;
        let json = to_json(&ChannelData {
            user_id: &self.user_id,
            user_info,
        })?;
        // The session's own parser: what it would refuse is refused here, by the same rule.
        member_data::channel_member(&json, max_info_bytes)
            .map_err(|why| AuthError::Forbidden(format!("the presence member: {why}")))?;
        Ok(json)
    }
}

impl UserData {
    /// The sign-in `user_data` string, or why this user cannot sign in.
    pub(super) fn user_data(&self, max_info_bytes: usize) -> Result<String, AuthError> {
        check_id("the user id", &self.id)?;
        if classify(&format!("{USER_CHANNEL_PREFIX}{}", self.id)).is_err() {
            return Err(AuthError::Forbidden(format!(
                "the user id {:?} may only contain A-Z a-z 0-9 _ - = @ , . ; \
                 (it names the channel {USER_CHANNEL_PREFIX}<id>)",
                clip(&self.id, 64)
            )));
        }
        if self.watchlist.iter().any(String::is_empty) {
            return Err(AuthError::Forbidden(
                "watchlist entries must not be empty".to_string(),
            ));
        }
        let user_info = check_info(self.user_info.as_ref(), max_info_bytes)?;
        to_json(&SignedUserData {
            id: &self.id,
            user_info,
            watchlist: &self.watchlist,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAX: usize = 1024;

    fn member(user_id: &str, user_info: Option<Value>) -> PresenceMember {
        PresenceMember {
            user_id: user_id.to_string(),
            user_info,
        }
    }

    fn user(id: &str, user_info: Option<Value>, watchlist: &[&str]) -> UserData {
        UserData {
            id: id.to_string(),
            user_info,
            watchlist: watchlist.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn channel_data_has_a_string_id_and_optional_info() {
        let data = member("10", Some(json!({"name": "Mr. Pusher"}))).channel_data(MAX);
        assert_eq!(
            data,
            Ok(r#"{"user_id":"10","user_info":{"name":"Mr. Pusher"}}"#.to_string())
        );
        assert_eq!(
            member("ada", None).channel_data(MAX),
            Ok(r#"{"user_id":"ada"}"#.to_string())
        );
        assert_eq!(
            member("ada", Some(Value::Null)).channel_data(MAX),
            Ok(r#"{"user_id":"ada"}"#.to_string())
        );
    }

    #[test]
    fn bad_members_are_refused() {
        let refused =
            |m: PresenceMember| matches!(m.channel_data(MAX), Err(AuthError::Forbidden(_)));
        assert!(refused(member("", None)));
        assert!(refused(member(&"x".repeat(MAX_USER_ID_LEN + 1), None)));
        assert!(!refused(member(&"x".repeat(MAX_USER_ID_LEN), None)));
        assert!(refused(member("a", Some(json!("text")))));
        assert!(refused(member("a", Some(json!([1, 2])))));
        // {"n":"…"} is 8 bytes plus the string.
        assert!(!refused(member(
            "a",
            Some(json!({"n": "x".repeat(MAX - 8)}))
        )));
        assert!(refused(member(
            "a",
            Some(json!({"n": "x".repeat(MAX - 7)}))
        )));
    }

    #[test]
    fn user_data_fields_in_order_and_empty_ones_left_out() {
        assert_eq!(
            user("12345", None, &[]).user_data(MAX),
            Ok(r#"{"id":"12345"}"#.to_string())
        );
        assert_eq!(
            user("ada", Some(json!({"name": "Ada"})), &["b", "c"]).user_data(MAX),
            Ok(r#"{"id":"ada","user_info":{"name":"Ada"},"watchlist":["b","c"]}"#.to_string())
        );
    }

    #[test]
    fn bad_users_are_refused() {
        let refused = |u: UserData| matches!(u.user_data(MAX), Err(AuthError::Forbidden(_)));
        assert!(refused(user("", None, &[])));
        assert!(
            refused(user("a b", None, &[])),
            "space cannot name a user channel"
        );
        assert!(refused(user("ą", None, &[])));
        assert!(refused(user(&"x".repeat(MAX_USER_ID_LEN + 1), None, &[])));
        assert!(refused(user("a", Some(json!(1)), &[])));
        assert!(refused(user("a", None, &["b", ""])));
        assert!(!refused(user("App.Models.User_1@x=y,z;", None, &[])));
    }
}
