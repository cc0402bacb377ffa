//! Messages from clients, parsed borrowed from the frame's text: one `ClientMessage` enum,
//! built here and nowhere else, that the session dispatches with a single `match`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// One parsed client message.
#[derive(Debug)]
pub(crate) enum ClientMessage<'a> {
    Ping,
    Pong,
    Subscribe(Subscribe),
    Unsubscribe {
        channel: String,
    },
    Signin {
        auth: String,
        user_data: String,
    },
    ClientEvent {
        event: Cow<'a, str>,
        channel: Cow<'a, str>,
        /// Forwarded exactly as received: a string stays a string, an object an object.
        data: &'a RawValue,
    },
}

/// `pusher:subscribe` data, whether it arrived as an object or as a JSON string.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub(crate) struct Subscribe {
    pub channel: String,
    #[serde(default)]
    pub auth: Option<String>,
    /// Kept as the exact string received: presence signatures cover it byte for byte.
    #[serde(default)]
    pub channel_data: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Unsubscribe {
    channel: String,
}

#[derive(Debug, Deserialize)]
struct Signin {
    auth: String,
    user_data: String,
}

#[derive(Debug, Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// Why a client message was not understood; each becomes a `pusher:error` with its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParseError {
    InvalidJson(String),
    InvalidFormat(String),
    BadData { event: String, reason: String },
    UnknownEvent(String),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::InvalidJson(e) => write!(f, "Invalid JSON: {e}"),
            ParseError::InvalidFormat(e) => write!(f, "Invalid message format: {e}"),
            ParseError::BadData { event, reason } => {
                write!(f, "Invalid data for {event}: {reason}")
            }
            ParseError::UnknownEvent(e) => write!(f, "Unsupported event: {e}"),
        }
    }
}

const NULL: &str = "null";

/// Parses one text message from a client.
pub(crate) fn parse(text: &str) -> Result<ClientMessage<'_>, ParseError> {
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ParseError::InvalidJson(e.to_string())
        } else {
            ParseError::InvalidFormat(e.to_string())
        }
    })?;
    let event = env.event;
    match event.as_ref() {
        "pusher:ping" => Ok(ClientMessage::Ping),
        "pusher:pong" => Ok(ClientMessage::Pong),
        "pusher:subscribe" => data_as::<Subscribe>(&event, env.data).map(ClientMessage::Subscribe),
        "pusher:unsubscribe" => data_as::<Unsubscribe>(&event, env.data)
            .map(|u| ClientMessage::Unsubscribe { channel: u.channel }),
        "pusher:signin" => data_as::<Signin>(&event, env.data).map(|s| ClientMessage::Signin {
            auth: s.auth,
            user_data: s.user_data,
        }),
        name if name.starts_with("client-") => {
            let Some(channel) = env.channel else {
                return Err(ParseError::BadData {
                    event: name.to_string(),
                    reason: "a client event needs a channel".to_string(),
                });
            };
            let data = match env.data {
                Some(d) => d,
                None => null_raw(),
            };
            Ok(ClientMessage::ClientEvent {
                event,
                channel,
                data,
            })
        }
        other => Err(ParseError::UnknownEvent(other.to_string())),
    }
}

fn null_raw() -> &'static RawValue {
    // "null" is valid JSON; from_str on a 'static str borrows it.
    serde_json::from_str::<&RawValue>(NULL).unwrap_or_else(|_| unreachable!("null is valid JSON"))
}

/// Reads `data` as `T`, whether it is an object or a string holding JSON (some clients send
/// the latter).
fn data_as<T: for<'de> Deserialize<'de>>(
    event: &str,
    data: Option<&RawValue>,
) -> Result<T, ParseError> {
    let bad = |reason: String| ParseError::BadData {
        event: event.to_string(),
        reason,
    };
    let raw = data.ok_or_else(|| bad("missing data".to_string()))?;
    let text = raw.get();
    if text.starts_with('"') {
        let inner: String = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        serde_json::from_str(&inner).map_err(|e| bad(e.to_string()))
    } else {
        serde_json::from_str(text).map_err(|e| bad(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pusher_js_subscribe_forms() {
        let m = parse(r#"{"event":"pusher:subscribe","data":{"auth":"","channel":"my-channel"}}"#);
        match m {
            Ok(ClientMessage::Subscribe(s)) => {
                assert_eq!(s.channel, "my-channel");
                assert_eq!(s.auth.as_deref(), Some(""));
                assert_eq!(s.channel_data, None);
            }
            other => panic!("{other:?}"),
        }
        let m = parse(
            r#"{"event":"pusher:subscribe","data":"{\"channel\":\"presence-a\",\"auth\":\"k:s\",\"channel_data\":\"{\\\"user_id\\\":1}\"}"}"#,
        );
        match m {
            Ok(ClientMessage::Subscribe(s)) => {
                assert_eq!(s.channel, "presence-a");
                assert_eq!(s.channel_data.as_deref(), Some(r#"{"user_id":1}"#));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_event_keeps_raw_data() {
        match parse(
            r#"{"event":"client-typing","data":{"user": "bob"},"channel":"private-chat.1"}"#,
        ) {
            Ok(ClientMessage::ClientEvent {
                event,
                channel,
                data,
            }) => {
                assert_eq!(event, "client-typing");
                assert_eq!(channel, "private-chat.1");
                assert_eq!(data.get(), r#"{"user": "bob"}"#);
            }
            other => panic!("{other:?}"),
        }
        match parse(r#"{"event":"client-x","channel":"private-a"}"#) {
            Ok(ClientMessage::ClientEvent { data, .. }) => assert_eq!(data.get(), "null"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_input_is_classified() {
        assert!(matches!(parse("not json"), Err(ParseError::InvalidJson(_))));
        assert!(matches!(
            parse("{\"event\":"),
            Err(ParseError::InvalidJson(_))
        ));
        assert!(matches!(parse("[1,2]"), Err(ParseError::InvalidFormat(_))));
        assert!(matches!(parse("{}"), Err(ParseError::InvalidFormat(_))));
        assert!(matches!(
            parse(r#"{"event":5}"#),
            Err(ParseError::InvalidFormat(_))
        ));
        assert!(matches!(
            parse(r#"{"event":"pusher:subscribe"}"#),
            Err(ParseError::BadData { .. })
        ));
        assert!(matches!(
            parse(r#"{"event":"pusher:subscribe","data":{"auth":""}}"#),
            Err(ParseError::BadData { .. })
        ));
        assert!(matches!(
            parse(r#"{"event":"client-x","data":{}}"#),
            Err(ParseError::BadData { .. })
        ));
        assert!(matches!(
            parse(r#"{"event":"hello"}"#),
            Err(ParseError::UnknownEvent(_))
        ));
    }

    #[test]
    fn ping_and_pong() {
        assert!(matches!(
            parse(r#"{"event":"pusher:ping","data":{}}"#),
            Ok(ClientMessage::Ping)
        ));
        assert!(matches!(
            parse(r#"{"event":"pusher:pong"}"#),
            Ok(ClientMessage::Pong)
        ));
    }
}
