//! Configuration: a TOML file, then `CRIER_*` environment variables, then command-line flags,
//! each later source overriding the earlier one. The result is a validated [`Config`]; every
//! error names the setting it is about, so a typo in a file is a one-line fix, never a panic.
//!
//! The file holds the server settings under `[server]` and any number of `[[apps]]`. With no
//! app in the file, Crier serves one built-in default app (id `1`, key `app-key`, secret
//! `app-secret`) so that `cargo run --release` is useful at once. The `CRIER_APP_*` variables
//! and `--app-*` flags adjust the first app (the default one when the file lists none).

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::protocol::limits;
pub use crate::webhooks::settings::{
    EntryList, KindSet, WebhookEntry, WebhookFilter, WebhookKind, WebhookOverrides,
    WebhookSettings, WebhookTarget, parse_json_targets,
};

/// Everything the server needs to run: where to listen, global limits, and the apps it hosts.
#[derive(Debug, Clone)]
pub struct Config {
    /// The listener, limits and timeouts of the server itself.
    pub server: ServerSettings,
    /// The hosted apps (at least one).
    pub apps: Vec<AppConfig>,
    /// Joining other nodes through Redis (off unless `redis_url` is set).
    pub cluster: ClusterSettings,
    /// How webhooks are batched, retried and queued (targets are per app).
    pub webhooks: WebhookSettings,
}

/// Joining other nodes through Redis. Without `redis_url` the server is a single node and
/// needs no Redis.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `redis://HOST:PORT[/DB]`: with it the server is a node of a cluster.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel: clusters with different prefixes can share one
    /// Redis without seeing each other.
    pub prefix: String,
    /// This node's name in the cluster; random when not set (and logged at start).
    pub node_id: Option<String>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            redis_url: None,
            prefix: "crier".to_string(),
            node_id: None,
        }
    }
}

/// Settings that apply to the whole server, whatever the app.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on (0: any free port).
    pub port: u16,
    /// Sent to clients in `connection_established`; after this long without a frame from a
    /// client the server pings it.
    pub activity_timeout: Duration,
    /// How long a pinged client has to show a sign of life before it is closed with 4201.
    pub pong_timeout: Duration,
    /// Largest WebSocket message (after reassembling fragments) a client may send.
    pub max_message_bytes: usize,
    /// Bytes a connection may have queued for sending; past it the connection is closed
    /// with 4100 so that a slow reader never slows a broadcast.
    pub outbox_limit_bytes: usize,
    /// A socket write that makes no progress for this long ends the connection.
    pub write_timeout: Duration,
    /// On SIGINT/SIGTERM, how long to wait for connections to close before exiting anyway.
    pub shutdown_timeout: Duration,
    /// Deadline for reading an HTTP request's headers and, separately, its body.
    pub http_timeout: Duration,
    /// TCP connections still in the HTTP phase (before a WebSocket upgrade, or carrying HTTP
    /// API requests); beyond it the oldest idle one is closed or the new one refused with 503.
    pub max_http_connections: usize,
    /// Concurrent TCP connections (WebSocket or HTTP) from one client address, excess refused
    /// with HTTP 429; `None` means unlimited.
    pub max_connections_per_ip: Option<usize>,
    /// Proxies whose `X-Forwarded-For` is believed when counting connections per address.
    pub trusted_proxies: Vec<IpRange>,
    /// Where `GET /metrics` (and `/up`, `/ready`) listen apart from the main port; port 0
    /// turns that listener off.
    pub metrics_host: String,
    /// Port of the metrics listener; 0 turns it off.
    pub metrics_port: u16,
    /// PEM certificate chain and private key: with both, the main port serves `wss://` and
    /// `https://` only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// On SIGTERM, the time over which open connections are closed (with 4200) in waves.
    pub drain: Duration,
    /// Turns the debug console (`/console`) on; the console asks for it (or for one app's
    /// secret, which shows that app only). `None`: the console is off.
    pub console_token: Option<String>,
}

