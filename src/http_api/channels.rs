//! Channel queries: which channels are occupied, one channel's counts, a presence
//! channel's users.

use serde_json::{Map, Value, json};

use super::auth::VerifiedRequest;
use super::counts::Counts;
use super::error::ApiError;
use crate::protocol::channel::{self, ChannelKind};

fn attributes(req: &VerifiedRequest) -> Vec<String> {
    req.param("info")
        .map(|i| {
            i.split(',')
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /channels`: occupied channels, optionally filtered by prefix.
pub(crate) fn list(req: &VerifiedRequest, counts: &Counts) -> Result<String, ApiError> {
    let prefix = req.param("filter_by_prefix").unwrap_or("");
    let attrs = attributes(req);
    let user_count = attrs.iter().any(|a| a == "user_count");
    let subscription_count = attrs.iter().any(|a| a == "subscription_count");
    if user_count && !prefix.starts_with("presence-") {
        return Err(ApiError::BadRequest(
            "info=user_count is only allowed with filter_by_prefix=presence-".into(),
        ));
    }
    let mut channels = Map::new();
    let mut found = counts.channels(prefix);
    found.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, stats) in found {
        let mut entry = Map::new();
        if user_count {
            entry.insert("user_count".into(), stats.users.unwrap_or(0).into());
        }
        if subscription_count {
            entry.insert("subscription_count".into(), stats.subscriptions.into());
        }
        channels.insert(name, Value::Object(entry));
    }
    Ok(json!({ "channels": channels }).to_string())
}

/// `GET /channels/{name}`: `occupied` always, other attributes on request.
pub(crate) fn info(req: &VerifiedRequest, counts: &Counts, name: &str) -> Result<String, ApiError> {
    let spec = channel::classify(name)
        .map_err(|e| ApiError::BadRequest(format!("Invalid channel name: {e}")))?;
    let attrs = attributes(req);
    let stats = counts.stats(name);
    let mut out = Map::new();
    out.insert("occupied".into(), stats.is_some().into());
    for attr in &attrs {
        match attr.as_str() {
            "user_count" => {
                if spec.kind != ChannelKind::Presence {
                    return Err(ApiError::BadRequest(
                        "info=user_count is only available for presence channels".into(),
                    ));
                }
                out.insert(
                    "user_count".into(),
                    stats.and_then(|s| s.users).unwrap_or(0).into(),
                );
            }
            "subscription_count" => {
                out.insert(
                    "subscription_count".into(),
                    stats.map(|s| s.subscriptions).unwrap_or(0).into(),
                );
            }
            "cache" => {
                if !spec.cache {
                    return Err(ApiError::BadRequest(
                        "info=cache is only available for cache channels".into(),
                    ));
                }
                let cache = req
                    .app
                    .registry
                    .cache(name)
                    .map(|c| json!({ "data": &*c.data, "ttl": c.ttl.as_secs() }));
                out.insert("cache".into(), cache.unwrap_or(Value::Null));
            }
            _ => {}
        }
    }
    Ok(Value::Object(out).to_string())
}

/// `GET /channels/{name}/users`: distinct user ids of a presence channel.
pub(crate) fn users(counts: &Counts, name: &str) -> Result<String, ApiError> {
    let spec = channel::classify(name)
        .map_err(|e| ApiError::BadRequest(format!("Invalid channel name: {e}")))?;
    if spec.kind != ChannelKind::Presence {
        return Err(ApiError::BadRequest(
            "Users can only be listed for presence channels".into(),
        ));
    }
    let mut ids = counts.users(name);
    ids.sort();
    let users: Vec<Value> = ids.into_iter().map(|id| json!({ "id": id })).collect();
    Ok(json!({ "users": users }).to_string())
}
