//! Background jobs: named, idempotent job types run by one [`Runner`].
//!
//! - [`runner`]: claim under a short lease renewed by a heartbeat, outcome `Retry`/`Abort`,
//!   attempts capped (also for jobs reclaimed after a crash), lease ownership checked on every
//!   update, stop on cancellation and drain at shutdown.
//! - [`backoff`]: the one retry policy, from settings.
//! - Job types: [`process_upload`] (`process-upload`), [`deliver_webhook`] (`deliver-webhook`),
//!   [`sweep`] (`sweep-temporary-data`, periodic), [`purge`] (`purge-expired-records`,
//!   periodic).

pub mod backoff;
pub mod deliver_webhook;
pub mod process_upload;
pub mod purge;
pub mod runner;
pub mod sweep;

pub use backoff::Backoff;
pub use deliver_webhook::DeliverWebhook;
pub use process_upload::ProcessUpload;
pub use purge::PurgeExpired;
pub use runner::{Lease, Outcome, Queue, Runner, RunnerSettings, Settlement};
pub use sweep::Sweep;
