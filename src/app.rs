//! Assembly: build the state from settings, bind the listener, spawn the background tasks, serve
//! until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::avatars::{AvatarSettings, Avatars, DefaultChoice};
use crate::cache::{DiskTier, Lifetimes};
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::events::Notifier;
use crate::http::{App, AppState, Metrics};
use crate::imaging;
use crate::jobs::{Backoff, DeliverWebhook, ProcessUpload, Runner, RunnerSettings, Sweep};
use crate::keys::{KeyDeriver, load_or_create_secret};
use crate::repo::Repo;
use crate::repo::sqlite::SqliteRepo;
use crate::store::{BlobStore, ObjectBlobStore};
use crate::uploads::Uploads;
use crate::upstream::{Fetcher, Upstreams};
use crate::urls::PublicUrls;
use crate::webhooks::Deliverer;

/// How often idle job workers look for due jobs (they are also woken when one is queued).
const JOB_POLL: Duration = Duration::from_millis(250);

/// Replaceable dependencies (tests inject a clock and a faulty store).
#[derive(Default)]
pub struct Overrides {
    /// Time source; the system clock when `None`.
    pub clock: Option<Arc<dyn Clock>>,
    /// Blob store; the local filesystem under the cache dir when `None`.
    pub store: Option<Arc<dyn BlobStore>>,
}

/// A built application, bound to its listener, ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// Runs every job; drained at shutdown.
    runner: Runner,
    /// Tasks with nothing to finish (metrics upkeep, the disk index rebuild): aborted at shutdown.
    background: Vec<JoinHandle<()>>,
}

