//! `GET|HEAD /avatar/{key}` and `/avatar/{key}.{png|jpg|webp}`: what `<img>` tags load.
//!
//! Never a 400 and never a broken image: a bad query falls back to defaults, an unknown or
//! malformed key gets the default image (404 only with `d=404`). A client over its rate limit
//! (`AVATAR_RATE_LIMIT_AVATAR_*`, counted only for requests that would render or fetch) gets the
//! pre-rendered default with `max-age=60`.

use std::time::Instant;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::avatars::fallback;
use crate::avatars::rendition::etag_matches;
use crate::avatars::request::{negotiate, split_extension};
use crate::avatars::{AvatarQuery, CacheStatus, Rendition, RenditionKey, SourceKind};
use crate::http::limits::{over_limit, peer, retry_after_seconds};
use crate::http::{ApiError, AppState};

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/avatar/{file}", get(avatar))
}

const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
const REVALIDATE: HeaderValue =
    HeaderValue::from_static("public, max-age=300, stale-while-revalidate=3600");
const SHORT: HeaderValue = HeaderValue::from_static("public, max-age=60");
const CSP: HeaderValue = HeaderValue::from_static("default-src 'none'; sandbox");

async fn avatar(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    // The request itself, so headers are read in place rather than cloned into a `HeaderMap`.
    request: Request,
) -> Response {
    let headers = request.headers();
    let started = Instant::now();
    let file = path.map(|Path(p)| p).unwrap_or_default();
    let (key, extension) = split_extension(&file);
    let settings = state.avatars.settings();
    let query = AvatarQuery::parse(
        query.as_deref(),
        &settings.sizes,
        settings.default_size,
        settings.default,
    );
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (format, negotiated) = negotiate(extension, accept);
    let rkey = || RenditionKey::new(key, query.size, format, query.default, query.force_default);
    // A memory hit is never limited: only a request that would render or fetch is counted.
    let response = if let Some((rendition, status)) = state.avatars.memory_hit(&rkey()) {
        respond(&rendition, status, &query, negotiated, headers)
    } else if let Some(wait) = over_limit(&state.limits.avatar, peer(&request)) {
        rate_limited(&state, query.size, wait, &query, negotiated, headers)
    } else {
        resolve(&state, rkey(), &query, negotiated, headers).await
    };
    state
        .metrics
        .serve_latency
        .record(started.elapsed().as_secs_f64());
    response
}

/// A client over its limit still gets an image: the default pre-rendered at start-up (no work),
/// for a short while (`max-age=60`), with `Retry-After`.
fn rate_limited(
    state: &AppState,
    size: u32,
    wait: std::time::Duration,
    query: &AvatarQuery,
    negotiated: bool,
    headers: &HeaderMap,
) -> Response {
    metrics::counter!("avatar_rate_limited_total", "path" => "avatar").increment(1);
    let seconds = retry_after_seconds(wait);
    let Some(rendition) = state.avatars.fallback().for_size(size) else {
        return ApiError::rate_limited(seconds).into_response();
    };
    let mut response = respond(&rendition, CacheStatus::Miss, query, negotiated, headers);
    response.headers_mut().insert(header::CACHE_CONTROL, SHORT);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// The slow path: resolve through the caches, the upstream or the defaults; whatever fails, an
/// image (issue 7).
async fn resolve(
    state: &AppState,
    rkey: RenditionKey,
    query: &AvatarQuery,
    negotiated: bool,
    headers: &HeaderMap,
) -> Response {
    let rkey = || rkey.clone();
    match state.avatars.serve(rkey()).await {
        Ok((rendition, status)) => respond(&rendition, status, query, negotiated, headers),
        // -- issue 7: an <img> gets an image whatever happened inside (d=404 keeps its 404) --
        Err(e) => {
            let budget = state.settings.server.fallback_timeout;
            match fallback::rescue(&state.avatars, &rkey(), budget).await {
                Some(rendition) => {
                    // Counted, not logged per request: upstream trouble has its own warnings.
                    metrics::counter!("avatar_fallback_served_total").increment(1);
                    tracing::debug!(error = %e, "avatar not resolved; serving a default");
                    let mut response =
                        respond(&rendition, CacheStatus::Miss, query, negotiated, headers);
                    response.headers_mut().insert(header::CACHE_CONTROL, SHORT);
                    response
                }
                None => {
                    ApiError::unavailable("avatar-unavailable", "the avatar could not be produced")
                        .caused_by(&e)
                        .into_response()
                }
            }
        }
    }
}

fn respond(
    r: &Rendition,
    status: CacheStatus,
    query: &AvatarQuery,
    negotiated: bool,
    request: &HeaderMap,
) -> Response {
    let not_modified = r.found
        && request
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| etag_matches(v.as_bytes(), &r.etag));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let status = if r.found {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        (status, r.bytes.clone()).into_response()
    };
    let h = response.headers_mut();
    if !not_modified {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(r.content_type),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(r.bytes.len()));
    }
    if let Ok(etag) = HeaderValue::from_str(&r.etag) {
        h.insert(header::ETAG, etag);
    }
    if let Some(lm) = r
        .last_modified
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        h.insert(header::LAST_MODIFIED, lm);
    }
    let current = matches!((&query.version, &r.version), (Some(asked), Some(have)) if asked.as_str() == &**have);
    // A generated default stands in for an avatar that is missing or failing right now (issue 7):
    // browsers ask again soon, so the real one shows once the upstream recovers.
    let cache_control = if !r.found || r.source == SourceKind::Default {
        SHORT
    } else if current {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    h.insert(header::CACHE_CONTROL, cache_control);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, CSP);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    if negotiated {
        h.insert(header::VARY, HeaderValue::from_static("Accept"));
    }
    h.insert(
        "x-avatar-source",
        HeaderValue::from_static(r.source.as_str()),
    );
    h.insert("x-cache", HeaderValue::from_static(status.as_str()));
    response
}
