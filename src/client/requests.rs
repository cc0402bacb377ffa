//! [`Client`]: the handle, its constructors, and one method per HTTP API endpoint. Each method
//! builds its path and body, [`Client::call`] signs and sends, and `responses` reads what
//! came back.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request};
use serde::Serialize;

use super::config::{self, ClientConfig, Endpoint};
use super::error::ClientError;
use super::signing::{self, Credentials};
use super::transport::{self, Http};
use super::{BatchEvent, ChannelInfo, responses};

/// The library header the official SDKs send too (`X-Pusher-Library: pusher-http-node 5.x`).
const LIBRARY: &str = concat!("crier-client ", env!("CARGO_PKG_VERSION"));

/// A client of the Pusher Channels HTTP API, for Crier or hosted Pusher: it signs each
/// request as the official server SDKs do and sends it over a keep-alive connection pool.
///
/// Cheap to clone (the clones share the pool) and usable from many tasks at once.
///
/// ```no_run
/// # async fn run() -> Result<(), crier::client::ClientError> {
/// use crier::client::{Client, ClientConfig};
///
/// let client = Client::new(ClientConfig::new("http://127.0.0.1:6001", "1", "app-key", "app-secret"))?;
/// client.trigger(&["orders"], "order-shipped", r#"{"id":7}"#, None).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    /// `scheme://authority` of [`ClientConfig::base_url`], checked.
    origin: String,
    /// `/apps/{app_id}`, the id escaped as a path segment.
    app_path: String,
    http: Http,
}

/// Shows where and as which app; never the secret.
impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.origin)
            .field("app_id", &self.inner.config.app_id)
            .field("key", &self.inner.config.key)
            .field("timeout", &self.inner.config.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct TriggerBody<'a> {
    name: &'a str,
    channels: &'a [&'a str],
    data: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket_id: Option<&'a str>,
}

#[derive(Serialize)]
struct BatchBody<'a> {
    batch: Vec<BatchItem<'a>>,
}

#[derive(Serialize)]
struct BatchItem<'a> {
    channel: &'a str,
    name: &'a str,
    data: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket_id: Option<&'a str>,
}

