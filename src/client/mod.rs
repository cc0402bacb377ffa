//! A signed Pusher HTTP API client (work in progress).
