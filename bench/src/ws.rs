//! A minimal WebSocket client for Pusher traffic: hand-written upgrade, own frame parser,
//! no per-socket buffers while idle (reads go through one thread-local scratch buffer and only
//! a partial frame is kept per socket).

use std::cell::RefCell;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0u8; 64 * 1024]);
}

const MAX_MESSAGE: usize = 16 << 20;

/// Where the WebSocket endpoint is.
#[derive(Clone, Debug)]
pub(crate) struct WsTarget {
    pub(crate) addr: SocketAddr,
    pub(crate) host_header: String,
    pub(crate) path: String, // /app/{key}?protocol=7&client=crier-bench&version=0.1
}

/// An incoming message, borrowed from the read buffer.
pub(crate) enum In<'a> {
    Text(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    Close(Option<u16>),
}

#[derive(Default)]
pub(crate) struct FrameBuf {
    rbuf: Vec<u8>,
    frag: Vec<u8>,
    frag_active: bool,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Parses one server frame: (first byte, payload, total length).
fn parse(buf: &[u8]) -> io::Result<Option<(u8, &[u8], usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b1 & 0x80 != 0 {
        return Err(bad("masked frame from server"));
    }
    let (len, hl) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let l = u64::from_be_bytes(buf[2..10].try_into().unwrap());
            if l > MAX_MESSAGE as u64 {
                return Err(bad("frame too large"));
            }
            (l as usize, 10)
        }
        l => (l as usize, 2),
    };
    if len > MAX_MESSAGE {
        return Err(bad("frame too large"));
    }
    if buf.len() < hl + len {
        return Ok(None);
    }
    Ok(Some((b0, &buf[hl..hl + len], hl + len)))
}

fn drain<F: FnMut(In<'_>)>(
    frag: &mut Vec<u8>,
    frag_active: &mut bool,
    data: &[u8],
    f: &mut F,
) -> io::Result<usize> {
    let mut pos = 0;
    while let Some((b0, payload, used)) = parse(&data[pos..])? {
        pos += used;
        let fin = b0 & 0x80 != 0;
        match b0 & 0x0f {
            0x0 => {
                if !*frag_active {
                    return Err(bad("unexpected continuation"));
                }
                frag.extend_from_slice(payload);
                if frag.len() > MAX_MESSAGE {
                    return Err(bad("message too large"));
                }
                if fin {
                    f(In::Text(frag));
                    *frag = Vec::new();
                    *frag_active = false;
                }
            }
            0x1 | 0x2 => {
                if fin {
                    f(In::Text(payload));
                } else {
                    *frag_active = true;
                    frag.clear();
                    frag.extend_from_slice(payload);
                }
            }
            0x8 => {
                let code = if payload.len() >= 2 {
                    Some(u16::from_be_bytes([payload[0], payload[1]]))
                } else {
                    None
                };
                f(In::Close(code));
            }
            0x9 => f(In::Ping(payload)),
            0xA => f(In::Pong),
            _ => return Err(bad("bad opcode")),
        }
    }
    Ok(pos)
}

impl FrameBuf {
    /// Feeds bytes read from the socket; calls `f` for each complete message.
    pub(crate) fn feed<F: FnMut(In<'_>)>(&mut self, data: &[u8], f: &mut F) -> io::Result<()> {
        if self.rbuf.is_empty() {
            let used = drain(&mut self.frag, &mut self.frag_active, data, f)?;
            if used < data.len() {
                self.rbuf.extend_from_slice(&data[used..]);
            }
        } else {
            self.rbuf.extend_from_slice(data);
            let used = drain(&mut self.frag, &mut self.frag_active, &self.rbuf, f)?;
            self.rbuf.drain(..used);
            if self.rbuf.is_empty() {
                self.rbuf = Vec::new(); // give the memory back while idle
            }
        }
        Ok(())
    }
}

/// Appends a masked client frame.
pub(crate) fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: u32) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n < 65536 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    let m = mask.to_be_bytes();
    out.extend_from_slice(&m);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i & 3]));
}

pub(crate) struct WsConn {
    pub(crate) stream: TcpStream,
    pub(crate) fb: FrameBuf,
    mask: u32,
}

