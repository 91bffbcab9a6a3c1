//! Uploaded variants: the user's own picture from the blob store, exact when the job stored
//! that size and format, else derived from the largest stored variant.

use super::*;

impl Avatars {
    /// The user's upload at the requested size and format, if they have one.
    pub(super) async fn upload_rendition(
        &self,
        rkey: &RenditionKey,
        key: &UserKey,
    ) -> Option<(Rendition, CacheStatus)> {
        let upload = self.upload_of(key).await?;
        let wanted = |f: imaging::OutputFormat| match rkey.format {
            FormatChoice::Auto => f != imaging::OutputFormat::Webp,
            FormatChoice::Exactly(o) => f == o,
        };
        let exact = upload
            .variants
            .iter()
            .find(|v| v.size == rkey.size && wanted(v.format));
        let (bytes, content_type, status) = match exact {
            Some(v) => {
                let bytes = self.0.store.get(&v.path).await.ok()?;
                (bytes, v.format.content_type(), CacheStatus::HitDisk)
            }
            None => {
                // Other sizes and formats derive from the largest variant through the cache.
                let base = upload
                    .variants
                    .iter()
                    .filter(|v| v.format != imaging::OutputFormat::Webp)
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
                (bytes, cached_content_type(&entry.meta.content_type), status)
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

    pub(super) async fn upload_of(&self, key: &UserKey) -> Option<Arc<Upload>> {
        let generation = self.0.generations.current(key.as_str());
        if let Some((tag, found)) = self.0.uploads.get(key)
            && tag == generation
        {
            return found;
        }
        match self.0.repo.avatar(key).await {
            Ok(record) => {
                let found = record.map(|r| {
                    Arc::new(Upload {
                        version: r.version,
                        variants: r.variants,
                        updated_at: r.updated_at,
                    })
                });
                self.0
                    .uploads
                    .insert(key.clone(), (generation, found.clone()));
                found
            }
            Err(e) => {
                tracing::error!(error = %e, "upload lookup failed");
                None
            }
        }
    }
}

/// A user's current upload, as the resolver needs it.
#[derive(Debug)]
pub(super) struct Upload {
    pub(super) version: String,
    pub(super) variants: Vec<crate::repo::StoredVariant>,
    pub(super) updated_at: Millis,
}

/// The `Content-Type` of a cached variant, from the media type stored with it: one mapping,
/// the formats' own [`imaging::OutputFormat::content_type`].
pub(super) fn cached_content_type(stored: &str) -> &'static str {
    use imaging::OutputFormat as F;
    [F::Jpeg, F::Png, F::Webp]
        .into_iter()
        .find(|f| f.content_type() == stored)
        .map_or("application/octet-stream", F::content_type)
}
