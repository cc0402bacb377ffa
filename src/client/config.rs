//! Where the client sends and as whom: [`ClientConfig`], the `PUSHER_URL` form the official
//! SDKs accept, hosted Pusher's cluster hosts, and the checks that turn any of them into an
//! [`Endpoint`] once, so no request has to wonder whether its base URL makes sense.

use std::fmt;
use std::time::Duration;

use hyper::Uri;
use percent_encoding::percent_decode_str;

use super::error::ClientError;

/// The timeout [`ClientConfig::new`] sets.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as which app a [`Client`](super::Client) sends its requests.
///
/// ```no_run
/// use std::time::Duration;
/// use crier::client::{Client, ClientConfig};
///
/// let mut config = ClientConfig::new("http://127.0.0.1:6001", "1", "app-key", "app-secret");
/// config.timeout = Duration::from_secs(3);
/// let client = Client::new(config)?;
/// # Ok::<(), crier::client::ClientError>(())
/// ```
#[derive(Clone)]
pub struct ClientConfig {
    /// `scheme://host[:port]`: `http://127.0.0.1:6001` or `https://api-mt1.pusher.com`. No
    /// path, query or credentials (a trailing `/` is fine).
    pub base_url: String,
    /// The app's id, as in `/apps/{app_id}/…`.
    pub app_id: String,
    /// The app's key (sent as `auth_key`).
    pub key: String,
    /// The app's secret (signs each request; never sent).
    pub secret: String,
    /// How long one request may take, connecting and reading the whole answer included.
    pub timeout: Duration,
}

impl ClientConfig {
    /// A configuration with the default timeout of 10 s.
    ///
    /// ```no_run
    /// let config = crier::client::ClientConfig::new(
    ///     "https://api-eu.pusher.com",
    ///     "123456",
    ///     "278d425bdf160c739803",
    ///     "7ad3773142a6692b25b8",
    /// );
    /// assert_eq!(config.timeout, std::time::Duration::from_secs(10));
    /// ```
    pub fn new(
        base_url: impl Into<String>,
        app_id: impl Into<String>,
        key: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            app_id: app_id.into(),
            key: key.into(),
            secret: secret.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The secret stays out of logs.
impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("app_id", &self.app_id)
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A checked base URL: `scheme://authority`, without a trailing slash.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    pub(super) origin: String,
    pub(super) https: bool,
}

fn invalid(message: impl Into<String>) -> ClientError {
    ClientError::InvalidConfig(message.into())
}

impl Endpoint {
    /// Checks `config` as a whole: a usable base URL, non-empty id, key and secret, and a
    /// timeout above zero.
    pub(super) fn check(config: &ClientConfig) -> Result<Endpoint, ClientError> {
        for (field, value) in [
            ("app_id", &config.app_id),
            ("key", &config.key),
            ("secret", &config.secret),
        ] {
            if value.is_empty() {
                return Err(invalid(format!("{field} is empty")));
            }
        }
        if config.timeout.is_zero() {
            return Err(invalid("timeout is zero"));
        }
        Endpoint::parse(&config.base_url)
    }

