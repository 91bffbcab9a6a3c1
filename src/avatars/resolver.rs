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
//!             │                     rendered in the shared image pool)
//!             └──────────────────▶ generated default (identicon, mp, initials, blank) or 404
//! ```
//!
//! This file holds the order (upload > upstream > default) and the caches' lifecycle; each
//! concern lives in its own file: `registry` (identity lookups), `uploaded` (the user's
//! stored variants), `sources` (upstream copies and fetching), `variants` (derived sizes and
//! formats), `defaults` (generated images and the `d=404` answer). Image work runs in the
//! shared [`ImagePool`] handed in at start-up.

mod defaults;
mod registry;
mod sources;
mod uploaded;
mod variants;

use sources::{FetchResult, SourceCopy, source_key};
use uploaded::{Upload, cached_content_type};
use variants::{SourceBytes, variant_key};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::rendition::{CacheStatus, Rendition, RenditionKey, SourceKind, etag_from_digest};
use super::request::{DefaultChoice, FormatChoice};
use crate::cache::disk::EntryMeta;
use crate::cache::{
    DiskEntry, DiskTier, Freshness, Generations, Lifetimes, MemoryTier, SingleFlight, Stamped,
};
use crate::clock::{Clock, Millis, http_date, millis};
use crate::imaging::{self, ImagePool, PoolError};
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

