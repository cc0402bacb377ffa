//! The WebSocket side: admission and upgrade, the per-connection task (frame reader, socket
//! writer, keep-alive), and the session that gives client messages their meaning. Never
//! imports `http_api`.

pub(crate) mod close_log;
pub(crate) mod connection;
pub(crate) mod frame_reader;
pub(crate) mod keepalive;
pub(crate) mod live;
pub(crate) mod session;
pub(crate) mod socket_writer;
pub(crate) mod transport;
pub(crate) mod upgrade;
