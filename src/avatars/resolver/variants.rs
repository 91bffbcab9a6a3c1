//! Derived variants: a source image at a served size and format, rendered once in the image
//! pool and kept on the disk tier under the source's digest, so identical pictures share entries.

use super::*;

impl Avatars {
    pub(super) async fn upstream_variant(
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
    pub(super) async fn variant(
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
}

/// Where a variant's source bytes are.
pub(super) enum SourceBytes {
    /// In hand.
    Ready(Bytes),
    /// In the disk tier under this key.
    Disk(Arc<str>),
}

/// Disk key of a variant: source digest, size, format choice.
pub(super) fn variant_key(digest: &str, size: u32, format: FormatChoice) -> String {
    format!("var:{digest}:{size}:{}", format.label())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variant_key_names_its_source_digest_size_and_format() {
        let auto = variant_key("abc", 128, FormatChoice::Auto);
        let webp = variant_key(
            "abc",
            128,
            FormatChoice::Exactly(imaging::OutputFormat::Webp),
        );
        assert!(auto.starts_with("var:abc:128:"));
        assert_ne!(auto, webp);
        assert_ne!(auto, variant_key("abc", 64, FormatChoice::Auto));
    }
}
