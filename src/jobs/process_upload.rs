//! `process-upload`: turns an uploaded original into the user's avatar variants.
//!
//! Jobs live in the metadata store's `jobs` table; the [runner](super::runner) claims, renews
//! and retries them. Invalid images abort at once; transient faults (store, database) are
//! retried up to `AVATAR_JOB_MAX_ATTEMPTS`. Idempotent: the variants' paths and version derive
//! from the rendered bytes, so a rerun after a crash writes the same files.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::runner::{Lease, Outcome, Queue, Settlement};
use crate::avatars::Avatars;
use crate::clock::{Clock, Millis};
use crate::config::UploadSettings;
use crate::events::{EventKind, Notifier};
use crate::fault::TRY_LATER;
use crate::imaging::{self, Crop, OutputFormat, Preferred};
use crate::repo::{
    AvatarRecord, JobError, JobRecord, JobResult, JobStatus, Repo, RepoError, ReportedVariant,
    StoredVariant,
};
use crate::store::{BlobStore, paths};
use crate::urls::PublicUrls;

/// The `process-upload` job type: everything its runs need.
#[derive(Clone)]
pub struct ProcessUpload {
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
    /// Attempts before giving up (`AVATAR_JOB_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// Variant sizes, originals policy.
    pub uploads: UploadSettings,
    /// Public URLs.
    pub urls: PublicUrls,
}

/// Separates the error code from the message in an abort reason (a character no message holds).
const CODE_END: char = '\u{1f}';

/// A failure while processing, by whether retrying can help.
enum Failure {
    /// The image is at fault: fail now.
    Invalid(&'static str, String),
    /// Something on our side: retry.
    Transient(String),
}

/// A fault on our side while `doing` something: its cause (which may name files, buckets or
/// database details) is logged here, once; the job record, its events and the status API only
/// ever carry the safe text.
fn internal(job: &JobRecord, doing: &'static str, cause: &dyn std::fmt::Display) -> Failure {
    tracing::warn!(job_id = %job.job_id, error = %cause, "process-upload failed while {doing}");
    Failure::Transient(format!("an internal fault while {doing}"))
}

/// What a finished run records.
#[derive(Debug)]
pub struct Processed {
    version: String,
    variants: Vec<StoredVariant>,
    exif: Value,
    took: Duration,
}

#[async_trait]
impl Queue for ProcessUpload {
    type Job = JobRecord;
    type Output = Processed;

    fn name(&self) -> &'static str {
        "process-upload"
    }

    fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    fn attempts(&self, job: &JobRecord) -> u32 {
        job.attempts
    }

    async fn claim(&self, now: Millis, lease: &Lease) -> Result<Option<JobRecord>, RepoError> {
        self.repo.claim_job(now, lease.until, &lease.owner).await
    }

    async fn renew(&self, job: &JobRecord, lease: &Lease) -> Result<bool, RepoError> {
        self.repo
            .renew_job(&job.job_id, &lease.owner, lease.until)
            .await
    }

    async fn run(&self, job: &JobRecord) -> Outcome<Processed> {
        let started = Instant::now();
        match self.process(job).await {
            Ok((version, variants, exif)) => Outcome::Done(Processed {
                version,
                variants,
                exif,
                took: started.elapsed(),
            }),
            Err(Failure::Invalid(code, m)) => Outcome::Abort(format!("{code}{CODE_END}{m}")),
            Err(Failure::Transient(m)) => Outcome::Retry(m),
        }
    }

    async fn settle(
        &self,
        job: JobRecord,
        settlement: Settlement<Processed>,
        owner: &str,
    ) -> Result<bool, RepoError> {
        self.record(job, settlement, owner).await
    }
}

