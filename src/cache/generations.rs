//! Generations: a counter per key that every invalidation bumps, so a result computed from state
//! read before an invalidation is never served after it.
//!
//! A computation reads the key's generation *before* it reads any state (registry, uploads,
//! disk) and tags its result with it; a reader accepts a cached result only when its tag is still
//! the key's generation. An invalidation changes the state first, then bumps. So a build that
//! started before an upload, delete or purge finished carries the old generation and is never
//! read again, whenever it lands in a cache; one that started after sees the new state.
//!
//! Keys map onto a fixed table of counters (by hash), so memory stays constant however many keys
//! are seen; two keys sharing a counter only cost each other a spurious miss.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters in the table: a bump invalidates about 1/4096 of unrelated in-flight work at worst.
const STRIPES: usize = 4096;

/// A generation counter per key (striped).
pub struct Generations {
    stripes: Box<[AtomicU64]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Generations {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl Generations {
    fn stripe(&self, key: &(impl Hash + ?Sized)) -> &AtomicU64 {
        let index = self.hasher.hash_one(key) as usize % STRIPES;
        &self.stripes[index]
    }

    /// The key's generation now; read it before reading the state a result is built from.
    pub fn current(&self, key: &(impl Hash + ?Sized)) -> u64 {
        self.stripe(key).load(Ordering::SeqCst)
    }

    /// Invalidate: results tagged with an earlier generation of `key` are stale from now on.
    /// Call it after the state change is visible to readers.
    pub fn bump(&self, key: &(impl Hash + ?Sized)) {
        self.stripe(key).fetch_add(1, Ordering::SeqCst);
    }

    /// Whether a result tagged `generation` is still current for `key`.
    pub fn is_current(&self, key: &(impl Hash + ?Sized), generation: u64) -> bool {
        self.current(key) == generation
    }
}

/// A cached value with the generation it was built under.
pub struct Stamped<V> {
    /// The generation read before the value was built.
    pub generation: u64,
    /// The value.
    pub value: std::sync::Arc<V>,
}

impl<V: super::memory::Weighted> super::memory::Weighted for Stamped<V> {
    fn weight(&self) -> u32 {
        self.value.weight().saturating_add(8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_makes_earlier_generations_stale_and_leaves_other_keys_alone_mostly() {
        let gens = Generations::default();
        let before = gens.current("alice");
        assert!(gens.is_current("alice", before));
        gens.bump("alice");
        assert!(!gens.is_current("alice", before));
        let after = gens.current("alice");
        assert!(gens.is_current("alice", after));
        // A different key only changes when it shares alice's counter.
        let stale_others = (0..1000)
            .filter(|i| {
                let k = format!("bob{i}");
                let g = gens.current(&k);
                gens.bump("alice");
                !gens.is_current(&k, g)
            })
            .count();
        assert!(stale_others < 10, "{stale_others}");
    }
}