    fn parse(base_url: &str) -> Result<Endpoint, ClientError> {
        let bad = |why: &str| invalid(format!("base_url {base_url:?}: {why}"));
        if base_url.contains('#') {
            return Err(bad("must not have a fragment"));
        }
        let uri: Uri = base_url
            .parse()
            .map_err(|e| bad(&format!("not a URL ({e})")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(bad(&format!("scheme {other:?} is not http or https"))),
            None => return Err(bad("needs http:// or https://")),
        };
        let Some(authority) = uri.authority() else {
            return Err(bad("has no host"));
        };
        if authority.as_str().contains('@') {
            return Err(bad(
                "credentials belong in key and secret (Client::from_url reads KEY:SECRET@HOST)",
            ));
        }
        if authority.host().is_empty() {
            return Err(bad("has no host"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("must be scheme://host[:port], without a path or query"));
        }
        let scheme = if https { "https" } else { "http" };
        Ok(Endpoint {
            origin: format!("{scheme}://{authority}"),
            https,
        })
    }
}

/// Reads `http[s]://KEY:SECRET@HOST[:PORT]/apps/APP_ID` (an optional trailing `/` allowed;
/// key, secret and id may be percent-escaped).
pub(super) fn from_pusher_url(url: &str) -> Result<ClientConfig, ClientError> {
    let url = url.trim();
    // The URL carries the secret: error messages never quote it.
    let bad = |why: &str| invalid(format!("PUSHER_URL: {why}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected http://KEY:SECRET@HOST/apps/APP_ID"))?;
    if scheme != "http" && scheme != "https" {
        return Err(bad("the scheme must be http or https"));
    }
    if rest.contains(['?', '#']) {
        return Err(bad("must not have a query or fragment"));
    }
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| bad("missing the path /apps/APP_ID"))?;
    let (userinfo, host) = authority
        .rsplit_once('@')
        .ok_or_else(|| bad("missing KEY:SECRET@ before the host"))?;
    if host.is_empty() {
        return Err(bad("missing the host"));
    }
    let (key, secret) = userinfo
        .split_once(':')
        .ok_or_else(|| bad("missing the secret (KEY:SECRET@HOST)"))?;
    let app_id = path
        .strip_prefix("apps/")
        .map(|id| id.strip_suffix('/').unwrap_or(id))
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .ok_or_else(|| bad("the path must be /apps/APP_ID"))?;
    let decode = |part: &str, what: &str| {
        percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| bad(&format!("the {what} is not valid UTF-8 once unescaped")))
            .and_then(|s| {
                if s.is_empty() {
                    Err(bad(&format!("the {what} is empty")))
                } else {
                    Ok(s)
                }
            })
    };
    Ok(ClientConfig::new(
        format!("{scheme}://{host}"),
        decode(app_id, "app id")?,
        decode(key, "key")?,
        decode(secret, "secret")?,
    ))
}

/// Hosted Pusher's API host for `cluster` (`mt1`, `eu`, `ap3`…).
pub(super) fn pusher_cluster_url(cluster: &str) -> Result<String, ClientError> {
    if cluster.is_empty()
        || !cluster
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(invalid(format!(
            "cluster {cluster:?}: expected a name such as mt1, eu or ap3"
        )));
    }
    Ok(format!("https://api-{cluster}.pusher.com"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(base: &str) -> Result<String, ClientError> {
        Endpoint::parse(base).map(|e| e.origin)
    }

    #[test]
    fn base_urls_are_normalised_or_refused() {
        assert_eq!(
            origin("http://127.0.0.1:6001").ok().as_deref(),
            Some("http://127.0.0.1:6001")
        );
        assert_eq!(
            origin("https://api-mt1.pusher.com/").ok().as_deref(),
            Some("https://api-mt1.pusher.com")
        );
        assert_eq!(
            origin("http://[::1]:6001").ok().as_deref(),
            Some("http://[::1]:6001")
        );
        for bad in [
            "",
            "127.0.0.1:6001",
            "ftp://host",
            "http://",
            "http://k:s@host",
            "http://host/apps/1",
            "http://host?x=1",
            "http://host#x",
            "http://ho st",
        ] {
            assert!(
                matches!(origin(bad), Err(ClientError::InvalidConfig(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn pusher_urls_are_read_like_the_sdks_read_them() {
        let c = from_pusher_url("https://key:se%2Fcret@api-eu.pusher.com/apps/42/")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                c.base_url.as_str(),
                c.app_id.as_str(),
                c.key.as_str(),
                c.secret.as_str()
            ),
            ("https://api-eu.pusher.com", "42", "key", "se/cret")
        );
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        for bad in [
            "",
            "key:secret@host/apps/1",
            "ftp://k:s@host/apps/1",
            "http://host/apps/1",
            "http://k@host/apps/1",
            "http://:s@host/apps/1",
            "http://k:@host/apps/1",
            "http://k:s@/apps/1",
            "http://k:s@host",
            "http://k:s@host/",
            "http://k:s@host/apps/",
            "http://k:s@host/apps/1/x",
            "http://k:s@host/channels/1",
            "http://k:s@host/apps/1?x=1",
            "http://k:%FF@host/apps/1",
        ] {
            match from_pusher_url(bad) {
                Err(ClientError::InvalidConfig(m)) => {
                    assert!(!m.contains("secret@") && !m.contains(":s@"), "{m}")
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn clusters_map_to_hosted_pusher() {
        assert_eq!(
            pusher_cluster_url("mt1").ok().as_deref(),
            Some("https://api-mt1.pusher.com")
        );
        for bad in ["", "mt1.evil.com/", "a b", "eu/x", "mt1@x"] {
            assert!(pusher_cluster_url(bad).is_err(), "{bad:?}");
        }
    }
}
