//! Metadata: the key → upstream registry (and, with uploads, upload records and jobs).
//!
//! One small trait, [`Repo`], implemented by SQLite (the embedded default, a file in the cache
//! dir). Every implementation runs the same contract tests ([`contract`]).

pub mod sqlite;

use async_trait::async_trait;

use crate::clock::Millis;
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
