//! Reads client WebSocket frames with no buffer held while the connection is idle.
//!
//! fastwebsockets' reader keeps an 8 KB buffer per socket for the socket's whole life; with
//! tens of thousands of mostly idle subscribers that is most of a connection's memory. This
//! reader waits for readability with no buffer, reads what is there, parses every complete
//! frame, and lets the buffer go as soon as nothing partial is left in it. It is polled by
//! the connection's own future and keeps its state in itself.
//! fastwebsockets still does the upgrade handshake and provides the unmasking routine.

use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};

use super::transport::Transport;

/// Bytes requested from the socket at a time when nothing partial is buffered.
const READ_CHUNK: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

#[derive(Debug)]
pub(crate) struct Frame {
    pub fin: bool,
    pub opcode: OpCode,
    pub payload: Bytes,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The peer closed the TCP stream or it failed.
    Closed,
    /// A frame's declared length is over the limit.
    TooLarge,
    /// Reserved bits, unknown opcode, unmasked client frame, bad control frame.
    Protocol(&'static str),
}

#[derive(Debug)]
pub(crate) struct FrameReader {
    buf: BytesMut,
    max_payload: usize,
}

impl FrameReader {
    /// `early` holds bytes read before the upgrade completed, if any.
    pub(crate) fn new(early: Bytes, max_payload: usize) -> Self {
        FrameReader {
            buf: BytesMut::from(&early[..]),
            max_payload,
        }
    }

    /// The next frame, reading from `stream` when nothing complete is buffered. Waits (and
    /// keeps `cx`'s waker with the socket) only when the socket has nothing to read.
    pub(crate) fn poll_next<S: Transport>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut S,
    ) -> Poll<Result<Frame, FrameError>> {
        loop {
            let frame_len = match self.parse_frame()? {
                Parsed::Frame(frame) => {
                    if self.buf.is_empty() {
                        // Nothing partial left: hand the allocation back while idle.
                        self.buf = BytesMut::new();
                    }
                    return Poll::Ready(Ok(frame));
                }
                Parsed::Partial { frame_len } => frame_len,
            };
            let grow = growth(self.buf.len(), frame_len);
            match ready!(stream.poll_read_more(cx, &mut self.buf, grow)) {
                Ok(0) | Err(_) => return Poll::Ready(Err(FrameError::Closed)),
                Ok(_) => {}
            }
        }
    }

    /// Parses one complete frame from the buffer, if there is one.
    #[cfg(test)]
    fn parse(&mut self) -> Result<Option<Frame>, FrameError> {
        Ok(match self.parse_frame()? {
            Parsed::Frame(frame) => Some(frame),
            Parsed::Partial { .. } => None,
        })
    }

    /// Parses one complete frame from the buffer, or says how long the partial one will be.
    fn parse_frame(&mut self) -> Result<Parsed, FrameError> {
        const UNKNOWN: Parsed = Parsed::Partial { frame_len: 0 };
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(UNKNOWN);
        }
        let fin = b[0] & 0x80 != 0;
        if b[0] & 0x70 != 0 {
            return Err(FrameError::Protocol(
                "reserved bits set (no extension was negotiated)",
            ));
        }
        let opcode = match b[0] & 0x0f {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return Err(FrameError::Protocol("unknown opcode")),
        };
        if b[1] & 0x80 == 0 {
            return Err(FrameError::Protocol("client frames must be masked"));
        }
        let (len, mut header) = match b[1] & 0x7f {
            126 => {
                if b.len() < 4 {
                    return Ok(UNKNOWN);
                }
                (u16::from_be_bytes([b[2], b[3]]) as u64, 4)
            }
            127 => {
                if b.len() < 10 {
                    return Ok(UNKNOWN);
                }
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            n => (n as u64, 2),
        };
        let control = matches!(opcode, OpCode::Close | OpCode::Ping | OpCode::Pong);
        if control && (!fin || len > 125) {
            return Err(FrameError::Protocol(
                "control frames must be whole and at most 125 bytes",
            ));
        }
        if len > self.max_payload as u64 {
            return Err(FrameError::TooLarge);
        }
        let len = len as usize;
        if b.len() < header + 4 {
            return Ok(Parsed::Partial {
                frame_len: header + 4 + len,
            });
        }
        let mask = [b[header], b[header + 1], b[header + 2], b[header + 3]];
        header += 4;
        if b.len() < header + len {
            // No reservation for the declared length: the buffer grows with what arrives.
            return Ok(Parsed::Partial {
                frame_len: header + len,
            });
        }
        self.buf.advance(header);
        let mut payload = self.buf.split_to(len);
        fastwebsockets::unmask(&mut payload, mask);
        Ok(Parsed::Frame(Frame {
            fin,
            opcode,
            payload: payload.freeze(),
        }))
    }
}

