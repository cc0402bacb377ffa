//! What an app's webhooks are configured as: where they go, which events each target takes,
//! and the server-wide delivery settings (debounce, batching, timeouts, retries).
//!
//! A target is written `[[apps.webhooks]]` in the config file, or as one element of the JSON
//! array in `CRIER_APP_WEBHOOKS` (the shape soketi's `SOKETI_DEFAULT_APP_WEBHOOKS` takes, so
//! a soketi configuration moves over unchanged, `filter` and `headers` included).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// The events Pusher sends webhooks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WebhookKind {
    /// `channel_occupied`: a channel got its first subscriber.
    ChannelOccupied,
    /// `channel_vacated`: its last subscriber left.
    ChannelVacated,
    /// `member_added`: a user joined a presence channel.
    MemberAdded,
    /// `member_removed`: a user's last socket left it.
    MemberRemoved,
    /// `client_event`: a client sent a `client-*` event.
    ClientEvent,
    /// `cache_miss`: a cache channel was joined with nothing cached.
    CacheMiss,
    /// `subscription_count`: a channel's subscriber count changed.
    SubscriptionCount,
}

impl WebhookKind {
    /// Every kind.
    pub const ALL: [WebhookKind; 7] = [
        WebhookKind::ChannelOccupied,
        WebhookKind::ChannelVacated,
        WebhookKind::MemberAdded,
        WebhookKind::MemberRemoved,
        WebhookKind::ClientEvent,
        WebhookKind::CacheMiss,
        WebhookKind::SubscriptionCount,
    ];

    /// The event's `name` in a webhook body.
    pub fn name(self) -> &'static str {
        match self {
            WebhookKind::ChannelOccupied => "channel_occupied",
            WebhookKind::ChannelVacated => "channel_vacated",
            WebhookKind::MemberAdded => "member_added",
            WebhookKind::MemberRemoved => "member_removed",
            WebhookKind::ClientEvent => "client_event",
            WebhookKind::CacheMiss => "cache_miss",
            WebhookKind::SubscriptionCount => "subscription_count",
        }
    }

    /// The kind a webhook event name (`channel_occupied` …) stands for.
    pub fn parse(name: &str) -> Option<WebhookKind> {
        WebhookKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for WebhookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of event kinds, as one byte: cheap to test on the subscribe path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindSet(u8);

impl KindSet {
    /// Every kind.
    pub const ALL: KindSet = KindSet(0x7f);

    fn bit(kind: WebhookKind) -> u8 {
        1 << (kind as u8)
    }

    /// This set and `kind`.
    pub fn with(self, kind: WebhookKind) -> KindSet {
        KindSet(self.0 | KindSet::bit(kind))
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: WebhookKind) -> bool {
        self.0 & KindSet::bit(kind) != 0
    }

    /// The kinds of either set.
    pub fn union(self, other: KindSet) -> KindSet {
        KindSet(self.0 | other.0)
    }

    /// Whether the set holds no kind.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<WebhookKind> for KindSet {
    fn from_iter<I: IntoIterator<Item = WebhookKind>>(iter: I) -> Self {
        iter.into_iter().fold(KindSet::default(), KindSet::with)
    }
}

/// One place an app's webhooks are sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    /// An `http://` or `https://` URL.
    pub url: String,
    /// The events this target takes (all when the configuration names none).
    pub kinds: KindSet,
    /// Only events of channels whose name starts with this.
    pub channel_prefix: Option<String>,
    /// Only events of channels whose name ends with this (soketi's
    /// `filter.channel_name_ends_with`).
    pub channel_suffix: Option<String>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
}

impl WebhookTarget {
    /// Whether this target takes `kind` on `channel`.
    pub fn takes(&self, kind: WebhookKind, channel: &str) -> bool {
        self.kinds.contains(kind)
            && self
                .channel_prefix
                .as_deref()
                .is_none_or(|p| channel.starts_with(p))
            && self
                .channel_suffix
                .as_deref()
                .is_none_or(|s| channel.ends_with(s))
    }
}

