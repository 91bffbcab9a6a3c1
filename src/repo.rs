//! Metadata: the key → upstream registry (and, with uploads, upload records and jobs).
//!
//! One small trait, [`Repo`], implemented by SQLite (the embedded default, a file in the cache
//! dir). Every implementation runs the same contract tests ([`contract`]).

pub mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::Millis;
pub use crate::ids::{JobId, UploadId};
use crate::imaging::{Crop, OutputFormat};
use crate::keys::UserKey;

/// Failures of the metadata store. Never shown to clients verbatim.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The database refused or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Schema migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A row that does not decode into its type (changed behind our back): an error, never a
    /// silent `None`.
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What did not decode.
        detail: String,
    },
}

/// One registered identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Public key (HMAC of the user id).
    pub key: UserKey,
    /// The user id as the backend knows it (never shown publicly).
    pub user_id: String,
    /// Upstream avatar URL, when the record had one we can proxy.
    pub upstream_url: Option<String>,
    /// Display name, for initials.
    pub display_name: Option<String>,
    /// Last registration.
    pub updated_at: Millis,
}

/// A signed upload grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    /// Random id.
    pub upload_id: UploadId,
    /// Owner.
    pub user_key: UserKey,
    /// Declared type.
    pub content_type: String,
    /// Largest accepted body.
    pub max_bytes: i64,
    /// The signed URL's expiry.
    pub expires_at: Millis,
    /// Bytes received, once the PUT arrived (only one is accepted).
    pub received_bytes: Option<i64>,
    /// Creation time.
    pub created_at: Millis,
}

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting (or waiting for a retry).
    Queued,
    /// A worker holds its lease.
    Processing,
    /// Done; `result` is set.
    Completed,
    /// Given up; `error` is set.
    Failed,
}

impl JobStatus {
    /// Stored and reported name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(Self::Queued),
            "processing" => Some(Self::Processing),
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// Why a job failed (or, while it waits for a retry, the last transient fault), as the job
/// status reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// Machine-readable code (`invalid-image`, `processing-failed`, `transient`).
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// What to tell people (`Try again`, `Try again later`).
    pub user_message: String,
}

/// What a completed job produced, as the job status reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// The new version fingerprint.
    pub version: String,
    /// Every stored variant, with its public URL.
    pub variants: Vec<ReportedVariant>,
    /// The EXIF summary of the original (camera, orientation; never GPS).
    pub exif: serde_json::Value,
    /// Processing time, in milliseconds.
    pub processing_ms: u64,
}

/// One variant in a job's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedVariant {
    /// Square side, in pixels.
    pub size: u32,
    /// Width, in pixels.
    pub width: u32,
    /// Height, in pixels.
    pub height: u32,
    /// Format, by its extension (`jpg`, `png`, `webp`).
    #[serde(with = "format_extension")]
    pub format: OutputFormat,
    /// Encoded size, in bytes.
    pub bytes: usize,
    /// Public URL.
    pub url: String,
}

/// Formats are stored and reported by their file extension (`jpg`, `png`, `webp`).
mod format_extension {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use crate::imaging::OutputFormat;

    pub fn serialize<S: Serializer>(f: &OutputFormat, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(f.extension())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OutputFormat, D::Error> {
        let raw = String::deserialize(d)?;
        OutputFormat::from_extension(&raw)
            .ok_or_else(|| D::Error::custom(format!("unknown format {raw:?}")))
    }
}

/// A processing job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// Random id.
    pub job_id: JobId,
    /// Owner.
    pub user_key: UserKey,
    /// The upload it processes.
    pub upload_id: UploadId,
    /// Crop in source pixels, if any.
    pub crop: Option<Crop>,
    /// Where it stands.
    pub status: JobStatus,
    /// Attempts started.
    pub attempts: u32,
    /// Not before.
    pub run_at: Millis,
    /// Lease end while processing.
    pub locked_until: Option<Millis>,
    /// The runner holding the lease while processing.
    pub locked_by: Option<String>,
    /// What it produced, when completed.
    pub result: Option<JobResult>,
    /// Why it failed (or the last transient fault while it waits for a retry).
    pub error: Option<JobError>,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// One stored variant, as recorded in the avatar record and reported by the job.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct StoredVariant {
    /// Square side.
    pub size: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Format, stored by its extension (`jpg`, `png`, `webp`).
    #[serde(with = "format_extension")]
    pub format: OutputFormat,
    /// Encoded size.
    pub bytes: usize,
    /// Store path.
    pub path: String,
}

