//! Every Pusher close and error code Crier sends, with what pusher-js does when it sees it
//! (pusher-js `protocol.ts` `getCloseAction`). No bare code numbers appear anywhere else.

/// Unknown app key. pusher-js: refused, never reconnects on its own.
pub(crate) const APP_DOES_NOT_EXIST: u16 = 4001;
/// The app is disabled. pusher-js: refused.
pub(crate) const APP_DISABLED: u16 = 4003;
/// The app is over its connection quota. pusher-js: refused.
pub(crate) const OVER_CONNECTION_QUOTA: u16 = 4004;
/// WebSocket upgrade on a path other than `/app/{key}`. pusher-js: refused.
pub(crate) const PATH_NOT_FOUND: u16 = 4005;
/// `protocol` query parameter is not a number. pusher-js: refused.
pub(crate) const INVALID_VERSION_FORMAT: u16 = 4006;
/// `protocol` is a number other than 5, 6 or 7. pusher-js: refused.
pub(crate) const UNSUPPORTED_PROTOCOL: u16 = 4007;
/// `protocol` query parameter missing. pusher-js: refused.
pub(crate) const NO_PROTOCOL_VERSION: u16 = 4008;
/// Origin not allowed, failed sign-in, terminated user. pusher-js: refused.
pub(crate) const UNAUTHORIZED: u16 = 4009;
/// The connection could not keep up (its outbox overflowed) or the node is over capacity.
/// pusher-js: backs off 1 s, then reconnects.
pub(crate) const OVER_CAPACITY: u16 = 4100;
/// Generic "reconnect now", sent on shutdown. pusher-js: reconnects at once.
pub(crate) const RECONNECT_NOW: u16 = 4200;
/// No reply to a ping within the pong timeout. pusher-js: reconnects at once.
pub(crate) const PONG_NOT_RECEIVED: u16 = 4201;
/// Client event rejected by the per-connection rate limit. Sent only inside `pusher:error`,
/// never as a close code (pusher-js would treat a 43xx close as "refused").
pub(crate) const CLIENT_EVENT_RATE_LIMIT: u16 = 4301;
/// Watchlist longer than the limit; only the first ids are watched. `pusher:error` only,
/// sent after `pusher:signin_success`.
pub(crate) const WATCHLIST_LIMIT: u16 = 4302;

/// WebSocket close code: the message was larger than the server accepts (RFC 6455).
/// pusher-js has no special action for it and reconnects after 1 s.
pub(crate) const MESSAGE_TOO_BIG: u16 = 1009;
/// WebSocket close code: text frame with invalid UTF-8 (RFC 6455).
pub(crate) const INVALID_PAYLOAD: u16 = 1007;
/// WebSocket close code: protocol violation at the framing level (RFC 6455).
pub(crate) const PROTOCOL_ERROR: u16 = 1002;
/// WebSocket close code: normal closure, used to answer a client's close.
pub(crate) const NORMAL_CLOSURE: u16 = 1000;
