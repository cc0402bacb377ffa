//! A tiny blocking RESP client for the few Redis commands the bench reads: `INFO stats`
//! (bytes in and out, commands) and `PUBSUB NUMSUB` (how many nodes listen to a channel).
//! Loopback only, no AUTH, no TLS; every call is bounded by a 2 s socket timeout.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Counters from `INFO stats`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stats {
    pub(crate) net_input_bytes: u64,
    pub(crate) net_output_bytes: u64,
    pub(crate) commands: u64,
    pub(crate) pubsub_channels: u64,
    /// Bytes of the INFO reply itself (counted in `total_net_output_bytes` of the next read).
    pub(crate) reply_bytes: u64,
}

/// A RESP value.
#[derive(Debug, PartialEq)]
pub(crate) enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

/// `redis://HOST:PORT` (or `HOST:PORT`) to a loopback address.
pub(crate) fn parse_url(url: &str) -> Result<SocketAddr, String> {
    let rest = url.strip_prefix("redis://").unwrap_or(url);
    if rest.contains('@') {
        return Err(format!(
            "--redis-url: credentials are not supported by the bench's RESP client: {url}"
        ));
    }
    let hostport = rest.split('/').next().unwrap_or("");
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:6379")
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("--redis-url: cannot resolve {hostport}: {e}"))?
        .find(|a| a.is_ipv4())
        .ok_or(format!("--redis-url: {hostport} has no IPv4 address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("--redis-url: refusing non-loopback {addr}"));
    }
    Ok(addr)
}

fn bad(m: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m.into())
}

/// Reads one RESP value; returns it and the number of bytes it took on the wire.
pub(crate) fn read_value<R: BufRead>(r: &mut R) -> io::Result<(Resp, u64)> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        return Err(bad("truncated RESP line"));
    }
    let mut used = line.len() as u64;
    let body = String::from_utf8_lossy(&line[1..line.len() - 2]).to_string();
    let num = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| bad(format!("bad RESP number {s}")))
    };
    let v = match line[0] {
        b'+' => Resp::Simple(body),
        b'-' => Resp::Error(body),
        b':' => Resp::Int(num(&body)?),
        b'$' => {
            let n = num(&body)?;
            if n < 0 {
                Resp::Bulk(None)
            } else {
                if n > 64 << 20 {
                    return Err(bad("RESP bulk string too large"));
                }
                let mut buf = vec![0u8; n as usize + 2];
                r.read_exact(&mut buf)?;
                used += buf.len() as u64;
                buf.truncate(n as usize);
                Resp::Bulk(Some(buf))
            }
        }
        b'*' => {
            let n = num(&body)?;
            if n < 0 {
                Resp::Array(None)
            } else {
                if n > 1 << 20 {
                    return Err(bad("RESP array too large"));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let (v, u) = read_value(r)?;
                    used += u;
                    items.push(v);
                }
                Resp::Array(Some(items))
            }
        }
        b => return Err(bad(format!("unknown RESP type byte {b}"))),
    };
    Ok((v, used))
}

/// A command as a RESP array of bulk strings.
pub(crate) fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn command(addr: SocketAddr, args: &[&str]) -> io::Result<(Resp, u64)> {
    let t = Duration::from_secs(2);
    let mut s = TcpStream::connect_timeout(&addr, t)?;
    s.set_read_timeout(Some(t))?;
    s.set_write_timeout(Some(t))?;
    s.write_all(&encode(args))?;
    let mut r = BufReader::new(s);
    let (v, used) = read_value(&mut r)?;
    if let Resp::Error(e) = &v {
        return Err(io::Error::other(format!("redis: {e}")));
    }
    Ok((v, used))
}

/// Parses the text of `INFO stats`.
pub(crate) fn parse_stats(text: &str) -> Stats {
    let mut st = Stats::default();
    for l in text.lines() {
        let Some((k, v)) = l.trim().split_once(':') else {
            continue;
        };
        let v: u64 = v.trim().parse().unwrap_or(0);
        match k {
            "total_net_input_bytes" => st.net_input_bytes = v,
            "total_net_output_bytes" => st.net_output_bytes = v,
            "total_commands_processed" => st.commands = v,
            "pubsub_channels" => st.pubsub_channels = v,
            _ => {}
        }
    }
    st
}

/// `INFO stats` over a fresh connection (the connection's own bytes are in the counters:
/// a few dozen bytes in, the reply out, both small against a measured phase).
pub(crate) fn info_stats(addr: SocketAddr) -> io::Result<Stats> {
    let (v, used) = command(addr, &["INFO", "stats"])?;
    let Resp::Bulk(Some(text)) = v else {
        return Err(bad("INFO: unexpected reply"));
    };
    let mut st = parse_stats(&String::from_utf8_lossy(&text));
    st.reply_bytes = used;
    Ok(st)
}

/// `PUBSUB NUMSUB key...`: the number of subscribers (nodes) of each key.
pub(crate) fn numsub(addr: SocketAddr, keys: &[String]) -> io::Result<Vec<u64>> {
    let mut args = vec!["PUBSUB", "NUMSUB"];
    args.extend(keys.iter().map(|k| k.as_str()));
    let (v, _) = command(addr, &args)?;
    let Resp::Array(Some(items)) = v else {
        return Err(bad("PUBSUB NUMSUB: unexpected reply"));
    };
    Ok(items
        .chunks(2)
        .map(|p| match p.get(1) {
            Some(Resp::Int(n)) => (*n).max(0) as u64,
            _ => 0,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_roundtrip() {
        let wire = b"*4\r\n$3\r\nfoo\r\n:2\r\n$-1\r\n+OK\r\n";
        let mut r = std::io::Cursor::new(&wire[..]);
        let (v, used) = read_value(&mut r).unwrap();
        assert_eq!(used, wire.len() as u64);
        assert_eq!(
            v,
            Resp::Array(Some(vec![
                Resp::Bulk(Some(b"foo".to_vec())),
                Resp::Int(2),
                Resp::Bulk(None),
                Resp::Simple("OK".into()),
            ]))
        );
        assert_eq!(
            encode(&["INFO", "stats"]),
            b"*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n"
        );
    }

    #[test]
    fn stats_text() {
        let st = parse_stats(
            "# Stats\r\ntotal_commands_processed:12\r\ntotal_net_input_bytes:345\r\ntotal_net_output_bytes:6789\r\npubsub_channels:100\r\n",
        );
        assert_eq!(
            (
                st.commands,
                st.net_input_bytes,
                st.net_output_bytes,
                st.pubsub_channels
            ),
            (12, 345, 6789, 100)
        );
    }

    #[test]
    fn url() {
        assert_eq!(
            parse_url("redis://127.0.0.1:7000").unwrap(),
            "127.0.0.1:7000".parse().unwrap()
        );
        assert!(parse_url("redis://10.1.2.3:7000").is_err());
        assert!(parse_url("redis://u:p@127.0.0.1:7000").is_err());
    }
}