enum Parsed {
    Frame(Frame),
    /// `frame_len`: the whole frame's length once its header is in, 0 before.
    Partial {
        frame_len: usize,
    },
}

/// How much to add to a full buffer holding `have` bytes of a frame `frame_len` long: a
/// chunk, or as much as is already there (doubling, so a large frame is copied O(1) times
/// per byte), never more than the frame still needs. A frame header alone never reserves
/// its declared length: 5,000 sockets each declaring 256 KB and sending nothing cost 5,000
/// small buffers, not 1.3 GB.
fn growth(have: usize, frame_len: usize) -> usize {
    let missing = frame_len.saturating_sub(have);
    if missing == 0 {
        return READ_CHUNK;
    }
    missing.min(have.max(READ_CHUNK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn reader(bytes: &[u8], max: usize) -> FrameReader {
        FrameReader::new(Bytes::copy_from_slice(bytes), max)
    }

    #[test]
    fn parses_frames_split_anywhere() {
        let mut all = masked(0x81, b"hello");
        all.extend(masked(0x89, b"p"));
        all.extend(masked(0x81, &[b'x'; 300]));
        for cut in 0..all.len() {
            let mut r = reader(&all[..cut], 1000);
            let mut got = Vec::new();
            while let Ok(Some(f)) = r.parse() {
                got.push(f);
            }
            r.buf.extend_from_slice(&all[cut..]);
            while let Ok(Some(f)) = r.parse() {
                got.push(f);
            }
            assert_eq!(got.len(), 3, "cut at {cut}");
            assert_eq!(&got[0].payload[..], b"hello");
            assert_eq!(got[1].opcode, OpCode::Ping);
            assert_eq!(got[2].payload.len(), 300);
        }
    }

    #[test]
    fn rejects_bad_frames() {
        assert_eq!(
            reader(&masked(0x81, &[0; 11]), 10).parse().err(),
            Some(FrameError::TooLarge)
        );
        assert!(reader(&masked(0x81, &[0; 10]), 10).parse().is_ok());
        assert!(matches!(
            reader(&[0x81, 0x01, b'a'], 10).parse(),
            Err(FrameError::Protocol(_))
        ));
        assert!(matches!(
            reader(&masked(0xC1, b"a"), 10).parse(),
            Err(FrameError::Protocol(_))
        ));
        assert!(matches!(
            reader(&masked(0x83, b"a"), 10).parse(),
            Err(FrameError::Protocol(_))
        ));
        assert!(matches!(
            reader(&masked(0x09, b"a"), 10).parse(),
            Err(FrameError::Protocol(_))
        ));
        assert!(matches!(
            reader(&masked(0x89, &[0; 126]), 1000).parse(),
            Err(FrameError::Protocol(_))
        ));
    }

    #[test]
    fn buffer_grows_with_the_bytes_that_arrive_not_the_declared_length() {
        let header = [0x81u8, 0x80 | 127, 0, 0, 0, 0, 0, 4, 0, 0, 1, 2, 3, 4];
        let mut r = reader(&header, 1 << 20);
        assert!(matches!(
            r.parse_frame(),
            Ok(Parsed::Partial { frame_len }) if frame_len == 14 + 262_144
        ));
        assert!(r.buf.capacity() < 4096, "{}", r.buf.capacity());
        assert_eq!(growth(14, 14 + 262_144), READ_CHUNK);
        assert_eq!(growth(100_000, 14 + 262_144), 100_000);
        assert_eq!(growth(262_000, 14 + 262_144), 158);
        assert_eq!(growth(0, 0), READ_CHUNK);
    }

    #[test]
    fn large_declared_length_is_refused_before_the_payload_arrives() {
        let header = [0x81u8, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(
            reader(&header, 1 << 20).parse().err(),
            Some(FrameError::TooLarge)
        );
    }
}
