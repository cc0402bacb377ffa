//! Helpers for the two endpoints an application (not Crier) serves to its own users: channel
//! authorization (`/pusher/auth`, Laravel Echo's `/broadcasting/auth`) and user
//! authentication (`/pusher/user-auth`, pusher-js `signin()`). pusher-js posts the socket id
//! there; the app decides who the user is and whether they may join, and answers with a token
//! signed by the app secret, which Crier checks when the client subscribes or signs in.
//!
//! An [`Authorizer`] holds the app key and secret and the app's decisions as callbacks, in
//! the shape application developers know from other broadcasting libraries: an authorizer
//! `(channel, user) -> bool`, a presence-data callback `(channel, user) -> member`, and a
//! user-data callback for sign-in. The user type `U` is whatever the app's framework
//! resolved from the session or bearer token; this module never sees a request's headers.
//!
//! ```
//! use crier::authorizer::{Authorizer, PresenceMember};
//! use serde_json::json;
//!
//! struct User { id: u64, name: String }
//!
//! let auth = Authorizer::new("app-key", "app-secret")
//!     .authorize(|channel, user: &User| match channel.strip_prefix("private-user.") {
//!         Some(id) => id == user.id.to_string(),
//!         None => channel.starts_with("presence-chat."),
//!     })
//!     .presence_data(|_channel, user: &User| PresenceMember {
//!         user_id: user.id.to_string(),
//!         user_info: Some(json!({"name": user.name})),
//!     });
//!
//! // In any framework's POST /broadcasting/auth handler, once the user is known:
//! let ada = User { id: 7, name: "Ada".into() };
//! let reply = auth.channel_auth_reply(
//!     Some("application/x-www-form-urlencoded"),
//!     b"socket_id=1234.5678&channel_name=private-user.7",
//!     &ada,
//! );
//! assert_eq!(reply.status, 200);
//! let denied = auth.channel_auth_reply(None, b"socket_id=1234.5678&channel_name=private-user.8", &ada);
//! assert_eq!(denied.status, 403);
//! ```
//!
//! Decisions, each for a client-visible reason:
//! - Every private and presence channel is denied until [`Authorizer::authorize`] says
//!   otherwise, and presence channels, encrypted channels and sign-in are refused (403, with a
//!   message naming what is missing) until their callback or key is given: a forgotten
//!   setting fails closed and loudly rather than signing something half-made.
//! - 400 when the request is malformed, 403 when it is well formed but refused
//!   ([`AuthError`]). Bodies come as pusher-js sends them (form-encoded) or as JSON (custom
//!   axios authorizers); the content type decides, and without a known one the first byte
//!   does (`{` means JSON).
//! - The `channel_data` and `user_data` made here obey the rules Crier's session applies when
//!   the client hands them back (user id length, `user_info` an object within
//!   `MAX_PRESENCE_USER_INFO_BYTES`
//!   unless [`Authorizer::max_user_info_bytes`] raises it), so a 200 here means the subscribe
//!   or sign-in will not be refused for its content.
//! - Signing is `crate::protocol::auth::sign`, the same code Crier verifies with.

mod base64;
mod endpoint;
mod error;
mod identity;
mod response;

use std::fmt;

use sha2::{Digest, Sha256};

use crate::protocol::auth::sign;
use crate::protocol::channel::{ChannelKind, classify};
use crate::protocol::clip::clip;
use crate::protocol::limits::MAX_PRESENCE_USER_INFO_BYTES;
use crate::protocol::socket_id::SocketId;

pub use endpoint::MAX_BODY_BYTES;
pub use error::AuthError;
pub use identity::{PresenceMember, UserData};
pub use response::{AuthReply, AuthResponse, UserAuthResponse};

type AuthorizeFn<U> = Box<dyn Fn(&str, &U) -> bool + Send + Sync>;
type PresenceFn<U> = Box<dyn Fn(&str, &U) -> PresenceMember + Send + Sync>;
type UserDataFn<U> = Box<dyn Fn(&U) -> UserData + Send + Sync>;

