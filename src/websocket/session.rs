//! What a connection's messages mean. A `Session` holds one socket's protocol state (its
//! subscriptions, presence identities, client-event budget) and turns each parsed message
//! into registry calls and frames pushed to its own outbox. It never touches the socket, so
//! every decision here can be exercised with an `Outbox` and no network.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use serde_json::value::RawValue;

use crate::apps::App;
use crate::channels::{Member, Outbox, PresenceJoin};
use crate::protocol::auth;
use crate::protocol::channel::{self, ChannelKind};
use crate::protocol::codes;
use crate::protocol::encode::{self, Event};
use crate::protocol::limits::{MAX_EVENT_NAME_LEN, MAX_WATCHLIST};
use crate::protocol::member_data;
use crate::protocol::messages::{self, ClientMessage, Subscribe};
use crate::protocol::socket_id::SocketId;

const CLIENT_EVENTS_DISABLED: &str =
    "To send client events, you must enable this feature in the Settings page of your dashboard.";

/// Fixed one-second windows pacing a connection: client events, and subscribe messages.
///
/// Subscribes get an allowance rather than a count: it starts as deep as the subscription cap
/// (pusher-js resubscribes every channel at once after a reconnect) and each new window
/// brings it back up to `subscriptions_per_second`. Both share one clock, which keeps every
/// connection 8 bytes smaller than a bucket of its own would.
#[derive(Debug)]
struct RateWindow {
    started: Instant,
    count: u32,
    subscribe_allowance: u32,
}

impl RateWindow {
    fn new(subscribe_burst: u32) -> Self {
        RateWindow {
            started: Instant::now(),
            count: 0,
            subscribe_allowance: subscribe_burst,
        }
    }

    /// Starts a new window when the current one is over.
    fn roll(&mut self, subscribes_per_second: u32) {
        let now = Instant::now();
        if now.duration_since(self.started) >= Duration::from_secs(1) {
            self.started = now;
            self.count = 0;
            self.subscribe_allowance = self.subscribe_allowance.max(subscribes_per_second);
        }
    }

    /// One more client event; false past `per_second` (0: unlimited).
    fn allow(&mut self, per_second: u32, subscribes_per_second: u32) -> bool {
        if per_second == 0 {
            return true;
        }
        self.roll(subscribes_per_second);
        self.count += 1;
        self.count <= per_second
    }

    /// One more subscribe message; false once the allowance is spent (`per_second` 0:
    /// unlimited).
    fn allow_subscribe(&mut self, per_second: u32) -> bool {
        if per_second == 0 {
            return true;
        }
        self.roll(per_second);
        if self.subscribe_allowance == 0 {
            return false;
        }
        self.subscribe_allowance -= 1;
        true
    }
}

/// The user this socket signed in as (`pusher:signin`).
#[derive(Debug)]
struct SignedIn {
    id: Arc<str>,
    info: Option<Arc<RawValue>>,
    watchlist: Vec<Arc<str>>,
}

/// A subscription held by this socket; presence ones remember the user they joined as.
#[derive(Debug)]
struct Held {
    user_id: Option<Arc<str>>,
}

pub(crate) struct Session {
    app: Arc<App>,
    socket_id: SocketId,
    outbox: Arc<Outbox>,
    /// Keyed by the registry's own copy of each channel name.
    subscriptions: HashMap<Arc<str>, Held>,
    rate: RateWindow,
    /// Boxed: most connections never sign in, and this keeps their session small.
    user: Option<Box<SignedIn>>,
    /// Signed in, or subscribed to a private or presence channel: what an app that requires
    /// sign-in ("authorized connections") waits for.
    authorized: bool,
}

/// A refused subscription: what goes into `pusher:subscription_error`.
struct Refusal {
    kind: &'static str,
    status: u16,
    error: String,
}

impl Refusal {
    fn bad_request(error: impl Into<String>) -> Self {
        Refusal {
            kind: "InvalidRequest",
            status: 400,
            error: error.into(),
        }
    }
    fn unauthorized(error: impl Into<String>) -> Self {
        Refusal {
            kind: "AuthError",
            status: 401,
            error: error.into(),
        }
    }
    fn forbidden(kind: &'static str, error: impl Into<String>) -> Self {
        Refusal {
            kind,
            status: 403,
            error: error.into(),
        }
    }
}

/// How many subscribe messages a connection may send at once.
fn subscribe_depth(app: &App) -> u32 {
    let cfg = &app.config;
    u32::try_from(cfg.max_subscriptions_per_connection)
        .unwrap_or(u32::MAX)
        .max(cfg.subscriptions_per_second)
}