/// A user's current upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvatarRecord {
    /// Owner.
    pub user_key: UserKey,
    /// Version fingerprint (also in the store paths).
    pub version: String,
    /// Its stored variants.
    pub variants: Vec<StoredVariant>,
    /// When it became current.
    pub updated_at: Millis,
}

/// A webhook message waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// `webhook-id`: stable across retries.
    pub message_id: String,
    /// Target URL.
    pub endpoint: String,
    /// JSON body.
    pub payload: String,
    /// Attempts made.
    pub attempts: u32,
    /// Not before.
    pub next_attempt: Millis,
}

/// Per-user upload limits at one instant (`AVATAR_UPLOAD_GRANTS_PER_USER` per
/// `AVATAR_UPLOAD_GRANT_WINDOW`, `AVATAR_MAX_PENDING_ORIGINALS`, `AVATAR_MAX_PENDING_ORIGINAL_BYTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadQuota {
    /// Grants created after this (`now - window`) count against [`Self::max_grants`].
    pub grants_since: Millis,
    /// Grants (uploads started) per window.
    pub max_grants: u32,
    /// Originals received for grants created at or after this, and not yet settled (processed or
    /// deleted), are pending.
    pub originals_since: Millis,
    /// Pending originals at once.
    pub max_originals: u32,
    /// Bytes of pending originals at once.
    pub max_original_bytes: i64,
}

/// What one user holds against an [`UploadQuota`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadUsage {
    /// Grants in the window.
    pub grants: u32,
    /// Creation time of the oldest of them (the window frees a slot when it leaves).
    pub oldest_grant: Option<Millis>,
    /// Pending originals.
    pub originals: u32,
    /// Their bytes.
    pub original_bytes: i64,
    /// Creation time of the oldest pending original's grant.
    pub oldest_original: Option<Millis>,
}

impl UploadUsage {
    /// Whether one more grant fits.
    pub fn grant_fits(&self, quota: &UploadQuota) -> bool {
        self.grants < quota.max_grants
    }

    /// Whether one more original of `bytes` bytes fits.
    pub fn original_fits(&self, quota: &UploadQuota, bytes: i64) -> bool {
        self.originals < quota.max_originals
            && self.original_bytes.saturating_add(bytes) <= quota.max_original_bytes
    }
}

/// What [`Repo::mark_upload_received_within`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Recorded: the bytes may be stored.
    Marked,
    /// The grant was used already (or is unknown).
    AlreadyReceived,
    /// The user's pending originals would exceed the quota.
    OverQuota,
}

/// What [`Repo::enqueue_job`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// The job was inserted.
    New,
    /// The upload already has this job; nothing was inserted.
    Exists(JobId),
}

