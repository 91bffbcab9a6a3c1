//! Freshness of a cached upstream copy: fresh for the TTL, then stale (served while a background
//! refresh runs) for the grace period, then expired (fetched before serving).

use std::time::Duration;

use crate::clock::{Millis, millis};

/// Where a cached copy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Within the TTL.
    Fresh,
    /// Past the TTL, within the grace: serve it and revalidate in the background.
    Stale,
    /// Past the grace: fetch first; serve it only if the upstream fails.
    Expired,
}

/// TTL and grace, as configured.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Fresh for this long after a fetch or revalidation.
    pub ttl: Duration,
    /// Then stale-while-revalidate for this long.
    pub grace: Duration,
}

impl Lifetimes {
    /// End of freshness for a copy validated at `at`.
    pub fn fresh_until(&self, at: Millis) -> Millis {
        at.saturating_add(millis(self.ttl))
    }

    /// End of the grace for a copy validated at `at`.
    pub fn stale_until(&self, at: Millis) -> Millis {
        self.fresh_until(at).saturating_add(millis(self.grace))
    }

    /// Classify a copy validated at `at`, at time `now`.
    pub fn classify(&self, at: Millis, now: Millis) -> Freshness {
        if now < self.fresh_until(at) {
            Freshness::Fresh
        } else if now < self.stale_until(at) {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_then_grace_then_expired() {
        let l = Lifetimes {
            ttl: Duration::from_secs(60),
            grace: Duration::from_secs(600),
        };
        assert_eq!(l.classify(0, 59_999), Freshness::Fresh);
        assert_eq!(l.classify(0, 60_000), Freshness::Stale);
        assert_eq!(l.classify(0, 659_999), Freshness::Stale);
        assert_eq!(l.classify(0, 660_000), Freshness::Expired);
    }
}
