//! Upper and lower bounds of every count, size and lifetime, so a value that would overflow,
//! exhaust memory or panic deep inside the service (a semaphore of 2^63 permits, a hundred
//! million worker tasks, an instant past the end of time) is refused at start, naming its key
//! and variable.

use std::time::Duration;

use super::{ConfigError, Settings, invalid};

/// The longest lifetime or timeout any setting accepts: 100 years (in seconds). Longer values
/// overflow time arithmetic (instants, millisecond clocks) for no use.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The most workers or requests in flight any one pool accepts.
const MAX_WORKERS: u64 = 4096;

impl Settings {
    /// Every numeric setting within its bounds (the key and the inclusive range).
    pub(super) fn validate_bounds(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let gib = 1u64 << 30;
        let mut checks: Vec<(String, u64, u64, u64)> = vec![
            (
                "images.workers".into(),
                self.images.workers as u64,
                0,
                MAX_WORKERS,
            ),
            (
                "jobs.workers".into(),
                self.jobs.workers as u64,
                0,
                MAX_WORKERS,
            ),
            (
                "cache.max_concurrent_downloads".into(),
                self.cache.max_concurrent_downloads as u64,
                1,
                MAX_WORKERS,
            ),
            (
                "cache.max_size_mb".into(),
                self.cache.max_size_mb,
                1,
                1 << 24,
            ),
            ("cache.memory_mb".into(), self.cache.memory_mb, 1, 1 << 20),
            ("cache.ttl_hours".into(), self.cache.ttl_hours, 0, 876_000),
            (
                "cache.stale_hours".into(),
                self.cache.stale_hours.unwrap_or(0),
                0,
                876_000,
            ),
            ("events.buffer".into(), self.events.buffer as u64, 1, 65_536),
            (
                "images.max_image_bytes".into(),
                self.images.max_image_bytes as u64,
                1024,
                gib,
            ),
            (
                "images.max_pixels".into(),
                self.images.max_pixels,
                1,
                1 << 32,
            ),
            (
                "images.max_decode_bytes".into(),
                self.images.max_decode_bytes,
                1 << 20,
                64 * gib,
            ),
            (
                "uploads.max_bytes".into(),
                self.uploads.max_bytes,
                1024,
                gib,
            ),
            (
                "server.rewrite_max_records".into(),
                self.server.rewrite_max_records as u64,
                1,
                1_000_000,
            ),
            (
                "server.rewrite_max_bytes".into(),
                self.server.rewrite_max_bytes as u64,
                1,
                gib,
            ),
            (
                "jobs.max_attempts".into(),
                self.jobs.max_attempts.into(),
                1,
                1000,
            ),
            (
                "webhooks.max_attempts".into(),
                self.webhooks.max_attempts.into(),
                1,
                1000,
            ),
        ];
        for (name, upstream) in &self.upstreams {
            if let Some(n) = upstream.max_concurrent {
                checks.push((
                    format!("upstreams.{name}.max_concurrent"),
                    n as u64,
                    1,
                    MAX_WORKERS,
                ));
            }
        }
        for (name, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                return Err(invalid(
                    key(&name),
                    format!("{value} is out of range: must be between {min} and {max}"),
                ));
            }
        }
        Ok(())
    }
}