/// Answers an app's channel-authorization and user-authentication requests for users of type
/// `U`. Built once at startup and shared (it is `Send + Sync`; wrap it in an `Arc`).
///
/// ```
/// use std::sync::Arc;
/// use crier::authorizer::Authorizer;
///
/// struct User { id: u64 }
///
/// let auth: Arc<Authorizer<User>> = Arc::new(
///     Authorizer::new("app-key", "app-secret").authorize(|channel, user: &User| {
///         channel == format!("private-user.{}", user.id)
///     }),
/// );
/// let response = auth.authorize_channel("1234.5678", "private-user.1", &User { id: 1 }).unwrap();
/// assert!(response.auth.starts_with("app-key:"));
/// ```
pub struct Authorizer<U: ?Sized> {
    /// The app key, the part of every token before the `:`.
    key: String,
    /// The app secret; signs every token and never leaves this struct.
    secret: String,
    /// May `user` join this private or presence channel? `None` denies all.
    authorize: Option<AuthorizeFn<U>>,
    /// The member a presence subscription joins as. `None` refuses presence channels.
    presence_data: Option<PresenceFn<U>>,
    /// Who a sign-in makes the connection. `None` refuses user authentication.
    user_data: Option<UserDataFn<U>>,
    /// Decoded encryption master key. `None` refuses `private-encrypted-` channels.
    master_key: Option<[u8; 32]>,
    /// Largest `user_info`, as JSON, in presence members and signed-in users.
    max_user_info_bytes: usize,
}

impl<U: ?Sized> fmt::Debug for Authorizer<U> {
    // The secret and the master key stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorizer")
            .field("key", &self.key)
            .field("authorize", &self.authorize.is_some())
            .field("presence_data", &self.presence_data.is_some())
            .field("user_data", &self.user_data.is_some())
            .field("encryption", &self.master_key.is_some())
            .field("max_user_info_bytes", &self.max_user_info_bytes)
            .finish_non_exhaustive()
    }
}

impl<U: ?Sized> Authorizer<U> {
    /// An authorizer for the app with this key and secret. Until [`authorize`] is given,
    /// every private and presence channel is denied.
    ///
    /// [`authorize`]: Authorizer::authorize
    ///
    /// ```
    /// use crier::authorizer::{AuthError, Authorizer};
    ///
    /// let auth: Authorizer<str> = Authorizer::new("app-key", "app-secret");
    /// let refused = auth.authorize_channel("1.2", "private-anything", "ada");
    /// assert!(matches!(refused, Err(AuthError::Forbidden(_))));
    /// ```
    pub fn new(key: impl Into<String>, secret: impl Into<String>) -> Self {
        Authorizer {
            key: key.into(),
            secret: secret.into(),
            authorize: None,
            presence_data: None,
            user_data: None,
            master_key: None,
            max_user_info_bytes: MAX_PRESENCE_USER_INFO_BYTES,
        }
    }

    /// The authorizer callback: given the channel name with its prefix (for example
    /// `"private-user.123"` or `"presence-chat.1"`) and the user, may they subscribe?
    ///
    /// ```
    /// use crier::authorizer::Authorizer;
    ///
    /// struct User { id: u64, rooms: Vec<u64> }
    ///
    /// let auth = Authorizer::new("app-key", "app-secret").authorize(|channel, user: &User| {
    ///     if let Some(id) = channel.strip_prefix("private-user.") {
    ///         return id == user.id.to_string();
    ///     }
    ///     if let Some(room) = channel.strip_prefix("presence-chat.") {
    ///         return user.rooms.iter().any(|r| r.to_string() == room);
    ///     }
    ///     false
    /// });
    /// let ada = User { id: 1, rooms: vec![] };
    /// assert!(auth.authorize_channel("1.2", "private-user.1", &ada).is_ok());
    /// assert!(auth.authorize_channel("1.2", "private-user.2", &ada).is_err());
    /// ```
    pub fn authorize(mut self, f: impl Fn(&str, &U) -> bool + Send + Sync + 'static) -> Self {
        self.authorize = Some(Box::new(f));
        self
    }

