//! `sweep-temporary-data`: a periodic, idempotent clean-up of what nobody will read again:
//! orphaned cache content and temp files, and uploaded originals past their retention
//! (`AVATAR_TEMP_RETENTION`, whatever happened to them). Also refreshes the cache gauges.

use std::sync::Arc;
use std::time::Duration;

use crate::avatars::Avatars;
use crate::store::BlobStore;
use crate::store::paths::TEMP_PREFIX;

/// Cache files younger than this are never collected (a write may be in progress).
const ORPHAN_AGE: Duration = Duration::from_secs(600);

/// What the sweep needs.
#[derive(Clone)]
pub struct Sweep {
    /// The caches (disk tier garbage, gauges).
    pub avatars: Avatars,
    /// Uploaded originals.
    pub store: Arc<dyn BlobStore>,
    /// Originals older than this go.
    pub temp_retention: Duration,
}

impl Sweep {
    /// Run once.
    pub async fn run(&self) {
        let disk = self.avatars.disk().clone();
        let removed = tokio::task::spawn_blocking(move || disk.collect_garbage(ORPHAN_AGE))
            .await
            .unwrap_or(0);
        if removed > 0 {
            tracing::info!(removed, "cache cleanup removed orphaned files");
        }
        match self
            .store
            .delete_older_than(TEMP_PREFIX, self.temp_retention)
            .await
        {
            Ok(0) => {}
            Ok(swept) => tracing::info!(swept, "swept expired upload originals"),
            Err(e) => tracing::warn!(error = %e, "could not sweep upload originals"),
        }
        self.avatars.publish_gauges();
    }
}
