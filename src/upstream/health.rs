//! Per-upstream health: `Retry-After`, backoff after failures, and the memory of failed URLs.
//!
//! Before a request the fetcher asks [`Health::admit`]; while an upstream is throttled (it
//! answered `429`/`503`, for `Retry-After` or the default backoff) or known to be failing
//! (`failures_to_open` transient failures in a row: timeouts, connection errors, 5xx), every
//! fetch for it is refused at once with [`UpstreamError::CoolingDown`], without a network
//! request, so callers serve their stale copy (or the default image) immediately. A URL whose
//! last fetch failed, for any reason, is not asked again before its own backoff ends: a stale
//! copy viewed fifteen times makes one failed refresh, not fifteen.
//!
//! Deadlines come from the app's [`Clock`], so tests move time instead of sleeping. Backoff
//! doubles with each failure in a row, from `base` up to `max` (`Retry-After` is capped by `max`
//! too); any answer that is not a transient failure starts the count of failures again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::fetch::{FetchOutcome, UpstreamError};
use crate::clock::{Clock, Millis, millis};

/// How long to stay away after failures.
#[derive(Debug, Clone, Copy)]
pub struct BackoffPolicy {
    /// First backoff without `Retry-After` (`AVATAR_UPSTREAM_BACKOFF`).
    pub base: Duration,
    /// Longest backoff, and the cap of `Retry-After` (`AVATAR_UPSTREAM_MAX_RETRY_AFTER`).
    pub max: Duration,
    /// Transient failures in a row after which a whole upstream backs off
    /// (`AVATAR_UPSTREAM_FAILURES_BEFORE_BACKOFF`).
    pub failures_to_open: u32,
}

impl BackoffPolicy {
    /// Backoff after the `n`th failure in a row (n ≥ 1): `base · 2ⁿ⁻¹`, at most `max`.
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(20);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// What one upstream is going through.
#[derive(Debug, Default, Clone, Copy)]
struct UpstreamState {
    /// No request before this time.
    blocked_until: Millis,
    /// Transient failures in a row.
    failures: u32,
}

/// A URL whose last fetch failed.
#[derive(Debug, Clone, Copy)]
struct FailedUrl {
    retry_at: Millis,
    failures: u32,
}

/// How a fetch result counts.
enum Verdict {
    /// The upstream answered normally (any image, 304, 404): forget failures.
    Healthy,
    /// Throttled: back off the whole upstream, for `Retry-After` when given.
    Throttled(Option<Duration>),
    /// Timeouts, connection errors, 5xx: the upstream may be down.
    Transient,
    /// The upstream is up but this URL gives nothing usable (auth, not an image, 4xx, a redirect
    /// off the allow-list or to a refused address, ...).
    UrlOnly,
    /// Refused by our own backoff or slot limits: nothing learned.
    Nothing,
}

fn verdict(result: &Result<FetchOutcome, UpstreamError>) -> Verdict {
    match result {
        Ok(_) => Verdict::Healthy,
        Err(UpstreamError::Throttled(after)) => Verdict::Throttled(*after),
        Err(UpstreamError::Timeout | UpstreamError::Network(_)) => Verdict::Transient,
        Err(UpstreamError::Status(code)) if *code >= 500 => Verdict::Transient,
        // Our own limits: nothing was asked, nothing learned.
        Err(UpstreamError::CoolingDown | UpstreamError::NoSlot) => Verdict::Nothing,
        Err(_) => Verdict::UrlOnly,
    }
}

/// Health of every upstream, and the URLs that failed recently. Shared by all fetches.
pub struct Health {
    clock: Arc<dyn Clock>,
    policy: BackoffPolicy,
    /// Keyed by upstream name; a handful of entries.
    upstreams: Mutex<HashMap<String, UpstreamState>>,
    /// Bounded: a flood of distinct failing URLs evicts the oldest, it cannot grow memory.
    urls: moka::sync::Cache<Arc<str>, FailedUrl>,
}

impl Health {
    /// Empty state: every upstream admitted.
    pub fn new(clock: Arc<dyn Clock>, policy: BackoffPolicy) -> Self {
        Self {
            clock,
            policy,
            upstreams: Mutex::new(HashMap::new()),
            urls: moka::sync::Cache::builder().max_capacity(100_000).build(),
        }
    }

    /// `Ok` when a request for `url` on `upstream` may go out now;
    /// [`UpstreamError::CoolingDown`] while the upstream or the URL is backing off.
    pub fn admit(&self, upstream: &str, url: &str) -> Result<(), UpstreamError> {
        let now = self.clock.now_millis();
        let blocked = self
            .upstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(upstream)
            .is_some_and(|s| now < s.blocked_until);
        let url_waits = self.urls.get(url).is_some_and(|f| now < f.retry_at);
        if blocked || url_waits {
            Err(UpstreamError::CoolingDown)
        } else {
            Ok(())
        }
    }