    /// The presence-data callback: the member a user joins a presence channel as. Without it
    /// presence channels are refused (403).
    ///
    /// ```
    /// use crier::authorizer::{Authorizer, PresenceMember};
    /// use serde_json::json;
    ///
    /// struct User { id: u64, name: String }
    ///
    /// let auth = Authorizer::new("app-key", "app-secret")
    ///     .authorize(|channel, _user: &User| channel.starts_with("presence-"))
    ///     .presence_data(|_channel, user: &User| PresenceMember {
    ///         user_id: user.id.to_string(),
    ///         user_info: Some(json!({"name": user.name})),
    ///     });
    /// let response = auth
    ///     .authorize_channel("1.2", "presence-chat.1", &User { id: 7, name: "Ada".into() })
    ///     .unwrap();
    /// assert_eq!(
    ///     response.channel_data.as_deref(),
    ///     Some(r#"{"user_id":"7","user_info":{"name":"Ada"}}"#)
    /// );
    /// ```
    pub fn presence_data(
        mut self,
        f: impl Fn(&str, &U) -> PresenceMember + Send + Sync + 'static,
    ) -> Self {
        self.presence_data = Some(Box::new(f));
        self
    }

    /// The user-data callback for `signin()`: who the connection becomes. Without it user
    /// authentication is refused (403).
    ///
    /// ```
    /// use crier::authorizer::{Authorizer, UserData};
    ///
    /// struct User { id: u64 }
    ///
    /// let auth = Authorizer::new("app-key", "app-secret").user_data(|user: &User| UserData {
    ///     id: user.id.to_string(),
    ///     user_info: None,
    ///     watchlist: Vec::new(),
    /// });
    /// let response = auth.authenticate_user("1.2", &User { id: 7 }).unwrap();
    /// assert_eq!(response.user_data, r#"{"id":"7"}"#);
    /// ```
    pub fn user_data(mut self, f: impl Fn(&U) -> UserData + Send + Sync + 'static) -> Self {
        self.user_data = Some(Box::new(f));
        self
    }