/// A target as the file or `CRIER_APP_WEBHOOKS` writes it; checked by [`WebhookEntry::check`].
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookEntry {
    /// Where the webhook requests go (`http://` or `https://`).
    pub url: Option<String>,
    /// The kinds this target takes (soketi's name); all when absent.
    pub event_types: Option<Vec<String>>,
    /// Only channels whose name starts with this.
    pub channel_prefix: Option<String>,
    /// soketi's channel-name filter.
    pub filter: Option<WebhookFilter>,
    /// Extra request headers.
    pub headers: Option<BTreeMap<String, String>>,
}

/// soketi's `filter` object.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookFilter {
    /// Only channels whose name starts with this.
    pub channel_name_starts_with: Option<String>,
    /// Only channels whose name ends with this.
    pub channel_name_ends_with: Option<String>,
}

/// The targets `CRIER_APP_WEBHOOKS` / `--app-webhooks` list (one value, not several).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryList(pub Vec<WebhookEntry>);

/// Parses `CRIER_APP_WEBHOOKS` / `--app-webhooks`: a JSON array of targets.
pub fn parse_json_targets(text: &str) -> Result<EntryList, String> {
    if text.trim().is_empty() {
        return Ok(EntryList::default());
    }
    serde_json::from_str(text).map(EntryList).map_err(|e| {
        format!("expected a JSON array of {{\"url\": ..., \"event_types\": [...]}} objects: {e}")
    })
}

impl WebhookEntry {
    /// The target this entry describes; the error says what is wrong and in which field
    /// (relative to the entry: `url`, `event_types`, ...).
    pub fn check(&self) -> Result<WebhookTarget, (&'static str, String)> {
        let url = self
            .url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or(("url", "is required".to_string()))?;
        check_url(url).map_err(|reason| ("url", format!("{url:?}: {reason}")))?;
        let kinds = match &self.event_types {
            None => KindSet::ALL,
            Some(names) => {
                let mut kinds = KindSet::default();
                for name in names {
                    let kind = WebhookKind::parse(name).ok_or_else(|| {
                        let known: Vec<&str> = WebhookKind::ALL.iter().map(|k| k.name()).collect();
                        (
                            "event_types",
                            format!("unknown event type {name:?} (known: {})", known.join(", ")),
                        )
                    })?;
                    kinds = kinds.with(kind);
                }
                if kinds.is_empty() {
                    return Err((
                        "event_types",
                        "is empty: leave it out to send every event type".to_string(),
                    ));
                }
                kinds
            }
        };
        let filter = self.filter.clone().unwrap_or_default();
        if self.channel_prefix.is_some() && filter.channel_name_starts_with.is_some() {
            return Err((
                "channel_prefix",
                "give `channel_prefix` or `filter.channel_name_starts_with`, not both".to_string(),
            ));
        }
        let mut headers = Vec::new();
        for (name, value) in self.headers.iter().flatten() {
            let valid_name = hyper::header::HeaderName::from_bytes(name.as_bytes()).is_ok();
            let valid_value = hyper::header::HeaderValue::from_str(value).is_ok();
            if !valid_name || !valid_value {
                return Err(("headers", format!("{name:?} is not a valid HTTP header")));
            }
            let lower = name.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "x-pusher-key" | "x-pusher-signature" | "content-type" | "content-length" | "host"
            ) {
                return Err(("headers", format!("{name:?} is set by Crier itself")));
            }
            headers.push((name.clone(), value.clone()));
        }
        Ok(WebhookTarget {
            url: url.to_string(),
            kinds,
            channel_prefix: self
                .channel_prefix
                .clone()
                .or(filter.channel_name_starts_with)
                .filter(|p| !p.is_empty()),
            channel_suffix: filter.channel_name_ends_with.filter(|s| !s.is_empty()),
            headers,
        })
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("must start with http:// or https://".to_string()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".to_string());
    }
    Ok(())
}

