//! The job worker: turns an uploaded original into the user's avatar variants.
//!
//! Jobs live in the metadata store. A worker claims the oldest due job under a lease (so a job
//! whose worker died, even by `kill -9`, is claimed again once the lease runs out), processes it,
//! and records the outcome. Invalid images fail at once; transient faults (store, database) are
//! retried with exponential backoff and jitter up to `AVATAR_JOB_MAX_ATTEMPTS`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::avatars::Avatars;
use crate::clock::{Clock, millis};
use crate::config::{JobSettings, UploadSettings};
use crate::events::{EventKind, Notifier};
use crate::fault::{TRY_AGAIN, TRY_LATER};
use crate::imaging::{self, Crop, OutputFormat, Preferred};
use crate::repo::{AvatarRecord, JobRecord, JobStatus, Repo, StoredVariant};
use crate::store::BlobStore;
use crate::uploads::temp_path;
use crate::webhooks::signature::backoff;

/// How long a claimed job is ours before another worker may take it over.
pub const LEASE: Duration = Duration::from_secs(120);
/// How often an idle worker looks for due jobs (it is also woken when a job is queued).
const POLL: Duration = Duration::from_millis(250);

/// Everything a worker needs.
#[derive(Clone)]
pub struct JobContext {
    /// Metadata.
    pub repo: Arc<dyn Repo>,
    /// Durable blobs.
    pub store: Arc<dyn BlobStore>,
    /// Cache invalidation and decode limits.
    pub avatars: Avatars,
    /// The image worker pool (shared with serving).
    pub pool: imaging::ImagePool,
    /// Events.
    pub notifier: Notifier,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Retry policy.
    pub jobs: JobSettings,
    /// Variant sizes, originals policy.
    pub uploads: UploadSettings,
    /// Public URLs.
    pub base_url: String,
    /// Woken when a job is queued.
    pub wake: Arc<tokio::sync::Notify>,
}

/// A failure while processing, by whether retrying can help.
enum Failure {
    /// The image is at fault: fail now.
    Invalid(String),
    /// Something on our side: retry.
    Transient(String),
}

