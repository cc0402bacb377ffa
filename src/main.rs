//! The `crier` binary: read the configuration, bind, serve until SIGINT or SIGTERM.

use std::error::Error as _;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use crier::config::{AppOverrides, ClusterOverrides, ServerOverrides};
use crier::config::{EntryList, WebhookOverrides, parse_json_targets};
use crier::server::Control;
use crier::{Config, ConfigError, Overrides};

mod migration;

/// jemalloc with background threads gives memory back after a spike (15,000 half-open
/// connections: RSS back from 296 MB to 16 MB within 8 s, where glibc malloc and mimalloc kept
/// 300-400 MB), and costs less per idle connection than glibc (BENCHMARKS.md, "Allocator").
/// Set for the binary only: an application embedding the library keeps its own allocator.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A Pusher Channels compatible broadcast server.
///
/// Settings come from the config file, then CRIER_* environment variables, then flags.
#[derive(Debug, Parser)]
#[command(name = "crier", version)]
struct Cli {
    /// TOML config file (see crier.example.toml).
    #[arg(long, env = "CRIER_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "CRIER_HOST")]
    host: Option<String>,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "CRIER_PORT")]
    port: Option<u16>,
    /// Seconds of client silence before the server pings.
    #[arg(long, env = "CRIER_ACTIVITY_TIMEOUT")]
    activity_timeout: Option<u64>,
    /// Seconds a pinged client has to answer before it is closed with 4201.
    #[arg(long, env = "CRIER_PONG_TIMEOUT")]
    pong_timeout: Option<u64>,
    /// Largest WebSocket message accepted from a client, in bytes.
    #[arg(long, env = "CRIER_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
    /// Bytes a connection may have queued for sending before it is closed with 4100.
    #[arg(long, env = "CRIER_OUTBOX_LIMIT_BYTES")]
    outbox_limit_bytes: Option<usize>,
    /// Seconds a socket write may make no progress before the connection is dropped.
    #[arg(long, env = "CRIER_WRITE_TIMEOUT")]
    write_timeout: Option<u64>,
    /// Seconds to wait for connections to close on shutdown.
    #[arg(long, env = "CRIER_SHUTDOWN_TIMEOUT")]
    shutdown_timeout: Option<u64>,
    /// Seconds allowed for reading an HTTP request's headers and, separately, its body.
    #[arg(long, env = "CRIER_HTTP_TIMEOUT")]
    http_timeout: Option<u64>,
    /// TCP connections that may be in the HTTP phase at once (before a WebSocket upgrade).
    #[arg(long, env = "CRIER_MAX_HTTP_CONNECTIONS")]
    max_http_connections: Option<usize>,
    /// Concurrent connections from one client address, excess refused with 429 (0 = off).
    #[arg(long, env = "CRIER_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Comma-separated proxy addresses or CIDR ranges whose X-Forwarded-For is believed.
    #[arg(long, env = "CRIER_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Option<Vec<String>>,
    /// Address of the metrics listener (GET /metrics, /up, /ready).
    #[arg(long, env = "CRIER_METRICS_HOST")]
    metrics_host: Option<String>,
    /// Port of the metrics listener (default 9601; 0 = off).
    #[arg(long, env = "CRIER_METRICS_PORT")]
    metrics_port: Option<u16>,
    /// PEM certificate chain: serve wss:// and https:// (with --tls-key; SIGHUP reloads it).
    #[arg(long, env = "CRIER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "CRIER_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Seconds over which SIGTERM closes open connections, in waves (default 10).
    #[arg(long, env = "CRIER_DRAIN_SECS")]
    drain_secs: Option<u64>,
    /// Turns the debug console on at /console, which asks for this token.
    #[arg(long, env = "CRIER_CONSOLE_TOKEN")]
    console_token: Option<String>,
    /// Id of the first (default) app.
    #[arg(long, env = "CRIER_APP_ID")]
    app_id: Option<String>,
    /// Key of the first (default) app.
    #[arg(long, env = "CRIER_APP_KEY")]
    app_key: Option<String>,
    /// Secret of the first (default) app.
    #[arg(long, env = "CRIER_APP_SECRET")]
    app_secret: Option<String>,
    /// Whether the first app accepts client events (true/false).
    #[arg(long, env = "CRIER_APP_CLIENT_EVENTS")]
    app_client_events: Option<bool>,
    /// Connection limit of the first app (0 = unlimited).
    #[arg(long, env = "CRIER_APP_MAX_CONNECTIONS")]
    app_max_connections: Option<usize>,
    /// Client events per second per connection for the first app (0 = unlimited).
    #[arg(long, env = "CRIER_APP_CLIENT_EVENTS_PER_SECOND")]
    app_client_events_per_second: Option<u32>,
    /// Presence member limit of the first app.
    #[arg(long, env = "CRIER_APP_MAX_PRESENCE_MEMBERS")]
    app_max_presence_members: Option<usize>,
    /// Presence user_info size limit of the first app, in bytes.
    #[arg(long, env = "CRIER_APP_MAX_PRESENCE_USER_INFO_BYTES")]
    app_max_presence_user_info_bytes: Option<usize>,
    /// Event data size limit of the first app, in bytes.
    #[arg(long, env = "CRIER_APP_MAX_EVENT_PAYLOAD_BYTES")]
    app_max_event_payload_bytes: Option<usize>,
    /// Comma-separated origins allowed to connect to the first app (empty = all).
    #[arg(long, env = "CRIER_APP_ALLOWED_ORIGINS", value_delimiter = ',')]
    app_allowed_origins: Option<Vec<String>>,
    /// Whether the first app closes connections that do not sign in in time (true/false).
    #[arg(long, env = "CRIER_APP_REQUIRE_SIGNIN")]
    app_require_signin: Option<bool>,
    /// Seconds a connection of the first app has to sign in when sign-in is required.
    #[arg(long, env = "CRIER_APP_SIGNIN_TIMEOUT")]
    app_signin_timeout: Option<u64>,
    /// Whether the first app sends subscription counts to subscribers (true/false).
    #[arg(long, env = "CRIER_APP_SUBSCRIPTION_COUNT_EVENTS")]
    app_subscription_count_events: Option<bool>,
    /// Whether the first app sends watchlist online/offline events (true/false).
    #[arg(long, env = "CRIER_APP_WATCHLIST_EVENTS")]
    app_watchlist_events: Option<bool>,
    /// Seconds a cache channel of the first app keeps its last event.
    #[arg(long, env = "CRIER_APP_CACHE_TTL")]
    app_cache_ttl: Option<u64>,
    /// Redis to join other nodes through (redis://HOST:PORT); none: a single node.
    #[arg(long, env = "CRIER_REDIS_URL")]
    redis_url: Option<String>,
    /// Prefix of this cluster's Redis keys and channels.
    #[arg(long, env = "CRIER_REDIS_PREFIX")]
    redis_prefix: Option<String>,
    /// This node's name in the cluster (random when not set).
    #[arg(long, env = "CRIER_NODE_ID")]
    node_id: Option<String>,
    /// Channels one connection of the first app may be subscribed to at once.
    #[arg(long, env = "CRIER_APP_MAX_SUBSCRIPTIONS_PER_CONNECTION")]
    app_max_subscriptions_per_connection: Option<usize>,
    /// Subscribe messages per second per connection for the first app (0 = unlimited).
    #[arg(long, env = "CRIER_APP_SUBSCRIPTIONS_PER_SECOND")]
    app_subscriptions_per_second: Option<u32>,
    /// HTTP API events per second the first app may publish (0 = unlimited; over it: 429).
    #[arg(long, env = "CRIER_APP_MAX_BACKEND_EVENTS_PER_SECOND")]
    app_max_backend_events_per_second: Option<u32>,
    /// HTTP API read requests per second for the first app (0 = unlimited; over it: 429).
    #[arg(long, env = "CRIER_APP_MAX_READ_REQUESTS_PER_SECOND")]
    app_max_read_requests_per_second: Option<u32>,
    /// The first app's webhook targets: a JSON array of {"url": ..., "event_types": [...]}.
    #[arg(long, env = "CRIER_APP_WEBHOOKS", value_parser = parse_json_targets)]
    app_webhooks: Option<EntryList>,
    /// Milliseconds channel_vacated and member_removed webhooks wait (cancelled by a return).
    #[arg(long, env = "CRIER_WEBHOOK_DELAY_MS")]
    webhook_delay_ms: Option<u64>,
    /// Milliseconds the first event of a webhook request waits for others to join it.
    #[arg(long, env = "CRIER_WEBHOOK_BATCH_WINDOW_MS")]
    webhook_batch_window_ms: Option<u64>,
    /// Milliseconds a webhook receiver has to answer one attempt.
    #[arg(long, env = "CRIER_WEBHOOK_TIMEOUT_MS")]
    webhook_timeout_ms: Option<u64>,
    /// Milliseconds before a failed webhook's first retry (doubling after each failure).
    #[arg(long, env = "CRIER_WEBHOOK_RETRY_FIRST_MS")]
    webhook_retry_first_ms: Option<u64>,
    /// Seconds after its creation a failing webhook is given up.
    #[arg(long, env = "CRIER_WEBHOOK_RETRY_FOR")]
    webhook_retry_for: Option<u64>,
}

