//! Webhooks: events signed the Standard Webhooks way and posted to the configured endpoint.
//!
//! This module is the signed HTTP client only; the `deliver-webhook` job (in the jobs service)
//! takes messages from the persisted outbox, retries them with the jobs' backoff, and disables
//! an endpoint that answers 410.

pub mod signature;

use std::time::Duration;

use crate::upstream::guard::{PublicOnlyResolver, refuses_literal};
use signature::WebhookSecret;

/// Posts signed messages.
pub struct Deliverer {
    secret: WebhookSecret,
    client: reqwest::Client,
    /// Whether targets may be private addresses; otherwise names are filtered by the resolver
    /// and IP literals (which no resolver sees) by [`refuses_literal`].
    allow_private: bool,
}

impl Deliverer {
    /// Build the HTTP client: targets pass the same address guard as upstreams unless
    /// `allow_private`.
    pub fn new(secret: &str, allow_private: bool) -> Result<Self, String> {
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
            secret,
            client,
            allow_private,
        })
    }

    /// Whether `endpoint` passes the address rules before any DNS lookup: an http(s) URL whose
    /// host is a name (judged later by the resolver) or, unless private targets are allowed, a
    /// public IP literal (`http://2130706433/` and `http://[::ffff:127.0.0.1]/` are literals).
    pub fn admits(&self, endpoint: &str) -> bool {
        url::Url::parse(endpoint).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && (self.allow_private || !refuses_literal(&u))
        })
    }

    /// POST one message; the status, or `None` when no answer came.
    pub async fn post(
        &self,
        endpoint: &str,
        id: &str,
        payload: &str,
        now: crate::clock::Millis,
    ) -> Option<u16> {
        let timestamp = crate::clock::unix_seconds(now);
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
