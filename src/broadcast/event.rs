//! Events that know where they go: the seed's `BroadcastOn`, `BroadcastAs`, `BroadcastWith`
//! and `BroadcastWhen`, as a trait.

use serde::Serialize;
use serde_json::Value;

use super::BroadcastError;

/// A channel an event goes to, with its kind spelled out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// A public channel, named as it is.
    Public(String),
    /// `private-{name}`.
    Private(String),
    /// `presence-{name}`.
    Presence(String),
}

impl Channel {
    /// The channel's full name, prefix included.
    pub fn into_name(self) -> String {
        match self {
            Channel::Public(name) => name,
            Channel::Private(name) => format!("private-{name}"),
            Channel::Presence(name) => format!("presence-{name}"),
        }
    }
}

/// An event type that says where it is broadcast, under which name, with what data and
/// whether at all; send it with [`super::Broadcaster::broadcast`].
///
/// ```
/// use crier::broadcast::{BroadcastEvent, Channel};
/// use serde::Serialize;
///
/// #[derive(Serialize)]
/// struct OrderShipped {
///     order_id: u64,
///     tracking: String,
///     #[serde(skip)]
///     user_id: u64,
/// }
///
/// impl BroadcastEvent for OrderShipped {
///     fn broadcast_on(&self) -> Vec<Channel> {
///         vec![Channel::Public("orders".into()), Channel::Private(format!("user.{}", self.user_id))]
///     }
///     fn broadcast_as(&self) -> String {
///         "order.shipped".into()
///     }
///     fn broadcast_when(&self) -> bool {
///         !self.tracking.is_empty()
///     }
/// }
/// ```
pub trait BroadcastEvent: Serialize {
    /// The channels the event goes to.
    fn broadcast_on(&self) -> Vec<Channel>;

    /// The event's name; by default the type's name (`OrderShipped`). Laravel Echo listens
    /// to a custom name with a leading dot: `.listen('.order.shipped', …)`.
    fn broadcast_as(&self) -> String {
        let full = std::any::type_name::<Self>();
        let name = full.split('<').next().unwrap_or(full);
        name.rsplit("::").next().unwrap_or(name).to_string()
    }

    /// The event's data; by default the event itself, serialized.
    fn broadcast_with(&self) -> Result<Value, BroadcastError> {
        serde_json::to_value(self).map_err(|e| BroadcastError::Serialize(e.to_string()))
    }

    /// Whether to broadcast at all; by default always.
    fn broadcast_when(&self) -> bool {
        true
    }
}
