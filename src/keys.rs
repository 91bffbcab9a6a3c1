//! Public keys: `hex(HMAC-SHA256(key_secret, user_id))[..32]`.
//!
//! Opaque, stable and unguessable without the secret; the same user id arriving as a JWT `sub`
//! or as an identity record's `id` yields the same key, so an upload overrides that user's
//! upstream avatar. When no secret is configured one is generated once and kept (0600) in the
//! cache directory.

use std::fmt;
use std::io::Write;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

/// A validated public key: 32 lowercase hex characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserKey(String);

impl UserKey {
    /// Length of a key in hex characters.
    pub const LEN: usize = 32;

    /// Accept a key from a URL: exactly 32 lowercase hex characters, nothing else.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = raw.len() == Self::LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Self(raw.to_owned()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserKey({})", self.0)
    }
}

/// Derives public keys from user ids.
#[derive(Clone)]
pub struct KeyDeriver {
    mac: Hmac<Sha256>,
}

impl KeyDeriver {
    /// A deriver for one secret.
    pub fn new(secret: &[u8]) -> Self {
        // HMAC accepts keys of any length; new_from_slice cannot fail for it.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Self { mac }
    }

    /// The public key of a user id.
    pub fn key_for(&self, user_id: &str) -> UserKey {
        let mut mac = self.mac.clone();
        mac.update(user_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        UserKey(hex::encode(&digest[..UserKey::LEN / 2]))
    }

    /// HMAC-SHA256 of arbitrary data with the key secret (signatures of upload URLs and the like).
    pub fn sign(&self, domain: &str, data: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

/// The key secret in force without creating one: the configured secret, else the one kept in
/// `{dir}/key_secret`; `None` when neither exists (a service that never started there).
///
/// # Errors
/// Reading `key_secret` failed for another reason than its absence.
pub fn load_secret(configured: &Secret, dir: &Path) -> std::io::Result<Option<Vec<u8>>> {
    if !configured.is_empty() {
        return Ok(Some(configured.expose().as_bytes().to_vec()));
    }
    match std::fs::read_to_string(dir.join("key_secret")) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().as_bytes().to_vec())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The configured secret, or the one kept in `{dir}/key_secret`, generated on first start.
pub fn load_or_create_secret(configured: &Secret, dir: &Path) -> std::io::Result<Vec<u8>> {
    if let Some(secret) = load_secret(configured, dir)? {
        return Ok(secret);
    }
    let path = dir.join("key_secret");
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let tmp = dir.join("key_secret.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(secret.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_opaque_and_depend_on_the_secret() {
        let a = KeyDeriver::new(b"one");
        let b = KeyDeriver::new(b"two");
        assert_eq!(a.key_for("alice"), a.key_for("alice"));
        assert_ne!(a.key_for("alice"), a.key_for("bob"));
        assert_ne!(a.key_for("alice"), b.key_for("alice"));
        let key = a.key_for("alice");
        assert_eq!(key.as_str().len(), 32);
        assert!(!key.as_str().contains("alice"));
        assert_eq!(UserKey::parse(key.as_str()), Some(key));
    }

    #[test]
    fn only_exact_lowercase_hex_keys_parse() {
        assert!(UserKey::parse("0123456789abcdef0123456789abcdef").is_some());
        for bad in [
            "",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "../../../../etc/passwd0123456789a",
            "0123456789abcdef0123456789abcdeg",
        ] {
            assert!(UserKey::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_generated_secret_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create_secret(&Secret::default(), dir.path()).expect("created");
        let again = load_or_create_secret(&Secret::default(), dir.path()).expect("read");
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("key_secret"))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let configured = load_or_create_secret(&Secret::new("x"), dir.path()).expect("ok");
        assert_eq!(configured, b"x");
    }
}
