//! Upstream copies: the original avatar of a registered URL on the disk tier, fresh, stale
//! (refreshed in the background) or expired (fetched again, conditionally, once for all callers),
//! with negative caching of 404s and stale-if-error.

use super::*;

/// An upstream copy on disk, with how it was obtained.
#[derive(Clone)]
pub(super) struct SourceCopy {
    pub(super) key: Arc<str>,
    pub(super) entry: DiskEntry,
    /// The bytes, when just fetched (saves a disk read).
    pub(super) bytes: Option<Bytes>,
    pub(super) status: CacheStatus,
}

/// Why an upstream fetch produced no copy.
#[derive(Debug, Clone)]
pub(super) enum FetchFailure {
    /// 404/410 (remembered for the negative TTL).
    NotFound,
    /// Anything else.
    Failed(Arc<UpstreamError>),
}

pub(super) type FetchResult = Result<SourceCopy, FetchFailure>;

impl Avatars {
    /// The upstream avatar at the requested size, or `None` when there is none to show.
    pub(super) async fn upstream_rendition(
        &self,
        rkey: &RenditionKey,
        url: &str,
    ) -> Option<(Rendition, CacheStatus)> {
        let mut copy = self.source(url).await?;
        let variant = match self.upstream_variant(&copy, rkey).await {
            Err(e) if copy.bytes.is_none() && !matches!(*e, ResolveError::Imaging(_)) => {
                // The copy on disk vanished or failed its integrity check: fetch it again.
                copy = self.fetch_shared(url, None).await.ok()?;
                self.upstream_variant(&copy, rkey).await
            }
            other => other,
        };
        let variant = match variant {
            Ok(v) => v,
            Err(e) => {
                // Undecodable bytes are remembered like a 404 and reported (rate-limited).
                if let ResolveError::Imaging(error) = &*e {
                    self.remember_undecodable(url, error).await;
                } else {
                    tracing::warn!(error = %e, "upstream avatar could not be processed; serving the default");
                }
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
            content_type: cached_content_type(&entry.meta.content_type),
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

    /// Bytes that sniffed and probed as an image but cannot be decoded: forget the copy and
    /// remember the URL like a 404 (for the negative TTL), so other sizes and formats do not
    /// download it again; the fetcher reports it (rate-limited).
    async fn remember_undecodable(&self, url: &str, error: &imaging::ImagingError) {
        let until = self
            .0
            .clock
            .now_millis()
            .saturating_add(millis(self.0.settings.negative_ttl));
        self.0.negative.insert(Arc::from(url), until);
        self.0.disk.remove(&source_key(url)).await;
        if let Ok(parsed) = url::Url::parse(url) {
            self.0.fetcher.report_undecodable(&parsed, error);
        }
    }

    /// The upstream copy of `url`, honouring TTL, grace, negative caching and stale-if-error.
    pub(super) async fn source(&self, url: &str) -> Option<SourceCopy> {
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
    pub(super) async fn disk_entry(&self, key: &str) -> Option<DiskEntry> {
        if let Some(entry) = self.0.disk.peek(key) {
            return Some(entry);
        }
        if self.0.disk.is_rebuilt() {
            return None;
        }
        self.0.disk.get(key).await.map(|(_, entry)| entry)
    }

    /// Fetch `url` once for all concurrent callers, store it, and return the copy.
    pub(super) async fn fetch_shared(
        &self,
        url: &str,
        validators: Option<Validators>,
    ) -> FetchResult {
        let key = source_key(url);
        let generation = self.0.copy_generations.current(&*key);
        let this = self.clone();
        let url = url.to_owned();
        let flight_key = (key.clone(), generation);
        self.0
            .fetches
            .run(flight_key, move || async move {
                let result = this.fetch_and_store(key.clone(), url, validators).await;
                // Purged while in flight: what was stored is not the state after the purge.
                // (Stored first, checked second; the purge bumps first, removes second: one of
                // the two removes it.)
                if !this.0.copy_generations.is_current(&*key, generation) {
                    this.0.disk.remove(&key).await;
                }
                result
            })
            .await
            .unwrap_or_else(|| {
                Err(FetchFailure::Failed(Arc::new(UpstreamError::Network(
                    "task failed".into(),
                ))))
            })
    }

    pub(super) async fn fetch_and_store(
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
                    content_type: fetched.kind.content_type().to_owned(),
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
    pub(super) fn refresh_in_background(&self, key: Arc<str>) {
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
                .invalidate_where(move |_, r| r.value.source_key.as_deref() == Some(&*key));
        });
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
}

/// Disk key of an upstream copy: `src:` + SHA-256 of the URL.
pub(super) fn source_key(url: &str) -> Arc<str> {
    Arc::from(format!(
        "src:{}",
        hex::encode(Sha256::digest(url.as_bytes()))
    ))
}

/// The version fingerprint of an upstream copy: the start of its content digest.
pub(super) fn version_of(entry: &DiskEntry) -> Arc<str> {
    Arc::from(&entry.digest()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_copy_is_keyed_by_a_digest_of_its_url_never_the_url_itself() {
        let key = source_key("https://dev.azure.com/org/_apis/avatar?token=secret");
        assert!(key.starts_with("src:"));
        assert_eq!(key.len(), 4 + 64);
        assert!(!key.contains("secret"));
        assert_ne!(
            key,
            source_key("https://dev.azure.com/org/_apis/avatar?token=other")
        );
    }
}
