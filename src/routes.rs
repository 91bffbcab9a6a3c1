//! The HTTP surface: every route and the middleware stack, in order.
//!
//! | route | who | module |
//! |---|---|---|
//! | `GET/HEAD /avatar/{key}[.png/.jpg/.webp]` | `<img>` tags, no auth | [`avatars`] |
//! | `POST /v1/identities/rewrite`, `PUT /v1/identities/{user_id}`, `DELETE /v1/cache/{key}` | backends, API key | [`identities`] |
//! | `GET /healthz`, `/readyz`, `/metrics`, `/v1/limits` | operators, clients | [`ops`] |

pub mod avatars;
pub mod identities;
pub mod ops;

use axum::Router;
use axum::http::{StatusCode, header};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::app::AppState;
use crate::error::ApiError;

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let timeout = state.settings.server.request_timeout;
    Router::new()
        .merge(avatars::router())
        .merge(identities::router())
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

impl ApiError {
    /// For layers that need a plain response.
    pub fn into_response_owned(self) -> axum::response::Response {
        axum::response::IntoResponse::into_response(self)
    }
}
