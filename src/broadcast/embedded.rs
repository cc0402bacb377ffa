//! The in-process driver: publishes straight into the embedded server's registry, through
//! the same validation and publish path as `POST /events` (so the console, the cluster and
//! the metrics see it alike), with no HTTP and no signing.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{BatchItem, BroadcastError, ChannelSummary};
use crate::apps::{App, AppStore};
use crate::cluster::queries::Scope;
use crate::http_api::counts::Counts;
use crate::http_api::error::ApiError;
use crate::http_api::{events, users};
use crate::protocol::socket_id::SocketIds;

/// One app of an embedded server.
#[derive(Clone)]
pub(crate) struct Embedded {
    apps: AppStore,
    app_id: Arc<str>,
    /// Recognises the server's own socket ids (for `to_others`).
    socket_ids: Arc<SocketIds>,
    socket_node: u32,
}

fn rejected(e: ApiError) -> BroadcastError {
    BroadcastError::Rejected {
        status: e.status().as_u16(),
        message: e.message().to_string(),
    }
}

impl Embedded {
    pub(crate) fn new(apps: AppStore, app_id: &str, socket_node: u32) -> Embedded {
        Embedded {
            apps,
            app_id: Arc::from(app_id),
            socket_ids: Arc::new(SocketIds::new(socket_node)),
            socket_node,
        }
    }

    pub(crate) fn app_id(&self) -> &str {
        &self.app_id
    }

    fn app(&self) -> Result<Arc<App>, BroadcastError> {
        self.apps
            .by_id(&self.app_id)
            .ok_or_else(|| BroadcastError::UnknownApp(self.app_id.to_string()))
    }

    pub(crate) fn payload_limit(&self) -> usize {
        self.app()
            .map(|a| a.config.max_event_payload_bytes)
            .unwrap_or(crate::protocol::limits::MAX_EVENT_PAYLOAD_BYTES)
    }

    pub(crate) fn publish(
        &self,
        channels: &[String],
        event: &str,
        data: &str,
        except: Option<&str>,
    ) -> Result<(), BroadcastError> {
        let app = self.app()?;
        let body =
            json!({ "name": event, "channels": channels, "data": data, "socket_id": except });
        events::publish_json(&app, body.to_string().as_bytes(), &self.socket_ids).map_err(rejected)
    }

    pub(crate) fn batch(&self, items: &[BatchItem]) -> Result<(), BroadcastError> {
        let app = self.app()?;
        let batch: Vec<Value> = items
            .iter()
            .map(|i| json!({ "name": i.event, "channel": i.channel, "data": i.data, "socket_id": i.except }))
            .collect();
        let body = json!({ "batch": batch });
        events::publish_batch_json(&app, body.to_string().as_bytes(), &self.socket_ids)
            .map_err(rejected)
    }

    /// This node's sockets on `channel`.
    pub(crate) fn clients(&self, channel: &str) -> Result<Vec<String>, BroadcastError> {
        let app = self.app()?;
        let node = self.socket_node;
        let mut ids: Vec<String> = app
            .registry
            .subscriber_conns(channel)
            .into_iter()
            .map(|conn| format!("{node}.{conn}"))
            .collect();
        ids.sort();
        Ok(ids)
    }

    pub(crate) async fn members(&self, channel: &str) -> Result<Vec<String>, BroadcastError> {
        let app = self.app()?;
        let counts = Counts::gather(&app, Scope::Users(channel)).await;
        let mut users = counts.users(channel);
        users.sort();
        Ok(users)
    }

    pub(crate) async fn channels(
        &self,
        prefix: &str,
    ) -> Result<Vec<ChannelSummary>, BroadcastError> {
        let app = self.app()?;
        let counts = Counts::gather(&app, Scope::All).await;
        let mut listed: Vec<ChannelSummary> = counts
            .channels(prefix)
            .into_iter()
            .map(|(name, stats)| ChannelSummary {
                name,
                subscription_count: Some(stats.subscriptions as u64),
                user_count: stats.users.map(|u| u as u64),
            })
            .collect();
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listed)
    }

    pub(crate) fn terminate(&self, user_id: &str) -> Result<(), BroadcastError> {
        users::terminate_user(&*self.app()?, user_id);
        Ok(())
    }
}
