//! HTTP tests against the real server on loopback, with a real fake upstream.
//!
//! One test binary (fast to link); one module per concern.

mod helpers;

mod caching;
mod config_cli;
mod connections;
mod demo_page;
mod error_shape;
mod event_streams;
mod identities;
mod image_content;
mod invalidation_races;
mod ops;
mod rate_limits;
mod serving;
mod upload_flows;
mod upload_lifecycle;
mod upstream_backoff;
mod upstream_faults;
mod upstream_generated;
mod upstream_protocol;
