//! Just enough base64 (RFC 4648) for encrypted channels: decoding the app's master key and
//! encoding each channel's shared secret. No direct dependency of the crate provides it, and
//! two small functions are cheaper than a new dependency.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard alphabet with `=` padding: what pusher-js (tweetnacl-util) decodes.
pub(super) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        // The URL-safe alphabet is accepted too, as Node's `Buffer.from(_, "base64")` does.
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes standard or URL-safe base64, padded or not. Whitespace, stray `=` or other
/// characters make it `None`.
pub(super) fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let data = match bytes {
        [rest @ .., b'=', b'='] | [rest @ .., b'='] => {
            // Padded input comes in whole quartets.
            if !bytes.len().is_multiple_of(4) {
                return None;
            }
            rest
        }
        _ => bytes,
    };
    if data.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for &c in data {
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4648 §10.
    const VECTORS: [(&str, &str); 7] = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];

    #[test]
    fn rfc_4648_vectors() {
        for (plain, encoded) in VECTORS {
            assert_eq!(encode(plain.as_bytes()), encoded);
            assert_eq!(decode(encoded).as_deref(), Some(plain.as_bytes()));
            assert_eq!(
                decode(encoded.trim_end_matches('=')).as_deref(),
                Some(plain.as_bytes()),
                "unpadded {encoded}"
            );
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for len in 0..all.len() {
            let text = encode(&all[..len]);
            assert_eq!(decode(&text).as_deref(), Some(&all[..len]), "{len}");
        }
        // 0xfb 0xff → "+/8=" in the standard alphabet, "-_8" URL-safe.
        assert_eq!(encode(&[0xfb, 0xff]), "+/8=");
        assert_eq!(decode("-_8").as_deref(), Some(&[0xfb, 0xff][..]));
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "Z", "Zg=", "Zg===", "=", "Zm9v\n", "Zm 9v", "Zm9*", "Z=g=", "Zm9vY",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
