//! Webhooks: events delivered at least once from the persisted outbox, signed the Standard
//! Webhooks way, with exponential backoff and jitter; an endpoint answering 410 is disabled.

pub mod signature;

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, millis};
use crate::repo::Repo;
use crate::upstream::guard::{PublicOnlyResolver, refuses_literal};
use signature::{WebhookSecret, backoff};

/// How often the outbox is polled when nothing wakes the deliverer.
const POLL: Duration = Duration::from_millis(500);

/// Whether a webhook endpoint passes the address rules before any DNS lookup: an http(s) URL
/// whose host is a name (judged later by the resolver) or a public IP literal.
fn admitted(endpoint: &str) -> bool {
    url::Url::parse(endpoint)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && !refuses_literal(&u))
}

/// Delivers the outbox.
pub struct Deliverer {
    repo: Arc<dyn Repo>,
    clock: Arc<dyn Clock>,
    secret: WebhookSecret,
    client: reqwest::Client,
    /// Whether targets may be private addresses; otherwise names are filtered by the resolver
    /// and IP literals (which no resolver sees) by [`refuses_literal`].
    allow_private: bool,
    max_attempts: u32,
    wake: Arc<tokio::sync::Notify>,
}

impl Deliverer {
    /// Build the HTTP client: targets pass the same address guard as upstreams unless
    /// `allow_private`.
    pub fn new(
        repo: Arc<dyn Repo>,
        clock: Arc<dyn Clock>,
        secret: &str,
        allow_private: bool,
        max_attempts: u32,
        wake: Arc<tokio::sync::Notify>,
    ) -> Result<Self, String> {
        let secret = WebhookSecret::parse(secret)?;
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .user_agent(concat!("avatar-proxy/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            builder = builder.dns_resolver(PublicOnlyResolver);
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(Self {
            repo,
            clock,
            secret,
            client,
            allow_private,
            max_attempts,
            wake,
        })
    }

    /// Deliver until aborted.
    pub async fn run(self) {
        loop {
            if let Err(e) = self.deliver_due().await {
                tracing::error!(error = %e, "webhook outbox unavailable");
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Attempt every due message once.
    pub async fn deliver_due(&self) -> Result<(), crate::repo::RepoError> {
        let now = self.clock.now_millis();
        for message in self.repo.due_webhooks(now, 50).await? {
            if self.repo.endpoint_disabled(&message.endpoint).await? {
                self.repo.remove_webhook(&message.message_id).await?;
                continue;
            }
            if !self.allow_private && !admitted(&message.endpoint) {
                tracing::warn!(
                    "webhook endpoint refused by the address guard (a non-public address); \
                     dropping the message (set AVATAR_WEBHOOK_ALLOW_PRIVATE=true for internal receivers)"
                );
                self.repo.remove_webhook(&message.message_id).await?;
                metrics::counter!("avatar_webhooks_total", "outcome" => "refused").increment(1);
                continue;
            }
            let status = self
                .post(
                    &message.endpoint,
                    &message.message_id,
                    &message.payload,
                    now,
                )
                .await;
            let attempts = message.attempts + 1;
            match status {
                Some(s) if (200..300).contains(&s) => {
                    self.repo.remove_webhook(&message.message_id).await?;
                    metrics::counter!("avatar_webhooks_total", "outcome" => "delivered")
                        .increment(1);
                }
                Some(410) => {
                    tracing::warn!("webhook endpoint answered 410 Gone; disabling it");
                    self.repo.disable_endpoint(&message.endpoint, now).await?;
                    self.repo.remove_webhook(&message.message_id).await?;
                    metrics::counter!("avatar_webhooks_total", "outcome" => "disabled")
                        .increment(1);
                }
                _ if attempts >= self.max_attempts => {
                    tracing::warn!(
                        attempts,
                        "webhook delivery failed for good; dropping the message"
                    );
                    self.repo.remove_webhook(&message.message_id).await?;
                    metrics::counter!("avatar_webhooks_total", "outcome" => "dropped").increment(1);
                }
                _ => {
                    let delay = backoff(
                        message.attempts,
                        Duration::from_secs(5),
                        Duration::from_secs(3600),
                        rand::random::<f64>(),
                    );
                    self.repo
                        .retry_webhook(
                            &message.message_id,
                            attempts,
                            now.saturating_add(millis(delay)),
                        )
                        .await?;
                    metrics::counter!("avatar_webhooks_total", "outcome" => "retried").increment(1);
                }
            }
        }
        Ok(())
    }

    /// POST one message; the status, or `None` when no answer came.
    async fn post(
        &self,
        endpoint: &str,
        id: &str,
        payload: &str,
        now: crate::clock::Millis,
    ) -> Option<u16> {
        let timestamp = now / 1000;
        let headers = signature::headers(&self.secret, id, timestamp, payload.as_bytes()).ok()?;
        let mut request = self
            .client
            .post(endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(payload.to_owned());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) => Some(response.status().as_u16()),
            Err(e) => {
                tracing::debug!(error = %e.without_url(), "webhook delivery attempt failed");
                None
            }
        }
    }
}
