//! Disk tier: cacache content (atomic, content-addressed, integrity-checked) under a moka index
//! that enforces an LRU byte budget covering everything the tier puts on disk.
//!
//! cacache has no size limit of its own, and its per-key index costs more than small avatars do
//! (see [`super::journal`]). So cacache keeps only the content; the index is a moka cache in
//! memory (the source of truth for what is live) mirrored in one append-only journal file. Each
//! entry weighs what it really occupies: its bytes rounded up to the filesystem block, its
//! journal line, and one directory block (cacache fans content out over `xx/yy/` directories).
//! The eviction listener writes the removal to the journal and deletes the content when no other
//! key shares it.
//!
//! The journal is replayed at start, in the background; until then a lookup waits for it
//! (bounded by [`REBUILD_WAIT`]) instead of missing and refetching from the upstream.
//!
//! Disk use stays within the budget plus a margin (an eviction also removes the content
//! directories it leaves empty): at most 256 first-level directories (1 MiB),
//! the journal's dead lines (at most half its live lines plus 256 KiB, then it is compacted) and
//! writes in flight. Content files whose key is gone and empty directories are collected by the
//! cleanup task.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cacache::{Algorithm, Integrity};
use metrics::Counter;
use moka::notification::RemovalCause;
use serde::{Deserialize, Serialize};

use super::journal::{Journal, Record};
use crate::clock::Millis;

/// Longest a lookup waits for the start-up replay of the journal before it counts as a miss.
pub const REBUILD_WAIT: Duration = Duration::from_secs(5);

/// Filesystem block: a file occupies whole blocks, a directory at least one.
const BLOCK: u64 = 4096;

/// What is kept beside the bytes, in the journal.
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
    /// Length of this entry's journal line.
    journal_bytes: u64,
}

impl DiskEntry {
    /// Hex SHA-256 of the bytes: the content digest that derived variants are keyed by.
    pub fn digest(&self) -> String {
        self.integrity.to_hex().1
    }

    /// What this entry occupies on disk, as the budget counts it: content blocks, one directory
    /// block, its journal line.
    pub fn footprint(&self) -> u64 {
        self.size.div_ceil(BLOCK).max(1) * BLOCK + BLOCK + self.journal_bytes
    }

    fn record(&self, key: &str) -> Record {
        Record {
            key: key.to_owned(),
            integrity: Some(self.integrity.to_string()),
            size: Some(self.size),
            meta: Some((*self.meta).clone()),
        }
    }
}

/// Errors writing to the disk tier (reads fail soft: a bad entry is a miss).
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// cacache refused.
    #[error("cache write failed: {0}")]
    Write(#[from] cacache::Error),
    /// I/O outside cacache (the journal).
    #[error("cache I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The blocking task died.
    #[error("cache task failed")]
    Join,
}

