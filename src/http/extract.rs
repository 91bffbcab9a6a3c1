//! Who is calling: the extractors that authenticate a request before a handler runs.
//!
//! - [`User`] (from `crate::auth`): a JWT whose `sub` is the user id, from `Authorization:
//!   Bearer`, or `access_token` on `/v1/events` only (browsers cannot set headers there).
//! - [`ServiceCaller`]: a backend service presenting one of `AVATAR_API_KEYS`.
//!
//! Both read `Authorization` through [`jwt::bearer`]: the scheme name is case-insensitive.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::state::AppState;
use crate::auth::{User, jwt};

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
        let now = crate::clock::unix_seconds(state.clock.now_millis());
        let claims = verifier
            .verify_at(&token, now)
            .map_err(|e| ApiError::unauthorized(e.to_string()))?;
        Ok(User {
            key: state.keys.key_for(&claims.sub),
            id: claims.sub,
            expires_at: claims.exp,
        })
    }
}

/// A backend service, authenticated by one of `AVATAR_API_KEYS`.
pub struct ServiceCaller;

impl FromRequestParts<AppState> for ServiceCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme is case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER` too.
            .and_then(jwt::bearer)
            .ok_or_else(|| ApiError::unauthorized("a service API key is required"))?;
        // Compare digests in constant time, and look at every key, so timing reveals nothing.
        let presented = Sha256::digest(token.trim().as_bytes());
        let matched = state
            .api_key_digests
            .iter()
            .fold(subtle::Choice::from(0), |acc, k| {
                acc | k.ct_eq(presented.as_slice())
            });
        if bool::from(matched) {
            Ok(ServiceCaller)
        } else {
            Err(ApiError::unauthorized("invalid service API key"))
        }
    }
}
