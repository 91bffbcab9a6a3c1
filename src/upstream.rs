//! Upstream identity providers and the authenticated fetcher.
//!
//! - [`HostPattern`] (from `crate::hosts`): host patterns of the allow-list (`host`,
//!   `host:port`, `*.domain`).
//! - [`credential`]: the one credential of an upstream, attached only on its own hosts.
//! - [`guard`]: address rules applied after DNS resolution (SSRF guard).
//! - [`fetch`]: the fetcher: redirects re-checked hop by hop, byte cap while streaming,
//!   sign-in pages recognised as authentication failures, conditional revalidation.
//! - [`health`]: `Retry-After`, backoff per upstream, memory of failed URLs.
//! - `redirect`: where a `Location` leads and what each hop may carry (credential, client).
//! - [`limits`]: download slots, global and per upstream, with a queue timeout.
//! - [`report`]: one warning per upstream and kind of trouble per interval.

pub mod credential;
pub mod fetch;
pub mod guard;
pub mod health;
pub mod limits;
mod redirect;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

pub use crate::hosts::HostPattern;
pub use credential::{Credential, CredentialSettings};
pub use fetch::{FetchOutcome, Fetched, Fetcher, UpstreamError, Validators};
pub use health::BackoffPolicy;
use url::Url;

use crate::imaging;

/// One upstream as configured: built from the settings at start-up.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Name (metrics label).
    pub name: String,
    /// Hosts it covers.
    pub hosts: Vec<HostPattern>,
    /// Its credential.
    pub credential: CredentialSettings,
    /// Plain HTTP allowed.
    pub allow_http: bool,
    /// Private and loopback addresses allowed.
    pub allow_private: bool,
    /// Requests in flight to this upstream (`AVATAR_UPSTREAM_<NAME>_MAX_CONCURRENT`); `None`:
    /// half the global limit.
    pub max_concurrent: Option<usize>,
}

/// What the fetcher needs from the settings (built by the app from them).
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Total time of one request (`AVATAR_UPSTREAM_TIMEOUT`).
    pub timeout: Duration,
    /// Connection time (`AVATAR_UPSTREAM_CONNECT_TIMEOUT`).
    pub connect_timeout: Duration,
    /// Requests in flight, all upstreams together (`AVATAR_CACHE_MAX_CONCURRENT_DOWNLOADS`).
    pub max_concurrent: usize,
    /// Longest wait for a download slot (`AVATAR_UPSTREAM_QUEUE_TIMEOUT`).
    pub queue_timeout: Duration,
    /// Backoff after failures and the cap of `Retry-After`.
    pub backoff: BackoffPolicy,
    /// One warning per upstream and kind of trouble per this (`AVATAR_UPSTREAM_WARN_INTERVAL`).
    pub warn_interval: Duration,
    /// Byte cap of a (decoded) body (`AVATAR_MAX_IMAGE_BYTES`).
    pub max_bytes: usize,
    /// Probe limits applied before anyone may cache a body.
    pub limits: imaging::Limits,
}

/// One configured upstream.
#[derive(Debug)]
pub struct Upstream {
    /// Name from the configuration (metrics label).
    pub name: String,
    /// Hosts this upstream (and its credential) covers.
    pub hosts: Vec<HostPattern>,
    /// Attached to requests to these hosts only.
    pub credential: Credential,
    /// Plain HTTP allowed.
    pub allow_http: bool,
    /// Private and loopback addresses allowed.
    pub allow_private: bool,
    /// Requests in flight to this upstream; `None`: half the global limit.
    pub max_concurrent: Option<usize>,
}

impl Upstream {
    /// Whether this upstream serves `url` (scheme and host rules).
    pub fn covers(&self, url: &Url) -> bool {
        let scheme_ok = match url.scheme() {
            "https" => true,
            "http" => self.allow_http,
            _ => false,
        };
        scheme_ok
            && url.username().is_empty()
            && url.password().is_none()
            && self.hosts.iter().any(|p| p.matches(url))
    }
}

/// The allow-list: every configured upstream.
#[derive(Debug, Clone, Default)]
pub struct Upstreams(Arc<Vec<Arc<Upstream>>>);

impl Upstreams {
    /// Build the allow-list; an error names the upstream whose credential is malformed.
    pub fn from_settings(settings: &[UpstreamSettings]) -> Result<Self, String> {
        let mut list = Vec::new();
        for s in settings {
            let credential = Credential::from_settings(&s.credential)
                .map_err(|e| format!("upstreams.{}: {e}", s.name))?;
            list.push(Arc::new(Upstream {
                name: s.name.clone(),
                hosts: s.hosts.clone(),
                credential,
                allow_http: s.allow_http,
                allow_private: s.allow_private,
                max_concurrent: s.max_concurrent,
            }));
        }
        Ok(Self(Arc::new(list)))
    }

    /// The upstream that covers `url`, if any.
    pub fn for_url(&self, url: &Url) -> Option<&Arc<Upstream>> {
        self.0.iter().find(|u| u.covers(url))
    }

    /// Parse and check an avatar URL from an identity record.
    pub fn admit(&self, raw: &str) -> Result<(Url, Arc<Upstream>), &'static str> {
        let url = Url::parse(raw.trim()).map_err(|_| "malformed URL")?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("unsupported scheme");
        }
        self.for_url(&url)
            .cloned()
            .map(|u| (url, u))
            .ok_or("host not allow-listed")
    }

    /// Every upstream.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.0.iter()
    }
}
