//! Every path of the durable blob store, in one place.
//!
//! ```text
//! tmp/{upload_id}                           an original waiting for processing (swept)
//! avatar/{key}/{version}/{size}.{ext}       a processed variant of a user's upload
//! ```

use crate::ids::UploadId;
use crate::imaging::OutputFormat;
use crate::keys::UserKey;

/// The folder where originals wait for processing (swept after `AVATAR_TEMP_RETENTION`).
pub const TEMP_PREFIX: &str = "tmp";

/// Where an uploaded original waits for processing.
pub fn original(upload_id: &UploadId) -> String {
    format!("{TEMP_PREFIX}/{upload_id}")
}

/// The folder of one version of a user's upload (deleted as a whole when replaced).
pub fn avatar_version(key: &UserKey, version: &str) -> String {
    format!("avatar/{key}/{version}")
}

/// One processed variant.
pub fn variant(key: &UserKey, version: &str, size: u32, format: OutputFormat) -> String {
    format!(
        "{}/{size}.{}",
        avatar_version(key, version),
        format.extension()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variant_lives_in_its_version_folder() {
        let key = UserKey::parse(&"a".repeat(32)).expect("key");
        let path = variant(&key, "v1", 128, OutputFormat::Webp);
        assert_eq!(path, format!("avatar/{key}/v1/128.webp"));
        assert!(path.starts_with(&avatar_version(&key, "v1")));
    }
}
