//! The identity API for backend services (`Authorization: Bearer <service API key>`); the
//! registry itself is the [`crate::identities`] service.
//!
//! - `POST /v1/identities/rewrite`: register records and point their avatar fields at us.
//! - `PUT /v1/identities/{user_id}`: register one.
//! - `DELETE /v1/cache/{key}`: purge a key's cached upstream copies and variants.

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::extract::ServiceCaller;
use crate::http::{ApiError, ApiResult, AppState};
use crate::identities::Prefetch;
use crate::keys::UserKey;

/// Routes of this module; a rewrite body may have `max_body` bytes
/// (`AVATAR_REWRITE_MAX_BYTES`).
pub fn router(max_body: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/v1/identities/rewrite",
            post(rewrite).layer(DefaultBodyLimit::max(max_body)),
        )
        .route("/v1/identities/{user_id}", put(register_one))
        .route("/v1/cache/{key}", delete(purge))
}

#[derive(Deserialize)]
struct RewriteRequest {
    identities: Vec<Value>,
    #[serde(default)]
    prefetch: Prefetch,
}

async fn rewrite(
    _caller: ServiceCaller,
    State(state): State<AppState>,
    body: Result<Json<RewriteRequest>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(request) = body?;
    let done = state
        .identities
        .rewrite(request.identities, request.prefetch)
        .await?;
    Ok(Json(json!({
        "identities": done.identities,
        "rewritten": done.rewritten,
        "skipped": done.skipped,
    })))
}

#[derive(Deserialize)]
struct RegisterRequest {
    #[serde(default, alias = "avatarUrl")]
    avatar_url: Option<String>,
    #[serde(default, alias = "displayName")]
    display_name: Option<String>,
}

async fn register_one(
    _caller: ServiceCaller,
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(request) = body?;
    let (key, url) = state
        .identities
        .register_one(user_id, request.avatar_url.as_deref(), request.display_name)
        .await?;
    Ok(Json(json!({"key": key.as_str(), "avatar_url": url})))
}

async fn purge(
    _caller: ServiceCaller,
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<StatusCode> {
    let key = UserKey::parse(&key).ok_or_else(|| {
        ApiError::bad_request("invalid-key", "a key is 32 lowercase hex characters")
    })?;
    state.avatars.purge(&key).await?;
    Ok(StatusCode::NO_CONTENT)
}
