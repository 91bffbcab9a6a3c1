//! User authentication: a JWT whose `sub` is the user id, verified with the configured key and
//! algorithm (pinned), turned into the user's public key.

pub mod jwt;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::config::AuthSettings;
use crate::error::ApiError;
use crate::keys::UserKey;

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct User {
    /// The JWT `sub`.
    pub id: String,
    /// Its public key (same HMAC as the identity API, so uploads override upstream avatars).
    pub key: UserKey,
}

/// Build the verifier from settings: `None` when user authentication is not configured.
pub fn verifier(s: &AuthSettings) -> Result<Option<jwt::JwtVerifier>, String> {
    let pem = if !s.jwt_public_key.trim().is_empty() {
        Some(s.jwt_public_key.as_bytes().to_vec())
    } else if !s.jwt_public_key_file.trim().is_empty() {
        Some(
            std::fs::read(s.jwt_public_key_file.trim())
                .map_err(|e| format!("cannot read auth.jwt_public_key_file: {e}"))?,
        )
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

impl FromRequestParts<AppState> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(verifier) = &state.jwt else {
            return Err(ApiError::unauthorized(
                "user authentication is not configured on this service",
            ));
        };
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(jwt::bearer)
            .map(str::to_owned);
        // Browsers cannot set headers on WebSocket/EventSource requests: there, and only there,
        // the token may come as `access_token`.
        let token = header.or_else(|| {
            (parts.uri.path() == "/v1/events")
                .then(|| {
                    url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                        .find(|(k, _)| k == "access_token")
                        .map(|(_, v)| v.into_owned())
                })
                .flatten()
        });
        let token = token.ok_or_else(|| ApiError::unauthorized("a bearer token is required"))?;
        let now = state.clock.now_millis() / 1000;
        let claims = verifier
            .verify_at(&token, now)
            .map_err(|e| ApiError::unauthorized(e.to_string()))?;
        Ok(User {
            key: state.keys.key_for(&claims.sub),
            id: claims.sub,
        })
    }
}
