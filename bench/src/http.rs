//! Signed Pusher HTTP API requests over a minimal keep-alive HTTP/1.1 client.

use std::cell::OnceCell;
use std::io::{self, Write};
use std::net::SocketAddr;

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::sys::unix_secs;
use crate::ws::find;

#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) addr: SocketAddr,
    pub(crate) host_header: String,
    pub(crate) app_id: String,
    pub(crate) key: String,
    pub(crate) secret: String,
    /// The keyed HMAC, made on first use.
    pub(crate) mac: OnceCell<Hmac<Sha256>>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("addr", &self.addr)
            .field("app_id", &self.app_id)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// The complete HTTP request for `POST /apps/{id}/events` with `body`, signed now.
    pub(crate) fn events_request(&self, body: &[u8]) -> Vec<u8> {
        self.signed_request("POST", "events", body, unix_secs())
    }

    /// A signed request, built in one buffer: the publish scenario builds one per event, on
    /// the same two cores as the server it measures, so the client's own cost matters.
    pub(crate) fn signed_request(
        &self,
        method: &str,
        endpoint: &str,
        body: &[u8],
        ts: u64,
    ) -> Vec<u8> {
        let mut md5_hex = [0u8; 32];
        let mut req = Vec::with_capacity(320 + body.len());
        // The string to sign is `METHOD\npath\nquery`; the request line carries
        // `METHOD path?query`, so the query is written once and signed from the buffer.
        let _ = write!(req, "{method} /apps/{}/{endpoint}?", self.app_id);
        let query_start = req.len();
        let _ = write!(
            req,
            "auth_key={}&auth_timestamp={ts}&auth_version=1.0",
            self.key
        );
        if !body.is_empty() {
            let _ = hex::encode_to_slice(Md5::digest(body), &mut md5_hex);
            req.extend_from_slice(b"&body_md5=");
            req.extend_from_slice(&md5_hex);
        }
        let path_start = method.len() + 1;
        let mut mac = self.mac_template();
        mac.update(method.as_bytes());
        mac.update(b"\n");
        mac.update(&req[path_start..query_start - 1]);
        mac.update(b"\n");
        mac.update(&req[query_start..]);
        let mut sig_hex = [0u8; 64];
        let _ = hex::encode_to_slice(mac.finalize().into_bytes(), &mut sig_hex);
        req.extend_from_slice(b"&auth_signature=");
        req.extend_from_slice(&sig_hex);
        let _ = write!(req, " HTTP/1.1\r\nHost: {}\r\n", self.host_header);
        if !body.is_empty() {
            let _ = write!(
                req,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        req
    }

    /// HMAC keyed with the app secret; cloned per request, which skips hashing the key.
    fn mac_template(&self) -> Hmac<Sha256> {
        self.mac
            .get_or_init(|| {
                Hmac::<Sha256>::new_from_slice(self.secret.as_bytes()).expect("hmac key")
            })
            .clone()
    }
}

/// One keep-alive HTTP/1.1 connection; reconnects when the server closes it.
pub(crate) struct HttpConn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    pub(crate) reconnects: u64,
}

impl HttpConn {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        HttpConn {
            addr,
            stream: None,
            buf: Vec::with_capacity(4096),
            reconnects: 0,
        }
    }

    /// Sends `req` and returns (status, body). Retries once on a stale keep-alive connection.
    pub(crate) async fn roundtrip(&mut self, req: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        let fresh = self.stream.is_none();
        match self.try_roundtrip(req).await {
            Ok(r) => Ok(r),
            Err(_) if !fresh => {
                self.stream = None;
                self.try_roundtrip(req).await
            }
            Err(e) => Err(e),
        }
    }

    async fn try_roundtrip(&mut self, req: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
            self.buf.clear();
            self.reconnects += 1;
        }
        let r = self.exchange(req).await;
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    async fn fill(&mut self) -> io::Result<()> {
        let s = self.stream.as_mut().unwrap();
        self.buf.reserve(8192);
        loop {
            s.readable().await?;
            match s.try_read_buf(&mut self.buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "http connection closed",
                    ));
                }
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    async fn exchange(&mut self, req: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        self.stream.as_mut().unwrap().write_all(req).await?;
        let hend = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..hend])
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "response head not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
        let mut clen: Option<usize> = None;
        let mut chunked = false;
        let mut close = false;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("content-length") {
                    clen = v.parse().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.to_ascii_lowercase().contains("chunked");
                } else if k.eq_ignore_ascii_case("connection") {
                    close = v.eq_ignore_ascii_case("close");
                }
            }
        }
        self.buf.drain(..hend);
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let le = loop {
                    if let Some(p) = find(&self.buf, b"\r\n") {
                        break p;
                    }
                    self.fill().await?;
                };
                let size_s = String::from_utf8_lossy(&self.buf[..le]).to_string();
                let size = usize::from_str_radix(size_s.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
                self.buf.drain(..le + 2);
                while self.buf.len() < size + 2 {
                    self.fill().await?;
                }
                body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
                if size == 0 {
                    break;
                }
            }
            body
        } else if let Some(n) = clen {
            while self.buf.len() < n {
                self.fill().await?;
            }
            self.buf.drain(..n).collect()
        } else if status == 204 || status == 304 {
            Vec::new()
        } else {
            // read to close
            loop {
                if self.fill().await.is_err() {
                    break;
                }
            }
            close = true;
            std::mem::take(&mut self.buf)
        };
        if close {
            self.stream = None;
        }
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, to_sign: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
        mac.update(to_sign.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn docs_vector() {
        // shared/pusher-protocol.md §10.2 worked example
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(
            hex::encode(Md5::digest(body)),
            "ec365a775a4cd0599faeb73354201b6f"
        );
        let s = sign(
            "7ad3773142a6692b25b8",
            "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f",
        );
        assert_eq!(
            s,
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
        let api = Api {
            addr: "127.0.0.1:1".parse().unwrap(),
            host_header: "x".into(),
            app_id: "3".into(),
            key: "278d425bdf160c739803".into(),
            secret: "7ad3773142a6692b25b8".into(),
            mac: OnceCell::new(),
        };
        let req =
            String::from_utf8(api.signed_request("POST", "events", body, 1353088179)).unwrap();
        assert!(req.contains(
            "auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        ));
    }
}
