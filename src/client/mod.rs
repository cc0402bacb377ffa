//! A signed Pusher Channels HTTP API client: publish events, query channels and users, send
//! to and disconnect signed-in users, on a Crier elsewhere or on hosted Pusher. It is the
//! server side's mirror: `http_api` verifies exactly what this module signs, and the tests
//! in `tests/remote_client.rs` hold the two together. `broadcast::Broadcaster` builds its
//! remote driver on [`Client`].
//!
//! ```no_run
//! # async fn run() -> Result<(), crier::client::ClientError> {
//! use crier::client::Client;
//!
//! let client = Client::from_url("http://app-key:app-secret@127.0.0.1:6001/apps/1")?;
//! client.trigger(&["orders"], "order-shipped", r#"{"id":7}"#, None).await?;
//! let rooms = client.channels(Some("presence-"), true).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `config`: [`ClientConfig`], the `PUSHER_URL` form, cluster hosts; checked once, in
//!   [`Client::new`], so requests never meet a base URL that cannot work.
//! - `signing`: pure signing and URL escaping, tested against Pusher's documented example.
//! - `transport`: the keep-alive pool and one exchange bounded in time and size; no Pusher.
//! - `requests`: [`Client`], one method per endpoint; `responses` reads their answers.
//! - `error`: [`ClientError`], what callers branch on.
//!
//! # Decisions
//!
//! - Nothing is retried: a trigger is not idempotent (see `transport`).
//! - One timeout covers connecting, sending and reading the whole answer, and answers are
//!   read up to 1 MiB: a stalled or hostile server costs a bounded wait and bounded memory.
//! - Arguments are not validated here (channel names, event sizes): the server's answer is
//!   the authority, and `broadcast` checks them before calling, with typed errors.

mod config;
mod error;
mod requests;
mod responses;
mod signing;
mod transport;

pub use config::ClientConfig;
pub use error::ClientError;
pub use requests::Client;

/// One event of [`Client::trigger_batch`]: to one channel, optionally skipping one
/// connection.
///
/// ```no_run
/// let event = crier::client::BatchEvent {
///     channel: "orders".to_string(),
///     name: "order-shipped".to_string(),
///     data: r#"{"id":7}"#.to_string(),
///     socket_id: None,
/// };
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEvent {
    /// The channel, by its full name.
    pub channel: String,
    /// The event name.
    pub name: String,
    /// The data, sent as is (usually JSON text).
    pub data: String,
    /// The connection not to send it to (`"123.456"`).
    pub socket_id: Option<String>,
}

/// What the API says about a channel ([`Client::channels`], [`Client::channel`]).
///
/// ```no_run
/// # async fn run(client: crier::client::Client) -> Result<(), crier::client::ClientError> {
/// let crier::client::ChannelInfo { name, occupied, subscription_count, user_count } =
///     client.channel("presence-room-1").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The channel's full name.
    pub name: String,
    /// Whether anyone is subscribed (always `true` in a [`Client::channels`] list).
    pub occupied: bool,
    /// Connections subscribed, when the answer has it.
    pub subscription_count: Option<u64>,
    /// Distinct users of a presence channel, when the answer has it.
    pub user_count: Option<u64>,
}
