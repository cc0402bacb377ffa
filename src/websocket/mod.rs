//! The WebSocket side: admission and upgrade, the per-connection task (frame reader, socket
//! writer, keep-alive), and the session that gives client messages their meaning. Never
//! imports `http_api`.

pub mod close_log;
pub mod connection;
pub mod frame_reader;
pub mod keepalive;
pub mod live;
pub mod session;
pub mod socket_writer;
pub mod transport;
pub mod upgrade;
