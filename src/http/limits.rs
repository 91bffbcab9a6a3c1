//! Per-client rate limits at the HTTP edge ([`crate::ratelimit`] counts, this module answers).
//!
//! - `/avatar` asks [`EdgeLimits::avatar`] only for a request that would do work (a miss that
//!   renders or fetches); a limited `<img>` gets the pre-rendered default (see
//!   `routes::avatars`), never an error.
//! - The JSON API (identities, uploads, jobs) passes [`limit_api`]: past the limit, `429` with
//!   `Retry-After` and the JSON error shape.
//!
//! The client is the peer address ([`ConnectInfo<SocketAddr>`], set by the connection loop); a
//! request without one (an in-process call) is never limited.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::AppState;
use crate::config::RateLimitSettings;
use crate::ratelimit::{ClientLimiter, ClientQuota};

/// The limiters of each path class.
pub struct EdgeLimits {
    /// `/avatar` requests that render or fetch.
    pub avatar: ClientLimiter,
    /// JSON API requests.
    pub api: ClientLimiter,
}

impl EdgeLimits {
    /// Limiters as configured (`[rate_limits]`).
    pub fn new(settings: &RateLimitSettings) -> Self {
        let quota = |per_minute, burst| ClientQuota {
            per_minute,
            burst,
            max_clients: settings.max_clients,
        };
        Self {
            avatar: ClientLimiter::new(quota(settings.avatar_per_minute, settings.avatar_burst)),
            api: ClientLimiter::new(quota(settings.api_per_minute, settings.api_burst)),
        }
    }

    /// Forget clients whose allowance is full again (run every minute).
    pub fn forget_idle(&self) {
        self.avatar.forget_idle();
        self.api.forget_idle();
    }
}

/// The peer address of a request, when the connection loop recorded one.
pub fn peer(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// Count `client` against `limiter`: how long it has to wait when it is over its limit.
pub fn over_limit(limiter: &ClientLimiter, client: Option<IpAddr>) -> Option<Duration> {
    client.and_then(|ip| limiter.check(ip).err())
}

/// Whole seconds a limited client is told to wait (`Retry-After`, RFC 9110 §10.2.3): at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

/// Middleware of the JSON API: `429 rate-limited` with `Retry-After` past the client's limit.
pub async fn limit_api(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match over_limit(&state.limits.api, peer(&request)) {
        Some(wait) => ApiError::rate_limited(retry_after_seconds(wait)).into_response(),
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_never_zero() {
        for (wait, secs) in [
            (Duration::ZERO, 1),
            (Duration::from_millis(1), 1),
            (Duration::from_secs(1), 1),
            (Duration::from_millis(1500), 2),
            (Duration::from_secs(30), 30),
        ] {
            assert_eq!(retry_after_seconds(wait), secs, "{wait:?}");
        }
    }
}
