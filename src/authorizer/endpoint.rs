//! The whole endpoint, minus the framework: read the request body as pusher-js or a custom
//! authorizer sends it, call the authorizer, and turn the outcome into a status and a JSON
//! body. pusher-js posts `socket_id=…&channel_name=…` form-encoded (plus any configured
//! params, ignored here); apps with a custom axios authorizer post the same fields as JSON.

use serde_json::Value;

use super::{AuthError, AuthReply, Authorizer};
use crate::protocol::query;

/// The largest request body read, in bytes (64 KiB); larger ones get 400. Real requests are
/// a few hundred bytes. Frameworks can cap their body read at this size.
///
/// ```
/// use crier::authorizer::{Authorizer, MAX_BODY_BYTES};
///
/// let auth: Authorizer<()> = Authorizer::new("app-key", "app-secret");
/// let huge = vec![b'a'; MAX_BODY_BYTES + 1];
/// assert_eq!(auth.channel_auth_reply(None, &huge, &()).status, 400);
/// ```
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The fields of an auth request.
#[derive(Debug, PartialEq)]
struct Fields {
    socket_id: Option<String>,
    channel_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Form,
    Json,
}

/// The content type decides when it is form or JSON; otherwise (absent, `text/plain` from a
/// bare `fetch`, anything else) a body starting with `{` is JSON and any other is a form.
fn format_of(content_type: Option<&str>, body: &[u8]) -> Format {
    if let Some(ct) = content_type {
        let media = ct.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Format::Form;
        }
        let json_suffix = media
            .len()
            .checked_sub(5)
            .and_then(|at| media.get(at..))
            .is_some_and(|tail| tail.eq_ignore_ascii_case("+json"));
        if media.eq_ignore_ascii_case("application/json") || json_suffix {
            return Format::Json;
        }
    }
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Format::Json,
        _ => Format::Form,
    }
}

fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Fields, AuthError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(AuthError::BadRequest(format!(
            "the request body is {} bytes; at most {MAX_BODY_BYTES} are read",
            body.len()
        )));
    }
    match format_of(content_type, body) {
        Format::Form => parse_form(body),
        Format::Json => parse_json(body),
    }
}

/// `a=1&b=2`, percent-decoded with `+` as a space. A field given twice is refused rather
/// than guessed at.
fn parse_form(body: &[u8]) -> Result<Fields, AuthError> {
    let text = std::str::from_utf8(body).map_err(|_| {
        AuthError::BadRequest("the form-encoded body is not valid UTF-8".to_string())
    })?;
    let pairs = query::parse(text.trim());
    let field = |name: &str| -> Result<Option<String>, AuthError> {
        let mut values = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        let first = values.next().map(|v| v.to_string());
        if values.next().is_some() {
            return Err(AuthError::BadRequest(format!(
                "{name} is given more than once"
            )));
        }
        Ok(first)
    };
    Ok(Fields {
        socket_id: field("socket_id")?,
        channel_name: field("channel_name")?,
    })
}

/// `{"socket_id": "…", "channel_name": "…"}`; other members are ignored.
fn parse_json(body: &[u8]) -> Result<Fields, AuthError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| AuthError::BadRequest(format!("the JSON body is not valid: {e}")))?;
    let Value::Object(object) = value else {
        return Err(AuthError::BadRequest(
            "the JSON body must be an object".to_string(),
        ));
    };
    let field = |name: &str| -> Result<Option<String>, AuthError> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(AuthError::BadRequest(format!("{name} must be a string"))),
        }
    };
    Ok(Fields {
        socket_id: field("socket_id")?,
        channel_name: field("channel_name")?,
    })
}

fn required(value: Option<String>, name: &str) -> Result<String, AuthError> {
    value.ok_or_else(|| AuthError::BadRequest(format!("{name} is missing")))
}

