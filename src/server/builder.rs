//! Crier inside another program: [`Server::builder`] takes the settings the configuration
//! file takes, starts the server on the program's runtime (WebSocket and HTTP API, exactly as
//! the binary serves them) and hands out [`Broadcaster`]s that publish in-process.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use crier::{AppConfig, Server};
//!
//! let server = Server::builder()
//!     .host("127.0.0.1")
//!     .port(6001)
//!     .app(AppConfig { id: "1".into(), key: "app-key".into(), secret: "app-secret".into(), ..AppConfig::default() })
//!     .start()
//!     .await?;
//! server.broadcaster().channel("orders").emit("OrderShipped", &serde_json::json!({"id": 1})).await?;
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Control, Started, serve_inner, tls};
use crate::apps::AppStore;
use crate::broadcast::Broadcaster;
use crate::broadcast::embedded::Embedded;
use crate::config::{AppConfig, Config, ConfigError};

/// The embedded server's entry point.
///
/// ```no_run
/// # async fn ex() -> Result<(), Box<dyn std::error::Error>> {
/// let crier = crier::Server::builder().port(0).start().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Settings as `Config::default()` has them (one default app, port 6001), to adjust.
    ///
    /// ```no_run
    /// # async fn ex() -> Result<(), Box<dyn std::error::Error>> {
    /// let crier = crier::Server::builder().host("127.0.0.1").port(6001).start().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            config: Config::default(),
            custom_apps: false,
        }
    }
}

/// Settings for an embedded server; [`ServerBuilder::start`] checks them as the binary checks
/// its configuration file.
///
/// ```no_run
/// # async fn ex() -> Result<(), Box<dyn std::error::Error>> {
/// let crier = crier::Server::builder().port(0).metrics_port(0).console_token("secret").start().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ServerBuilder {
    config: Config,
    /// Whether [`ServerBuilder::app`] has replaced the default app yet.
    custom_apps: bool,
}

/// Why an embedded server did not start.
///
/// ```no_run
/// # async fn ex() -> Result<(), Box<dyn std::error::Error>> {
/// match crier::Server::builder().port(6001).start().await {
///     Ok(_server) => {}
///     Err(crier::StartError::Io(e)) => eprintln!("cannot listen: {e}"),
///     Err(e) => return Err(e.into()),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub enum StartError {
    /// A setting is wrong; the error names it.
    Config(ConfigError),
    /// The address cannot be listened on, or TLS files cannot be used.
    Io(std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl ServerBuilder {
    /// Every setting at once, as the configuration file states them.
    ///
    /// ```no_run
    /// # async fn ex() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = crier::Config::load(Some(std::path::Path::new("crier.toml")), &crier::Overrides::default())?;
    /// let crier = crier::Server::builder().config(config).start().await?;
    /// # Ok(()) }
    /// ```
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self.custom_apps = true;
        self
    }

    /// The address to listen on (default `0.0.0.0`).
    ///
    /// ```no_run
    /// # async fn ex() -> Result<(), Box<dyn std::error::Error>> {
    /// let crier = crier::Server::builder().host("127.0.0.1").start().await?;
    /// # Ok(()) }
    /// ```
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.config.server.host = host.into();
        self
    }

    /// The port to listen on (default 6001; 0 picks a free one, see
    /// [`RunningServer::local_addr`]).
    ///
    /// ```no_run
    /// # async fn ex() -> Result<(), Box<dyn std::error::Error>> {
    /// let crier = crier::Server::builder().port(0).start().await?;
    /// println!("listening on {}", crier.local_addr());
    /// # Ok(()) }
    /// ```
    pub fn port(mut self, port: u16) -> Self {
        self.config.server.port = port;
        self
    }

    /// Hosts `app`; the first call replaces the default app, later calls add more.
    ///
    /// ```no_run
    /// # async fn ex() -> Result<(), Box<dyn std::error::Error>> {
    /// use crier::AppConfig;
    /// let crier = crier::Server::builder()
    ///     .app(AppConfig { id: "1".into(), key: "key-1".into(), secret: "secret-1".into(), ..AppConfig::default() })
    ///     .app(AppConfig { id: "2".into(), key: "key-2".into(), secret: "secret-2".into(), ..AppConfig::default() })
    ///     .start().await?;
    /// # Ok(()) }
    /// ```
    pub fn app(mut self, app: AppConfig) -> Self {
        if !self.custom_apps {
            self.config.apps.clear();
            self.custom_apps = true;
        }
        self.config.apps.push(app);
        self
    }

    /// Joins the nodes of a cluster through Redis (`redis://HOST:PORT`).
    ///
    /// ```no_run
    /// # async fn ex() -> Result<(), Box<dyn std::error::Error>> {
    /// let node = crier::Server::builder().redis_url("redis://127.0.0.1:6379").start().await?;
    /// # Ok(()) }
    /// ```
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.config.cluster.redis_url = Some(url.into());
        self
    }

    /// Turns on the debug console at `/console`, which asks for `token`.
    ///
    /// ```no_run
    /// # async fn ex() -> Result<(), Box<dyn std::error::Error>> {
    /// let crier = crier::Server::builder().console_token("secret").start().await?; // /console
    /// # Ok(()) }
    /// ```
    pub fn console_token(mut self, token: impl Into<String>) -> Self {
        self.config.server.console_token = Some(token.into());
        self
    }

    /// The metrics listener's port (default 9601; 0 turns it off).
    ///
    /// ```no_run
    /// # async fn ex() -> Result<(), Box<dyn std::error::Error>> {
    /// let crier = crier::Server::builder().metrics_port(0).start().await?; // no /metrics listener
    /// # Ok(()) }
    /// ```
    pub fn metrics_port(mut self, port: u16) -> Self {
        self.config.server.metrics_port = port;
        self
    }

    /// Checks the settings, listens, and serves on the current Tokio runtime until
    /// [`RunningServer::shutdown`] (or the handle is dropped).
    ///
    /// ```no_run
    /// # async fn ex() -> Result<(), Box<dyn std::error::Error>> {
    /// let crier = crier::Server::builder().start().await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(self) -> Result<RunningServer, StartError> {
        let config = self.config;
        config.validate().map_err(StartError::Config)?;
        let tls = tls::from_settings(&config.server).map_err(|e| {
            StartError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
        })?;
        let listener = super::listen(&config.server.host, config.server.port)
            .await
            .map_err(StartError::Io)?;
        let local_addr = listener.local_addr().map_err(StartError::Io)?;
        let first_app = config
            .apps
            .first()
            .map(|a| a.id.clone())
            .unwrap_or_default();
        let (controls, stops) = mpsc::channel(2);
        let (started_tx, started_rx) = oneshot::channel();
        let task = tokio::spawn(serve_inner(listener, config, tls, stops, Some(started_tx)));
        let started: Started = match started_rx.await {
            Ok(started) => started,
            Err(_) => {
                return Err(StartError::Io(match task.await {
                    Ok(Err(e)) => e,
                    _ => std::io::Error::other("the server stopped while starting"),
                }));
            }
        };
        Ok(RunningServer {
            local_addr,
            apps: started.apps,
            socket_node: started.socket_node,
            first_app,
            controls,
            task: Some(task),
        })
    }
}

