//! The one retry policy of every job: exponential backoff with equal jitter, from settings
//! (`AVATAR_JOB_RETRY_BASE`, `AVATAR_JOB_RETRY_MAX`).

use std::time::Duration;

/// Retry delays for every job type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay after attempt number `attempts` (1 for the first) failed, with random jitter.
    pub fn after(&self, attempts: u32) -> Duration {
        backoff(
            attempts.saturating_sub(1),
            self.base,
            self.max,
            rand::random::<f64>(),
        )
    }
}

/// The delay before retry number `attempt` (0 for the retry after the first failure):
/// exponential, `base * 2^attempt` capped at `max`, with "equal jitter" — the delay lies in
/// `[cap / 2, cap]`, placed by `jitter` (the caller's random fraction in `0..1`; values outside
/// are clamped, NaN counts as 0). Half the delay is guaranteed, so retries keep backing off, and
/// the other half is spread, so failures that happened together do not retry together.
/// Never exceeds `max`; never overflows, whatever `attempt` is.
pub fn backoff(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let cap = 2u32
        .checked_pow(attempt)
        .and_then(|factor| base.checked_mul(factor))
        .map_or(max, |d| d.min(max));
    let jitter = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    let half = cap / 2;
    (half + (cap - half).mul_f64(jitter)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_base_up_to_max() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        let full: Vec<u64> = (0..9)
            .map(|n| backoff(n, base, max, 1.0).as_secs())
            .collect();
        assert_eq!(full, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        let least: Vec<u64> = (0..9)
            .map(|n| backoff(n, base, max, 0.0).as_millis() as u64)
            .collect();
        assert_eq!(
            least,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }

    #[test]
    fn backoff_jitter_spreads_within_the_upper_half() {
        let base = Duration::from_millis(400);
        let max = Duration::from_secs(3600);
        assert_eq!(backoff(2, base, max, 0.5), Duration::from_millis(1200));
        assert_eq!(backoff(2, base, max, 0.25), Duration::from_millis(1000));
        for j in [0.0, 0.1, 0.5, 0.9, 0.999_999] {
            let d = backoff(3, base, max, j);
            assert!(
                d >= Duration::from_millis(1600) && d <= Duration::from_millis(3200),
                "{j}: {d:?}"
            );
        }
    }

    #[test]
    fn backoff_survives_extreme_inputs() {
        let max = Duration::from_secs(300);
        for attempt in [31, 32, 64, 1000, u32::MAX] {
            assert!(backoff(attempt, Duration::from_secs(1), max, 1.0) <= max);
            assert!(backoff(attempt, Duration::MAX, max, 1.0) <= max);
        }
        for j in [f64::NAN, -3.0, 7.0, f64::INFINITY, f64::NEG_INFINITY] {
            let d = backoff(4, Duration::from_secs(1), max, j);
            assert!(
                d >= Duration::from_secs(8) && d <= Duration::from_secs(16),
                "{j}"
            );
        }
        assert_eq!(backoff(3, Duration::ZERO, max, 1.0), Duration::ZERO);
        assert_eq!(
            backoff(0, Duration::from_secs(10), Duration::ZERO, 1.0),
            Duration::ZERO
        );
    }

    #[test]
    fn the_first_retry_waits_about_the_base_delay() {
        let policy = Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(600),
        };
        for _ in 0..20 {
            let d = policy.after(1);
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(2),
                "{d:?}"
            );
            assert!(policy.after(40) <= policy.max);
        }
    }
}