impl<U: ?Sized> Authorizer<U> {
    /// The whole channel-authorization endpoint (`POST /pusher/auth`,
    /// `/broadcasting/auth`): reads `socket_id` and `channel_name` from a form-encoded or
    /// JSON body (told apart by `content_type`, else by the first byte), then answers like
    /// [`authorize_channel`](Authorizer::authorize_channel): 200 with the [`AuthResponse`]
    /// JSON, or 400/403 with `{"error":"…"}`.
    ///
    /// [`AuthResponse`]: super::AuthResponse
    ///
    /// ```
    /// use crier::authorizer::Authorizer;
    ///
    /// let auth = Authorizer::new("278d425bdf160c739803", "7ad3773142a6692b25b8")
    ///     .authorize(|channel, user: &str| channel == format!("private-user.{user}"));
    ///
    /// // Exactly what pusher-js posts:
    /// let form = b"socket_id=1234.1234&channel_name=private-user.ada";
    /// let reply = auth.channel_auth_reply(Some("application/x-www-form-urlencoded"), form, "ada");
    /// assert_eq!(reply.status, 200);
    /// assert!(reply.body.starts_with(r#"{"auth":"278d425bdf160c739803:"#));
    ///
    /// // What a custom axios authorizer posts:
    /// let json = br#"{"socket_id":"1234.1234","channel_name":"private-user.bob"}"#;
    /// let reply = auth.channel_auth_reply(Some("application/json"), json, "ada");
    /// assert_eq!(reply.status, 403);
    /// assert_eq!(reply.body, r#"{"error":"not allowed to subscribe to private-user.bob"}"#);
    /// ```
    pub fn channel_auth_reply(
        &self,
        content_type: Option<&str>,
        body: &[u8],
        user: &U,
    ) -> AuthReply {
        let answer = parse_body(content_type, body).and_then(|fields| {
            let socket_id = required(fields.socket_id, "socket_id")?;
            let channel = required(fields.channel_name, "channel_name")?;
            self.authorize_channel(&socket_id, &channel, user)
        });
        match answer {
            Ok(response) => AuthReply::ok(&response),
            Err(err) => err.into(),
        }
    }

