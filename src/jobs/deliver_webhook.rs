//! `deliver-webhook`: one message of the persisted outbox, posted signed until the endpoint
//! accepts it (2xx), answers 410 (the endpoint is disabled), or the attempts run out.
//! Idempotent for receivers: every attempt carries the same `webhook-id`.

use std::sync::Arc;

use async_trait::async_trait;

use super::runner::{Lease, Outcome, Queue, Settlement};
use crate::clock::{Clock, Millis};
use crate::repo::{OutboxMessage, Repo, RepoError};
use crate::webhooks::Deliverer;

/// Why a message to an endpoint the address guard refuses is dropped.
const REFUSED: &str = "endpoint refused by the address guard";

/// The `deliver-webhook` job type.
pub struct DeliverWebhook {
    /// The outbox.
    pub repo: Arc<dyn Repo>,
    /// The signed HTTP client.
    pub deliverer: Deliverer,
    /// Timestamps of attempts.
    pub clock: Arc<dyn Clock>,
    /// Attempts before a message is dropped (`AVATAR_WEBHOOK_MAX_ATTEMPTS`).
    pub max_attempts: u32,
}

/// How a delivery ended.
#[derive(Debug)]
pub enum Delivered {
    /// 2xx.
    Accepted,
}

#[async_trait]
impl Queue for DeliverWebhook {
    type Job = OutboxMessage;
    type Output = Delivered;

    fn name(&self) -> &'static str {
        "deliver-webhook"
    }

    fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    fn attempts(&self, message: &OutboxMessage) -> u32 {
        message.attempts
    }

    async fn claim(&self, now: Millis, lease: &Lease) -> Result<Option<OutboxMessage>, RepoError> {
        self.repo
            .claim_webhook(now, lease.until, &lease.owner)
            .await
    }

    async fn renew(&self, message: &OutboxMessage, lease: &Lease) -> Result<bool, RepoError> {
        self.repo
            .renew_webhook(&message.message_id, &lease.owner, lease.until)
            .await
    }

    async fn run(&self, message: &OutboxMessage) -> Outcome<Delivered> {
        match self.repo.endpoint_disabled(&message.endpoint).await {
            Ok(true) => return Outcome::Abort("endpoint disabled".into()),
            Ok(false) => {}
            Err(e) => return Outcome::Retry(e.to_string()),
        }
        if !self.deliverer.admits(&message.endpoint) {
            tracing::warn!(
                "webhook endpoint refused by the address guard (a non-public address); \
                 dropping the message (set AVATAR_WEBHOOK_ALLOW_PRIVATE=true for internal receivers)"
            );
            return Outcome::Abort(REFUSED.into());
        }
        let now = self.clock.now_millis();
        let status = self
            .deliverer
            .post(
                &message.endpoint,
                &message.message_id,
                &message.payload,
                now,
            )
            .await;
        match status {
            Some(s) if (200..300).contains(&s) => Outcome::Done(Delivered::Accepted),
            Some(410) => {
                tracing::warn!("webhook endpoint answered 410 Gone; disabling it");
                match self.repo.disable_endpoint(&message.endpoint, now).await {
                    Ok(()) => Outcome::Abort("410 Gone".into()),
                    Err(e) => Outcome::Retry(e.to_string()),
                }
            }
            Some(s) => Outcome::Retry(format!("endpoint answered {s}")),
            None => Outcome::Retry("no answer".into()),
        }
    }

    async fn settle(
        &self,
        message: OutboxMessage,
        settlement: Settlement<Delivered>,
        owner: &str,
    ) -> Result<bool, RepoError> {
        let id = &message.message_id;
        let (held, outcome) = match settlement {
            Settlement::Done(Delivered::Accepted) => {
                (self.repo.remove_webhook(id, owner).await?, "delivered")
            }
            Settlement::Abort(reason) => {
                let outcome = if reason == REFUSED {
                    "refused"
                } else {
                    "disabled"
                };
                (self.repo.remove_webhook(id, owner).await?, outcome)
            }
            Settlement::GaveUp { attempts, .. } => {
                tracing::warn!(
                    attempts,
                    "webhook delivery failed for good; dropping the message"
                );
                (self.repo.remove_webhook(id, owner).await?, "dropped")
            }
            Settlement::RetryAt { at, .. } => {
                (self.repo.retry_webhook(id, owner, at).await?, "retried")
            }
        };
        if held {
            metrics::counter!("avatar_webhooks_total", "outcome" => outcome).increment(1);
        }
        Ok(held)
    }
}
