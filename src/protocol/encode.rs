//! Outgoing frames, built once into reference-counted buffers. A broadcast encodes its JSON
//! and WebSocket header a single time; every recipient's outbox gets a clone of the same
//! `Bytes` handle, so fan-out costs no per-recipient serialisation or copy.
//!
//! Server frames are unmasked, so a frame is just a 2-10 byte header before the JSON text.
//! The JSON is written after a 10-byte gap and the header is placed so that it ends where
//! the JSON starts: no second copy of the payload.

use bytes::Bytes;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

use super::clip::{self, clip};

const MAX_HEADER: usize = 10;
const OPCODE_TEXT: u8 = 0x1;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;
const OPCODE_PONG: u8 = 0xA;
const FIN: u8 = 0x80;

/// The `data` of an outgoing event.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Data<'a> {
    /// A string, JSON-escaped into the frame (the HTTP API's data, `"{}"`, presence JSON).
    Text(&'a str),
    /// JSON passed through verbatim (a client event's data, an error object).
    Raw(&'a RawValue),
}

/// One outgoing Pusher message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Event<'a> {
    pub event: &'a str,
    pub channel: Option<&'a str>,
    pub data: Option<Data<'a>>,
    pub user_id: Option<&'a str>,
}

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Data::Text(t) => s.serialize_str(t),
            Data::Raw(r) => r.serialize(s),
        }
    }
}

impl Serialize for Event<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("event", self.event)?;
        if let Some(c) = self.channel {
            m.serialize_entry("channel", c)?;
        }
        if let Some(d) = &self.data {
            m.serialize_entry("data", d)?;
        }
        if let Some(u) = self.user_id {
            m.serialize_entry("user_id", u)?;
        }
        m.end()
    }
}

impl<'a> Event<'a> {
    pub(crate) fn new(event: &'a str) -> Self {
        Event {
            event,
            channel: None,
            data: None,
            user_id: None,
        }
    }

    pub(crate) fn channel(mut self, channel: &'a str) -> Self {
        self.channel = Some(channel);
        self
    }

    pub(crate) fn text(mut self, data: &'a str) -> Self {
        self.data = Some(Data::Text(data));
        self
    }

    pub(crate) fn raw(mut self, data: &'a RawValue) -> Self {
        self.data = Some(Data::Raw(data));
        self
    }

    pub(crate) fn user_id(mut self, user_id: &'a str) -> Self {
        self.user_id = Some(user_id);
        self
    }

    /// About the JSON length, so the frame's buffer is allocated once.
    fn size_hint(&self) -> usize {
        let data = match self.data {
            Some(Data::Text(t)) => t.len() + t.len() / 8 + 2,
            Some(Data::Raw(r)) => r.get().len(),
            None => 0,
        };
        let text = |s: Option<&str>| s.map_or(0, |s| s.len() + 16);
        32 + self.event.len() + text(self.channel) + text(self.user_id) + data
    }

    /// The complete WebSocket text frame for this event.
    pub(crate) fn to_frame(self) -> Bytes {
        let mut buf = Vec::with_capacity(MAX_HEADER + self.size_hint());
        buf.resize(MAX_HEADER, 0);
        // Serialising borrowed strings into a Vec cannot fail.
        if serde_json::to_writer(&mut buf, &self).is_err() {
            buf.truncate(MAX_HEADER);
        }
        finish(buf, OPCODE_TEXT)
    }
}

/// Turns `buf` (10 reserved bytes, then the payload) into a frame without moving the payload.
fn finish(mut buf: Vec<u8>, opcode: u8) -> Bytes {
    let len = buf.len() - MAX_HEADER;
    let start = if len < 126 {
        buf[MAX_HEADER - 2] = FIN | opcode;
        buf[MAX_HEADER - 1] = len as u8;
        MAX_HEADER - 2
    } else if len <= u16::MAX as usize {
        buf[MAX_HEADER - 4] = FIN | opcode;
        buf[MAX_HEADER - 3] = 126;
        buf[MAX_HEADER - 2..MAX_HEADER].copy_from_slice(&(len as u16).to_be_bytes());
        MAX_HEADER - 4
    } else {
        buf[0] = FIN | opcode;
        buf[1] = 127;
        buf[2..MAX_HEADER].copy_from_slice(&(len as u64).to_be_bytes());
        0
    };
    Bytes::from(buf).slice(start..)
}

fn control(opcode: u8, payload: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(MAX_HEADER + payload.len());
    buf.resize(MAX_HEADER, 0);
    buf.extend_from_slice(payload);
    finish(buf, opcode)
}

/// A close frame with `code` and a reason cut to fit the 125-byte control-frame limit.
pub(crate) fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    control(OPCODE_CLOSE, &payload)
}

