//! avatar-proxy: an authenticated avatar caching proxy.
//!
//! Identity records carry avatar URLs that only load with credentials a browser `<img>` does not
//! have. This service fetches them with per-upstream credentials from allow-listed hosts, keeps
//! them in a two-tier cache, and serves them at stable local URLs.
//!
//! Map of the crate, request path first:
//!
//! - [`app`]: build state from settings, bind the listener, background tasks, shutdown.
//! - [`routes`]: the HTTP surface and middleware; one file per resource.
//! - [`avatars`]: the resolver: upload → upstream → generated default, never a broken image.
//! - [`uploads`], [`jobs`], [`events`], [`webhooks`], [`auth`]: user uploads (JWT, signed URLs),
//!   processing jobs, WebSocket/SSE events and signed webhooks.
//! - [`store`]: durable blobs (uploaded variants) over object_store.
//! - [`cache`]: memory tier (moka, bytes-weighted), disk tier (cacache, LRU by bytes), single
//!   flight, freshness.
//! - [`upstream`]: allow-list, credentials, SSRF guard, the streaming fetcher, backoff
//!   (`Retry-After`) and download slots per upstream, rate-limited trouble warnings.
//! - [`imaging`]: sniff, probe before decode, DCT-scaled decode, resize, encode, defaults.
//! - [`repo`]: metadata (identity registry) behind a trait; SQLite embedded.
//! - [`keys`]: user id → opaque public key (HMAC).
//! - [`config`], [`telemetry`], [`error`], [`clock`], [`fsutil`]: the supporting cast.

pub mod app;
pub mod auth;
pub mod avatars;
pub mod cache;
pub mod clock;
pub mod config;
pub mod error;
pub mod events;
pub mod fsutil;
pub mod imaging;
pub mod jobs;
pub mod keys;
pub mod ratelimit;
pub mod repo;
pub mod routes;
pub mod store;
pub mod telemetry;
pub mod uploads;
pub mod upstream;
pub mod webhooks;

pub use app::Application;
pub use config::Settings;
