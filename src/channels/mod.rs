//! The channel registry: who is subscribed to what, presence members, and the outboxes that
//! events are pushed into. No sockets, no HTTP, no JSON parsing: the registry holds outbox
//! handles and never awaits.

pub(crate) mod outbox;
pub(crate) mod presence;
pub(crate) mod registry;
pub(crate) mod replica;
pub(crate) mod users;

pub(crate) use outbox::{CloseRequest, Outbox};
pub(crate) use presence::Member;
pub(crate) use registry::{ChannelStats, PresenceJoin, Registry};
pub(crate) use users::Users;
