//! Request signing exactly as the official Pusher server SDKs sign, and the escaping of what
//! goes into a URL. Pure code: no clock (the caller passes the timestamp), no I/O.
//!
//! The query carries `auth_key`, `auth_timestamp`, `auth_version=1.0` and, when there is a
//! body, `body_md5` (hex MD5 of the body), next to the request's own parameters. Sorted by key,
//! joined as `k=v` with `&` over the *unescaped* values, they make the last line of
//! `METHOD\nPATH\nQUERY`, whose hex HMAC-SHA256 under the app secret is `auth_signature`.
//!
//! Two escapings, chosen so the server reads back exactly what was signed:
//! - Query values are escaped strictly (all but RFC 3986 unreserved characters), because
//!   servers percent-decode the query, `+` as a space, before checking the signature.
//! - Path segments are escaped minimally (only what RFC 3986 forbids in a segment), because
//!   servers sign the path as it arrives. Every character Pusher allows in a channel name or
//!   user id (`A-Za-z0-9_-=@,.;`) passes unchanged, so the path and the signature are the
//!   same as the official SDKs' (which send those names unescaped); only the `#` of
//!   `#server-to-user-…` and characters outside that set are escaped.

use md5::{Digest, Md5};
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::protocol::auth;

/// Escaped in a path segment: controls, space, and every ASCII character that is not a
/// `pchar` of RFC 3986 (non-ASCII is always escaped as UTF-8).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Escaped in a query key or value: all but the RFC 3986 unreserved characters, so `+`,
/// `&`, `=`, `%` and `,` arrive as themselves after decoding.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` escaped as one path segment. A segment of dots only (`.`, `..`) is escaped whole,
/// so that no proxy on the way resolves it as a relative path step.
pub(super) fn segment(value: &str) -> String {
    if !value.is_empty() && value.bytes().all(|b| b == b'.') {
        return "%2E".repeat(value.len());
    }
    utf8_percent_encode(value, SEGMENT).to_string()
}

/// The credentials a request is signed with.
pub(super) struct Credentials<'a> {
    pub(super) key: &'a str,
    pub(super) secret: &'a str,
}

/// The complete query string of a signed request: `params` plus the `auth_*` parameters and
/// `body_md5` (when `body` is not empty), sorted by key and escaped, then `auth_signature`.
/// `path` is the request path exactly as it will be sent (already escaped); `params` keys
/// are lower-case.
pub(super) fn signed_query(
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: &[u8],
    credentials: &Credentials<'_>,
    timestamp: u64,
) -> String {
    let (query, signature) = sign(method, path, params, body, credentials, timestamp);
    format!("{query}&auth_signature={signature}")
}

/// The escaped query (without `auth_signature`) and the signature, apart, for tests.
fn sign(
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: &[u8],
    credentials: &Credentials<'_>,
    timestamp: u64,
) -> (String, String) {
    let timestamp = timestamp.to_string();
    let body_md5 = (!body.is_empty()).then(|| hex::encode(Md5::digest(body)));
    let mut all: Vec<(&str, &str)> = Vec::with_capacity(params.len() + 4);
    all.extend_from_slice(params);
    all.push(("auth_key", credentials.key));
    all.push(("auth_timestamp", &timestamp));
    all.push(("auth_version", "1.0"));
    if let Some(md5) = &body_md5 {
        all.push(("body_md5", md5));
    }
    // By key, then value: the order the server rebuilds (byte-wise, like every SDK).
    all.sort_unstable();

    let mut to_sign = format!("{method}\n{path}\n");
    let mut query = String::new();
    for (i, (k, v)) in all.iter().enumerate() {
        if i > 0 {
            to_sign.push('&');
            query.push('&');
        }
        to_sign.push_str(k);
        to_sign.push('=');
        to_sign.push_str(v);
        query.extend(utf8_percent_encode(k, QUERY));
        query.push('=');
        query.extend(utf8_percent_encode(v, QUERY));
    }
    (query, auth::sign(credentials.secret, &to_sign))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::query;

    // Pusher's REST API docs (`rest-api.md`, "Worked authentication example"), re-verified
    // in shared/pusher-protocol.md §10.2.
    const DOCS: Credentials<'static> = Credentials {
        key: "278d425bdf160c739803",
        secret: "7ad3773142a6692b25b8",
    };
    const DOCS_TIMESTAMP: u64 = 1353088179;
    const DOCS_BODY: &str =
        r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;

    #[test]
    fn documented_post_vector() {
        let (query, signature) = sign(
            "POST",
            "/apps/3/events",
            &[],
            DOCS_BODY.as_bytes(),
            &DOCS,
            DOCS_TIMESTAMP,
        );
        assert_eq!(
            query,
            "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0\
             &body_md5=ec365a775a4cd0599faeb73354201b6f"
        );
        assert_eq!(
            signature,
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
        let full = signed_query(
            "POST",
            "/apps/3/events",
            &[],
            DOCS_BODY.as_bytes(),
            &DOCS,
            DOCS_TIMESTAMP,
        );
        assert_eq!(full, format!("{query}&auth_signature={signature}"));
    }

    #[test]
    fn get_vector_sorts_request_parameters_in_and_has_no_body_md5() {
        // shared/pusher-protocol.md §10.2, "an extra GET vector".
        let (query, signature) = sign(
            "GET",
            "/apps/3/channels",
            &[("info", "user_count"), ("filter_by_prefix", "presence-")],
            b"",
            &DOCS,
            DOCS_TIMESTAMP,
        );
        assert_eq!(
            query,
            "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0\
             &filter_by_prefix=presence-&info=user_count"
        );
        assert_eq!(
            signature,
            "16819168891cb5dfd72b5c7a5d3d602605b26c6ba1930033b5e2eeeb65010291"
        );
    }

    #[test]
    fn escaped_query_values_decode_to_what_was_signed() {
        let awkward = "a+b &c=d%2C,é#?/";
        let (query, signature) = sign(
            "GET",
            "/apps/3/channels",
            &[("filter_by_prefix", awkward), ("info", "user_count,x")],
            b"",
            &DOCS,
            DOCS_TIMESTAMP,
        );
        assert!(!query.contains(['+', ' ', '#', '?', '/', ',']), "{query}");
        // Read back the way the server reads a query, the values are the signed ones.
        let pairs = query::parse(&query);
        assert_eq!(query::get(&pairs, "filter_by_prefix"), Some(awkward));
        assert_eq!(query::get(&pairs, "info"), Some("user_count,x"));
        let to_sign = format!(
            "GET\n/apps/3/channels\nauth_key={}&auth_timestamp={DOCS_TIMESTAMP}&auth_version=1.0\
             &filter_by_prefix={awkward}&info=user_count,x",
            DOCS.key
        );
        assert_eq!(signature, auth::sign(DOCS.secret, &to_sign));
    }

    #[test]
    fn path_segments_keep_the_channel_charset_and_escape_the_rest() {
        assert_eq!(segment("private-a@b,c;d=e"), "private-a@b,c;d=e");
        assert_eq!(segment("presence-A_z-0.9"), "presence-A_z-0.9");
        assert_eq!(segment("#server-to-user-x"), "%23server-to-user-x");
        assert_eq!(segment("a/b?c%d e"), "a%2Fb%3Fc%25d%20e");
        assert_eq!(segment("é"), "%C3%A9");
        assert_eq!(segment("."), "%2E");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("a..b"), "a..b");
        assert_eq!(segment(""), "");
    }
}
