//! Broadcasting from Rust: one API, [`Broadcaster`], whether Crier runs inside the program
//! ([`crate::Server`], no HTTP and no signing) or elsewhere ([`crate::client::Client`], the
//! signed Pusher HTTP API, hosted Pusher included). Application code is written once:
//!
//! ```no_run
//! # async fn ship(broadcaster: &crier::broadcast::Broadcaster, socket_id: &str) -> Result<(), crier::broadcast::BroadcastError> {
//! use serde_json::json;
//! broadcaster.channel(["orders", "notifications"]).emit("OrderShipped", &json!({"id": 7})).await?;
//! broadcaster.private("user.123").emit("PrivateMessage", &json!({"text": "hi"})).await?;
//! broadcaster.presence("chat.room.1").to_others(socket_id).emit("UserTyping", &"ada").await?;
//! # Ok(()) }
//! ```
//!
//! Channel names, event names and sizes are checked before anything is sent, by the same rules
//! the server applies to the HTTP API (`crate::protocol::limits`), so a mistake is a typed
//! [`BroadcastError`] at the call, not a 400 in a log.

pub(crate) mod embedded;
mod event;

use std::fmt;

use serde::Serialize;

pub use event::{BroadcastEvent, Channel};

use crate::client::{self, ClientError};
use crate::protocol::channel;
use crate::protocol::limits::{
    MAX_BATCH_EVENTS, MAX_EVENT_CHANNELS, MAX_EVENT_NAME_LEN, MAX_EVENT_PAYLOAD_BYTES,
};
use embedded::Embedded;

/// Where broadcasts go; cheap to clone.
///
/// ```no_run
/// # async fn ex() -> Result<(), Box<dyn std::error::Error>> {
/// let crier = crier::Server::builder().port(0).start().await?;
/// let b = crier.broadcaster();
/// b.channel("orders").emit("OrderShipped", &serde_json::json!({"id": 1})).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Broadcaster {
    driver: Driver,
}

#[derive(Clone)]
enum Driver {
    Embedded(Embedded),
    Remote(client::Client),
}

impl fmt::Debug for Broadcaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.driver {
            Driver::Embedded(e) => format!("embedded app {}", e.app_id()),
            Driver::Remote(c) => format!("remote app {}", c.app_id()),
        };
        f.debug_struct("Broadcaster")
            .field("driver", &kind)
            .finish()
    }
}

/// Why a broadcast or query did not happen.
///
/// ```no_run
/// # async fn ex(b: &crier::broadcast::Broadcaster) -> Result<(), Box<dyn std::error::Error>> {
/// use crier::broadcast::BroadcastError;
/// match b.channel("no spaces").emit("E", &1).await {
///     Err(BroadcastError::InvalidChannel(why)) => eprintln!("{why}"),
///     other => other?,
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub enum BroadcastError {
    /// A channel name the protocol does not allow.
    InvalidChannel(String),
    /// An empty, reserved or over-long event name.
    InvalidEvent(String),
    /// The event's data is over the app's limit (bytes, limit).
    TooLarge {
        /// The data's size.
        bytes: usize,
        /// The limit it is over.
        limit: usize,
    },
    /// More channels, or more batch events, than one request may carry.
    TooMany(String),
    /// The data could not be serialized to JSON.
    Serialize(String),
    /// The server refused the request (status and its message).
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The remote server could not be reached or answered nonsense.
    Remote(ClientError),
    /// This driver cannot answer that (the Pusher HTTP API has no list of socket ids).
    Unsupported(&'static str),
    /// The embedded server no longer hosts the app (removed by a reload).
    UnknownApp(String),
}

impl fmt::Display for BroadcastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BroadcastError::InvalidChannel(m) | BroadcastError::InvalidEvent(m) => f.write_str(m),
            BroadcastError::TooLarge { bytes, limit } => {
                write!(f, "event data is {bytes} bytes; the limit is {limit}")
            }
            BroadcastError::TooMany(m) | BroadcastError::Serialize(m) => f.write_str(m),
            BroadcastError::Rejected { status, message } => {
                write!(f, "refused with {status}: {message}")
            }
            BroadcastError::Remote(e) => write!(f, "remote server: {e}"),
            BroadcastError::Unsupported(what) => write!(f, "not supported by this driver: {what}"),
            BroadcastError::UnknownApp(id) => write!(f, "no app with id {id:?}"),
        }
    }
}

impl std::error::Error for BroadcastError {}