/// The metadata store.
#[async_trait]
pub trait Repo: Send + Sync + 'static {
    /// Reachable and usable (readiness).
    async fn health(&self) -> Result<(), RepoError>;
    /// Insert or update identities in one transaction. Returns the keys whose upstream URL or
    /// display name changed (their cached renditions are stale).
    async fn upsert_identities(&self, batch: &[Identity]) -> Result<Vec<UserKey>, RepoError>;
    /// Look up an identity by public key.
    async fn identity(&self, key: &UserKey) -> Result<Option<Identity>, RepoError>;

    /// Record a new upload grant.
    async fn create_upload(&self, upload: &UploadRecord) -> Result<(), RepoError>;
    /// Look up an upload grant.
    async fn upload(&self, upload_id: &UploadId) -> Result<Option<UploadRecord>, RepoError>;
    /// Mark the grant used; false when it already was (replays are refused).
    async fn mark_upload_received(
        &self,
        upload_id: &UploadId,
        bytes: i64,
    ) -> Result<bool, RepoError>;

    /// Record a new upload grant (or, with `received_bytes` set, a single-request upload) only if
    /// it fits `quota`, atomically (concurrent requests cannot overshoot it); `false` when it
    /// does not fit (nothing written).
    async fn create_upload_within(
        &self,
        upload: &UploadRecord,
        quota: &UploadQuota,
    ) -> Result<bool, RepoError>;
    /// Mark the grant used if the user's pending originals leave room for `bytes`, atomically.
    async fn mark_upload_received_within(
        &self,
        upload_id: &UploadId,
        bytes: i64,
        quota: &UploadQuota,
    ) -> Result<Received, RepoError>;
    /// What `key` holds against `quota`.
    async fn upload_usage(
        &self,
        key: &UserKey,
        quota: &UploadQuota,
    ) -> Result<UploadUsage, RepoError>;
    /// The upload's original was processed or deleted: it no longer counts as pending.
    async fn settle_original(&self, upload_id: &UploadId) -> Result<(), RepoError>;

    /// Insert a queued job unless its upload has one already (one job per upload, enforced by
    /// the store itself, so concurrent starts cannot both insert).
    async fn enqueue_job(&self, job: &JobRecord) -> Result<Enqueued, RepoError>;
    /// The job of an upload, if it has one.
    async fn job_for_upload(&self, upload_id: &UploadId) -> Result<Option<JobId>, RepoError>;
    /// Put a failed job back in the queue (attempts from zero, due at `now`, error cleared);
    /// `false` when the job is not failed (queued, processing or completed).
    async fn requeue_failed_job(&self, job_id: &JobId, now: Millis) -> Result<bool, RepoError>;
    /// Fail every queued or processing job of `key` with `error` (the avatar was deleted): a
    /// runner still holding one can no longer settle it. Returns the jobs as they were.
    async fn supersede_jobs(
        &self,
        key: &UserKey,
        now: Millis,
        error: &JobError,
    ) -> Result<Vec<JobRecord>, RepoError>;
    /// Settle a completed job `owner` still holds and make `avatar` current, in one
    /// transaction: `None` (and nothing written) when the job is no longer held by `owner`
    /// (superseded, reclaimed); otherwise the avatar it replaced.
    async fn complete_job(
        &self,
        job: &JobRecord,
        owner: &str,
        avatar: &AvatarRecord,
    ) -> Result<Option<Option<AvatarRecord>>, RepoError>;
    /// Look up a job.
    async fn job(&self, job_id: &JobId) -> Result<Option<JobRecord>, RepoError>;
    /// Take the oldest due job (queued and due, or processing with an expired lease), counting
    /// an attempt and holding it for `owner` until `lease_until`.
    async fn claim_job(
        &self,
        now: Millis,
        lease_until: Millis,
        owner: &str,
    ) -> Result<Option<JobRecord>, RepoError>;
    /// Extend the lease of a job `owner` still holds; `false` when it lost it.
    async fn renew_job(
        &self,
        job_id: &JobId,
        owner: &str,
        lease_until: Millis,
    ) -> Result<bool, RepoError>;
    /// Settle a job `owner` still holds: store its new state (status, run_at, result, error) and
    /// release the lease; `false` (and nothing written) when another runner holds it now.
    async fn update_job(&self, job: &JobRecord, owner: &str) -> Result<bool, RepoError>;

    /// Make an upload current; returns the one it replaced.
    async fn set_avatar(&self, avatar: &AvatarRecord) -> Result<Option<AvatarRecord>, RepoError>;
    /// The current upload of a key.
    async fn avatar(&self, key: &UserKey) -> Result<Option<AvatarRecord>, RepoError>;
    /// Remove the current upload; returns it.
    async fn delete_avatar(&self, key: &UserKey) -> Result<Option<AvatarRecord>, RepoError>;

    /// Delete records nobody will read again: upload grants whose URL expired before
    /// `grants_before` and that never received bytes, and finished (completed or failed) jobs
    /// last changed before `jobs_before`. Returns how many rows went.
    async fn purge_expired(
        &self,
        grants_before: Millis,
        jobs_before: Millis,
    ) -> Result<u64, RepoError>;

    /// Persist a webhook message (before any delivery attempt).
    async fn enqueue_webhook(&self, message: &OutboxMessage, now: Millis) -> Result<(), RepoError>;
    /// Messages due for delivery (not leased).
    async fn due_webhooks(&self, now: Millis, limit: i64) -> Result<Vec<OutboxMessage>, RepoError>;
    /// Take the oldest due message, counting an attempt and holding it for `owner` until
    /// `lease_until` (it is not due meanwhile).
    async fn claim_webhook(
        &self,
        now: Millis,
        lease_until: Millis,
        owner: &str,
    ) -> Result<Option<OutboxMessage>, RepoError>;
    /// Extend the lease of a message `owner` holds; `false` when it lost it.
    async fn renew_webhook(
        &self,
        message_id: &str,
        owner: &str,
        lease_until: Millis,
    ) -> Result<bool, RepoError>;
    /// Delivered (or given up): remove a message `owner` holds; `false` when it lost it.
    async fn remove_webhook(&self, message_id: &str, owner: &str) -> Result<bool, RepoError>;
    /// Release a message `owner` holds until its next attempt; `false` when it lost it.
    async fn retry_webhook(
        &self,
        message_id: &str,
        owner: &str,
        next_attempt: Millis,
    ) -> Result<bool, RepoError>;
    /// Disable an endpoint (it answered 410).
    async fn disable_endpoint(&self, endpoint: &str, now: Millis) -> Result<(), RepoError>;
    /// Whether an endpoint is disabled.
    async fn endpoint_disabled(&self, endpoint: &str) -> Result<bool, RepoError>;
}

