//! Operator warnings about upstream trouble: at most one line per upstream and kind of trouble
//! per interval (`AVATAR_UPSTREAM_WARN_INTERVAL`), never one per request.
//!
//! A line names the upstream (its configured name), the kind, the last error (whose text never
//! holds a URL or a credential) and how many more occurrences were only counted since the
//! previous line:
//!
//! ```text
//! WARN upstream trouble upstream=azure kind=throttled error=upstream throttled us (retry after 120s) suppressed=14 hint="requests to the upstream pause for its Retry-After"
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::fetch::UpstreamError;
use crate::clock::{Clock, Millis, millis};

/// Kinds of trouble an operator acts on differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trouble {
    /// 401/403, sign-in pages: the credential is wrong or expired.
    Auth,
    /// No answer in time.
    Timeout,
    /// Connection refused, reset, truncated bodies.
    Unreachable,
    /// 429 / 503: the upstream asks us to slow down.
    Throttled,
    /// Other unexpected statuses (5xx, odd 4xx, unsolicited 304, redirect trouble).
    HttpError,
    /// The bytes are not an image we can decode, or are over the limits.
    Undecodable,
}

impl Trouble {
    /// The `kind` field of the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth_failing",
            Self::Timeout => "timeouts",
            Self::Unreachable => "unreachable",
            Self::Throttled => "throttled",
            Self::HttpError => "http_errors",
            Self::Undecodable => "undecodable",
        }
    }

    /// What an operator can do about it (the `hint` field).
    pub fn hint(self) -> &'static str {
        match self {
            Self::Auth => "check the upstream's credential",
            Self::Timeout | Self::Unreachable => {
                "the upstream is slow or down; stale copies and defaults are served meanwhile"
            }
            Self::Throttled => "requests to the upstream pause for its Retry-After",
            Self::HttpError => "the upstream answers unexpected statuses",
            Self::Undecodable => "the upstream serves bytes that are not a usable image",
        }
    }

    /// The kind of a fetch error; `None` for errors that are not the upstream's trouble (the
    /// allow-list, the SSRF guard, our own backoff and slot limits).
    pub fn of(error: &UpstreamError) -> Option<Self> {
        Some(match error {
            UpstreamError::AuthFailure(_) => Self::Auth,
            UpstreamError::Timeout => Self::Timeout,
            UpstreamError::Network(_) => Self::Unreachable,
            UpstreamError::Throttled(_) => Self::Throttled,
            UpstreamError::Status(_)
            | UpstreamError::UnsolicitedNotModified
            | UpstreamError::TooManyRedirects => Self::HttpError,
            UpstreamError::TooLarge(_) | UpstreamError::NotAnImage | UpstreamError::BadImage(_) => {
                Self::Undecodable
            }
            UpstreamError::NotAllowed
            | UpstreamError::BlockedAddress
            | UpstreamError::CoolingDown
            | UpstreamError::NoSlot => return None,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Logged {
    at: Millis,
    suppressed: u64,
}

/// Rate-limited warnings, shared by every fetch.
pub struct Reporter {
    clock: Arc<dyn Clock>,
    interval: Millis,
    last: Mutex<HashMap<(String, Trouble), Logged>>,
}

impl Reporter {
    /// One line per upstream and kind per `interval`.
    pub fn new(clock: Arc<dyn Clock>, interval: Duration) -> Self {
        Self {
            clock,
            interval: millis(interval),
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Note one occurrence; logs a warning when none was logged for this upstream and kind
    /// within the interval. Returns whether it logged.
    pub fn report(&self, upstream: &str, kind: Trouble, error: &dyn std::fmt::Display) -> bool {
        let now = self.clock.now_millis();
        let suppressed = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let entry = last.entry((upstream.to_owned(), kind)).or_insert(Logged {
                at: Millis::MIN,
                suppressed: 0,
            });
            if entry.at != Millis::MIN && now.saturating_sub(entry.at) < self.interval {
                entry.suppressed += 1;
                return false;
            }
            let suppressed = entry.suppressed;
            *entry = Logged {
                at: now,
                suppressed: 0,
            };
            suppressed
        };
        tracing::warn!(
            upstream = %upstream,
            kind = %kind.as_str(),
            error = %error,
            suppressed,
            hint = kind.hint(),
            "upstream trouble"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn one_line_per_upstream_and_kind_per_interval() {
        let clock = ManualClock::new();
        let r = Reporter::new(Arc::new(clock.clone()), Duration::from_secs(300));
        let e = UpstreamError::Timeout;
        assert!(r.report("a", Trouble::Timeout, &e));
        assert!(!r.report("a", Trouble::Timeout, &e));
        assert!(r.report("a", Trouble::Auth, &e), "another kind");
        assert!(r.report("b", Trouble::Timeout, &e), "another upstream");
        clock.advance(Duration::from_secs(299));
        assert!(!r.report("a", Trouble::Timeout, &e));
        clock.advance(Duration::from_secs(1));
        assert!(r.report("a", Trouble::Timeout, &e));
    }
}