impl From<ClientError> for BroadcastError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Status { status, body } => BroadcastError::Rejected {
                status,
                message: serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or(body),
            },
            other => BroadcastError::Remote(other),
        }
    }
}

/// A channel with its counts, as [`Broadcaster::channels`] lists them.
///
/// ```no_run
/// # async fn ex(b: &crier::broadcast::Broadcaster) -> Result<(), Box<dyn std::error::Error>> {
/// for c in b.channels("presence-").await? {
///     println!("{}: {:?} users", c.name, c.user_count);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSummary {
    /// The channel's full name.
    pub name: String,
    /// Subscriptions, where the driver knows them.
    pub subscription_count: Option<u64>,
    /// Distinct users of a presence channel.
    pub user_count: Option<u64>,
}

/// One event of [`Broadcaster::emit_batch`].
///
/// ```no_run
/// # async fn ex(b: &crier::broadcast::Broadcaster) -> Result<(), Box<dyn std::error::Error>> {
/// use crier::broadcast::BatchItem;
/// b.emit_batch(&[BatchItem::new("orders", "A", &1)?, BatchItem::new("audit", "B", &2)?]).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BatchItem {
    /// The channel, by its full name.
    pub channel: String,
    /// The event name.
    pub event: String,
    /// The event's data, already JSON text (see [`BatchItem::new`]).
    pub data: String,
    /// A socket that should not receive it.
    pub except: Option<String>,
}

impl BatchItem {
    /// An event for `channel` with `data` serialized to JSON.
    ///
    /// ```no_run
    /// # fn ex() -> Result<(), crier::broadcast::BroadcastError> {
    /// let item = crier::broadcast::BatchItem::new("orders", "OrderShipped", &serde_json::json!({"id": 1}))?;
    /// # Ok(()) }
    /// ```
    pub fn new(
        channel: impl Into<String>,
        event: impl Into<String>,
        data: &impl Serialize,
    ) -> Result<BatchItem, BroadcastError> {
        Ok(BatchItem {
            channel: channel.into(),
            event: event.into(),
            data: to_json(data)?,
            except: None,
        })
    }

    /// Leaves `socket_id` out.
    ///
    /// ```no_run
    /// # fn ex() -> Result<(), crier::broadcast::BroadcastError> {
    /// let item = crier::broadcast::BatchItem::new("chat", "Typing", &"ada")?.to_others("123.456");
    /// # Ok(()) }
    /// ```
    pub fn to_others(mut self, socket_id: impl Into<String>) -> BatchItem {
        self.except = Some(socket_id.into());
        self
    }
}

/// Something that names one or more channels: `"orders"`, `["orders", "notifications"]`,
/// `vec![...]`.
///
/// ```no_run
/// # async fn ex(b: &crier::broadcast::Broadcaster) -> Result<(), Box<dyn std::error::Error>> {
/// b.channel("orders").emit("E", &1).await?;
/// b.channel(["orders", "audit"]).emit("E", &1).await?;
/// b.channel(vec![String::from("orders")]).emit("E", &1).await?;
/// # Ok(()) }
/// ```
pub trait IntoChannels {
    /// The channel names.
    fn into_channels(self) -> Vec<String>;
}

impl IntoChannels for &str {
    fn into_channels(self) -> Vec<String> {
        vec![self.to_string()]
    }
}

impl IntoChannels for String {
    fn into_channels(self) -> Vec<String> {
        vec![self]
    }
}

impl<S: Into<String>, const N: usize> IntoChannels for [S; N] {
    fn into_channels(self) -> Vec<String> {
        self.into_iter().map(Into::into).collect()
    }
}

impl<S: Into<String>> IntoChannels for Vec<S> {
    fn into_channels(self) -> Vec<String> {
        self.into_iter().map(Into::into).collect()
    }
}

impl IntoChannels for &[&str] {
    fn into_channels(self) -> Vec<String> {
        self.iter().map(|s| s.to_string()).collect()
    }
}

fn to_json(data: &impl Serialize) -> Result<String, BroadcastError> {
    serde_json::to_string(data).map_err(|e| BroadcastError::Serialize(e.to_string()))
}

