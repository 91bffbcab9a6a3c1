//! User uploads: signed upload URLs, direct uploads, and the start of processing.
//!
//! ```text
//! POST /v1/uploads ─▶ per-user quota ─▶ grant (repo) + signed PUT URL
//! PUT  signed URL  ─▶ signature, expiry, declared type and length, unused, pending quota
//!                     (before the body) ─▶ body permit ─▶ capped body ─▶ magic bytes ─▶ store
//! POST /v1/avatar  ─▶ crop checked against the probed image (400 at once) ─▶ one job per
//!                     upload (repo, 409 job-exists) ─▶ 202 + ProfileImageUpdated
//! POST /v1/jobs/{id}/retry ─▶ failed and original still kept ─▶ queued again (else 409 / 410)
//! DELETE /v1/avatar ─▶ pending jobs superseded ─▶ avatar record and variants deleted
//! ```
//!
//! Per-user limits (`AVATAR_UPLOAD_GRANTS_PER_USER` per `AVATAR_UPLOAD_GRANT_WINDOW`,
//! `AVATAR_MAX_PENDING_ORIGINALS`, `AVATAR_MAX_PENDING_ORIGINAL_BYTES`) are enforced by
//! conditional writes in the repository; bodies are read under `AVATAR_MAX_CONCURRENT_UPLOADS`.

pub mod signing;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::User;
use crate::clock::{Clock, from_unix_seconds, millis, unix_seconds};
use crate::config::UploadSettings;
use crate::events::{EventKind, Notifier};
use crate::ids::{JobId, UploadId};
use crate::imaging::{self, Crop, ImageKind};
use crate::keys::UserKey;
use crate::repo::{
    Enqueued, JobError, JobRecord, JobStatus, Received, Repo, RepoError, UploadQuota, UploadRecord,
    UploadUsage,
};
use crate::store::{BlobStore, StoreError, paths};
use crate::urls::PublicUrls;
use signing::{SignatureError, UploadGrant, UploadSigner};

/// Accepted upload types.
pub const ACCEPTED_TYPES: [&str; 3] = ["image/jpeg", "image/png", "image/webp"];

/// Why an upload request was refused. The HTTP edge maps each to a status and a code; the
/// messages are safe to show (no paths, no internal details beyond the two backend variants,
/// whose text is only logged).
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The declared type is not one of [`ACCEPTED_TYPES`].
    #[error("accepted types: image/jpeg, image/png, image/webp")]
    UnsupportedType,
    /// Larger than the limit (bytes).
    #[error("images may have at most {0} bytes")]
    TooLarge(u64),
    /// The signed URL's expiry passed.
    #[error("this upload URL has expired; request a new one")]
    UrlExpired,
    /// The signed URL was altered or is not ours.
    #[error("the upload URL is not valid")]
    InvalidSignature,
    /// Declared or sniffed type differs from the grant's.
    #[error("{0}")]
    ContentTypeMismatch(String),
    /// A signed URL is used once.
    #[error("this upload URL was already used")]
    AlreadyUploaded,
    /// No such upload for this user.
    #[error("upload not found")]
    NotFound,
    /// No such job for this user.
    #[error("job not found")]
    JobNotFound,
    /// The user has no uploaded avatar.
    #[error("uploaded avatar not found")]
    NoAvatar,
    /// Processing was asked for before the bytes arrived.
    #[error("the image has not been uploaded yet")]
    Incomplete,
    /// The original was swept.
    #[error("the uploaded image is no longer available; upload it again")]
    Expired,
    /// Not a JPEG, PNG or WebP by its magic bytes.
    #[error("upload a JPEG, PNG or WebP image")]
    UnsupportedImage,
    /// The image is broken or beyond the dimension limits.
    #[error("{0}")]
    InvalidImage(String),
    /// Decoding it would take more scans or memory than allowed (`AVATAR_MAX_JPEG_SCANS`,
    /// `AVATAR_MAX_DECODE_BYTES`).
    #[error("{0}")]
    TooComplex(String),
    /// The crop is malformed or outside the image.
    #[error("{0}")]
    InvalidCrop(String),
    /// `AVATAR_MAX_CONCURRENT_UPLOADS` upload bodies are being read already.
    #[error("too many uploads are in progress; try again in a moment")]
    Busy,
    /// The user started `AVATAR_UPLOAD_GRANTS_PER_USER` uploads within the window; one frees up
    /// after `retry_after`.
    #[error("too many uploads started recently; try again later")]
    GrantQuota {
        /// Until a slot of the window frees up.
        retry_after: Duration,
    },
    /// The user's originals waiting for processing reached `AVATAR_MAX_PENDING_ORIGINALS` or
    /// `AVATAR_MAX_PENDING_ORIGINAL_BYTES`; the oldest is swept after `retry_after` at the latest.
    #[error("too many uploaded images are waiting to be processed; process or wait for them first")]
    OriginalsQuota {
        /// Until the oldest pending original leaves the retention window.
        retry_after: Duration,
    },
    /// The upload has a job already (one job per upload).
    #[error("this upload is already being processed (job {0})")]
    JobExists(JobId),
    /// Only failed jobs can be retried.
    #[error("only a failed job can be retried; this one is {0}")]
    NotRetryable(&'static str),
    /// The metadata store failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The blob store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl UploadError {
    /// The refusal for an image the probe or the decode planner turned down.
    fn from_imaging(e: imaging::ImagingError) -> Self {
        match e {
            imaging::ImagingError::TooComplex(_) => Self::TooComplex(e.to_string()),
            other => Self::InvalidImage(other.to_string()),
        }
    }
}

