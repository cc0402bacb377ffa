//! A single node's webhook task: turns the registry's and sessions' signals into events.
//!
//! - `channel_vacated` and `member_removed` wait `delay`; the opposite signal within it
//!   cancels both, so a page reload sends nothing.
//! - `cache_miss` is sent at most once per channel per [`CACHE_MISS_QUIET`].
//! - `subscription_count` is sent on every change while the channel has at most
//!   [`COUNT_BUSY`] subscribers, and at most every [`COUNT_EVERY`] above that (the last count
//!   is always sent in the end).
//!
//! What this task holds lives in memory only: a restart loses the webhooks still waiting
//! here or in the targets' queues (README, "Webhooks").

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::dispatch::Dispatcher;
use super::event::WebhookEvent;
use super::settings::{WebhookKind, WebhookSettings};
use super::{AppSignal, Signal};

/// A channel's `cache_miss` webhooks are this far apart, at least.
pub(crate) const CACHE_MISS_QUIET: Duration = Duration::from_secs(5);
/// Above this many subscribers, a channel's count is sent at most every [`COUNT_EVERY`].
pub(crate) const COUNT_BUSY: usize = 100;
pub(crate) const COUNT_EVERY: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_millis(50);

/// A webhook waiting out the delay: (app, kind, channel, user).
type PendingKey = (Arc<str>, WebhookKind, Arc<str>, Option<Arc<str>>);
type ChannelKey = (Arc<str>, Arc<str>);

#[derive(Debug, Default)]
struct CountState {
    sent: Option<usize>,
    sent_at: Option<Instant>,
    /// A count held back by the pacing, with the time it was seen.
    held: Option<(usize, u64)>,
}

struct Local {
    dispatcher: Arc<Dispatcher>,
    delay: Duration,
    pending: HashMap<PendingKey, (u64, WebhookEvent)>,
    /// Due times in order (the delay is the same for all); stale generations are skipped.
    due: VecDeque<(Instant, PendingKey, u64)>,
    generation: u64,
    misses: HashMap<ChannelKey, Instant>,
    counts: HashMap<ChannelKey, CountState>,
}

/// Runs until the signal senders are gone or `stop` turns true.
pub(crate) async fn run(
    mut rx: mpsc::Receiver<AppSignal>,
    dispatcher: Arc<Dispatcher>,
    settings: WebhookSettings,
    mut stop: watch::Receiver<bool>,
) {
    let mut local = Local {
        dispatcher,
        delay: settings.delay,
        pending: HashMap::new(),
        due: VecDeque::new(),
        generation: 0,
        misses: HashMap::new(),
        counts: HashMap::new(),
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            signal = rx.recv() => match signal {
                Some(s) => local.handle(s),
                None => return,
            },
            _ = tick.tick() => local.on_tick(),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

impl Local {
    fn handle(&mut self, s: AppSignal) {
        let AppSignal {
            app_id,
            time_ms,
            signal,
        } = s;
        match signal {
            Signal::Occupancy { channel, occupied } => {
                let key = (
                    app_id.clone(),
                    WebhookKind::ChannelVacated,
                    channel.clone(),
                    None,
                );
                if occupied {
                    if self.pending.remove(&key).is_none() {
                        let e =
                            WebhookEvent::channel(WebhookKind::ChannelOccupied, &channel, time_ms);
                        self.dispatcher.submit(&app_id, e);
                    }
                } else {
                    let e = WebhookEvent::channel(WebhookKind::ChannelVacated, &channel, time_ms);
                    self.hold(key, e);
                }
            }
            Signal::Member {
                channel,
                user_id,
                added,
            } => {
                let key = (
                    app_id.clone(),
                    WebhookKind::MemberRemoved,
                    channel.clone(),
                    Some(user_id.clone()),
                );
                if added {
                    if self.pending.remove(&key).is_none() {
                        let e = WebhookEvent::member(
                            WebhookKind::MemberAdded,
                            &channel,
                            &user_id,
                            time_ms,
                        );
                        self.dispatcher.submit(&app_id, e);
                    }
                } else {
                    let e = WebhookEvent::member(
                        WebhookKind::MemberRemoved,
                        &channel,
                        &user_id,
                        time_ms,
                    );
                    self.hold(key, e);
                }
            }
            Signal::ClientEvent {
                channel,
                event,
                data,
                socket_id,
                user_id,
            } => {
                let e = WebhookEvent::client_event(
                    &channel,
                    &event,
                    &data,
                    &socket_id,
                    user_id.as_deref(),
                    time_ms,
                );
                self.dispatcher.submit(&app_id, e);
            }
            Signal::CacheMiss { channel } => {
                let now = Instant::now();
                let key = (app_id.clone(), channel.clone());
                if self
                    .misses
                    .get(&key)
                    .is_some_and(|t| now.duration_since(*t) < CACHE_MISS_QUIET)
                {
                    return;
                }
                self.misses.insert(key, now);
                let e = WebhookEvent::channel(WebhookKind::CacheMiss, &channel, time_ms);
                self.dispatcher.submit(&app_id, e);
            }
            Signal::Count { channel, count } => {
                let key = (app_id, channel);
                let state = self.counts.entry(key.clone()).or_default();
                if state.sent == Some(count) {
                    state.held = None;
                } else if count > COUNT_BUSY
                    && state.sent_at.is_some_and(|t| t.elapsed() < COUNT_EVERY)
                {
                    state.held = Some((count, time_ms));
                } else {
                    self.send_count(&key, count, time_ms);
                }
            }
        }
    }

    fn send_count(&mut self, key: &ChannelKey, count: usize, time_ms: u64) {
        let e = WebhookEvent::subscription_count(&key.1, count, time_ms);
        self.dispatcher.submit(&key.0, e);
        if count == 0 {
            self.counts.remove(key);
        } else {
            let state = self.counts.entry(key.clone()).or_default();
            state.sent = Some(count);
            state.sent_at = Some(Instant::now());
            state.held = None;
        }
    }

    fn hold(&mut self, key: PendingKey, event: WebhookEvent) {
        if self.delay.is_zero() {
            self.dispatcher.submit(&key.0.clone(), event);
            return;
        }
        self.generation += 1;
        self.due
            .push_back((Instant::now() + self.delay, key.clone(), self.generation));
        self.pending.insert(key, (self.generation, event));
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        while let Some((due, _, _)) = self.due.front() {
            if *due > now {
                break;
            }
            let Some((_, key, generation)) = self.due.pop_front() else {
                break;
            };
            if self
                .pending
                .get(&key)
                .is_some_and(|(g, _)| *g == generation)
                && let Some((_, event)) = self.pending.remove(&key)
            {
                self.dispatcher.submit(&key.0, event);
            }
        }
        self.misses
            .retain(|_, t| now.duration_since(*t) < CACHE_MISS_QUIET);
        let ready: Vec<(ChannelKey, usize, u64)> = self
            .counts
            .iter()
            .filter_map(|(k, s)| {
                let (count, time_ms) = s.held?;
                s.sent_at
                    .is_none_or(|t| t.elapsed() >= COUNT_EVERY)
                    .then(|| (k.clone(), count, time_ms))
            })
            .collect();
        for (key, count, time_ms) in ready {
            self.send_count(&key, count, time_ms);
        }
    }
}
