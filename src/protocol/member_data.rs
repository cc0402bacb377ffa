//! The JSON a client proves its identity with: a presence subscription's `channel_data`
//! (`{"user_id", "user_info"}`) and a sign-in's `user_data` (`{"id", "user_info",
//! "watchlist"}`). Parsed here once, for the WebSocket session and anything else that reads
//! them; the strings stay as the client signed them.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::limits::{MAX_USER_ID_LEN, MAX_WATCHLIST};

/// A presence member as its `channel_data` states it.
#[derive(Debug)]
pub(crate) struct ChannelMember<'a> {
    pub user_id: String,
    /// `user_info` as sent (absent or `null`: none).
    pub user_info: Option<&'a RawValue>,
}

/// A signed-in user as its `user_data` states it.
#[derive(Debug)]
pub(crate) struct SignedInUser<'a> {
    pub id: String,
    pub user_info: Option<&'a RawValue>,
    /// The watched user ids, at most [`MAX_WATCHLIST`] (see `watchlist_over`).
    pub watchlist: Vec<String>,
    /// The watchlist named more than [`MAX_WATCHLIST`] ids.
    pub watchlist_over: bool,
}

#[derive(Deserialize)]
struct RawChannelData<'a> {
    #[serde(borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user_info: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawUserData<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user_info: Option<&'a RawValue>,
    #[serde(borrow, default)]
    watchlist: Option<Vec<&'a RawValue>>,
}

/// A user id given as a non-empty string or as an integer (pusher-js apps send both).
pub(crate) fn user_id_text(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    if text.starts_with('"') {
        let s: String = serde_json::from_str(text).ok()?;
        (!s.is_empty()).then_some(s)
    } else if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') && !text.is_empty() {
        Some(text.to_string())
    } else {
        None
    }
}

fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get() != "null")
}

/// Parses `channel_data`; `max_info_bytes` bounds `user_info`. The error is the message for
/// the client.
pub(crate) fn channel_member(
    text: &str,
    max_info_bytes: usize,
) -> Result<ChannelMember<'_>, String> {
    if !text.trim_start().starts_with('{') {
        return Err("channel_data must be a JSON object".into());
    }
    let data: RawChannelData<'_> = serde_json::from_str(text)
        .map_err(|e| format!("channel_data is not a JSON object: {e}"))?;
    let raw_id = data.user_id.ok_or("channel_data has no user_id")?;
    let user_id = user_id_text(raw_id).ok_or("user_id must be a non-empty string or a number")?;
    if user_id.len() > MAX_USER_ID_LEN {
        return Err(format!(
            "user_id is longer than {MAX_USER_ID_LEN} characters"
        ));
    }
    let user_info = present(data.user_info);
    if let Some(raw) = user_info
        && raw.get().len() > max_info_bytes
    {
        return Err(format!(
            "user_info is {} bytes; the limit is {max_info_bytes} bytes",
            raw.get().len()
        ));
    }
    Ok(ChannelMember { user_id, user_info })
}

/// Parses a sign-in's `user_data`. The error is the message for the client.
pub(crate) fn signed_in_user(text: &str) -> Result<SignedInUser<'_>, String> {
    if !text.trim_start().starts_with('{') {
        return Err("user_data must be a JSON object".into());
    }
    let data: RawUserData<'_> =
        serde_json::from_str(text).map_err(|e| format!("user_data is not valid JSON: {e}"))?;
    let id = data
        .id
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
        .filter(|id| !id.is_empty())
        .ok_or("user_data must contain an \"id\" that is a non-empty string")?;
    let listed = data.watchlist.unwrap_or_default();
    Ok(SignedInUser {
        id,
        user_info: present(data.user_info),
        watchlist_over: listed.len() > MAX_WATCHLIST,
        watchlist: listed
            .iter()
            .take(MAX_WATCHLIST)
            .filter_map(|raw| user_id_text(raw))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_data_rules() {
        let m = channel_member(r#"{"user_id":"ada","user_info":{"n":1}}"#, 1024)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.user_id, "ada");
        assert_eq!(m.user_info.map(RawValue::get), Some(r#"{"n":1}"#));
        let m = channel_member(r#"{"user_id":42,"user_info":null}"#, 1024)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((m.user_id.as_str(), m.user_info.is_none()), ("42", true));
        for bad in [
            "[]",
            "{}",
            r#"{"user_id":""}"#,
            r#"{"user_id":1.5}"#,
            "{",
            r#"{"user_id":true}"#,
        ] {
            assert!(channel_member(bad, 1024).is_err(), "{bad}");
        }
        let long = format!(r#"{{"user_id":"{}"}}"#, "x".repeat(MAX_USER_ID_LEN + 1));
        assert!(channel_member(&long, 1024).is_err());
        assert!(channel_member(r#"{"user_id":"a","user_info":{"n":"0123456789"}}"#, 10).is_err());
    }

    #[test]
    fn user_data_rules() {
        let u = signed_in_user(r#"{"id":"ada","watchlist":["b",7,""]}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.id, "ada");
        assert_eq!(u.watchlist, ["b", "7"]);
        assert!(!u.watchlist_over);
        assert!(
            signed_in_user(r#"{"id":7}"#).is_err(),
            "a sign-in id is a string"
        );
        assert!(signed_in_user("[]").is_err());
        let many: Vec<String> = (0..=MAX_WATCHLIST).map(|i| format!("\"{i}\"")).collect();
        let text = format!(r#"{{"id":"a","watchlist":[{}]}}"#, many.join(","));
        let u = signed_in_user(&text).unwrap_or_else(|e| panic!("{e}"));
        assert!(u.watchlist_over);
        assert_eq!(u.watchlist.len(), MAX_WATCHLIST);
    }

    #[test]
    fn user_id_normalisation() {
        let raw = |s: &str| RawValue::from_string(s.to_string()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(user_id_text(&raw("10")), Some("10".to_string()));
        assert_eq!(user_id_text(&raw("\"abc\"")), Some("abc".to_string()));
        assert_eq!(user_id_text(&raw("\"\"")), None);
        assert_eq!(user_id_text(&raw("{}")), None);
        assert_eq!(user_id_text(&raw("1.5")), None);
    }
}
