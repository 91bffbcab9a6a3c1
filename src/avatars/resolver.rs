//! The resolver: one stable URL per user, always the best image there is.
//!
//! ```text
//! serve ─▶ memory tier ── hit, fresh ─────────────────────────────▶ hit-memory
//!             │ hit, stale → background refresh ──────────────────▶ stale
//!             │ miss / expired: single flight per rendition key
//!             ▼
//!          identity (registry) ─▶ upstream copy (disk tier; fresh │ stale │ expired → fetch,
//!             │                     single flight per URL, stale-if-error, negative 404s)
//!             │                  ─▶ variant (disk tier, keyed by source digest, size, format;
//!             │                     rendered in spawn_blocking under the image semaphore)
//!             └──────────────────▶ generated default (identicon, mp, initials, blank) or 404
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::rendition::{CacheStatus, Rendition, RenditionKey, SourceKind, etag_from_digest};
use super::request::{DefaultChoice, FormatChoice};
use crate::cache::disk::EntryMeta;
use crate::cache::{DiskEntry, DiskTier, Freshness, Lifetimes, MemoryTier, SingleFlight};
use crate::clock::{Clock, Millis, http_date, millis};
use crate::imaging::{self, ImageKind};
use crate::keys::UserKey;
use crate::repo::{Identity, Repo};
use crate::store::BlobStore;
use crate::upstream::{FetchOutcome, Fetcher, UpstreamError, Validators};

/// The settings the resolver needs.
#[derive(Debug, Clone)]
pub struct AvatarSettings {
    /// Served sizes, ascending.
    pub sizes: Vec<u32>,
    /// Size without `?s`.
    pub default_size: u32,
    /// Default without `?d`.
    pub default: DefaultChoice,
    /// TTL and grace of upstream copies.
    pub lifetimes: Lifetimes,
    /// Memory of upstream 404s, and freshness of generated defaults.
    pub negative_ttl: Duration,
    /// Decode limits.
    pub limits: imaging::Limits,
    /// Upper bound of a slow-path answer (the fetch or render goes on for later requests).
    pub request_timeout: Duration,
}

/// A shared result of a rendition build.
type Built = Result<(Arc<Rendition>, CacheStatus), Arc<ResolveError>>;

/// Faults that leave nothing to show (not even a default image).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    /// Generating or encoding an image failed.
    #[error("image processing failed: {0}")]
    Imaging(#[from] imaging::ImagingError),
    /// A blocking task died.
    #[error("image task failed")]
    Task,
    /// The answer took longer than the request timeout.
    #[error("timed out")]
    Timeout,
}

/// An upstream copy on disk, with how it was obtained.
#[derive(Clone)]
struct SourceCopy {
    key: Arc<str>,
    entry: DiskEntry,
    /// The bytes, when just fetched (saves a disk read).
    bytes: Option<Bytes>,
    status: CacheStatus,
}

/// Why an upstream fetch produced no copy.
#[derive(Debug, Clone)]
enum FetchFailure {
    /// 404/410 (remembered for the negative TTL).
    NotFound,
    /// Anything else.
    Failed(Arc<UpstreamError>),
}

type FetchResult = Result<SourceCopy, FetchFailure>;

struct Inner {
    settings: AvatarSettings,
    memory: MemoryTier<RenditionKey, Rendition>,
    disk: DiskTier,
    fetcher: Fetcher,
    repo: Arc<dyn Repo>,
    /// Uploaded variants.
    store: Arc<dyn BlobStore>,
    clock: Arc<dyn Clock>,
    /// Current uploads, so repeated misses do not query the database; invalidated on change.
    uploads: moka::sync::Cache<UserKey, Option<Arc<Upload>>>,
    /// Registry lookups, so repeated misses of one key do not query the database each time.
    /// Invalidated on registration; a short TTL bounds drift between replicas.
    identities: moka::sync::Cache<UserKey, Option<Arc<Identity>>>,
    /// Upstream URLs that answered 404, until the given time.
    negative: moka::sync::Cache<Arc<str>, Millis>,
    renditions: SingleFlight<RenditionKey, Built>,
    fetches: SingleFlight<Arc<str>, FetchResult>,
    variants: SingleFlight<String, Result<(Bytes, DiskEntry), ResolveError>>,
    /// Image work at once (decode, resize, encode): CPU-bound, so about one per core.
    image_permits: Arc<Semaphore>,
}