impl Broadcaster {
    /// Broadcasts through the signed HTTP API of a Crier or Pusher server elsewhere.
    ///
    /// ```no_run
    /// # async fn ex() -> Result<(), Box<dyn std::error::Error>> {
    /// use crier::{broadcast::Broadcaster, client::Client};
    /// let b = Broadcaster::remote(Client::from_url("http://app-key:app-secret@127.0.0.1:6001/apps/1")?);
    /// # Ok(()) }
    /// ```
    pub fn remote(client: client::Client) -> Broadcaster {
        Broadcaster {
            driver: Driver::Remote(client),
        }
    }

    pub(crate) fn embedded(embedded: Embedded) -> Broadcaster {
        Broadcaster {
            driver: Driver::Embedded(embedded),
        }
    }

    /// A broadcast to one or more channels, named as they are (`"orders"`,
    /// `"private-user.1"`).
    ///
    /// ```no_run
    /// # async fn ex(b: &crier::broadcast::Broadcaster) -> Result<(), Box<dyn std::error::Error>> {
    /// b.channel(["orders", "notifications"]).emit("OrderShipped", &serde_json::json!({"id": 1})).await?;
    /// # Ok(()) }
    /// ```
    pub fn channel(&self, channels: impl IntoChannels) -> PendingBroadcast<'_> {
        PendingBroadcast {
            broadcaster: self,
            channels: channels.into_channels(),
            except: None,
            when: true,
        }
    }

    /// A broadcast to `private-{name}`.
    ///
    /// ```no_run
    /// # async fn ex(b: &crier::broadcast::Broadcaster) -> Result<(), Box<dyn std::error::Error>> {
    /// b.private("user.123").emit("PrivateMessage", &"hi").await?; // private-user.123
    /// # Ok(()) }
    /// ```
    pub fn private(&self, name: &str) -> PendingBroadcast<'_> {
        self.channel(format!("private-{name}"))
    }

    /// A broadcast to `presence-{name}`.
    ///
    /// ```no_run
    /// # async fn ex(b: &crier::broadcast::Broadcaster) -> Result<(), Box<dyn std::error::Error>> {
    /// b.presence("chat.room.1").emit("MessageSent", &"hi").await?; // presence-chat.room.1
    /// # Ok(()) }
    /// ```
    pub fn presence(&self, name: &str) -> PendingBroadcast<'_> {
        self.channel(format!("presence-{name}"))
    }

    /// Broadcasts `event` where it says, as it says, if it says so.
    ///
    /// ```no_run
    /// # async fn ex(b: &crier::broadcast::Broadcaster) -> Result<(), Box<dyn std::error::Error>> {
    /// use crier::broadcast::{BroadcastEvent, Channel};
    /// #[derive(serde::Serialize)]
    /// struct Deployed { version: String }
    /// impl BroadcastEvent for Deployed {
    ///     fn broadcast_on(&self) -> Vec<Channel> { vec![Channel::Public("deploys".into())] }
    /// }
    /// b.broadcast(&Deployed { version: "1.2".into() }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn broadcast<E: BroadcastEvent>(&self, event: &E) -> Result<(), BroadcastError> {
        if !event.broadcast_when() {
            return Ok(());
        }
        let channels: Vec<String> = event
            .broadcast_on()
            .into_iter()
            .map(Channel::into_name)
            .collect();
        let data = to_json(&event.broadcast_with()?)?;
        self.channel(channels)
            .emit_json(&event.broadcast_as(), data)
            .await
    }

    /// Several events in one request (at most 10, as Pusher allows); all are checked before
    /// any is sent.
    ///
    /// ```no_run
    /// # async fn ex(b: &crier::broadcast::Broadcaster) -> Result<(), Box<dyn std::error::Error>> {
    /// use crier::broadcast::BatchItem;
    /// b.emit_batch(&[BatchItem::new("a", "E", &1)?, BatchItem::new("b", "E", &2)?]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn emit_batch(&self, items: &[BatchItem]) -> Result<(), BroadcastError> {
        if items.len() > MAX_BATCH_EVENTS {
            return Err(BroadcastError::TooMany(format!(
                "a batch holds at most {MAX_BATCH_EVENTS} events; got {}",
                items.len()
            )));
        }
        for item in items {
            check(
                std::slice::from_ref(&item.channel),
                &item.event,
                &item.data,
                self.payload_limit(),
            )?;
        }
        match &self.driver {
            Driver::Embedded(e) => e.batch(items),
            Driver::Remote(c) => {
                let events: Vec<client::BatchEvent> = items
                    .iter()
                    .map(|i| client::BatchEvent {
                        channel: i.channel.clone(),
                        name: i.event.clone(),
                        data: i.data.clone(),
                        socket_id: i.except.clone(),
                    })
                    .collect();
                Ok(c.trigger_batch(&events).await?)
            }
        }
    }

    /// The socket ids subscribed to `channel` (embedded only: the Pusher HTTP API cannot
    /// list sockets).
    ///
    /// ```no_run
    /// # async fn ex(b: &crier::broadcast::Broadcaster) -> Result<(), Box<dyn std::error::Error>> {
    /// let sockets = b.clients("orders").await?; // ["123.1", "123.2"]
    /// # Ok(()) }
    /// ```
    pub async fn clients(&self, channel: &str) -> Result<Vec<String>, BroadcastError> {
        check_channel(channel)?;
        match &self.driver {
            Driver::Embedded(e) => e.clients(channel),
            Driver::Remote(_) => Err(BroadcastError::Unsupported(
                "listing a channel's sockets (the HTTP API has no such query)",
            )),
        }
    }

    /// The user ids of a presence channel.
    ///
    /// ```no_run
    /// # async fn ex(b: &crier::broadcast::Broadcaster) -> Result<(), Box<dyn std::error::Error>> {
    /// let online = b.members("presence-chat.room.1").await?;
    /// # Ok(()) }
    /// ```
    pub async fn members(&self, channel: &str) -> Result<Vec<String>, BroadcastError> {
        check_channel(channel)?;
        match &self.driver {
            Driver::Embedded(e) => e.members(channel).await,
            Driver::Remote(c) => Ok(c.users(channel).await?),
        }
    }

    /// Occupied channels whose name starts with `prefix` (`""` for all), with their counts.
    ///
    /// ```no_run
    /// # async fn ex(b: &crier::broadcast::Broadcaster) -> Result<(), Box<dyn std::error::Error>> {
    /// let rooms = b.channels("presence-chat.").await?;
    /// # Ok(()) }
    /// ```
    pub async fn channels(&self, prefix: &str) -> Result<Vec<ChannelSummary>, BroadcastError> {
        match &self.driver {
            Driver::Embedded(e) => e.channels(prefix).await,
            Driver::Remote(c) => {
                let prefix = (!prefix.is_empty()).then_some(prefix);
                let presence = prefix.is_some_and(|p| p.starts_with("presence-"));
                let listed = c.channels(prefix, presence).await?;
                Ok(listed
                    .into_iter()
                    .map(|i| ChannelSummary {
                        name: i.name,
                        subscription_count: i.subscription_count,
                        user_count: i.user_count,
                    })
                    .collect())
            }
        }
    }

    /// Sends an event to every socket signed in as `user_id`.
    ///
    /// ```no_run
    /// # async fn ex(b: &crier::broadcast::Broadcaster) -> Result<(), Box<dyn std::error::Error>> {
    /// b.send_to_user("42", "JobFinished", &serde_json::json!({"job": 7})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_to_user(
        &self,
        user_id: &str,
        event: &str,
        data: &impl Serialize,
    ) -> Result<(), BroadcastError> {
        check_user(user_id)?;
        let data = to_json(data)?;
        check_event(event, &data, self.payload_limit())?;
        match &self.driver {
            Driver::Embedded(e) => {
                e.publish(&[format!("#server-to-user-{user_id}")], event, &data, None)
            }
            Driver::Remote(c) => Ok(c.send_to_user(user_id, event, &data).await?),
        }
    }

    /// Closes every connection signed in as `user_id`, on every node.
    ///
    /// ```no_run
    /// # async fn ex(b: &crier::broadcast::Broadcaster) -> Result<(), Box<dyn std::error::Error>> {
    /// b.terminate("42").await?;
    /// # Ok(()) }
    /// ```
    pub async fn terminate(&self, user_id: &str) -> Result<(), BroadcastError> {
        check_user(user_id)?;
        match &self.driver {
            Driver::Embedded(e) => e.terminate(user_id),
            Driver::Remote(c) => Ok(c.terminate_user_connections(user_id).await?),
        }
    }

    fn payload_limit(&self) -> usize {
        match &self.driver {
            Driver::Embedded(e) => e.payload_limit(),
            Driver::Remote(_) => MAX_EVENT_PAYLOAD_BYTES,
        }
    }
}

