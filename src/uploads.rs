//! User uploads: signed upload URLs, direct uploads, and the start of processing.
//!
//! ```text
//! POST /v1/uploads ─▶ grant (repo) + signed PUT URL
//! PUT  signed URL  ─▶ signature, expiry, type (magic bytes), size, once ─▶ store tmp/{upload_id}
//! POST /v1/avatar  ─▶ crop checked against the probed image (400 at once) ─▶ job (repo) ─▶ 202
//!                     + ProfileImageUpdated; the jobs worker does the rest
//! ```

pub mod signing;

use std::sync::Arc;

use axum::http::StatusCode;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::User;
use crate::clock::{Clock, millis};
use crate::config::UploadSettings;
use crate::error::ApiError;
use crate::events::{EventKind, Notifier};
use crate::imaging::{self, Crop, ImageKind};
use crate::keys::UserKey;
use crate::repo::{JobRecord, JobStatus, Repo, UploadRecord};
use crate::store::BlobStore;
use signing::{SignatureError, UploadGrant, UploadSigner};

/// Accepted upload types.
pub const ACCEPTED_TYPES: [&str; 3] = ["image/jpeg", "image/png", "image/webp"];

/// Where an original waits for processing.
pub fn temp_path(upload_id: &str) -> String {
    format!("tmp/{upload_id}")
}

