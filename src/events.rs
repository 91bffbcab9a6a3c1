//! Events: what happened to a user's avatar, fanned out to their WebSocket/SSE connections and
//! to the webhook outbox.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::keys::UserKey;
use crate::repo::{OutboxMessage, Repo};

/// Event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventKind {
    /// A job was accepted.
    ProfileImageUpdated,
    /// Variants are ready; `data.urls` maps sizes to public URLs.
    ProfileImageCompleted,
    /// Processing failed; `data.code`, `data.user_message`.
    ProfileImageFailed,
}

/// One event, as clients and webhooks receive it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Type.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Unique id (also the webhook message id).
    pub id: String,
    /// RFC 3339.
    pub timestamp: String,
    /// Payload.
    pub data: Value,
    /// Whose event it is (never serialised: streams filter on it).
    #[serde(skip)]
    pub user_key: UserKey,
}

/// Publishes events to live streams and, when configured, to the webhook outbox.
#[derive(Clone)]
pub struct Notifier {
    live: broadcast::Sender<Arc<Event>>,
    repo: Arc<dyn Repo>,
    clock: Arc<dyn Clock>,
    webhook: Option<String>,
    wake_webhooks: Arc<tokio::sync::Notify>,
}

impl Notifier {
    /// A notifier; `webhook` is the endpoint URL, if any.
    pub fn new(repo: Arc<dyn Repo>, clock: Arc<dyn Clock>, webhook: Option<String>) -> Self {
        let (live, _) = broadcast::channel(1024);
        Self {
            live,
            repo,
            clock,
            webhook,
            wake_webhooks: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Subscribe to every event (callers filter by user).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }

    /// Woken when a webhook message is queued.
    pub fn webhook_signal(&self) -> Arc<tokio::sync::Notify> {
        self.wake_webhooks.clone()
    }

    /// Publish an event. The outbox write comes first: at-least-once delivery.
    pub async fn publish(&self, user_key: &UserKey, kind: EventKind, data: Value) {
        let now = self.clock.now_millis();
        let timestamp = crate::clock::rfc3339(now);
        let event = Arc::new(Event {
            kind,
            id: crate::webhooks::signature::new_message_id(),
            timestamp,
            data,
            user_key: user_key.clone(),
        });
        if let Some(endpoint) = &self.webhook {
            let mut payload = serde_json::to_value(&*event).unwrap_or(Value::Null);
            payload["data"]["user_key"] = Value::String(user_key.to_string());
            let message = OutboxMessage {
                message_id: event.id.clone(),
                endpoint: endpoint.clone(),
                payload: payload.to_string(),
                attempts: 0,
                next_attempt: now,
            };
            match self.repo.enqueue_webhook(&message, now).await {
                Ok(()) => self.wake_webhooks.notify_one(),
                Err(e) => tracing::error!(error = %e, "cannot queue a webhook message"),
            }
        }
        // No live subscriber is not an error.
        let _ = self.live.send(event);
    }
}
