//! The HTTP surface: every route and the middleware stack, in order.
//!
//! | route | who | module |
//! |---|---|---|
//! | `GET/HEAD /avatar/{key}[.png/.jpg/.webp]` | `<img>` tags, no auth | [`avatars`] |
//! | `POST /v1/identities/rewrite`, `PUT /v1/identities/{user_id}`, `DELETE /v1/cache/{key}` | backends, API key | [`identities`] |
//! | `POST /v1/uploads`, `PUT /v1/uploads/{id}`, `POST/DELETE /v1/avatar`, `GET /v1/jobs/{id}`, `POST /v1/jobs/{id}/retry` | users, JWT | [`uploads`] |
//! | `GET /v1/events` (WebSocket / SSE) | users, JWT | [`events`] |
//! | `GET /healthz`, `/readyz`, `/metrics`, `/v1/limits` | operators, clients | [`ops`] |
//! | `GET /demo/`, `POST /demo/token` (demo mode only) | people trying the service | [`demo`] |

pub mod avatars;
pub mod demo;
pub mod events;
pub mod identities;
pub mod ops;
pub mod server;
pub mod uploads;

use axum::Router;
use axum::http::{HeaderValue, Method, StatusCode, header};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use super::error::{ApiError, log_errors};
use super::json_errors::shape_errors;
use super::limits::limit_api;
use super::state::AppState;

/// The whole application router (without the outer middleware; see [`serve`]).
pub fn router(state: AppState) -> Router {
    let timeout = TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        state.settings.server.request_timeout,
    );
    let max_upload = usize::try_from(state.settings.uploads.max_bytes).unwrap_or(usize::MAX);
    // The JSON API counts each client's requests (`AVATAR_RATE_LIMIT_API_*`); `/avatar` counts
    // only its misses, in its handler.
    let api_limit = axum::middleware::from_fn_with_state(state.clone(), limit_api);
    let origins = &state.settings.uploads.cors_origins;
    let user_routes = uploads::router(max_upload)
        .layer(api_limit.clone())
        .layer(cors(origins))
        .layer(timeout);
    let service_routes = identities::router(state.settings.server.rewrite_max_bytes)
        .layer(api_limit)
        .layer(timeout);
    // The page and its token minting exist only in demo mode; otherwise `/demo/…` is a 404.
    let demo = if state.demo.is_some() {
        demo::router().layer(timeout)
    } else {
        Router::new()
    };
    Router::new()
        // No timer here: a memory hit must not pay for one. The resolver bounds its slow path.
        .merge(avatars::router())
        .merge(demo)
        .merge(service_routes)
        .merge(user_routes)
        // Streams outlive any request timeout; SSE answers CORS like the upload routes.
        .merge(events::router().layer(cors(origins)))
        .merge(ops::router().layer(timeout))
        .fallback(|| async { ApiError::not_found("route") })
        .with_state(state)
        // Outermost: axum's own rejections, 405s and timeouts leave as JSON errors too.
        .layer(axum::middleware::from_fn(shape_errors))
}

/// Serve the router until `shutdown`, wrapped once (not per route) in the outer middleware:
/// panics become 500s, credentials never reach logs, spans carry paths but never query strings
/// (`access_token`, upload signatures). Connections are bounded by [`server`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = tower::ServiceBuilder::new()
        .map_response(|r: axum::http::Response<_>| r.map(axum::body::Body::new))
        // Outside everything that can fail, panics included: each error response logged once.
        .layer(axum::middleware::from_fn(log_errors))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("handler panicked", &"panic").into_response_owned()
        }))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
        ]))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(span_without_query)
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
        .service(router(state.clone()));
    let limits = server::ConnectionLimits {
        header_read_timeout: state.settings.server.header_read_timeout,
        max_connections: state.settings.server.max_connections,
        shutdown_timeout: state.settings.server.shutdown_timeout,
    };
    server::serve_connections(listener, service, limits, shutdown).await
}

/// The request span: method and path, never the query (it carries `access_token` for event
/// streams and `sig` for signed uploads) nor headers (credentials).
fn span_without_query<B>(request: &axum::http::Request<B>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        version = ?request.version(),
    )
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
