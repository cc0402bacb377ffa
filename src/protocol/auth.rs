//! HMAC-SHA256 signatures: channel authorisation, sign-in and HTTP API requests all sign a
//! string with the app secret and send lower-case hex. Checks decode the hex and let `hmac`
//! compare in constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail; fall back to an empty key anyway
    // rather than panic.
    match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => HmacSha256::new_from_slice(&[]).unwrap_or_else(|_| unreachable!()),
    }
}

/// `hex(HMAC_SHA256(secret, message))`, as the Pusher SDKs produce it.
pub(crate) fn sign(secret: &str, message: &str) -> String {
    sign_bytes(secret, message.as_bytes())
}

/// `hex(HMAC_SHA256(secret, bytes))`: a webhook body's `X-Pusher-Signature`.
pub(crate) fn sign_bytes(secret: &str, bytes: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(bytes);
    hex::encode(m.finalize().into_bytes())
}

/// Whether `signature_hex` is the signature of `parts` joined (no separators added),
/// compared in constant time.
pub(crate) fn verify_parts(secret: &str, parts: &[&str], signature_hex: &str) -> bool {
    let mut expected = [0u8; 32];
    if hex::decode_to_slice(signature_hex, &mut expected).is_err() {
        return false;
    }
    let mut m = mac(secret);
    for part in parts {
        m.update(part.as_bytes());
    }
    m.verify_slice(&expected).is_ok()
}

/// Checks a channel or sign-in token `"<app_key>:<hex signature>"`: the key part must be this
/// app's key, and the signature must cover `string_to_sign` (given in parts to avoid
/// building the string).
pub(crate) fn verify_token(
    app_key: &str,
    secret: &str,
    token: &str,
    string_to_sign: &[&str],
) -> bool {
    let Some((key, signature)) = token.split_once(':') else {
        return false;
    };
    // The key is not secret; only the signature needs a constant-time check.
    key == app_key && verify_parts(secret, string_to_sign, signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from Pusher's auth-signatures docs, recomputed in shared/pusher-protocol.md §5.5.
    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    #[test]
    fn private_channel_vector() {
        assert_eq!(
            sign(SECRET, "1234.1234:private-foobar"),
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        let token =
            format!("{KEY}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4");
        assert!(verify_token(
            KEY,
            SECRET,
            &token,
            &["1234.1234", ":", "private-foobar"]
        ));
        assert!(!verify_token(
            KEY,
            SECRET,
            &token,
            &["1234.1234", ":", "private-foobaz"]
        ));
        assert!(!verify_token(
            "other",
            SECRET,
            &token,
            &["1234.1234", ":", "private-foobar"]
        ));
    }

    #[test]
    fn presence_and_user_vectors() {
        assert_eq!(
            sign(
                SECRET,
                "1234.1234:presence-foobar:{\"user_id\":10,\"user_info\":{\"name\":\"Mr. Pusher\"}}"
            ),
            "afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c"
        );
        assert_eq!(
            sign(SECRET, "1234.1234::user::{\"id\":\"12345\"}"),
            "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
        );
    }

    #[test]
    fn rest_api_vector() {
        let s = "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f";
        assert_eq!(
            sign(SECRET, s),
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "no-colon",
            "278d425bdf160c739803:",
            "278d425bdf160c739803:zz",
            ":abc",
        ] {
            assert!(!verify_token(KEY, SECRET, bad, &["x"]), "{bad}");
        }
    }
}