/// Server-wide delivery settings (`[webhooks]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// How long `channel_vacated` and `member_removed` wait; a channel occupied again (a user
    /// back) within it sends neither event nor its opposite. Pusher waits about 3 s.
    pub delay: Duration,
    /// How long a target's first pending event waits for others to share its request.
    pub batch_window: Duration,
    /// Events in one request, at most.
    pub max_batch_events: usize,
    /// One attempt's deadline; Pusher asks receivers to answer within 4 s.
    pub timeout: Duration,
    /// The pause before the first retry; it doubles with each failure, up to `retry_max`.
    pub retry_first: Duration,
    /// The longest pause between two attempts.
    pub retry_max: Duration,
    /// A webhook still failing this long after it was created is given up (Pusher: 5 min).
    pub retry_for: Duration,
    /// Events waiting per target, at most; past it new events for that target are dropped
    /// (logged and counted). Bounds memory when a receiver is down for long.
    pub queue_events: usize,
    /// Requests in flight per target, at most.
    pub concurrency: usize,
    /// Cluster: a webhook a node took from Redis and has not finished for this long (the
    /// node died) is taken over by another node.
    pub reclaim_after: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            delay: Duration::from_secs(3),
            batch_window: Duration::from_millis(50),
            max_batch_events: 50,
            timeout: Duration::from_secs(4),
            retry_first: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            retry_for: Duration::from_secs(300),
            queue_events: 10_000,
            concurrency: 8,
            reclaim_after: Duration::from_secs(30),
        }
    }
}

/// `[webhooks]` as the file, the environment or flags state it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookOverrides {
    /// Replaces the setting of the same name (`delay_ms`); `None` keeps it.
    pub delay_ms: Option<u64>,
    /// Replaces the setting of the same name (`batch_window_ms`); `None` keeps it.
    pub batch_window_ms: Option<u64>,
    /// Replaces the setting of the same name (`max_batch_events`); `None` keeps it.
    pub max_batch_events: Option<usize>,
    /// Replaces the setting of the same name (`timeout_ms`); `None` keeps it.
    pub timeout_ms: Option<u64>,
    /// Replaces the setting of the same name (`retry_first_ms`); `None` keeps it.
    pub retry_first_ms: Option<u64>,
    /// Replaces the setting of the same name (`retry_max_ms`); `None` keeps it.
    pub retry_max_ms: Option<u64>,
    /// Replaces the setting of the same name (`retry_for_secs`); `None` keeps it.
    pub retry_for_secs: Option<u64>,
    /// Replaces the setting of the same name (`queue_events`); `None` keeps it.
    pub queue_events: Option<usize>,
    /// Replaces the setting of the same name (`concurrency`); `None` keeps it.
    pub concurrency: Option<usize>,
    /// Replaces the setting of the same name (`reclaim_after_secs`); `None` keeps it.
    pub reclaim_after_secs: Option<u64>,
}

impl WebhookOverrides {
    /// Writes the values given into `s`.
    pub fn apply(&self, s: &mut WebhookSettings) {
        let ms = |v: Option<u64>, target: &mut Duration| {
            if let Some(v) = v {
                *target = Duration::from_millis(v);
            }
        };
        ms(self.delay_ms, &mut s.delay);
        ms(self.batch_window_ms, &mut s.batch_window);
        ms(self.timeout_ms, &mut s.timeout);
        ms(self.retry_first_ms, &mut s.retry_first);
        ms(self.retry_max_ms, &mut s.retry_max);
        if let Some(v) = self.retry_for_secs {
            s.retry_for = Duration::from_secs(v);
        }
        if let Some(v) = self.reclaim_after_secs {
            s.reclaim_after = Duration::from_secs(v);
        }
        if let Some(v) = self.max_batch_events {
            s.max_batch_events = v;
        }
        if let Some(v) = self.queue_events {
            s.queue_events = v;
        }
        if let Some(v) = self.concurrency {
            s.concurrency = v;
        }
    }
}