impl Cli {
    fn overrides(&self) -> Overrides {
        Overrides {
            server: ServerOverrides {
                host: self.host.clone(),
                port: self.port,
                activity_timeout_secs: self.activity_timeout,
                pong_timeout_secs: self.pong_timeout,
                max_message_bytes: self.max_message_bytes,
                outbox_limit_bytes: self.outbox_limit_bytes,
                write_timeout_secs: self.write_timeout,
                shutdown_timeout_secs: self.shutdown_timeout,
                http_timeout_secs: self.http_timeout,
                max_http_connections: self.max_http_connections,
                max_connections_per_ip: self.max_connections_per_ip,
                trusted_proxies: self.trusted_proxies.clone(),
                metrics_host: self.metrics_host.clone(),
                metrics_port: self.metrics_port,
                tls_cert: self.tls_cert.clone(),
                tls_key: self.tls_key.clone(),
                drain_secs: self.drain_secs,
                console_token: self.console_token.clone(),
            },
            app: AppOverrides {
                id: self.app_id.clone(),
                key: self.app_key.clone(),
                secret: self.app_secret.clone(),
                client_events: self.app_client_events,
                max_connections: self.app_max_connections,
                client_events_per_second: self.app_client_events_per_second,
                max_presence_members: self.app_max_presence_members,
                max_presence_user_info_bytes: self.app_max_presence_user_info_bytes,
                max_event_payload_bytes: self.app_max_event_payload_bytes,
                allowed_origins: self.app_allowed_origins.clone(),
                require_signin: self.app_require_signin,
                signin_timeout_secs: self.app_signin_timeout,
                subscription_count_events: self.app_subscription_count_events,
                watchlist_events: self.app_watchlist_events,
                cache_ttl_secs: self.app_cache_ttl,
                max_subscriptions_per_connection: self.app_max_subscriptions_per_connection,
                subscriptions_per_second: self.app_subscriptions_per_second,
                webhooks: self.app_webhooks.clone().map(|l| l.0),
                max_backend_events_per_second: self.app_max_backend_events_per_second,
                max_read_requests_per_second: self.app_max_read_requests_per_second,
                ..AppOverrides::default()
            },
            webhooks: WebhookOverrides {
                delay_ms: self.webhook_delay_ms,
                batch_window_ms: self.webhook_batch_window_ms,
                timeout_ms: self.webhook_timeout_ms,
                retry_first_ms: self.webhook_retry_first_ms,
                retry_for_secs: self.webhook_retry_for,
                ..WebhookOverrides::default()
            },
            cluster: ClusterOverrides {
                redis_url: self.redis_url.clone(),
                prefix: self.redis_prefix.clone(),
                node_id: self.node_id.clone(),
            },
        }
    }
}

