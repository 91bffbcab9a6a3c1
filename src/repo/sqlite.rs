//! SQLite implementation of [`Repo`]: one file in the cache dir, WAL mode, migrations embedded.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::{Identity, Repo, RepoError};
use crate::keys::UserKey;

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
        Ok(row.map(|r| Identity {
            key: key.clone(),
            user_id: r.get("user_id"),
            upstream_url: r.get("upstream_url"),
            display_name: r.get("display_name"),
            updated_at: r.get("updated_at"),
        }))
    }
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
}
