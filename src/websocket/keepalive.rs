//! Keep-alive decisions, apart from any socket or timer: once the client has been silent for
//! `activity_timeout`, ping it; if nothing at all arrives within `pong_timeout` after the
//! ping, close with 4201 (pusher-js then reconnects at once). Any frame counts as an answer.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub(crate) struct KeepaliveSettings {
    pub activity_timeout: Duration,
    pub pong_timeout: Duration,
}

/// What the connection should do when the keep-alive timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing yet; look again at this instant.
    WaitUntil(Instant),
    /// Send a ping, then look again at this instant.
    Ping(Instant),
    /// The ping went unanswered: close with 4201.
    Close,
}

#[derive(Debug)]
pub(crate) struct Keepalive {
    settings: KeepaliveSettings,
    pinged_at: Option<Instant>,
}

impl Keepalive {
    pub(crate) fn new(settings: KeepaliveSettings) -> Self {
        Keepalive {
            settings,
            pinged_at: None,
        }
    }

    /// When to look first, for a connection that was last heard from at `heard`.
    pub(crate) fn first_check(&self, heard: Instant) -> Instant {
        heard + self.settings.activity_timeout
    }

    /// Decides at `now`, given when the client was last heard from.
    pub(crate) fn check(&mut self, heard: Instant, now: Instant) -> Action {
        match self.pinged_at {
            Some(sent) if heard >= sent => {
                self.pinged_at = None;
                Action::WaitUntil(heard + self.settings.activity_timeout)
            }
            Some(_) => Action::Close,
            None if now >= heard + self.settings.activity_timeout => {
                self.pinged_at = Some(now);
                Action::Ping(now + self.settings.pong_timeout)
            }
            None => Action::WaitUntil(heard + self.settings.activity_timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: KeepaliveSettings = KeepaliveSettings {
        activity_timeout: Duration::from_secs(10),
        pong_timeout: Duration::from_secs(3),
    };

    #[test]
    fn pings_after_silence_and_closes_when_unanswered() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(S);
        assert_eq!(
            k.check(t0, t0 + Duration::from_secs(5)),
            Action::WaitUntil(t0 + Duration::from_secs(10))
        );
        let t10 = t0 + Duration::from_secs(10);
        assert_eq!(k.check(t0, t10), Action::Ping(t10 + Duration::from_secs(3)));
        assert_eq!(k.check(t0, t10 + Duration::from_secs(3)), Action::Close);
    }

    #[test]
    fn any_frame_after_the_ping_answers_it() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(S);
        let t10 = t0 + Duration::from_secs(10);
        assert!(matches!(k.check(t0, t10), Action::Ping(_)));
        let heard = t10 + Duration::from_millis(1);
        assert_eq!(
            k.check(heard, t10 + Duration::from_secs(3)),
            Action::WaitUntil(heard + Duration::from_secs(10))
        );
    }
}
