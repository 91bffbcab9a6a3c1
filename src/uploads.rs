//! User uploads: signed upload URLs, direct uploads, and the start of processing.
//!
//! ```text
//! POST /v1/uploads ─▶ grant (repo) + signed PUT URL
//! PUT  signed URL  ─▶ signature, expiry, type (magic bytes), size, once ─▶ store (original)
//! POST /v1/avatar  ─▶ crop checked against the probed image (400 at once) ─▶ job (repo) ─▶ 202
//!                     + ProfileImageUpdated; the jobs worker does the rest
//! ```

pub mod signing;

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::User;
use crate::clock::{Clock, from_unix_seconds, millis, unix_seconds};
use crate::config::UploadSettings;
use crate::events::{EventKind, Notifier};
use crate::ids::{JobId, UploadId};
use crate::imaging::{self, Crop, ImageKind};
use crate::keys::UserKey;
use crate::repo::{JobRecord, JobStatus, Repo, RepoError, UploadRecord};
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
        self.repo
            .create_upload(&UploadRecord {
                upload_id: upload_id.clone(),
                user_key: user.key.clone(),
                content_type: content_type.to_owned(),
                max_bytes: i64::try_from(content_length).unwrap_or(i64::MAX),
                expires_at,
                received_bytes: None,
                created_at: now,
            })
            .await?;
        Ok(GrantResponse {
            url: self.urls.upload(&upload_id, &self.signer.query(&grant)),
            upload_id,
            method: "PUT",
            headers: json!({"Content-Type": content_type}),
            expires_at: crate::clock::rfc3339(expires_at),
        })
    }

    /// Accept the body of a signed PUT.
    pub async fn receive(
        &self,
        upload_id: &str,
        query: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(), UploadError> {
        let now_secs = unix_seconds(self.clock.now_millis());
        let id = UploadId::parse(upload_id).ok_or(UploadError::InvalidSignature)?;
        let grant = self
            .signer
            .verify(upload_id, query, now_secs)
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
        let len = i64::try_from(body.len()).unwrap_or(i64::MAX);
        if !self.repo.mark_upload_received(&id, len).await? {
            return Err(UploadError::AlreadyUploaded);
        }
        self.store
            .put(&paths::original(&id), body)
            .await
            .map_err(UploadError::Store)?;
        Ok(())
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
        self.repo
            .create_upload(&UploadRecord {
                upload_id: upload_id.clone(),
                user_key: user.key.clone(),
                content_type: kind.content_type().to_owned(),
                max_bytes: i64::try_from(self.settings.max_bytes).unwrap_or(i64::MAX),
                expires_at: now,
                received_bytes: Some(i64::try_from(body.len()).unwrap_or(i64::MAX)),
                created_at: now,
            })
            .await?;
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
        self.repo
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

    /// Remove the user's uploaded avatar and its variants; their URL falls back to the
    /// upstream avatar, then the default.
    pub async fn remove_avatar(&self, user: &User) -> Result<(), UploadError> {
        let record = self
            .repo
            .delete_avatar(&user.key)
            .await?
            .ok_or(UploadError::NoAvatar)?;
        let folder = paths::avatar_version(&user.key, &record.version);
        if let Err(e) = self.store.delete_prefix(&folder).await {
            tracing::warn!(error = %e, "could not delete removed variants");
        }
        Ok(())
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

/// A declared type that says nothing about the bytes: empty, or `application/octet-stream`
/// (what curl and many HTTP libraries label a file part without a known extension). The
/// bytes are sniffed either way; only a specific non-image claim is refused.
fn says_nothing(declared: &str) -> bool {
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
