//! Request authentication, exactly as the Pusher server SDKs sign: the only producer of
//! [`VerifiedRequest`], so a handler that takes one cannot run on an unsigned request.
//!
//! String to sign: `METHOD\npath\nquery`, where the query is every parameter but
//! `auth_signature`, percent-decoded, keys lower-cased, sorted by key and joined as `k=v`
//! with `&`. `body_md5` must match a non-empty body (and, when the Python SDK sends it on a
//! GET, the empty one). Timestamps more than 600 s away from the server's clock are refused.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use md5::{Digest, Md5};

use super::error::ApiError;
use crate::apps::App;
use crate::protocol::{auth, query};

/// How far a request's `auth_timestamp` may be from the server's clock.
pub(crate) const TIMESTAMP_WINDOW_SECS: u64 = 600;

/// A request whose signature, key, timestamp and body hash were checked.
#[derive(Debug)]
pub(crate) struct VerifiedRequest<'q> {
    pub app: Arc<App>,
    pub params: Vec<query::Pair<'q>>,
    pub body: Bytes,
}

impl VerifiedRequest<'_> {
    pub(crate) fn param(&self, key: &str) -> Option<&str> {
        query::get(&self.params, key)
    }
}

/// A request whose key, timestamp and signature were checked from its head alone: what it
/// takes before the server reads a single byte of the body. The body's hash is checked by
/// [`SignedHead::with_body`].
#[derive(Debug)]
pub(crate) struct SignedHead<'q> {
    app: Arc<App>,
    params: Vec<query::Pair<'q>>,
}

impl<'q> SignedHead<'q> {
    pub(crate) fn param(&self, key: &str) -> Option<&str> {
        query::get(&self.params, key)
    }

    /// Checks `body` against the signed `body_md5`.
    pub(crate) fn with_body(self, body: Bytes) -> Result<VerifiedRequest<'q>, ApiError> {
        let body_md5 = self.param("body_md5");
        if !body.is_empty() || body_md5.is_some() {
            let actual: [u8; 16] = Md5::digest(&body).into();
            let mut given_bytes = [0u8; 16];
            match body_md5 {
                Some(given)
                    if hex::decode_to_slice(given, &mut given_bytes).is_ok()
                        && given_bytes == actual => {}
                Some(given) => {
                    return Err(ApiError::Unauthorized(format!(
                        "body_md5 {given} does not match the body (md5 {})",
                        hex::encode(actual)
                    )));
                }
                None => {
                    return Err(ApiError::Unauthorized(
                        "Missing body_md5 for a request with a body".into(),
                    ));
                }
            }
        }
        Ok(VerifiedRequest {
            app: self.app,
            params: self.params,
            body,
        })
    }
}

/// Checks key, version, timestamp and signature: everything but the body, whose hash the
/// signed query carries (`body_md5`), so no unsigned request gets its body read.
pub(crate) fn verify_head<'q>(
    app: Arc<App>,
    method: &str,
    path: &str,
    raw_query: &'q str,
) -> Result<SignedHead<'q>, ApiError> {
    let params = query::parse(raw_query);
    let get = |k: &str| query::get(&params, k);
    let unauthorized = |m: String| Err(ApiError::Unauthorized(m));

    let Some(key) = get("auth_key") else {
        return unauthorized("Missing auth_key".into());
    };
    if key != app.config.key {
        return unauthorized(format!(
            "Unknown auth_key {key:?} for app {}",
            app.config.id
        ));
    }
    let Some(signature) = get("auth_signature") else {
        return unauthorized("Missing auth_signature".into());
    };
    match get("auth_version") {
        Some("1.0") => {}
        other => return unauthorized(format!("auth_version must be 1.0, got {other:?}")),
    }
    let Some(ts) = get("auth_timestamp") else {
        return unauthorized("Missing auth_timestamp".into());
    };
    let Ok(ts) = ts.parse::<i64>() else {
        return unauthorized(format!("auth_timestamp is not a number: {ts:?}"));
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // abs_diff: `now - ts` overflows for a timestamp near i64::MIN.
    if now.abs_diff(ts) > TIMESTAMP_WINDOW_SECS {
        return unauthorized(format!(
            "Timestamp expired: given timestamp {ts} is not within {TIMESTAMP_WINDOW_SECS}s of server time {now}"
        ));
    }
    let string_to_sign = string_to_sign(method, path, &params);
    if !auth::verify_parts(&app.config.secret, &[&string_to_sign], signature) {
        return unauthorized(format!(
            "Invalid signature: you should have sent HmacSHA256Hex({string_to_sign:?}, your_secret_key), but you sent {signature:?}"
        ));
    }
    Ok(SignedHead { app, params })
}

