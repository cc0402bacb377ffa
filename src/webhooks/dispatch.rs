//! From events to requests: every target of every app has its own bounded queue and worker,
//! so a receiver that hangs holds up only its own events. A worker takes the first waiting
//! event, lets others join it for `batch_window` (up to `max_batch_events`), and hands the
//! batch to a delivery task; at most `concurrency` of those run per target.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::{Semaphore, mpsc};

use super::Stats;
use super::deliver::{HttpClient, Receiver, Report, deliver};
use super::event::{WebhookEvent, body};
use super::settings::WebhookSettings;
use crate::apps::AppStore;
use crate::config::AppConfig;

#[derive(Debug)]
struct TargetQueue {
    receiver: Arc<Receiver>,
    tx: mpsc::Sender<WebhookEvent>,
}

/// Routes events to the queues of the targets that take them.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    apps: RwLock<HashMap<String, Vec<TargetQueue>>>,
    /// The server's apps, for their consoles (set once the apps are built).
    store: Arc<OnceLock<AppStore>>,
    stats: Arc<Stats>,
    settings: Arc<WebhookSettings>,
    client: HttpClient,
}

impl Dispatcher {
    /// Starts one worker per target of every app (none for apps without webhooks). The
    /// workers end when the dispatcher is dropped and their queues are drained.
    pub(crate) fn start(
        apps: &[AppConfig],
        settings: &WebhookSettings,
        stats: Arc<Stats>,
    ) -> Arc<Dispatcher> {
        let dispatcher = Dispatcher {
            apps: RwLock::new(HashMap::new()),
            store: Arc::default(),
            stats,
            settings: Arc::new(settings.clone()),
            client: super::deliver::client(),
        };
        dispatcher.reconfigure(apps);
        Arc::new(dispatcher)
    }

    /// Takes the apps' targets as they are now: an app whose targets, key and secret are
    /// unchanged keeps its queues; changed or new targets get new queues and workers; the
    /// queues of removed ones are dropped, and their workers end once they have sent what
    /// was queued.
    pub(crate) fn reconfigure(&self, apps: &[AppConfig]) {
        let mut current = self.apps.write();
        let mut next = HashMap::new();
        for app in apps.iter().filter(|a| !a.webhooks.is_empty()) {
            let unchanged = current.get(&app.id).is_some_and(|queues| {
                queues.len() == app.webhooks.len()
                    && queues.iter().zip(&app.webhooks).all(|(q, t)| {
                        q.receiver.target == *t && q.receiver.signs_as(&app.key, &app.secret)
                    })
            });
            let queues = match current.remove(&app.id) {
                Some(queues) if unchanged => queues,
                _ => self.queues_for(app),
            };
            next.insert(app.id.clone(), queues);
        }
        *current = next;
    }

    fn queues_for(&self, app: &AppConfig) -> Vec<TargetQueue> {
        let mut queues = Vec::new();
        for target in &app.webhooks {
            let Some(receiver) = Receiver::new(&app.id, target.clone(), &app.key, &app.secret)
            else {
                tracing::error!("webhooks: cannot use target {}; skipped", target.url);
                continue;
            };
            let receiver = Arc::new(receiver);
            let (tx, rx) = mpsc::channel(self.settings.queue_events);
            tokio::spawn(work(
                receiver.clone(),
                self.store.clone(),
                rx,
                self.client.clone(),
                self.settings.clone(),
                self.stats.clone(),
            ));
            queues.push(TargetQueue { receiver, tx });
        }
        queues
    }

    /// Reports deliveries to the consoles of `apps` from now on.
    pub(crate) fn attach(&self, apps: &AppStore) {
        let _ = self.store.set(apps.clone());
    }

    /// Queues `event` for every target of `app_id` that takes it. Never waits: a full queue
    /// (its receiver far behind) drops the event for that target, logged and counted.
    pub(crate) fn submit(&self, app_id: &str, event: WebhookEvent) {
        let apps = self.apps.read();
        let Some(queues) = apps.get(app_id) else {
            return;
        };
        for queue in queues
            .iter()
            .filter(|q| q.receiver.target.takes(event.kind, &event.channel))
        {
            if queue.tx.try_send(event.clone()).is_ok() {
                self.stats
                    .queued
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            } else {
                let before = self
                    .stats
                    .dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if before.is_power_of_two() || before == 0 {
                    tracing::warn!(
                        "webhooks: the queue for {} is full; {} event(s) dropped so far",
                        queue.receiver.target.url,
                        before + 1
                    );
                }
            }
        }
    }
}

/// One target's worker: batches and hands batches to delivery tasks.
async fn work(
    receiver: Arc<Receiver>,
    store: Arc<OnceLock<AppStore>>,
    mut rx: mpsc::Receiver<WebhookEvent>,
    client: HttpClient,
    settings: Arc<WebhookSettings>,
    stats: Arc<Stats>,
) {
    let in_flight = Arc::new(Semaphore::new(settings.concurrency));
    let max = settings.max_batch_events;
    let mut batch: Vec<WebhookEvent> = Vec::with_capacity(max);
    loop {
        if rx.recv_many(&mut batch, max).await == 0 {
            return;
        }
        if batch.len() < max && !settings.batch_window.is_zero() {
            tokio::time::sleep(settings.batch_window).await;
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
        }
        stats
            .queued
            .fetch_sub(batch.len() as i64, std::sync::atomic::Ordering::Relaxed);
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let events = std::mem::replace(&mut batch, Vec::with_capacity(max));
        let (receiver, client, settings, stats) = (
            receiver.clone(),
            client.clone(),
            settings.clone(),
            stats.clone(),
        );
        let report = store
            .get()
            .and_then(|apps| apps.by_id(&receiver.app_id))
            .filter(|app| app.console.is_open())
            .map(|app| Report {
                console: app.console.clone(),
                events: events.iter().map(|e| e.kind.name()).collect(),
            });
        tokio::spawn(async move {
            let time_ms = events.iter().map(|e| e.time_ms).min().unwrap_or(0);
            let body = Bytes::from(body(&events));
            deliver(&client, &receiver, &settings, &stats, body, time_ms, report).await;
            // The events (and their stream entries' acknowledgements) go only now.
            drop(events);
            drop(permit);
        });
    }
}
