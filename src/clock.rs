//! Time as a dependency: every freshness decision asks a [`Clock`], so tests move time by hand
//! instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now_millis(&self) -> Millis;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> Millis {
        let now = time::OffsetDateTime::now_utc();
        (now.unix_timestamp_nanos() / 1_000_000) as Millis
    }
}

/// A clock that only moves when told to; shared between a test and the service under test.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock standing at the current wall-clock time.
    pub fn new() -> Self {
        Self(Arc::new(AtomicI64::new(SystemClock.now_millis())))
    }
    /// Move time forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as Millis, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// Whole Unix seconds of a time, for the wire formats that count in seconds (JWT `exp`, the
/// signed upload URL's `exp`, `webhook-timestamp`); everything inside the service is [`Millis`].
pub fn unix_seconds(at: Millis) -> i64 {
    at.div_euclid(1000)
}

/// A time given in whole Unix seconds by a wire format.
pub fn from_unix_seconds(seconds: i64) -> Millis {
    seconds.saturating_mul(1000)
}

/// Duration in whole milliseconds, saturating.
pub fn millis(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

/// An HTTP date (`Last-Modified`) for a time in milliseconds.
pub fn http_date(at: Millis) -> String {
    let secs = u64::try_from(at / 1000).unwrap_or(0);
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

/// RFC 3339 for a time in milliseconds (events, job timestamps, expiries).
pub fn rfc3339(at: Millis) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