/// The answer to `POST /v1/uploads`.
#[derive(Debug, Serialize)]
pub struct GrantResponse {
    /// Id to pass to `POST /v1/avatar`.
    pub upload_id: UploadId,
    /// Always `PUT`.
    pub method: &'static str,
    /// The signed URL.
    pub url: String,
    /// Headers the PUT must send.
    pub headers: Value,
    /// RFC 3339 expiry.
    pub expires_at: String,
}

/// The answer to `POST /v1/avatar`.
#[derive(Debug, Serialize)]
pub struct JobAccepted {
    /// Job id.
    pub job_id: JobId,
    /// Always `queued`.
    pub status: &'static str,
    /// `GET` for the job's state.
    pub status_url: String,
    /// WebSocket/SSE stream of the user's events.
    pub events_url: String,
}

/// The upload service.
#[derive(Clone)]
pub struct Uploads {
    repo: Arc<dyn Repo>,
    store: Arc<dyn BlobStore>,
    signer: Arc<UploadSigner>,
    settings: UploadSettings,
    limits: imaging::Limits,
    clock: Arc<dyn Clock>,
    notifier: Notifier,
    urls: PublicUrls,
    /// Wakes the job workers when a job is queued.
    wake_jobs: Arc<tokio::sync::Notify>,
    /// One permit per upload body being read (`AVATAR_MAX_CONCURRENT_UPLOADS`).
    bodies: Arc<Semaphore>,
}

/// A signed `PUT` whose URL and headers were checked, holding one of the
/// `AVATAR_MAX_CONCURRENT_UPLOADS` permits while its body is read.
#[derive(Debug)]
pub struct AuthorisedPut {
    id: UploadId,
    grant: UploadGrant,
    _permit: OwnedSemaphorePermit,
}

impl AuthorisedPut {
    /// The most bytes the body may have (the grant's declared length).
    pub fn max_bytes(&self) -> u64 {
        self.grant.max_bytes
    }
}