/// One tenant: its credentials and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct AppConfig {
    /// The app id of the HTTP API paths (`/apps/{id}/…`).
    pub id: String,
    /// The public key clients connect with (`/app/{key}`).
    pub key: String,
    /// Signs channel authorizations and HTTP API requests.
    pub secret: String,
    /// A disabled app refuses connections (4003) and publishes (403).
    pub enabled: bool,
    /// Whether clients may send `client-*` events.
    pub client_events: bool,
    /// Concurrent connections; `None` means unlimited.
    pub max_connections: Option<usize>,
    /// Client events a connection may send per second; 0 means unlimited.
    pub client_events_per_second: u32,
    /// Members a presence channel may have.
    pub max_presence_members: usize,
    /// Bytes of one member's `user_info`.
    pub max_presence_user_info_bytes: usize,
    /// Bytes of an event's data (HTTP API and client events).
    pub max_event_payload_bytes: usize,
    /// Channels one published event may go to.
    pub max_event_channels: usize,
    /// Events one batch may carry.
    pub max_batch_events: usize,
    /// Origins allowed to open WebSockets; empty or `*` allows every origin. Entries may be
    /// `*.example.com` to allow a domain and its subdomains.
    pub allowed_origins: Vec<String>,
    /// "Authorized connections": a socket must sign in (or subscribe to a private or
    /// presence channel) within `signin_timeout` or it is closed with 4009.
    pub require_signin: bool,
    /// How long a connection has to sign in when `require_signin` is on.
    pub signin_timeout: Duration,
    /// Send `pusher_internal:subscription_count` to non-presence channels' subscribers.
    pub subscription_count_events: bool,
    /// Honour `watchlist` in sign-in `user_data` with online/offline events.
    pub watchlist_events: bool,
    /// How long a cache channel keeps its last event.
    pub cache_ttl: Duration,
    /// Channels one connection may be subscribed to at once; over it the subscription gets
    /// `pusher:subscription_error`. Why 300: pages subscribe to a handful of channels and Echo
    /// apps with per-model channels to a few dozen, so 300 leaves ample room while bounding
    /// what one unauthenticated socket can make the server hold (about 520 B of registry state
    /// per subscription, so ~150 KB per socket).
    pub max_subscriptions_per_connection: usize,
    /// Subscribe messages a connection may send per second, beyond a burst as large as
    /// `max_subscriptions_per_connection` (pusher-js resubscribes every channel at once after
    /// a reconnect); 0 means unlimited.
    pub subscriptions_per_second: u32,
    /// Where the app's webhooks go; none by default.
    pub webhooks: Vec<WebhookTarget>,
    /// Events the HTTP API accepts per second (a batch counts each event); over it: 429.
    /// `None` means unlimited. In a cluster the limit holds for the cluster.
    pub max_backend_events_per_second: Option<u32>,
    /// HTTP API reads (channels, channel, users) per second; over it: 429. `None`: unlimited.
    pub max_read_requests_per_second: Option<u32>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            host: "0.0.0.0".to_string(),
            port: 6001,
            activity_timeout: Duration::from_secs(120),
            pong_timeout: Duration::from_secs(30),
            max_message_bytes: 256 * 1024,
            outbox_limit_bytes: 1024 * 1024,
            write_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
            http_timeout: Duration::from_secs(10),
            max_http_connections: 1024,
            max_connections_per_ip: None,
            trusted_proxies: Vec::new(),
            metrics_host: "0.0.0.0".to_string(),
            metrics_port: 9601,
            tls_cert: None,
            tls_key: None,
            drain: Duration::from_secs(10),
            console_token: None,
        }
    }
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            id: "1".to_string(),
            key: "app-key".to_string(),
            secret: "app-secret".to_string(),
            enabled: true,
            client_events: true,
            max_connections: None,
            client_events_per_second: 10,
            max_presence_members: 100,
            max_presence_user_info_bytes: limits::MAX_PRESENCE_USER_INFO_BYTES,
            max_event_payload_bytes: limits::MAX_EVENT_PAYLOAD_BYTES,
            max_event_channels: limits::MAX_EVENT_CHANNELS,
            max_batch_events: limits::MAX_BATCH_EVENTS,
            allowed_origins: Vec::new(),
            require_signin: false,
            signin_timeout: Duration::from_secs(30),
            subscription_count_events: false,
            watchlist_events: true,
            cache_ttl: Duration::from_secs(30 * 60),
            max_subscriptions_per_connection: 300,
            subscriptions_per_second: 50,
            webhooks: Vec::new(),
            max_backend_events_per_second: None,
            max_read_requests_per_second: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerSettings::default(),
            apps: vec![AppConfig::default()],
            cluster: ClusterSettings::default(),
            webhooks: WebhookSettings::default(),
        }
    }
}

/// A configuration problem, naming the setting and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        path: String,
        /// Why, in words.
        reason: String,
    },
    /// The file is not valid TOML, or a value has the wrong type or an unknown name.
    Parse {
        /// The file.
        path: String,
        /// Why, in words.
        reason: String,
    },
    /// A setting has a value that is out of range or inconsistent with another.
    Invalid {
        /// The setting, as the file names it (`apps[0].id`).
        setting: String,
        /// Why, in words.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, reason } => {
                write!(f, "cannot read config file {path}: {reason}")
            }
            ConfigError::Parse { path, reason } => write!(f, "config file {path}: {reason}"),
            ConfigError::Invalid { setting, reason } => {
                write!(f, "invalid setting `{setting}`: {reason}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

fn invalid(setting: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.into(),
        reason: reason.into(),
    }
}

/// Upper bound of every `*_secs` setting but `cache_ttl_secs`: one day. Bounding durations at
/// load time means no `Instant + Duration` computed from a setting can overflow later.
pub const MAX_SECS: u64 = 24 * 60 * 60;
/// Upper bound of `apps[].cache_ttl_secs`: 30 days.
pub const MAX_CACHE_TTL_SECS: u64 = 30 * MAX_SECS;

fn at_most(setting: &str, value: Duration, max_secs: u64) -> Result<(), ConfigError> {
    if value > Duration::from_secs(max_secs) {
        let days = max_secs / MAX_SECS;
        let span = if days == 1 {
            "one day".to_string()
        } else {
            format!("{days} days")
        };
        return Err(invalid(
            setting,
            format!("must be at most {max_secs} seconds ({span})"),
        ));
    }
    Ok(())
}

/// An IP address or CIDR range (`10.0.0.0/8`, `::1/128`, `192.0.2.7`), as listed in
/// `server.trusted_proxies`. An IPv4-mapped IPv6 address (`::ffff:10.1.2.3`) is treated as
/// the IPv4 address it carries, both as a range and when tested with [`IpRange::contains`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    /// The network address, with the bits past `prefix` cleared.
    network: IpAddr,
    /// Leading bits that must match: at most 32 for IPv4, 128 for IPv6.
    prefix: u8,
}