    /// Learn from the result of a fetch of `url` on `upstream`.
    pub fn record(&self, upstream: &str, url: &str, result: &Result<FetchOutcome, UpstreamError>) {
        let now = self.clock.now_millis();
        let until = |d: Duration| now.saturating_add(millis(d));
        let verdict = verdict(result);
        let mut upstreams = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        let state = upstreams.entry(upstream.to_owned()).or_default();
        match verdict {
            Verdict::Nothing => return,
            Verdict::Healthy => {
                *state = UpstreamState::default();
                drop(upstreams);
                self.urls.invalidate(url);
                return;
            }
            Verdict::UrlOnly => state.failures = 0,
            Verdict::Transient => {
                state.failures = state.failures.saturating_add(1);
                if state.failures >= self.policy.failures_to_open {
                    let n = state.failures + 1 - self.policy.failures_to_open;
                    state.blocked_until = until(self.policy.delay(n));
                }
            }
            Verdict::Throttled(after) => {
                state.failures = state.failures.saturating_add(1);
                let wait = after
                    .unwrap_or_else(|| self.policy.delay(state.failures))
                    .min(self.policy.max);
                state.blocked_until = until(wait);
            }
        }
        let upstream_until = state.blocked_until;
        drop(upstreams);
        let failures = self.urls.get(url).map_or(0, |f| f.failures) + 1;
        let retry_at = until(self.policy.delay(failures)).max(upstream_until);
        self.urls
            .insert(Arc::from(url), FailedUrl { retry_at, failures });
    }

    /// Forget what is known about `url` (a purge: the operator wants a fresh attempt).
    pub fn forget_url(&self, url: &str) {
        self.urls.invalidate(url);
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): delta-seconds or an HTTP-date, relative to `now`.
/// A date in the past means "now" (zero); anything unparsable is `None` (the default backoff).
pub fn parse_retry_after(value: &[u8], now: Millis) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // Saturates: "99999999999999999999" is "a very long time", capped by the caller.
        return Some(Duration::from_secs(text.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    let at = at.duration_since(std::time::UNIX_EPOCH).ok()?;
    let at = Millis::try_from(at.as_millis()).ok()?;
    Some(Duration::from_millis(
        u64::try_from(at.saturating_sub(now)).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            base: Duration::from_secs(30),
            max: Duration::from_secs(600),
            failures_to_open: 3,
        }
    }

    fn health() -> (Health, ManualClock) {
        let clock = ManualClock::new();
        (Health::new(Arc::new(clock.clone()), policy()), clock)
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(parse_retry_after(b"120", 0), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(b" 0 ", 0), Some(Duration::ZERO));
        // 1994-11-06T08:49:37Z is 784111777 s after the epoch.
        let date = b"Sun, 06 Nov 1994 08:49:37 GMT";
        let now = 784_111_777_000 - 90_000;
        assert_eq!(parse_retry_after(date, now), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_retry_after(date, now + 200_000),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after(b"soon", 0), None);
        assert_eq!(parse_retry_after(b"-5", 0), None);
        assert_eq!(parse_retry_after(b"", 0), None);
        assert!(parse_retry_after(b"99999999999999999999999", 0).is_some());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy();
        assert_eq!(p.delay(1), Duration::from_secs(30));
        assert_eq!(p.delay(2), Duration::from_secs(60));
        assert_eq!(p.delay(5), Duration::from_secs(480));
        assert_eq!(p.delay(6), Duration::from_secs(600));
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(600));
    }

    #[test]
    fn a_throttled_upstream_is_refused_until_retry_after_then_admitted() {
        let (h, clock) = health();
        h.record(
            "idp",
            "https://a/1",
            &Err(UpstreamError::Throttled(Some(Duration::from_secs(120)))),
        );
        assert!(h.admit("idp", "https://a/2").is_err(), "the whole upstream");
        assert!(h.admit("other", "https://b/1").is_ok());
        clock.advance(Duration::from_secs(119));
        assert!(h.admit("idp", "https://a/1").is_err());
        clock.advance(Duration::from_secs(2));
        assert!(h.admit("idp", "https://a/1").is_ok());
        assert!(h.admit("idp", "https://a/2").is_ok());
    }

    #[test]
    fn retry_after_is_capped() {
        let (h, clock) = health();
        let days = Duration::from_secs(7 * 86_400);
        h.record("idp", "u", &Err(UpstreamError::Throttled(Some(days))));
        clock.advance(Duration::from_secs(601));
        assert!(h.admit("idp", "u").is_ok());
    }

    #[test]
    fn transient_failures_in_a_row_open_the_upstream_and_a_success_closes_it() {
        let (h, clock) = health();
        for i in 0..2 {
            h.record("idp", &format!("u{i}"), &Err(UpstreamError::Timeout));
        }
        assert!(
            h.admit("idp", "fresh").is_ok(),
            "two failures are not enough"
        );
        assert!(h.admit("idp", "u0").is_err(), "but a failed URL waits");
        h.record("idp", "u2", &Err(UpstreamError::Status(502)));
        assert!(h.admit("idp", "fresh").is_err(), "three are");
        clock.advance(Duration::from_secs(31));
        assert!(h.admit("idp", "fresh").is_ok());
        h.record("idp", "fresh", &Ok(FetchOutcome::NotFound));
        h.record("idp", "x", &Err(UpstreamError::Timeout));
        assert!(h.admit("idp", "y").is_ok(), "the count starts again");
    }

    #[test]
    fn a_failed_url_waits_longer_each_time_and_is_forgotten_on_success() {
        let (h, clock) = health();
        let auth = || Err(UpstreamError::AuthFailure("HTTP 401/403"));
        h.record("idp", "u", &auth());
        clock.advance(Duration::from_secs(31));
        assert!(h.admit("idp", "u").is_ok());
        h.record("idp", "u", &auth());
        clock.advance(Duration::from_secs(31));
        assert!(h.admit("idp", "u").is_err(), "60 s the second time");
        clock.advance(Duration::from_secs(30));
        h.record("idp", "u", &Ok(FetchOutcome::NotFound));
        h.record("idp", "u", &auth());
        clock.advance(Duration::from_secs(31));
        assert!(h.admit("idp", "u").is_ok(), "back to 30 s after a success");
    }
}