impl ProcessUpload {
    async fn process(
        &self,
        job: &JobRecord,
    ) -> Result<(String, Vec<StoredVariant>, Value), Failure> {
        let original = self
            .store
            .get(&paths::original(&job.upload_id))
            .await
            .map_err(|e| match e {
                crate::store::StoreError::NotFound => {
                    Failure::Invalid("invalid-image", "the uploaded original is gone".into())
                }
                other => internal(job, "reading the original", &other),
            })?;
        let crop: Option<Crop> = job.crop;
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
                    // Too many scans or too much memory has its own code, as at upload time.
                    let code = match e {
                        imaging::ImagingError::TooComplex(_) => "image-too-complex",
                        _ => "invalid-image",
                    };
                    Failure::Invalid(code, e.to_string())
                }
                other => internal(job, "rendering", &other),
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
        let mut stored = Vec::new();
        for (size, encoded) in &rendered.variants {
            let path = paths::variant(&job.user_key, &version, *size, encoded.format);
            self.store
                .put(&path, Bytes::from(encoded.bytes.clone()))
                .await
                .map_err(|e| internal(job, "storing the variants", &e))?;
            stored.push(StoredVariant {
                size: *size,
                width: encoded.width,
                height: encoded.height,
                format: encoded.format,
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
        settlement: Settlement<Processed>,
        owner: &str,
    ) -> Result<bool, RepoError> {
        let now = self.clock.now_millis();
        job.updated_at = now;
        job.locked_until = None;
        match settlement {
            Settlement::Done(processed) => return self.complete(job, processed, owner).await,
            Settlement::RetryAt { at, reason } => {
                job.status = JobStatus::Queued;
                job.run_at = at;
                job.error = Some(JobError {
                    code: "transient".into(),
                    message: reason,
                    user_message: TRY_LATER.into(),
                });
                if !self.repo.update_job(&job, owner).await? {
                    return Ok(false);
                }
                metrics::counter!("avatar_jobs_total", "outcome" => "retried").increment(1);
            }
            // A processing fault, in the profile-image design's fault table: "Try again later"
            // ("Try again" is for what the user can fix at once, like a crop, refused with 400).
            Settlement::Abort(reason) => {
                // `run` put the error code in front of the message.
                let (code, message) = match reason.split_once(CODE_END) {
                    Some(("image-too-complex", m)) => ("image-too-complex", m.to_owned()),
                    Some((_, m)) => ("invalid-image", m.to_owned()),
                    None => ("invalid-image", reason),
                };
                return self.fail(job, (code, message, TRY_LATER), owner).await;
            }
            Settlement::GaveUp { attempts, reason } => {
                let message = format!("gave up after {attempts} attempts: {reason}");
                return self
                    .fail(job, ("processing-failed", message, TRY_LATER), owner)
                    .await;
            }
        }
        Ok(true)
    }

    /// Make the rendered variants the user's avatar, drop what they replace, record the result
    /// and tell the user.
    async fn complete(
        &self,
        mut job: JobRecord,
        processed: Processed,
        owner: &str,
    ) -> Result<bool, RepoError> {
        let Processed {
            version,
            variants,
            exif,
            took,
        } = processed;
        let now = job.updated_at;
        let key = job.user_key.clone();
        let avatar = AvatarRecord {
            user_key: key.clone(),
            version: version.clone(),
            variants: variants.clone(),
            updated_at: now,
        };
        job.status = JobStatus::Completed;
        job.error = None;
        job.result = Some(self.result(&key, &version, &variants, exif, took));
        // One transaction: a job superseded meanwhile (`DELETE /v1/avatar`) or reclaimed by
        // another runner settles nothing and makes nothing current.
        let Some(previous) = self.repo.complete_job(&job, owner, &avatar).await? else {
            let superseded = self.repo.job(&job.job_id).await?.is_some_and(|j| {
                j.error.is_some_and(|e| e.code == "superseded") && j.status == JobStatus::Failed
            });
            if superseded {
                self.drop_unused_version(&key, &version).await;
            }
            return Ok(false);
        };
        self.avatars.forget(&key);
        if let Some(old) = previous.filter(|p| p.version != version)
            && let Err(e) = self
                .store
                .delete_prefix(&paths::avatar_version(&key, &old.version))
                .await
        {
            tracing::warn!(error = %e, "could not delete a replaced avatar's variants");
        }
        if !self.uploads.keep_originals {
            self.delete_original(&job).await;
        } else if let Err(e) = self.repo.settle_original(&job.upload_id).await {
            tracing::warn!(error = %e, "could not record a processed original");
        }
        let urls: serde_json::Map<String, Value> = self
            .uploads
            .variant_sizes
            .iter()
            .map(|s| {
                let url = self.urls.avatar_sized(&key, *s, &version);
                (s.to_string(), Value::String(url))
            })
            .collect();
        self.notifier
            .publish(
                &key,
                EventKind::ProfileImageCompleted,
                json!({"job_id": job.job_id, "version": version, "urls": urls}),
            )
            .await;
        metrics::counter!("avatar_jobs_total", "outcome" => "completed").increment(1);
        Ok(true)
    }

    /// The result a completed job reports.
    fn result(
        &self,
        key: &crate::keys::UserKey,
        version: &str,
        variants: &[StoredVariant],
        exif: Value,
        took: Duration,
    ) -> JobResult {
        let reported = variants
            .iter()
            .map(|v| ReportedVariant {
                size: v.size,
                width: v.width,
                height: v.height,
                format: v.format,
                bytes: v.bytes,
                url: self.urls.avatar_file(key, v.format, v.size, version),
            })
            .collect();
        JobResult {
            version: version.to_owned(),
            variants: reported,
            exif,
            processing_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Delete a job's original (one blob, not a folder) and stop counting it as pending; the
    /// sweep deletes what this could not.
    async fn delete_original(&self, job: &JobRecord) {
        if let Err(e) = self.store.delete(&paths::original(&job.upload_id)).await {
            tracing::warn!(error = %e, "could not delete a processed original (the sweep will)");
            return;
        }
        if let Err(e) = self.repo.settle_original(&job.upload_id).await {
            tracing::warn!(error = %e, "could not record a deleted original");
        }
    }

    /// Variants rendered by a superseded job: delete them unless they are the current
    /// avatar's (the same picture uploaded again). (A job reclaimed by another runner keeps
    /// them: its new owner writes the same files.)
    async fn drop_unused_version(&self, key: &crate::keys::UserKey, version: &str) {
        match self.repo.avatar(key).await {
            Ok(Some(current)) if current.version == version => {}
            Ok(_) => {
                if let Err(e) = self
                    .store
                    .delete_prefix(&paths::avatar_version(key, version))
                    .await
                {
                    tracing::warn!(error = %e, "could not delete an unused version's variants");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not check an unused version"),
        }
    }

    /// Record a failure for good, drop the original unless a retry can use it, tell the user.
    async fn fail(
        &self,
        mut job: JobRecord,
        (code, message, user_message): (&'static str, String, &'static str),
        owner: &str,
    ) -> Result<bool, RepoError> {
        job.status = JobStatus::Failed;
        job.error = Some(JobError {
            code: code.into(),
            message,
            user_message: user_message.into(),
        });
        if !self.repo.update_job(&job, owner).await? {
            return Ok(false);
        }
        // A job that gave up on our faults keeps its original until AVATAR_TEMP_RETENTION, so
        // its owner can retry it (`POST /v1/jobs/{id}/retry`); retrying cannot help an image
        // that is at fault, so that original goes now.
        if code != "processing-failed" {
            self.delete_original(&job).await;
        }
        self.notifier
            .publish(
                &job.user_key,
                EventKind::ProfileImageFailed,
                json!({"job_id": job.job_id, "code": code, "user_message": user_message}),
            )
            .await;
        metrics::counter!("avatar_jobs_total", "outcome" => "failed").increment(1);
        Ok(true)
    }
}