impl Uploads {
    /// Assemble.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        repo: Arc<dyn Repo>,
        store: Arc<dyn BlobStore>,
        signing_secret: &[u8],
        settings: UploadSettings,
        limits: imaging::Limits,
        clock: Arc<dyn Clock>,
        notifier: Notifier,
        urls: PublicUrls,
        wake_jobs: Arc<tokio::sync::Notify>,
    ) -> Self {
        let settings_permits = settings.max_concurrent_uploads.max(1);
        Self {
            repo,
            store,
            signer: Arc::new(UploadSigner::new(signing_secret)),
            settings,
            limits,
            clock,
            notifier,
            urls,
            wake_jobs,
            bodies: Arc::new(Semaphore::new(settings_permits)),
        }
    }

    /// Settings in force.
    pub fn settings(&self) -> &UploadSettings {
        &self.settings
    }

    /// Issue a signed upload URL.
    pub async fn grant(
        &self,
        user: &User,
        content_type: &str,
        content_length: u64,
    ) -> Result<GrantResponse, UploadError> {
        let content_type = normalise_type(content_type)?;
        if content_length == 0 || content_length > self.settings.max_bytes {
            return Err(too_large(self.settings.max_bytes));
        }
        let now = self.clock.now_millis();
        // The signed URL counts whole seconds; the record keeps the same instant in Millis.
        let expires_at = from_unix_seconds(unix_seconds(
            now.saturating_add(millis(self.settings.url_ttl)),
        ));
        let grant = UploadGrant::new(
            user.key.as_str(),
            content_type,
            content_length,
            unix_seconds(expires_at),
        );
        let upload_id = UploadId::parse(&grant.upload_id).ok_or(UploadError::InvalidSignature)?;
        let record = UploadRecord {
            upload_id: upload_id.clone(),
            user_key: user.key.clone(),
            content_type: content_type.to_owned(),
            max_bytes: i64::try_from(content_length).unwrap_or(i64::MAX),
            expires_at,
            received_bytes: None,
            created_at: now,
        };
        self.create_within_quota(&record, now).await?;
        Ok(GrantResponse {
            url: self.urls.upload(&upload_id, &self.signer.query(&grant)),
            upload_id,
            method: "PUT",
            headers: json!({"Content-Type": content_type}),
            expires_at: crate::clock::rfc3339(expires_at),
        })
    }

    /// Upload bodies being read right now (at most `AVATAR_MAX_CONCURRENT_UPLOADS`).
    pub fn bodies_in_flight(&self) -> usize {
        self.settings
            .max_concurrent_uploads
            .max(1)
            .saturating_sub(self.bodies.available_permits())
    }

    /// Take one of the `AVATAR_MAX_CONCURRENT_UPLOADS` permits for reading an upload body, or
    /// [`UploadError::Busy`] at once when all are taken (hold it until the body is read).
    pub fn body_permit(&self) -> Result<OwnedSemaphorePermit, UploadError> {
        self.bodies
            .clone()
            .try_acquire_owned()
            .map_err(|_| UploadError::Busy)
    }

    /// Check everything a signed `PUT` carries before its body is read: the id, signature and
    /// expiry of the URL, the declared `Content-Type` and `Content-Length` (when sent) against
    /// the grant, that the grant is unused and the user has room for another pending original;
    /// then take a body permit ([`Self::body_permit`]).
    pub async fn authorise_put(
        &self,
        upload_id: &str,
        query: &str,
        content_type: Option<&str>,
        content_length: Option<u64>,
    ) -> Result<AuthorisedPut, UploadError> {
        let now = self.clock.now_millis();
        let id = UploadId::parse(upload_id).ok_or(UploadError::InvalidSignature)?;
        let grant = self
            .signer
            .verify(upload_id, query, unix_seconds(now))
            .map_err(|e| match e {
                SignatureError::Expired => UploadError::UrlExpired,
                SignatureError::Malformed | SignatureError::BadSignature => {
                    UploadError::InvalidSignature
                }
            })?;
        if content_type
            .map(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .as_deref()
            != Some(grant.content_type.as_str())
        {
            return Err(UploadError::ContentTypeMismatch(format!(
                "send Content-Type: {}",
                grant.content_type
            )));
        }
        if content_length.is_some_and(|n| n > grant.max_bytes) {
            return Err(too_large(grant.max_bytes));
        }
        let record = self.repo.upload(&id).await?.ok_or(UploadError::NotFound)?;
        if record.received_bytes.is_some() {
            return Err(UploadError::AlreadyUploaded);
        }
        let quota = self.quota(now);
        let usage = self.repo.upload_usage(&record.user_key, &quota).await?;
        let expected = content_length.unwrap_or(1);
        if !usage.original_fits(&quota, i64::try_from(expected).unwrap_or(i64::MAX)) {
            return Err(self.originals_refusal(&usage, now));
        }
        Ok(AuthorisedPut {
            id,
            grant,
            _permit: self.body_permit()?,
        })
    }

    /// Accept the body of a signed `PUT` that [`Self::authorise_put`] let through (read with
    /// the cap [`AuthorisedPut::max_bytes`]).
    pub async fn receive(&self, put: AuthorisedPut, body: Bytes) -> Result<(), UploadError> {
        let AuthorisedPut { id, grant, .. } = put;
        if body.len() as u64 > grant.max_bytes {
            return Err(too_large(grant.max_bytes));
        }
        let kind = self.check_image(&body)?;
        if kind.content_type() != grant.content_type {
            return Err(UploadError::ContentTypeMismatch(format!(
                "the bytes are {}, not {}",
                kind.content_type(),
                grant.content_type
            )));
        }
        let now = self.clock.now_millis();
        let len = i64::try_from(body.len()).unwrap_or(i64::MAX);
        let quota = self.quota(now);
        match self
            .repo
            .mark_upload_received_within(&id, len, &quota)
            .await?
        {
            Received::Marked => {}
            Received::AlreadyReceived => return Err(UploadError::AlreadyUploaded),
            Received::OverQuota => {
                let key = UserKey::parse(&grant.user_key).ok_or(UploadError::InvalidSignature)?;
                let usage = self.repo.upload_usage(&key, &quota).await?;
                return Err(self.originals_refusal(&usage, now));
            }
        }
        self.store
            .put(&paths::original(&id), body)
            .await
            .map_err(UploadError::Store)?;
        Ok(())
    }

    /// The quota in force at `now`.
    fn quota(&self, now: crate::clock::Millis) -> UploadQuota {
        let s = &self.settings;
        UploadQuota {
            grants_since: now.saturating_sub(millis(s.grant_window)),
            max_grants: s.grants_per_user,
            originals_since: now.saturating_sub(millis(s.temp_retention)),
            max_originals: s.max_pending_originals,
            max_original_bytes: i64::try_from(s.max_pending_original_bytes).unwrap_or(i64::MAX),
        }
    }

    /// Record a grant (or a single-request upload) if it fits the user's quota, or the refusal.
    async fn create_within_quota(
        &self,
        record: &UploadRecord,
        now: crate::clock::Millis,
    ) -> Result<(), UploadError> {
        let quota = self.quota(now);
        if self.repo.create_upload_within(record, &quota).await? {
            return Ok(());
        }
        let usage = self.repo.upload_usage(&record.user_key, &quota).await?;
        if !usage.grant_fits(&quota) {
            let frees_at = usage
                .oldest_grant
                .unwrap_or(now)
                .saturating_add(millis(self.settings.grant_window));
            return Err(UploadError::GrantQuota {
                retry_after: wait_until(now, frees_at),
            });
        }
        Err(self.originals_refusal(&usage, now))
    }

    fn originals_refusal(&self, usage: &UploadUsage, now: crate::clock::Millis) -> UploadError {
        let frees_at = usage
            .oldest_original
            .unwrap_or(now)
            .saturating_add(millis(self.settings.temp_retention));
        UploadError::OriginalsQuota {
            retry_after: wait_until(now, frees_at),
        }
    }

    /// Start processing an uploaded original.
    pub async fn start(
        &self,
        user: &User,
        upload_id: &str,
        crop: Option<Crop>,
    ) -> Result<JobAccepted, UploadError> {
        let upload_id = UploadId::parse(upload_id).ok_or(UploadError::NotFound)?;
        let upload = match self.repo.upload(&upload_id).await? {
            Some(u) if u.user_key == user.key => u,
            _ => return Err(UploadError::NotFound),
        };
        if upload.received_bytes.is_none() {
            return Err(UploadError::Incomplete);
        }
        if let Some(existing) = self.repo.job_for_upload(&upload_id).await? {
            return Err(UploadError::JobExists(existing));
        }
        let original = self
            .store
            .get(&paths::original(&upload_id))
            .await
            .map_err(|e| match e {
                StoreError::NotFound => UploadError::Expired,
                other => UploadError::Store(other),
            })?;
        self.validate_crop(&original, crop.as_ref())?;
        self.enqueue(&user.key, upload_id, crop).await
    }

    /// Single-request upload: store the bytes and start processing.
    pub async fn direct(
        &self,
        user: &User,
        declared_type: Option<&str>,
        body: Bytes,
        crop: Option<Crop>,
    ) -> Result<JobAccepted, UploadError> {
        if body.len() as u64 > self.settings.max_bytes {
            return Err(too_large(self.settings.max_bytes));
        }
        if let Some(t) = declared_type.filter(|t| !says_nothing(t)) {
            normalise_type(t)?;
        }
        let kind = self.check_image(&body)?;
        self.validate_crop(&body, crop.as_ref())?;
        let now = self.clock.now_millis();
        let upload_id = UploadId::generate();
        let record = UploadRecord {
            upload_id: upload_id.clone(),
            user_key: user.key.clone(),
            content_type: kind.content_type().to_owned(),
            max_bytes: i64::try_from(self.settings.max_bytes).unwrap_or(i64::MAX),
            expires_at: now,
            received_bytes: Some(i64::try_from(body.len()).unwrap_or(i64::MAX)),
            created_at: now,
        };
        self.create_within_quota(&record, now).await?;
        self.store
            .put(&paths::original(&upload_id), body)
            .await
            .map_err(UploadError::Store)?;
        self.enqueue(&user.key, upload_id, crop).await
    }

    async fn enqueue(
        &self,
        key: &UserKey,
        upload_id: UploadId,
        crop: Option<Crop>,
    ) -> Result<JobAccepted, UploadError> {
        let now = self.clock.now_millis();
        let job_id = JobId::generate();
        let enqueued = self
            .repo
            .enqueue_job(&JobRecord {
                job_id: job_id.clone(),
                user_key: key.clone(),
                upload_id,
                crop,
                status: JobStatus::Queued,
                attempts: 0,
                run_at: now,
                locked_until: None,
                locked_by: None,
                result: None,
                error: None,
                created_at: now,
                updated_at: now,
            })
            .await?;
        if let Enqueued::Exists(existing) = enqueued {
            return Err(UploadError::JobExists(existing));
        }
        self.wake_jobs.notify_one();
        self.notifier
            .publish(
                key,
                EventKind::ProfileImageUpdated,
                json!({"job_id": job_id, "status": "queued"}),
            )
            .await;
        Ok(JobAccepted {
            status_url: self.urls.job(&job_id),
            events_url: self.urls.events(),
            job_id,
            status: "queued",
        })
    }

    /// A job of `user` (another user's job is not found, like a missing one).
    pub async fn job(&self, user: &User, job_id: &str) -> Result<JobRecord, UploadError> {
        let job_id = JobId::parse(job_id).ok_or(UploadError::JobNotFound)?;
        self.repo
            .job(&job_id)
            .await?
            .filter(|j| j.user_key == user.key)
            .ok_or(UploadError::JobNotFound)
    }

    /// Put a failed job of `user` back in the queue, while its original is still in temporary
    /// storage (`AVATAR_TEMP_RETENTION`): [`UploadError::Expired`] after that,
    /// [`UploadError::NotRetryable`] for a job that is not failed.
    pub async fn retry(&self, user: &User, job_id: &str) -> Result<JobAccepted, UploadError> {
        let job = self.job(user, job_id).await?;
        if job.status != JobStatus::Failed {
            return Err(UploadError::NotRetryable(job.status.as_str()));
        }
        let now = self.clock.now_millis();
        let upload = self
            .repo
            .upload(&job.upload_id)
            .await?
            .ok_or(UploadError::Expired)?;
        if upload
            .created_at
            .saturating_add(millis(self.settings.temp_retention))
            <= now
        {
            return Err(UploadError::Expired);
        }
        match self.store.get(&paths::original(&job.upload_id)).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => return Err(UploadError::Expired),
            Err(other) => return Err(UploadError::Store(other)),
        }
        if !self.repo.requeue_failed_job(&job.job_id, now).await? {
            return Err(UploadError::NotRetryable("no longer failed"));
        }
        self.wake_jobs.notify_one();
        self.notifier
            .publish(
                &user.key,
                EventKind::ProfileImageUpdated,
                json!({"job_id": job.job_id, "status": "queued"}),
            )
            .await;
        Ok(JobAccepted {
            status_url: self.urls.job(&job.job_id),
            events_url: self.urls.events(),
            job_id: job.job_id,
            status: "queued",
        })
    }

    /// Remove the user's uploaded avatar and its variants; their URL falls back to the
    /// upstream avatar, then the default. Jobs of the user still queued or running are
    /// superseded first (failed with `superseded`, their originals deleted), so none of them
    /// can make a picture current again; [`UploadError::NoAvatar`] when there was neither an
    /// avatar nor a pending job.
    pub async fn remove_avatar(&self, user: &User) -> Result<(), UploadError> {
        let now = self.clock.now_millis();
        let superseded = self
            .repo
            .supersede_jobs(
                &user.key,
                now,
                &JobError {
                    code: "superseded".into(),
                    message: "the avatar was deleted before this job finished".into(),
                    user_message: crate::fault::TRY_AGAIN.into(),
                },
            )
            .await?;
        for job in &superseded {
            self.discard_original(&job.upload_id).await;
            self.notifier
                .publish(
                    &user.key,
                    EventKind::ProfileImageFailed,
                    json!({"job_id": job.job_id, "code": "superseded",
                           "user_message": crate::fault::TRY_AGAIN}),
                )
                .await;
        }
        let Some(record) = self.repo.delete_avatar(&user.key).await? else {
            return if superseded.is_empty() {
                Err(UploadError::NoAvatar)
            } else {
                Ok(())
            };
        };
        let folder = paths::avatar_version(&user.key, &record.version);
        if let Err(e) = self.store.delete_prefix(&folder).await {
            tracing::warn!(error = %e, "could not delete removed variants");
        }
        Ok(())
    }

    /// Delete an original and stop counting it as pending (best effort: the sweep deletes
    /// what this could not).
    async fn discard_original(&self, upload_id: &UploadId) {
        if let Err(e) = self.store.delete(&paths::original(upload_id)).await {
            tracing::warn!(error = %e, "could not delete an original (the sweep will)");
            return;
        }
        if let Err(e) = self.repo.settle_original(upload_id).await {
            tracing::warn!(error = %e, "could not record a deleted original");
        }
    }

    /// Sniff and probe: a supported image within the limits, or a clear 4xx.
    fn check_image(&self, body: &[u8]) -> Result<ImageKind, UploadError> {
        let kind = imaging::sniff(body).ok_or(UploadError::UnsupportedImage)?;
        if kind == ImageKind::Gif {
            return Err(UploadError::UnsupportedImage);
        }
        imaging::probe(body, &self.limits).map_err(UploadError::from_imaging)?;
        Ok(kind)
    }

    /// The crop lies inside the image, and rendering it at the variant sizes fits the decode
    /// budget (`AVATAR_MAX_DECODE_BYTES`): refused now with a 4xx rather than in the job.
    fn validate_crop(&self, original: &[u8], crop: Option<&Crop>) -> Result<(), UploadError> {
        if let Some(crop) = crop {
            let probe =
                imaging::probe(original, &self.limits).map_err(UploadError::from_imaging)?;
            imaging::validate_crop(crop, &probe)
                .map_err(|e| UploadError::InvalidCrop(e.to_string()))?;
        }
        let needed = imaging::decode_estimate(
            original,
            &self.limits,
            crop.copied(),
            &self.settings.variant_sizes,
        )
        .map_err(UploadError::from_imaging)?;
        if needed > self.limits.max_decode_bytes {
            return Err(UploadError::TooComplex(format!(
                "decoding this image needs about {} MiB; at most {} MiB is allowed",
                needed.div_ceil(1 << 20),
                self.limits.max_decode_bytes >> 20
            )));
        }
        Ok(())
    }
}

