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
//! # Using it as a library
//!
//! - [`Server`]: Crier inside your program ([`Server::builder`]), serving WebSockets and the
//!   HTTP API like the binary, handing out [`broadcast::Broadcaster`]s that publish in-process.
//! - [`broadcast`]: the one broadcasting API (`channel(..).to_others(..).emit(..)`, event types),
//!   over the embedded server or over [`client`].
//! - [`client`]: a signed Pusher HTTP API client for a Crier or Pusher server elsewhere.
//! - [`authorizer`]: the auth endpoints pusher-js and Echo call (`/broadcasting/auth`,
//!   `/pusher/user-auth`), framework-neutral.
//! - [`config`]: the settings, as the configuration file states them; [`serve`] and
//!   [`server`] run a server on a listener of your own.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let crier = crier::Server::builder().port(6001).start().await?;
//! crier.broadcaster().channel("orders").emit("OrderShipped", &serde_json::json!({"id": 7})).await?;
//! # Ok(()) }
//! ```
//!
//! # Inside (private modules)
//!
//! - `apps`: the hosted apps, each with its settings, registry and connection count.
//! - `protocol`: pure wire code: messages, channel names, limits, codes, signatures, frames.
//! - `channels`: the registry (sharded channels, presence members) and per-connection outboxes.
//! - `websocket`: admission and upgrade, one task per connection, the session logic.
//! - `http_api`: request authentication and the REST handlers.
//! - `cluster`: several nodes joined through Redis (interest routing, the Redis link).
//! - `server`: the accept loop, HTTP routing and the shutdown sequence.
//! - `webhooks`: occupancy, membership and client events sent to the apps' backends.
//! - `console`: the debug console page (`/console`) and its live stream of an app's traffic.
//! - `metrics`: Prometheus counters and the metrics listener (`/metrics`, `/up`, `/ready`).

#![warn(unreachable_pub, missing_docs)]

pub mod authorizer;
pub mod broadcast;
pub mod client;
pub mod config;
pub mod server;

mod apps;
mod channels;
mod cluster;
mod console;
mod http_api;
mod metrics;
mod protocol;
mod webhooks;
mod websocket;

pub use config::{AppConfig, ClusterSettings, Config, ConfigError, Overrides, ServerSettings};
pub use server::builder::{RunningServer, Server, ServerBuilder, StartError};
pub use server::serve;
