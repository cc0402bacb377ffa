//! Crier: a broadcast server that speaks the Pusher Channels protocol (v7) and HTTP API, so
//! that pusher-js, Laravel Echo and the Pusher server SDKs work against it unchanged.
//!
//! # How a message flows
//!
//! ```text
//!  client ──WebSocket──► websocket::connection ──► websocket::session ──► channels::Registry
//!                              ▲ (the connection's task drains its outbox)    │
//!                              └────────── channels::Outbox ◄── pre-encoded frames
//!  backend ──signed HTTP──► http_api (auth → events / channels) ──────────────┘
//! ```
//!
//! # Layout
//!
//! - [`config`]: file + environment + flags → a validated [`Config`]; errors name the setting.
//! - [`apps`]: the hosted apps, each with its settings, registry and connection count.
//! - [`protocol`]: pure wire code: messages, channel names, codes, signatures, frame encoding.
//! - [`channels`]: the registry (sharded channels, presence members) and per-connection outboxes.
//! - [`websocket`]: admission and upgrade, one task per connection, the session logic.
//! - [`http_api`]: request authentication and the REST handlers.
//! - [`cluster`]: several nodes joined through Redis (interest routing, the Redis link).
//! - [`server`]: the accept loop, HTTP routing and the shutdown sequence.
//! - [`webhooks`]: occupancy, membership and client events sent to the apps' backends.
//! - [`console`]: the debug console page (`/console`) and its live stream of an app's traffic.
//! - [`metrics`]: Prometheus counters and the metrics listener (`/metrics`, `/up`, `/ready`).
//!
//! The modules are public so the integration tests and the embedding API can reach them;
//! the supported embedding surface is [`serve`] and the configuration types.

pub mod apps;
pub mod authorizer;
pub mod broadcast;
pub mod channels;
pub mod client;
pub mod cluster;
pub mod config;
pub mod console;
pub mod http_api;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod webhooks;
pub mod websocket;

pub use config::{AppConfig, ClusterSettings, Config, ConfigError, Overrides, ServerSettings};
pub use server::builder::{RunningServer, Server, ServerBuilder, StartError};
pub use server::serve;