    /// The encryption master key, base64 of 32 bytes, that `private-encrypted-` channels'
    /// shared secrets derive from (the Pusher SDKs' `encryptionMasterKeyBase64`). Anything
    /// else is `Err(AuthError::BadRequest)`. Crier itself never needs this key.
    ///
    /// ```
    /// use crier::authorizer::Authorizer;
    ///
    /// let auth: Authorizer<()> = Authorizer::new("app-key", "app-secret")
    ///     .encryption_master_key_base64("zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=")
    ///     .unwrap();
    /// # let _ = auth;
    /// assert!(Authorizer::<()>::new("k", "s").encryption_master_key_base64("c2hvcnQ=").is_err());
    /// ```
    pub fn encryption_master_key_base64(mut self, key: &str) -> Result<Self, AuthError> {
        let bytes = base64::decode(key.trim()).ok_or_else(|| {
            AuthError::BadRequest("the encryption master key is not valid base64".to_string())
        })?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            AuthError::BadRequest(format!(
                "the encryption master key must decode to 32 bytes, not {}",
                bytes.len()
            ))
        })?;
        self.master_key = Some(key);
        Ok(self)
    }

    /// The largest `user_info`, in bytes of JSON, that presence members and signed-in users
    /// may carry. The default is Crier's default for an app's `max_presence_user_info_bytes`
    /// (1024, Pusher's limit); set the same value the app has in Crier's configuration.
    ///
    /// ```
    /// use crier::authorizer::Authorizer;
    ///
    /// let auth: Authorizer<()> = Authorizer::new("app-key", "app-secret").max_user_info_bytes(2048);
    /// # let _ = auth;
    /// ```
    pub fn max_user_info_bytes(mut self, bytes: usize) -> Self {
        self.max_user_info_bytes = bytes;
        self
    }

    /// Authorizes `user` on `channel` for the connection `socket_id`: the answer pusher-js
    /// expects, or why not.
    ///
    /// The socket id must look like `1234.5678` and the channel must be a valid `private-`,
    /// `private-encrypted-` or `presence-` name (400 otherwise; public channels need no
    /// authorization). Then the authorizer callback decides (403 if it says no), and presence
    /// channels get `channel_data` from the presence-data callback, encrypted channels a
    /// `shared_secret`.
    ///
    /// ```
    /// use crier::authorizer::Authorizer;
    ///
    /// // Pusher's documented example: key 278d…, secret 7ad3…, socket 1234.1234.
    /// let auth = Authorizer::new("278d425bdf160c739803", "7ad3773142a6692b25b8")
    ///     .authorize(|_channel, _user: &()| true);
    /// let response = auth.authorize_channel("1234.1234", "private-foobar", &()).unwrap();
    /// assert_eq!(
    ///     response.auth,
    ///     "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    /// );
    /// assert_eq!(response.channel_data, None);
    /// ```
    pub fn authorize_channel(
        &self,
        socket_id: &str,
        channel: &str,
        user: &U,
    ) -> Result<AuthResponse, AuthError> {
        check_socket_id(socket_id)?;
        let spec = classify(channel).map_err(|e| {
            AuthError::BadRequest(format!(
                "invalid channel_name {:?}: {e}",
                clip(channel, 100)
            ))
        })?;
        match spec.kind {
            ChannelKind::Public => {
                return Err(AuthError::BadRequest(
                    "public channels need no authorization".to_string(),
                ));
            }
            ChannelKind::User => {
                return Err(AuthError::BadRequest(
                    "#server-to-user- channels are joined by signing in (user authentication), \
                     not by channel authorization"
                        .to_string(),
                ));
            }
            ChannelKind::Private | ChannelKind::Encrypted | ChannelKind::Presence => {}
        }
        // What the app has not set up is refused before asking about the user, so a missing
        // setting shows up on the first try rather than only for allowed users.
        let presence_data = match (spec.kind, &self.presence_data) {
            (ChannelKind::Presence, None) => {
                return Err(AuthError::Forbidden(
                    "presence channels are not set up here: the authorizer has no presence_data \
                     callback"
                        .to_string(),
                ));
            }
            (ChannelKind::Presence, Some(f)) => Some(f),
            _ => None,
        };
        let master_key = match (spec.kind, &self.master_key) {
            (ChannelKind::Encrypted, None) => {
                return Err(AuthError::Forbidden(
                    "private-encrypted- channels are not set up here: the authorizer has no \
                     encryption master key"
                        .to_string(),
                ));
            }
            (ChannelKind::Encrypted, Some(key)) => Some(key),
            _ => None,
        };
        let allowed = self.authorize.as_ref().is_some_and(|f| f(channel, user));
        if !allowed {
            return Err(AuthError::Forbidden(format!(
                "not allowed to subscribe to {channel}"
            )));
        }
        let channel_data = match presence_data {
            Some(f) => Some(f(channel, user).channel_data(self.max_user_info_bytes)?),
            None => None,
        };
        Ok(AuthResponse {
            auth: self.channel_token(socket_id, channel, channel_data.as_deref()),
            channel_data,
            shared_secret: master_key.map(|key| shared_secret(channel, key)),
        })
    }

    /// Authenticates `user` for `signin()` on the connection `socket_id`: the signed
    /// `user_data` from the user-data callback (403 without one).
    ///
    /// ```
    /// use crier::authorizer::{Authorizer, UserData};
    ///
    /// // Pusher's documented example: user 12345 on socket 1234.1234.
    /// let auth = Authorizer::new("278d425bdf160c739803", "7ad3773142a6692b25b8")
    ///     .user_data(|id: &str| UserData { id: id.to_string(), user_info: None, watchlist: vec![] });
    /// let response = auth.authenticate_user("1234.1234", "12345").unwrap();
    /// assert_eq!(response.user_data, r#"{"id":"12345"}"#);
    /// assert_eq!(
    ///     response.auth,
    ///     "278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
    /// );
    /// ```
    pub fn authenticate_user(
        &self,
        socket_id: &str,
        user: &U,
    ) -> Result<UserAuthResponse, AuthError> {
        check_socket_id(socket_id)?;
        let Some(f) = &self.user_data else {
            return Err(AuthError::Forbidden(
                "user authentication is not set up here: the authorizer has no user_data callback"
                    .to_string(),
            ));
        };
        let user_data = f(user).user_data(self.max_user_info_bytes)?;
        Ok(UserAuthResponse {
            auth: self.user_token(socket_id, &user_data),
            user_data,
        })
    }

    /// `key:sign(socket_id:channel[:channel_data])`.
    fn channel_token(&self, socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
        let to_sign = match channel_data {
            Some(data) => format!("{socket_id}:{channel}:{data}"),
            None => format!("{socket_id}:{channel}"),
        };
        format!("{}:{}", self.key, sign(&self.secret, &to_sign))
    }

    /// `key:sign(socket_id::user::user_data)`.
    fn user_token(&self, socket_id: &str, user_data: &str) -> String {
        let to_sign = format!("{socket_id}::user::{user_data}");
        format!("{}:{}", self.key, sign(&self.secret, &to_sign))
    }
}