/// The answer to `POST /v1/uploads`.
#[derive(Debug, Serialize)]
pub struct GrantResponse {
    /// Id to pass to `POST /v1/avatar`.
    pub upload_id: String,
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
    pub job_id: String,
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
    base_url: String,
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
        base_url: String,
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
            base_url,
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
    ) -> Result<GrantResponse, ApiError> {
        let content_type = normalise_type(content_type)?;
        if content_length == 0 || content_length > self.settings.max_bytes {
            return Err(too_large(self.settings.max_bytes));
        }
        let now = self.clock.now_millis();
        let expires_at = now.saturating_add(millis(self.settings.url_ttl)) / 1000;
        let grant = UploadGrant::new(user.key.as_str(), content_type, content_length, expires_at);
        self.repo
            .create_upload(&UploadRecord {
                upload_id: grant.upload_id.clone(),
                user_key: user.key.clone(),
                content_type: content_type.to_owned(),
                max_bytes: i64::try_from(content_length).unwrap_or(i64::MAX),
                expires_at: expires_at.saturating_mul(1000),
                received_bytes: None,
                created_at: now,
            })
            .await?;
        Ok(GrantResponse {
            url: format!(
                "{}/v1/uploads/{}?{}",
                self.base_url,
                grant.upload_id,
                self.signer.query(&grant)
            ),
            upload_id: grant.upload_id,
            method: "PUT",
            headers: json!({"Content-Type": content_type}),
            expires_at: crate::clock::rfc3339(expires_at.saturating_mul(1000)),
        })
    }

    /// Accept the body of a signed PUT.
    pub async fn receive(
        &self,
        upload_id: &str,
        query: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(), ApiError> {
        let now_secs = self.clock.now_millis() / 1000;
        let grant = self
            .signer
            .verify(upload_id, query, now_secs)
            .map_err(|e| match e {
                SignatureError::Expired => ApiError::client(
                    StatusCode::FORBIDDEN,
                    "upload-url-expired",
                    "this upload URL has expired; request a new one",
                ),
                SignatureError::Malformed | SignatureError::BadSignature => ApiError::client(
                    StatusCode::FORBIDDEN,
                    "invalid-signature",
                    "the upload URL is not valid",
                ),
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
            return Err(ApiError::client(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-type-mismatch",
                format!("send Content-Type: {}", grant.content_type),
            ));
        }
        if body.len() as u64 > grant.max_bytes {
            return Err(too_large(grant.max_bytes));
        }
        let kind = self.check_image(&body)?;
        if kind_type(kind) != grant.content_type {
            return Err(ApiError::client(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-type-mismatch",
                format!(
                    "the bytes are {}, not {}",
                    kind_type(kind),
                    grant.content_type
                ),
            ));
        }
        let len = i64::try_from(body.len()).unwrap_or(i64::MAX);
        if !self.repo.mark_upload_received(upload_id, len).await? {
            return Err(ApiError::client(
                StatusCode::CONFLICT,
                "already-uploaded",
                "this upload URL was already used",
            ));
        }
        self.store
            .put(&temp_path(upload_id), body)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Start processing an uploaded original.
    pub async fn start(
        &self,
        user: &User,
        upload_id: &str,
        crop: Option<Crop>,
    ) -> Result<JobAccepted, ApiError> {
        let upload = match self.repo.upload(upload_id).await? {
            Some(u) if u.user_key == user.key => u,
            _ => return Err(ApiError::not_found("upload")),
        };
        if upload.received_bytes.is_none() {
            return Err(ApiError::client(
                StatusCode::CONFLICT,
                "upload-incomplete",
                "the image has not been uploaded yet",
            ));
        }
        let original = self
            .store
            .get(&temp_path(upload_id))
            .await
            .map_err(|e| match e {
                crate::store::StoreError::NotFound => ApiError::client(
                    StatusCode::GONE,
                    "upload-expired",
                    "the uploaded image is no longer available; upload it again",
                ),
                other => store_error(other),
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
    ) -> Result<JobAccepted, ApiError> {
        if body.len() as u64 > self.settings.max_bytes {
            return Err(too_large(self.settings.max_bytes));
        }
        if let Some(t) = declared_type.filter(|t| !says_nothing(t)) {
            normalise_type(t)?;
        }
        let kind = self.check_image(&body)?;
        self.validate_crop(&body, crop.as_ref())?;
        let now = self.clock.now_millis();
        let upload_id = signing::new_upload_id();
        self.repo
            .create_upload(&UploadRecord {
                upload_id: upload_id.clone(),
                user_key: user.key.clone(),
                content_type: kind_type(kind).to_owned(),
                max_bytes: i64::try_from(self.settings.max_bytes).unwrap_or(i64::MAX),
                expires_at: now,
                received_bytes: Some(i64::try_from(body.len()).unwrap_or(i64::MAX)),
                created_at: now,
            })
            .await?;
        self.store
            .put(&temp_path(&upload_id), body)
            .await
            .map_err(store_error)?;
        self.enqueue(&user.key, &upload_id, crop).await
    }

    async fn enqueue(
        &self,
        key: &UserKey,
        upload_id: &str,
        crop: Option<Crop>,
    ) -> Result<JobAccepted, ApiError> {
        let now = self.clock.now_millis();
        let job_id = signing::new_upload_id();
        self.repo
            .enqueue_job(&JobRecord {
                job_id: job_id.clone(),
                user_key: key.clone(),
                upload_id: upload_id.to_owned(),
                crop: crop.map(|c| {
                    json!({"x": c.x, "y": c.y, "width": c.width, "height": c.height}).to_string()
                }),
                status: JobStatus::Queued,
                attempts: 0,
                run_at: now,
                locked_until: None,
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
            status_url: format!("{}/v1/jobs/{job_id}", self.base_url),
            events_url: format!("{}/v1/events", self.base_url.replacen("http", "ws", 1)),
            job_id,
            status: "queued",
        })
    }

    /// Sniff and probe: a supported image within the limits, or a clear 4xx.
    fn check_image(&self, body: &[u8]) -> Result<ImageKind, ApiError> {
        let kind = imaging::sniff(body).ok_or_else(|| {
            ApiError::client(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-image",
                "upload a JPEG, PNG or WebP image",
            )
        })?;
        if kind == ImageKind::Gif {
            return Err(ApiError::client(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-image",
                "upload a JPEG, PNG or WebP image",
            ));
        }
        imaging::probe(body, &self.limits).map_err(|e| {
            let code = match e {
                imaging::ImagingError::TooComplex(_) => "image-too-complex",
                _ => "invalid-image",
            };
            ApiError::client(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
        })?;
        Ok(kind)
    }

    /// The crop lies inside the image, and rendering it at the variant sizes fits the decode
    /// budget (`AVATAR_MAX_DECODE_BYTES`): refused now with a 4xx rather than in the job.
    fn validate_crop(&self, original: &[u8], crop: Option<&Crop>) -> Result<(), ApiError> {
        if let Some(crop) = crop {
            let probe = imaging::probe(original, &self.limits).map_err(|e| {
                ApiError::client(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-image",
                    e.to_string(),
                )
            })?;
            imaging::validate_crop(crop, &probe)
                .map_err(|e| ApiError::bad_request("invalid-crop", e.to_string()))?;
        }
        let needed = imaging::decode_estimate(
            original,
            &self.limits,
            crop.copied(),
            &self.settings.variant_sizes,
        )
        .map_err(|e| {
            ApiError::client(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-image",
                e.to_string(),
            )
        })?;
        if needed > self.limits.max_decode_bytes {
            return Err(ApiError::client(
                StatusCode::UNPROCESSABLE_ENTITY,
                "image-too-complex",
                format!(
                    "decoding this image needs about {} MiB; at most {} MiB is allowed",
                    needed.div_ceil(1 << 20),
                    self.limits.max_decode_bytes >> 20
                ),
            ));
        }
        Ok(())
    }
}

/// Crop from JSON (`{"x","y","width","height"}`), strictly: numbers only.
pub fn parse_crop(value: &Value) -> Result<Crop, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        x: u32,
        y: u32,
        width: u32,
        height: u32,
    }
    let raw: Raw = serde_json::from_value(value.clone()).map_err(|_| {
        ApiError::bad_request(
            "invalid-crop",
            "crop needs whole, non-negative numbers x, y, width and height",
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

fn normalise_type(raw: &str) -> Result<&'static str, ApiError> {
    let t = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let t = if t == "image/jpg" {
        "image/jpeg".to_owned()
    } else {
        t
    };
    ACCEPTED_TYPES
        .iter()
        .copied()
        .find(|a| *a == t)
        .ok_or_else(|| {
            ApiError::client(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-type",
                "accepted types: image/jpeg, image/png, image/webp",
            )
        })
}

fn kind_type(kind: ImageKind) -> &'static str {
    match kind {
        ImageKind::Jpeg => "image/jpeg",
        ImageKind::Png => "image/png",
        ImageKind::Webp => "image/webp",
        ImageKind::Gif => "image/gif",
    }
}

fn too_large(max: u64) -> ApiError {
    ApiError::client(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        format!("images may have at most {max} bytes"),
    )
}

fn store_error(e: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "blob store failed");
    ApiError::unavailable("store-unavailable", "the image store is unavailable")
}
