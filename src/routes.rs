//! The HTTP surface: every route and the middleware stack, in order.
//!
//! | route | who | module |
//! |---|---|---|
//! | `GET/HEAD /avatar/{key}[.png/.jpg/.webp]` | `<img>` tags, no auth | [`avatars`] |
//! | `POST /v1/identities/rewrite`, `PUT /v1/identities/{user_id}`, `DELETE /v1/cache/{key}` | backends, API key | [`identities`] |
//! | `POST /v1/uploads`, `PUT /v1/uploads/{id}`, `POST/DELETE /v1/avatar`, `GET /v1/jobs/{id}` | users, JWT | [`uploads`] |
//! | `GET /v1/events` (WebSocket / SSE) | users, JWT | [`events`] |
//! | `GET /healthz`, `/readyz`, `/metrics`, `/v1/limits` | operators, clients | [`ops`] |

pub mod avatars;
pub mod events;
pub mod identities;
pub mod ops;
pub mod uploads;

use axum::Router;
use axum::http::{HeaderValue, Method, StatusCode, header};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::app::AppState;
use crate::error::ApiError;

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let timeout = state.settings.server.request_timeout;
    let max_upload = usize::try_from(state.settings.uploads.max_bytes).unwrap_or(usize::MAX);
    let user_routes = uploads::router(max_upload).layer(cors(&state.settings.uploads.cors_origins));
    Router::new()
        .merge(avatars::router())
        .merge(identities::router())
        .merge(user_routes)
        // Streams outlive the request timeout: it only bounds the time to the response head.
        .merge(events::router())
        .merge(ops::router())
        .fallback(|| async { ApiError::not_found("route") })
        .with_state(state)
        // Outermost last: panics become 500s, slow requests 408s, credentials never reach logs.
        .layer(
            TraceLayer::new_for_http()
                // Paths only: query strings may carry tokens (`access_token`, signatures).
                .make_span_with(
                    DefaultMakeSpan::new()
                        .level(Level::DEBUG)
                        .include_headers(false),
                )
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
        ]))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("handler panicked", &"panic").into_response_owned()
        }))
}

/// CORS for browser uploads from the configured origins (none configured: no CORS headers).
fn cors(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(std::time::Duration::from_secs(600));
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
            .collect();
        layer.allow_origin(AllowOrigin::list(list))
    }
}

impl ApiError {
    /// For layers that need a plain response.
    pub fn into_response_owned(self) -> axum::response::Response {
        axum::response::IntoResponse::into_response(self)
    }
}
