//! Query strings: `k=v` pairs split on `&`, percent-decoded with `+` as a space, which is
//! how every Pusher SDK's query must be read before checking a signature.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// One decoded `(key, value)` pair; borrowed from the query unless decoding changed it.
pub(crate) type Pair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// Decoded `(key, value)` pairs in the order given.
pub(crate) fn parse(query: &str) -> Vec<Pair<'_>> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> Cow<'_, str> {
    // Signed API requests are mostly plain ASCII: nothing to decode, nothing to copy.
    if !s.contains(['+', '%']) {
        return Cow::Borrowed(s);
    }
    let spaced = s.replace('+', " ");
    Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
}

/// The first value of `key`.
pub(crate) fn get<'p>(pairs: &'p [Pair<'_>], key: &str) -> Option<&'p str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_and_plus() {
        let q = parse("info=user_count%2Csubscription_count&name=Something+else&flag&x=a%20b");
        assert_eq!(get(&q, "info"), Some("user_count,subscription_count"));
        assert_eq!(get(&q, "name"), Some("Something else"));
        assert_eq!(get(&q, "flag"), Some(""));
        assert_eq!(get(&q, "x"), Some("a b"));
        assert_eq!(get(&q, "missing"), None);
    }
}