/// A running embedded server. Dropping it stops the server at once (as
/// [`RunningServer::shutdown`] without the wait).
///
/// ```no_run
/// # async fn ex(server: crier::RunningServer) -> Result<(), Box<dyn std::error::Error>> {
/// let b = server.broadcaster();
/// server.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    apps: AppStore,
    socket_node: u32,
    first_app: String,
    controls: mpsc::Sender<Control>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    /// Where it listens (the port is the real one when 0 was asked for).
    ///
    /// ```no_run
    /// # async fn ex(server: crier::RunningServer) -> Result<(), Box<dyn std::error::Error>> {
    /// println!("ws://{}/app/app-key", server.local_addr());
    /// # Ok(()) }
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Broadcasts to the first app's clients, in-process.
    ///
    /// ```no_run
    /// # async fn ex(server: crier::RunningServer) -> Result<(), Box<dyn std::error::Error>> {
    /// server.broadcaster().channel("orders").emit("E", &1).await?;
    /// # Ok(()) }
    /// ```
    pub fn broadcaster(&self) -> Broadcaster {
        Broadcaster::embedded(Embedded::new(
            self.apps.clone(),
            &self.first_app,
            self.socket_node,
        ))
    }

    /// Broadcasts to the clients of the app `app_id`; `None` when it is not hosted.
    ///
    /// ```no_run
    /// # async fn ex(server: crier::RunningServer) -> Result<(), Box<dyn std::error::Error>> {
    /// if let Some(b) = server.broadcaster_for("2") {
    ///     b.channel("orders").emit("E", &1).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn broadcaster_for(&self, app_id: &str) -> Option<Broadcaster> {
        self.apps.by_id(app_id).map(|_| {
            Broadcaster::embedded(Embedded::new(self.apps.clone(), app_id, self.socket_node))
        })
    }

    /// Serves these apps from now on (as SIGHUP does for the binary).
    ///
    /// ```no_run
    /// # async fn ex(server: crier::RunningServer) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut config = crier::Config::default();
    /// config.apps[0].max_connections = Some(1000);
    /// server.reload(config).await?;
    /// # Ok(()) }
    /// ```
    pub async fn reload(&self, config: Config) -> Result<(), ConfigError> {
        config.validate()?;
        let _ = self.controls.send(Control::Reload(Box::new(config))).await;
        Ok(())
    }

    /// Closes every connection (pusher-js reconnects elsewhere on 4200) and waits for the
    /// server to finish.
    ///
    /// ```no_run
    /// # async fn ex(server: crier::RunningServer) -> Result<(), Box<dyn std::error::Error>> {
    /// server.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.stop(Control::Now).await
    }

    /// Closes connections in waves over `server.drain_secs`, then finishes (as SIGTERM does
    /// for the binary).
    ///
    /// ```no_run
    /// # async fn ex(server: crier::RunningServer) -> Result<(), Box<dyn std::error::Error>> {
    /// server.drain().await?; // closes connections over server.drain_secs
    /// # Ok(()) }
    /// ```
    pub async fn drain(mut self) -> std::io::Result<()> {
        self.stop(Control::Drain).await
    }

    async fn stop(&mut self, how: Control) -> std::io::Result<()> {
        let _ = self.controls.send(how).await;
        match self.task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()))),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if self.task.is_some() {
            let _ = self.controls.try_send(Control::Now);
        }
    }
}
