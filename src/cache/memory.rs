//! Memory tier: responses ready to serve, weighted by their bytes.

use std::hash::Hash;
use std::sync::Arc;

use metrics::Counter;
use moka::notification::RemovalCause;

/// Something whose memory cost is known.
pub trait Weighted {
    /// Bytes held (payload plus a fixed overhead estimate).
    fn weight(&self) -> u32;
}

/// A bytes-bounded LRU cache. LRU rather than moka's default TinyLFU so a freshly rendered
/// response is always admitted. Never overshoots its budget by more than one entry: inserts run
/// pending evictions at once.
pub struct MemoryTier<K, V> {
    cache: moka::sync::Cache<K, Arc<V>>,
    hits: Counter,
    misses: Counter,
}

impl<K, V> MemoryTier<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Weighted + Send + Sync + 'static,
{
    /// A tier of at most `budget_bytes`.
    pub fn new(budget_bytes: u64) -> Self {
        let evictions = metrics::counter!("avatar_cache_evictions_total", "tier" => "memory");
        let cache = moka::sync::Cache::builder()
            .max_capacity(budget_bytes)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .weigher(|_k, v: &Arc<V>| v.weight())
            .support_invalidation_closures()
            .eviction_listener(move |_k, _v, cause| {
                if cause == RemovalCause::Size {
                    evictions.increment(1);
                }
            })
            .build();
        Self {
            cache,
            hits: metrics::counter!("avatar_cache_hits_total", "tier" => "memory"),
            misses: metrics::counter!("avatar_cache_misses_total", "tier" => "memory"),
        }
    }

    /// Look up; counts the hit or miss.
    pub fn get(&self, key: &K) -> Option<Arc<V>> {
        let found = self.cache.get(key);
        match found {
            Some(_) => self.hits.increment(1),
            None => self.misses.increment(1),
        }
        found
    }

    /// Insert and enforce the budget right away.
    pub fn insert(&self, key: K, value: Arc<V>) {
        self.cache.insert(key, value);
        self.cache.run_pending_tasks();
    }

    /// Drop every entry matching `predicate`; later reads never see them.
    pub fn invalidate_where(
        &self,
        predicate: impl Fn(&K, &Arc<V>) -> bool + Send + Sync + 'static,
    ) {
        // Only fails when closures were not enabled at build time, which they are.
        if let Err(e) = self.cache.invalidate_entries_if(predicate) {
            tracing::error!(error = %e, "memory tier invalidation failed; clearing it");
            self.cache.invalidate_all();
        }
    }

    /// Bytes held now.
    pub fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    /// Entries held now.
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Blob(u32);
    impl Weighted for Blob {
        fn weight(&self) -> u32 {
            self.0
        }
    }

    #[test]
    fn stays_within_its_byte_budget() {
        let tier: MemoryTier<u32, Blob> = MemoryTier::new(10_000);
        for i in 0..100 {
            tier.insert(i, Arc::new(Blob(1_000)));
            assert!(tier.weighted_size() <= 10_000 + 1_000);
        }
        assert!(tier.weighted_size() <= 10_000);
    }

    #[test]
    fn invalidated_entries_are_never_read_again() {
        let tier: MemoryTier<(u8, u8), Blob> = MemoryTier::new(1 << 20);
        tier.insert((1, 1), Arc::new(Blob(10)));
        tier.insert((1, 2), Arc::new(Blob(10)));
        tier.insert((2, 1), Arc::new(Blob(10)));
        tier.invalidate_where(|k, _| k.0 == 1);
        assert!(tier.get(&(1, 1)).is_none());
        assert!(tier.get(&(1, 2)).is_none());
        assert!(tier.get(&(2, 1)).is_some());
    }
}
