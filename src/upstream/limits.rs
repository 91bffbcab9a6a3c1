//! Download slots: how many upstream requests are in flight, overall and per upstream.
//!
//! A fetch takes a slot of its upstream first (`AVATAR_UPSTREAM_<NAME>_MAX_CONCURRENT`, by
//! default half the global limit), then a global one (`AVATAR_CACHE_MAX_CONCURRENT_DOWNLOADS`),
//! and waits for both at most `AVATAR_UPSTREAM_QUEUE_TIMEOUT`. So one hung upstream holds at most
//! its own share of the global slots, and a request never waits for a slot without bound: past
//! the queue timeout it fails with [`UpstreamError::NoSlot`] and the caller serves its stale copy
//! or the default image.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::fetch::UpstreamError;

/// The slots held by one request in flight; released on drop.
#[derive(Debug)]
pub struct Slot {
    _upstream: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

/// Global and per-upstream concurrency limits.
#[derive(Debug)]
pub struct Slots {
    global: Arc<Semaphore>,
    per_upstream: HashMap<String, Arc<Semaphore>>,
    /// Slots of an upstream missing from `per_upstream` (none in practice).
    default_share: usize,
    queue_timeout: Duration,
}

impl Slots {
    /// `global` slots in all; `per_upstream` names upstreams with an explicit limit (`None`:
    /// half the global limit, at least one); a slot is waited for at most `queue_timeout`.
    pub fn new<'a>(
        global: usize,
        per_upstream: impl IntoIterator<Item = (&'a str, Option<usize>)>,
        queue_timeout: Duration,
    ) -> Self {
        let global = global.max(1);
        let default_share = (global / 2).max(1);
        let per_upstream = per_upstream
            .into_iter()
            .map(|(name, limit)| {
                let limit = limit.filter(|&n| n > 0).unwrap_or(default_share);
                (name.to_owned(), Arc::new(Semaphore::new(limit)))
            })
            .collect();
        Self {
            global: Arc::new(Semaphore::new(global)),
            per_upstream,
            default_share,
            queue_timeout,
        }
    }

    /// A slot for a request to `upstream`, or [`UpstreamError::NoSlot`] after the queue timeout.
    pub async fn acquire(&self, upstream: &str) -> Result<Slot, UpstreamError> {
        let own = match self.per_upstream.get(upstream) {
            Some(s) => s.clone(),
            None => Arc::new(Semaphore::new(self.default_share)),
        };
        let global = self.global.clone();
        let both = async move {
            let upstream = own.acquire_owned().await.ok()?;
            let global = global.acquire_owned().await.ok()?;
            Some(Slot {
                _upstream: upstream,
                _global: global,
            })
        };
        match tokio::time::timeout(self.queue_timeout, both).await {
            Ok(Some(slot)) => Ok(slot),
            Ok(None) | Err(_) => Err(UpstreamError::NoSlot),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_hung_upstream_holds_only_its_share_and_waiters_give_up() {
        let slots = Slots::new(
            2,
            [("hung", None), ("healthy", None)],
            Duration::from_secs(5),
        );
        let held = slots.acquire("hung").await.expect("first slot");
        // The second request for the hung upstream waits for its share, then gives up.
        assert!(matches!(
            slots.acquire("hung").await,
            Err(UpstreamError::NoSlot)
        ));
        // Another upstream still gets the other global slot.
        let healthy = slots
            .acquire("healthy")
            .await
            .expect("a slot for the others");
        drop(held);
        drop(healthy);
        assert!(slots.acquire("hung").await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_explicit_limit_wins_over_the_default_share() {
        let slots = Slots::new(4, [("big", Some(3))], Duration::from_secs(1));
        let a = slots.acquire("big").await.expect("1");
        let b = slots.acquire("big").await.expect("2");
        let c = slots.acquire("big").await.expect("3");
        assert!(slots.acquire("big").await.is_err());
        drop((a, b, c));
    }
}