/// [`verify_head`] and [`SignedHead::with_body`] in one, for a body already in hand.
#[cfg(test)]
pub(crate) fn verify<'q>(
    app: Arc<App>,
    method: &str,
    path: &str,
    raw_query: &'q str,
    body: Bytes,
) -> Result<VerifiedRequest<'q>, ApiError> {
    verify_head(app, method, path, raw_query)?.with_body(body)
}

/// `METHOD\npath\nquery`: every parameter but `auth_signature`, keys lower-cased, sorted by
/// key (then value), joined as `k=v` with `&`. Built in one buffer: this runs on every request.
fn string_to_sign(method: &str, path: &str, params: &[query::Pair<'_>]) -> String {
    let mut signed: Vec<(Cow<'_, str>, &str)> = params
        .iter()
        .filter(|(k, _)| k != "auth_signature")
        .map(|(k, v)| {
            let key = if k.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(k.to_ascii_lowercase())
            } else {
                Cow::Borrowed(k.as_ref())
            };
            (key, v.as_ref())
        })
        .collect();
    signed.sort_unstable();
    let len = params
        .iter()
        .map(|(k, v)| k.len() + v.len() + 2)
        .sum::<usize>();
    let mut out = String::with_capacity(method.len() + path.len() + 2 + len);
    out.push_str(method);
    out.push('\n');
    out.push_str(path);
    out.push('\n');
    for (i, (k, v)) in signed.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppConfig;

    fn app() -> Arc<App> {
        Arc::new(App::new(AppConfig {
            id: "3".into(),
            key: "278d425bdf160c739803".into(),
            secret: "7ad3773142a6692b25b8".into(),
            ..AppConfig::default()
        }))
    }

    fn signed_query(method: &str, path: &str, body: &str, extra: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut q = format!("auth_key=278d425bdf160c739803&auth_timestamp={now}&auth_version=1.0");
        if !body.is_empty() {
            q.push_str(&format!(
                "&body_md5={}",
                hex::encode(Md5::digest(body.as_bytes()))
            ));
        }
        if !extra.is_empty() {
            q.push('&');
            q.push_str(extra);
        }
        let mut pairs = query::parse(&q);
        pairs.sort();
        let qs = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let sig = auth::sign("7ad3773142a6692b25b8", &format!("{method}\n{path}\n{qs}"));
        format!("{q}&auth_signature={sig}")
    }

    #[test]
    fn accepts_a_correctly_signed_post() {
        let body = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let q = signed_query("POST", "/apps/3/events", body, "");
        assert!(verify(app(), "POST", "/apps/3/events", &q, Bytes::from(body)).is_ok());
    }

    #[test]
    fn refuses_tampering() {
        let body = r#"{"name":"foo"}"#;
        let q = signed_query("POST", "/apps/3/events", body, "");
        let r = verify(
            app(),
            "POST",
            "/apps/3/events",
            &q,
            Bytes::from(r#"{"name":"bar"}"#),
        );
        assert!(matches!(r, Err(ApiError::Unauthorized(m)) if m.contains("body_md5")));
        let r = verify(app(), "POST", "/apps/3/batch_events", &q, Bytes::from(body));
        assert!(matches!(r, Err(ApiError::Unauthorized(m)) if m.contains("Invalid signature")));
    }

    #[test]
    fn decodes_values_before_checking() {
        let q = signed_query(
            "GET",
            "/apps/3/channels",
            "",
            "info=user_count,subscription_count",
        );
        let encoded = q.replace(
            "user_count,subscription_count",
            "user_count%2Csubscription_count",
        );
        assert!(verify(app(), "GET", "/apps/3/channels", &encoded, Bytes::new()).is_ok());
    }

    #[test]
    fn extreme_timestamps_are_refused_without_overflow() {
        for ts in [i64::MIN, i64::MAX, -1] {
            let q = format!(
                "auth_key=278d425bdf160c739803&auth_timestamp={ts}&auth_version=1.0&auth_signature=00"
            );
            let r = verify(app(), "GET", "/apps/3/channels", &q, Bytes::new());
            assert!(
                matches!(&r, Err(ApiError::Unauthorized(m)) if m.contains("Timestamp expired")),
                "{ts}: {r:?}"
            );
        }
    }

    #[test]
    fn refuses_old_timestamps() {
        let q = "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";
        let body = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let r = verify(app(), "POST", "/apps/3/events", q, Bytes::from(body));
        assert!(matches!(r, Err(ApiError::Unauthorized(m)) if m.contains("Timestamp expired")));
    }
}
