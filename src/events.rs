//! Events: what happened to a user's avatar, fanned out to their WebSocket/SSE connections and
//! to the webhook outbox.
//!
//! Each user has their own channel, created by their first connection and dropped with their
//! last: an event wakes only its owner's connections. A connection that falls more than
//! `AVATAR_EVENTS_BUFFER` events behind is told how many it missed ([`Delivery::Lagged`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast::{self, error::RecvError};

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

/// The live channels, one per connected user.
type Channels = Arc<Mutex<HashMap<UserKey, broadcast::Sender<Arc<Event>>>>>;

/// What a connection receives next.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// One of the user's events.
    Event(Arc<Event>),
    /// The connection fell behind and this many events were dropped for it.
    Lagged(u64),
}

/// One connection's view of one user's events. Dropping the last subscription of a user
/// drops their channel.
pub struct Subscription {
    key: UserKey,
    receiver: broadcast::Receiver<Arc<Event>>,
    channels: Channels,
}

impl Subscription {
    /// The next delivery; `None` once the notifier is gone.
    pub async fn next(&mut self) -> Option<Delivery> {
        match self.receiver.recv().await {
            Ok(event) => Some(Delivery::Event(event)),
            Err(RecvError::Lagged(missed)) => Some(Delivery::Lagged(missed)),
            Err(RecvError::Closed) => None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        // This receiver still counts until the end of this function.
        if channels
            .get(&self.key)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            channels.remove(&self.key);
        }
    }
}

/// Publishes events to live streams and, when configured, to the webhook outbox.
#[derive(Clone)]
pub struct Notifier {
    channels: Channels,
    /// Capacity of each user's channel (`AVATAR_EVENTS_BUFFER`).
    buffer: usize,
    repo: Arc<dyn Repo>,
    clock: Arc<dyn Clock>,
    webhook: Option<String>,
    wake_webhooks: Arc<tokio::sync::Notify>,
}

impl Notifier {
    /// A notifier; `webhook` is the endpoint URL, if any; `buffer` events are kept per user.
    pub fn new(
        repo: Arc<dyn Repo>,
        clock: Arc<dyn Clock>,
        webhook: Option<String>,
        buffer: usize,
    ) -> Self {
        Self {
            channels: Arc::default(),
            buffer: buffer.max(1),
            repo,
            clock,
            webhook,
            wake_webhooks: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Subscribe to one user's events.
    pub fn subscribe(&self, key: &UserKey) -> Subscription {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let receiver = channels
            .entry(key.clone())
            .or_insert_with(|| broadcast::channel(self.buffer).0)
            .subscribe();
        Subscription {
            key: key.clone(),
            receiver,
            channels: self.channels.clone(),
        }
    }

    /// Users with at least one live connection (metrics, tests).
    pub fn connected_users(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
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
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = channels.get(user_key) {
            // A connection that just closed is not an error.
            let _ = sender.send(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::repo::sqlite::SqliteRepo;

    async fn notifier(buffer: usize) -> (Notifier, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("e.db").display());
        let repo = Arc::new(SqliteRepo::connect(&url).await.expect("repo"));
        let clock = Arc::new(ManualClock::new());
        (Notifier::new(repo, clock, None, buffer), dir)
    }

    fn key(c: char) -> UserKey {
        UserKey::parse(&c.to_string().repeat(32)).expect("key")
    }

    #[tokio::test]
    async fn an_event_reaches_only_its_owners_connections() {
        let (notifier, _dir) = notifier(8).await;
        let mut alice = notifier.subscribe(&key('a'));
        let mut bob = notifier.subscribe(&key('b'));
        notifier
            .publish(&key('a'), EventKind::ProfileImageUpdated, Value::Null)
            .await;
        assert!(matches!(alice.next().await, Some(Delivery::Event(e)) if e.user_key == key('a')));
        assert!(
            bob.receiver.try_recv().is_err(),
            "bob's connection was not woken"
        );
    }

    #[tokio::test]
    async fn a_slow_connection_is_told_how_many_events_it_missed() {
        let (notifier, _dir) = notifier(2).await;
        let mut slow = notifier.subscribe(&key('a'));
        for _ in 0..5 {
            notifier
                .publish(&key('a'), EventKind::ProfileImageUpdated, Value::Null)
                .await;
        }
        assert!(matches!(slow.next().await, Some(Delivery::Lagged(3))));
        assert!(matches!(slow.next().await, Some(Delivery::Event(_))));
    }

    #[tokio::test]
    async fn a_users_channel_goes_with_their_last_connection() {
        let (notifier, _dir) = notifier(8).await;
        let first = notifier.subscribe(&key('a'));
        let second = notifier.subscribe(&key('a'));
        assert_eq!(notifier.connected_users(), 1);
        drop(first);
        assert_eq!(notifier.connected_users(), 1);
        drop(second);
        assert_eq!(notifier.connected_users(), 0);
    }
}