impl Session {
    pub(crate) fn new(app: Arc<App>, socket_id: SocketId, outbox: Arc<Outbox>) -> Self {
        let depth = subscribe_depth(&app);
        Session {
            app,
            socket_id,
            outbox,
            subscriptions: HashMap::new(),
            rate: RateWindow::new(depth),
            user: None,
            authorized: false,
        }
    }

    pub(crate) fn socket_id(&self) -> SocketId {
        self.socket_id
    }

    /// Whether the connection has signed in or joined a private or presence channel.
    pub(crate) fn is_authorized(&self) -> bool {
        self.authorized
    }

    /// Queues `pusher:connection_established`.
    pub(crate) fn greet(&self, activity_timeout: Duration) {
        let data = format!(
            "{{\"socket_id\":\"{}\",\"activity_timeout\":{}}}",
            self.socket_id,
            activity_timeout.as_secs().max(1)
        );
        self.send(
            Event::new("pusher:connection_established")
                .text(&data)
                .to_frame(),
        );
    }

    fn send(&self, frame: bytes::Bytes) {
        self.outbox.push(frame);
    }

    fn error(&self, code: Option<u16>, message: &str) {
        self.send(encode::error_frame(code, message));
    }

    /// Handles one text message from the client.
    pub(crate) fn handle_text(&mut self, text: &str) {
        self.app.metrics.received(text.len());
        match messages::parse(text) {
            Ok(ClientMessage::Ping) => self.send(encode::pusher_pong()),
            Ok(ClientMessage::Pong) => {}
            Ok(ClientMessage::Subscribe(s)) => self.subscribe(s),
            Ok(ClientMessage::Unsubscribe { channel }) => self.unsubscribe(&channel),
            Ok(ClientMessage::Signin { auth, user_data }) => {
                if let Err(message) = self.signin(&auth, &user_data) {
                    self.error(Some(codes::UNAUTHORIZED), &message);
                }
            }
            Ok(ClientMessage::ClientEvent {
                event,
                channel,
                data,
            }) => self.client_event(&event, &channel, data),
            Err(e) => self.error(None, &e.to_string()),
        }
    }

    fn subscribe(&mut self, s: Subscribe) {
        let result = self.try_subscribe(&s);
        let console = &self.app.console;
        if console.is_open() {
            match &result {
                Ok(()) => console.record(
                    "subscribed",
                    json!({ "socket_id": self.socket_id.to_string(), "channel": s.channel }),
                ),
                Err(refusal) => console.record(
                    "subscription_refused",
                    json!({
                        "socket_id": self.socket_id.to_string(),
                        "channel": s.channel,
                        "status": refusal.status,
                        "reason": refusal.error,
                    }),
                ),
            }
        }
        if let Err(refusal) = result {
            self.send(encode::subscription_error_frame(
                &s.channel,
                refusal.kind,
                &refusal.error,
                refusal.status,
            ));
        }
    }

    fn try_subscribe(&mut self, s: &Subscribe) -> Result<(), Refusal> {
        let name = s.channel.as_str();
        let cfg = &self.app.config;
        if !self.rate.allow_subscribe(cfg.subscriptions_per_second) {
            return Err(Refusal {
                kind: "LimitReached",
                status: 429,
                error: format!(
                    "Too many subscriptions: at most {} per second per connection",
                    cfg.subscriptions_per_second
                ),
            });
        }
        let cap = cfg.max_subscriptions_per_connection;
        if self.subscriptions.len() >= cap && !self.subscriptions.contains_key(name) {
            return Err(Refusal::forbidden(
                "LimitReached",
                format!(
                    "This connection is already subscribed to {cap} channels, the most allowed; unsubscribe from one first"
                ),
            ));
        }
        let spec = channel::classify(name).map_err(|e| Refusal::bad_request(e.to_string()))?;
        if spec.kind == ChannelKind::User {
            return self.subscribe_user_channel(name);
        }
        if spec.needs_auth() {
            self.check_auth(name, s.auth.as_deref(), s.channel_data.as_deref())?;
        }
        let registry = &self.app.registry;
        let conn = self.socket_id.conn;
        if spec.kind != ChannelKind::Presence {
            let key = registry.subscribe(name, conn, &self.outbox, spec.cache);
            self.subscriptions.insert(key, Held { user_id: None });
            self.authorized |= spec.needs_auth();
            return Ok(());
        }
        if let Some(held) = self.subscriptions.get(name) {
            // Already a member through this socket: confirm again, announce nothing.
            let member = Member {
                user_id: held.user_id.clone().unwrap_or_else(|| Arc::from("")),
                info: None,
            };
            registry.subscribe_presence(name, conn, &self.outbox, &member, usize::MAX, spec.cache);
            return Ok(());
        }
        let member = match (s.channel_data.as_deref(), &self.user) {
            // Authorised by sign-in alone: the member is the signed-in user.
            (None, Some(user)) => Member {
                user_id: user.id.clone(),
                info: user.info.clone(),
            },
            (data, _) => self.presence_member(data)?,
        };
        match registry.subscribe_presence(
            name,
            self.socket_id.conn,
            &self.outbox,
            &member,
            self.app.config.max_presence_members,
            spec.cache,
        ) {
            PresenceJoin::Joined(key) => {
                self.authorized = true;
                self.subscriptions.insert(
                    key,
                    Held {
                        user_id: Some(member.user_id),
                    },
                );
                Ok(())
            }
            PresenceJoin::Full { limit } => Err(Refusal::forbidden(
                "LimitReached",
                format!("The presence channel {name} already has the maximum of {limit} members"),
            )),
        }
    }

