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
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Everything the server needs to run: where to listen, global limits, and the apps it hosts.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub apps: Vec<AppConfig>,
}

/// Settings that apply to the whole server, whatever the app.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub host: String,
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
}

/// One tenant: its credentials and limits.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub id: String,
    pub key: String,
    pub secret: String,
    pub enabled: bool,
    pub client_events: bool,
    /// Concurrent connections; `None` means unlimited.
    pub max_connections: Option<usize>,
    /// Client events a connection may send per second; 0 means unlimited.
    pub client_events_per_second: u32,
    pub max_presence_members: usize,
    pub max_presence_user_info_bytes: usize,
    pub max_event_payload_bytes: usize,
    pub max_event_channels: usize,
    pub max_batch_events: usize,
    /// Origins allowed to open WebSockets; empty or `*` allows every origin. Entries may be
    /// `*.example.com` to allow a domain and its subdomains.
    pub allowed_origins: Vec<String>,
    /// "Authorized connections": a socket must sign in (or subscribe to a private or
    /// presence channel) within `signin_timeout` or it is closed with 4009.
    pub require_signin: bool,
    pub signin_timeout: Duration,
    /// Send `pusher_internal:subscription_count` to non-presence channels' subscribers.
    pub subscription_count_events: bool,
    /// Honour `watchlist` in sign-in `user_data` with online/offline events.
    pub watchlist_events: bool,
    /// How long a cache channel keeps its last event.
    pub cache_ttl: Duration,
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
            max_presence_user_info_bytes: 1024,
            max_event_payload_bytes: 100 * 1024,
            max_event_channels: 100,
            max_batch_events: 10,
            allowed_origins: Vec::new(),
            require_signin: false,
            signin_timeout: Duration::from_secs(30),
            subscription_count_events: false,
            watchlist_events: true,
            cache_ttl: Duration::from_secs(30 * 60),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerSettings::default(),
            apps: vec![AppConfig::default()],
        }
    }
}

/// A configuration problem, naming the setting and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    Read { path: String, reason: String },
    /// The file is not valid TOML, or a value has the wrong type or an unknown name.
    Parse { path: String, reason: String },
    /// A setting has a value that is out of range or inconsistent with another.
    Invalid { setting: String, reason: String },
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

/// The file's shape. Every field is optional so that a file states only what it changes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    apps: Vec<FileApp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    host: Option<String>,
    port: Option<u16>,
    activity_timeout_secs: Option<u64>,
    pong_timeout_secs: Option<u64>,
    max_message_bytes: Option<usize>,
    outbox_limit_bytes: Option<usize>,
    write_timeout_secs: Option<u64>,
    shutdown_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApp {
    id: String,
    key: String,
    secret: String,
    enabled: Option<bool>,
    client_events: Option<bool>,
    max_connections: Option<usize>,
    client_events_per_second: Option<u32>,
    max_presence_members: Option<usize>,
    max_presence_user_info_bytes: Option<usize>,
    max_event_payload_bytes: Option<usize>,
    max_event_channels: Option<usize>,
    max_batch_events: Option<usize>,
    allowed_origins: Option<Vec<String>>,
    require_signin: Option<bool>,
    signin_timeout_secs: Option<u64>,
    subscription_count_events: Option<bool>,
    watchlist_events: Option<bool>,
    cache_ttl_secs: Option<u64>,
}

/// Overrides from the environment or the command line; `None` leaves the value as it was.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub activity_timeout_secs: Option<u64>,
    pub pong_timeout_secs: Option<u64>,
    pub max_message_bytes: Option<usize>,
    pub outbox_limit_bytes: Option<usize>,
    pub write_timeout_secs: Option<u64>,
    pub shutdown_timeout_secs: Option<u64>,
    pub app_id: Option<String>,
    pub app_key: Option<String>,
    pub app_secret: Option<String>,
    pub app_client_events: Option<bool>,
    pub app_max_connections: Option<usize>,
    pub app_client_events_per_second: Option<u32>,
    pub app_max_presence_members: Option<usize>,
    pub app_max_presence_user_info_bytes: Option<usize>,
    pub app_max_event_payload_bytes: Option<usize>,
    pub app_allowed_origins: Option<Vec<String>>,
    pub app_require_signin: Option<bool>,
    pub app_signin_timeout_secs: Option<u64>,
    pub app_subscription_count_events: Option<bool>,
    pub app_watchlist_events: Option<bool>,
    pub app_cache_ttl_secs: Option<u64>,
}

impl Config {
    /// Reads the optional file, applies the overrides and validates the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply(overrides);
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

