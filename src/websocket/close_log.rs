//! One log line per connection that ends badly (a close code other than a normal one), so an
//! operator can see why clients drop; at most [`PER_SECOND`] lines a second, the rest counted
//! and summed up in the next line, so a mass disconnect cannot flood the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::protocol::codes;
use crate::protocol::socket_id::SocketId;

const PER_SECOND: u64 = 20;

/// The current second and the lines logged in it, packed: second << 20 | count.
static WINDOW: AtomicU64 = AtomicU64::new(0);
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// What a close code means, in a few words (empty for codes without a story).
pub(crate) fn meaning(code: u16) -> &'static str {
    match code {
        codes::OVER_CAPACITY => "slow reader: its outbox overflowed",
        codes::PONG_NOT_RECEIVED => "no pong in time",
        codes::UNAUTHORIZED => "not authorized (origin or sign-in)",
        codes::OVER_CONNECTION_QUOTA => "app over its connection quota",
        codes::CLIENT_EVENT_RATE_LIMIT => "client events over the rate limit",
        codes::MESSAGE_TOO_BIG => "message too big",
        codes::INVALID_PAYLOAD => "invalid UTF-8",
        codes::PROTOCOL_ERROR => "WebSocket protocol error",
        codes::APP_DISABLED => "app disabled",
        _ => "",
    }
}

/// Logs a connection's end unless it was a normal one (client close, shutdown, drain, or a
/// dropped TCP connection).
pub(crate) fn closed(app_id: &str, socket_id: SocketId, code: Option<u16>) {
    let Some(code) = code else {
        return;
    };
    if matches!(code, codes::NORMAL_CLOSURE | 1001 | codes::RECONNECT_NOW) {
        return;
    }
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let admitted = WINDOW
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
            if w >> 20 != second {
                Some(second << 20 | 1)
            } else if w & 0xF_FFFF < PER_SECOND {
                Some(w + 1)
            } else {
                None
            }
        })
        .is_ok();
    if !admitted {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
    let more = if suppressed > 0 {
        format!(" ({suppressed} similar lines not logged)")
    } else {
        String::new()
    };
    tracing::info!(
        "socket {socket_id} of app {app_id} closed with {code} {}{more}",
        meaning(code)
    );
}
