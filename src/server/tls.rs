//! TLS termination: the certificate chain and key from `server.tls_cert` / `server.tls_key`,
//! held so that a SIGHUP can swap them while the server runs. A handshake takes the
//! configuration current when its connection was accepted; connections already open keep
//! the session they negotiated, so a reload never drops anyone.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

/// Why the certificate or key could not be used; the message names the setting at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The server's TLS configuration and the files it came from.
#[derive(Debug)]
pub struct TlsCertificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsCertificates {
    /// Reads both files; any problem is a start failure, reported with the setting's name.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<TlsCertificates>, TlsError> {
        let config = build_config(cert_path, key_path)?;
        Ok(Arc::new(TlsCertificates {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(config),
        }))
    }

    /// The configuration new handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().clone()
    }

    /// Re-reads both files. On failure the certificate in use stays, so a half-written file
    /// (a renewal in progress) cannot take the server off the air.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build_config(&self.cert_path, &self.key_path)?;
        *self.current.write() = config;
        Ok(())
    }

    /// The certificate file, re-read on SIGHUP.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }
}

fn build_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_chain(cert_path)?;
    let key = read_key(key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("server.tls_cert: TLS setup failed: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsError(format!(
                "server.tls_key: {} cannot be used with the certificate in {}: {e}",
                key_path.display(),
                cert_path.display()
            ))
        })?;
    // Only HTTP/1.1 is served: a client offering h2 must not be told it may use it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display();
    let cannot = |e: pem::Error| TlsError(format!("server.tls_cert: cannot read {shown}: {e}"));
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(cannot)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(cannot)?;
    if chain.is_empty() {
        return Err(TlsError(format!(
            "server.tls_cert: no certificate found in {shown} (expected PEM \"BEGIN CERTIFICATE\")"
        )));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let shown = path.display();
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError(format!(
            "server.tls_key: no private key found in {shown} (expected PEM PKCS#8, PKCS#1 or SEC1)"
        )),
        e => TlsError(format!("server.tls_key: cannot read {shown}: {e}")),
    })
}

/// Listens for SIGHUP and reloads the certificate on each one, until `stop` turns true.
///
/// The handler is installed before this returns, so a SIGHUP sent once the server is up
/// cannot reach the default action (which ends the process). Any other configuration that
/// should also reload on SIGHUP belongs in this loop, next to the certificate.
pub fn reload_on_sighup(
    tls: Arc<TlsCertificates>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(async move {
        loop {
            tokio::select! {
                received = hangups.recv() => {
                    if received.is_none() {
                        return;
                    }
                    match tls.reload() {
                        Ok(()) => tracing::info!(
                            "TLS certificate reloaded from {}",
                            tls.cert_path().display()
                        ),
                        Err(e) => tracing::warn!("TLS certificate not reloaded, keeping the one in use: {e}"),
                    }
                }
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    })
}

/// The certificates `settings` name, or `None` when TLS is off.
pub fn from_settings(
    settings: &crate::config::ServerSettings,
) -> Result<Option<Arc<TlsCertificates>>, TlsError> {
    match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => TlsCertificates::load(cert, key).map(Some),
        _ => Ok(None),
    }
}
