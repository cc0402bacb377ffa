//! Reading the query endpoints' answers. Whatever a server sends, the outcome is a value or
//! [`ClientError::InvalidResponse`], never a panic. Lenient where the SDKs are (a missing
//! count is `None`, an empty `channels` may be `[]`), strict where meaning would be lost
//! (a count that is not a number, a user without an id).

use serde_json::{Map, Value};

use super::ChannelInfo;
use super::error::ClientError;

fn invalid(message: String) -> ClientError {
    ClientError::InvalidResponse(message)
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, ClientError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(invalid(format!(
            "expected a JSON object, got {}",
            kind(&other)
        ))),
        Err(e) => Err(invalid(format!("not JSON: {e}"))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `field` of `object` as a count: absent or `null` is `None`.
fn count(
    object: &Map<String, Value>,
    field: &str,
    context: &str,
) -> Result<Option<u64>, ClientError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_u64().map(Some).ok_or_else(|| {
            invalid(format!(
                "{field} of {context} is {}, not a count",
                kind(value)
            ))
        }),
    }
}

/// `GET /channels`: `{"channels":{"name":{"user_count":n?,…},…}}`, sorted by name.
pub(super) fn channel_list(body: &[u8]) -> Result<Vec<ChannelInfo>, ClientError> {
    let channels = match json_object(body)?.remove("channels") {
        Some(Value::Object(channels)) => channels,
        // PHP-era servers answer an empty list as `[]`.
        Some(Value::Array(list)) if list.is_empty() => Map::new(),
        Some(other) => {
            return Err(invalid(format!(
                "channels is {}, not an object",
                kind(&other)
            )));
        }
        None => return Err(invalid("the answer has no channels".to_string())),
    };
    let mut list = Vec::with_capacity(channels.len());
    for (name, attributes) in channels {
        let empty = Map::new();
        let attributes = match &attributes {
            Value::Object(a) => a,
            Value::Null => &empty,
            other => {
                return Err(invalid(format!(
                    "the entry of channel {name:?} is {}, not an object",
                    kind(other)
                )));
            }
        };
        let context = format!("channel {name:?}");
        list.push(ChannelInfo {
            subscription_count: count(attributes, "subscription_count", &context)?,
            user_count: count(attributes, "user_count", &context)?,
            occupied: true,
            name,
        });
    }
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(list)
}

/// `GET /channels/{name}`: `{"occupied":bool,"subscription_count":n?,"user_count":n?}`.
pub(super) fn channel(name: &str, body: &[u8]) -> Result<ChannelInfo, ClientError> {
    let object = json_object(body)?;
    let occupied = match object.get("occupied") {
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(invalid(format!(
                "occupied is {}, not a boolean",
                kind(other)
            )));
        }
        None => return Err(invalid("the answer has no occupied".to_string())),
    };
    Ok(ChannelInfo {
        name: name.to_string(),
        occupied,
        subscription_count: count(&object, "subscription_count", "the channel")?,
        user_count: count(&object, "user_count", "the channel")?,
    })
}

/// `GET /channels/{name}/users`: `{"users":[{"id":"1"},…]}` → the ids, in the server's order.
/// A numeric id is read as its decimal text, as servers normalise presence ids.
pub(super) fn users(body: &[u8]) -> Result<Vec<String>, ClientError> {
    let users = match json_object(body)?.remove("users") {
        Some(Value::Array(users)) => users,
        Some(other) => return Err(invalid(format!("users is {}, not an array", kind(&other)))),
        None => return Err(invalid("the answer has no users".to_string())),
    };
    users
        .into_iter()
        .enumerate()
        .map(|(i, user)| match user.get("id") {
            Some(Value::String(id)) => Ok(id.clone()),
            Some(Value::Number(id)) => Ok(id.to_string()),
            Some(other) => Err(invalid(format!(
                "user {i} has an id that is {}",
                kind(other)
            ))),
            None => Err(invalid(format!("user {i} has no id"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, subs: Option<u64>, users: Option<u64>) -> ChannelInfo {
        ChannelInfo {
            name: name.to_string(),
            occupied: true,
            subscription_count: subs,
            user_count: users,
        }
    }

    #[test]
    fn channel_lists_are_sorted_and_keep_what_was_given() {
        let body = br#"{"channels":{"presence-b":{"user_count":2},"a":{},"c":null,"d":{"subscription_count":3}}}"#;
        assert_eq!(
            channel_list(body),
            Ok(vec![
                info("a", None, None),
                info("c", None, None),
                info("d", Some(3), None),
                info("presence-b", None, Some(2)),
            ])
        );
        assert_eq!(channel_list(br#"{"channels":[]}"#), Ok(vec![]));
    }

    #[test]
    fn channel_answers_need_occupied() {
        let ok = channel(
            "presence-x",
            br#"{"occupied":true,"user_count":1,"subscription_count":2}"#,
        );
        assert_eq!(
            ok,
            Ok(ChannelInfo {
                name: "presence-x".into(),
                occupied: true,
                subscription_count: Some(2),
                user_count: Some(1)
            })
        );
        let empty = channel("x", br#"{"occupied":false}"#);
        assert_eq!(
            empty.map(|c| (c.occupied, c.subscription_count)),
            Ok((false, None))
        );
    }

    #[test]
    fn users_are_ids_as_text() {
        assert_eq!(
            users(br#"{"users":[{"id":"1"},{"id":22},{"id":"x","user_info":{}}]}"#),
            Ok(vec!["1".to_string(), "22".to_string(), "x".to_string()])
        );
    }

    #[test]
    fn nonsense_is_an_invalid_response_never_a_panic() {
        let garbage: [&[u8]; 10] = [
            b"",
            b"not json",
            b"\xff\xfe",
            b"[]",
            b"null",
            b"{\"channels\":5}",
            b"{\"channels\":{\"a\":7}}",
            b"{\"channels\":{\"a\":{\"user_count\":-1}}}",
            b"{\"channels\":{\"a\":{\"subscription_count\":\"2\"}}}",
            b"{\"users\":[{}]}",
        ];
        for body in garbage {
            let shown = String::from_utf8_lossy(body);
            assert!(
                matches!(channel_list(body), Err(ClientError::InvalidResponse(_))),
                "{shown}"
            );
            assert!(
                matches!(channel("a", body), Err(ClientError::InvalidResponse(_))),
                "{shown}"
            );
            assert!(
                matches!(users(body), Err(ClientError::InvalidResponse(_))),
                "{shown}"
            );
        }
        assert!(channel("a", br#"{"occupied":"yes"}"#).is_err());
        assert!(channel("a", br#"{"occupied":true,"user_count":1.5}"#).is_err());
        assert!(users(br#"{"users":{}}"#).is_err());
        assert!(users(br#"{"users":[{"id":null}]}"#).is_err());
        assert!(users(br#"{"users":["1"]}"#).is_err());
        // Deeply nested input is refused by the JSON reader's depth limit, not by the stack.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(users(deep.as_bytes()).is_err());
    }
}
