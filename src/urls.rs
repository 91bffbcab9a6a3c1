//! Every public URL the service hands out, built in one place from `AVATAR_PUBLIC_BASE_URL`.

use std::sync::Arc;

use crate::ids::{JobId, UploadId};
use crate::imaging::OutputFormat;
use crate::keys::UserKey;

/// Builds public URLs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PublicUrls {
    /// The base, without a trailing slash.
    base: Arc<str>,
}

impl PublicUrls {
    /// URLs under `base` (a trailing slash is dropped).
    pub fn new(base: &str) -> Self {
        Self {
            base: Arc::from(base.trim_end_matches('/')),
        }
    }

    /// The base, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A key's avatar, with `?v=` when the version is known.
    pub fn avatar(&self, key: &UserKey, version: Option<&str>) -> String {
        match version {
            Some(v) => format!("{}/avatar/{key}?v={v}", self.base),
            None => format!("{}/avatar/{key}", self.base),
        }
    }

    /// A key's avatar at one size and version.
    pub fn avatar_sized(&self, key: &UserKey, size: u32, version: &str) -> String {
        format!("{}/avatar/{key}?s={size}&v={version}", self.base)
    }

    /// A key's avatar in one format, size and version.
    pub fn avatar_file(
        &self,
        key: &UserKey,
        format: OutputFormat,
        size: u32,
        version: &str,
    ) -> String {
        format!(
            "{}/avatar/{key}.{}?s={size}&v={version}",
            self.base,
            format.extension()
        )
    }

    /// The default image, for records without a usable id.
    pub fn anonymous_avatar(&self) -> String {
        format!("{}/avatar/anonymous", self.base)
    }

    /// A job's status.
    pub fn job(&self, job_id: &JobId) -> String {
        format!("{}/v1/jobs/{job_id}", self.base)
    }

    /// The user's event stream (WebSocket scheme).
    pub fn events(&self) -> String {
        format!("{}/v1/events", self.base.replacen("http", "ws", 1))
    }

    /// The signed upload URL of a grant (`query` is the signature's query string).
    pub fn upload(&self, upload_id: &UploadId, query: &str) -> String {
        format!("{}/v1/uploads/{upload_id}?{query}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_share_one_base_without_a_double_slash() {
        let urls = PublicUrls::new("https://avatars.example/");
        let key = UserKey::parse(&"b".repeat(32)).expect("key");
        assert_eq!(
            urls.avatar(&key, Some("v9")),
            format!("https://avatars.example/avatar/{key}?v=v9")
        );
        assert_eq!(urls.events(), "wss://avatars.example/v1/events");
        assert_eq!(
            urls.avatar_file(&key, OutputFormat::Png, 64, "v9"),
            format!("https://avatars.example/avatar/{key}.png?s=64&v=v9")
        );
    }
}