impl Application {
    /// Build with the real clock and store.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, Overrides::default()).await
    }

    /// Build with an injected clock (tests control time with it).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let overrides = Overrides {
            clock: Some(clock),
            ..Overrides::default()
        };
        Self::build_with(settings, overrides).await
    }

    /// Build with replaced dependencies.
    pub async fn build_with(settings: Settings, overrides: Overrides) -> anyhow::Result<Self> {
        let clock = overrides.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let prometheus = crate::telemetry::prometheus();
        let dir = settings.cache.dir.clone();
        crate::fsutil::create_private_dir(&dir).with_context(|| {
            format!(
                "cannot create the cache directory (cache.dir = {})",
                dir.display()
            )
        })?;
        let secret = load_or_create_secret(&settings.server.key_secret, &dir)
            .context("cannot read or create the key secret in the cache directory")?;

        let database_url = if settings.database.url.is_empty() {
            format!("sqlite://{}", dir.join("avatar-proxy.db").display())
        } else {
            settings.database.url.expose().to_owned()
        };
        let repo: Arc<dyn Repo> = Arc::new(
            SqliteRepo::connect(&database_url)
                .await
                .context("cannot open the metadata database (database.url)")?,
        );

        let store: Arc<dyn BlobStore> = match overrides.store {
            Some(store) => store,
            None => Arc::new(
                ObjectBlobStore::local(&dir.join("store")).context("cannot open the blob store")?,
            ),
        };
        let jwt = crate::auth::verifier(&settings.auth)
            .map_err(|e| anyhow::anyhow!("invalid configuration: auth: {e}"))?;

        let disk_budget = settings.cache.max_size_mb.saturating_mul(1024 * 1024);
        let disk = DiskTier::open(&dir.join("cache"), disk_budget)
            .context("cannot open the disk cache")?;
        let limits = imaging::Limits {
            max_pixels: settings.images.max_pixels,
            ..imaging::Limits::default()
        };
        let upstreams = Upstreams::from_settings(&settings).map_err(anyhow::Error::msg)?;
        let fetcher = Fetcher::new(
            upstreams,
            settings.upstream.timeout,
            settings.upstream.connect_timeout,
            settings.cache.max_concurrent_downloads,
            settings.images.max_image_bytes,
            limits,
        )
        .context("cannot build the HTTP client")?;
        let workers = match settings.images.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let pool = imaging::ImagePool::new(workers);
        let default = DefaultChoice::parse(&settings.images.default_image)
            .context("images.default_image is invalid")?;
        let avatars = Avatars::new(
            AvatarSettings {
                sizes: settings.sorted_sizes(),
                default_size: settings.images.default_size,
                default,
                lifetimes: Lifetimes {
                    ttl: settings.cache.fresh_for(),
                    grace: settings.cache.stale_for(),
                },
                negative_ttl: settings.cache.negative_ttl,
                limits,
                request_timeout: settings.server.request_timeout,
            },
            settings.cache.memory_mb.saturating_mul(1024 * 1024),
            disk.clone(),
            fetcher,
            repo.clone(),
            store.clone(),
            clock.clone(),
            pool.clone(),
        );

        let addr = settings.listen_addr().map_err(anyhow::Error::msg)?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (server.listen)"))?;
        let local = listener.local_addr()?;
        let urls = if settings.server.public_base_url.is_empty() {
            PublicUrls::new(&format!("http://{local}"))
        } else {
            PublicUrls::new(&settings.server.public_base_url)
        };

        let webhook_url = Some(settings.webhooks.url.clone()).filter(|u| !u.is_empty());
        let notifier = Notifier::new(
            repo.clone(),
            clock.clone(),
            webhook_url.clone(),
            settings.events.buffer,
        );
        let keys = KeyDeriver::new(&secret);
        let wake_jobs = Arc::new(tokio::sync::Notify::new());
        let uploads = Uploads::new(
            repo.clone(),
            store.clone(),
            &keys.sign("upload-url", b""),
            settings.uploads.clone(),
            limits,
            clock.clone(),
            notifier.clone(),
            urls.clone(),
            wake_jobs.clone(),
        );
        let mut runner = Runner::new(
            clock.clone(),
            RunnerSettings {
                lease: settings.jobs.lease,
                heartbeat: settings.jobs.heartbeat,
                poll: JOB_POLL,
                backoff: Backoff {
                    base: settings.jobs.retry_base,
                    max: settings.jobs.retry_max,
                },
            },
        );
        let process_upload = ProcessUpload {
            repo: repo.clone(),
            store: store.clone(),
            avatars: avatars.clone(),
            pool: pool.clone(),
            notifier: notifier.clone(),
            clock: clock.clone(),
            max_attempts: settings.jobs.max_attempts,
            uploads: settings.uploads.clone(),
            urls: urls.clone(),
        };
        runner.spawn(Arc::new(process_upload), settings.jobs.workers, wake_jobs);
        if webhook_url.is_some() {
            let deliverer = Deliverer::new(
                settings.webhooks.secret.expose(),
                settings.webhooks.allow_private,
            )
            .map_err(|e| {
                anyhow::anyhow!(
                    "invalid configuration: webhooks.secret (AVATAR_WEBHOOK_SECRET): {e}"
                )
            })?;
            let deliver = DeliverWebhook {
                repo: repo.clone(),
                deliverer,
                clock: clock.clone(),
                max_attempts: settings.webhooks.max_attempts,
            };
            runner.spawn(Arc::new(deliver), 1, notifier.webhook_signal());
        }
        let sweep = Sweep {
            avatars: avatars.clone(),
            store: store.clone(),
            temp_retention: settings.uploads.temp_retention,
        };
        runner.every(
            "sweep-temporary-data",
            settings.cache.cleanup_interval.max(Duration::from_secs(1)),
            move || {
                let sweep = sweep.clone();
                async move { sweep.run().await }
            },
        );
        let mut background = Vec::new();

        let state = AppState::new(App {
            jwt,
            uploads,
            notifier,
            store,
            api_key_digests: settings
                .server
                .api_keys
                .iter()
                .map(|k| Sha256::digest(k.expose().trim().as_bytes()).into())
                .collect(),
            keys,
            urls,
            repo,
            clock,
            avatars,
            metrics: Metrics {
                prometheus,
                serve_latency: metrics::histogram!("avatar_serve_duration_seconds"),
            },
            settings: Arc::new(settings),
        });

        let rebuild = tokio::task::spawn_blocking({
            let disk = disk.clone();
            move || {
                let entries = disk.rebuild();
                tracing::info!(entries, "disk cache index rebuilt");
            }
        });
        // The recorder keeps histogram samples until upkeep drains them: without a scraper,
        // they would pile up for ever.
        let prometheus = state.metrics.prometheus.clone();
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                prometheus.run_upkeep();
            }
        }));
        background.push(tokio::spawn(async move {
            let _ = rebuild.await;
        }));
        Ok(Self {
            listener,
            state,
            runner,
            background,
        })
    }

    /// The bound address (port 0 in tests becomes a real port).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The state (tests reach the key deriver through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until SIGTERM or Ctrl-C.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run(shutdown_signal()).await
    }

    /// Serve until `shutdown` completes, then finish in-flight requests.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(address = %self.local_addr(), base_url = %self.state.urls.base(), "avatar-proxy listening");
        let result = crate::http::routes::serve(self.listener, self.state.clone(), shutdown).await;
        // Jobs in progress finish (up to the drain timeout); nothing new is claimed.
        self.runner
            .drain(self.state.settings.jobs.drain_timeout)
            .await;
        for task in self.background {
            task.abort();
        }
        tracing::info!("avatar-proxy stopped");
        result
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
