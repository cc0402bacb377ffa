//! The protocol's fixed limits, and the defaults of the limits an app may change. The
//! server's checks (WebSocket session, HTTP API) and the Rust broadcasting API read them
//! here, so each rule is stated once.

/// Longest event name, as the server SDKs enforce.
pub(crate) const MAX_EVENT_NAME_LEN: usize = 200;
/// Longest user id (presence members, sign-in), as Pusher documents it.
pub(crate) const MAX_USER_ID_LEN: usize = 128;
/// User ids a sign-in's watchlist may name; past it the rest are ignored (4302).
pub(crate) const MAX_WATCHLIST: usize = 100;
/// Channels one published event may go to (Pusher's limit; an app's default).
pub(crate) const MAX_EVENT_CHANNELS: usize = 100;
/// Events one batch may carry (Pusher's limit; an app's default).
pub(crate) const MAX_BATCH_EVENTS: usize = 10;
/// An event's data, in bytes (an app's default; hosted Pusher allows 10 KB).
pub(crate) const MAX_EVENT_PAYLOAD_BYTES: usize = 100 * 1024;
/// A presence member's `user_info`, in bytes (an app's default; Pusher's limit).
pub(crate) const MAX_PRESENCE_USER_INFO_BYTES: usize = 1024;
