//! Why an auth endpoint said no. Two outcomes only, because pusher-js treats every non-200
//! answer alike (it emits `pusher:subscription_error` or `pusher:signin_error` with the
//! status): 400 when the request itself is malformed, 403 when it is well formed but this
//! server will not authorize it.

use std::fmt;

/// A refused channel authorization or user authentication.
///
/// `BadRequest` (400) means the request was malformed: a bad socket id, an invalid channel
/// name, a public channel, an unreadable body. `Forbidden` (403) means it was well formed but
/// is not authorized: the authorizer callback said no, or the app has not set up what the
/// request needs (presence data, user data, an encryption master key), or a callback
/// returned a member the protocol would refuse. The message says which.
///
/// ```
/// use crier::authorizer::{AuthError, Authorizer};
///
/// let auth: Authorizer<()> = Authorizer::new("app-key", "app-secret");
/// let err = auth.authorize_channel("1234.5678", "private-orders", &()).unwrap_err();
/// assert!(matches!(err, AuthError::Forbidden(_)));
/// assert_eq!(err.status(), 403);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// 400: the request is malformed; the text says how.
    BadRequest(String),
    /// 403: the request is refused; the text says why.
    Forbidden(String),
}

impl AuthError {
    /// The HTTP status to answer with: 400 or 403.
    ///
    /// ```
    /// use crier::authorizer::AuthError;
    ///
    /// assert_eq!(AuthError::BadRequest("no socket_id".into()).status(), 400);
    /// assert_eq!(AuthError::Forbidden("not yours".into()).status(), 403);
    /// ```
    pub fn status(&self) -> u16 {
        match self {
            AuthError::BadRequest(_) => 400,
            AuthError::Forbidden(_) => 403,
        }
    }

    /// The explanation, without the status.
    ///
    /// ```
    /// use crier::authorizer::AuthError;
    ///
    /// assert_eq!(AuthError::Forbidden("not yours".into()).message(), "not yours");
    /// ```
    pub fn message(&self) -> &str {
        match self {
            AuthError::BadRequest(m) | AuthError::Forbidden(m) => m,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for AuthError {}