impl WebhookSettings {
    /// The first problem, as (setting, reason).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        const HOUR: Duration = Duration::from_secs(3600);
        let bounded = [
            ("webhooks.delay_ms", self.delay, Duration::from_secs(60)),
            (
                "webhooks.batch_window_ms",
                self.batch_window,
                Duration::from_secs(10),
            ),
            ("webhooks.timeout_ms", self.timeout, Duration::from_secs(60)),
            ("webhooks.retry_first_ms", self.retry_first, HOUR),
            ("webhooks.retry_max_ms", self.retry_max, HOUR),
            ("webhooks.retry_for_secs", self.retry_for, 24 * HOUR),
            ("webhooks.reclaim_after_secs", self.reclaim_after, HOUR),
        ];
        for (setting, value, max) in bounded {
            if value > max {
                return Err((setting, format!("must be at most {} ms", max.as_millis())));
            }
        }
        if self.timeout.is_zero() {
            return Err(("webhooks.timeout_ms", "must be greater than 0".to_string()));
        }
        if self.reclaim_after < Duration::from_secs(1) {
            return Err((
                "webhooks.reclaim_after_secs",
                "must be at least 1 second".to_string(),
            ));
        }
        if self.retry_first.is_zero() {
            return Err((
                "webhooks.retry_first_ms",
                "must be greater than 0".to_string(),
            ));
        }
        if self.retry_max < self.retry_first {
            return Err((
                "webhooks.retry_max_ms",
                "must be at least webhooks.retry_first_ms".to_string(),
            ));
        }
        for (setting, value, max) in [
            ("webhooks.max_batch_events", self.max_batch_events, 1000),
            ("webhooks.queue_events", self.queue_events, 10_000_000),
            ("webhooks.concurrency", self.concurrency, 1000),
        ] {
            if value == 0 || value > max {
                return Err((setting, format!("must be between 1 and {max}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: &str) -> WebhookEntry {
        serde_json::from_str(json).expect("entry parses")
    }

    #[test]
    fn soketi_shaped_targets_parse() {
        let targets = parse_json_targets(
            r#"[{"url":"https://backend.example/hook","event_types":["channel_occupied","member_added"],
                 "filter":{"channel_name_starts_with":"presence-"},"headers":{"X-Token":"t"}},
                {"url":"http://127.0.0.1:9/all"}]"#,
        )
        .expect("array parses")
        .0;
        let first = targets[0].check().expect("valid");
        assert!(first.takes(WebhookKind::MemberAdded, "presence-room"));
        assert!(!first.takes(WebhookKind::MemberAdded, "private-room"));
        assert!(!first.takes(WebhookKind::ClientEvent, "presence-room"));
        assert_eq!(
            first.headers,
            vec![("X-Token".to_string(), "t".to_string())]
        );
        let second = targets[1].check().expect("valid");
        assert_eq!(second.kinds, KindSet::ALL);
        assert!(second.takes(WebhookKind::CacheMiss, "cache-x"));
    }

    #[test]
    fn bad_targets_name_the_field() {
        for (json, field) in [
            (r#"{"event_types":["channel_occupied"]}"#, "url"),
            (r#"{"url":"ftp://x/"}"#, "url"),
            (r#"{"url":"not a url"}"#, "url"),
            (r#"{"url":"http:///path"}"#, "url"),
            (
                r#"{"url":"http://x/","event_types":["channel_opened"]}"#,
                "event_types",
            ),
            (r#"{"url":"http://x/","event_types":[]}"#, "event_types"),
            (
                r#"{"url":"http://x/","headers":{"X-Pusher-Signature":"forged"}}"#,
                "headers",
            ),
        ] {
            let got = entry(json).check().expect_err(json);
            assert_eq!(got.0, field, "{json}: {}", got.1);
        }
        assert!(
            parse_json_targets(r#"{"url":"http://x/"}"#).is_err(),
            "not an array"
        );
        assert!(parse_json_targets(r#"[{"url":"http://x/","lambda":{}}]"#).is_err());
    }

    #[test]
    fn settings_are_bounded() {
        assert_eq!(WebhookSettings::default().check(), Ok(()));
        let mut s = WebhookSettings::default();
        WebhookOverrides {
            retry_first_ms: Some(10_000),
            retry_max_ms: Some(5_000),
            ..WebhookOverrides::default()
        }
        .apply(&mut s);
        assert_eq!(s.check().map_err(|e| e.0), Err("webhooks.retry_max_ms"));
        let s = WebhookSettings {
            concurrency: 0,
            ..WebhookSettings::default()
        };
        assert_eq!(s.check().map_err(|e| e.0), Err("webhooks.concurrency"));
    }
}