/// Run one worker until the task is aborted.
pub async fn run_worker(ctx: JobContext) {
    loop {
        match ctx.run_once().await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "job queue unavailable"),
        }
        tokio::select! {
            () = ctx.wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

impl JobContext {
    /// Claim and process one due job; `Ok(false)` when none is due.
    pub async fn run_once(&self) -> Result<bool, crate::repo::RepoError> {
        let now = self.clock.now_millis();
        let Some(job) = self
            .repo
            .claim_job(now, now.saturating_add(millis(LEASE)))
            .await?
        else {
            return Ok(false);
        };
        let started = Instant::now();
        let outcome = self.process(&job).await;
        self.record(job, outcome, started.elapsed()).await?;
        Ok(true)
    }

    async fn process(
        &self,
        job: &JobRecord,
    ) -> Result<(String, Vec<StoredVariant>, Value), Failure> {
        let original = self
            .store
            .get(&temp_path(&job.upload_id))
            .await
            .map_err(|e| match e {
                crate::store::StoreError::NotFound => {
                    Failure::Invalid("the uploaded original is gone".into())
                }
                other => Failure::Transient(other.to_string()),
            })?;
        let crop: Option<Crop> = job
            .crop
            .as_deref()
            .and_then(|c| serde_json::from_str::<Value>(c).ok())
            .and_then(|v| crate::uploads::parse_crop(&v).ok());
        let sizes = self.uploads.variant_sizes.clone();
        let limits = self.avatars.settings().limits;
        let rendered = self
            .pool
            .run(move || {
                imaging::render(
                    &original,
                    &limits,
                    crop,
                    &sizes,
                    &[Preferred::JpegOrPng, Preferred::Exactly(OutputFormat::Webp)],
                )
            })
            .await
            .map_err(|e| match e {
                imaging::PoolError::Imaging(e) if e.is_client_fault() => {
                    Failure::Invalid(e.to_string())
                }
                other => Failure::Transient(other.to_string()),
            })?;
        // The version names the content: the largest non-WebP variant's digest.
        let largest = rendered
            .variants
            .iter()
            .filter(|(_, e)| e.format != OutputFormat::Webp)
            .max_by_key(|(size, _)| *size)
            .map(|(_, e)| e.bytes.as_slice())
            .unwrap_or_default();
        let version = hex::encode(&Sha256::digest(largest)[..8]);
        let key = job.user_key.as_str();
        let mut stored = Vec::new();
        for (size, encoded) in &rendered.variants {
            let path = format!(
                "avatar/{key}/{version}/{size}.{}",
                encoded.format.extension()
            );
            self.store
                .put(&path, Bytes::from(encoded.bytes.clone()))
                .await
                .map_err(|e| Failure::Transient(e.to_string()))?;
            stored.push(StoredVariant {
                size: *size,
                width: encoded.width,
                height: encoded.height,
                format: encoded.format.extension().to_owned(),
                bytes: encoded.bytes.len(),
                path,
            });
        }
        let exif = serde_json::to_value(&rendered.exif).unwrap_or(Value::Null);
        Ok((version, stored, exif))
    }

    async fn record(
        &self,
        mut job: JobRecord,
        outcome: Result<(String, Vec<StoredVariant>, Value), Failure>,
        took: Duration,
    ) -> Result<(), crate::repo::RepoError> {
        let now = self.clock.now_millis();
        job.updated_at = now;
        job.locked_until = None;
        match outcome {
            Ok((version, variants, exif)) => {
                let key = job.user_key.clone();
                let previous = self
                    .repo
                    .set_avatar(&AvatarRecord {
                        user_key: key.clone(),
                        version: version.clone(),
                        variants: serde_json::to_string(&variants).unwrap_or_default(),
                        updated_at: now,
                    })
                    .await?;
                self.avatars.forget(&key);
                if let Some(old) = previous.filter(|p| p.version != version)
                    && let Err(e) = self
                        .store
                        .delete_prefix(&format!("avatar/{key}/{}", old.version))
                        .await
                {
                    tracing::warn!(error = %e, "could not delete a replaced avatar's variants");
                }
                if !self.uploads.keep_originals
                    && let Err(e) = self.store.delete_prefix(&temp_path(&job.upload_id)).await
                {
                    tracing::warn!(error = %e, "could not delete a processed original (the sweep will)");
                }
                let urls: serde_json::Map<String, Value> = self
                    .uploads
                    .variant_sizes
                    .iter()
                    .map(|s| (s.to_string(), Value::String(self.url(&key, *s, &version))))
                    .collect();
                let reported: Vec<Value> = variants
                    .iter()
                    .map(|v| {
                        json!({"size": v.size, "width": v.width, "height": v.height, "format": v.format,
                               "bytes": v.bytes,
                               "url": format!("{}/avatar/{key}.{}?s={}&v={version}", self.base_url, v.format, v.size)})
                    })
                    .collect();
                job.status = JobStatus::Completed;
                job.error = None;
                job.result = Some(
                    json!({"version": version, "variants": reported, "exif": exif,
                           "processing_ms": took.as_millis() as u64})
                    .to_string(),
                );
                self.repo.update_job(&job).await?;
                self.notifier
                    .publish(
                        &key,
                        EventKind::ProfileImageCompleted,
                        json!({"job_id": job.job_id, "version": version, "urls": urls}),
                    )
                    .await;
                metrics::counter!("avatar_jobs_total", "outcome" => "completed").increment(1);
            }
            Err(Failure::Transient(message)) if job.attempts < self.jobs.max_attempts => {
                let delay = backoff(
                    job.attempts.saturating_sub(1),
                    self.jobs.retry_base,
                    Duration::from_secs(600),
                    rand::random::<f64>(),
                );
                tracing::warn!(job = %job.job_id, attempt = job.attempts, error = %message, "job failed; retrying");
                job.status = JobStatus::Queued;
                job.run_at = now.saturating_add(millis(delay));
                job.error = Some(
                    json!({"code": "transient", "message": message, "user_message": TRY_LATER})
                        .to_string(),
                );
                self.repo.update_job(&job).await?;
                metrics::counter!("avatar_jobs_total", "outcome" => "retried").increment(1);
            }
            Err(failure) => {
                let (code, message, user_message) = match failure {
                    Failure::Invalid(m) => ("invalid-image", m, TRY_AGAIN),
                    Failure::Transient(m) => (
                        "processing-failed",
                        format!("gave up after {} attempts: {m}", job.attempts),
                        TRY_LATER,
                    ),
                };
                job.status = JobStatus::Failed;
                job.error = Some(
                    json!({"code": code, "message": message, "user_message": user_message})
                        .to_string(),
                );
                self.repo.update_job(&job).await?;
                let _ = self.store.delete_prefix(&temp_path(&job.upload_id)).await;
                self.notifier
                    .publish(
                        &job.user_key,
                        EventKind::ProfileImageFailed,
                        json!({"job_id": job.job_id, "code": code, "user_message": user_message}),
                    )
                    .await;
                metrics::counter!("avatar_jobs_total", "outcome" => "failed").increment(1);
            }
        }
        Ok(())
    }

    fn url(&self, key: &crate::keys::UserKey, size: u32, version: &str) -> String {
        format!("{}/avatar/{key}?s={size}&v={version}", self.base_url)
    }
}
