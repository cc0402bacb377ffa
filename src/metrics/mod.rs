//! Prometheus metrics (prometheus-client), served by [`listener`] on their own port.
//!
//! Counting must cost the hot paths almost nothing, so every counter an app touches while
//! serving is a handle taken once, when the app is built ([`AppMetrics`]): an increment is
//! one relaxed atomic add, with no lookup, lock or allocation. A broadcast adds its
//! deliveries once (recipients and bytes), never per recipient, into a per-thread slot
//! ([`spread::Spread`]) so the two cores never share the line. What is already known
//! elsewhere (connections, channels, webhook and cluster counters) is read at scrape time by
//! [`collector::Gauges`] instead of being counted twice.
//!
//! Per request, the HTTP API adds to its route's latency histogram ([`timing::Timing`], lock
//! free) and to its (route, status) counter: a handle taken once for 200, a read-locked lookup
//! for other statuses.

pub(crate) mod collector;
pub(crate) mod listener;
pub(crate) mod spread;
pub(crate) mod timing;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use spread::Spread;
use timing::Timing;

/// The HTTP API's routes, as the `route` label names them; the API counts by index.
pub(crate) const ROUTES: [&str; 6] = [
    "events",
    "batch_events",
    "channels",
    "channel",
    "channel_users",
    "terminate_connections",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabel {
    app: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    app: Arc<str>,
    /// The close code sent, or `lost` when the connection ended without one.
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    app: Arc<str>,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    app: Arc<str>,
    route: &'static str,
}

/// Every family of per-app metrics; each app takes its handles from here.
#[derive(Debug, Clone, Default)]
pub(crate) struct Families {
    opened: Family<AppLabel, Counter>,
    closed: Family<CloseLabels, Counter>,
    client_events_rejected: Family<AppLabel, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: Family<RouteLabels, Timing>,
    fanout: Family<AppLabel, Timing>,
    rate_limited: Family<RouteLabels, Counter>,
}

impl Families {
    /// The handles of app `app_id`.
    pub(crate) fn for_app(&self, app_id: &str) -> AppMetrics {
        let app: Arc<str> = Arc::from(app_id);
        let label = AppLabel { app: app.clone() };
        let counter = |f: &Family<AppLabel, Counter>| f.get_or_create(&label).clone();
        AppMetrics {
            opened: counter(&self.opened),
            received: Spread::default(),
            sent: Spread::default(),
            client_events_rejected: counter(&self.client_events_rejected),
            fanout: self.fanout.get_or_create(&label).clone(),
            http_latency: ROUTES.map(|route| {
                self.http_latency
                    .get_or_create(&RouteLabels {
                        app: app.clone(),
                        route,
                    })
                    .clone()
            }),
            http_ok: ROUTES.map(|route| {
                self.http_requests
                    .get_or_create(&HttpLabels {
                        app: app.clone(),
                        route,
                        status: 200,
                    })
                    .clone()
            }),
            closed: Some(self.closed.clone()),
            http_requests: Some(self.http_requests.clone()),
            rate_limited: Some(self.rate_limited.clone()),
            app,
        }
    }

    /// Registers every family in `registry`.
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "connections_opened",
            "WebSocket connections opened",
            self.opened.clone(),
        );
        registry.register(
            "connections_closed",
            "WebSocket connections closed, by the close code sent (`lost`: none could be sent)",
            self.closed.clone(),
        );
        registry.register(
            "client_events_rejected",
            "Client events refused (rate limit, size, channel or subscription)",
            self.client_events_rejected.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP API requests, by route and status",
            self.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP API request handling time, by route",
            self.http_latency.clone(),
        );
        registry.register(
            "publish_fanout_seconds",
            "From an HTTP API publish's arrival to its last frame queued for its subscribers",
            self.fanout.clone(),
        );
        registry.register(
            "http_rate_limited",
            "HTTP API requests refused with 429 by the app's rate limits",
            self.rate_limited.clone(),
        );
    }
}

/// One app's metric handles. Built detached (counting into nothing registered) for apps
/// made outside a server, as in unit tests.
#[derive(Debug)]
pub(crate) struct AppMetrics {
    app: Arc<str>,
    pub opened: Counter,
    /// Client messages and their bytes.
    pub received: Spread,
    /// Deliveries (one per recipient) and their bytes.
    pub sent: Spread,
    pub client_events_rejected: Counter,
    fanout: Timing,
    http_latency: [Timing; ROUTES.len()],
    /// The (route, 200) counters, taken once: the common answer needs no lookup.
    http_ok: [Counter; ROUTES.len()],
    closed: Option<Family<CloseLabels, Counter>>,
    http_requests: Option<Family<HttpLabels, Counter>>,
    rate_limited: Option<Family<RouteLabels, Counter>>,
}

impl AppMetrics {
    pub(crate) fn detached(app_id: &str) -> Self {
        AppMetrics {
            app: Arc::from(app_id),
            opened: Counter::default(),
            received: Spread::default(),
            sent: Spread::default(),
            client_events_rejected: Counter::default(),
            fanout: Timing::default(),
            http_latency: ROUTES.map(|_| Timing::default()),
            http_ok: ROUTES.map(|_| Counter::default()),
            closed: None,
            http_requests: None,
            rate_limited: None,
        }
    }

    /// A broadcast queued `recipients` copies of a `bytes`-long frame.
    #[inline]
    pub(crate) fn delivered(&self, recipients: usize, bytes: usize) {
        if recipients > 0 {
            self.sent
                .add(recipients as u64, (recipients * bytes) as u64);
        }
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.received.add(1, bytes as u64);
    }

    /// A connection ended, having sent close `code` (`None`: it could not send one).
    pub(crate) fn closed(&self, code: Option<u16>) {
        if let Some(family) = &self.closed {
            let code = code.map_or_else(|| "lost".to_string(), |c| c.to_string());
            family
                .get_or_create(&CloseLabels {
                    app: self.app.clone(),
                    code,
                })
                .inc();
        }
    }

    /// An HTTP API request on route `at` (an index into [`ROUTES`]) was answered with
    /// `status`.
    pub(crate) fn http_request(&self, at: usize, status: u16, took: Duration) {
        let Some(route) = ROUTES.get(at).copied() else {
            return;
        };
        self.http_latency[at].observe(took);
        if status == 200 {
            self.http_ok[at].inc();
            return;
        }
        if let Some(family) = &self.http_requests {
            family
                .get_or_create(&HttpLabels {
                    app: self.app.clone(),
                    route,
                    status,
                })
                .inc();
        }
    }

    pub(crate) fn rate_limited(&self, at: usize) {
        if let (Some(family), Some(route)) = (&self.rate_limited, ROUTES.get(at).copied()) {
            family
                .get_or_create(&RouteLabels {
                    app: self.app.clone(),
                    route,
                })
                .inc();
        }
    }

    pub(crate) fn fanout(&self, took: Duration) {
        self.fanout.observe(took);
    }
}
