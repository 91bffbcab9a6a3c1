//! avatar-proxy: an authenticated avatar caching proxy.
//!
//! Identity records carry avatar URLs that only load with credentials a browser `<img>` does not
//! have. This service fetches them with per-upstream credentials from allow-listed hosts, keeps
//! them in a two-tier cache, and serves them at stable local URLs.
//!
//! Map of the crate, by layer; dependencies point down only, and nothing below the HTTP edge
//! imports axum or knows a status code:
//!
//! - [`app`]: start-up assembly: build the services from settings, bind the listener, spawn the
//!   background tasks, shut down.
//! - [`http`]: the HTTP edge: state, extractors (JWT user, service caller), [`http::ApiError`]
//!   and its conversions, one route file per resource and the router with its middleware.
//! - Services: [`avatars`] (the resolver: upload → upstream → generated default, never a broken
//!   image), [`uploads`] (signed URLs, direct uploads), [`jobs`] (processing), [`events`]
//!   (WebSocket/SSE fan-out, webhook outbox), [`webhooks`] (signed delivery).
//! - Core: [`cache`] (memory tier, disk tier, single flight, freshness), [`upstream`]
//!   (allow-list, credentials, SSRF guard, the streaming fetcher), [`imaging`] (sniff, probe,
//!   decode, resize, encode, defaults), [`store`] (durable blobs), [`repo`] (metadata), [`keys`]
//!   (user id → opaque public key), [`auth`] (JWT verification), [`fault`] (user-facing
//!   messages).
//! - Bottom: [`config`] (settings), [`clock`] (time), [`telemetry`], [`fsutil`].

pub mod app;
pub mod auth;
pub mod avatars;
pub mod cache;
pub mod clock;
pub mod config;
pub mod events;
pub mod fault;
pub mod fsutil;
pub mod hosts;
pub mod http;
pub mod ids;
pub mod imaging;
pub mod jobs;
pub mod keys;
pub mod repo;
pub mod store;
pub mod telemetry;
pub mod uploads;
pub mod upstream;
pub mod urls;
pub mod webhooks;

pub use app::Application;
pub use config::Settings;