/// The contract every [`Repo`] implementation must meet.
#[cfg(test)]
pub mod contract {
    use super::*;

    fn identity(key: &UserKey, url: Option<&str>, name: Option<&str>) -> Identity {
        Identity {
            key: key.clone(),
            user_id: format!("user-{key}"),
            upstream_url: url.map(str::to_owned),
            display_name: name.map(str::to_owned),
            updated_at: 1,
        }
    }

    /// Run every contract test against `repo`.
    pub async fn run(repo: &dyn Repo) {
        repo.health().await.expect("healthy");
        registers_and_updates_identities(repo).await;
        upserts_report_only_changed_keys(repo).await;
        upload_grants_are_used_once(repo).await;
        jobs_are_claimed_once_and_reclaimed_after_their_lease(repo).await;
        avatars_are_replaced_and_deleted(repo).await;
        an_upload_has_one_job_and_only_a_failed_one_is_requeued(repo).await;
        upload_quotas_hold_whatever_the_order(repo).await;
        a_superseded_job_cannot_complete(repo).await;
        expired_grants_and_finished_jobs_are_purged(repo).await;
        the_webhook_outbox_keeps_messages_until_removed(repo).await;
    }

    fn queued(user: &UserKey, upload_id: &UploadId) -> JobRecord {
        JobRecord {
            job_id: JobId::generate(),
            user_key: user.clone(),
            upload_id: upload_id.clone(),
            crop: None,
            status: JobStatus::Queued,
            attempts: 0,
            run_at: 0,
            locked_until: None,
            locked_by: None,
            result: None,
            error: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    async fn an_upload_has_one_job_and_only_a_failed_one_is_requeued(repo: &dyn Repo) {
        let upload = UploadId::generate();
        let first = queued(&key('7'), &upload);
        assert_eq!(
            repo.enqueue_job(&first).await.expect("enqueue"),
            Enqueued::New
        );
        assert_eq!(
            repo.enqueue_job(&queued(&key('7'), &upload))
                .await
                .expect("enqueue"),
            Enqueued::Exists(first.job_id.clone())
        );
        assert_eq!(
            repo.job_for_upload(&upload).await.expect("lookup"),
            Some(first.job_id.clone())
        );
        assert!(
            !repo
                .requeue_failed_job(&first.job_id, 5)
                .await
                .expect("requeue"),
            "a queued job is not failed"
        );
        let claimed = repo
            .claim_job(1_000_000, 1_000_100, "a")
            .await
            .expect("claim")
            .expect("due");
        assert_eq!(claimed.job_id, first.job_id, "the only due job");
        let mut failed = claimed.clone();
        failed.status = JobStatus::Failed;
        failed.error = Some(JobError {
            code: "processing-failed".into(),
            message: "x".into(),
            user_message: "y".into(),
        });
        assert!(repo.update_job(&failed, "a").await.expect("fail"));
        assert!(
            repo.requeue_failed_job(&first.job_id, 7)
                .await
                .expect("requeue")
        );
        let again = repo
            .job(&first.job_id)
            .await
            .expect("get")
            .expect("present");
        assert_eq!(
            (again.status, again.attempts, again.error),
            (JobStatus::Queued, 0, None)
        );
    }

    async fn upload_quotas_hold_whatever_the_order(repo: &dyn Repo) {
        let user = key('8');
        let quota = UploadQuota {
            grants_since: 99,
            max_grants: 3,
            originals_since: 0,
            max_originals: 2,
            max_original_bytes: 100,
        };
        let grant = |created_at, received_bytes| UploadRecord {
            upload_id: UploadId::generate(),
            user_key: user.clone(),
            content_type: "image/png".into(),
            max_bytes: 100,
            expires_at: 10_000,
            received_bytes,
            created_at,
        };
        let old = grant(50, None);
        assert!(repo.create_upload_within(&old, &quota).await.expect("old"));
        let (a, b) = (grant(100, None), grant(101, None));
        assert!(repo.create_upload_within(&a, &quota).await.expect("a"));
        assert!(repo.create_upload_within(&b, &quota).await.expect("b"));
        let direct = grant(102, Some(60));
        assert!(
            repo.create_upload_within(&direct, &quota)
                .await
                .expect("direct")
        );
        assert!(
            !repo
                .create_upload_within(&grant(103, None), &quota)
                .await
                .expect("fourth"),
            "three grants in the window (the one before it does not count)"
        );
        assert_eq!(
            repo.mark_upload_received_within(&a.upload_id, 50, &quota)
                .await
                .expect("a"),
            Received::OverQuota,
            "60 + 50 bytes is over 100"
        );
        assert_eq!(
            repo.mark_upload_received_within(&a.upload_id, 40, &quota)
                .await
                .expect("a"),
            Received::Marked
        );
        assert_eq!(
            repo.mark_upload_received_within(&a.upload_id, 40, &quota)
                .await
                .expect("again"),
            Received::AlreadyReceived
        );
        assert_eq!(
            repo.mark_upload_received_within(&b.upload_id, 1, &quota)
                .await
                .expect("b"),
            Received::OverQuota,
            "two originals pending"
        );
        let usage = repo.upload_usage(&user, &quota).await.expect("usage");
        assert_eq!(
            (
                usage.grants,
                usage.oldest_grant,
                usage.originals,
                usage.original_bytes
            ),
            (3, Some(100), 2, 100)
        );
        repo.settle_original(&direct.upload_id)
            .await
            .expect("settle");
        assert_eq!(
            repo.mark_upload_received_within(&b.upload_id, 1, &quota)
                .await
                .expect("b"),
            Received::Marked,
            "a settled original no longer counts"
        );
    }

    async fn a_superseded_job_cannot_complete(repo: &dyn Repo) {
        let user = key('9');
        let job = queued(&user, &UploadId::generate());
        repo.enqueue_job(&job).await.expect("enqueue");
        let claimed = repo
            .claim_job(2_000_000, 2_000_100, "r")
            .await
            .expect("claim")
            .expect("due");
        assert_eq!(claimed.job_id, job.job_id);
        let error = JobError {
            code: "superseded".into(),
            message: "m".into(),
            user_message: "u".into(),
        };
        let superseded = repo
            .supersede_jobs(&user, 5, &error)
            .await
            .expect("supersede");
        assert_eq!(superseded.len(), 1);
        let avatar = AvatarRecord {
            user_key: user.clone(),
            version: "v9".into(),
            variants: vec![],
            updated_at: 6,
        };
        let mut done = claimed.clone();
        done.status = JobStatus::Completed;
        assert_eq!(
            repo.complete_job(&done, "r", &avatar)
                .await
                .expect("complete"),
            None
        );
        assert_eq!(repo.avatar(&user).await.expect("avatar"), None);
        let stored = repo.job(&job.job_id).await.expect("get").expect("present");
        assert_eq!(stored.status, JobStatus::Failed);
        assert_eq!(stored.error, Some(error));
    }

    fn key(c: char) -> UserKey {
        UserKey::parse(&c.to_string().repeat(32)).expect("key")
    }

    async fn upload_grants_are_used_once(repo: &dyn Repo) {
        let grant = UploadRecord {
            upload_id: UploadId::generate(),
            user_key: key('c'),
            content_type: "image/png".into(),
            max_bytes: 100,
            expires_at: 10,
            received_bytes: None,
            created_at: 1,
        };
        repo.create_upload(&grant).await.expect("create");
        assert_eq!(
            repo.upload(&grant.upload_id).await.expect("get"),
            Some(grant.clone())
        );
        assert!(
            repo.mark_upload_received(&grant.upload_id, 50)
                .await
                .expect("mark")
        );
        assert!(
            !repo
                .mark_upload_received(&grant.upload_id, 50)
                .await
                .expect("again")
        );
        let stored = repo
            .upload(&grant.upload_id)
            .await
            .expect("get")
            .expect("present");
        assert_eq!(stored.received_bytes, Some(50));
    }

    async fn jobs_are_claimed_once_and_reclaimed_after_their_lease(repo: &dyn Repo) {
        let job = JobRecord {
            job_id: JobId::generate(),
            user_key: key('d'),
            upload_id: UploadId::generate(),
            crop: Some(Crop {
                x: 1,
                y: 2,
                width: 30,
                height: 40,
            }),
            status: JobStatus::Queued,
            attempts: 0,
            run_at: 100,
            locked_until: None,
            locked_by: None,
            result: None,
            error: None,
            created_at: 1,
            updated_at: 1,
        };
        repo.enqueue_job(&job).await.expect("enqueue");
        assert_eq!(
            repo.claim_job(99, 200, "a").await.expect("claim"),
            None,
            "not due yet"
        );
        let claimed = repo
            .claim_job(100, 200, "a")
            .await
            .expect("claim")
            .expect("due");
        assert_eq!(claimed.status, JobStatus::Processing);
        assert_eq!(claimed.attempts, 1);
        assert_eq!(claimed.crop, job.crop, "the crop comes back typed");
        assert_eq!(claimed.locked_by.as_deref(), Some("a"));
        assert_eq!(
            repo.claim_job(150, 250, "b").await.expect("claim"),
            None,
            "leased"
        );
        assert!(repo.renew_job(&job.job_id, "a", 260).await.expect("renew"));
        assert_eq!(
            repo.claim_job(210, 300, "b").await.expect("claim"),
            None,
            "the heartbeat extended the lease"
        );
        let reclaimed = repo
            .claim_job(260, 360, "b")
            .await
            .expect("claim")
            .expect("lease expired");
        assert_eq!(reclaimed.attempts, 2);
        assert!(
            !repo.renew_job(&job.job_id, "a", 400).await.expect("renew"),
            "the old owner lost its lease"
        );
        let mut done = reclaimed.clone();
        done.status = JobStatus::Completed;
        done.result = Some(JobResult {
            version: "v1".into(),
            variants: vec![ReportedVariant {
                size: 128,
                width: 128,
                height: 128,
                format: OutputFormat::Webp,
                bytes: 10,
                url: "http://127.0.0.1/avatar/x".into(),
            }],
            exif: serde_json::json!({"orientation": 6}),
            processing_ms: 12,
        });
        done.locked_until = None;
        assert!(
            !repo.update_job(&done, "a").await.expect("update"),
            "the old owner cannot settle a job it lost"
        );
        assert!(repo.update_job(&done, "b").await.expect("update"));
        assert_eq!(
            repo.claim_job(10_000, 20_000, "c").await.expect("claim"),
            None
        );
        let stored = repo.job(&job.job_id).await.expect("get").expect("present");
        assert_eq!(stored.status, JobStatus::Completed);
        assert_eq!(stored.result, done.result);
    }

    async fn expired_grants_and_finished_jobs_are_purged(repo: &dyn Repo) {
        let grant = |expires_at, received_bytes| UploadRecord {
            upload_id: UploadId::generate(),
            user_key: key('c'),
            content_type: "image/png".into(),
            max_bytes: 100,
            expires_at,
            received_bytes,
            created_at: 1,
        };
        let (stale, used, fresh) = (grant(10, None), grant(10, Some(5)), grant(1_000, None));
        let in_use = grant(10, Some(5));
        for g in [&stale, &used, &fresh, &in_use] {
            repo.create_upload(g).await.expect("create");
        }
        let job = |status, updated_at| JobRecord {
            job_id: JobId::generate(),
            user_key: key('c'),
            upload_id: UploadId::generate(),
            crop: None,
            status,
            attempts: 1,
            run_at: 0,
            locked_until: None,
            locked_by: None,
            result: None,
            error: None,
            created_at: 0,
            updated_at,
        };
        let (old_done, mut queued, new_done) = (
            job(JobStatus::Failed, 10),
            job(JobStatus::Queued, 10),
            job(JobStatus::Completed, 1_000),
        );
        queued.upload_id = in_use.upload_id.clone();
        for j in [&old_done, &queued, &new_done] {
            repo.enqueue_job(j).await.expect("enqueue");
        }
        // Earlier contract steps may leave finished jobs of their own: count at least ours.
        assert!(repo.purge_expired(500, 500).await.expect("purge") >= 2);
        assert_eq!(repo.upload(&stale.upload_id).await.expect("get"), None);
        assert_eq!(
            repo.upload(&used.upload_id).await.expect("get"),
            None,
            "an upload past retention whose job ended has an end too"
        );
        assert!(
            repo.upload(&in_use.upload_id).await.expect("get").is_some(),
            "a queued job still reads its upload"
        );
        assert!(repo.upload(&fresh.upload_id).await.expect("get").is_some());
        assert_eq!(repo.job(&old_done.job_id).await.expect("get"), None);
        assert!(repo.job(&queued.job_id).await.expect("get").is_some());
        assert!(repo.job(&new_done.job_id).await.expect("get").is_some());
    }

    async fn avatars_are_replaced_and_deleted(repo: &dyn Repo) {
        let first = AvatarRecord {
            user_key: key('e'),
            version: "v1".into(),
            variants: vec![StoredVariant {
                size: 128,
                width: 128,
                height: 128,
                format: OutputFormat::Jpeg,
                bytes: 100,
                path: "avatar/e/v1/128.jpg".into(),
            }],
            updated_at: 1,
        };
        assert_eq!(repo.set_avatar(&first).await.expect("set"), None);
        let second = AvatarRecord {
            version: "v2".into(),
            ..first.clone()
        };
        assert_eq!(repo.set_avatar(&second).await.expect("set"), Some(first));
        assert_eq!(
            repo.avatar(&key('e')).await.expect("get"),
            Some(second.clone())
        );
        assert_eq!(
            repo.delete_avatar(&key('e')).await.expect("delete"),
            Some(second)
        );
        assert_eq!(repo.avatar(&key('e')).await.expect("get"), None);
    }

    async fn the_webhook_outbox_keeps_messages_until_removed(repo: &dyn Repo) {
        let message = OutboxMessage {
            message_id: "msg_1".into(),
            endpoint: "http://127.0.0.1:1/hook".into(),
            payload: "{}".into(),
            attempts: 0,
            next_attempt: 5,
        };
        repo.enqueue_webhook(&message, 5).await.expect("enqueue");
        assert!(repo.due_webhooks(4, 10).await.expect("due").is_empty());
        assert_eq!(
            repo.due_webhooks(5, 10).await.expect("due"),
            vec![message.clone()]
        );
        let claimed = repo
            .claim_webhook(5, 30, "a")
            .await
            .expect("claim")
            .expect("due");
        assert_eq!(claimed.attempts, 1);
        assert!(
            repo.due_webhooks(29, 10).await.expect("due").is_empty(),
            "leased"
        );
        assert!(
            !repo.retry_webhook("msg_1", "b", 50).await.expect("retry"),
            "only the owner settles"
        );
        assert!(repo.retry_webhook("msg_1", "a", 50).await.expect("retry"));
        assert!(repo.due_webhooks(49, 10).await.expect("due").is_empty());
        assert_eq!(repo.due_webhooks(50, 10).await.expect("due")[0].attempts, 1);
        assert!(
            !repo.remove_webhook("msg_1", "a").await.expect("remove"),
            "released: no owner until claimed again"
        );
        let again = repo
            .claim_webhook(50, 80, "b")
            .await
            .expect("claim")
            .expect("due");
        assert_eq!(again.attempts, 2);
        assert!(repo.remove_webhook("msg_1", "b").await.expect("remove"));
        assert!(repo.due_webhooks(1000, 10).await.expect("due").is_empty());
        assert!(
            !repo
                .endpoint_disabled(&message.endpoint)
                .await
                .expect("check")
        );
        repo.disable_endpoint(&message.endpoint, 7)
            .await
            .expect("disable");
        assert!(
            repo.endpoint_disabled(&message.endpoint)
                .await
                .expect("check")
        );
    }

    async fn registers_and_updates_identities(repo: &dyn Repo) {
        let key = UserKey::parse("0123456789abcdef0123456789abcdef").expect("key");
        assert_eq!(repo.identity(&key).await.expect("lookup"), None);
        let first = identity(&key, Some("https://a.example/1.png"), Some("Ada Lovelace"));
        repo.upsert_identities(std::slice::from_ref(&first))
            .await
            .expect("insert");
        assert_eq!(repo.identity(&key).await.expect("lookup"), Some(first));
        let second = identity(&key, Some("https://a.example/2.png"), None);
        repo.upsert_identities(std::slice::from_ref(&second))
            .await
            .expect("update");
        assert_eq!(repo.identity(&key).await.expect("lookup"), Some(second));
    }

    async fn upserts_report_only_changed_keys(repo: &dyn Repo) {
        let a = UserKey::parse("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").expect("key");
        let b = UserKey::parse("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb").expect("key");
        let batch = [
            identity(&a, Some("https://a.example/a.png"), None),
            identity(&b, None, Some("Bob")),
        ];
        let changed = repo.upsert_identities(&batch).await.expect("insert");
        assert_eq!(changed, vec![a.clone(), b.clone()]);
        let mut again = batch.clone();
        again[1].display_name = Some("Robert".into());
        let changed = repo.upsert_identities(&again).await.expect("update");
        assert_eq!(changed, vec![b]);
    }
}
