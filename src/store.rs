//! Durable blobs: uploaded avatar variants (never evicted) and, under `tmp/`, originals waiting
//! to be processed.
//!
//! [`BlobStore`] is the small trait the rest of the service sees; [`ObjectBlobStore`] implements
//! it over `object_store`, whose `LocalFileSystem` is the embedded default (a folder in the cache
//! dir) and whose S3 client serves scale-out deployments.

pub mod paths;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt as _, PutOptions, PutPayload};

/// Store failures: transient from the service's point of view (jobs retry them).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend refused or is unreachable.
    #[error("blob store error: {0}")]
    Backend(String),
    /// No such blob.
    #[error("blob not found")]
    NotFound,
}

impl From<object_store::Error> for StoreError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => Self::NotFound,
            other => Self::Backend(other.to_string()),
        }
    }
}

/// Durable blob storage.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Write (atomically replacing) a blob.
    async fn put(&self, path: &str, bytes: Bytes) -> Result<(), StoreError>;
    /// Read a blob.
    async fn get(&self, path: &str) -> Result<Bytes, StoreError>;
    /// Delete one blob; a missing one is not an error (it is gone either way). A blob is not a
    /// folder: [`Self::delete_prefix`] of a blob's own path deletes nothing.
    async fn delete(&self, path: &str) -> Result<(), StoreError>;
    /// Delete every blob under `prefix` (a folder); returns how many.
    async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError>;
    /// Delete blobs under `prefix` older than `age`; returns how many.
    async fn delete_older_than(&self, prefix: &str, age: Duration) -> Result<usize, StoreError>;
    /// Reachable (readiness).
    async fn health(&self) -> Result<(), StoreError>;
}

/// [`BlobStore`] over any `object_store` backend.
#[derive(Debug, Clone)]
pub struct ObjectBlobStore {
    inner: Arc<dyn ObjectStore>,
}

impl ObjectBlobStore {
    /// Local filesystem under `dir` (created, private).
    pub fn local(dir: &std::path::Path) -> Result<Self, StoreError> {
        crate::fsutil::create_private_dir(dir).map_err(|e| StoreError::Backend(e.to_string()))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
        Ok(Self {
            inner: Arc::new(fs),
        })
    }

    /// Any backend (in-memory for tests, S3 for scale-out).
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }

    async fn delete_where(
        &self,
        prefix: &str,
        keep: impl Fn(&object_store::ObjectMeta) -> bool,
    ) -> Result<usize, StoreError> {
        let prefix = StorePath::from(prefix);
        let mut listing = self.inner.list(Some(&prefix));
        let mut doomed = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            if !keep(&meta) {
                doomed.push(Ok(meta.location));
            }
        }
        let count = doomed.len();
        let mut deleted = self
            .inner
            .delete_stream(futures::stream::iter(doomed).boxed());
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(count)
    }
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    async fn put(&self, path: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.inner
            .put_opts(
                &StorePath::from(path),
                PutPayload::from(bytes),
                PutOptions::default(),
            )
            .await?;
        Ok(())
    }

    async fn get(&self, path: &str) -> Result<Bytes, StoreError> {
        let result = self
            .inner
            .get_opts(&StorePath::from(path), GetOptions::default())
            .await?;
        Ok(result.bytes().await?)
    }

    async fn delete(&self, path: &str) -> Result<(), StoreError> {
        match self.inner.delete(&StorePath::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        self.delete_where(prefix, |_| false).await
    }

    async fn delete_older_than(&self, prefix: &str, age: Duration) -> Result<usize, StoreError> {
        let cutoff = chrono_cutoff(age);
        self.delete_where(prefix, move |meta| meta.last_modified.timestamp() > cutoff)
            .await
    }

    async fn health(&self) -> Result<(), StoreError> {
        let mut listing = self.inner.list(Some(&StorePath::from("health")));
        match listing.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e.into()),
        }
    }
}

/// Unix seconds `age` ago (object_store reports times as chrono values).
fn chrono_cutoff(age: Duration) -> i64 {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    now.saturating_sub(i64::try_from(age.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_store_round_trips_and_deletes_by_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ObjectBlobStore::local(&dir.path().join("blobs")).expect("open");
        store.health().await.expect("healthy");
        store
            .put("avatar/k/v1/128.jpg", Bytes::from_static(b"a"))
            .await
            .expect("put");
        store
            .put("avatar/k/v1/512.jpg", Bytes::from_static(b"b"))
            .await
            .expect("put");
        store
            .put("tmp/u1", Bytes::from_static(b"c"))
            .await
            .expect("put");
        assert_eq!(
            store.get("avatar/k/v1/512.jpg").await.expect("get"),
            &b"b"[..]
        );
        assert!(matches!(store.get("nope").await, Err(StoreError::NotFound)));
        assert_eq!(
            store
                .delete_older_than("tmp", Duration::from_secs(3600))
                .await
                .expect("sweep"),
            0
        );
        assert_eq!(
            store
                .delete_older_than("tmp", Duration::ZERO)
                .await
                .expect("sweep"),
            1
        );
        store
            .put("tmp/u2", Bytes::from_static(b"d"))
            .await
            .expect("put");
        assert_eq!(
            store.delete_prefix("tmp/u2").await.expect("prefix"),
            0,
            "a blob is not a folder"
        );
        store.delete("tmp/u2").await.expect("delete");
        store
            .delete("tmp/u2")
            .await
            .expect("deleting a missing blob");
        assert!(matches!(
            store.get("tmp/u2").await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(store.delete_prefix("avatar/k").await.expect("delete"), 2);
        assert!(matches!(
            store.get("avatar/k/v1/128.jpg").await,
            Err(StoreError::NotFound)
        ));
    }
}