fn b64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in input.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        s.push(T[(n >> 18) as usize & 63] as char);
        s.push(T[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..hay.len() - needle.len() + 1]
            .iter()
            .position(|b| *b == first)
        {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// Opens a TCP connection from `src` and completes the WebSocket upgrade. Any bytes that
/// followed the 101 response are fed to `f`.
pub(crate) async fn open<F: FnMut(In<'_>)>(
    t: &WsTarget,
    src: Ipv4Addr,
    rcvbuf: Option<u32>,
    f: &mut F,
) -> io::Result<WsConn> {
    let sock = TcpSocket::new_v4()?;
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n)?;
    }
    sock.bind(SocketAddr::V4(SocketAddrV4::new(src, 0)))?;
    let mut stream = sock.connect(t.addr).await?;
    stream.set_nodelay(true)?;
    let key: [u8; 16] = rand::random();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        t.path,
        t.host_header,
        b64(&key)
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let end = loop {
        stream.readable().await?;
        let mut tmp = [0u8; 1024];
        match stream.try_read(&mut tmp) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during upgrade",
                ));
            }
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 16 * 1024 {
            return Err(bad("upgrade response too large"));
        }
    };
    let status_line = buf.split(|b| *b == b'\n').next().unwrap_or(&[]);
    if !status_line.starts_with(b"HTTP/1.1 101") {
        let s = String::from_utf8_lossy(status_line).trim().to_string();
        return Err(io::Error::other(format!("upgrade refused: {s}")));
    }
    let mut conn = WsConn {
        stream,
        fb: FrameBuf::default(),
        mask: rand::random::<u32>() | 1,
    };
    if end < buf.len() {
        conn.fb.feed(&buf[end..], f)?;
    }
    Ok(conn)
}

impl WsConn {
    fn next_mask(&mut self) -> u32 {
        // xorshift32
        let mut x = self.mask;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask = x;
        x
    }

    pub(crate) fn frame(&mut self, out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
        let m = self.next_mask();
        encode(out, opcode, payload, m);
    }

    pub(crate) async fn send_text(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 8);
        self.frame(&mut out, 0x1, payload);
        self.stream.write_all(&out).await
    }

    /// Waits until the socket is readable, reads once (up to 64 KiB) and feeds it to `f`.
    /// Returns Ok(true) on end of stream. Goes through `poll_read`, which on epoll treats a
    /// short read as "drained": one read() per wake-up instead of two.
    pub(crate) async fn read_some<F: FnMut(In<'_>)>(&mut self, f: &mut F) -> io::Result<bool> {
        let stream = &mut self.stream;
        let fb = &mut self.fb;
        std::future::poll_fn(|cx| {
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                let n = {
                    let mut rb = ReadBuf::new(&mut s[..]);
                    match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => rb.filled().len(),
                    }
                };
                if n == 0 {
                    return Poll::Ready(Ok(true));
                }
                Poll::Ready(fb.feed(&s[..n], f).map(|_| false))
            })
        })
        .await
    }

    /// Non-blocking: reads up to `max_reads` chunks. None if nothing was available.
    pub(crate) fn try_read_all<F: FnMut(In<'_>)>(
        &mut self,
        f: &mut F,
        max_reads: usize,
    ) -> io::Result<Option<bool>> {
        let stream = &self.stream;
        let fb = &mut self.fb;
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let mut got = false;
            for _ in 0..max_reads {
                match stream.try_read(&mut s[..]) {
                    Ok(0) => return Ok(Some(true)),
                    Ok(n) => {
                        got = true;
                        fb.feed(&s[..n], f)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            Ok(if got { Some(false) } else { None })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn b64_key() {
        assert_eq!(b64(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
    }
    #[test]
    fn parse_split_frames() {
        let mut fb = FrameBuf::default();
        let mut got = Vec::new();
        let mut data = vec![0x81, 5];
        data.extend_from_slice(b"hello");
        data.extend_from_slice(&[0x01, 2, b'a', b'b', 0x89, 0, 0x80, 1, b'c']);
        for b in &data {
            fb.feed(std::slice::from_ref(b), &mut |m| match m {
                In::Text(t) => got.push(String::from_utf8_lossy(t).to_string()),
                In::Ping(_) => got.push("ping".into()),
                _ => {}
            })
            .unwrap();
        }
        assert_eq!(got, vec!["hello", "ping", "abc"]);
    }
}
