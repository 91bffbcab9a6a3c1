//! A response ready to serve, as plain data: bytes plus every value the HTTP edge turns into a
//! header, computed once when it enters the memory tier, so a hit only clones
//! reference-counted handles.

use std::sync::Arc;

use bytes::Bytes;

use super::request::{DefaultChoice, FormatChoice};
use crate::cache::memory::Weighted;
use crate::clock::Millis;

/// Memory-tier key: everything that changes the bytes served.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RenditionKey {
    /// A well-formed user key, or empty for every malformed one: they all get the same default
    /// image, so they share its entries instead of filling the memory tier with request text
    /// (build with [`RenditionKey::new`]).
    pub key: String,
    /// Snapped size.
    pub size: u32,
    /// Output format choice.
    pub format: FormatChoice,
    /// Default when there is no avatar.
    pub default: DefaultChoice,
    /// `f=y`.
    pub force_default: bool,
}

impl RenditionKey {
    /// The key of a request for `raw_key`. A malformed key (wrong length or alphabet, or
    /// longer than any key: it is judged before it is copied) becomes the shared empty key.
    pub fn new(
        raw_key: &str,
        size: u32,
        format: FormatChoice,
        default: DefaultChoice,
        force_default: bool,
    ) -> Self {
        let key = crate::keys::UserKey::parse(raw_key)
            .map(|k| k.as_str().to_owned())
            .unwrap_or_default();
        Self {
            key,
            size,
            format,
            default,
            force_default,
        }
    }
}

/// Where the image came from (`X-Avatar-Source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// The user's upload.
    Upload,
    /// The upstream identity provider.
    Upstream,
    /// Generated.
    Default,
}

impl SourceKind {
    /// Header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Upstream => "upstream",
            Self::Default => "default",
        }
    }
}

/// How this response was obtained (`X-Cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Memory tier, fresh.
    HitMemory,
    /// Built from the disk tier.
    HitDisk,
    /// Fetched or generated now.
    Miss,
    /// Served past its TTL (refresh running in the background, or the upstream failed).
    Stale,
    /// The upstream confirmed the cached copy just now (304).
    Revalidated,
}

impl CacheStatus {
    /// Header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HitMemory => "hit-memory",
            Self::HitDisk => "hit-disk",
            Self::Miss => "miss",
            Self::Stale => "stale",
            Self::Revalidated => "revalidated",
        }
    }
}

/// A served image (or the `d=404` answer), with its freshness.
#[derive(Debug)]
pub struct Rendition {
    /// An image (200), or `false` for the `d=404` answer without an avatar (404).
    pub found: bool,
    /// Body.
    pub bytes: Bytes,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Strong `ETag` of the bytes, quoted (RFC 9110 §8.8.3).
    pub etag: Arc<str>,
    /// `Last-Modified` as an HTTP date (RFC 9110 §5.6.7), where known.
    pub last_modified: Option<Arc<str>>,
    /// `X-Avatar-Source`.
    pub source: SourceKind,
    /// Version fingerprint (`?v=`), where known.
    pub version: Option<Arc<str>>,
    /// Disk key of the upstream copy it derives from (for invalidation after a refresh).
    pub source_key: Option<Arc<str>>,
    /// Until then, serve from memory as fresh.
    pub fresh_until: Millis,
    /// Until then, serve stale while refreshing.
    pub stale_until: Millis,
}

impl Rendition {
    /// A generated default image (identicon, silhouette, initials, blank), fresh until
    /// `fresh_until` and never served stale past it.
    pub fn generated(encoded: crate::imaging::Encoded, fresh_until: Millis) -> Self {
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&encoded.bytes));
        Self {
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
        }
    }
}

impl Weighted for Rendition {
    fn weight(&self) -> u32 {
        // Payload plus a fixed estimate of the struct, key and header values.
        u32::try_from(self.bytes.len())
            .unwrap_or(u32::MAX)
            .saturating_add(512)
    }
}

/// Strong ETag (quoted) from a hex digest of the bytes.
pub fn etag_from_digest(hex_digest: &str) -> Arc<str> {
    let short = &hex_digest[..hex_digest.len().min(32)];
    Arc::from(format!("\"{short}\""))
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison, as RFC 9110 asks for it).
pub fn etag_matches(if_none_match: &[u8], etag: &str) -> bool {
    let ours = etag.as_bytes();
    if_none_match
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .any(|t| t == b"*" || t == ours || t.strip_prefix(b"W/") == Some(ours))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists_are_understood() {
        let etag = etag_from_digest("abcdef0123456789abcdef0123456789ffff");
        assert_eq!(&*etag, "\"abcdef0123456789abcdef0123456789\"");
        assert!(etag_matches(b"\"abcdef0123456789abcdef0123456789\"", &etag));
        assert!(etag_matches(
            b"\"x\", W/\"abcdef0123456789abcdef0123456789\"",
            &etag
        ));
        assert!(etag_matches(b"*", &etag));
        assert!(!etag_matches(b"\"abc\"", &etag));
    }
}