struct Inner {
    dir: PathBuf,
    index: moka::sync::Cache<String, DiskEntry>,
    journal: Journal,
    /// Live keys per content hash: bytes shared by several keys are deleted with the last one.
    refs: Mutex<HashMap<String, u32>>,
    /// Set once the journal has been replayed; lookups before that wait for it.
    rebuilt: tokio::sync::watch::Sender<bool>,
    compacting: AtomicBool,
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
        let journal = Journal::open(&dir.join("index.log"))?;
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let weak = weak.clone();
            let evictions = metrics::counter!("avatar_cache_evictions_total", "tier" => "disk");
            let index = moka::sync::Cache::builder()
                .max_capacity(budget_bytes)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .weigher(|_k: &String, v: &DiskEntry| {
                    u32::try_from(v.footprint()).unwrap_or(u32::MAX)
                })
                .eviction_listener(move |key: Arc<String>, old: DiskEntry, cause| {
                    let Some(inner) = weak.upgrade() else { return };
                    if cause == RemovalCause::Size {
                        evictions.increment(1);
                    }
                    inner.journal.retire(old.journal_bytes);
                    if cause != RemovalCause::Replaced {
                        let removal = Record {
                            key: key.as_str().to_owned(),
                            integrity: None,
                            size: None,
                            meta: None,
                        };
                        if let Err(e) = inner.journal.append(&removal) {
                            tracing::warn!(error = %e, "could not record a cache removal");
                        }
                    }
                    inner.release(&old.integrity);
                })
                .build();
            Inner {
                dir: dir.to_owned(),
                index,
                journal,
                refs: Mutex::new(HashMap::new()),
                rebuilt: tokio::sync::watch::Sender::new(false),
                compacting: AtomicBool::new(false),
                hits: metrics::counter!("avatar_cache_hits_total", "tier" => "disk"),
                misses: metrics::counter!("avatar_cache_misses_total", "tier" => "disk"),
                corrupt: metrics::counter!("avatar_cache_corrupt_entries_total"),
            }
        });
        Ok(Self(inner))
    }

    /// Replay the journal into the index (oldest write first, so the budget evicts the oldest),
    /// importing a cacache index left by an older version once. Blocking; returns the entries
    /// loaded.
    pub fn rebuild(&self) -> usize {
        let inner = &self.0;
        let mut count = self.import_cacache_index();
        match inner.journal.replay() {
            Ok(live) => {
                for replayed in live {
                    let Some(entry) = entry_of(&replayed.record, replayed.line_len) else {
                        inner.journal.retire(replayed.line_len);
                        continue;
                    };
                    if inner.index.contains_key(&replayed.record.key) {
                        // Written since start: newer than the journal's line.
                        inner.journal.retire(replayed.line_len);
                        continue;
                    }
                    inner.retain(&entry.integrity);
                    inner.index.insert(replayed.record.key, entry);
                    count += 1;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the disk cache journal; starting empty")
            }
        }
        inner.index.run_pending_tasks();
        inner.rebuilt.send_replace(true);
        self.compact_if_needed();
        count
    }

    /// An index written by cacache (versions before the journal): move its entries into the
    /// journal, then delete it.
    fn import_cacache_index(&self) -> usize {
        let inner = &self.0;
        let old = inner.dir.join("index-v5");
        if !old.exists() {
            return 0;
        }
        let mut entries: Vec<(u128, String, EntryMeta, Integrity, u64)> =
            cacache::list_sync(&inner.dir)
                .filter_map(Result::ok)
                .filter_map(|m| {
                    let meta = serde_json::from_value(m.metadata).ok()?;
                    Some((m.time, m.key, meta, m.integrity, m.size as u64))
                })
                .collect();
        entries.sort_by_key(|(time, ..)| *time);
        let mut count = 0;
        for (_, key, meta, integrity, size) in entries {
            if self.insert_entry(&key, integrity, size, meta).is_ok() {
                count += 1;
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&old) {
            tracing::warn!(error = %e, "could not remove the old cache index");
        }
        count
    }

    /// Whether the start-up rebuild finished.
    pub fn is_rebuilt(&self) -> bool {
        *self.0.rebuilt.borrow()
    }

    /// Metadata of a key without touching the disk (after the rebuild).
    pub fn peek(&self, key: &str) -> Option<DiskEntry> {
        self.0.index.get(key)
    }

    /// Read a key. A missing, unreadable or corrupted entry is a miss; corrupted ones are deleted.
    /// Before the start-up rebuild finished, waits for it (at most [`REBUILD_WAIT`]).
    pub async fn get(&self, key: &str) -> Option<(Bytes, DiskEntry)> {
        if !self.is_rebuilt() {
            let mut rebuilt = self.0.rebuilt.subscribe();
            let _ = tokio::time::timeout(REBUILD_WAIT, rebuilt.wait_for(|done| *done)).await;
        }
        let this = self.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || this.get_blocking(&key))
            .await
            .ok()
            .flatten()
    }

    fn get_blocking(&self, key: &str) -> Option<(Bytes, DiskEntry)> {
        let inner = &self.0;
        let Some(entry) = inner.index.get(key) else {
            inner.misses.increment(1);
            return None;
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

    /// Store bytes under a key: the content atomically (temp file, fsync, rename), then the
    /// journal line, then the index.
    pub async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        meta: EntryMeta,
    ) -> Result<DiskEntry, DiskError> {
        let this = self.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            let integrity = {
                // Held while writing so a concurrent release of the same bytes cannot delete
                // them between the write and the index insert.
                let _refs = this.0.refs.lock().unwrap_or_else(|p| p.into_inner());
                cacache::write_hash_sync_with_algo(Algorithm::Sha256, &this.0.dir, &bytes)?
            };
            this.insert_entry(&key, integrity, bytes.len() as u64, meta)
        })
        .await
        .map_err(|_| DiskError::Join)?
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
            let Some(old) = this.0.index.get(&key) else {
                return Ok(None);
            };
            this.insert_entry(&key, old.integrity, old.size, meta)
                .map(Some)
        })
        .await
        .map_err(|_| DiskError::Join)?
    }

    /// Journal and index one entry whose content is on disk. Blocking.
    fn insert_entry(
        &self,
        key: &str,
        integrity: Integrity,
        size: u64,
        meta: EntryMeta,
    ) -> Result<DiskEntry, DiskError> {
        let inner = &self.0;
        let mut entry = DiskEntry {
            integrity,
            size,
            meta: Arc::new(meta),
            journal_bytes: 0,
        };
        entry.journal_bytes = inner.journal.append(&entry.record(key))?;
        inner.retain(&entry.integrity);
        inner.index.insert(key.to_owned(), entry.clone());
        inner.index.run_pending_tasks();
        self.compact_if_needed();
        Ok(entry)
    }

    /// Rewrite the journal from the live index when enough of it is dead. Blocking.
    fn compact_if_needed(&self) {
        let inner = &self.0;
        if !self.is_rebuilt()
            || !inner.journal.wants_compaction()
            || inner.compacting.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let live = inner.index.iter().map(|(k, e)| e.record(&k));
        if let Err(e) = inner.journal.compact(live) {
            tracing::warn!(error = %e, "could not compact the disk cache journal");
        }
        inner.compacting.store(false, Ordering::Release);
    }

    /// Remove a key (index and, when unshared, content).
    pub async fn remove(&self, key: &str) {
        let this = self.clone();
        let key = key.to_owned();
        let _ = tokio::task::spawn_blocking(move || {
            this.0.index.invalidate(&key);
            this.0.index.run_pending_tasks();
            this.compact_if_needed();
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

    /// Bytes accounted now (content blocks, directory share and journal lines of live entries).
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

    /// Delete content no live key references, stale temp files (both older than `min_age`:
    /// crashes between writing content and its journal line leave such orphans) and empty
    /// content directories. Blocking; returns the files removed.
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
        {
            // Writers hold this lock while creating content directories.
            let _writers = inner.refs.lock().unwrap_or_else(|p| p.into_inner());
            remove_empty_dirs(&content);
        }
        self.compact_if_needed();
        removed
    }
}

/// The index entry a journal put line describes, if it is well-formed.
fn entry_of(record: &Record, line_len: u64) -> Option<DiskEntry> {
    Some(DiskEntry {
        integrity: record.integrity.as_deref()?.parse().ok()?,
        size: record.size?,
        meta: Arc::new(record.meta.clone()?),
        journal_bytes: line_len,
    })
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
            // cacache fans content out over `content-v2/sha256/xx/yy/`: a directory left empty
            // would outlive its entry (4 KiB each, up to 65,536 of them). Still under the lock
            // writers hold while they create these directories.
            let fan_out = self.dir.join("content-v2").join("sha256").join(&hex[..2]);
            let _ = std::fs::remove_dir(fan_out.join(&hex[2..4]));
            let _ = std::fs::remove_dir(fan_out);
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

/// Remove the empty directories below `dir` (deepest first); `dir` itself stays.
fn remove_empty_dirs(dir: &Path) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in read.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let path = entry.path();
            remove_empty_dirs(&path);
            // Fails (and is meant to) when the directory is not empty.
            let _ = std::fs::remove_dir(&path);
        }
    }
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

    /// What a directory tree occupies on disk, in allocated blocks (as `du` counts it).
    fn disk_usage(dir: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let mut total = 0;
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let Ok(m) = entry.metadata() else { continue };
                total += m.blocks() * 512;
                if m.is_dir() {
                    stack.push(entry.path());
                }
            }
        }
        total
    }

    fn upstream_meta(n: u32) -> EntryMeta {
        EntryMeta {
            content_type: "image/jpeg".into(),
            validated_at: i64::from(n),
            etag: Some(format!("\"etag-{n}\"")),
            last_modified: Some("Tue, 01 Sep 2026 10:00:00 GMT".into()),
            origin: Some(format!(
                "https://dev.azure.com/org/_apis/GraphProfile/MemberAvatars/aad.{n:040}"
            )),
        }
    }

    #[tokio::test]
    async fn disk_use_stays_within_the_budget_plus_the_margin_under_churn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let budget = 1 << 20;
        let tier = DiskTier::open(dir.path(), budget).expect("open");
        tier.rebuild();
        // Passes over 200 keys: new bytes, 304 refreshes and rewrites of the same keys.
        for pass in 0..8u32 {
            for k in 0..200u32 {
                let key = format!("src:{k:064}");
                if pass % 3 == 1 && tier.peek(&key).is_some() {
                    tier.update_meta(&key, upstream_meta(pass))
                        .await
                        .expect("update");
                } else {
                    let bytes = Bytes::from(vec![(k + pass) as u8; 3000 + (k as usize % 7) * 100]);
                    tier.put(&key, bytes, upstream_meta(pass))
                        .await
                        .expect("put");
                }
            }
            // No cleanup run in between: evictions must leave nothing behind themselves.
            let used = disk_usage(dir.path());
            // First-level directories, dead journal lines, the journal's own blocks.
            let margin = 1536 * 1024;
            assert!(
                used <= budget + margin,
                "pass {pass}: {used} bytes on disk for a budget of {budget}"
            );
        }
        assert!(tier.weighted_size() <= budget);
        // What the journal holds is exactly what is live.
        drop(tier);
        let reopened = DiskTier::open(dir.path(), budget).expect("reopen");
        let entries = reopened.rebuild();
        assert!(entries > 50, "{entries} entries survived");
        assert!(reopened.weighted_size() <= budget);
    }

    #[tokio::test]
    async fn a_hot_key_refreshed_a_thousand_times_keeps_the_journal_small() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tier = DiskTier::open(dir.path(), 1 << 20).expect("open");
        tier.rebuild();
        tier.put("hot", Bytes::from_static(b"bytes"), upstream_meta(0))
            .await
            .expect("put");
        for n in 1..=1000 {
            tier.update_meta("hot", upstream_meta(n))
                .await
                .expect("update");
        }
        let (file, live) = tier.0.journal.sizes();
        assert!(
            file <= live + live / 2 + super::super::journal::COMPACT_SLACK,
            "{file} vs {live}"
        );
        assert_eq!(tier.peek("hot").expect("live").meta.validated_at, 1000);
    }

    #[tokio::test]
    async fn an_index_left_by_cacache_is_imported_once_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        cacache::write_sync(dir.path(), "old-key", b"old bytes").expect("seed");
        cacache::index::insert(
            dir.path(),
            "old-key",
            cacache::WriteOpts::new()
                .integrity(
                    cacache::index::find(dir.path(), "old-key")
                        .expect("find")
                        .expect("entry")
                        .integrity,
                )
                .size(9)
                .metadata(serde_json::to_value(meta()).expect("json")),
        )
        .expect("metadata");
        let tier = DiskTier::open(dir.path(), 1 << 20).expect("open");
        assert_eq!(tier.rebuild(), 1);
        assert!(!dir.path().join("index-v5").exists());
        assert_eq!(
            tier.get("old-key").await.expect("imported").0,
            &b"old bytes"[..]
        );
        drop(tier);
        let again = DiskTier::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(again.rebuild(), 1, "the journal holds it now");
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
        let rebuild = tokio::task::spawn_blocking({
            let tier = tier.clone();
            move || tier.rebuild()
        });
        // A lookup that arrives before the replay finished waits for it instead of missing.
        assert_eq!(
            tier.get("k").await.expect("during rebuild").0,
            &b"persisted"[..]
        );
        assert_eq!(rebuild.await.expect("rebuild"), 1);
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