pub(crate) fn ping_frame() -> Bytes {
    Bytes::from_static(&[FIN | OPCODE_PING, 0])
}

pub(crate) fn pong_frame(payload: &[u8]) -> Bytes {
    control(OPCODE_PONG, &payload[..payload.len().min(125)])
}

/// `pusher:error` with `{"code":code,"message":message}`; `code` is `null` for the
/// non-fatal errors real Pusher reports without one.
pub(crate) fn error_frame(code: Option<u16>, message: &str) -> Bytes {
    let message = clip(message, clip::MAX_MESSAGE);
    let data = serde_json::json!({ "code": code, "message": message });
    let raw = serde_json::value::to_raw_value(&data).ok();
    match raw {
        Some(raw) => Event::new("pusher:error").raw(&raw).to_frame(),
        None => Event::new("pusher:error").to_frame(),
    }
}

/// `pusher:subscription_error` for `channel` with `{type, error, status}`; Echo's `.error()`
/// fires on this form.
pub(crate) fn subscription_error_frame(
    channel: &str,
    kind: &str,
    error: &str,
    status: u16,
) -> Bytes {
    let error = clip(error, clip::MAX_MESSAGE);
    let channel = clip(channel, clip::MAX_CHANNEL);
    let channel = channel.as_ref();
    let data = serde_json::json!({ "type": kind, "error": error, "status": status });
    match serde_json::value::to_raw_value(&data) {
        Ok(raw) => Event::new("pusher:subscription_error")
            .channel(channel)
            .raw(&raw)
            .to_frame(),
        Err(_) => Event::new("pusher:subscription_error")
            .channel(channel)
            .to_frame(),
    }
}

/// The reply to `pusher:ping`, identical for every connection.
pub(crate) fn pusher_pong() -> Bytes {
    static FRAME: &[u8] = b"\x81\x21{\"event\":\"pusher:pong\",\"data\":{}}";
    Bytes::from_static(FRAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(frame: &Bytes) -> (u8, &[u8]) {
        let len = frame[1] as usize;
        match len {
            126 => (frame[0], &frame[4..]),
            127 => (frame[0], &frame[10..]),
            _ => (frame[0], &frame[2..]),
        }
    }

    #[test]
    fn event_with_string_data_is_escaped_once() {
        let f = Event::new("my-event")
            .channel("my-channel")
            .text("{\"a\":1}")
            .to_frame();
        let (op, body) = payload(&f);
        assert_eq!(op, 0x81);
        assert_eq!(
            body,
            br#"{"event":"my-event","channel":"my-channel","data":"{\"a\":1}"}"#
        );
        assert_eq!(f[1] as usize, body.len());
    }

    #[test]
    fn raw_data_and_user_id_pass_through() {
        let raw =
            RawValue::from_string("{\"x\": [1, 2]}".to_string()).unwrap_or_else(|e| panic!("{e}"));
        let f = Event::new("client-a")
            .channel("presence-c")
            .raw(&raw)
            .user_id("7")
            .to_frame();
        assert_eq!(
            payload(&f).1,
            br#"{"event":"client-a","channel":"presence-c","data":{"x": [1, 2]},"user_id":"7"}"#
        );
    }

    #[test]
    fn lengths_use_the_right_header_size() {
        let medium = "x".repeat(300);
        let f = Event::new("e").text(&medium).to_frame();
        assert_eq!(f[1], 126);
        assert_eq!(u16::from_be_bytes([f[2], f[3]]) as usize, f.len() - 4);
        let large = "x".repeat(70_000);
        let f = Event::new("e").text(&large).to_frame();
        assert_eq!(f[1], 127);
        let mut n = [0u8; 8];
        n.copy_from_slice(&f[2..10]);
        assert_eq!(u64::from_be_bytes(n) as usize, f.len() - 10);
    }

    #[test]
    fn static_pong_is_a_valid_frame() {
        let f = pusher_pong();
        assert_eq!(f[1] as usize, f.len() - 2);
        assert_eq!(&f[2..], br#"{"event":"pusher:pong","data":{}}"#);
    }

    #[test]
    fn close_frame_truncates_reason_on_char_boundary() {
        let f = close_frame(4200, &"é".repeat(100));
        assert!(f.len() - 2 <= 125);
        assert_eq!(u16::from_be_bytes([f[2], f[3]]), 4200);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }

    #[test]
    fn error_frame_has_code_and_message() {
        let f = error_frame(Some(4001), "Application does not exist");
        assert_eq!(
            payload(&f).1,
            br#"{"event":"pusher:error","data":{"code":4001,"message":"Application does not exist"}}"#
        );
        let f = error_frame(None, "bad");
        assert_eq!(
            payload(&f).1,
            br#"{"event":"pusher:error","data":{"code":null,"message":"bad"}}"#
        );
    }
}