    /// The whole user-authentication endpoint (`POST /pusher/user-auth`,
    /// `/broadcasting/user-auth`): reads `socket_id` from a form-encoded or JSON body, then
    /// answers like [`authenticate_user`](Authorizer::authenticate_user): 200 with the
    /// [`UserAuthResponse`] JSON, or 400/403 with `{"error":"…"}`.
    ///
    /// [`UserAuthResponse`]: super::UserAuthResponse
    ///
    /// ```
    /// use crier::authorizer::{Authorizer, UserData};
    ///
    /// let auth = Authorizer::new("app-key", "app-secret").user_data(|user: &str| UserData {
    ///     id: user.to_string(),
    ///     user_info: None,
    ///     watchlist: Vec::new(),
    /// });
    /// let reply = auth.user_auth_reply(Some("application/x-www-form-urlencoded"), b"socket_id=1.2", "ada");
    /// assert_eq!(reply.status, 200);
    /// let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    /// assert_eq!(body["user_data"], r#"{"id":"ada"}"#);
    /// assert_eq!(auth.user_auth_reply(None, b"", "ada").status, 400);
    /// ```
    pub fn user_auth_reply(&self, content_type: Option<&str>, body: &[u8], user: &U) -> AuthReply {
        let answer = parse_body(content_type, body).and_then(|fields| {
            let socket_id = required(fields.socket_id, "socket_id")?;
            self.authenticate_user(&socket_id, user)
        });
        match answer {
            Ok(response) => AuthReply::ok(&response),
            Err(err) => err.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");
    const JSON: Option<&str> = Some("application/json");

    fn fields(socket_id: &str, channel_name: &str) -> Fields {
        Fields {
            socket_id: Some(socket_id.to_string()),
            channel_name: Some(channel_name.to_string()),
        }
    }

    #[test]
    fn format_from_content_type_or_first_byte() {
        assert_eq!(format_of(FORM, b"{"), Format::Form);
        assert_eq!(
            format_of(
                Some("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
                b"{"
            ),
            Format::Form
        );
        assert_eq!(format_of(JSON, b"a=b"), Format::Json);
        assert_eq!(
            format_of(Some("application/json;charset=utf-8"), b""),
            Format::Json
        );
        assert_eq!(
            format_of(Some("application/vnd.api+json"), b""),
            Format::Json
        );
        assert_eq!(
            format_of(Some("text/plain;charset=UTF-8"), b" \n{\"a\":1}"),
            Format::Json
        );
        assert_eq!(format_of(None, b"socket_id=1.2"), Format::Form);
        assert_eq!(format_of(None, b"{}"), Format::Json);
        assert_eq!(format_of(Some("json"), b""), Format::Form);
    }

    #[test]
    fn form_as_pusher_js_encodes_it() {
        // encodeURIComponent leaves - _ . alone and escapes @ = , ; and spaces.
        let body = b"socket_id=123.456&channel_name=private-foo-bar_1234%40%3D%2C.%3B&extra=x+y";
        assert_eq!(
            parse_body(FORM, body),
            Ok(fields("123.456", "private-foo-bar_1234@=,.;"))
        );
        assert_eq!(
            parse_body(FORM, b"channel_name=a+b%20c&socket_id=1.2\r\n"),
            Ok(fields("1.2", "a b c"))
        );
        assert_eq!(
            parse_body(FORM, b"socket_id=1.2"),
            Ok(Fields {
                socket_id: Some("1.2".to_string()),
                channel_name: None
            })
        );
    }

    #[test]
    fn json_as_custom_authorizers_send_it() {
        let body = br#"{"socket_id":"1.2","channel_name":"presence-chat.1","extra":[1]}"#;
        assert_eq!(parse_body(JSON, body), Ok(fields("1.2", "presence-chat.1")));
        assert_eq!(parse_body(None, body), Ok(fields("1.2", "presence-chat.1")));
    }

    #[test]
    fn malformed_bodies() {
        let bad = |ct: Option<&str>, body: &[u8]| {
            matches!(parse_body(ct, body), Err(AuthError::BadRequest(_)))
        };
        assert!(bad(FORM, b"socket_id=1.2&socket_id=3.4"));
        assert!(bad(FORM, b"socket_id=1.2&channel_name=a&channel_name=b"));
        assert!(bad(FORM, b"socket_id=\xff"));
        assert!(bad(JSON, b"socket_id=1.2"));
        assert!(bad(JSON, b"{\"socket_id\":"));
        assert!(bad(JSON, b"[\"1.2\"]"));
        assert!(bad(JSON, br#"{"socket_id":1.2}"#));
        assert!(bad(JSON, br#"{"socket_id":"1.2","channel_name":["a"]}"#));
        assert!(bad(None, &vec![b'a'; MAX_BODY_BYTES + 1]));
        assert!(!bad(None, &vec![b'a'; MAX_BODY_BYTES]));
    }

    #[test]
    fn replies_carry_status_and_json() {
        let auth: Authorizer<str> = Authorizer::new("k", "s").authorize(|_, _| true);
        let reply = auth.channel_auth_reply(FORM, b"socket_id=1.2&channel_name=private-a", "u");
        assert_eq!(
            reply,
            AuthReply {
                status: 200,
                body: format!(
                    r#"{{"auth":"k:{}"}}"#,
                    crate::protocol::auth::sign("s", "1.2:private-a")
                ),
            }
        );
        for (body, message) in [
            (&b""[..], "socket_id is missing"),
            (b"channel_name=private-a", "socket_id is missing"),
            (b"socket_id=1.2", "channel_name is missing"),
            (
                b"socket_id=1.2&channel_name=room",
                "public channels need no authorization",
            ),
        ] {
            let reply = auth.channel_auth_reply(FORM, body, "u");
            let expected = serde_json::json!({ "error": message }).to_string();
            assert_eq!((reply.status, reply.body), (400, expected));
        }
        let reply = auth.user_auth_reply(None, b"socket_id=1.2", "u");
        assert_eq!(reply.status, 403, "no user_data callback: {}", reply.body);
    }
}
