//! Socket ids: `"{node}.{connection}"`, two decimal integers as every server SDK requires
//! (`^\d+\.\d+$`). The node part is random per process so ids stay unique across nodes; the
//! connection part is a per-process counter that doubles as the registry's connection key,
//! so excluding a socket by id needs no lookup table.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// The registry's key for one connection.
pub(crate) type ConnId = u64;

/// Issues socket ids for this process.
#[derive(Debug)]
pub(crate) struct SocketIds {
    node: u32,
    next: AtomicU64,
}

/// A connection's socket id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketId {
    pub node: u32,
    pub conn: ConnId,
}

impl SocketIds {
    pub(crate) fn new(node: u32) -> Self {
        SocketIds {
            node,
            next: AtomicU64::new(1),
        }
    }

    pub(crate) fn next(&self) -> SocketId {
        SocketId {
            node: self.node,
            conn: self.next.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The local connection a socket id names, if it was issued by this process.
    pub(crate) fn local_conn(&self, id: &SocketId) -> Option<ConnId> {
        (id.node == self.node).then_some(id.conn)
    }
}

impl SocketId {
    /// Parses `^\d+\.\d+$`; anything else (signs, spaces, overflow) is `None`.
    pub(crate) fn parse(text: &str) -> Option<SocketId> {
        let (a, b) = text.split_once('.')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return None;
        }
        Some(SocketId {
            node: a.parse().ok()?,
            conn: b.parse().ok()?,
        })
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.node, self.conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_unique() {
        let ids = SocketIds::new(42);
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert_eq!(SocketId::parse(&a.to_string()), Some(a));
        assert_eq!(ids.local_conn(&a), Some(a.conn));
        assert_eq!(ids.local_conn(&SocketId { node: 7, conn: 1 }), None);
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "1",
            "1.",
            ".1",
            "1.2.3",
            "a.1",
            "-1.2",
            "1 .2",
            "99999999999.1",
        ] {
            assert_eq!(SocketId::parse(bad), None, "{bad}");
        }
        assert!(SocketId::parse("264774.13368624").is_some());
    }
}
