//! The `crier` binary: read the configuration, bind, serve until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use crier::config::{AppOverrides, ServerOverrides};
use crier::{Config, Overrides};

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
                ..AppOverrides::default()
            },
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CRIER_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::load(cli.config.as_deref(), &cli.overrides()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("crier: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("crier: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crier: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> std::io::Result<()> {
    let addr = format!("{}:{}", config.server.host, config.server.port);
    let listener = listen(&addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    let first = &config.apps[0];
    println!(
        "crier listening on {local} (app id {}, key {}; {} app(s)); WebSocket ws://{local}/app/{}",
        first.id,
        first.key,
        config.apps.len(),
        first.key
    );
    crier::serve(listener, config, shutdown_signal()).await?;
    println!("crier stopped");
    Ok(())
}

/// Pending connections the kernel queues for accept. Tokio's default of 128 drops SYNs when
/// hundreds of clients connect at once (every pusher-js client reconnects together after a
/// restart), and a dropped SYN costs the client a 1 s retransmit.
const LISTEN_BACKLOG: u32 = 4096;

async fn listen(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let resolved = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    let socket = if resolved.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(resolved)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