impl Client {
    /// A client for `config`, checked: a `http://` or `https://` base URL without a path,
    /// non-empty id, key and secret, a timeout above zero. No connection is made yet.
    ///
    /// ```no_run
    /// use crier::client::{Client, ClientConfig};
    ///
    /// let client = Client::new(ClientConfig::new("http://127.0.0.1:6001", "1", "app-key", "app-secret"))?;
    /// # Ok::<(), crier::client::ClientError>(())
    /// ```
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        let endpoint = Endpoint::check(&config)?;
        let http = transport::http_client(endpoint.https, config.timeout)?;
        let app_path = format!("/apps/{}", signing::segment(&config.app_id));
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                origin: endpoint.origin,
                app_path,
                http,
            }),
        })
    }

    /// A client from the `PUSHER_URL` form the official SDKs accept,
    /// `http://KEY:SECRET@HOST:PORT/apps/APP_ID` (or `https://`), with the default timeout.
    ///
    /// ```no_run
    /// let url = std::env::var("PUSHER_URL").unwrap_or_default();
    /// let client = crier::client::Client::from_url(&url)?;
    /// # Ok::<(), crier::client::ClientError>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Client, ClientError> {
        Client::new(config::from_pusher_url(url)?)
    }

    /// A client of hosted Pusher in `cluster` (`mt1`, `eu`, `ap3`…):
    /// `https://api-{cluster}.pusher.com`, with the default timeout.
    ///
    /// ```no_run
    /// let client = crier::client::Client::for_pusher_cluster(
    ///     "eu",
    ///     "123456",
    ///     "278d425bdf160c739803",
    ///     "7ad3773142a6692b25b8",
    /// )?;
    /// # Ok::<(), crier::client::ClientError>(())
    /// ```
    pub fn for_pusher_cluster(
        cluster: &str,
        app_id: impl Into<String>,
        key: impl Into<String>,
        secret: impl Into<String>,
    ) -> Result<Client, ClientError> {
        let base_url = config::pusher_cluster_url(cluster)?;
        Client::new(ClientConfig::new(base_url, app_id, key, secret))
    }

    /// The app key, as pusher-js needs it to connect.
    ///
    /// ```no_run
    /// # fn run(client: crier::client::Client) {
    /// println!("new Pusher({:?}, {{ … }})", client.key());
    /// # }
    /// ```
    pub fn key(&self) -> &str {
        &self.inner.config.key
    }

    /// The app secret, for signing channel authorisations and sign-ins (see
    /// [`crate::authorizer::Authorizer`]).
    ///
    /// ```no_run
    /// # fn run(client: crier::client::Client) {
    /// let authorizer = crier::authorizer::Authorizer::<str>::new(client.key(), client.secret());
    /// # }
    /// ```
    pub fn secret(&self) -> &str {
        &self.inner.config.secret
    }

    /// The app id.
    ///
    /// ```no_run
    /// # fn run(client: crier::client::Client) {
    /// println!("publishing as app {}", client.app_id());
    /// # }
    /// ```
    pub fn app_id(&self) -> &str {
        &self.inner.config.app_id
    }

    /// Publishes `event` with `data` (sent as is, usually JSON text) to each of `channels`,
    /// skipping the connection `socket_id` when given (`POST /apps/{id}/events`).
    ///
    /// ```no_run
    /// # async fn run(client: crier::client::Client, sender: &str) -> Result<(), crier::client::ClientError> {
    /// client.trigger(&["orders", "private-user.7"], "order-shipped", r#"{"id":7}"#, None).await?;
    /// // To everyone but the connection that caused it:
    /// client.trigger(&["presence-room"], "typing", r#""ada""#, Some(sender)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn trigger(
        &self,
        channels: &[&str],
        event: &str,
        data: &str,
        socket_id: Option<&str>,
    ) -> Result<(), ClientError> {
        let body = encode(&TriggerBody {
            name: event,
            channels,
            data,
            socket_id,
        })?;
        let path = format!("{}/events", self.inner.app_path);
        self.call(Method::POST, &path, &[], Some(body)).await?;
        Ok(())
    }

    /// Publishes several events in one request, each to its one channel
    /// (`POST /apps/{id}/batch_events`; Pusher accepts up to 10).
    ///
    /// ```no_run
    /// # async fn run(client: crier::client::Client) -> Result<(), crier::client::ClientError> {
    /// use crier::client::BatchEvent;
    ///
    /// client.trigger_batch(&[
    ///     BatchEvent { channel: "orders".into(), name: "created".into(), data: "{}".into(), socket_id: None },
    ///     BatchEvent { channel: "stock".into(), name: "changed".into(), data: "{}".into(), socket_id: None },
    /// ]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn trigger_batch(&self, events: &[BatchEvent]) -> Result<(), ClientError> {
        let batch = events
            .iter()
            .map(|e| BatchItem {
                channel: &e.channel,
                name: &e.name,
                data: &e.data,
                socket_id: e.socket_id.as_deref(),
            })
            .collect();
        let body = encode(&BatchBody { batch })?;
        let path = format!("{}/batch_events", self.inner.app_path);
        self.call(Method::POST, &path, &[], Some(body)).await?;
        Ok(())
    }

    /// The occupied channels, those starting with `prefix` when given, sorted by name
    /// (`GET /apps/{id}/channels`).
    ///
    /// `with_user_count` asks for each channel's `user_count`, which the API answers only for
    /// presence channels: it is sent only when `prefix` starts with `presence-`, and otherwise
    /// ignored (every `user_count` is then `None`). `subscription_count` is not part of this
    /// endpoint and is always `None`; [`Client::channel`] has it.
    ///
    /// ```no_run
    /// # async fn run(client: crier::client::Client) -> Result<(), crier::client::ClientError> {
    /// for room in client.channels(Some("presence-room-"), true).await? {
    ///     println!("{}: {:?} users", room.name, room.user_count);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn channels(
        &self,
        prefix: Option<&str>,
        with_user_count: bool,
    ) -> Result<Vec<ChannelInfo>, ClientError> {
        let mut params = Vec::with_capacity(2);
        if let Some(prefix) = prefix {
            params.push(("filter_by_prefix", prefix));
            if with_user_count && prefix.starts_with("presence-") {
                params.push(("info", "user_count"));
            }
        }
        let path = format!("{}/channels", self.inner.app_path);
        let body = self.call(Method::GET, &path, &params, None).await?;
        responses::channel_list(&body)
    }

    /// One channel: whether it is occupied, its `subscription_count`, and for a `presence-`
    /// channel its `user_count` (`GET /apps/{id}/channels/{name}`). An unoccupied channel is
    /// `occupied: false`, not an error.
    ///
    /// ```no_run
    /// # async fn run(client: crier::client::Client) -> Result<(), crier::client::ClientError> {
    /// let room = client.channel("presence-room-1").await?;
    /// if room.occupied {
    ///     println!("{:?} users on {:?} connections", room.user_count, room.subscription_count);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn channel(&self, name: &str) -> Result<ChannelInfo, ClientError> {
        let info = if name.starts_with("presence-") {
            "subscription_count,user_count"
        } else {
            "subscription_count"
        };
        let path = format!(
            "{}/channels/{}",
            self.inner.app_path,
            signing::segment(name)
        );
        let body = self
            .call(Method::GET, &path, &[("info", info)], None)
            .await?;
        responses::channel(name, &body)
    }

    /// The ids of the users on a presence channel, in the server's order
    /// (`GET /apps/{id}/channels/{name}/users`).
    ///
    /// ```no_run
    /// # async fn run(client: crier::client::Client) -> Result<(), crier::client::ClientError> {
    /// let online: Vec<String> = client.users("presence-room-1").await?;
    /// # Ok(()) }
    /// ```
    pub async fn users(&self, presence_channel: &str) -> Result<Vec<String>, ClientError> {
        let path = format!(
            "{}/channels/{}/users",
            self.inner.app_path,
            signing::segment(presence_channel)
        );
        let body = self.call(Method::GET, &path, &[], None).await?;
        responses::users(&body)
    }

    /// Closes every connection signed in as `user_id`
    /// (`POST /apps/{id}/users/{user_id}/terminate_connections`). Presence-only identities are
    /// not affected.
    ///
    /// ```no_run
    /// # async fn run(client: crier::client::Client) -> Result<(), crier::client::ClientError> {
    /// client.terminate_user_connections("user-42").await?;
    /// # Ok(()) }
    /// ```
    pub async fn terminate_user_connections(&self, user_id: &str) -> Result<(), ClientError> {
        let path = format!(
            "{}/users/{}/terminate_connections",
            self.inner.app_path,
            signing::segment(user_id)
        );
        self.call(Method::POST, &path, &[], Some(b"{}".to_vec()))
            .await?;
        Ok(())
    }

    /// Sends `event` to every connection signed in as `user_id`: a trigger on the channel
    /// `#server-to-user-{user_id}`, as the official SDKs' `sendToUser` does.
    ///
    /// ```no_run
    /// # async fn run(client: crier::client::Client) -> Result<(), crier::client::ClientError> {
    /// client.send_to_user("user-42", "notification", r#"{"text":"hi"}"#).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_to_user(
        &self,
        user_id: &str,
        event: &str,
        data: &str,
    ) -> Result<(), ClientError> {
        let channel = format!("#server-to-user-{user_id}");
        self.trigger(&[&channel], event, data, None).await
    }

    /// Signs and sends one request; the body of a 2xx answer, or the error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let inner = &*self.inner;
        let body = Bytes::from(body.unwrap_or_default());
        let credentials = Credentials {
            key: &inner.config.key,
            secret: &inner.config.secret,
        };
        let query = signing::signed_query(
            method.as_str(),
            path,
            params,
            &body,
            &credentials,
            unix_now(),
        );
        let uri = format!("{}{path}?{query}", inner.origin);
        let mut request = Request::builder()
            .method(method)
            .uri(&uri)
            .header("X-Pusher-Library", LIBRARY);
        if !body.is_empty() {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| ClientError::Transport(format!("could not build the request: {e}")))?;
        let answer = transport::exchange(&inner.http, request, inner.config.timeout).await?;
        if !answer.status.is_success() {
            return Err(ClientError::Status {
                status: answer.status.as_u16(),
                body: String::from_utf8_lossy(&answer.body).into_owned(),
            });
        }
        if answer.truncated {
            return Err(ClientError::InvalidResponse(format!(
                "the answer is larger than {} bytes",
                transport::MAX_ANSWER
            )));
        }
        Ok(answer.body)
    }
}

/// A request body as JSON. Borrowed strings and slices always serialize; the error path is
/// there so that nothing here can panic.
fn encode(body: &impl Serialize) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(body)
        .map_err(|e| ClientError::Transport(format!("could not encode the request body: {e}")))
}

/// Seconds since the Unix epoch (0 if the clock is set before it; the server then refuses
/// the timestamp with a 401 that says so).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The client is shared across tasks: keep it `Send + Sync`.
const _: fn() = || {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Client>();
};