/// A broadcast being built: `.to_others(socket_id)`, `.when(condition)`, then `.emit(...)`.
///
/// ```no_run
/// # async fn ex(b: &crier::broadcast::Broadcaster) -> Result<(), Box<dyn std::error::Error>> {
/// b.channel("chat").to_others("123.456").when(true).emit("Typing", &"ada").await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "nothing is sent until .emit(...).await"]
pub struct PendingBroadcast<'a> {
    broadcaster: &'a Broadcaster,
    channels: Vec<String>,
    except: Option<String>,
    when: bool,
}

impl PendingBroadcast<'_> {
    /// Leaves out the socket that caused the event (pusher-js's `socket_id`, which Echo sends
    /// as `X-Socket-ID`).
    ///
    /// ```no_run
    /// # async fn ex(b: &crier::broadcast::Broadcaster) -> Result<(), Box<dyn std::error::Error>> {
    /// b.presence("chat.room.1").to_others("123.456").emit("Typing", &"ada").await?;
    /// # Ok(()) }
    /// ```
    pub fn to_others(mut self, socket_id: impl Into<String>) -> Self {
        self.except = Some(socket_id.into());
        self
    }

    /// Sends only if `condition` holds.
    ///
    /// ```no_run
    /// # async fn ex(b: &crier::broadcast::Broadcaster) -> Result<(), Box<dyn std::error::Error>> {
    /// let shipped = true;
    /// b.channel("orders").when(shipped).emit("OrderUpdate", &1).await?;
    /// # Ok(()) }
    /// ```
    pub fn when(mut self, condition: bool) -> Self {
        self.when &= condition;
        self
    }

    /// Sends `event` with `data` serialized to JSON.
    ///
    /// ```no_run
    /// # async fn ex(b: &crier::broadcast::Broadcaster) -> Result<(), Box<dyn std::error::Error>> {
    /// b.channel("orders").emit("OrderShipped", &serde_json::json!({"id": 1})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn emit(self, event: &str, data: &impl Serialize) -> Result<(), BroadcastError> {
        let data = to_json(data)?;
        self.emit_json(event, data).await
    }

    async fn emit_json(self, event: &str, data: String) -> Result<(), BroadcastError> {
        check(
            &self.channels,
            event,
            &data,
            self.broadcaster.payload_limit(),
        )?;
        if !self.when {
            return Ok(());
        }
        match &self.broadcaster.driver {
            Driver::Embedded(e) => e.publish(&self.channels, event, &data, self.except.as_deref()),
            Driver::Remote(c) => {
                let channels: Vec<&str> = self.channels.iter().map(String::as_str).collect();
                Ok(c.trigger(&channels, event, &data, self.except.as_deref())
                    .await?)
            }
        }
    }
}

