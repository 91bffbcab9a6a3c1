//! The two-tier cache.
//!
//! - [`memory`]: moka, weighted by bytes: responses ready to serve (the hot path touches nothing
//!   else: no database, no disk).
//! - [`disk`]: cacache content, content-addressed and integrity-checked, with a moka index that
//!   keeps an LRU byte budget over everything on disk, mirrored in a compacted [`journal`] file
//!   and replayed at start.
//! - [`flight`]: single flight: concurrent misses of one key share one spawned computation.
//! - [`freshness`]: TTL → stale-while-revalidate grace → expired.
//! - [`generations`]: per-key counters that let invalidations win over in-flight builds.

pub mod disk;
pub mod flight;
pub mod freshness;
pub mod generations;
pub mod journal;
pub mod memory;

pub use disk::{DiskEntry, DiskTier};
pub use flight::SingleFlight;
pub use freshness::{Freshness, Lifetimes};
pub use generations::{Generations, Stamped};
pub use memory::MemoryTier;
