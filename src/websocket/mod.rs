//! The WebSocket side: admission and upgrade, the per-connection reader and writer tasks,
//! and the session that gives client messages their meaning. Never imports `http_api`.

pub mod connection;
pub mod frame_reader;
pub mod session;
pub mod upgrade;
pub mod writer;
