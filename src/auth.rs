//! User authentication: a JWT whose `sub` is the user id, verified with the configured key and
//! algorithm (pinned), turned into the user's public key. The HTTP extractor that reads the
//! token from a request lives at the edge (`http::extract`). In demo mode only, [`minter`] issues
//! short-lived tokens for demo users.

pub mod jwt;
pub mod minter;

use crate::config::AuthSettings;
use crate::keys::UserKey;

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct User {
    /// The JWT `sub`.
    pub id: String,
    /// Its public key (same HMAC as the identity API, so uploads override upstream avatars).
    pub key: UserKey,
    /// When the token that authenticated this request expires (`exp`), unix seconds.
    pub expires_at: i64,
}

/// Build the verifier from settings: `None` when user authentication is not configured.
pub fn verifier(s: &AuthSettings) -> Result<Option<jwt::JwtVerifier>, String> {
    let pem = if !s.jwt_public_key.trim().is_empty() {
        Some(s.jwt_public_key.as_bytes().to_vec())
    } else if !s.jwt_public_key_file.trim().is_empty() {
        Some(std::fs::read(s.jwt_public_key_file.trim()).map_err(|e| {
            format!("cannot read auth.jwt_public_key_file (AVATAR_JWT_PUBLIC_KEY_FILE): {e}")
        })?)
    } else {
        None
    };
    let secret = (!s.jwt_secret.is_empty()).then(|| s.jwt_secret.expose().as_bytes());
    if pem.is_none() && secret.is_none() {
        return Ok(None);
    }
    let key = jwt::JwtKey::from_config(Some(&s.jwt_algorithm), secret, pem)?;
    let mut settings = jwt::JwtSettings::new(key);
    settings.issuer = Some(s.jwt_issuer.trim().to_owned()).filter(|v| !v.is_empty());
    settings.audience = Some(s.jwt_audience.trim().to_owned()).filter(|v| !v.is_empty());
    jwt::JwtVerifier::new(settings).map(Some)
}