fn check_channel(name: &str) -> Result<(), BroadcastError> {
    channel::classify(name)
        .map(|_| ())
        .map_err(|e| BroadcastError::InvalidChannel(e.to_string()))
}

fn check_user(user_id: &str) -> Result<(), BroadcastError> {
    if user_id.is_empty() || user_id.len() > crate::protocol::limits::MAX_USER_ID_LEN {
        return Err(BroadcastError::InvalidChannel(format!(
            "a user id is 1 to {} characters",
            crate::protocol::limits::MAX_USER_ID_LEN
        )));
    }
    check_channel(&format!("#server-to-user-{user_id}"))
}

fn check_event(event: &str, data: &str, limit: usize) -> Result<(), BroadcastError> {
    if event.is_empty() || event.len() > MAX_EVENT_NAME_LEN {
        return Err(BroadcastError::InvalidEvent(format!(
            "an event name is 1 to {MAX_EVENT_NAME_LEN} characters; got {}",
            event.len()
        )));
    }
    if event.starts_with("pusher:") || event.starts_with("pusher_internal:") {
        return Err(BroadcastError::InvalidEvent(format!(
            "event names starting with pusher: or pusher_internal: are reserved ({event})"
        )));
    }
    if data.len() > limit {
        return Err(BroadcastError::TooLarge {
            bytes: data.len(),
            limit,
        });
    }
    Ok(())
}

fn check(channels: &[String], event: &str, data: &str, limit: usize) -> Result<(), BroadcastError> {
    if channels.is_empty() {
        return Err(BroadcastError::InvalidChannel("no channel given".into()));
    }
    if channels.len() > MAX_EVENT_CHANNELS {
        return Err(BroadcastError::TooMany(format!(
            "an event goes to at most {MAX_EVENT_CHANNELS} channels; got {}",
            channels.len()
        )));
    }
    for name in channels {
        check_channel(name)?;
    }
    check_event(event, data, limit)
}
