//! The state every handler shares: one `Arc<App>` of service handles, each field saying why it
//! is there.

use std::ops::Deref;
use std::sync::Arc;

use metrics::Histogram;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::avatars::Avatars;
use crate::clock::Clock;
use crate::config::Settings;
use crate::keys::{KeyDeriver, UserKey};
use crate::repo::Repo;
use crate::store::BlobStore;

/// Shared application state: one `Arc`, cloned into every handler.
#[derive(Clone)]
pub struct AppState(Arc<App>);

impl AppState {
    /// Wrap the assembled services.
    pub fn new(app: App) -> Self {
        Self(Arc::new(app))
    }
}

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

/// Everything handlers need.
pub struct App {
    /// Effective settings.
    pub settings: Arc<Settings>,
    /// The resolver and its caches.
    pub avatars: Avatars,
    /// User id → public key.
    pub keys: KeyDeriver,
    /// SHA-256 of each service API key (compared in constant time).
    pub api_key_digests: Vec<[u8; 32]>,
    /// Base of the URLs handed out, without a trailing slash.
    pub public_base_url: String,
    /// Metadata store.
    pub repo: Arc<dyn Repo>,
    /// Time, injectable for tests.
    pub clock: Arc<dyn Clock>,
    /// Metric handles registered once (the hot path only records).
    pub metrics: Metrics,
    /// JWT verification; `None` when user authentication is not configured.
    pub jwt: Option<crate::auth::jwt::JwtVerifier>,
    /// Upload grants, direct uploads, job creation.
    pub uploads: crate::uploads::Uploads,
    /// Live events and the webhook outbox.
    pub notifier: crate::events::Notifier,
    /// Durable blobs (uploaded variants, originals waiting).
    pub store: Arc<dyn BlobStore>,
}

/// Pre-registered metric handles.
pub struct Metrics {
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    /// Latency of `/avatar` responses.
    pub serve_latency: Histogram,
}

impl App {
    /// The public URL of a key's avatar, with `?v=` when the version is known.
    pub fn avatar_url(&self, key: &UserKey, version: Option<&str>) -> String {
        match version {
            Some(v) => format!("{}/avatar/{key}?v={v}", self.public_base_url),
            None => format!("{}/avatar/{key}", self.public_base_url),
        }
    }

    /// URL of the default image for records without a usable id.
    pub fn anonymous_avatar_url(&self) -> String {
        format!("{}/avatar/anonymous", self.public_base_url)
    }

    /// Refresh the gauges of cache sizes (called when metrics are scraped).
    pub fn publish_gauges(&self) {
        self.avatars.publish_gauges();
    }
}