/// Crop from JSON (`{"x","y","width","height"}`), strictly: numbers only.
pub fn parse_crop(value: &Value) -> Result<Crop, UploadError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        x: u32,
        y: u32,
        width: u32,
        height: u32,
    }
    let raw: Raw = serde_json::from_value(value.clone()).map_err(|_| {
        UploadError::InvalidCrop(
            "crop needs whole, non-negative numbers x, y, width and height".into(),
        )
    })?;
    Ok(Crop {
        x: raw.x,
        y: raw.y,
        width: raw.width,
        height: raw.height,
    })
}

/// How long from `now` until `at`, in whole seconds, at least one (for `Retry-After`).
fn wait_until(now: crate::clock::Millis, at: crate::clock::Millis) -> Duration {
    let ms = u64::try_from(at.saturating_sub(now)).unwrap_or(0);
    Duration::from_secs(ms.div_ceil(1000).max(1))
}

/// A declared type that says nothing about the bytes: empty, or `application/octet-stream`
/// (what curl and many HTTP libraries label a file part without a known extension). The
/// bytes are sniffed either way; only a specific non-image claim is refused.
pub fn says_nothing(declared: &str) -> bool {
    let essence = declared.split(';').next().unwrap_or("").trim();
    essence.is_empty() || essence.eq_ignore_ascii_case("application/octet-stream")
}

/// The accepted media type a declared one names (aliases and parameters resolved by the one
/// mapping, [`ImageKind::from_content_type`]).
fn normalise_type(raw: &str) -> Result<&'static str, UploadError> {
    ImageKind::from_content_type(raw)
        .map(ImageKind::content_type)
        .filter(|t| ACCEPTED_TYPES.contains(t))
        .ok_or(UploadError::UnsupportedType)
}

fn too_large(max: u64) -> UploadError {
    UploadError::TooLarge(max)
}
