//! One webhook event, encoded once as the JSON object that goes into `events`, and the
//! request body that carries a batch of them.

use std::sync::Arc;

use serde::Serialize;

use super::settings::WebhookKind;

/// An event's fields in Pusher's order (`name` first), so bodies read as Pusher's do.
#[derive(Serialize)]
struct Fields<'a> {
    name: &'static str,
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription_count: Option<usize>,
}

impl<'a> Fields<'a> {
    fn new(kind: WebhookKind, channel: &'a str) -> Self {
        Fields {
            name: kind.name(),
            channel,
            event: None,
            data: None,
            socket_id: None,
            user_id: None,
            subscription_count: None,
        }
    }

    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An event ready for delivery. Cloned into each target's queue: the JSON is shared.
#[derive(Debug, Clone)]
pub(crate) struct WebhookEvent {
    pub kind: WebhookKind,
    pub channel: Arc<str>,
    /// When the event happened (the body's `time_ms` is its batch's earliest).
    pub time_ms: u64,
    pub json: Arc<str>,
    /// Released once every target is done with the event (cluster: acknowledges the
    /// stream entry it came from).
    pub done: Option<Arc<dyn Done>>,
}

/// What to do once nobody holds an event any more.
pub(crate) trait Done: Send + Sync + std::fmt::Debug {}

impl WebhookEvent {
    pub(crate) fn new(kind: WebhookKind, channel: Arc<str>, time_ms: u64, json: String) -> Self {
        WebhookEvent {
            kind,
            channel,
            time_ms,
            json: Arc::from(json),
            done: None,
        }
    }

    /// `channel_occupied`, `channel_vacated` or `cache_miss`.
    pub(crate) fn channel(kind: WebhookKind, channel: &str, time_ms: u64) -> Self {
        let json = Fields::new(kind, channel).encode();
        WebhookEvent::new(kind, Arc::from(channel), time_ms, json)
    }

    /// `member_added` or `member_removed`.
    pub(crate) fn member(kind: WebhookKind, channel: &str, user_id: &str, time_ms: u64) -> Self {
        let json = Fields {
            user_id: Some(user_id),
            ..Fields::new(kind, channel)
        }
        .encode();
        WebhookEvent::new(kind, Arc::from(channel), time_ms, json)
    }

    pub(crate) fn client_event(
        channel: &str,
        event: &str,
        data: &str,
        socket_id: &str,
        user_id: Option<&str>,
        time_ms: u64,
    ) -> Self {
        let json = Fields {
            event: Some(event),
            data: Some(data),
            socket_id: Some(socket_id),
            user_id,
            ..Fields::new(WebhookKind::ClientEvent, channel)
        }
        .encode();
        WebhookEvent::new(WebhookKind::ClientEvent, Arc::from(channel), time_ms, json)
    }

    pub(crate) fn subscription_count(channel: &str, count: usize, time_ms: u64) -> Self {
        let json = Fields {
            subscription_count: Some(count),
            ..Fields::new(WebhookKind::SubscriptionCount, channel)
        }
        .encode();
        WebhookEvent::new(
            WebhookKind::SubscriptionCount,
            Arc::from(channel),
            time_ms,
            json,
        )
    }
}

/// `{"time_ms":T,"events":[...]}` for a batch, `T` its earliest event's time.
pub(crate) fn body(events: &[WebhookEvent]) -> String {
    let time_ms = events.iter().map(|e| e.time_ms).min().unwrap_or(0);
    let mut out =
        String::with_capacity(40 + events.iter().map(|e| e.json.len() + 1).sum::<usize>());
    out.push_str("{\"time_ms\":");
    out.push_str(&time_ms.to_string());
    out.push_str(",\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&e.json);
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn body_carries_the_earliest_time_and_every_event() {
        let events = [
            WebhookEvent::channel(WebhookKind::ChannelOccupied, "a", 20),
            WebhookEvent::member(WebhookKind::MemberAdded, "presence-b", "u\"1", 10),
            WebhookEvent::client_event("private-c", "client-x", "{\"k\":1}", "1.2", None, 30),
            WebhookEvent::subscription_count("d", 7, 40),
        ];
        let parsed: serde_json::Value = serde_json::from_str(&body(&events)).expect("JSON");
        assert_eq!(parsed["time_ms"], 10);
        assert_eq!(
            parsed["events"][0],
            json!({"name":"channel_occupied","channel":"a"})
        );
        assert_eq!(parsed["events"][1]["user_id"], "u\"1");
        assert_eq!(parsed["events"][2]["data"], "{\"k\":1}");
        assert!(parsed["events"][2].get("user_id").is_none());
        assert_eq!(parsed["events"][3]["subscription_count"], 7);
        assert!(events[0].json.starts_with("{\"name\":\"channel_occupied\""));
    }
}
