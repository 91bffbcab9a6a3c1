//! Opening the backends from the settings: the metadata repository (`AVATAR_DATABASE_URL`) and
//! the durable blob store (`AVATAR_STORE`). The one place that knows which implementations this
//! build has; a URL naming one it lacks (PostgreSQL, S3) stops the start with a clear message.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::config::Settings;
use crate::repo::Repo;
use crate::repo::sqlite::SqliteRepo;
use crate::store::{BlobStore, ObjectBlobStore};

/// Where metadata lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseBackend {
    /// An SQLite file (`sqlite://path`).
    Sqlite(String),
}

/// Where durable blobs live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreBackend {
    /// A folder on the local filesystem.
    Local(PathBuf),
}

/// The opened backends.
pub struct Backends {
    /// Metadata.
    pub repo: Arc<dyn Repo>,
    /// Durable blobs.
    pub store: Arc<dyn BlobStore>,
}

impl DatabaseBackend {
    /// From `database.url`; empty is SQLite in the cache dir.
    pub fn from_url(url: &str, cache_dir: &Path) -> anyhow::Result<Self> {
        let url = url.trim();
        if url.is_empty() {
            let file = cache_dir.join("avatar-proxy.db");
            return Ok(Self::Sqlite(format!("sqlite://{}", file.display())));
        }
        match url.split_once(':').map(|(scheme, _)| scheme) {
            Some("sqlite") => Ok(Self::Sqlite(url.to_owned())),
            Some("postgres" | "postgresql") => {
                bail!(
                    "database.url (AVATAR_DATABASE_URL): PostgreSQL is not built into this binary"
                )
            }
            _ => bail!("database.url (AVATAR_DATABASE_URL): expected sqlite://path (or empty)"),
        }
    }
}

impl StoreBackend {
    /// From `store.url`; empty is `{cache dir}/store`.
    pub fn from_url(url: &str, cache_dir: &Path) -> anyhow::Result<Self> {
        let url = url.trim();
        if url.is_empty() {
            return Ok(Self::Local(cache_dir.join("store")));
        }
        match url::Url::parse(url) {
            Ok(u) if u.scheme() == "file" => u
                .to_file_path()
                .map(Self::Local)
                .map_err(|()| anyhow::anyhow!("store.url (AVATAR_STORE): not a local path")),
            Ok(u) if u.scheme() == "s3" => {
                bail!("store.url (AVATAR_STORE): S3 is not built into this binary")
            }
            _ => bail!("store.url (AVATAR_STORE): expected file:///path (or empty)"),
        }
    }
}

/// Open the repository and the store the settings name (`store` replaces the latter in tests).
pub async fn open(
    settings: &Settings,
    store: Option<Arc<dyn BlobStore>>,
) -> anyhow::Result<Backends> {
    let dir = &settings.cache.dir;
    let repo: Arc<dyn Repo> =
        match DatabaseBackend::from_url(settings.database.url.expose(), dir)? {
            DatabaseBackend::Sqlite(url) => Arc::new(SqliteRepo::connect(&url).await.context(
                "cannot open the metadata database (database.url, AVATAR_DATABASE_URL)",
            )?),
        };
    let store = match store {
        Some(store) => store,
        None => match StoreBackend::from_url(&settings.store.url, dir)? {
            StoreBackend::Local(path) => Arc::new(
                ObjectBlobStore::local(&path)
                    .context("cannot open the blob store (store.url, AVATAR_STORE)")?,
            ),
        },
    };
    Ok(Backends { repo, store })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_chosen_by_url_and_missing_ones_are_named() {
        let dir = Path::new("/var/cache/avatars");
        assert_eq!(
            DatabaseBackend::from_url("", dir).expect("default"),
            DatabaseBackend::Sqlite("sqlite:///var/cache/avatars/avatar-proxy.db".into())
        );
        let err = DatabaseBackend::from_url("postgres://db/avatars", dir).expect_err("absent");
        assert!(err.to_string().contains("PostgreSQL"), "{err}");
        assert_eq!(
            StoreBackend::from_url("file:///srv/blobs", dir).expect("local"),
            StoreBackend::Local(PathBuf::from("/srv/blobs"))
        );
        assert_eq!(
            StoreBackend::from_url("", dir).expect("default"),
            StoreBackend::Local(dir.join("store"))
        );
        let err = StoreBackend::from_url("s3://bucket", dir).expect_err("absent");
        assert!(err.to_string().contains("S3"), "{err}");
    }
}
