//! Disk tier: cacache content (atomic, content-addressed, integrity-checked) under a moka index
//! that enforces an exact LRU byte budget.
//!
//! cacache has no size limit of its own. The index here is the source of truth for what is live:
//! its weigher is the entry size, its eviction listener deletes the index entry and, when no
//! other key shares the same bytes, the content. The index is rebuilt from cacache's own at
//! start, in the background; until then a lookup falls back to reading the key's bucket, so
//! serving never waits for the rebuild.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cacache::{Algorithm, Integrity};
use metrics::Counter;
use moka::notification::RemovalCause;
use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// What is kept beside the bytes, in cacache's index (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// `image/jpeg`, `image/png`, …
    pub content_type: String,
    /// When the upstream last confirmed these bytes (fetch or 304).
    pub validated_at: Millis,
    /// Upstream `ETag`, for conditional revalidation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Upstream `Last-Modified`, for conditional revalidation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// The upstream URL these bytes came from (for background refreshes after a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// A live entry of the index.
#[derive(Debug, Clone)]
pub struct DiskEntry {
    /// cacache integrity (SHA-256 of the bytes).
    pub integrity: Integrity,
    /// Size in bytes.
    pub size: u64,
    /// Metadata.
    pub meta: Arc<EntryMeta>,
}

impl DiskEntry {
    /// Hex SHA-256 of the bytes: the content digest that derived variants are keyed by.
    pub fn digest(&self) -> String {
        self.integrity.to_hex().1
    }
}

/// Errors writing to the disk tier (reads fail soft: a bad entry is a miss).
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// cacache refused.
    #[error("cache write failed: {0}")]
    Write(#[from] cacache::Error),
    /// I/O outside cacache.
    #[error("cache I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The blocking task died.
    #[error("cache task failed")]
    Join,
}

struct Inner {
    dir: PathBuf,
    index: moka::sync::Cache<String, DiskEntry>,
    /// Live keys per content hash: bytes shared by several keys are deleted with the last one.
    refs: Mutex<HashMap<String, u32>>,
    rebuilt: AtomicBool,
    hits: Counter,
    misses: Counter,
    corrupt: Counter,
}

/// The disk tier. Cheap to clone.
#[derive(Clone)]
pub struct DiskTier(Arc<Inner>);