/// The avatar service. Cheap to clone.
#[derive(Clone)]
pub struct Avatars(Arc<Inner>);

impl Avatars {
    /// Assemble the resolver.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: AvatarSettings,
        memory_budget: u64,
        disk: DiskTier,
        fetcher: Fetcher,
        repo: Arc<dyn Repo>,
        store: Arc<dyn BlobStore>,
        clock: Arc<dyn Clock>,
        image_workers: usize,
    ) -> Self {
        Self(Arc::new(Inner {
            settings,
            memory: MemoryTier::new(memory_budget),
            disk,
            fetcher,
            repo,
            store,
            clock,
            uploads: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            identities: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            negative: moka::sync::Cache::builder().max_capacity(100_000).build(),
            renditions: SingleFlight::default(),
            fetches: SingleFlight::default(),
            variants: SingleFlight::default(),
            image_permits: Arc::new(Semaphore::new(image_workers.max(1))),
        }))
    }

    /// Settings in force.
    pub fn settings(&self) -> &AvatarSettings {
        &self.0.settings
    }

    /// The disk tier (readiness, metrics, cleanup).
    pub fn disk(&self) -> &DiskTier {
        &self.0.disk
    }

    /// Memory tier bytes and entries (metrics).
    pub fn memory_usage(&self) -> (u64, u64) {
        (self.0.memory.weighted_size(), self.0.memory.entry_count())
    }

    /// The allow-list.
    pub fn upstreams(&self) -> &crate::upstream::Upstreams {
        self.0.fetcher.upstreams()
    }

    /// Serve a request. The hot path is the first lines: one memory lookup, no I/O.
    pub async fn serve(
        &self,
        key: RenditionKey,
    ) -> Result<(Arc<Rendition>, CacheStatus), Arc<ResolveError>> {
        if let Some(hit) = self.0.memory.get(&key) {
            let now = self.0.clock.now_millis();
            if now < hit.fresh_until {
                return Ok((hit, CacheStatus::HitMemory));
            }
            if now < hit.stale_until {
                if let Some(source_key) = &hit.source_key {
                    self.refresh_in_background(source_key.clone());
                }
                return Ok((hit, CacheStatus::Stale));
            }
        }
        let this = self.clone();
        let flight_key = key.clone();
        let flight = self
            .0
            .renditions
            .run(flight_key, move || async move { this.build(key).await });
        match tokio::time::timeout(self.0.settings.request_timeout, flight).await {
            Ok(Some(built)) => built,
            Ok(None) => Err(Arc::new(ResolveError::Task)),
            Err(_) => Err(Arc::new(ResolveError::Timeout)),
        }
    }

    /// Build a rendition from the registry, the caches, the upstream or the defaults.
    async fn build(&self, rkey: RenditionKey) -> Built {
        let (rendition, status) = match UserKey::parse(&rkey.key) {
            None => self.default_rendition(&rkey, None, None).await?,
            Some(user_key) => {
                if !rkey.force_default
                    && let Some((found, status)) = self.upload_rendition(&rkey, &user_key).await
                {
                    let rendition = Arc::new(found);
                    self.0.memory.insert(rkey, rendition.clone());
                    return Ok((rendition, status));
                }
                let identity = self.identity(&user_key).await;
                let name = identity.as_ref().and_then(|i| i.display_name.clone());
                let url = identity.as_ref().and_then(|i| i.upstream_url.clone());
                match url {
                    Some(url) if !rkey.force_default => {
                        match self.upstream_rendition(&rkey, &url).await {
                            Some(found) => found,
                            None => {
                                self.default_rendition(&rkey, Some(&user_key), name.as_deref())
                                    .await?
                            }
                        }
                    }
                    _ => {
                        self.default_rendition(&rkey, Some(&user_key), name.as_deref())
                            .await?
                    }
                }
            }
        };
        let rendition = Arc::new(rendition);
        self.0.memory.insert(rkey, rendition.clone());
        Ok((rendition, status))
    }

    async fn identity(&self, key: &UserKey) -> Option<Arc<Identity>> {
        if let Some(found) = self.0.identities.get(key) {
            return found;
        }
        match self.0.repo.identity(key).await {
            Ok(found) => {
                let found = found.map(Arc::new);
                self.0.identities.insert(key.clone(), found.clone());
                found
            }
            Err(e) => {
                // Serve a default now; do not remember the absence.
                tracing::error!(error = %e, "registry lookup failed");
                None
            }
        }
    }

    /// The upstream avatar at the requested size, or `None` when there is none to show.
    async fn upstream_rendition(
        &self,
        rkey: &RenditionKey,
        url: &str,
    ) -> Option<(Rendition, CacheStatus)> {
        let mut copy = self.source(url).await?;
        let variant = match self.upstream_variant(&copy, rkey).await {
            Ok(v) => v,
            Err(_) if copy.bytes.is_none() => {
                // The copy on disk vanished or failed its integrity check: fetch it again.
                copy = self.fetch_shared(url, None).await.ok()?;
                self.upstream_variant(&copy, rkey).await.ok()?
            }
            Err(e) => {
                tracing::warn!(error = %e, "upstream avatar could not be processed; serving the default");
                return None;
            }
        };
        let lifetimes = self.0.settings.lifetimes;
        let meta = &copy.entry.meta;
        let (bytes, entry) = variant;
        let last_modified = meta
            .last_modified
            .clone()
            .unwrap_or_else(|| http_date(meta.validated_at));
        let rendition = Rendition {
            found: true,
            content_type: format_content_type(entry.meta.content_type.trim_start_matches("image/")),
            etag: etag_from_digest(&entry.digest()),
            last_modified: Some(Arc::from(last_modified)),
            source: SourceKind::Upstream,
            version: Some(version_of(&copy.entry)),
            source_key: Some(copy.key.clone()),
            fresh_until: lifetimes.fresh_until(meta.validated_at),
            stale_until: lifetimes.stale_until(meta.validated_at),
            bytes,
        };
        Some((rendition, copy.status))
    }

    /// The upstream copy of `url`, honouring TTL, grace, negative caching and stale-if-error.
    async fn source(&self, url: &str) -> Option<SourceCopy> {
        let now = self.0.clock.now_millis();
        let url_key: Arc<str> = Arc::from(url);
        if self
            .0
            .negative
            .get(&url_key)
            .is_some_and(|until| now < until)
        {
            return None;
        }
        let key = source_key(url);
        let cached = self.disk_entry(&key).await;
        let Some(entry) = cached else {
            return self.fetch_shared(url, None).await.ok();
        };
        let copy = |status| SourceCopy {
            key: key.clone(),
            entry: entry.clone(),
            bytes: None,
            status,
        };
        match self
            .0
            .settings
            .lifetimes
            .classify(entry.meta.validated_at, now)
        {
            Freshness::Fresh => Some(copy(CacheStatus::HitDisk)),
            Freshness::Stale => {
                self.refresh_in_background(key.clone());
                Some(copy(CacheStatus::Stale))
            }
            Freshness::Expired => {
                let validators = Validators {
                    etag: entry.meta.etag.clone(),
                    last_modified: entry.meta.last_modified.clone(),
                };
                match self.fetch_shared(url, Some(validators)).await {
                    Ok(fresh) => Some(fresh),
                    Err(FetchFailure::NotFound) => None,
                    // stale-if-error
                    Err(FetchFailure::Failed(_)) => Some(copy(CacheStatus::Stale)),
                }
            }
        }
    }

    /// Index lookup; before the start-up rebuild finished, a direct read of the bucket.
    async fn disk_entry(&self, key: &str) -> Option<DiskEntry> {
        if let Some(entry) = self.0.disk.peek(key) {
            return Some(entry);
        }
        if self.0.disk.is_rebuilt() {
            return None;
        }
        self.0.disk.get(key).await.map(|(_, entry)| entry)
    }

    /// Fetch `url` once for all concurrent callers, store it, and return the copy.
    async fn fetch_shared(&self, url: &str, validators: Option<Validators>) -> FetchResult {
        let key = source_key(url);
        let this = self.clone();
        let url = url.to_owned();
        let flight_key = key.clone();
        self.0
            .fetches
            .run(flight_key, move || async move {
                this.fetch_and_store(key, url, validators).await
            })
            .await
            .unwrap_or_else(|| {
                Err(FetchFailure::Failed(Arc::new(UpstreamError::Network(
                    "task failed".into(),
                ))))
            })
    }

    async fn fetch_and_store(
        &self,
        key: Arc<str>,
        url: String,
        validators: Option<Validators>,
    ) -> FetchResult {
        let parsed = url::Url::parse(&url)
            .map_err(|_| FetchFailure::Failed(Arc::new(UpstreamError::NotAllowed)))?;
        let outcome = self
            .0
            .fetcher
            .fetch(&parsed, validators.as_ref())
            .await
            .map_err(|e| FetchFailure::Failed(Arc::new(e)))?;
        let now = self.0.clock.now_millis();
        match outcome {
            FetchOutcome::Fetched(fetched) => {
                let meta = EntryMeta {
                    content_type: kind_content_type(fetched.kind).to_owned(),
                    validated_at: now,
                    etag: fetched.validators.etag,
                    last_modified: fetched.validators.last_modified,
                    origin: Some(url.clone()),
                };
                let entry = self
                    .0
                    .disk
                    .put(&key, fetched.bytes.clone(), meta)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "cannot store an upstream avatar");
                        FetchFailure::Failed(Arc::new(UpstreamError::Network(
                            "cache write failed".into(),
                        )))
                    })?;
                Ok(SourceCopy {
                    key,
                    entry,
                    bytes: Some(fetched.bytes),
                    status: CacheStatus::Miss,
                })
            }
            FetchOutcome::NotModified(fresh) => {
                let Some(old) = self.0.disk.peek(&key) else {
                    // Our copy vanished meanwhile. Not asking again: the next request finds no
                    // copy and fetches unconditionally, and a 304 to that is an upstream error.
                    return Err(FetchFailure::Failed(Arc::new(UpstreamError::Network(
                        "cached copy vanished during revalidation".into(),
                    ))));
                };
                let meta = EntryMeta {
                    validated_at: now,
                    etag: fresh.etag.or_else(|| old.meta.etag.clone()),
                    last_modified: fresh
                        .last_modified
                        .or_else(|| old.meta.last_modified.clone()),
                    content_type: old.meta.content_type.clone(),
                    origin: Some(url.clone()),
                };
                let entry = match self.0.disk.update_meta(&key, meta).await {
                    Ok(Some(entry)) => entry,
                    _ => old,
                };
                Ok(SourceCopy {
                    key,
                    entry,
                    bytes: None,
                    status: CacheStatus::Revalidated,
                })
            }
            FetchOutcome::NotFound => {
                let until = now.saturating_add(millis(self.0.settings.negative_ttl));
                self.0.negative.insert(Arc::from(url.as_str()), until);
                self.0.disk.remove(&key).await;
                Err(FetchFailure::NotFound)
            }
        }
    }

    /// Revalidate an upstream copy without making anyone wait; afterwards the memory tier
    /// forgets the renditions built from it, so the next request sees the result.
    fn refresh_in_background(&self, key: Arc<str>) {
        let this = self.clone();
        tokio::spawn(async move {
            let Some(entry) = this.0.disk.peek(&key) else {
                return;
            };
            let Some(url) = entry.meta.origin.clone() else {
                return;
            };
            let validators = Validators {
                etag: entry.meta.etag.clone(),
                last_modified: entry.meta.last_modified.clone(),
            };
            let result = this.fetch_shared(&url, Some(validators)).await;
            if let Err(FetchFailure::Failed(e)) = &result {
                tracing::debug!(error = %e, "background revalidation failed; keeping the stale copy");
                return;
            }
            this.0
                .memory
                .invalidate_where(move |_, r| r.source_key.as_deref() == Some(&*key));
        });
    }

    async fn upstream_variant(
        &self,
        copy: &SourceCopy,
        rkey: &RenditionKey,
    ) -> Result<(Bytes, DiskEntry), Arc<ResolveError>> {
        let source = match &copy.bytes {
            Some(bytes) => SourceBytes::Ready(bytes.clone()),
            None => SourceBytes::Disk(copy.key.clone()),
        };
        self.variant(&copy.entry.digest(), source, rkey.size, rkey.format)
            .await
    }

    /// A variant of a source image (keyed by the source's digest, so identical pictures share
    /// entries): from disk, or rendered once and stored.
    async fn variant(
        &self,
        digest: &str,
        source: SourceBytes,
        size: u32,
        format: FormatChoice,
    ) -> Result<(Bytes, DiskEntry), Arc<ResolveError>> {
        let vkey = variant_key(digest, size, format);
        if let Some(found) = self.0.disk.get(&vkey).await {
            return Ok(found);
        }
        let this = self.clone();
        let flight_key = vkey.clone();
        self.0
            .variants
            .run(flight_key, move || async move {
                let source = match source {
                    SourceBytes::Ready(bytes) => bytes,
                    SourceBytes::Disk(key) => this
                        .0
                        .disk
                        .get(&key)
                        .await
                        .map(|(b, _)| b)
                        .ok_or(ResolveError::Task)?,
                };
                let limits = this.0.settings.limits;
                let preferred = format.preferred();
                let encoded = this
                    .image_work(move || {
                        let mut rendered =
                            imaging::render(&source, &limits, None, &[size], &[preferred])?;
                        rendered.variants.pop().map(|(_, e)| e).ok_or_else(|| {
                            imaging::ImagingError::Encode("no variant rendered".into())
                        })
                    })
                    .await?;
                let meta = EntryMeta {
                    content_type: encoded.format.content_type().to_owned(),
                    validated_at: this.0.clock.now_millis(),
                    etag: None,
                    last_modified: None,
                    origin: None,
                };
                let bytes = Bytes::from(encoded.bytes);
                let entry = this
                    .0
                    .disk
                    .put(&vkey, bytes.clone(), meta)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "cannot store a variant");
                        ResolveError::Task
                    })?;
                Ok((bytes, entry))
            })
            .await
            .unwrap_or(Err(ResolveError::Task))
            .map_err(Arc::new)
    }

    /// The user's upload at the requested size and format, if they have one.
    async fn upload_rendition(
        &self,
        rkey: &RenditionKey,
        key: &UserKey,
    ) -> Option<(Rendition, CacheStatus)> {
        let upload = self.upload_of(key).await?;
        let wanted_ext = |f: &str| match rkey.format {
            FormatChoice::Auto => f != "webp",
            FormatChoice::Exactly(o) => f == o.extension(),
        };
        let exact = upload
            .variants
            .iter()
            .find(|v| v.size == rkey.size && wanted_ext(&v.format));
        let (bytes, content_type, status) = match exact {
            Some(v) => {
                let bytes = self.0.store.get(&v.path).await.ok()?;
                (bytes, format_content_type(&v.format), CacheStatus::HitDisk)
            }
            None => {
                // Other sizes and formats derive from the largest variant through the cache.
                let base = upload
                    .variants
                    .iter()
                    .filter(|v| v.format != "webp")
                    .max_by_key(|v| v.size)?;
                let source = self.0.store.get(&base.path).await.ok()?;
                let digest = hex::encode(Sha256::digest(&source));
                let status = if self
                    .0
                    .disk
                    .peek(&variant_key(&digest, rkey.size, rkey.format))
                    .is_some()
                {
                    CacheStatus::HitDisk
                } else {
                    CacheStatus::Miss
                };
                let (bytes, entry) = self
                    .variant(&digest, SourceBytes::Ready(source), rkey.size, rkey.format)
                    .await
                    .ok()?;
                (
                    bytes,
                    format_content_type(entry.meta.content_type.trim_start_matches("image/")),
                    status,
                )
            }
        };
        let digest = hex::encode(Sha256::digest(&bytes));
        let rendition = Rendition {
            found: true,
            content_type,
            etag: etag_from_digest(&digest),
            last_modified: Some(Arc::from(http_date(upload.updated_at))),
            source: SourceKind::Upload,
            version: Some(Arc::from(upload.version.as_str())),
            source_key: None,
            // Until the user changes it; every change invalidates the memory tier.
            fresh_until: Millis::MAX,
            stale_until: Millis::MAX,
            bytes,
        };
        Some((rendition, status))
    }

    async fn upload_of(&self, key: &UserKey) -> Option<Arc<Upload>> {
        if let Some(found) = self.0.uploads.get(key) {
            return found;
        }
        match self.0.repo.avatar(key).await {
            Ok(record) => {
                let found = record.and_then(|r| {
                    let variants = serde_json::from_str(&r.variants).ok()?;
                    Some(Arc::new(Upload {
                        version: r.version,
                        variants,
                        updated_at: r.updated_at,
                    }))
                });
                self.0.uploads.insert(key.clone(), found.clone());
                found
            }
            Err(e) => {
                tracing::error!(error = %e, "upload lookup failed");
                None
            }
        }
    }

    /// The version a key's URL serves now, for `?v=`: the upload's, else the cached upstream
    /// copy's, else none.
    pub async fn current_version(
        &self,
        key: &UserKey,
        upstream_url: Option<&str>,
    ) -> Option<String> {
        match self.upload_of(key).await {
            Some(upload) => Some(upload.version.clone()),
            None => upstream_url.and_then(|u| self.cached_version(u)),
        }
    }

    /// Run image work on the blocking pool, under the image semaphore (shared by serving and
    /// upload jobs, so CPU-bound work never exceeds the configured workers).
    pub async fn image_work<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, imaging::ImagingError> + Send + 'static,
    ) -> Result<T, ResolveError> {
        let _permit = self
            .0
            .image_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ResolveError::Task)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| ResolveError::Task)?
            .map_err(ResolveError::Imaging)
    }

    /// The generated default, or the `d=404` answer.
    async fn default_rendition(
        &self,
        rkey: &RenditionKey,
        user_key: Option<&UserKey>,
        display_name: Option<&str>,
    ) -> Result<(Rendition, CacheStatus), Arc<ResolveError>> {
        let now = self.0.clock.now_millis();
        let fresh_until = now.saturating_add(millis(self.0.settings.negative_ttl));
        let style = match rkey.default {
            DefaultChoice::NotFound => {
                return Ok((not_found_rendition(fresh_until), CacheStatus::Miss));
            }
            DefaultChoice::Style(style) => style,
        };
        // Invalid keys share one seed, so garbage URLs cannot make us render endless images.
        let seed = user_key.map(|k| k.as_str().to_owned()).unwrap_or_default();
        let name = display_name.map(str::to_owned);
        // Generated images have hard edges and flat colours: PNG unless a format was asked for.
        let preferred = match rkey.format {
            FormatChoice::Auto => imaging::Preferred::Exactly(imaging::OutputFormat::Png),
            FormatChoice::Exactly(f) => imaging::Preferred::Exactly(f),
        };
        let size = rkey.size;
        let encoded = self
            .image_work(move || {
                imaging::render_default(style, seed.as_bytes(), name.as_deref(), size, preferred)
            })
            .await
            .map_err(Arc::new)?;
        let digest = hex::encode(Sha256::digest(&encoded.bytes));
        let rendition = Rendition {
            found: true,
            content_type: encoded.format.content_type(),
            etag: etag_from_digest(&digest),
            last_modified: None,
            source: SourceKind::Default,
            version: None,
            source_key: None,
            fresh_until,
            stale_until: fresh_until,
            bytes: Bytes::from(encoded.bytes),
        };
        Ok((rendition, CacheStatus::Miss))
    }

    /// Register identities; renditions of changed keys are forgotten at once.
    pub async fn register(&self, batch: &[Identity]) -> Result<(), crate::repo::RepoError> {
        let changed = self.0.repo.upsert_identities(batch).await?;
        for key in &changed {
            self.forget(key);
        }
        Ok(())
    }

    /// Drop a key from the memory tier and the registry cache.
    pub fn forget(&self, key: &UserKey) {
        self.0.identities.invalidate(key);
        self.0.uploads.invalidate(key);
        let key = key.as_str().to_owned();
        self.0.memory.invalidate_where(move |k, _| k.key == key);
    }

    /// Fetch the upstream copy now (prefetch); returns its version when one is cached.
    pub async fn prefetch(&self, url: &str) -> Option<String> {
        self.source(url)
            .await
            .map(|c| version_of(&c.entry).to_string())
    }

    /// Version of the cached copy of `url`, if any (no I/O).
    pub fn cached_version(&self, url: &str) -> Option<String> {
        self.0
            .disk
            .peek(&source_key(url))
            .map(|e| version_of(&e).to_string())
    }

    /// Purge every cached copy and variant of a key's upstream avatar.
    pub async fn purge(&self, key: &UserKey) -> Result<(), crate::repo::RepoError> {
        let identity = self.0.repo.identity(key).await?;
        if let Some(url) = identity.and_then(|i| i.upstream_url) {
            let skey = source_key(&url);
            if let Some(entry) = self.0.disk.peek(&skey) {
                for vkey in self
                    .0
                    .disk
                    .keys_with_prefix(&format!("var:{}:", entry.digest()))
                {
                    self.0.disk.remove(&vkey).await;
                }
            }
            self.0.disk.remove(&skey).await;
            self.0.negative.invalidate(url.as_str());
        }
        self.forget(key);
        Ok(())
    }
}