struct Inner {
    settings: AvatarSettings,
    /// Renditions ready to serve, each with the generation of its key when its build began.
    memory: MemoryTier<RenditionKey, Stamped<Rendition>>,
    /// Per user key (uploads, deletes, registrations, purges): bumped by every invalidation, so
    /// builds begun before it never reach a reader after it.
    generations: Generations,
    /// Per upstream copy key (purges): a fetch in flight during a purge leaves nothing on disk.
    /// Apart from `generations`, so a user's change never costs an unrelated fetch its copy.
    copy_generations: Generations,
    disk: DiskTier,
    fetcher: Fetcher,
    repo: Arc<dyn Repo>,
    /// Uploaded variants.
    store: Arc<dyn BlobStore>,
    clock: Arc<dyn Clock>,
    /// Current uploads, so repeated misses do not query the database; invalidated on change.
    /// Tagged with the key's generation when the lookup began.
    uploads: moka::sync::Cache<UserKey, (u64, Option<Arc<Upload>>)>,
    /// Registry lookups, so repeated misses of one key do not query the database each time.
    /// Invalidated on registration; a short TTL bounds drift between replicas.
    /// Tagged with the key's generation when the lookup began.
    identities: moka::sync::Cache<UserKey, (u64, Option<Arc<Identity>>)>,
    /// Upstream URLs that answered 404, until the given time.
    negative: moka::sync::Cache<Arc<str>, Millis>,
    /// Keyed with the generation too: a request after an invalidation never joins a build
    /// that began before it.
    renditions: SingleFlight<(RenditionKey, u64), Built>,
    /// Keyed by the copy's disk key and its generation (purges bump it).
    fetches: SingleFlight<(Arc<str>, u64), FetchResult>,
    variants: SingleFlight<String, Result<(Bytes, DiskEntry), ResolveError>>,
    /// Image work (decode, resize, encode), bounded; shared with the upload jobs.
    pool: ImagePool,
    /// Defaults rendered at start-up: the last resort of `/avatar`.
    fallback: super::fallback::Fallback,
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
        pool: ImagePool,
    ) -> Self {
        Self(Arc::new(Inner {
            fallback: super::fallback::Fallback::new(&settings.sizes, settings.default),
            settings,
            memory: MemoryTier::new(memory_budget),
            generations: Generations::default(),
            copy_generations: Generations::default(),
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
            pool,
        }))
    }

    /// Defaults rendered at start-up, for when nothing else can be served.
    pub fn fallback(&self) -> &super::fallback::Fallback {
        &self.0.fallback
    }

    /// The generated default for a request (or its `d=404` answer), ignoring uploads and
    /// upstreams: what `/avatar` serves when [`Self::serve`] failed.
    pub async fn default_for(
        &self,
        rkey: &RenditionKey,
    ) -> Result<Arc<Rendition>, Arc<ResolveError>> {
        let user_key = UserKey::parse(&rkey.key);
        let (rendition, _) = self
            .default_rendition(rkey, user_key.as_ref(), None)
            .await?;
        Ok(Arc::new(rendition))
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

    /// Refresh the gauges of cache sizes (when metrics are scraped, and by the sweep).
    pub fn publish_gauges(&self) {
        let (memory_bytes, memory_entries) = self.memory_usage();
        let disk = self.disk();
        metrics::gauge!("avatar_cache_bytes", "tier" => "memory").set(memory_bytes as f64);
        metrics::gauge!("avatar_cache_entries", "tier" => "memory").set(memory_entries as f64);
        metrics::gauge!("avatar_cache_bytes", "tier" => "disk").set(disk.weighted_size() as f64);
        metrics::gauge!("avatar_cache_entries", "tier" => "disk").set(disk.entry_count() as f64);
    }

    /// The allow-list.
    pub fn upstreams(&self) -> &crate::upstream::Upstreams {
        self.0.fetcher.upstreams()
    }

    /// The hot path: the memory tier's answer (fresh, or stale with a refresh started in the
    /// background), with no I/O. `None` means answering takes work ([`Self::serve`]).
    pub fn memory_hit(&self, key: &RenditionKey) -> Option<(Arc<Rendition>, CacheStatus)> {
        self.memory_hit_at(key, self.0.generations.current(key.key.as_str()))
    }

    /// [`Self::memory_hit`] for a key's generation read by the caller: an entry built before a
    /// later change of the key (upload, delete, purge) is never served.
    fn memory_hit_at(
        &self,
        key: &RenditionKey,
        generation: u64,
    ) -> Option<(Arc<Rendition>, CacheStatus)> {
        let stamped = self.0.memory.get(key)?;
        if stamped.generation != generation {
            return None;
        }
        let hit = stamped.value.clone();
        let now = self.0.clock.now_millis();
        if now < hit.fresh_until {
            return Some((hit, CacheStatus::HitMemory));
        }
        if now < hit.stale_until {
            if let Some(source_key) = &hit.source_key {
                self.refresh_in_background(source_key.clone());
            }
            return Some((hit, CacheStatus::Stale));
        }
        None
    }

    /// Serve a request. The hot path is the first lines: one memory lookup, no I/O.
    pub async fn serve(
        &self,
        key: RenditionKey,
    ) -> Result<(Arc<Rendition>, CacheStatus), Arc<ResolveError>> {
        // Read before anything else: what this request builds is tagged with it.
        let generation = self.0.generations.current(key.key.as_str());
        if let Some(hit) = self.memory_hit_at(&key, generation) {
            return Ok(hit);
        }
        let this = self.clone();
        let flight_key = (key.clone(), generation);
        let flight = self.0.renditions.run(flight_key, move || async move {
            this.build(key, generation).await
        });
        match tokio::time::timeout(self.0.settings.request_timeout, flight).await {
            Ok(Some(built)) => built,
            Ok(None) => Err(Arc::new(ResolveError::Task)),
            Err(_) => Err(Arc::new(ResolveError::Timeout)),
        }
    }

    /// Build a rendition from the registry, the caches, the upstream or the defaults;
    /// `generation` is the key's, read before any of them.
    async fn build(&self, rkey: RenditionKey, generation: u64) -> Built {
        let (rendition, status) = match UserKey::parse(&rkey.key) {
            None => self.default_rendition(&rkey, None, None).await?,
            Some(user_key) => {
                if !rkey.force_default
                    && let Some((found, status)) = self.upload_rendition(&rkey, &user_key).await
                {
                    let rendition = Arc::new(found);
                    self.remember(rkey, generation, rendition.clone());
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
        self.remember(rkey, generation, rendition.clone());
        Ok((rendition, status))
    }

    /// Keep a built rendition in the memory tier, tagged with the generation its build began
    /// under; one whose key was invalidated meanwhile is not kept (and, should the invalidation
    /// land right after this check, is never read: readers compare the tag).
    fn remember(&self, rkey: RenditionKey, generation: u64, rendition: Arc<Rendition>) {
        if !self.0.generations.is_current(rkey.key.as_str(), generation) {
            return;
        }
        let stamped = Stamped {
            generation,
            value: rendition,
        };
        self.0.memory.insert(rkey, Arc::new(stamped));
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

    /// Run image work in the shared pool.
    async fn image_work<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, imaging::ImagingError> + Send + 'static,
    ) -> Result<T, ResolveError> {
        self.0.pool.run(work).await.map_err(|e| match e {
            PoolError::Imaging(e) => ResolveError::Imaging(e),
            PoolError::Task => ResolveError::Task,
        })
    }

    /// Drop a key from the memory tier and the registry cache. Call it after the change (upload,
    /// delete, registration) is committed: builds begun before this call are never served after
    /// it, wherever they are.
    pub fn forget(&self, key: &UserKey) {
        self.0.generations.bump(key.as_str());
        self.0.identities.invalidate(key);
        self.0.uploads.invalidate(key);
        let key = key.as_str().to_owned();
        self.0.memory.invalidate_where(move |k, _| k.key == key);
    }

    /// Purge every cached copy and variant of a key's upstream avatar.
    pub async fn purge(&self, key: &UserKey) -> Result<(), crate::repo::RepoError> {
        let identity = self.0.repo.identity(key).await?;
        if let Some(url) = identity.and_then(|i| i.upstream_url) {
            let skey = source_key(&url);
            // Fetches in flight now store nothing that outlives this purge.
            self.0.copy_generations.bump(&*skey);
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
            self.0.fetcher.forget_failures(&url);
        }
        self.forget(key);
        Ok(())
    }
}
