//! What crosses Redis for one publish: the origin node, the socket to leave out, and the
//! complete WebSocket frame, so that a receiving node pushes the bytes to its subscribers
//! without decoding the event.
//!
//! Layout: `C1` (format), origin length (1 byte), origin node id, excluded socket id length
//! (1 byte, 0 for none), the socket id's text, then the frame to its end.
//!
//! Presence member events travel on the same pub/sub channel, written by the Redis scripts
//! (`scripts`): `P1+VERSION:LEN:USER_ID{user_info}` and `P1-VERSION:LEN:USER_ID`.

use bytes::{BufMut, Bytes, BytesMut};

const MAGIC: &[u8; 2] = b"C1";

/// A publish as it arrives from another node.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Delivery<'a> {
    pub origin: &'a str,
    pub except: Option<&'a str>,
    pub frame: Bytes,
}

/// Encodes a publish; `origin` and `except` are at most 255 bytes (node ids are capped at 64
/// by the configuration, socket ids are two numbers).
pub(crate) fn encode(origin: &str, except: Option<&str>, frame: &[u8]) -> Bytes {
    let except = except.unwrap_or("");
    let origin = &origin.as_bytes()[..origin.len().min(255)];
    let except = &except.as_bytes()[..except.len().min(255)];
    let mut out = BytesMut::with_capacity(4 + origin.len() + except.len() + frame.len());
    out.put_slice(MAGIC);
    out.put_u8(origin.len() as u8);
    out.put_slice(origin);
    out.put_u8(except.len() as u8);
    out.put_slice(except);
    out.put_slice(frame);
    out.freeze()
}

/// Decodes a payload; `None` for anything that is not one of ours.
pub(crate) fn decode(payload: &Bytes) -> Option<Delivery<'_>> {
    let rest = payload.strip_prefix(MAGIC)?;
    let (&origin_len, rest) = rest.split_first()?;
    let origin = std::str::from_utf8(rest.get(..origin_len as usize)?).ok()?;
    let rest = &rest[origin_len as usize..];
    let (&except_len, rest) = rest.split_first()?;
    let except = std::str::from_utf8(rest.get(..except_len as usize)?).ok()?;
    let frame_start = payload.len() - (rest.len() - except_len as usize);
    Some(Delivery {
        origin,
        except: (!except.is_empty()).then_some(except),
        frame: payload.slice(frame_start..),
    })
}

/// A presence member event, as a Redis script published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberEvent {
    pub added: bool,
    /// The channel's presence version after this event.
    pub version: u64,
    pub user_id: String,
    /// `user_info` as signed; empty when there was none.
    pub info: String,
}

/// Decodes a member event; `None` for anything else.
pub(crate) fn decode_member(payload: &[u8]) -> Option<MemberEvent> {
    let text = std::str::from_utf8(payload.strip_prefix(b"P1")?).ok()?;
    let added = match text.as_bytes().first()? {
        b'+' => true,
        b'-' => false,
        _ => return None,
    };
    let (version, rest) = text[1..].split_once(':')?;
    let (len, rest) = rest.split_once(':')?;
    let len: usize = len.parse().ok()?;
    if !rest.is_char_boundary(len.min(rest.len())) || rest.len() < len {
        return None;
    }
    Some(MemberEvent {
        added,
        version: version.parse().ok()?,
        user_id: rest[..len].to_string(),
        info: rest[len..].to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_events_decode() {
        let added = decode_member(b"P1+7:3:a:b{\"name\":\"A\"}").expect("added");
        assert_eq!(
            added,
            MemberEvent {
                added: true,
                version: 7,
                user_id: "a:b".into(),
                info: "{\"name\":\"A\"}".into()
            }
        );
        let removed = decode_member(b"P1-8:1:x").expect("removed");
        assert!(!removed.added && removed.user_id == "x" && removed.info.is_empty());
        for bad in [
            &b"P1*1:1:x"[..],
            b"P1+1:9:x",
            b"P1+a:1:x",
            b"C1+1:1:x",
            b"P1",
        ] {
            assert_eq!(decode_member(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn round_trip() {
        let payload = encode("node-a", Some("123.456"), b"\x81\x02hi");
        let d = decode(&payload).expect("decodes");
        assert_eq!(d.origin, "node-a");
        assert_eq!(d.except, Some("123.456"));
        assert_eq!(&d.frame[..], b"\x81\x02hi");
        let payload = encode("b", None, b"x");
        let d = decode(&payload).expect("decodes");
        assert_eq!((d.origin, d.except, &d.frame[..]), ("b", None, &b"x"[..]));
    }

    #[test]
    fn refuses_foreign_or_short_payloads() {
        for bad in [
            &b""[..],
            b"C",
            b"C1",
            b"XX\x01a\x00",
            b"C1\x05ab",
            b"C1\x01a\x04ab",
        ] {
            assert_eq!(decode(&Bytes::copy_from_slice(bad)), None, "{bad:?}");
        }
    }
}
