//! SQLite implementation of [`Repo`]: one file in the cache dir, WAL mode, migrations embedded.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    AvatarRecord, Enqueued, Identity, JobError, JobId, JobRecord, JobStatus, OutboxMessage,
    Received, Repo, RepoError, UploadId, UploadQuota, UploadRecord, UploadUsage,
};
use crate::clock::Millis;
use crate::keys::UserKey;

/// The condition on an `uploads` row `p` that makes it a pending original of the user `$user`
/// (SQL text): bytes received for a grant created at or after `$since`, not yet processed or
/// deleted.
macro_rules! pending {
    ($user:literal, $since:literal) => {
        concat!(
            "p.user_key = ",
            $user,
            " AND p.received_bytes IS NOT NULL AND p.original_settled = 0 AND p.created_at >= ",
            $since
        )
    };
}

/// SQLite-backed metadata store.
#[derive(Clone)]
pub struct SqliteRepo {
    pool: SqlitePool,
}

impl SqliteRepo {
    /// Open (creating if missing) and migrate.
    pub async fn connect(url: &str) -> Result<Self, RepoError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }

    /// The pool, for the other stores that live in the same file.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait]
impl Repo for SqliteRepo {
    async fn health(&self) -> Result<(), RepoError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn upsert_identities(&self, batch: &[Identity]) -> Result<Vec<UserKey>, RepoError> {
        let mut tx = self.pool.begin().await?;
        let mut changed = Vec::new();
        for identity in batch {
            let row = sqlx::query(
                "INSERT INTO identities (user_key, user_id, upstream_url, display_name, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (user_key) DO UPDATE SET
                     user_id = excluded.user_id,
                     upstream_url = excluded.upstream_url,
                     display_name = excluded.display_name,
                     updated_at = excluded.updated_at
                 WHERE identities.upstream_url IS NOT excluded.upstream_url
                    OR identities.display_name IS NOT excluded.display_name
                    OR identities.user_id IS NOT excluded.user_id
                 RETURNING user_key",
            )
            .bind(identity.key.as_str())
            .bind(&identity.user_id)
            .bind(&identity.upstream_url)
            .bind(&identity.display_name)
            .bind(identity.updated_at)
            .fetch_optional(&mut *tx)
            .await?;
            if row.is_some() {
                changed.push(identity.key.clone());
            }
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn identity(&self, key: &UserKey) -> Result<Option<Identity>, RepoError> {
        let row = sqlx::query(
            "SELECT user_id, upstream_url, display_name, updated_at FROM identities WHERE user_key = ?1",
        )
        .bind(key.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let table = "identities";
        row.map(|r| {
            Ok(Identity {
                key: key.clone(),
                user_id: column(&r, table, "user_id")?,
                upstream_url: column(&r, table, "upstream_url")?,
                display_name: column(&r, table, "display_name")?,
                updated_at: column(&r, table, "updated_at")?,
            })
        })
        .transpose()
    }

    async fn create_upload(&self, u: &UploadRecord) -> Result<(), RepoError> {
        sqlx::query(
            "INSERT INTO uploads (upload_id, user_key, content_type, max_bytes, expires_at, received_bytes, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(u.upload_id.as_str())
        .bind(u.user_key.as_str())
        .bind(&u.content_type)
        .bind(u.max_bytes)
        .bind(u.expires_at)
        .bind(u.received_bytes)
        .bind(u.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn upload(&self, upload_id: &UploadId) -> Result<Option<UploadRecord>, RepoError> {
        let row = sqlx::query("SELECT * FROM uploads WHERE upload_id = ?1")
            .bind(upload_id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let table = "uploads";
        row.map(|r| {
            Ok(UploadRecord {
                upload_id: upload_id_of(&r, table, "upload_id")?,
                user_key: key_of(&r, table, "user_key")?,
                content_type: column(&r, table, "content_type")?,
                max_bytes: column(&r, table, "max_bytes")?,
                expires_at: column(&r, table, "expires_at")?,
                received_bytes: column(&r, table, "received_bytes")?,
                created_at: column(&r, table, "created_at")?,
            })
        })
        .transpose()
    }

    async fn mark_upload_received(
        &self,
        upload_id: &UploadId,
        bytes: i64,
    ) -> Result<bool, RepoError> {
        let done = sqlx::query(
            "UPDATE uploads SET received_bytes = ?2 WHERE upload_id = ?1 AND received_bytes IS NULL",
        )
        .bind(upload_id.as_str())
        .bind(bytes)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_upload_within(
        &self,
        u: &UploadRecord,
        q: &UploadQuota,
    ) -> Result<bool, RepoError> {
        // One statement: SQLite serialises writers, so concurrent grants cannot overshoot.
        let done = sqlx::query(concat!(
            "INSERT INTO uploads (upload_id, user_key, content_type, max_bytes, expires_at, received_bytes, created_at)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
             WHERE (SELECT COUNT(*) FROM uploads WHERE user_key = ?2 AND created_at > ?8) < ?9
               AND (?6 IS NULL OR (
                   (SELECT COUNT(*) FROM uploads p WHERE ",
            pending!("?2", "?10"),
            ") < ?11
                   AND (SELECT COALESCE(SUM(received_bytes), 0) FROM uploads p WHERE ",
            pending!("?2", "?10"),
            ") + ?6 <= ?12))"
        ))
        .bind(u.upload_id.as_str())
        .bind(u.user_key.as_str())
        .bind(&u.content_type)
        .bind(u.max_bytes)
        .bind(u.expires_at)
        .bind(u.received_bytes)
        .bind(u.created_at)
        .bind(q.grants_since)
        .bind(i64::from(q.max_grants))
        .bind(q.originals_since)
        .bind(i64::from(q.max_originals))
        .bind(q.max_original_bytes)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn mark_upload_received_within(
        &self,
        upload_id: &UploadId,
        bytes: i64,
        q: &UploadQuota,
    ) -> Result<Received, RepoError> {
        let done = sqlx::query(concat!(
            "UPDATE uploads SET received_bytes = ?2
             WHERE upload_id = ?1 AND received_bytes IS NULL
               AND (SELECT COUNT(*) FROM uploads p WHERE ",
            pending!("uploads.user_key", "?3"),
            ") < ?4
               AND (SELECT COALESCE(SUM(received_bytes), 0) FROM uploads p WHERE ",
            pending!("uploads.user_key", "?3"),
            ") + ?2 <= ?5"
        ))
        .bind(upload_id.as_str())
        .bind(bytes)
        .bind(q.originals_since)
        .bind(i64::from(q.max_originals))
        .bind(q.max_original_bytes)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(Received::Marked);
        }
        Ok(match self.upload(upload_id).await? {
            Some(u) if u.received_bytes.is_none() => Received::OverQuota,
            _ => Received::AlreadyReceived,
        })
    }

    async fn upload_usage(&self, key: &UserKey, q: &UploadQuota) -> Result<UploadUsage, RepoError> {
        let row = sqlx::query(concat!(
            "SELECT
                (SELECT COUNT(*) FROM uploads WHERE user_key = ?1 AND created_at > ?2) AS grants,
                (SELECT MIN(created_at) FROM uploads WHERE user_key = ?1 AND created_at > ?2) AS oldest_grant,
                (SELECT COUNT(*) FROM uploads p WHERE ",
            pending!("?1", "?3"),
            ") AS originals,
                (SELECT COALESCE(SUM(received_bytes), 0) FROM uploads p WHERE ",
            pending!("?1", "?3"),
            ") AS original_bytes,
                (SELECT MIN(created_at) FROM uploads p WHERE ",
            pending!("?1", "?3"),
            ") AS oldest_original"
        ))
        .bind(key.as_str())
        .bind(q.grants_since)
        .bind(q.originals_since)
        .fetch_one(&self.pool)
        .await?;
        let table = "uploads";
        Ok(UploadUsage {
            grants: count(&row, table, "grants")?,
            oldest_grant: column(&row, table, "oldest_grant")?,
            originals: count(&row, table, "originals")?,
            original_bytes: column(&row, table, "original_bytes")?,
            oldest_original: column(&row, table, "oldest_original")?,
        })
    }

    async fn settle_original(&self, upload_id: &UploadId) -> Result<(), RepoError> {
        sqlx::query("UPDATE uploads SET original_settled = 1 WHERE upload_id = ?1")
            .bind(upload_id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn enqueue_job(&self, j: &JobRecord) -> Result<Enqueued, RepoError> {
        // The unique index on upload_id decides; the loser reads the winner's id.
        let inserted = sqlx::query(
            "INSERT INTO jobs (job_id, user_key, upload_id, crop, status, attempts, run_at, locked_until,
                               result, error, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (upload_id) DO NOTHING",
        )
        .bind(j.job_id.as_str())
        .bind(j.user_key.as_str())
        .bind(j.upload_id.as_str())
        .bind(to_json(&j.crop)?)
        .bind(j.status.as_str())
        .bind(i64::from(j.attempts))
        .bind(j.run_at)
        .bind(j.locked_until)
        .bind(to_json(&j.result)?)
        .bind(to_json(&j.error)?)
        .bind(j.created_at)
        .bind(j.updated_at)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Enqueued::New);
        }
        let existing: String = sqlx::query_scalar("SELECT job_id FROM jobs WHERE upload_id = ?1")
            .bind(j.upload_id.as_str())
            .fetch_one(&self.pool)
            .await?;
        JobId::parse(&existing)
            .map(Enqueued::Exists)
            .ok_or_else(|| corrupt("jobs", "job_id", "not a job id"))
    }

    async fn job_for_upload(&self, upload_id: &UploadId) -> Result<Option<JobId>, RepoError> {
        let raw: Option<String> =
            sqlx::query_scalar("SELECT job_id FROM jobs WHERE upload_id = ?1")
                .bind(upload_id.as_str())
                .fetch_optional(&self.pool)
                .await?;
        raw.map(|r| JobId::parse(&r).ok_or_else(|| corrupt("jobs", "job_id", "not a job id")))
            .transpose()
    }

    async fn requeue_failed_job(&self, job_id: &JobId, now: Millis) -> Result<bool, RepoError> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'queued', attempts = 0, run_at = ?2, locked_until = NULL,
                             locked_by = NULL, result = NULL, error = NULL, updated_at = ?2
             WHERE job_id = ?1 AND status = 'failed'",
        )
        .bind(job_id.as_str())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn supersede_jobs(
        &self,
        key: &UserKey,
        now: Millis,
        error: &JobError,
    ) -> Result<Vec<JobRecord>, RepoError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE user_key = ?1 AND status IN ('queued', 'processing')",
        )
        .bind(key.as_str())
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET status = 'failed', locked_until = NULL, locked_by = NULL,
                             error = ?3, updated_at = ?2
             WHERE user_key = ?1 AND status IN ('queued', 'processing')",
        )
        .bind(key.as_str())
        .bind(now)
        .bind(to_json(&Some(error))?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(job_of).collect()
    }

    async fn complete_job(
        &self,
        j: &JobRecord,
        owner: &str,
        avatar: &AvatarRecord,
    ) -> Result<Option<Option<AvatarRecord>>, RepoError> {
        let mut tx = self.pool.begin().await?;
        let settled = sqlx::query(
            "UPDATE jobs SET status = ?2, run_at = ?3, locked_until = NULL, locked_by = NULL,
                             result = ?4, error = ?5, updated_at = ?6
             WHERE job_id = ?1 AND status = 'processing' AND locked_by = ?7",
        )
        .bind(j.job_id.as_str())
        .bind(j.status.as_str())
        .bind(j.run_at)
        .bind(to_json(&j.result)?)
        .bind(to_json(&j.error)?)
        .bind(j.updated_at)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if settled.rows_affected() != 1 {
            return Ok(None);
        }
        let previous = sqlx::query("SELECT * FROM avatars WHERE user_key = ?1")
            .bind(avatar.user_key.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(avatar_of)
            .transpose()?;
        upsert_avatar(&mut tx, avatar).await?;
        tx.commit().await?;
        Ok(Some(previous))
    }

    async fn job(&self, job_id: &JobId) -> Result<Option<JobRecord>, RepoError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE job_id = ?1")
            .bind(job_id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_of).transpose()
    }

    async fn claim_job(
        &self,
        now: Millis,
        lease_until: Millis,
        owner: &str,
    ) -> Result<Option<JobRecord>, RepoError> {
        // One statement: SQLite serialises writers, so two workers never claim the same job.
        let row = sqlx::query(
            "UPDATE jobs SET status = 'processing', attempts = attempts + 1, locked_until = ?2,
                             locked_by = ?3, updated_at = ?1
             WHERE job_id = (
                 SELECT job_id FROM jobs
                 WHERE (status = 'queued' AND run_at <= ?1)
                    OR (status = 'processing' AND locked_until <= ?1)
                 ORDER BY run_at LIMIT 1)
             RETURNING *",
        )
        .bind(now)
        .bind(lease_until)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_of).transpose()
    }

    async fn renew_job(
        &self,
        job_id: &JobId,
        owner: &str,
        lease_until: Millis,
    ) -> Result<bool, RepoError> {
        let done = sqlx::query(
            "UPDATE jobs SET locked_until = ?3
             WHERE job_id = ?1 AND status = 'processing' AND locked_by = ?2",
        )
        .bind(job_id.as_str())
        .bind(owner)
        .bind(lease_until)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn update_job(&self, j: &JobRecord, owner: &str) -> Result<bool, RepoError> {
        let done = sqlx::query(
            "UPDATE jobs SET status = ?2, run_at = ?3, locked_until = NULL, locked_by = NULL,
                             result = ?4, error = ?5, updated_at = ?6
             WHERE job_id = ?1 AND status = 'processing' AND locked_by = ?7",
        )
        .bind(j.job_id.as_str())
        .bind(j.status.as_str())
        .bind(j.run_at)
        .bind(to_json(&j.result)?)
        .bind(to_json(&j.error)?)
        .bind(j.updated_at)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_avatar(&self, a: &AvatarRecord) -> Result<Option<AvatarRecord>, RepoError> {
        let mut tx = self.pool.begin().await?;
        let previous = sqlx::query("SELECT * FROM avatars WHERE user_key = ?1")
            .bind(a.user_key.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(avatar_of)
            .transpose()?;
        upsert_avatar(&mut tx, a).await?;
        tx.commit().await?;
        Ok(previous)
    }

    async fn avatar(&self, key: &UserKey) -> Result<Option<AvatarRecord>, RepoError> {
        let row = sqlx::query("SELECT * FROM avatars WHERE user_key = ?1")
            .bind(key.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(avatar_of).transpose()
    }

    async fn delete_avatar(&self, key: &UserKey) -> Result<Option<AvatarRecord>, RepoError> {
        let row = sqlx::query("DELETE FROM avatars WHERE user_key = ?1 RETURNING *")
            .bind(key.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(avatar_of).transpose()
    }

    async fn purge_expired(
        &self,
        grants_before: Millis,
        jobs_before: Millis,
    ) -> Result<u64, RepoError> {
        // Grants never used, and uploads whose original is past retention (its job, if any,
        // finished): nothing can be done with either any more. An upload a queued or running
        // job still reads stays until that job ends.
        let grants = sqlx::query(
            "DELETE FROM uploads WHERE expires_at < ?1 AND NOT EXISTS (
                 SELECT 1 FROM jobs WHERE jobs.upload_id = uploads.upload_id
                 AND jobs.status IN ('queued', 'processing'))",
        )
        .bind(grants_before)
        .execute(&self.pool)
        .await?;
        let jobs = sqlx::query(
            "DELETE FROM jobs WHERE status IN ('completed', 'failed') AND updated_at < ?1",
        )
        .bind(jobs_before)
        .execute(&self.pool)
        .await?;
        Ok(grants.rows_affected() + jobs.rows_affected())
    }

    async fn enqueue_webhook(&self, m: &OutboxMessage, now: Millis) -> Result<(), RepoError> {
        sqlx::query(
            "INSERT INTO webhook_outbox (message_id, endpoint, payload, attempts, next_attempt, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&m.message_id)
        .bind(&m.endpoint)
        .bind(&m.payload)
        .bind(i64::from(m.attempts))
        .bind(m.next_attempt)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn due_webhooks(&self, now: Millis, limit: i64) -> Result<Vec<OutboxMessage>, RepoError> {
        let rows = sqlx::query(
            "SELECT * FROM webhook_outbox WHERE next_attempt <= ?1 ORDER BY next_attempt LIMIT ?2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_of).collect()
    }

    async fn claim_webhook(
        &self,
        now: Millis,
        lease_until: Millis,
        owner: &str,
    ) -> Result<Option<OutboxMessage>, RepoError> {
        let row = sqlx::query(
            "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt = ?2, locked_by = ?3
             WHERE message_id = (
                 SELECT message_id FROM webhook_outbox WHERE next_attempt <= ?1
                 ORDER BY next_attempt LIMIT 1)
             RETURNING *",
        )
        .bind(now)
        .bind(lease_until)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(outbox_of).transpose()
    }

    async fn renew_webhook(
        &self,
        message_id: &str,
        owner: &str,
        lease_until: Millis,
    ) -> Result<bool, RepoError> {
        let done = sqlx::query(
            "UPDATE webhook_outbox SET next_attempt = ?3 WHERE message_id = ?1 AND locked_by = ?2",
        )
        .bind(message_id)
        .bind(owner)
        .bind(lease_until)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn remove_webhook(&self, message_id: &str, owner: &str) -> Result<bool, RepoError> {
        let done =
            sqlx::query("DELETE FROM webhook_outbox WHERE message_id = ?1 AND locked_by = ?2")
                .bind(message_id)
                .bind(owner)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn retry_webhook(
        &self,
        message_id: &str,
        owner: &str,
        next_attempt: Millis,
    ) -> Result<bool, RepoError> {
        let done = sqlx::query(
            "UPDATE webhook_outbox SET next_attempt = ?3, locked_by = NULL
             WHERE message_id = ?1 AND locked_by = ?2",
        )
        .bind(message_id)
        .bind(owner)
        .bind(next_attempt)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn disable_endpoint(&self, endpoint: &str, now: Millis) -> Result<(), RepoError> {
        sqlx::query(
            "INSERT INTO webhook_disabled (endpoint, disabled_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )
        .bind(endpoint)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn endpoint_disabled(&self, endpoint: &str) -> Result<bool, RepoError> {
        let row = sqlx::query("SELECT 1 FROM webhook_disabled WHERE endpoint = ?1")
            .bind(endpoint)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }
}

async fn upsert_avatar(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    a: &AvatarRecord,
) -> Result<(), RepoError> {
    sqlx::query(
        "INSERT INTO avatars (user_key, version, variants, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_key) DO UPDATE SET version = excluded.version,
             variants = excluded.variants, updated_at = excluded.updated_at",
    )
    .bind(a.user_key.as_str())
    .bind(&a.version)
    .bind(to_json(&Some(&a.variants))?)
    .bind(a.updated_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A column of the row, or [`RepoError::Corrupt`] when it is missing or of another type.
fn column<'r, T>(row: &'r SqliteRow, table: &'static str, name: &str) -> Result<T, RepoError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(name).map_err(|e| RepoError::Corrupt {
        table,
        detail: format!("{name}: {e}"),
    })
}

fn corrupt(table: &'static str, name: &str, what: impl std::fmt::Display) -> RepoError {
    RepoError::Corrupt {
        table,
        detail: format!("{name}: {what}"),
    }
}

fn key_of(row: &SqliteRow, table: &'static str, name: &str) -> Result<UserKey, RepoError> {
    let raw: String = column(row, table, name)?;
    UserKey::parse(&raw).ok_or_else(|| corrupt(table, name, "not a key"))
}

fn upload_id_of(row: &SqliteRow, table: &'static str, name: &str) -> Result<UploadId, RepoError> {
    let raw: String = column(row, table, name)?;
    UploadId::parse(&raw).ok_or_else(|| corrupt(table, name, "not an upload id"))
}

/// A JSON column decoded into its type; `NULL` is `None`.
fn json_column<T: DeserializeOwned>(
    row: &SqliteRow,
    table: &'static str,
    name: &str,
) -> Result<Option<T>, RepoError> {
    let raw: Option<String> = column(row, table, name)?;
    raw.map(|text| serde_json::from_str(&text).map_err(|e| corrupt(table, name, e)))
        .transpose()
}

/// A value as JSON text for a column; `None` is `NULL`.
fn to_json<T: Serialize>(value: &Option<T>) -> Result<Option<String>, RepoError> {
    value
        .as_ref()
        .map(|v| {
            serde_json::to_string(v).map_err(|e| RepoError::Corrupt {
                table: "(write)",
                detail: e.to_string(),
            })
        })
        .transpose()
}

fn count(row: &SqliteRow, table: &'static str, name: &str) -> Result<u32, RepoError> {
    let raw: i64 = column(row, table, name)?;
    u32::try_from(raw).map_err(|e| corrupt(table, name, e))
}

fn job_of(r: &SqliteRow) -> Result<JobRecord, RepoError> {
    let table = "jobs";
    let status: String = column(r, table, "status")?;
    let job_id: String = column(r, table, "job_id")?;
    Ok(JobRecord {
        job_id: JobId::parse(&job_id).ok_or_else(|| corrupt(table, "job_id", "not a job id"))?,
        user_key: key_of(r, table, "user_key")?,
        upload_id: upload_id_of(r, table, "upload_id")?,
        crop: json_column(r, table, "crop")?,
        status: JobStatus::parse(&status)
            .ok_or_else(|| corrupt(table, "status", format!("unknown status {status:?}")))?,
        attempts: count(r, table, "attempts")?,
        run_at: column(r, table, "run_at")?,
        locked_until: column(r, table, "locked_until")?,
        locked_by: column(r, table, "locked_by")?,
        result: json_column(r, table, "result")?,
        error: json_column(r, table, "error")?,
        created_at: column(r, table, "created_at")?,
        updated_at: column(r, table, "updated_at")?,
    })
}

fn avatar_of(r: &SqliteRow) -> Result<AvatarRecord, RepoError> {
    let table = "avatars";
    Ok(AvatarRecord {
        user_key: key_of(r, table, "user_key")?,
        version: column(r, table, "version")?,
        variants: json_column(r, table, "variants")?
            .ok_or_else(|| corrupt(table, "variants", "missing"))?,
        updated_at: column(r, table, "updated_at")?,
    })
}

fn outbox_of(r: &SqliteRow) -> Result<OutboxMessage, RepoError> {
    let table = "webhook_outbox";
    Ok(OutboxMessage {
        message_id: column(r, table, "message_id")?,
        endpoint: column(r, table, "endpoint")?,
        payload: column(r, table, "payload")?,
        attempts: count(r, table, "attempts")?,
        next_attempt: column(r, table, "next_attempt")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_meets_the_repo_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let repo = SqliteRepo::connect(&url).await.expect("connect");
        super::super::contract::run(&repo).await;
    }

    #[tokio::test]
    async fn a_corrupt_row_is_an_error_not_a_missing_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let repo = SqliteRepo::connect(&url).await.expect("connect");
        let key = UserKey::parse(&"f".repeat(32)).expect("key");
        sqlx::query("INSERT INTO avatars (user_key, version, variants, updated_at) VALUES (?1, 'v1', 'not json', 1)")
            .bind(key.as_str())
            .execute(repo.pool())
            .await
            .expect("insert");
        assert!(matches!(
            repo.avatar(&key).await,
            Err(RepoError::Corrupt {
                table: "avatars",
                ..
            })
        ));
        let job = JobId::generate();
        sqlx::query(
            "INSERT INTO jobs (job_id, user_key, upload_id, crop, status, run_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, '{\"x\": -1}', 'queued', 0, 0, 0)",
        )
        .bind(job.as_str())
        .bind(key.as_str())
        .bind(UploadId::generate().as_str())
        .execute(repo.pool())
        .await
        .expect("insert");
        assert!(matches!(
            repo.job(&job).await,
            Err(RepoError::Corrupt { table: "jobs", .. })
        ));
    }
}