impl DiskTier {
    /// Open (creating, mode 0700) the cache under `dir` with a budget of `budget_bytes`.
    /// Call [`DiskTier::rebuild`] (blocking) once, in the background.
    pub fn open(dir: &Path, budget_bytes: u64) -> std::io::Result<Self> {
        crate::fsutil::create_private_dir(dir)?;
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let weak = weak.clone();
            let evictions = metrics::counter!("avatar_cache_evictions_total", "tier" => "disk");
            let index = moka::sync::Cache::builder()
                .max_capacity(budget_bytes)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .weigher(|_k: &String, v: &DiskEntry| u32::try_from(v.size).unwrap_or(u32::MAX))
                .eviction_listener(move |key: Arc<String>, old: DiskEntry, cause| {
                    let Some(inner) = weak.upgrade() else { return };
                    if cause == RemovalCause::Size {
                        evictions.increment(1);
                    }
                    if cause != RemovalCause::Replaced
                        && let Err(e) = cacache::remove_sync(&inner.dir, key.as_str())
                    {
                        tracing::warn!(error = %e, "could not remove a cache index entry");
                    }
                    inner.release(&old.integrity);
                })
                .build();
            Inner {
                dir: dir.to_owned(),
                index,
                refs: Mutex::new(HashMap::new()),
                rebuilt: AtomicBool::new(false),
                hits: metrics::counter!("avatar_cache_hits_total", "tier" => "disk"),
                misses: metrics::counter!("avatar_cache_misses_total", "tier" => "disk"),
                corrupt: metrics::counter!("avatar_cache_corrupt_entries_total"),
            }
        });
        Ok(Self(inner))
    }

    /// Load the index from disk (oldest first, so the budget evicts the oldest). Blocking.
    pub fn rebuild(&self) -> usize {
        let mut entries: Vec<(u128, String, DiskEntry)> = cacache::list_sync(&self.0.dir)
            .filter_map(Result::ok)
            .filter_map(|m| {
                let meta: EntryMeta = serde_json::from_value(m.metadata).ok()?;
                let entry = DiskEntry {
                    integrity: m.integrity,
                    size: m.size as u64,
                    meta: Arc::new(meta),
                };
                Some((m.time, m.key, entry))
            })
            .collect();
        entries.sort_by_key(|(time, _, _)| *time);
        let count = entries.len();
        for (_, key, entry) in entries {
            if self.0.index.contains_key(&key) {
                continue; // written since start: newer than what the disk said
            }
            self.0.retain(&entry.integrity);
            self.0.index.insert(key, entry);
        }
        self.0.index.run_pending_tasks();
        self.0.rebuilt.store(true, Ordering::SeqCst);
        count
    }

    /// Whether the start-up rebuild finished.
    pub fn is_rebuilt(&self) -> bool {
        self.0.rebuilt.load(Ordering::SeqCst)
    }

    /// Metadata of a key without touching the disk (after the rebuild).
    pub fn peek(&self, key: &str) -> Option<DiskEntry> {
        self.0.index.get(key)
    }

    /// Read a key. A missing, unreadable or corrupted entry is a miss; corrupted ones are deleted.
    pub async fn get(&self, key: &str) -> Option<(Bytes, DiskEntry)> {
        let this = self.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || this.get_blocking(&key))
            .await
            .ok()
            .flatten()
    }

    fn get_blocking(&self, key: &str) -> Option<(Bytes, DiskEntry)> {
        let inner = &self.0;
        let entry = match inner.index.get(key) {
            Some(entry) => entry,
            None if !self.is_rebuilt() => self.load_bucket(key)?,
            None => {
                inner.misses.increment(1);
                return None;
            }
        };
        match cacache::read_hash_sync(&inner.dir, &entry.integrity) {
            Ok(bytes) => {
                inner.hits.increment(1);
                Some((Bytes::from(bytes), entry))
            }
            Err(e) => {
                inner.corrupt.increment(1);
                tracing::warn!(error = %e, "disk cache entry failed its integrity check; deleting it");
                inner.index.invalidate(key);
                // The content may be shared with healthy keys only if the bytes were fine, and
                // they are not: remove it whatever the count.
                let _ = cacache::remove_hash_sync(&inner.dir, &entry.integrity);
                inner.misses.increment(1);
                None
            }
        }
    }

    /// Before the rebuild: read the key's bucket directly.
    fn load_bucket(&self, key: &str) -> Option<DiskEntry> {
        let m = cacache::metadata_sync(&self.0.dir, key).ok().flatten()?;
        let meta: EntryMeta = serde_json::from_value(m.metadata).ok()?;
        let entry = DiskEntry {
            integrity: m.integrity,
            size: m.size as u64,
            meta: Arc::new(meta),
        };
        if !self.0.index.contains_key(key) {
            self.0.retain(&entry.integrity);
            self.0.index.insert(key.to_owned(), entry.clone());
        }
        Some(entry)
    }

    /// Store bytes under a key (atomically: temp file, fsync, rename, then the index line).
    pub async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        meta: EntryMeta,
    ) -> Result<DiskEntry, DiskError> {
        let this = self.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || this.put_blocking(&key, &bytes, meta))
            .await
            .map_err(|_| DiskError::Join)?
    }

    fn put_blocking(
        &self,
        key: &str,
        bytes: &[u8],
        meta: EntryMeta,
    ) -> Result<DiskEntry, DiskError> {
        let inner = &self.0;
        let json = serde_json::to_value(&meta).unwrap_or_default();
        let integrity = {
            let _refs = inner.refs.lock().unwrap_or_else(|p| p.into_inner());
            let mut writer = cacache::WriteOpts::new()
                .algorithm(Algorithm::Sha256)
                .size(bytes.len())
                .metadata(json)
                .open_sync(&inner.dir, key)?;
            writer.write_all(bytes)?;
            writer.commit()?
        };
        let entry = DiskEntry {
            integrity,
            size: bytes.len() as u64,
            meta: Arc::new(meta),
        };
        inner.retain(&entry.integrity);
        inner.index.insert(key.to_owned(), entry.clone());
        inner.index.run_pending_tasks();
        Ok(entry)
    }

    /// Replace the metadata of a live key (after a 304), keeping its bytes.
    pub async fn update_meta(
        &self,
        key: &str,
        meta: EntryMeta,
    ) -> Result<Option<DiskEntry>, DiskError> {
        let this = self.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            let inner = &this.0;
            let Some(old) = inner.index.get(&key) else {
                return Ok(None);
            };
            let opts = cacache::WriteOpts::new()
                .integrity(old.integrity.clone())
                .size(old.size as usize)
                .metadata(serde_json::to_value(&meta).unwrap_or_default());
            cacache::index::insert(&inner.dir, &key, opts)?;
            let entry = DiskEntry {
                meta: Arc::new(meta),
                ..old
            };
            inner.retain(&entry.integrity);
            inner.index.insert(key, entry.clone());
            Ok(Some(entry))
        })
        .await
        .map_err(|_| DiskError::Join)?
    }

    /// Remove a key (index and, when unshared, content).
    pub async fn remove(&self, key: &str) {
        let this = self.clone();
        let key = key.to_owned();
        let _ = tokio::task::spawn_blocking(move || {
            this.0.index.invalidate(&key);
            this.0.index.run_pending_tasks();
        })
        .await;
    }

    /// Live keys starting with `prefix`.
    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.0
            .index
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| (*k).clone())
            .collect()
    }

    /// Bytes accounted now.
    pub fn weighted_size(&self) -> u64 {
        self.0.index.run_pending_tasks();
        self.0.index.weighted_size()
    }

    /// Entries now.
    pub fn entry_count(&self) -> u64 {
        self.0.index.entry_count()
    }

    /// The cache directory is writable (readiness).
    pub fn check_writable(&self) -> std::io::Result<()> {
        let probe = self.0.dir.join(".ready-probe");
        std::fs::write(&probe, b"ok")?;
        std::fs::remove_file(&probe)
    }

    /// Delete content no live key references and stale temp files, older than `min_age`
    /// (crashes between writing content and its index line leave such orphans). Blocking.
    pub fn collect_garbage(&self, min_age: Duration) -> usize {
        if !self.is_rebuilt() {
            return 0;
        }
        let inner = &self.0;
        let now = SystemTime::now();
        let old_enough = |path: &Path| {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= min_age)
        };
        let mut removed = 0;
        let content = inner.dir.join("content-v2").join("sha256");
        for file in walk_files(&content) {
            let Ok(rel) = file.strip_prefix(&content) else {
                continue;
            };
            let hex: String = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let live = inner
                .refs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&hex);
            if !live && old_enough(&file) && std::fs::remove_file(&file).is_ok() {
                removed += 1;
            }
        }
        for file in walk_files(&inner.dir.join("tmp")) {
            if old_enough(&file) && std::fs::remove_file(&file).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

impl Inner {
    fn retain(&self, integrity: &Integrity) {
        let hex = integrity.to_hex().1;
        *self
            .refs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(hex)
            .or_default() += 1;
    }

    fn release(&self, integrity: &Integrity) {
        let hex = integrity.to_hex().1;
        let mut refs = self.refs.lock().unwrap_or_else(|p| p.into_inner());
        let last = match refs.get_mut(&hex) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                refs.remove(&hex);
                true
            }
            None => false,
        };
        if last {
            let _ = cacache::remove_hash_sync(&self.dir, integrity);
        }
    }
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in read.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> EntryMeta {
        EntryMeta {
            content_type: "image/png".into(),
            validated_at: 1,
            etag: None,
            last_modified: None,
            origin: None,
        }
    }

    fn dir_bytes(dir: &Path) -> u64 {
        walk_files(&dir.join("content-v2"))
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    #[tokio::test]
    async fn stays_within_budget_and_evicts_least_recently_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tier = DiskTier::open(dir.path(), 100_000).expect("open");
        tier.rebuild();
        for i in 0..30u32 {
            let bytes = Bytes::from(vec![i as u8; 10_000]);
            tier.put(&format!("k{i}"), bytes, meta())
                .await
                .expect("put");
            assert!(tier.weighted_size() <= 110_000);
            if i > 0 {
                // keep k0 recently used
                assert!(tier.get("k0").await.is_some(), "k0 evicted at {i}");
            }
        }
        assert!(tier.weighted_size() <= 100_000);
        assert!(
            dir_bytes(dir.path()) <= 110_000,
            "{}",
            dir_bytes(dir.path())
        );
        assert!(tier.get("k1").await.is_none());
        assert!(tier.get("k29").await.is_some());
    }

    #[tokio::test]
    async fn shared_bytes_survive_the_eviction_of_one_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tier = DiskTier::open(dir.path(), 1 << 20).expect("open");
        tier.rebuild();
        let bytes = Bytes::from_static(b"same bytes");
        tier.put("a", bytes.clone(), meta()).await.expect("put");
        tier.put("b", bytes.clone(), meta()).await.expect("put");
        tier.remove("a").await;
        assert_eq!(tier.get("b").await.expect("b lives").0, bytes);
        tier.remove("b").await;
        assert_eq!(dir_bytes(dir.path()), 0);
    }

    #[tokio::test]
    async fn a_corrupted_entry_is_deleted_not_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tier = DiskTier::open(dir.path(), 1 << 20).expect("open");
        tier.rebuild();
        tier.put("k", Bytes::from_static(b"hello world"), meta())
            .await
            .expect("put");
        for file in walk_files(&dir.path().join("content-v2")) {
            std::fs::write(file, b"hellO world").expect("corrupt");
        }
        assert!(tier.get("k").await.is_none());
        assert!(tier.peek("k").is_none());
    }

    #[tokio::test]
    async fn the_index_is_rebuilt_after_a_restart_and_lookups_work_before_that() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let tier = DiskTier::open(dir.path(), 1 << 20).expect("open");
            tier.rebuild();
            tier.put("k", Bytes::from_static(b"persisted"), meta())
                .await
                .expect("put");
        }
        let tier = DiskTier::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(
            tier.get("k").await.expect("before rebuild").0,
            &b"persisted"[..]
        );
        assert_eq!(tier.rebuild(), 1);
        assert_eq!(
            tier.peek("k").expect("indexed").meta.content_type,
            "image/png"
        );
    }

    #[tokio::test]
    async fn metadata_updates_keep_the_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tier = DiskTier::open(dir.path(), 1 << 20).expect("open");
        tier.rebuild();
        tier.put("k", Bytes::from_static(b"v1"), meta())
            .await
            .expect("put");
        let mut m = meta();
        m.validated_at = 99;
        tier.update_meta("k", m).await.expect("update");
        let (bytes, entry) = tier.get("k").await.expect("present");
        assert_eq!(bytes, &b"v1"[..]);
        assert_eq!(entry.meta.validated_at, 99);
    }
}
