//! The channel registry: who is subscribed to what, presence members, and the outboxes that
//! events are pushed into. No sockets, no HTTP, no JSON parsing: the registry holds outbox
//! handles and never awaits.

pub mod outbox;
pub mod presence;
pub mod registry;
pub(crate) mod replica;
pub mod users;

pub use outbox::{CloseRequest, Outbox};
pub use presence::Member;
pub use registry::{CacheInfo, ChannelStats, PresenceJoin, Registry};
pub use users::Users;