    fn check_auth(
        &self,
        channel: &str,
        token: Option<&str>,
        channel_data: Option<&str>,
    ) -> Result<(), Refusal> {
        let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
            Refusal::unauthorized(format!("Auth info required to subscribe to {channel}"))
        })?;
        let cfg = &self.app.config;
        let sid_text = self.socket_id.to_string();
        let sid = sid_text.as_str();
        let ok = match channel_data {
            Some(data) => auth::verify_token(
                &cfg.key,
                &cfg.secret,
                token,
                &[sid, ":", channel, ":", data],
            ),
            None => auth::verify_token(&cfg.key, &cfg.secret, token, &[sid, ":", channel]),
        };
        if ok {
            Ok(())
        } else {
            let signed = match channel_data {
                Some(d) => format!("{sid}:{channel}:{d}"),
                None => format!("{sid}:{channel}"),
            };
            Err(Refusal::unauthorized(format!(
                "Invalid signature: expected HMAC SHA256 hex digest of {signed} signed with the secret of app key {}",
                cfg.key
            )))
        }
    }

    fn presence_member(&self, channel_data: Option<&str>) -> Result<Member, Refusal> {
        let text = channel_data.ok_or_else(|| {
            Refusal::bad_request(
                "Presence channels need channel_data with a user_id, or a signed-in connection",
            )
        })?;
        let member =
            member_data::channel_member(text, self.app.config.max_presence_user_info_bytes)
                .map_err(Refusal::bad_request)?;
        Ok(Member {
            user_id: Arc::from(member.user_id),
            info: member.user_info.map(|raw| Arc::from(raw.to_owned())),
        })
    }

    /// `#server-to-user-{id}`: only the socket signed in as that user may join. Events to
    /// the user reach all of its signed-in sockets whether they joined or not (pusher-js
    /// routes them by channel name), so the subscription is only acknowledged.
    fn subscribe_user_channel(&mut self, name: &str) -> Result<(), Refusal> {
        let wanted = name
            .strip_prefix(channel::USER_CHANNEL_PREFIX)
            .unwrap_or("");
        match &self.user {
            Some(user) if &*user.id == wanted => {
                self.send(
                    Event::new("pusher_internal:subscription_succeeded")
                        .channel(name)
                        .text("{}")
                        .to_frame(),
                );
                Ok(())
            }
            Some(user) => Err(Refusal::forbidden(
                "AuthError",
                format!(
                    "This connection is signed in as {:?}, not as {wanted:?}",
                    user.id
                ),
            )),
            None => Err(Refusal::forbidden(
                "AuthError",
                format!("Sign in as {wanted:?} before subscribing to {name}"),
            )),
        }
    }

    /// `pusher:signin`: checks the signature over `socket_id::user::user_data`, then
    /// answers `pusher:signin_success` with the same `user_data` string.
    fn signin(&mut self, token: &str, user_data: &str) -> Result<(), String> {
        let cfg = &self.app.config;
        let sid_text = self.socket_id.to_string();
        let sid = sid_text.as_str();
        if !auth::verify_token(&cfg.key, &cfg.secret, token, &[sid, "::user::", user_data]) {
            return Err(format!(
                "Invalid signature: expected HMAC SHA256 hex digest of {sid}::user::{user_data} signed with the secret of app key {}",
                cfg.key
            ));
        }
        let data = member_data::signed_in_user(user_data)?;
        let id = data.id;
        if let Some(current) = &self.user {
            if *current.id != *id {
                return Err(format!(
                    "This connection is already signed in as {:?}",
                    current.id
                ));
            }
            self.send_signin_success(user_data);
            return Ok(());
        }
        let info = data.user_info.map(|raw| Arc::from(raw.to_owned()));
        let over_limit = data.watchlist_over;
        let watchlist: Vec<Arc<str>> = if cfg.watchlist_events {
            data.watchlist.into_iter().map(Arc::from).collect()
        } else {
            Vec::new()
        };
        let id: Arc<str> = Arc::from(id);
        self.send_signin_success(user_data);
        self.app
            .users
            .sign_in(&id, self.socket_id.conn, &self.outbox, &watchlist);
        if over_limit && cfg.watchlist_events {
            self.error(
                Some(codes::WATCHLIST_LIMIT),
                &format!(
                    "Watchlist limit exceeded: only the first {MAX_WATCHLIST} user ids are watched"
                ),
            );
        }
        self.user = Some(Box::new(SignedIn {
            id,
            info,
            watchlist,
        }));
        self.authorized = true;
        Ok(())
    }

    fn send_signin_success(&self, user_data: &str) {
        let data = serde_json::json!({ "user_data": user_data });
        if let Ok(raw) = serde_json::value::to_raw_value(&data) {
            self.send(Event::new("pusher:signin_success").raw(&raw).to_frame());
        }
    }

    fn unsubscribe(&mut self, channel: &str) {
        if self.subscriptions.remove(channel).is_some() {
            self.app.registry.unsubscribe(channel, self.socket_id.conn);
            if self.app.console.is_open() {
                self.app.console.record(
                    "unsubscribed",
                    json!({ "socket_id": self.socket_id.to_string(), "channel": channel }),
                );
            }
        }
    }

    fn reject_client_event(&mut self, code: Option<u16>, message: &str) {
        self.app.metrics.client_events_rejected.inc();
        self.error(code, message);
        if self.app.console.is_open() {
            self.app.console.record(
                "error",
                json!({ "socket_id": self.socket_id.to_string(), "code": code, "message": message }),
            );
        }
    }

    fn client_event(&mut self, event: &str, channel: &str, data: &RawValue) {
        let cfg = &self.app.config;
        if !cfg.client_events {
            return self.reject_client_event(None, CLIENT_EVENTS_DISABLED);
        }
        if event.len() > MAX_EVENT_NAME_LEN {
            return self.reject_client_event(
                None,
                &format!("Client event rejected: the event name is longer than {MAX_EVENT_NAME_LEN} characters"),
            );
        }
        let Ok(spec) = channel::classify(channel) else {
            return self.reject_client_event(
                None,
                &format!("Client event rejected: invalid channel name {channel:?}"),
            );
        };
        if !spec.allows_client_events() {
            return self.reject_client_event(
                None,
                &format!("Client event rejected: client events are only allowed on private and presence channels, not on {channel}"),
            );
        }
        let Some(held) = self.subscriptions.get(channel) else {
            return self.reject_client_event(
                None,
                &format!("Client event rejected: this connection is not subscribed to {channel}"),
            );
        };
        if data.get().len() > cfg.max_event_payload_bytes {
            return self.reject_client_event(
                None,
                &format!(
                    "Client event rejected: the data is larger than {} bytes",
                    cfg.max_event_payload_bytes
                ),
            );
        }
        let user_id = held.user_id.clone();
        if !self
            .rate
            .allow(cfg.client_events_per_second, cfg.subscriptions_per_second)
        {
            return self.reject_client_event(
                Some(codes::CLIENT_EVENT_RATE_LIMIT),
                &format!(
                    "Client event rejected due to rate limit: at most {} per second",
                    cfg.client_events_per_second
                ),
            );
        }
        let mut out = Event::new(event).channel(channel).raw(data);
        if let Some(uid) = user_id.as_deref() {
            out = out.user_id(uid);
        }
        let frame = out.to_frame();
        self.app
            .registry
            .publish(channel, &frame, Some(self.socket_id.conn));
        if let Some(cluster) = &self.app.cluster {
            cluster.publish(channel, Some(&self.socket_id.to_string()), &frame);
        }
        if self.app.console.is_open() {
            self.app.console.record(
                "client_event",
                json!({
                    "socket_id": self.socket_id.to_string(),
                    "channel": channel,
                    "event": event,
                    "data": data.get(),
                    "user_id": user_id.as_deref(),
                }),
            );
        }
        if let Some(hooks) = &self.app.webhooks {
            hooks.client_event(channel, event, data, self.socket_id.to_string(), user_id);
        }
    }

    /// Leaves every channel and signs out; called once when the connection ends.
    pub(crate) fn leave_all(&mut self) {
        for (channel, _) in self.subscriptions.drain() {
            self.app.registry.unsubscribe(&channel, self.socket_id.conn);
        }
        if let Some(user) = self.user.take() {
            self.app
                .users
                .sign_out(&user.id, self.socket_id.conn, &user.watchlist);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::outbox::Drained;
    use crate::config::AppConfig;

    fn session(config: AppConfig) -> (Session, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(1 << 20));
        let app = Arc::new(App::new(config));
        (
            Session::new(app, SocketId { node: 1, conn: 2 }, outbox.clone()),
            outbox,
        )
    }

    async fn sent(o: &Outbox) -> Vec<serde_json::Value> {
        match o.drained().await {
            Drained::Frames(f) => f
                .iter()
                .map(|b| {
                    let start = if b[1] == 126 { 4 } else { 2 };
                    serde_json::from_slice(&b[start..]).unwrap_or_default()
                })
                .collect(),
            Drained::Close(..) => panic!("closed"),
        }
    }

    #[tokio::test]
    async fn ping_gets_pong() {
        let (mut s, o) = session(AppConfig::default());
        s.handle_text(r#"{"event":"pusher:ping","data":{}}"#);
        assert_eq!(sent(&o).await[0]["event"], "pusher:pong");
    }

    #[tokio::test]
    async fn private_channel_needs_a_valid_signature() {
        let (mut s, o) = session(AppConfig::default());
        s.handle_text(
            r#"{"event":"pusher:subscribe","data":{"auth":"app-key:00","channel":"private-a"}}"#,
        );
        let got = sent(&o).await;
        assert_eq!(got[0]["event"], "pusher:subscription_error");
        assert_eq!(got[0]["data"]["status"], 401);
        let sig = auth::sign("app-secret", "1.2:private-a");
        s.handle_text(&format!(
            r#"{{"event":"pusher:subscribe","data":{{"auth":"app-key:{sig}","channel":"private-a"}}}}"#
        ));
        assert_eq!(
            sent(&o).await[0]["event"],
            "pusher_internal:subscription_succeeded"
        );
    }

    #[tokio::test]
    async fn numeric_user_ids_become_strings() {
        let (mut s, o) = session(AppConfig::default());
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#;
        let sig = auth::sign("app-secret", &format!("1.2:presence-a:{data}"));
        let msg = serde_json::json!({"event":"pusher:subscribe","data":{"auth":format!("app-key:{sig}"),"channel":"presence-a","channel_data":data}});
        s.handle_text(&msg.to_string());
        let got = sent(&o).await;
        let inner: serde_json::Value =
            serde_json::from_str(got[0]["data"].as_str().unwrap_or("")).unwrap_or_default();
        assert_eq!(inner["presence"]["ids"][0], "10");
        assert_eq!(inner["presence"]["hash"]["10"]["name"], "Mr. Pusher");
    }

    #[tokio::test]
    async fn client_event_rules() {
        let (mut s, o) = session(AppConfig {
            client_events_per_second: 1,
            ..AppConfig::default()
        });
        s.handle_text(r#"{"event":"client-a","channel":"public","data":{}}"#);
        assert_eq!(sent(&o).await[0]["event"], "pusher:error");
        s.handle_text(r#"{"event":"client-a","channel":"private-a","data":{}}"#);
        let got = sent(&o).await;
        assert!(
            got[0]["data"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("not subscribed")
        );
        let sig = auth::sign("app-secret", "1.2:private-a");
        s.handle_text(&format!(
            r#"{{"event":"pusher:subscribe","data":{{"auth":"app-key:{sig}","channel":"private-a"}}}}"#
        ));
        sent(&o).await;
        s.handle_text(r#"{"event":"client-a","channel":"private-a","data":{}}"#);
        s.handle_text(r#"{"event":"client-a","channel":"private-a","data":{}}"#);
        let got = sent(&o).await;
        assert_eq!(got.len(), 1, "sender never gets its own event: {got:?}");
        assert_eq!(got[0]["data"]["code"], 4301);
    }
}
