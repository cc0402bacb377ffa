//! What an auth endpoint answers: the JSON bodies pusher-js reads on success, and a
//! framework-neutral reply (status plus JSON body) for the whole endpoint.

use serde::Serialize;

use super::error::AuthError;

/// A successful channel authorization: the JSON body pusher-js expects from
/// `/pusher/auth` (Laravel Echo: `/broadcasting/auth`).
///
/// `auth` is `"<app key>:<hex HMAC-SHA256>"`. `channel_data` is present for presence
/// channels: the exact string that was signed, which pusher-js sends back verbatim.
/// `shared_secret` is present for `private-encrypted-` channels: pusher-js keeps it to decrypt
/// events and never sends it to the server. Absent fields are left out of the JSON.
///
/// ```
/// use crier::authorizer::AuthResponse;
///
/// let response = AuthResponse { auth: "key:abc".into(), channel_data: None, shared_secret: None };
/// assert_eq!(serde_json::to_string(&response).unwrap(), r#"{"auth":"key:abc"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuthResponse {
    /// `"<app key>:<signature>"`.
    pub auth: String,
    /// Presence channels only: `{"user_id":…,"user_info":…}` as a JSON string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_data: Option<String>,
    /// `private-encrypted-` channels only: base64 of the channel's 32-byte secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_secret: Option<String>,
}

/// A successful user authentication: the JSON body pusher-js's `signin()` expects from
/// `/pusher/user-auth` (Laravel Echo: `/broadcasting/user-auth`).
///
/// ```
/// use crier::authorizer::UserAuthResponse;
///
/// let response = UserAuthResponse { auth: "key:abc".into(), user_data: r#"{"id":"7"}"#.into() };
/// assert_eq!(
///     serde_json::to_string(&response).unwrap(),
///     r#"{"auth":"key:abc","user_data":"{\"id\":\"7\"}"}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserAuthResponse {
    /// `"<app key>:<signature>"`.
    pub auth: String,
    /// `{"id":…,"user_info":…?,"watchlist":…?}` as a JSON string, exactly as signed.
    pub user_data: String,
}

/// A framework-neutral HTTP answer: status and JSON body.
///
/// Success is 200 with an [`AuthResponse`] or [`UserAuthResponse`] body; a refusal is 400 or
/// 403 with `{"error":"…"}`. Send `body` with the content type [`AuthReply::CONTENT_TYPE`].
///
/// ```
/// use crier::authorizer::{AuthReply, Authorizer};
///
/// let auth: Authorizer<()> = Authorizer::new("app-key", "app-secret");
/// let reply: AuthReply = auth.channel_auth_reply(None, b"socket_id=1.2", &());
/// assert_eq!(reply.status, 400);
/// assert_eq!(reply.body, r#"{"error":"channel_name is missing"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthReply {
    /// 200, 400 or 403.
    pub status: u16,
    /// The JSON body.
    pub body: String,
}

impl AuthReply {
    /// The `Content-Type` of every reply body.
    ///
    /// ```
    /// assert_eq!(crier::authorizer::AuthReply::CONTENT_TYPE, "application/json");
    /// ```
    pub const CONTENT_TYPE: &'static str = "application/json";

    /// 200 with `value` as JSON.
    pub(super) fn ok(value: &impl Serialize) -> AuthReply {
        match serde_json::to_string(value) {
            Ok(body) => AuthReply { status: 200, body },
            // Plain structs of strings always serialize; answer rather than panic anyway.
            Err(e) => AuthReply {
                status: 500,
                body: error_body(&format!("could not encode the answer: {e}")),
            },
        }
    }
}

fn error_body(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

impl From<AuthError> for AuthReply {
    fn from(err: AuthError) -> AuthReply {
        AuthReply {
            status: err.status(),
            body: error_body(err.message()),
        }
    }
}
