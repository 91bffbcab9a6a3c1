//! Operations: liveness, readiness, Prometheus metrics, and the limits clients should know.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::http::AppState;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/limits", get(limits))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when every dependency answers; 503 naming the ones that do not.
async fn readyz(State(state): State<AppState>) -> Response {
    let mut failing = Vec::new();
    if let Err(e) = state.repo.health().await {
        tracing::warn!(error = %e, "readiness: metadata database failed");
        failing.push("database");
    }
    if let Err(e) = state.store.health().await {
        tracing::warn!(error = %e, "readiness: blob store failed");
        failing.push("store");
    }
    let disk = state.avatars.disk().clone();
    let writable = tokio::task::spawn_blocking(move || disk.check_writable()).await;
    if !matches!(writable, Ok(Ok(()))) {
        tracing::warn!("readiness: cache directory is not writable");
        failing.push("cache_dir");
    }
    if failing.is_empty() {
        Json(json!({"status": "ready", "disk_index_rebuilt": state.avatars.disk().is_rebuilt()}))
            .into_response()
    } else {
        let body = json!({
            "code": "not-ready",
            "message": format!("not ready: {} failing", failing.join(", ")),
            "user_message": crate::fault::TRY_LATER,
            "failing": failing,
        });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    state.publish_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.prometheus.render(),
    )
        .into_response()
}

async fn limits(State(state): State<AppState>) -> Json<serde_json::Value> {
    let s = &state.settings;
    Json(json!({
        "sizes": state.avatars.settings().sizes,
        "default_size": crate::avatars::request::snap(
            s.images.default_size,
            &state.avatars.settings().sizes
        ),
        "default_image": s.images.default_image,
        "max_size": state.avatars.settings().sizes.last(),
        "formats": ["jpg", "png", "webp"],
        "defaults": ["404", "identicon", "mp", "initials", "blank"],
        "max_upstream_image_bytes": s.images.max_image_bytes,
        "max_pixels": s.images.max_pixels,
        "max_identities_per_rewrite": s.server.rewrite_max_records,
        "uploads": {
            "max_bytes": s.uploads.max_bytes,
            "accepted_types": crate::uploads::ACCEPTED_TYPES,
            "url_ttl_seconds": s.uploads.url_ttl.as_secs(),
            "variant_sizes": s.uploads.variant_sizes,
            "uploads_per_user": s.uploads.grants_per_user,
            "uploads_per_user_window_seconds": s.uploads.grant_window.as_secs(),
            "max_pending_originals": s.uploads.max_pending_originals,
            "max_pending_original_bytes": s.uploads.max_pending_original_bytes,
            "max_pixels": s.images.max_pixels,
            "crop": "optional {x, y, width, height} in source pixels after EXIF orientation, inside the image, non-empty; default: centred square",
        },
    }))
}