impl IpRange {
    /// Parses `ADDRESS` or `ADDRESS/PREFIX`. Host bits past the prefix are ignored
    /// (`10.1.2.3/8` is `10.0.0.0/8`).
    pub fn parse(s: &str) -> Result<IpRange, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| "not an IP address or CIDR range (like 10.0.0.0/8)".to_string())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    return Err(format!(
                        "the prefix length after `/` must be a number from 0 to {max}"
                    ));
                }
            },
        };
        Ok(IpRange::new(addr, prefix))
    }

    fn new(addr: IpAddr, prefix: u8) -> IpRange {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
                _ => (addr, prefix),
            },
            v4 => (v4, prefix),
        };
        let network = match addr {
            IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) & mask32(prefix)).into()),
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & mask128(prefix)).into()),
        };
        IpRange { network, prefix }
    }

    /// Whether `ip` lies in the range; an IPv4-mapped IPv6 address matches IPv4 ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

/// The file's shape. Every field is optional so that a file states only what it changes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerOverrides,
    #[serde(default)]
    apps: Vec<AppOverrides>,
    #[serde(default)]
    cluster: ClusterOverrides,
    #[serde(default)]
    webhooks: WebhookOverrides,
}

/// `[cluster]` as a file, the environment or flags state it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterOverrides {
    /// `redis://HOST:PORT[/DB]`: with it the server is a node of a cluster.
    pub redis_url: Option<String>,
    /// Replaces the setting of the same name (`prefix`); `None` keeps it.
    pub prefix: Option<String>,
    /// Replaces the setting of the same name (`node_id`); `None` keeps it.
    pub node_id: Option<String>,
}

impl ClusterOverrides {
    fn apply(&self, c: &mut ClusterSettings) {
        if let Some(url) = &self.redis_url {
            c.redis_url = (!url.trim().is_empty()).then(|| url.trim().to_string());
        }
        set(&mut c.prefix, &self.prefix);
        if let Some(id) = &self.node_id {
            c.node_id = (!id.trim().is_empty()).then(|| id.trim().to_string());
        }
    }
}

/// Server settings as a file, the environment or flags state them; `None` leaves a value
/// as it was.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerOverrides {
    /// Replaces the setting of the same name (`host`); `None` keeps it.
    pub host: Option<String>,
    /// Replaces the setting of the same name (`port`); `None` keeps it.
    pub port: Option<u16>,
    /// Replaces the setting of the same name (`activity_timeout_secs`); `None` keeps it.
    pub activity_timeout_secs: Option<u64>,
    /// Replaces the setting of the same name (`pong_timeout_secs`); `None` keeps it.
    pub pong_timeout_secs: Option<u64>,
    /// Replaces the setting of the same name (`max_message_bytes`); `None` keeps it.
    pub max_message_bytes: Option<usize>,
    /// Replaces the setting of the same name (`outbox_limit_bytes`); `None` keeps it.
    pub outbox_limit_bytes: Option<usize>,
    /// Replaces the setting of the same name (`write_timeout_secs`); `None` keeps it.
    pub write_timeout_secs: Option<u64>,
    /// Replaces the setting of the same name (`shutdown_timeout_secs`); `None` keeps it.
    pub shutdown_timeout_secs: Option<u64>,
    /// Replaces the setting of the same name (`http_timeout_secs`); `None` keeps it.
    pub http_timeout_secs: Option<u64>,
    /// Replaces the setting of the same name (`max_http_connections`); `None` keeps it.
    pub max_http_connections: Option<usize>,
    /// 0 means unlimited.
    pub max_connections_per_ip: Option<usize>,
    /// IP addresses or CIDR ranges; parsed (and checked) when applied.
    pub trusted_proxies: Option<Vec<String>>,
    /// Replaces the setting of the same name (`metrics_host`); `None` keeps it.
    pub metrics_host: Option<String>,
    /// 0 turns the metrics listener off.
    pub metrics_port: Option<u16>,
    /// Replaces the setting of the same name (`tls_cert`); `None` keeps it.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Replaces the setting of the same name (`drain_secs`); `None` keeps it.
    pub drain_secs: Option<u64>,
    /// Empty turns the console off.
    pub console_token: Option<String>,
}

