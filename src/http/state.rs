//! The state every handler shares: one `Arc<App>` of service handles, each field saying why it
//! is there.

use std::ops::Deref;
use std::sync::Arc;

use metrics::Histogram;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::avatars::Avatars;
use crate::clock::Clock;
use crate::config::Settings;
use crate::keys::KeyDeriver;
use crate::repo::Repo;
use crate::store::BlobStore;
use crate::urls::PublicUrls;

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
    /// The public URLs handed out (`AVATAR_PUBLIC_BASE_URL`).
    pub urls: PublicUrls,
    /// Metadata store.
    pub repo: Arc<dyn Repo>,
    /// Time, injectable for tests.
    pub clock: Arc<dyn Clock>,
    /// Metric handles registered once (the hot path only records).
    pub metrics: Metrics,
    /// JWT verification; `None` when user authentication is not configured.
    pub jwt: Option<crate::auth::jwt::JwtVerifier>,
    /// The identity registry (rewrite, register).
    pub identities: crate::identities::Identities,
    /// Upload grants, direct uploads, job creation.
    pub uploads: crate::uploads::Uploads,
    /// Live events and the webhook outbox.
    pub notifier: crate::events::Notifier,
    /// Durable blobs (uploaded variants, originals waiting).
    pub store: Arc<dyn BlobStore>,
    /// Demo tokens; `Some` exactly when demo mode is on (the `/demo/` routes exist only then).
    pub demo: Option<crate::auth::minter::TokenMinter>,
    /// Per-client rate limits of `/avatar` work and the JSON API.
    pub limits: Arc<super::limits::EdgeLimits>,
    /// Open event streams per user.
    pub streams: super::streams::StreamSlots,
    /// Cancelled when the service starts shutting down: event streams close on it.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Pre-registered metric handles.
pub struct Metrics {
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    /// Latency of `/avatar` responses.
    pub serve_latency: Histogram,
}

impl App {
    /// Refresh the gauges of cache sizes (called when metrics are scraped).
    pub fn publish_gauges(&self) {
        self.avatars.publish_gauges();
    }
}
