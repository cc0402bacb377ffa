//! Pure protocol code: wire types, channel-name rules, codes, signatures and frame encoding.
//! Nothing here touches a socket, a task or the registry, so all of it is unit-tested
//! without a server.

pub(crate) mod auth;
pub(crate) mod channel;
pub(crate) mod clip;
pub(crate) mod codes;
pub(crate) mod encode;
pub(crate) mod limits;
pub(crate) mod member_data;
pub(crate) mod messages;
pub(crate) mod query;
pub(crate) mod socket_id;