/// One app's settings as a file, the environment or flags state them; `None` leaves a value
/// as it was. A file's `[[apps]]` entry must give `id`, `key` and `secret`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppOverrides {
    /// Replaces the setting of the same name (`id`); `None` keeps it.
    pub id: Option<String>,
    /// Replaces the setting of the same name (`key`); `None` keeps it.
    pub key: Option<String>,
    /// Replaces the setting of the same name (`secret`); `None` keeps it.
    pub secret: Option<String>,
    /// Replaces the setting of the same name (`enabled`); `None` keeps it.
    pub enabled: Option<bool>,
    /// Replaces the setting of the same name (`client_events`); `None` keeps it.
    pub client_events: Option<bool>,
    /// 0 means unlimited.
    pub max_connections: Option<usize>,
    /// Replaces the setting of the same name (`client_events_per_second`); `None` keeps it.
    pub client_events_per_second: Option<u32>,
    /// Replaces the setting of the same name (`max_presence_members`); `None` keeps it.
    pub max_presence_members: Option<usize>,
    /// Replaces the setting of the same name (`max_presence_user_info_bytes`); `None` keeps it.
    pub max_presence_user_info_bytes: Option<usize>,
    /// Replaces the setting of the same name (`max_event_payload_bytes`); `None` keeps it.
    pub max_event_payload_bytes: Option<usize>,
    /// Replaces the setting of the same name (`max_event_channels`); `None` keeps it.
    pub max_event_channels: Option<usize>,
    /// Replaces the setting of the same name (`max_batch_events`); `None` keeps it.
    pub max_batch_events: Option<usize>,
    /// Replaces the setting of the same name (`allowed_origins`); `None` keeps it.
    pub allowed_origins: Option<Vec<String>>,
    /// Replaces the setting of the same name (`require_signin`); `None` keeps it.
    pub require_signin: Option<bool>,
    /// Replaces the setting of the same name (`signin_timeout_secs`); `None` keeps it.
    pub signin_timeout_secs: Option<u64>,
    /// Replaces the setting of the same name (`subscription_count_events`); `None` keeps it.
    pub subscription_count_events: Option<bool>,
    /// Replaces the setting of the same name (`watchlist_events`); `None` keeps it.
    pub watchlist_events: Option<bool>,
    /// Replaces the setting of the same name (`cache_ttl_secs`); `None` keeps it.
    pub cache_ttl_secs: Option<u64>,
    /// Replaces the setting of the same name (`max_subscriptions_per_connection`); `None` keeps it.
    pub max_subscriptions_per_connection: Option<usize>,
    /// 0 means unlimited.
    pub subscriptions_per_second: Option<u32>,
    /// `[[apps.webhooks]]`, or `CRIER_APP_WEBHOOKS` (a JSON array); replaces the app's list.
    pub webhooks: Option<Vec<WebhookEntry>>,
    /// 0 means unlimited.
    pub max_backend_events_per_second: Option<u32>,
    /// 0 means unlimited.
    pub max_read_requests_per_second: Option<u32>,
}

/// Overrides from the environment or the command line: the server, and the first app.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// Server settings.
    pub server: ServerOverrides,
    /// The first app's settings.
    pub app: AppOverrides,
    /// Cluster settings.
    pub cluster: ClusterOverrides,
    /// Webhook settings.
    pub webhooks: WebhookOverrides,
}

fn set<T: Clone>(target: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *target = v.clone();
    }
}

fn set_secs(target: &mut Duration, value: Option<u64>) {
    if let Some(v) = value {
        *target = Duration::from_secs(v);
    }
}

