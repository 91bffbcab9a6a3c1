//! Avatars: from a public key and a query to the best image there is.
//!
//! - [`request`]: query parsing that never fails (`s`, `d`, `f`, `v`, extension, `Accept`).
//! - [`rendition`]: a response ready to serve, as the memory tier holds it.
//! - [`fallback`]: what `/avatar` serves when the resolver fails: the key's default, else one
//!   pre-rendered at start-up.
//! - [`resolver`]: upload → upstream → generated default, through the two-tier cache, with TTL,
//!   stale-while-revalidate, stale-if-error and single flight.

pub mod fallback;
pub mod rendition;
pub mod request;
pub mod resolver;

pub use rendition::{CacheStatus, Rendition, RenditionKey, SourceKind};
pub use request::{AvatarQuery, DefaultChoice, FormatChoice};
pub use resolver::{AvatarSettings, Avatars};