/// Exit status for a bad configuration or a failed start (README, "Configuration").
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return clap_failure(e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return clap_failure(e),
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("CRIER_LOG").unwrap_or_else(|_| "info".into());
    match std::env::var("CRIER_LOG_FORMAT").as_deref() {
        Ok("json") => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        Ok("text") | Err(_) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        Ok(other) => {
            eprintln!("crier: CRIER_LOG_FORMAT={other}: expected one of: text, json");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let mut cli = cli;
    for line in migration::adopt_soketi_env(&mut cli) {
        tracing::info!("{line}");
    }
    let config = match Config::load(cli.config.as_deref(), &cli.overrides()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("crier: {}", describe_config_error(&e, &matches));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("crier: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let file = cli.config.clone();
    let overrides = cli.overrides();
    let reload: Reload = Box::new(move || Config::load(file.as_deref(), &overrides));
    match runtime.block_on(run(config, reload)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Start(message)) => {
            eprintln!("crier: {message}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Serve(e)) => {
            eprintln!("crier: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a command-line error and gives its exit status: clap's own message and status
/// (0 for `--help` and `--version`, 2 otherwise), except that a bad value taken from an
/// environment variable is reported as `VARIABLE=value: reason`.
fn clap_failure(e: clap::Error) -> ExitCode {
    if let Some(message) = env_value_error(&e) {
        eprintln!("crier: {message}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let code = e.exit_code();
    let _ = e.print();
    ExitCode::from(u8::try_from(code).unwrap_or(EXIT_CONFIG))
}

/// `CRIER_PORT=abc: invalid digit found in string` when clap refused a value that came from
/// an environment variable (its flag is not on the command line); `None` otherwise.
fn env_value_error(e: &clap::Error) -> Option<String> {
    if !matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let Some(ContextValue::String(shown)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    // Built, so that each argument renders as clap rendered it in the error.
    let mut command = Cli::command();
    command.build();
    let arg = command.get_arguments().find(|a| a.to_string() == *shown)?;
    let long = arg.get_long()?;
    if flag_on_command_line(long) {
        return None;
    }
    let env = arg.get_env()?;
    let value = std::env::var_os(env)?;
    let reason = match (e.kind(), e.source(), e.get(ContextKind::ValidValue)) {
        (ErrorKind::ValueValidation, Some(source), _) => source.to_string(),
        (_, _, Some(ContextValue::Strings(valid))) => {
            format!("expected one of: {}", valid.join(", "))
        }
        _ => "invalid value".to_string(),
    };
    Some(format!(
        "{}={}: {reason}",
        env.to_string_lossy(),
        value.to_string_lossy()
    ))
}

/// Whether `--long` (as `--long VALUE` or `--long=VALUE`) is among the arguments.
fn flag_on_command_line(long: &str) -> bool {
    let flag = format!("--{long}");
    let with_value = format!("{flag}=");
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a: OsString| {
            let a = a.to_string_lossy();
            a == flag || a.starts_with(&with_value)
        })
}

/// The configuration error, prefixed with the environment variable or flag the bad value came
/// from when it came from one: `CRIER_APP_MAX_PRESENCE_MEMBERS=0: invalid setting
/// `apps[0].max_presence_members`: must be at least 1`.
fn describe_config_error(e: &ConfigError, matches: &ArgMatches) -> String {
    let ConfigError::Invalid { setting, .. } = e else {
        return e.to_string();
    };
    let name = if let Some(rest) = setting.strip_prefix("server.") {
        rest.to_string()
    } else if setting.starts_with("apps[0].webhooks") {
        "app_webhooks".to_string()
    } else if let Some(rest) = setting.strip_prefix("apps[0].") {
        format!("app_{rest}")
    } else if let Some(rest) = setting.strip_prefix("webhooks.") {
        format!("webhook_{rest}")
    } else {
        return e.to_string();
    };
    let id = name.strip_suffix("_secs").unwrap_or(&name);
    let command = Cli::command();
    let Some(arg) = command.get_arguments().find(|a| a.get_id() == id) else {
        return e.to_string();
    };
    match matches.value_source(id) {
        Some(ValueSource::EnvVariable) => {
            let Some(env) = arg.get_env() else {
                return e.to_string();
            };
            let value = std::env::var_os(env).unwrap_or_default();
            format!("{}={}: {e}", env.to_string_lossy(), value.to_string_lossy())
        }
        Some(ValueSource::CommandLine) => {
            let Some(long) = arg.get_long() else {
                return e.to_string();
            };
            let value = matches
                .get_raw(id)
                .map(|values| {
                    values
                        .map(|v| v.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            format!("--{long} {value}: {e}")
        }
        _ => e.to_string(),
    }
}

/// Why the server stopped: it never started (exit 2), or serving failed (exit 1).
enum Failure {
    Start(String),
    Serve(std::io::Error),
}

async fn run(config: Config, reload: Reload) -> Result<(), Failure> {
    let host = config.server.host.as_str();
    let port = config.server.port;
    let shown = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let cannot_listen = |e: std::io::Error| {
        // "Address already in use", not "Address already in use (os error 98)".
        let reason = e.to_string();
        let reason = match reason.rfind(" (os error ") {
            Some(at) if e.raw_os_error().is_some() => reason[..at].to_string(),
            _ => reason,
        };
        Failure::Start(format!("cannot listen on {shown}: {reason}"))
    };
    // Before binding, so that a bad certificate never leaves a port briefly open.
    let tls = crier::server::tls::from_settings(&config.server)
        .map_err(|e| Failure::Start(e.to_string()))?;
    let listener = crier::server::listen(host, port)
        .await
        .map_err(cannot_listen)?;
    let local = listener.local_addr().map_err(cannot_listen)?;
    let (stops, stopped) = tokio::sync::mpsc::channel(2);
    let signals = forward_signals(stops, reload);
    let first = &config.apps[0];
    println!(
        "crier listening on {local} (app id {}, key {}; {} app(s)); WebSocket {}://{local}/app/{}",
        first.id,
        first.key,
        config.apps.len(),
        if tls.is_some() { "wss" } else { "ws" },
        first.key
    );
    tokio::spawn(signals);
    crier::server::serve_with_tls(listener, config, tls, stopped)
        .await
        .map_err(Failure::Serve)?;
    println!("crier stopped");
    Ok(())
}

/// Re-reads the configuration (file, environment, flags) for a SIGHUP.
type Reload = Box<dyn Fn() -> Result<Config, ConfigError> + Send>;

/// SIGTERM starts the paced drain; SIGINT, or a second SIGTERM, closes everything now;
/// SIGHUP re-reads the configuration and hands the server its apps (a bad file keeps the old
/// configuration and logs why).
fn forward_signals(
    controls: tokio::sync::mpsc::Sender<Control>,
    reload: Reload,
) -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed now, before the server says it listens: a signal sent from then on is never
    // met by its default action.
    let listen = |kind: SignalKind, name: &str| match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot listen for {name} ({e})");
            None
        }
    };
    let term = listen(SignalKind::terminate(), "SIGTERM");
    let hangup = listen(SignalKind::hangup(), "SIGHUP");
    let interrupt = listen(SignalKind::interrupt(), "SIGINT");
    handle_signals(controls, reload, term, hangup, interrupt)
}

async fn handle_signals(
    controls: tokio::sync::mpsc::Sender<Control>,
    reload: Reload,
    mut term: Option<tokio::signal::unix::Signal>,
    mut hangup: Option<tokio::signal::unix::Signal>,
    mut interrupt: Option<tokio::signal::unix::Signal>,
) {
    use tokio::signal::unix::Signal;
    async fn next(signal: &mut Option<Signal>) -> Option<()> {
        match signal.as_mut() {
            Some(s) => s.recv().await,
            None => std::future::pending().await,
        }
    }
    let mut draining = false;
    loop {
        let control = tokio::select! {
            Some(()) = next(&mut interrupt) => {
                tracing::info!("SIGINT received: closing connections and shutting down");
                Control::Now
            }
            Some(()) = next(&mut term) => {
                if draining {
                    tracing::info!("SIGTERM received again: closing the remaining connections now");
                    Control::Now
                } else {
                    tracing::info!("SIGTERM received: draining (/ready answers 503, new WebSockets refused)");
                    draining = true;
                    Control::Drain
                }
            }
            Some(()) = next(&mut hangup) => match reload() {
                Ok(config) => {
                    tracing::info!("SIGHUP received: configuration re-read");
                    Control::Reload(Box::new(config))
                }
                Err(e) => {
                    tracing::warn!("SIGHUP received: configuration not reloaded, keeping the one in use: {e}");
                    continue;
                }
            },
        };
        let now = matches!(control, Control::Now);
        if controls.send(control).await.is_err() || now {
            return;
        }
    }
}
