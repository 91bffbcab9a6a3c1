//! avatar-proxy: an authenticated avatar caching proxy.
//!
//! Identity records carry avatar URLs that only load with credentials a browser `<img>` does not
//! have. This service fetches them with per-upstream credentials from allow-listed hosts, keeps
//! them in a two-tier cache, and serves them at stable local URLs.
//!
//! Map of the crate, by layer; dependencies point down only, and nothing below the HTTP edge
//! imports axum or knows a status code (the README's "Architecture" walks a request and an
//! upload through them):
//!
//! - [`app`]: start-up assembly: open the backends the settings name ([`app::backends`]), build
//!   the services, bind the listener, start the job runner, serve, drain at shutdown.
//! - [`http`]: the HTTP edge: state, extractors (JWT user, service caller), [`http::ApiError`]
//!   with a `From` per service error (logged once by a layer), JSON shape for every error,
//!   per-client rate limits, bounded event streams, one route file per resource.
//! - Services: [`avatars`] (the resolver: upload → upstream → generated default, never a broken
//!   image), [`identities`] (the registry: rewrite, register), [`uploads`] (signed URLs,
//!   direct uploads), [`jobs`] (one runner, named jobs),
//!   [`events`] (per-user WebSocket/SSE channels, webhook outbox), [`webhooks`] (signed posts).
//! - Core: [`cache`] (memory tier, disk tier, single flight, freshness), [`upstream`]
//!   (allow-list, credentials, SSRF guard, the streaming fetcher, backoff and
//!   download slots per upstream, rate-limited trouble warnings), [`ratelimit`] (per-client limits), [`imaging`] (sniff, probe,
//!   decode, resize, encode, defaults, the worker pool), [`store`] (durable blobs and their
//!   paths), [`repo`] (typed metadata), [`keys`] (user id → opaque public key), [`auth`] (JWT
//!   verification), [`urls`] (public URLs), [`ids`] (id newtypes), [`fault`] (user-facing
//!   messages).
//! - Bottom: [`config`] (typed settings), [`clock`] (time as [`clock::Millis`]), [`hosts`]
//!   (host patterns), [`telemetry`], [`fsutil`].

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
pub mod identities;
pub mod ids;
pub mod imaging;
pub mod jobs;
pub mod keys;
pub mod ratelimit;
pub mod repo;
pub mod store;
pub mod telemetry;
pub mod uploads;
pub mod upstream;
pub mod urls;
pub mod webhooks;

pub use app::Application;
pub use config::Settings;
