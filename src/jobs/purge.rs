//! `purge-expired-records`: a periodic, idempotent purge of metadata nobody will read again:
//! upload grants never used and expired for longer than `AVATAR_TEMP_RETENTION`, and finished
//! jobs older than `AVATAR_JOB_RETENTION`.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, millis};
use crate::repo::Repo;

/// What the purge needs.
#[derive(Clone)]
pub struct PurgeExpired {
    /// The metadata store.
    pub repo: Arc<dyn Repo>,
    /// Now.
    pub clock: Arc<dyn Clock>,
    /// Unused grants go this long after their expiry.
    pub grant_retention: Duration,
    /// Finished jobs go this long after they finished.
    pub job_retention: Duration,
}

impl PurgeExpired {
    /// Run once.
    pub async fn run(&self) {
        let now = self.clock.now_millis();
        let grants_before = now.saturating_sub(millis(self.grant_retention));
        let jobs_before = now.saturating_sub(millis(self.job_retention));
        match self.repo.purge_expired(grants_before, jobs_before).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged expired upload grants and finished jobs"),
            Err(e) => tracing::warn!(error = %e, "could not purge expired records"),
        }
    }
}
