//! The HTTP edge: the only layer that knows axum, status codes and headers.
//!
//! - [`state`]: the shared state handlers receive ([`AppState`]).
//! - [`extract`]: who is calling: the JWT user and the service caller.
//! - [`error`]: [`ApiError`], the JSON error body, its `From` conversions from each service's
//!   error, and the layer that logs each failure once.
//! - [`routes`]: one file per resource and the router assembly with its middleware.
//! - [`limits`]: per-client rate limits of `/avatar` work and of the JSON API.
//! - [`streams`]: per-user caps and ends (token expiry, shutdown) of event streams.
//! - [`json_errors`]: every error response the router makes leaves in the JSON error shape.

pub mod error;
pub mod extract;
pub mod json_errors;
pub mod limits;
pub mod routes;
pub mod state;
pub mod streams;

pub use error::{ApiError, ApiResult};
pub use state::{App, AppState, Metrics};