/// Where a variant's source bytes are.
enum SourceBytes {
    /// In hand.
    Ready(Bytes),
    /// In the disk tier under this key.
    Disk(Arc<str>),
}

/// A user's current upload, as the resolver needs it.
#[derive(Debug)]
struct Upload {
    version: String,
    variants: Vec<crate::repo::StoredVariant>,
    updated_at: Millis,
}

fn format_content_type(ext: &str) -> &'static str {
    match ext {
        "png" => "image/png",
        "webp" => "image/webp",
        _ => "image/jpeg",
    }
}

/// Disk key of a variant: source digest, size, format choice.
fn variant_key(digest: &str, size: u32, format: FormatChoice) -> String {
    format!("var:{digest}:{size}:{}", format.label())
}

/// Disk key of an upstream copy: `src:` + SHA-256 of the URL.
fn source_key(url: &str) -> Arc<str> {
    Arc::from(format!(
        "src:{}",
        hex::encode(Sha256::digest(url.as_bytes()))
    ))
}

/// The version fingerprint of an upstream copy: the start of its content digest.
fn version_of(entry: &DiskEntry) -> Arc<str> {
    Arc::from(&entry.digest()[..16])
}

fn kind_content_type(kind: ImageKind) -> &'static str {
    match kind {
        ImageKind::Png => "image/png",
        ImageKind::Jpeg => "image/jpeg",
        ImageKind::Gif => "image/gif",
        ImageKind::Webp => "image/webp",
    }
}

fn not_found_rendition(fresh_until: Millis) -> Rendition {
    let body = Bytes::from_static(
        br#"{"code":"not-found","message":"no avatar for this key","user_message":"No picture"}"#,
    );
    Rendition {
        found: false,
        etag: etag_from_digest(&hex::encode(Sha256::digest(&body))),
        bytes: body,
        content_type: "application/json",
        last_modified: None,
        source: SourceKind::Default,
        version: None,
        source_key: None,
        fresh_until,
        stale_until: fresh_until,
    }
}