impl ServerOverrides {
    fn apply(&self, s: &mut ServerSettings) -> Result<(), ConfigError> {
        set(&mut s.host, &self.host);
        set(&mut s.port, &self.port);
        set_secs(&mut s.activity_timeout, self.activity_timeout_secs);
        set_secs(&mut s.pong_timeout, self.pong_timeout_secs);
        set(&mut s.max_message_bytes, &self.max_message_bytes);
        set(&mut s.outbox_limit_bytes, &self.outbox_limit_bytes);
        set_secs(&mut s.write_timeout, self.write_timeout_secs);
        set_secs(&mut s.shutdown_timeout, self.shutdown_timeout_secs);
        set_secs(&mut s.http_timeout, self.http_timeout_secs);
        set(&mut s.max_http_connections, &self.max_http_connections);
        if let Some(n) = self.max_connections_per_ip {
            s.max_connections_per_ip = (n > 0).then_some(n);
        }
        if let Some(entries) = &self.trusted_proxies {
            s.trusted_proxies = entries
                .iter()
                .map(|e| e.trim())
                .filter(|e| !e.is_empty())
                .map(|e| {
                    IpRange::parse(e).map_err(|reason| {
                        invalid("server.trusted_proxies", format!("entry {e:?}: {reason}"))
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        set(&mut s.metrics_host, &self.metrics_host);
        set(&mut s.metrics_port, &self.metrics_port);
        if let Some(path) = &self.tls_cert {
            s.tls_cert = (!path.as_os_str().is_empty()).then(|| path.clone());
        }
        if let Some(path) = &self.tls_key {
            s.tls_key = (!path.as_os_str().is_empty()).then(|| path.clone());
        }
        set_secs(&mut s.drain, self.drain_secs);
        if let Some(token) = &self.console_token {
            s.console_token = (!token.is_empty()).then(|| token.clone());
        }
        Ok(())
    }
}

impl AppOverrides {
    /// `index`: the app's place in the list, for naming a bad webhook target.
    fn apply(&self, a: &mut AppConfig, index: usize) -> Result<(), ConfigError> {
        set(&mut a.id, &self.id);
        set(&mut a.key, &self.key);
        set(&mut a.secret, &self.secret);
        set(&mut a.enabled, &self.enabled);
        set(&mut a.client_events, &self.client_events);
        if let Some(n) = self.max_connections {
            a.max_connections = (n > 0).then_some(n);
        }
        set(
            &mut a.client_events_per_second,
            &self.client_events_per_second,
        );
        set(&mut a.max_presence_members, &self.max_presence_members);
        set(
            &mut a.max_presence_user_info_bytes,
            &self.max_presence_user_info_bytes,
        );
        set(
            &mut a.max_event_payload_bytes,
            &self.max_event_payload_bytes,
        );
        set(&mut a.max_event_channels, &self.max_event_channels);
        set(&mut a.max_batch_events, &self.max_batch_events);
        set(&mut a.allowed_origins, &self.allowed_origins);
        set(&mut a.require_signin, &self.require_signin);
        set_secs(&mut a.signin_timeout, self.signin_timeout_secs);
        set(
            &mut a.subscription_count_events,
            &self.subscription_count_events,
        );
        set(&mut a.watchlist_events, &self.watchlist_events);
        set_secs(&mut a.cache_ttl, self.cache_ttl_secs);
        set(
            &mut a.max_subscriptions_per_connection,
            &self.max_subscriptions_per_connection,
        );
        set(
            &mut a.subscriptions_per_second,
            &self.subscriptions_per_second,
        );
        if let Some(entries) = &self.webhooks {
            a.webhooks = entries
                .iter()
                .enumerate()
                .map(|(j, entry)| {
                    entry.check().map_err(|(field, reason)| {
                        invalid(format!("apps[{index}].webhooks[{j}].{field}"), reason)
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(n) = self.max_backend_events_per_second {
            a.max_backend_events_per_second = (n > 0).then_some(n);
        }
        if let Some(n) = self.max_read_requests_per_second {
            a.max_read_requests_per_second = (n > 0).then_some(n);
        }
        Ok(())
    }

    /// A file's app: the defaults, changed by what the entry states.
    fn into_app(self, index: usize) -> Result<AppConfig, String> {
        for (name, value) in [
            ("id", &self.id),
            ("key", &self.key),
            ("secret", &self.secret),
        ] {
            if value.is_none() {
                return Err(format!("apps[{index}].{name} is required"));
            }
        }
        let mut app = AppConfig::default();
        self.apply(&mut app, index).map_err(|e| e.to_string())?;
        Ok(app)
    }
}

impl Config {
    /// Reads the optional file, applies the overrides and validates the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply(overrides)?;
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        Config::from_toml(&text).map_err(|reason| ConfigError::Parse {
            path: shown,
            reason,
        })
    }

    /// Parses the text of a config file (no validation yet; a `trusted_proxies` entry that is
    /// not an address or range is an error already, naming the setting).
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut config = Config::default();
        file.server
            .apply(&mut config.server)
            .map_err(|e| e.to_string())?;
        file.cluster.apply(&mut config.cluster);
        file.webhooks.apply(&mut config.webhooks);
        if !file.apps.is_empty() {
            config.apps = file
                .apps
                .into_iter()
                .enumerate()
                .map(|(i, app)| app.into_app(i))
                .collect::<Result<_, _>>()?;
        }
        Ok(config)
    }

    fn apply(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        o.server.apply(&mut self.server)?;
        o.cluster.apply(&mut self.cluster);
        if self.apps.is_empty() {
            self.apps.push(AppConfig::default());
        }
        o.webhooks.apply(&mut self.webhooks);
        o.app.apply(&mut self.apps[0], 0)
    }

    /// Checks every value; the first problem found is returned, naming its setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        if let Some(url) = &c.redis_url
            && !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("unix://"))
        {
            return Err(invalid(
                "cluster.redis_url",
                format!("{url:?} is not a Redis URL (redis://HOST:PORT[/DB])"),
            ));
        }
        if c.prefix.is_empty() || c.prefix.contains(char::is_whitespace) {
            return Err(invalid(
                "cluster.prefix",
                "must be a non-empty word without spaces",
            ));
        }
        if let Some(id) = &c.node_id
            && (id.len() > 64 || id.contains(char::is_whitespace))
        {
            return Err(invalid(
                "cluster.node_id",
                "must be at most 64 characters, without spaces",
            ));
        }
        self.webhooks
            .check()
            .map_err(|(setting, reason)| invalid(setting, reason))?;
        let s = &self.server;
        if s.host.trim().is_empty() {
            return Err(invalid("server.host", "must not be empty"));
        }
        if s.metrics_host.trim().is_empty() {
            return Err(invalid("server.metrics_host", "must not be empty"));
        }
        match (&s.tls_cert, &s.tls_key) {
            (Some(_), None) => {
                return Err(invalid(
                    "server.tls_key",
                    "must be set with server.tls_cert (a PEM private key)",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "server.tls_cert",
                    "must be set with server.tls_key (a PEM certificate chain)",
                ));
            }
            _ => {}
        }
        if s.activity_timeout.as_secs() == 0 {
            return Err(invalid(
                "server.activity_timeout_secs",
                "must be at least 1 second (pusher-js refuses 0)",
            ));
        }
        if s.pong_timeout.as_millis() == 0 {
            return Err(invalid(
                "server.pong_timeout_secs",
                "must be greater than 0",
            ));
        }
        for (setting, value) in [
            ("server.activity_timeout_secs", s.activity_timeout),
            ("server.pong_timeout_secs", s.pong_timeout),
            ("server.write_timeout_secs", s.write_timeout),
            ("server.shutdown_timeout_secs", s.shutdown_timeout),
            ("server.http_timeout_secs", s.http_timeout),
            ("server.drain_secs", s.drain),
        ] {
            at_most(setting, value, MAX_SECS)?;
        }
        if s.max_message_bytes < 1024 {
            return Err(invalid("server.max_message_bytes", "must be at least 1024"));
        }
        if s.outbox_limit_bytes < 1024 {
            return Err(invalid(
                "server.outbox_limit_bytes",
                "must be at least 1024",
            ));
        }
        if s.write_timeout.as_millis() == 0 {
            return Err(invalid(
                "server.write_timeout_secs",
                "must be greater than 0",
            ));
        }
        if s.http_timeout.is_zero() {
            return Err(invalid(
                "server.http_timeout_secs",
                "must be at least 1 second",
            ));
        }
        if s.max_http_connections == 0 {
            return Err(invalid("server.max_http_connections", "must be at least 1"));
        }
        if self.apps.is_empty() {
            return Err(invalid("apps", "at least one app is needed"));
        }
        let mut ids = HashSet::new();
        let mut keys = HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            let field = |name: &str| format!("apps[{i}].{name}");
            if app.id.is_empty() {
                return Err(invalid(field("id"), "must not be empty"));
            }
            if !app
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    field("id"),
                    "may hold only letters, digits, `-` and `_` (it appears in URLs)",
                ));
            }
            if app.key.is_empty() {
                return Err(invalid(field("key"), "must not be empty"));
            }
            if !app
                .key
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'?' && b != b':')
            {
                return Err(invalid(
                    field("key"),
                    "may not contain spaces, `/`, `?` or `:`",
                ));
            }
            if app.secret.is_empty() {
                return Err(invalid(field("secret"), "must not be empty"));
            }
            if app.max_event_channels == 0 {
                return Err(invalid(field("max_event_channels"), "must be at least 1"));
            }
            if app.max_batch_events == 0 {
                return Err(invalid(field("max_batch_events"), "must be at least 1"));
            }
            if app.max_event_payload_bytes == 0 {
                return Err(invalid(
                    field("max_event_payload_bytes"),
                    "must be at least 1",
                ));
            }
            if app.max_presence_members == 0 {
                return Err(invalid(field("max_presence_members"), "must be at least 1"));
            }
            if app.max_subscriptions_per_connection == 0 {
                return Err(invalid(
                    field("max_subscriptions_per_connection"),
                    "must be at least 1",
                ));
            }
            at_most(&field("signin_timeout_secs"), app.signin_timeout, MAX_SECS)?;
            at_most(&field("cache_ttl_secs"), app.cache_ttl, MAX_CACHE_TTL_SECS)?;
            if app.require_signin && app.signin_timeout.is_zero() {
                return Err(invalid(
                    field("signin_timeout_secs"),
                    "must be at least 1 second",
                ));
            }
            if app.cache_ttl.is_zero() {
                return Err(invalid(
                    field("cache_ttl_secs"),
                    "must be at least 1 second",
                ));
            }
            if !ids.insert(app.id.as_str()) {
                return Err(invalid(
                    field("id"),
                    format!("app id {:?} is used twice", app.id),
                ));
            }
            if !keys.insert(app.key.as_str()) {
                return Err(invalid(
                    field("key"),
                    format!("app key {:?} is used twice", app.key),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_has_the_builtin_app() {
        let c = Config::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.apps[0].id, "1");
        assert_eq!(c.apps[0].key, "app-key");
        assert_eq!(c.apps[0].secret, "app-secret");
        assert_eq!(c.server.port, 6001);
    }

    #[test]
    fn file_apps_replace_the_default_app() {
        let c = Config::from_toml(
            "[server]\nport = 7000\n[[apps]]\nid = \"9\"\nkey = \"k\"\nsecret = \"s\"\nclient_events = false\nmax_connections = 3\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.server.port, 7000);
        assert_eq!(c.apps.len(), 1);
        assert_eq!(c.apps[0].id, "9");
        assert!(!c.apps[0].client_events);
        assert_eq!(c.apps[0].max_connections, Some(3));
    }

    #[test]
    fn file_apps_need_credentials() {
        let err = Config::from_toml("[[apps]]\nid = \"9\"\nkey = \"k\"\n")
            .err()
            .unwrap_or_default();
        assert_eq!(err, "apps[0].secret is required");
    }

    #[test]
    fn unknown_field_is_a_parse_error_naming_it() {
        let err = Config::from_toml("[server]\nprot = 1\n")
            .err()
            .unwrap_or_default();
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn wrong_type_is_a_parse_error() {
        let err = Config::from_toml("[server]\nport = \"x\"\n")
            .err()
            .unwrap_or_default();
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn each_bad_value_names_its_setting() {
        type Breaker = fn(&mut Config);
        let cases: Vec<(Breaker, &str)> = vec![
            (
                |c| c.server.activity_timeout = Duration::ZERO,
                "server.activity_timeout_secs",
            ),
            (
                |c| c.server.max_message_bytes = 10,
                "server.max_message_bytes",
            ),
            (
                |c| c.server.outbox_limit_bytes = 10,
                "server.outbox_limit_bytes",
            ),
            (|c| c.apps[0].id = String::new(), "apps[0].id"),
            (|c| c.apps[0].id = "a/b".into(), "apps[0].id"),
            (|c| c.apps[0].key = String::new(), "apps[0].key"),
            (|c| c.apps[0].secret = String::new(), "apps[0].secret"),
            (
                |c| c.apps[0].max_event_channels = 0,
                "apps[0].max_event_channels",
            ),
            (
                |c| {
                    let second = c.apps[0].clone();
                    c.apps.push(second);
                },
                "apps[1].id",
            ),
        ];
        for (breaker, setting) in cases {
            let mut c = Config::default();
            breaker(&mut c);
            match c.validate() {
                Err(ConfigError::Invalid { setting: s, .. }) => assert_eq!(s, setting),
                other => panic!("expected an error for {setting}, got {other:?}"),
            }
        }
    }

    #[test]
    fn webhook_targets_come_from_the_file_and_bad_ones_name_their_setting() {
        let c = Config::from_toml(
            r#"
            [webhooks]
            delay_ms = 500
            [[apps]]
            id = "a"
            key = "k"
            secret = "s"
            [[apps.webhooks]]
            url = "https://backend.example/pusher/webhook"
            event_types = ["channel_occupied", "channel_vacated"]
            channel_prefix = "presence-"
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.webhooks.delay, Duration::from_millis(500));
        let target = &c.apps[0].webhooks[0];
        assert_eq!(target.url, "https://backend.example/pusher/webhook");
        assert_eq!(target.channel_prefix.as_deref(), Some("presence-"));
        let bad = Config::from_toml(
            r#"
            [[apps]]
            id = "a"
            key = "k"
            secret = "s"
            [[apps.webhooks]]
            url = "https://backend.example/"
            event_types = ["channel_opened"]
            "#,
        )
        .expect_err("unknown event type");
        assert!(bad.contains("apps[0].webhooks[0].event_types"), "{bad}");
        assert!(bad.contains("channel_opened"), "{bad}");
        let bad = Config::from_toml(
            "[[apps]]\nid = \"a\"\nkey = \"k\"\nsecret = \"s\"\n[[apps.webhooks]]\nurl = \"ftp://x/\"\n",
        )
        .expect_err("not http");
        assert!(bad.contains("apps[0].webhooks[0].url"), "{bad}");
    }

    #[test]
    fn overrides_apply_to_the_first_app_and_server() {
        let o = Overrides {
            server: ServerOverrides {
                port: Some(0),
                ..ServerOverrides::default()
            },
            app: AppOverrides {
                key: Some("other".into()),
                max_connections: Some(0),
                ..AppOverrides::default()
            },
            cluster: ClusterOverrides {
                redis_url: Some("redis://127.0.0.1:6390".into()),
                prefix: Some("blue".into()),
                node_id: Some(" ".into()),
            },
            ..Overrides::default()
        };
        let c = Config::load(None, &o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.server.port, 0);
        assert_eq!(c.apps[0].key, "other");
        assert_eq!(c.apps[0].max_connections, None);
        assert_eq!(
            c.cluster.redis_url.as_deref(),
            Some("redis://127.0.0.1:6390")
        );
        assert_eq!(c.cluster.prefix, "blue");
        assert_eq!(c.cluster.node_id, None, "blank means random");
    }

    #[test]
    fn cluster_settings_come_from_the_file_and_are_checked() {
        let c = Config::from_toml(
            "[cluster]\nredis_url = \"redis://10.0.0.5:6379/2\"\nprefix = \"green\"\nnode_id = \"web-1\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.cluster.redis_url.as_deref(),
            Some("redis://10.0.0.5:6379/2")
        );
        assert_eq!(c.cluster.node_id.as_deref(), Some("web-1"));
        assert!(c.validate().is_ok());
        assert!(
            Config::default().cluster.redis_url.is_none(),
            "single node by default"
        );
        for (text, setting) in [
            (
                "[cluster]\nredis_url = \"localhost:6379\"\n",
                "cluster.redis_url",
            ),
            ("[cluster]\nprefix = \"a b\"\n", "cluster.prefix"),
            ("[cluster]\nnode_id = \"has space\"\n", "cluster.node_id"),
        ] {
            let c = Config::from_toml(text).unwrap_or_else(|e| panic!("{e}"));
            match c.validate() {
                Err(ConfigError::Invalid { setting: s, .. }) => assert_eq!(s, setting),
                other => panic!("expected an error for {setting}, got {other:?}"),
            }
        }
    }

    #[test]
    fn new_settings_have_their_defaults() {
        let c = Config::default();
        assert_eq!(c.server.http_timeout, Duration::from_secs(10));
        assert_eq!(c.server.max_http_connections, 1024);
        assert_eq!(c.server.max_connections_per_ip, None);
        assert!(c.server.trusted_proxies.is_empty());
        assert_eq!(c.apps[0].max_subscriptions_per_connection, 300);
        assert_eq!(c.apps[0].subscriptions_per_second, 50);
    }

    #[test]
    fn new_settings_come_from_the_file() {
        let c = Config::from_toml(
            "[server]\nhttp_timeout_secs = 3\nmax_http_connections = 7\nmax_connections_per_ip = 5\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n[[apps]]\nid = \"9\"\nkey = \"k\"\nsecret = \"s\"\nmax_subscriptions_per_connection = 20\nsubscriptions_per_second = 0\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.server.http_timeout, Duration::from_secs(3));
        assert_eq!(c.server.max_http_connections, 7);
        assert_eq!(c.server.max_connections_per_ip, Some(5));
        assert_eq!(
            c.server.trusted_proxies,
            vec![
                IpRange::parse("10.0.0.0/8").unwrap_or_else(|e| panic!("{e}")),
                IpRange::parse("::1/128").unwrap_or_else(|e| panic!("{e}")),
            ]
        );
        assert_eq!(c.apps[0].max_subscriptions_per_connection, 20);
        assert_eq!(c.apps[0].subscriptions_per_second, 0);
        let off = Config::from_toml("[server]\nmax_connections_per_ip = 0\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(off.server.max_connections_per_ip, None);
    }

    #[test]
    fn new_settings_are_validated() {
        type Breaker = fn(&mut Config);
        let cases: Vec<(Breaker, &str)> = vec![
            (
                |c| c.server.http_timeout = Duration::ZERO,
                "server.http_timeout_secs",
            ),
            (
                |c| c.server.max_http_connections = 0,
                "server.max_http_connections",
            ),
            (
                |c| c.apps[0].max_subscriptions_per_connection = 0,
                "apps[0].max_subscriptions_per_connection",
            ),
        ];
        for (breaker, setting) in cases {
            let mut c = Config::default();
            breaker(&mut c);
            match c.validate() {
                Err(ConfigError::Invalid { setting: s, .. }) => assert_eq!(s, setting),
                other => panic!("expected an error for {setting}, got {other:?}"),
            }
        }
    }

    #[test]
    fn every_duration_setting_has_an_upper_bound() {
        let day = Duration::from_secs(MAX_SECS);
        let over = Duration::from_secs(MAX_SECS + 1);
        type Setter = fn(&mut Config, Duration);
        let cases: Vec<(Setter, &str, Duration)> = vec![
            (
                |c, d| c.server.activity_timeout = d,
                "server.activity_timeout_secs",
                day,
            ),
            (
                |c, d| c.server.pong_timeout = d,
                "server.pong_timeout_secs",
                day,
            ),
            (
                |c, d| c.server.write_timeout = d,
                "server.write_timeout_secs",
                day,
            ),
            (
                |c, d| c.server.shutdown_timeout = d,
                "server.shutdown_timeout_secs",
                day,
            ),
            (
                |c, d| c.server.http_timeout = d,
                "server.http_timeout_secs",
                day,
            ),
            (
                |c, d| c.apps[0].signin_timeout = d,
                "apps[0].signin_timeout_secs",
                day,
            ),
            (
                |c, d| c.apps[0].cache_ttl = d,
                "apps[0].cache_ttl_secs",
                Duration::from_secs(MAX_CACHE_TTL_SECS),
            ),
        ];
        for (setter, setting, max) in cases {
            let mut c = Config::default();
            setter(&mut c, max);
            assert!(
                c.validate().is_ok(),
                "{setting} = its bound must be accepted"
            );
            let bigger = if max == day {
                over
            } else {
                max + Duration::from_secs(1)
            };
            setter(&mut c, bigger);
            match c.validate() {
                Err(ConfigError::Invalid { setting: s, reason }) => {
                    assert_eq!(s, setting);
                    assert!(reason.contains(&max.as_secs().to_string()), "{reason}");
                }
                other => panic!("expected an error for {setting}, got {other:?}"),
            }
        }
    }

    #[test]
    fn largest_u64_duration_is_rejected_not_a_panic() {
        let o = Overrides {
            server: ServerOverrides {
                write_timeout_secs: Some(u64::MAX),
                ..ServerOverrides::default()
            },
            ..Overrides::default()
        };
        match Config::load(None, &o) {
            Err(ConfigError::Invalid { setting, reason }) => {
                assert_eq!(setting, "server.write_timeout_secs");
                assert!(reason.contains("86400"), "{reason}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn range(s: &str) -> IpRange {
        IpRange::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn ip_range_parses_addresses_and_cidr_ranges() {
        assert_eq!(range("10.1.2.3").to_string(), "10.1.2.3/32");
        assert_eq!(range("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(range("10.9.9.9/8"), range("10.0.0.0/8"));
        assert_eq!(range(" 192.168.0.0/16 ").to_string(), "192.168.0.0/16");
        assert_eq!(range("::1").to_string(), "::1/128");
        assert_eq!(range("::1/128"), range("::1"));
        assert_eq!(range("fd00::/8").to_string(), "fd00::/8");
        assert_eq!(range("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(range("::ffff:10.0.0.0/104"), range("10.0.0.0/8"));
    }

    #[test]
    fn ip_range_rejects_bad_entries() {
        for bad in [
            "",
            "nonsense",
            "10.0.0",
            "999.1.1.1",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/x",
            "::1/129",
            "10.0.0.0/8/8",
            "example.com",
        ] {
            assert!(IpRange::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn ip_range_contains_v4_v6_and_v4_mapped_addresses() {
        let ten = range("10.0.0.0/8");
        assert!(ten.contains(ip("10.1.2.3")));
        assert!(ten.contains(ip("10.255.255.255")));
        assert!(!ten.contains(ip("11.0.0.0")));
        assert!(
            ten.contains(ip("::ffff:10.1.2.3")),
            "v4-mapped v6 matches a v4 range"
        );
        assert!(!ten.contains(ip("::ffff:11.1.2.3")));
        assert!(!ten.contains(ip("::1")));
        let one = range("192.0.2.7");
        assert!(one.contains(ip("192.0.2.7")));
        assert!(!one.contains(ip("192.0.2.8")));
        let all = range("0.0.0.0/0");
        assert!(all.contains(ip("203.0.113.9")));
        assert!(!all.contains(ip("2001:db8::1")));
        let loopback6 = range("::1/128");
        assert!(loopback6.contains(ip("::1")));
        assert!(!loopback6.contains(ip("::2")));
        assert!(!loopback6.contains(ip("127.0.0.1")));
        let ula = range("fd00::/8");
        assert!(ula.contains(ip("fd12:3456::1")));
        assert!(!ula.contains(ip("fe80::1")));
        assert!(range("::/0").contains(ip("2001:db8::1")));
        let mapped = range("::ffff:10.1.2.3");
        assert!(mapped.contains(ip("10.1.2.3")));
        assert!(mapped.contains(ip("::ffff:10.1.2.3")));
    }

    #[test]
    fn bad_trusted_proxy_names_the_setting_and_the_entry() {
        let o = Overrides {
            server: ServerOverrides {
                trusted_proxies: Some(vec!["10.0.0.1".into(), "10.0.0.0/99".into()]),
                ..ServerOverrides::default()
            },
            ..Overrides::default()
        };
        match Config::load(None, &o) {
            Err(ConfigError::Invalid { setting, reason }) => {
                assert_eq!(setting, "server.trusted_proxies");
                assert!(reason.contains("10.0.0.0/99"), "{reason}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
        let err = Config::from_toml("[server]\ntrusted_proxies = [\"bogus\"]\n")
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("server.trusted_proxies") && err.contains("bogus"),
            "{err}"
        );
    }
}
