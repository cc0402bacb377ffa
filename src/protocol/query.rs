//! Query strings: `k=v` pairs split on `&`, percent-decoded with `+` as a space, which is
//! how every Pusher SDK's query must be read before checking a signature.

use percent_encoding::percent_decode_str;

/// Decoded `(key, value)` pairs in the order given.
pub fn parse(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    // Signed API requests are mostly plain ASCII: one copy, no decoding pass.
    if !s.contains(['+', '%']) {
        return s.to_string();
    }
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// The first value of `key`.
pub fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
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
