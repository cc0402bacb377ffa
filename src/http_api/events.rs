//! `POST /events` and `POST /batch_events`: validate every event first, then encode each
//! (event, channel) frame once and push it to the channel's subscribers. The event's `data`
//! string is escaped once into the frame, never re-parsed.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::auth::VerifiedRequest;
use super::counts::Counts;
use super::error::ApiError;
use crate::apps::App;
use crate::protocol::channel::{self, ChannelKind};
use crate::protocol::encode::Event;
use crate::protocol::limits::MAX_EVENT_NAME_LEN;
use crate::protocol::socket_id::{ConnId, SocketId, SocketIds};

/// Borrowed from the request body wherever no unescaping is needed.
#[derive(Debug, Deserialize)]
struct EventBody<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    channels: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow)]
    socket_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    info: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<EventBody<'a>>,
}

/// An event that passed validation, ready to publish.
#[derive(Debug)]
struct Prepared<'a> {
    name: Cow<'a, str>,
    /// The JSON string literal from the request, spliced into the frame as it is: the frame
    /// carries `data` as a JSON string too, so there is nothing to unescape and re-escape.
    data: &'a RawValue,
    channels: Vec<Cow<'a, str>>,
    except: Option<ConnId>,
    /// The excluded socket as posted, for the other nodes (it may be one of theirs).
    except_id: Option<Cow<'a, str>>,
    info: Option<Info>,
}

/// The data string itself, which a cache channel keeps for `info=cache`.
fn data_text(raw: &RawValue) -> String {
    serde_json::from_str(raw.get()).unwrap_or_default()
}

#[derive(Debug, Clone, Copy, Default)]
struct Info {
    subscription_count: bool,
    user_count: bool,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

pub(crate) fn trigger(
    req: &VerifiedRequest,
    socket_ids: &SocketIds,
    counts: &Counts,
) -> Result<String, ApiError> {
    let body: EventBody =
        serde_json::from_slice(&req.body).map_err(|e| bad(format!("Invalid JSON body: {e}")))?;
    let event = prepare(&req.app, body, socket_ids, true)?;
    publish(&req.app, &event);
    Ok(match event.info {
        Some(info) => Value::Object(Map::from_iter([(
            "channels".to_string(),
            Value::Object(channel_info(counts, &event.channels, info)),
        )]))
        .to_string(),
        None => "{}".to_string(),
    })
}

/// Publishes one event given as `POST /events` takes it, for a caller that has already
/// authorized the request some other way (the debug console).
pub(crate) fn publish_json(app: &App, body: &[u8], socket_ids: &SocketIds) -> Result<(), ApiError> {
    let body: EventBody =
        serde_json::from_slice(body).map_err(|e| bad(format!("Invalid JSON body: {e}")))?;
    let event = prepare(app, body, socket_ids, true)?;
    publish(app, &event);
    Ok(())
}

/// How many events a batch body holds (0 when it is not a batch: it is refused later).
pub(crate) fn batch_len(body: &[u8]) -> u64 {
    #[derive(Deserialize)]
    struct Count {
        batch: Vec<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Count>(body).map_or(0, |c| c.batch.len() as u64)
}

pub(crate) fn batch(
    req: &VerifiedRequest,
    socket_ids: &SocketIds,
    counts: &Counts,
) -> Result<String, ApiError> {
    let events = publish_batch(&req.app, &req.body, socket_ids)?;
    if events.iter().all(|e| e.info.is_none()) {
        return Ok("{}".to_string());
    }
    let items: Vec<Value> = events
        .iter()
        .map(|e| match e.info {
            // One channel per batch item: its attributes, not a map of channels.
            Some(info) => channel_info(counts, &e.channels, info)
                .into_iter()
                .next()
                .map(|(_, v)| v)
                .unwrap_or_else(|| Value::Object(Map::new())),
            None => Value::Object(Map::new()),
        })
        .collect();
    Ok(serde_json::json!({ "batch": items }).to_string())
}

/// Validates every event of a `POST /batch_events` body, then publishes them all; for a
/// caller that has already authorized the request some other way (the embedded
/// broadcaster).
pub(crate) fn publish_batch_json(
    app: &App,
    body: &[u8],
    socket_ids: &SocketIds,
) -> Result<(), ApiError> {
    publish_batch(app, body, socket_ids).map(|_| ())
}

fn publish_batch<'a>(
    app: &App,
    body: &'a [u8],
    socket_ids: &SocketIds,
) -> Result<Vec<Prepared<'a>>, ApiError> {
    let body: BatchBody =
        serde_json::from_slice(body).map_err(|e| bad(format!("Invalid JSON body: {e}")))?;
    let limit = app.config.max_batch_events;
    if body.batch.len() > limit {
        return Err(bad(format!(
            "Cannot batch-send more than {limit} events at once; got {}",
            body.batch.len()
        )));
    }
    let events = body
        .batch
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            prepare(app, e, socket_ids, false).map_err(|err| match err {
                ApiError::BadRequest(m) => bad(format!("batch[{i}]: {m}")),
                ApiError::PayloadTooLarge(m) => {
                    ApiError::PayloadTooLarge(format!("batch[{i}]: {m}"))
                }
                other => other,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for event in &events {
        publish(app, event);
    }
    Ok(events)
}

fn prepare<'a>(
    app: &App,
    body: EventBody<'a>,
    socket_ids: &SocketIds,
    multi: bool,
) -> Result<Prepared<'a>, ApiError> {
    let cfg = &app.config;
    let name = body
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("Missing event name"))?;
    if name.len() > MAX_EVENT_NAME_LEN {
        return Err(bad(format!(
            "Event name is too long. Maximum allowed size is {MAX_EVENT_NAME_LEN}."
        )));
    }
    if name.starts_with("pusher:") || name.starts_with("pusher_internal:") {
        return Err(bad(
            "Event names starting with pusher: or pusher_internal: are reserved",
        ));
    }
    let raw = body.data.ok_or_else(|| bad("Missing data"))?;
    let limit = cfg.max_event_payload_bytes;
    // Pusher takes `data` as a string (the SDKs JSON-encode it) and answers 400 to anything
    // else; accepting an object would let a payload arrive re-encoded in a form no hosted
    // app ever sees.
    if raw.get() == "null" {
        return Err(bad("Missing data"));
    }
    if !raw.get().starts_with('"') {
        return Err(bad(
            "Expected data parameter to be a string: JSON-encode the payload first",
        ));
    }
    // Escaping only lengthens a string, so the literal's length bounds the data's; decode
    // only when that bound is over the limit.
    let bound = raw.get().len() - 2;
    let data_len = if bound > limit {
        serde_json::from_str::<String>(raw.get())
            .map_err(|e| bad(format!("Invalid data: {e}")))?
            .len()
    } else {
        bound
    };
    let data = raw;
    if data_len > limit {
        return Err(ApiError::PayloadTooLarge(format!(
            "The event data should be at most {limit} bytes; got {data_len}"
        )));
    }
    let mut channels = match (body.channels, body.channel) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "Give either `channels` (a list) or `channel`, not both",
            ));
        }
        (Some(list), None) if !list.is_empty() => list,
        (None, Some(one)) => vec![one],
        _ => {
            return Err(bad(
                "Missing channels: give `channels` (a list) or `channel`",
            ));
        }
    };
    if !multi && channels.len() > 1 {
        return Err(bad("A batch event goes to exactly one channel"));
    }
    if channels.len() > cfg.max_event_channels {
        return Err(bad(format!(
            "Cannot broadcast to more than {} channels at once",
            cfg.max_event_channels
        )));
    }
    // Usually one name: a quadratic pass allocates nothing. A hash set bounds the work when
    // an app allows many channels per event.
    if channels.len() <= 16 {
        let mut i = 1;
        while i < channels.len() {
            if channels[..i].contains(&channels[i]) {
                channels.remove(i);
            } else {
                i += 1;
            }
        }
    } else {
        let mut seen = std::collections::HashSet::new();
        channels.retain(|c| seen.insert(c.clone()));
    }
    for ch in &channels {
        let spec =
            channel::classify(ch).map_err(|e| bad(format!("Invalid channel name {ch:?}: {e}")))?;
        if spec.kind == ChannelKind::Encrypted && channels.len() > 1 {
            return Err(bad(
                "An event to an encrypted channel cannot go to other channels too",
            ));
        }
    }
    let except = match &body.socket_id {
        None => None,
        Some(text) => {
            let id =
                SocketId::parse(text).ok_or_else(|| bad(format!("Invalid socket_id {text:?}")))?;
            socket_ids.local_conn(&id)
        }
    };
    let info = body.info.map(|attrs| {
        let mut info = Info::default();
        for a in attrs.split(',').map(str::trim) {
            match a {
                "subscription_count" => info.subscription_count = true,
                "user_count" => info.user_count = true,
                _ => {}
            }
        }
        info
    });
    Ok(Prepared {
        name,
        data,
        channels,
        except,
        except_id: body.socket_id,
        info,
    })
}

