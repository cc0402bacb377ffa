//! `server.max_connections_per_ip`: concurrent connections from one client address.
//!
//! A connection from a trusted proxy counts against the client its `X-Forwarded-For` names
//! (the right-most address that is not itself a trusted proxy), per request; any other
//! connection counts against its peer address from accept to close, WebSocket included.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use hyper::HeaderMap;
use parking_lot::Mutex;

use crate::config::IpRange;

#[derive(Debug)]
pub(crate) struct ClientIps {
    limit: Option<usize>,
    trusted: Vec<IpRange>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection (or proxied request) counted against an address, until dropped.
#[derive(Debug)]
pub(crate) struct IpTicket {
    ip: IpAddr,
    owner: Arc<ClientIps>,
}

/// The address is at its limit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OverLimit {
    pub ip: IpAddr,
    pub limit: usize,
}

impl ClientIps {
    pub(crate) fn new(limit: Option<usize>, trusted: Vec<IpRange>) -> Arc<ClientIps> {
        Arc::new(ClientIps {
            limit,
            trusted,
            open: Mutex::default(),
        })
    }

    pub(crate) fn is_limited(&self) -> bool {
        self.limit.is_some()
    }

    pub(crate) fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|r| r.contains(ip))
    }

    /// Counts one more connection from `ip`; `Ok(None)` when there is no limit.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Option<IpTicket>, OverLimit> {
        let Some(limit) = self.limit else {
            return Ok(None);
        };
        let ip = ip.to_canonical();
        let mut open = self.open.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= limit {
            return Err(OverLimit { ip, limit });
        }
        *count += 1;
        Ok(Some(IpTicket {
            ip,
            owner: self.clone(),
        }))
    }

    /// The client behind a trusted proxy: the right-most `X-Forwarded-For` address that is not
    /// a trusted proxy itself, or the proxy when the header names none.
    pub(crate) fn forwarded_client(&self, proxy: IpAddr, headers: &HeaderMap) -> IpAddr {
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        hops.into_iter()
            .rev()
            .find(|ip| !self.is_trusted(*ip))
            .unwrap_or(proxy)
            .to_canonical()
    }
}

impl Drop for IpTicket {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn counts_per_address_and_gives_back_on_drop() {
        let ips = ClientIps::new(Some(2), Vec::new());
        let a1 = ips.admit(ip("10.0.0.1")).expect("first");
        let _a2 = ips
            .admit(ip("::ffff:10.0.0.1"))
            .expect("second, same address");
        assert_eq!(
            ips.admit(ip("10.0.0.1")).err(),
            Some(OverLimit {
                ip: ip("10.0.0.1"),
                limit: 2
            })
        );
        assert!(ips.admit(ip("10.0.0.2")).is_ok());
        drop(a1);
        assert!(ips.admit(ip("10.0.0.1")).is_ok());
        assert!(
            ClientIps::new(None, Vec::new())
                .admit(ip("1.2.3.4"))
                .is_ok_and(|t| t.is_none())
        );
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_past_trusted_hops() {
        let trusted = vec![
            IpRange::parse("10.0.0.0/8").expect("range"),
            IpRange::parse("127.0.0.1").expect("range"),
        ];
        let ips = ClientIps::new(Some(1), trusted);
        let mut headers = HeaderMap::new();
        let proxy = ip("127.0.0.1");
        assert_eq!(ips.forwarded_client(proxy, &headers), proxy);
        headers.insert(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.9, 10.1.1.1".parse().expect("header"),
        );
        // 6.6.6.6 is whatever the client claimed; 203.0.113.9 is what our proxies saw.
        assert_eq!(ips.forwarded_client(proxy, &headers), ip("203.0.113.9"));
    }
}
