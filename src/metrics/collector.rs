//! What the server already knows, read at scrape time: connections, channels and
//! subscriptions per app, the webhook pipeline's counters, the cluster link.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::apps::AppStore;
use crate::cluster::Cluster;
use crate::webhooks::Stats;

#[derive(Debug)]
pub(crate) struct Gauges {
    pub apps: AppStore,
    pub webhooks: Option<Arc<Stats>>,
    pub cluster: Option<Arc<Cluster>>,
}

fn gauge_per_app(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(&str, i64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (app, value) in values {
        let label = [("app", *app)];
        ConstGauge::new(*value).encode(family.encode_family(&label)?)?;
    }
    Ok(())
}

fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(family)
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut connections = Vec::new();
        let mut channels = Vec::new();
        let mut subscriptions = Vec::new();
        let apps: Vec<_> = self.apps.all().collect();
        for app in &apps {
            let id = app.config.id.as_str();
            let (c, s) = app.registry.totals();
            connections.push((id, app.connection_count() as i64));
            channels.push((id, c as i64));
            subscriptions.push((id, s as i64));
        }
        for (name, help, read) in [
            (
                "ws_messages_received",
                "WebSocket messages received from clients",
                (|a| a.metrics.received.count()) as fn(&crate::apps::App) -> u64,
            ),
            (
                "ws_received_bytes",
                "Bytes of WebSocket messages received from clients",
                |a| a.metrics.received.bytes(),
            ),
            (
                "ws_messages_sent",
                "Events delivered to subscribers (one per recipient)",
                |a| a.metrics.sent.count(),
            ),
            (
                "ws_sent_bytes",
                "Bytes of events delivered to subscribers",
                |a| a.metrics.sent.bytes(),
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for app in &apps {
                let label = [("app", app.config.id.as_str())];
                ConstCounter::new(read(app)).encode(family.encode_family(&label)?)?;
            }
        }
        gauge_per_app(
            &mut encoder,
            "connections",
            "WebSocket connections open now on this node",
            &connections,
        )?;
        gauge_per_app(
            &mut encoder,
            "channels",
            "Channels with at least one subscriber on this node",
            &channels,
        )?;
        gauge_per_app(
            &mut encoder,
            "subscriptions",
            "Channel subscriptions on this node",
            &subscriptions,
        )?;
        if let Some(stats) = &self.webhooks {
            let read = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            single(
                &mut encoder,
                "webhook_requests_sent",
                "Webhook requests answered with 2xx",
                &ConstCounter::new(read(&stats.delivered)),
            )?;
            single(
                &mut encoder,
                "webhook_attempts_failed",
                "Webhook attempts that failed (non-2xx, refused, timed out) and were retried or given up",
                &ConstCounter::new(read(&stats.failed_attempts)),
            )?;
            single(
                &mut encoder,
                "webhook_requests_given_up",
                "Webhook requests given up after retry_for",
                &ConstCounter::new(read(&stats.given_up)),
            )?;
            single(
                &mut encoder,
                "webhook_events_dropped",
                "Webhook events dropped because a queue was full",
                &ConstCounter::new(read(&stats.dropped)),
            )?;
            single(
                &mut encoder,
                "webhook_queue_events",
                "Webhook events waiting in this node's target queues",
                &ConstGauge::new(stats.queued.load(Ordering::Relaxed)),
            )?;
        }
        if let Some(cluster) = &self.cluster {
            single(
                &mut encoder,
                "redis_link_up",
                "1 while this node's link to Redis works, 0 while it is down",
                &ConstGauge::new(i64::from(!cluster.is_down())),
            )?;
            single(
                &mut encoder,
                "cluster_messages_dropped",
                "Cross-node messages dropped while Redis was unreachable or its queue full",
                &ConstCounter::new(cluster.dropped.load(Ordering::Relaxed)),
            )?;
        }
        Ok(())
    }
}