/// The socket id pusher-js sent must be one Crier could have issued (`^\d+\.\d+$`), as every
/// Pusher server SDK insists.
fn check_socket_id(socket_id: &str) -> Result<(), AuthError> {
    match SocketId::parse(socket_id) {
        Some(_) => Ok(()),
        None => Err(AuthError::BadRequest(format!(
            "invalid socket_id {:?}: expected two decimal numbers joined by a dot, like 1234.5678",
            clip(socket_id, 100)
        ))),
    }
}

/// base64(SHA-256(channel name ‖ master key)), as pusher-http-node's `channelSharedSecret`.
fn shared_secret(channel: &str, master_key: &[u8; 32]) -> String {
    let mut hash = Sha256::new();
    hash.update(channel.as_bytes());
    hash.update(master_key);
    base64::encode(hash.finalize().as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Pusher's documented credentials (auth-signatures docs; shared/pusher-protocol.md §5.5).
    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    fn allow_all() -> Authorizer<str> {
        Authorizer::new(KEY, SECRET).authorize(|_, _| true)
    }

    #[test]
    fn private_channel_vector() {
        let response = allow_all().authorize_channel("1234.1234", "private-foobar", "any");
        assert_eq!(
            response,
            Ok(AuthResponse {
                auth: format!(
                    "{KEY}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
                ),
                channel_data: None,
                shared_secret: None,
            })
        );
    }

    #[test]
    fn presence_channel_vector() {
        // The docs' channel_data has a numeric user_id, which this module never produces
        // (it always sends a string), so the signing step is checked on its own...
        let docs_data = r#"{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#;
        assert_eq!(
            allow_all().channel_token("1234.1234", "presence-foobar", Some(docs_data)),
            format!("{KEY}:afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c")
        );
        // ...and the whole path against the same signature recomputed for the string id.
        let auth = allow_all().presence_data(|_, id| PresenceMember {
            user_id: id.to_string(),
            user_info: Some(json!({"name": "Mr. Pusher"})),
        });
        let response = auth.authorize_channel("1234.1234", "presence-foobar", "10");
        let data = r#"{"user_id":"10","user_info":{"name":"Mr. Pusher"}}"#;
        assert_eq!(
            response,
            Ok(AuthResponse {
                auth: format!(
                    "{KEY}:{}",
                    sign(SECRET, &format!("1234.1234:presence-foobar:{data}"))
                ),
                channel_data: Some(data.to_string()),
                shared_secret: None,
            })
        );
    }

    #[test]
    fn user_auth_vectors() {
        let auth = Authorizer::new(KEY, SECRET).user_data(|id: &str| UserData {
            id: id.to_string(),
            user_info: None,
            watchlist: Vec::new(),
        });
        assert_eq!(
            auth.authenticate_user("1234.1234", "12345"),
            Ok(UserAuthResponse {
                auth: format!(
                    "{KEY}:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
                ),
                user_data: r#"{"id":"12345"}"#.to_string(),
            })
        );
        // pusher-http-node's test suite: key "aaaa", secret "tofu", socket 123.456.
        let node = Authorizer::new("aaaa", "tofu").user_data(|id: &str| UserData {
            id: id.to_string(),
            user_info: None,
            watchlist: Vec::new(),
        });
        assert_eq!(
            node.authenticate_user("123.456", "45678").map(|r| r.auth),
            Ok("aaaa:f4b1fdeea7c93e32648c7230e32b172057c5623cace6cfce791c6e7035e0babd".to_string())
        );
    }

    #[test]
    fn node_sdk_private_channel_vectors() {
        // pusher-http-node: channel "test" is public to Crier, so sign directly.
        let node = Authorizer::<str>::new("aaaa", "tofu");
        assert_eq!(
            node.channel_token("123.456", "test", None),
            "aaaa:efa6cf7644a0b35cba36aa0f776f3cbf7bb60e95ea2696bde1dbe8403b61bd7c"
        );
        assert_eq!(
            node.channel_token("123.456", "test", Some(r#"{"foo":"bar"}"#)),
            "aaaa:f41faf9ead2ea76772cc6b1168363057459f02499ae4d92e88229dc7f4efa2d4"
        );
    }

    #[test]
    fn encrypted_channel_shared_secret_vector() {
        // pusher-http-node's test suite: this master key and channel give this secret.
        let auth = Authorizer::new("f00d", "tofu")
            .authorize(|_, _: &str| true)
            .encryption_master_key_base64("zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=")
            .unwrap_or_else(|e| panic!("{e}"));
        let response = auth.authorize_channel("123.456", "private-encrypted-bla", "any");
        assert_eq!(
            response,
            Ok(AuthResponse {
                auth: format!("f00d:{}", sign("tofu", "123.456:private-encrypted-bla")),
                channel_data: None,
                shared_secret: Some("nlr49ISQHz91yS3cy/yWmW8wFMNeTnNL5tNHnbPJcLQ=".to_string()),
            })
        );
        // Only encrypted channels carry it.
        let plain = auth.authorize_channel("123.456", "private-bla", "any");
        assert_eq!(plain.map(|r| r.shared_secret), Ok(None));
    }

    #[test]
    fn master_key_must_be_base64_of_32_bytes() {
        let try_key = |k: &str| Authorizer::<()>::new(KEY, SECRET).encryption_master_key_base64(k);
        for bad in ["", "not base64!", "c2hvcnQ=", &base64::encode(&[0; 33])] {
            assert!(
                matches!(try_key(bad), Err(AuthError::BadRequest(_))),
                "{bad:?}"
            );
        }
        assert!(try_key(&base64::encode(&[7; 32])).is_ok());
        // URL-safe and unpadded forms of the same 32 bytes.
        assert!(try_key("zyrm8pvV2C9fJcBfhyXzvxbJVN_H7QLmbe0xJi1GhPU").is_ok());
    }

    #[test]
    fn malformed_requests_are_400() {
        let auth = allow_all();
        for (socket_id, channel) in [
            ("", "private-a"),
            ("1234", "private-a"),
            ("1.2.3", "private-a"),
            ("1.2:", "private-a"),
            (" 1.2", "private-a"),
            ("1.2", ""),
            ("1.2", "private-a b"),
            ("1.2", &"private-".repeat(30)),
            ("1.2", "#other"),
            ("1.2", "#server-to-user-7"),
            ("1.2", "public-room"),
            ("1.2", "cache-room"),
        ] {
            let result = auth.authorize_channel(socket_id, channel, "u");
            assert!(
                matches!(result, Err(AuthError::BadRequest(_))),
                "{socket_id:?} {channel:?}: {result:?}"
            );
        }
        assert_eq!(
            auth.authorize_channel("1.2", "my-channel", "u"),
            Err(AuthError::BadRequest(
                "public channels need no authorization".to_string()
            ))
        );
    }

    #[test]
    fn refusals_are_403() {
        let none: Authorizer<str> = Authorizer::new(KEY, SECRET);
        let deny = |channel: &str| {
            matches!(
                none.authorize_channel("1.2", channel, "u"),
                Err(AuthError::Forbidden(_))
            )
        };
        // Denied by default, whatever the kind.
        for channel in [
            "private-a",
            "private-cache-a",
            "private-encrypted-a",
            "presence-a",
        ] {
            assert!(deny(channel), "{channel}");
        }
        // The callback sees the full name and the user.
        let picky: Authorizer<str> = Authorizer::new(KEY, SECRET)
            .authorize(|channel, user| channel == format!("private-user.{user}"));
        assert!(
            picky
                .authorize_channel("1.2", "private-user.ada", "ada")
                .is_ok()
        );
        assert_eq!(
            picky.authorize_channel("1.2", "private-user.bob", "ada"),
            Err(AuthError::Forbidden(
                "not allowed to subscribe to private-user.bob".to_string()
            ))
        );
        // Allowed, but the presence member is not one the protocol accepts.
        let bad_member = allow_all().presence_data(|_, _| PresenceMember {
            user_id: String::new(),
            user_info: None,
        });
        assert!(matches!(
            bad_member.authorize_channel("1.2", "presence-a", "u"),
            Err(AuthError::Forbidden(_))
        ));
    }

    #[test]
    fn missing_setup_is_named() {
        let auth = allow_all();
        let presence = auth.authorize_channel("1.2", "presence-a", "u");
        assert!(
            matches!(&presence, Err(AuthError::Forbidden(m)) if m.contains("presence_data")),
            "{presence:?}"
        );
        let encrypted = auth.authorize_channel("1.2", "private-encrypted-a", "u");
        assert!(
            matches!(&encrypted, Err(AuthError::Forbidden(m)) if m.contains("master key")),
            "{encrypted:?}"
        );
        let signin = auth.authenticate_user("1.2", "u");
        assert!(
            matches!(&signin, Err(AuthError::Forbidden(m)) if m.contains("user_data")),
            "{signin:?}"
        );
        assert!(matches!(
            auth.authenticate_user("nope", "u"),
            Err(AuthError::BadRequest(_))
        ));
    }

    #[test]
    fn user_info_limit_is_adjustable() {
        let big = json!({"bio": "x".repeat(1500)});
        let member = move |_: &str, _: &str| PresenceMember {
            user_id: "1".to_string(),
            user_info: Some(big.clone()),
        };
        let default = allow_all().presence_data(member.clone());
        assert!(default.authorize_channel("1.2", "presence-a", "u").is_err());
        let raised = allow_all().presence_data(member).max_user_info_bytes(2048);
        assert!(raised.authorize_channel("1.2", "presence-a", "u").is_ok());
    }

    #[test]
    fn debug_hides_the_secrets() {
        let auth = allow_all()
            .encryption_master_key_base64(&base64::encode(&[9; 32]))
            .unwrap_or_else(|e| panic!("{e}"));
        let text = format!("{auth:?}");
        assert!(text.contains(KEY) && !text.contains(SECRET), "{text}");
        assert!(!text.contains(&base64::encode(&[9; 32])), "{text}");
    }

    #[test]
    fn send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Authorizer<str>>();
        check::<Authorizer<std::rc::Rc<u8>>>();
    }
}