fn publish(app: &App, event: &Prepared<'_>) {
    if app.console.is_open() {
        app.console.api_event(serde_json::json!({
            "channels": event.channels,
            "event": event.name,
            "data": data_text(event.data),
            "socket_id": event.except_id,
        }));
    }
    for ch in &event.channels {
        let frame = Event::new(&event.name)
            .channel(ch)
            .raw(event.data)
            .to_frame();
        let spec = channel::classify(ch);
        match spec {
            Ok(spec) if spec.kind == ChannelKind::User => {
                let user = ch.strip_prefix(channel::USER_CHANNEL_PREFIX).unwrap_or("");
                app.users.send(user, &frame, event.except);
                if let Some(cluster) = &app.cluster {
                    cluster.publish(ch, event.except_id.as_deref(), &frame);
                }
            }
            Ok(spec) if spec.cache => {
                app.registry.publish_cached(
                    ch,
                    &frame,
                    &data_text(event.data),
                    app.config.cache_ttl,
                    event.except,
                );
                if let Some(cluster) = &app.cluster {
                    cluster.publish_cached(
                        ch,
                        event.except_id.as_deref(),
                        &frame,
                        app.config.cache_ttl,
                    );
                }
            }
            _ => {
                app.registry.publish(ch, &frame, event.except);
                if let Some(cluster) = &app.cluster {
                    cluster.publish(ch, event.except_id.as_deref(), &frame);
                }
            }
        }
    }
}

/// `{channel: {subscription_count?, user_count?}}` for the channels an event went to.
fn channel_info(counts: &Counts, channels: &[Cow<'_, str>], info: Info) -> Map<String, Value> {
    let mut out = BTreeMap::new();
    for ch in channels {
        let stats = counts.stats(ch);
        let mut attrs = Map::new();
        if info.subscription_count {
            attrs.insert(
                "subscription_count".into(),
                stats.map(|s| s.subscriptions).unwrap_or(0).into(),
            );
        }
        let presence = channel::classify(ch)
            .map(|s| s.kind == ChannelKind::Presence)
            .unwrap_or(false);
        if info.user_count && presence {
            attrs.insert(
                "user_count".into(),
                stats.and_then(|s| s.users).unwrap_or(0).into(),
            );
        }
        out.insert(ch.to_string(), Value::Object(attrs));
    }
    out.into_iter().collect()
}
