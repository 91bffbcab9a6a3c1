//! Demo tokens: short-lived HS256 JWTs for demo users, minted only in demo mode
//! (`POST /demo/token`). They are signed with the same secret the [`super::jwt::JwtVerifier`]
//! checks, and carry the configured `iss`/`aud`, so they pass the ordinary verification.
//!
//! Demo users live in their own namespace: every subject starts with [`DEMO_PREFIX`], so a demo
//! token can never act as a real user of the identity provider.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// Prefix of every demo user id.
pub const DEMO_PREFIX: &str = "demo-";

/// Longest demo name (after the prefix), in characters.
pub const MAX_DEMO_NAME: usize = 40;

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The requested name is not 1..=40 letters, digits, `-`, `_` or `.`.
    #[error("a demo name has 1 to {MAX_DEMO_NAME} letters, digits, '-', '_' or '.'")]
    InvalidName,
    /// The signing library failed (it does not for HS256 with a byte secret).
    #[error("cannot sign the token: {0}")]
    Signing(String),
}

/// A minted token.
#[derive(Debug, Clone)]
pub struct Minted {
    /// The compact JWT.
    pub token: String,
    /// Its subject (`demo-<name>`).
    pub user_id: String,
    /// Its `exp`, Unix seconds.
    pub expires_at: i64,
}

/// Mints demo tokens with the service's HS256 secret.
pub struct TokenMinter {
    key: EncodingKey,
    ttl: Duration,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenMinter")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenMinter {
    /// A minter signing with `secret` (the HS256 verification secret); tokens live `ttl` and
    /// carry `issuer`/`audience` when the verifier checks them.
    pub fn new(
        secret: &[u8],
        ttl: Duration,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            ttl,
            issuer: issuer.filter(|s| !s.is_empty()),
            audience: audience.filter(|s| !s.is_empty()),
        }
    }

    /// How long a minted token lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `demo-<name>` (a random name when `None`), issued at `now` (Unix seconds).
    pub fn mint(&self, name: Option<&str>, now: i64) -> Result<Minted, MintError> {
        let name = match name.map(str::trim).filter(|n| !n.is_empty()) {
            Some(name) if valid_name(name) => name.to_owned(),
            Some(_) => return Err(MintError::InvalidName),
            None => hex::encode(rand::random::<[u8; 5]>()),
        };
        let user_id = format!("{DEMO_PREFIX}{name}");
        let expires_at = now.saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX));
        let mut claims = json!({"sub": user_id, "iat": now, "exp": expires_at, "demo": true});
        if let Some(iss) = &self.issuer {
            claims["iss"] = json!(iss);
        }
        if let Some(aud) = &self.audience {
            claims["aud"] = json!(aud);
        }
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|e| MintError::Signing(e.to_string()))?;
        Ok(Minted {
            token,
            user_id,
            expires_at,
        })
    }
}

fn valid_name(name: &str) -> bool {
    name.chars().count() <= MAX_DEMO_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::{JwtKey, JwtSettings, JwtVerifier};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn minted_tokens_pass_the_verifier_with_issuer_and_audience_until_they_expire() {
        let minter = TokenMinter::new(
            SECRET,
            Duration::from_secs(900),
            Some("iss-x".into()),
            Some("aud-y".into()),
        );
        let mut settings = JwtSettings::new(JwtKey::Hs256(SECRET.to_vec()));
        settings.issuer = Some("iss-x".into());
        settings.audience = Some("aud-y".into());
        settings.leeway_secs = 0;
        let verifier = JwtVerifier::new(settings).expect("verifier");
        let minted = minter.mint(Some("ada"), 1_000).expect("mints");
        assert_eq!(minted.user_id, "demo-ada");
        assert_eq!(minted.expires_at, 1_900);
        let claims = verifier.verify_at(&minted.token, 1_899).expect("valid");
        assert_eq!(claims.sub, "demo-ada");
        assert!(verifier.verify_at(&minted.token, 1_900).is_err());
    }

    #[test]
    fn names_are_checked_and_a_missing_name_gets_a_random_one() {
        let minter = TokenMinter::new(SECRET, Duration::from_secs(60), None, None);
        assert!(matches!(
            minter.mint(Some("a b"), 0),
            Err(MintError::InvalidName)
        ));
        assert!(matches!(
            minter.mint(Some(&"x".repeat(41)), 0),
            Err(MintError::InvalidName)
        ));
        let a = minter.mint(None, 0).expect("mints");
        let b = minter.mint(Some("  "), 0).expect("mints");
        assert!(a.user_id.starts_with(DEMO_PREFIX) && a.user_id.len() == DEMO_PREFIX.len() + 10);
        assert_ne!(a.user_id, b.user_id);
    }
}
