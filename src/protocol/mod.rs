//! Pure protocol code: wire types, channel-name rules, codes, signatures and frame encoding.
//! Nothing here touches a socket, a task or the registry, so all of it is unit-tested
//! without a server.

pub mod auth;
pub mod channel;
pub mod clip;
pub mod codes;
pub mod encode;
pub mod limits;
pub mod member_data;
pub mod messages;
pub mod query;
pub mod socket_id;
