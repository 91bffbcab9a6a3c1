//! The HTTP edge: the only layer that knows axum, status codes and headers.
//!
//! - [`state`]: the shared state handlers receive ([`AppState`]).
//! - [`extract`]: who is calling: the JWT user and the service caller.
//! - [`error`]: [`ApiError`], the JSON error body, its `From` conversions from each service's
//!   error, and the layer that logs each failure once.
//! - [`routes`]: one file per resource and the router assembly with its middleware.

pub mod error;
pub mod extract;
pub mod routes;
pub mod state;

pub use error::{ApiError, ApiResult};
pub use state::{App, AppState, Metrics};
