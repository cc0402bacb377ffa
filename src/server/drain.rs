//! The paced drain: on SIGTERM the server stops taking new WebSockets and closes the open ones
//! with 4200 in waves spread over `server.drain_secs`, so that the clients' reconnects spread
//! over the other nodes behind the load balancer instead of arriving in one second.

use std::sync::Arc;
use std::time::Duration;

use crate::channels::CloseRequest;
use crate::protocol::codes;
use crate::websocket::live::LiveConnections;

/// Time between waves.
pub(crate) const WAVE: Duration = Duration::from_millis(100);

pub(crate) fn request() -> CloseRequest {
    CloseRequest {
        code: Some(codes::RECONNECT_NOW),
        reason: "Server is shutting down; reconnect shortly".to_string(),
        announce: true,
    }
}

/// Closes every connection open now, `total / waves` per wave, over `over`; returns once no
/// connection is left, or one wave after the last one was asked to close.
pub(crate) async fn run(live: Arc<LiveConnections>, over: Duration) {
    let total = live.len();
    let waves = (over.as_millis() / WAVE.as_millis()).max(1) as usize;
    tracing::info!(
        "drain: closing {total} connection(s) with 4200 over {:.1} s ({waves} waves)",
        over.as_secs_f32()
    );
    let request = request();
    let mut asked = 0usize;
    let mut tick = tokio::time::interval(WAVE);
    for wave in 1..=waves {
        tick.tick().await;
        let due = (total * wave).div_ceil(waves);
        asked += live.close_some(due.saturating_sub(asked), &request);
        if live.is_empty() {
            break;
        }
        if wave % 10 == 0 {
            tracing::info!(
                "drain: {asked} of {total} asked to close, {} still open",
                live.len()
            );
        }
    }
    tick.tick().await;
    tracing::info!("drain: done; {} connection(s) still open", live.len());
}
