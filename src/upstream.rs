//! Upstream identity providers and the authenticated fetcher.
//!
//! - [`hosts`]: host patterns of the allow-list (`host`, `host:port`, `*.domain`).
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
pub mod hosts;
pub mod limits;
mod redirect;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

pub use credential::Credential;
pub use fetch::{FetchOutcome, Fetched, Fetcher, UpstreamError, Validators};
pub use health::BackoffPolicy;
pub use hosts::HostPattern;
use url::Url;

use crate::config::Settings;
use crate::imaging;

/// What the fetcher needs from the settings.
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

impl FetchSettings {
    /// From validated settings.
    pub fn from_settings(settings: &Settings, limits: imaging::Limits) -> Self {
        let u = &settings.upstream;
        Self {
            timeout: u.timeout,
            connect_timeout: u.connect_timeout,
            max_concurrent: settings.cache.max_concurrent_downloads,
            queue_timeout: u.queue_timeout,
            backoff: BackoffPolicy {
                base: u.backoff,
                max: u.max_retry_after,
                failures_to_open: u.failures_before_backoff.max(1),
            },
            warn_interval: u.warn_interval,
            max_bytes: settings.images.max_image_bytes,
            limits,
        }
    }
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
    /// Build from settings (already validated).
    pub fn from_settings(settings: &Settings) -> Result<Self, String> {
        let mut list = Vec::new();
        for (name, s) in &settings.upstreams {
            let hosts = s
                .hosts
                .iter()
                .map(|h| HostPattern::parse(h))
                .collect::<Result<Vec<_>, _>>()?;
            list.push(Arc::new(Upstream {
                name: name.clone(),
                hosts,
                credential: Credential::from_settings(s)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_slots_and_per_upstream_limits_come_from_the_environment() {
        let env = [
            ("AVATAR_UPSTREAM_QUEUE_TIMEOUT", "2s"),
            ("AVATAR_UPSTREAM_MAX_RETRY_AFTER", "3m"),
            ("AVATAR_UPSTREAM_BACKOFF", "10s"),
            ("AVATAR_UPSTREAM_FAILURES_BEFORE_BACKOFF", "5"),
            ("AVATAR_UPSTREAM_WARN_INTERVAL", "1m"),
            ("AVATAR_UPSTREAM_AZURE_HOSTS", "dev.azure.com"),
            ("AVATAR_UPSTREAM_AZURE_MAX_CONCURRENT", "4"),
            ("AVATAR_UPSTREAM_GITLAB_HOSTS", "gitlab.example.com"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let settings = Settings::load_from(None, env).expect("valid");
        let f = FetchSettings::from_settings(&settings, imaging::Limits::default());
        assert_eq!(f.queue_timeout, Duration::from_secs(2));
        assert_eq!(f.backoff.max, Duration::from_secs(180));
        assert_eq!(f.backoff.base, Duration::from_secs(10));
        assert_eq!(f.backoff.failures_to_open, 5);
        assert_eq!(f.warn_interval, Duration::from_secs(60));
        let upstreams = Upstreams::from_settings(&settings).expect("valid");
        let limit = |name: &str| {
            upstreams
                .iter()
                .find(|u| u.name == name)
                .map(|u| u.max_concurrent)
        };
        assert_eq!(limit("azure"), Some(Some(4)));
        assert_eq!(
            limit("gitlab"),
            Some(None),
            "half the global limit by default"
        );
        assert!(
            !settings.upstreams.contains_key("queue"),
            "not an upstream named QUEUE"
        );
    }
}