    /// Parses the text of a config file (no validation yet).
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut config = Config::default();
        let s = &mut config.server;
        let fs = file.server;
        if let Some(v) = fs.host {
            s.host = v;
        }
        if let Some(v) = fs.port {
            s.port = v;
        }
        if let Some(v) = fs.activity_timeout_secs {
            s.activity_timeout = Duration::from_secs(v);
        }
        if let Some(v) = fs.pong_timeout_secs {
            s.pong_timeout = Duration::from_secs(v);
        }
        if let Some(v) = fs.max_message_bytes {
            s.max_message_bytes = v;
        }
        if let Some(v) = fs.outbox_limit_bytes {
            s.outbox_limit_bytes = v;
        }
        if let Some(v) = fs.write_timeout_secs {
            s.write_timeout = Duration::from_secs(v);
        }
        if let Some(v) = fs.shutdown_timeout_secs {
            s.shutdown_timeout = Duration::from_secs(v);
        }
        if !file.apps.is_empty() {
            config.apps = file.apps.into_iter().map(FileApp::into_app).collect();
        }
        Ok(config)
    }

    fn apply(&mut self, o: &Overrides) {
        let s = &mut self.server;
        if let Some(v) = &o.host {
            s.host = v.clone();
        }
        if let Some(v) = o.port {
            s.port = v;
        }
        if let Some(v) = o.activity_timeout_secs {
            s.activity_timeout = Duration::from_secs(v);
        }
        if let Some(v) = o.pong_timeout_secs {
            s.pong_timeout = Duration::from_secs(v);
        }
        if let Some(v) = o.max_message_bytes {
            s.max_message_bytes = v;
        }
        if let Some(v) = o.outbox_limit_bytes {
            s.outbox_limit_bytes = v;
        }
        if let Some(v) = o.write_timeout_secs {
            s.write_timeout = Duration::from_secs(v);
        }
        if let Some(v) = o.shutdown_timeout_secs {
            s.shutdown_timeout = Duration::from_secs(v);
        }
        if self.apps.is_empty() {
            self.apps.push(AppConfig::default());
        }
        let app = &mut self.apps[0];
        if let Some(v) = &o.app_id {
            app.id = v.clone();
        }
        if let Some(v) = &o.app_key {
            app.key = v.clone();
        }
        if let Some(v) = &o.app_secret {
            app.secret = v.clone();
        }
        if let Some(v) = o.app_client_events {
            app.client_events = v;
        }
        if let Some(v) = o.app_max_connections {
            app.max_connections = (v > 0).then_some(v);
        }
        if let Some(v) = o.app_client_events_per_second {
            app.client_events_per_second = v;
        }
        if let Some(v) = o.app_max_presence_members {
            app.max_presence_members = v;
        }
        if let Some(v) = o.app_max_presence_user_info_bytes {
            app.max_presence_user_info_bytes = v;
        }
        if let Some(v) = o.app_max_event_payload_bytes {
            app.max_event_payload_bytes = v;
        }
        if let Some(v) = &o.app_allowed_origins {
            app.allowed_origins = v.clone();
        }
        if let Some(v) = o.app_require_signin {
            app.require_signin = v;
        }
        if let Some(v) = o.app_signin_timeout_secs {
            app.signin_timeout = Duration::from_secs(v);
        }
        if let Some(v) = o.app_subscription_count_events {
            app.subscription_count_events = v;
        }
        if let Some(v) = o.app_watchlist_events {
            app.watchlist_events = v;
        }
        if let Some(v) = o.app_cache_ttl_secs {
            app.cache_ttl = Duration::from_secs(v);
        }
    }

    /// Checks every value; the first problem found is returned, naming its setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.host.trim().is_empty() {
            return Err(invalid("server.host", "must not be empty"));
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

impl FileApp {
    fn into_app(self) -> AppConfig {
        let d = AppConfig::default();
        AppConfig {
            id: self.id,
            key: self.key,
            secret: self.secret,
            enabled: self.enabled.unwrap_or(d.enabled),
            client_events: self.client_events.unwrap_or(d.client_events),
            max_connections: match self.max_connections {
                Some(0) | None => None,
                Some(n) => Some(n),
            },
            client_events_per_second: self
                .client_events_per_second
                .unwrap_or(d.client_events_per_second),
            max_presence_members: self.max_presence_members.unwrap_or(d.max_presence_members),
            max_presence_user_info_bytes: self
                .max_presence_user_info_bytes
                .unwrap_or(d.max_presence_user_info_bytes),
            max_event_payload_bytes: self
                .max_event_payload_bytes
                .unwrap_or(d.max_event_payload_bytes),
            max_event_channels: self.max_event_channels.unwrap_or(d.max_event_channels),
            max_batch_events: self.max_batch_events.unwrap_or(d.max_batch_events),
            allowed_origins: self.allowed_origins.unwrap_or(d.allowed_origins),
            require_signin: self.require_signin.unwrap_or(d.require_signin),
            signin_timeout: self
                .signin_timeout_secs
                .map(Duration::from_secs)
                .unwrap_or(d.signin_timeout),
            subscription_count_events: self
                .subscription_count_events
                .unwrap_or(d.subscription_count_events),
            watchlist_events: self.watchlist_events.unwrap_or(d.watchlist_events),
            cache_ttl: self
                .cache_ttl_secs
                .map(Duration::from_secs)
                .unwrap_or(d.cache_ttl),
        }
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
    fn overrides_apply_to_the_first_app_and_server() {
        let o = Overrides {
            port: Some(0),
            app_key: Some("other".into()),
            app_max_connections: Some(0),
            ..Overrides::default()
        };
        let c = Config::load(None, &o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.server.port, 0);
        assert_eq!(c.apps[0].key, "other");
        assert_eq!(c.apps[0].max_connections, None);
    }
}
