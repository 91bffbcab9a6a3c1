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
use crate::jobs::JobContext;
use crate::keys::{KeyDeriver, load_or_create_secret};
use crate::repo::Repo;
use crate::repo::sqlite::SqliteRepo;
use crate::store::{BlobStore, ObjectBlobStore};
use crate::uploads::Uploads;
use crate::upstream::{Fetcher, Upstreams};
use crate::webhooks::Deliverer;

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
        let public_base_url = if settings.server.public_base_url.is_empty() {
            format!("http://{local}")
        } else {
            settings
                .server
                .public_base_url
                .trim_end_matches('/')
                .to_owned()
        };

        let webhook_url = Some(settings.webhooks.url.clone()).filter(|u| !u.is_empty());
        let notifier = Notifier::new(repo.clone(), clock.clone(), webhook_url.clone());
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
            public_base_url.clone(),
            wake_jobs.clone(),
        );
        let mut background = Vec::new();
        for _ in 0..settings.jobs.workers {
            background.push(tokio::spawn(crate::jobs::run_worker(JobContext {
                repo: repo.clone(),
                store: store.clone(),
                avatars: avatars.clone(),
                pool: pool.clone(),
                notifier: notifier.clone(),
                clock: clock.clone(),
                jobs: settings.jobs.clone(),
                uploads: settings.uploads.clone(),
                base_url: public_base_url.clone(),
                wake: wake_jobs.clone(),
            })));
        }
        if let Some(_url) = &webhook_url {
            let deliverer = Deliverer::new(
                repo.clone(),
                clock.clone(),
                settings.webhooks.secret.expose(),
                settings.webhooks.allow_private,
                settings.webhooks.max_attempts,
                notifier.webhook_signal(),
            )
            .map_err(|e| {
                anyhow::anyhow!(
                    "invalid configuration: webhooks.secret (AVATAR_WEBHOOK_SECRET): {e}"
                )
            })?;
            background.push(tokio::spawn(deliverer.run()));
        }

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
            public_base_url,
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
        background.push(tokio::spawn(cleanup_loop(state.clone())));
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
        tracing::info!(address = %self.local_addr(), base_url = %self.state.public_base_url, "avatar-proxy listening");
        let result = crate::http::routes::serve(self.listener, self.state.clone(), shutdown).await;
        for task in self.background {
            task.abort();
        }
        tracing::info!("avatar-proxy stopped");
        result
    }
}

/// Periodic housekeeping: orphaned cache content and temp files, gauges.
async fn cleanup_loop(state: AppState) {
    let period = state
        .settings
        .cache
        .cleanup_interval
        .max(Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let disk = state.avatars.disk().clone();
        let removed =
            tokio::task::spawn_blocking(move || disk.collect_garbage(Duration::from_secs(600)))
                .await
                .unwrap_or(0);
        if removed > 0 {
            tracing::info!(removed, "cache cleanup removed orphaned files");
        }
        match state
            .store
            .delete_older_than("tmp", state.settings.uploads.temp_retention)
            .await
        {
            Ok(0) => {}
            Ok(swept) => tracing::info!(swept, "swept expired upload originals"),
            Err(e) => tracing::warn!(error = %e, "could not sweep upload originals"),
        }
        state.publish_gauges();
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
