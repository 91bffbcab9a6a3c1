//! Assembly: build the services from the settings, bind the listener, start the job runner,
//! serve until shutdown, then drain the jobs.
//!
//! [`Application::build_with`] reads as the list of its steps; each is a short function below,
//! and [`backends`] opens the metadata repository and the blob store the settings name.

pub mod backends;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::minter::TokenMinter;
use crate::avatars::{AvatarSettings, Avatars, DefaultChoice};
use crate::cache::{DiskTier, Lifetimes};
use crate::clock::{Clock, SystemClock};
use crate::config::{DefaultImage, DemoMode, Secret, Settings};
use crate::events::Notifier;
use crate::http::limits::EdgeLimits;
use crate::http::streams::StreamSlots;
use crate::http::{App, AppState, Metrics};
use crate::identities::Identities;
use crate::imaging::{self, DefaultStyle, ImagePool};
use crate::jobs::{
    Backoff, DeliverWebhook, ProcessUpload, PurgeExpired, Runner, RunnerSettings, Sweep,
};
use crate::keys::{KeyDeriver, load_or_create_secret};
use crate::repo::Repo;
use crate::store::BlobStore;
use crate::uploads::Uploads;
use crate::upstream::{
    BackoffPolicy, CredentialSettings, FetchSettings, Fetcher, UpstreamSettings, Upstreams,
};
use crate::urls::PublicUrls;
use crate::webhooks::Deliverer;
use backends::Backends;

/// How often clients whose rate allowance is full again are forgotten.
const LIMITER_UPKEEP: Duration = Duration::from_secs(60);

/// How often idle job workers look for due jobs (they are also woken when one is queued).
const JOB_POLL: Duration = Duration::from_millis(250);

/// Replaceable dependencies (tests inject a clock and a faulty store).
#[derive(Default)]
pub struct Overrides {
    /// Time source; the system clock when `None`.
    pub clock: Option<Arc<dyn Clock>>,
    /// Blob store; the one `store.url` names when `None`.
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

/// What the services are built from.
struct Core {
    clock: Arc<dyn Clock>,
    repo: Arc<dyn Repo>,
    store: Arc<dyn BlobStore>,
    pool: ImagePool,
    urls: PublicUrls,
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
    pub async fn build_with(mut settings: Settings, overrides: Overrides) -> anyhow::Result<Self> {
        // First: handles registered from here on (the cache tiers' counters) reach the exporter.
        let prometheus = crate::telemetry::prometheus();
        let secret = prepare_cache_dir(&settings)?;
        let Backends { repo, store } = backends::open(&settings, overrides.store).await?;
        let (listener, urls) = bind(&settings).await?;
        let core = Core {
            clock: overrides.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            repo,
            store,
            pool: ImagePool::new(image_workers(&settings)),
            urls,
        };
        let disk = open_disk(&settings)?;
        let avatars = build_avatars(&settings, &core, disk.clone())?;
        let keys = KeyDeriver::new(&secret);
        let notifier = Notifier::new(
            core.repo.clone(),
            core.clock.clone(),
            Some(settings.webhooks.url.clone()).filter(|u| !u.is_empty()),
            settings.events.buffer,
        );
        let wake_jobs = Arc::new(Notify::new());
        let uploads = Uploads::new(
            core.repo.clone(),
            core.store.clone(),
            &keys.sign("upload-url", b""),
            settings.uploads.clone(),
            decode_limits(&settings),
            core.clock.clone(),
            notifier.clone(),
            core.urls.clone(),
            wake_jobs.clone(),
        );
        let mut runner = start_jobs(&settings, &core, &avatars, &notifier, wake_jobs)?;
        let limits = Arc::new(EdgeLimits::new(&settings.rate_limits));
        let upkeep = limits.clone();
        runner.every("forget-idle-clients", LIMITER_UPKEEP, move || {
            upkeep.forget_idle();
            std::future::ready(())
        });
        let demo = demo_tokens(&mut settings)?;
        let identities = Identities {
            avatars: avatars.clone(),
            keys: keys.clone(),
            urls: core.urls.clone(),
            clock: core.clock.clone(),
            max_records: settings.server.rewrite_max_records,
            prefetch_concurrency: settings.cache.max_concurrent_downloads,
        };
        let state = AppState::new(App {
            demo,
            jwt: crate::auth::verifier(&settings.auth)
                .map_err(|e| anyhow::anyhow!("invalid configuration: auth.jwt_* (AVATAR_JWT_ALGORITHM, AVATAR_JWT_SECRET, AVATAR_JWT_PUBLIC_KEY or _FILE): {e}"))?,
            api_key_digests: api_key_digests(&settings),
            metrics: Metrics {
                prometheus,
                serve_latency: metrics::histogram!("avatar_serve_duration_seconds"),
            },
            uploads,
            identities,
            notifier,
            keys,
            avatars,
            store: core.store,
            limits,
            streams: StreamSlots::new(settings.events.max_streams_per_user),
            shutdown: CancellationToken::new(),
            repo: core.repo,
            clock: core.clock,
            urls: core.urls,
            settings: Arc::new(settings),
        });
        let background = housekeeping(&state, disk);
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
        if self.state.demo.is_some() {
            tracing::info!(url = %format!("{}/demo/", self.state.urls.base()), "profile page (demo mode)");
        }
        // One signal stops both at once: the HTTP connections get their shutdown timeout, the
        // jobs in progress their drain timeout (nothing new is claimed), side by side.
        // The state's token: event streams close on it too.
        let stop = self.state.shutdown.clone();
        let signalled = stop.clone();
        let http_shutdown = async move {
            shutdown.await;
            signalled.cancel();
        };
        let drain_timeout = self.state.settings.jobs.drain_timeout;
        let runner = self.runner;
        let drained = async move {
            stop.cancelled().await;
            runner.drain(drain_timeout).await;
        };
        let (result, ()) = tokio::join!(
            crate::http::routes::serve(self.listener, self.state.clone(), http_shutdown),
            drained
        );
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

/// Make every file the process writes private (umask 077), create the cache dir (0700), and
/// read or create the key secret kept there.
fn prepare_cache_dir(settings: &Settings) -> anyhow::Result<Vec<u8>> {
    let dir = &settings.cache.dir;
    crate::fsutil::restrict_new_files();
    crate::fsutil::create_private_dir(dir).with_context(|| {
        format!(
            "cannot create the cache directory (cache.dir, AVATAR_CACHE_DIR = {})",
            dir.display()
        )
    })?;
    load_or_create_secret(&settings.server.key_secret, dir)
        .context("cannot read or create the key secret in the cache directory")
}

/// Bind the listener; the public URLs default to its address.
async fn bind(settings: &Settings) -> anyhow::Result<(TcpListener, PublicUrls)> {
    let addr = settings.server.listen;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (server.listen, AVATAR_LISTEN)"))?;
    let urls = match &settings.server.public_base_url {
        Some(base) => PublicUrls::new(base.as_str()),
        None => PublicUrls::new(&format!("http://{}", listener.local_addr()?)),
    };
    Ok((listener, urls))
}

/// Image workers: the configured number, or one per core.
fn image_workers(settings: &Settings) -> usize {
    match settings.images.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    }
}

fn decode_limits(settings: &Settings) -> imaging::Limits {
    imaging::Limits {
        max_pixels: settings.images.max_pixels,
        max_jpeg_scans: settings.images.max_jpeg_scans,
        max_decode_bytes: settings.images.max_decode_bytes,
        ..imaging::Limits::default()
    }
}

fn open_disk(settings: &Settings) -> anyhow::Result<DiskTier> {
    let budget = settings.cache.max_size_mb.saturating_mul(1024 * 1024);
    DiskTier::open(&settings.cache.dir.join("cache"), budget).context("cannot open the disk cache")
}

/// The upstreams as the upstream layer takes them.
fn upstream_settings(settings: &Settings) -> Vec<UpstreamSettings> {
    settings
        .upstreams
        .iter()
        .map(|(name, s)| UpstreamSettings {
            name: name.clone(),
            hosts: s.hosts.clone(),
            credential: CredentialSettings {
                pat: s.pat.expose().to_owned(),
                bearer: s.bearer.expose().to_owned(),
                basic_user: s.basic_user.expose().to_owned(),
                basic_password: s.basic_password.expose().to_owned(),
                header: s.header.expose().to_owned(),
                cookie: s.cookie.expose().to_owned(),
            },
            allow_http: s.allow_http,
            allow_private: s.allow_private,
            max_concurrent: s.max_concurrent,
        })
        .collect()
}

/// What the fetcher takes from the settings.
fn fetch_settings(settings: &Settings, limits: imaging::Limits) -> FetchSettings {
    let u = &settings.upstream;
    FetchSettings {
        timeout: u.timeout,
        connect_timeout: u.connect_timeout,
        max_concurrent: settings.cache.max_concurrent_downloads,
        queue_timeout: u.queue_timeout,
        backoff: BackoffPolicy {
            base: u.backoff,
            max: u.max_retry_after,
            failures_to_open: u.failures_before_backoff.max(1),
        },
        warn_interval: u.warn_interval,
        max_bytes: settings.images.max_image_bytes,
        limits,
    }
}

fn default_choice(image: DefaultImage) -> DefaultChoice {
    match image {
        DefaultImage::NotFound => DefaultChoice::NotFound,
        DefaultImage::Identicon => DefaultChoice::Style(DefaultStyle::Identicon),
        DefaultImage::MysteryPerson => DefaultChoice::Style(DefaultStyle::MysteryPerson),
        DefaultImage::Initials => DefaultChoice::Style(DefaultStyle::Initials),
        DefaultImage::Blank => DefaultChoice::Style(DefaultStyle::Blank),
    }
}

/// The resolver, with its fetcher and caches.
fn build_avatars(settings: &Settings, core: &Core, disk: DiskTier) -> anyhow::Result<Avatars> {
    let upstreams = Upstreams::from_settings(&upstream_settings(settings))
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let limits = decode_limits(settings);
    let fetcher = Fetcher::new(
        upstreams,
        fetch_settings(settings, limits),
        core.clock.clone(),
    )
    .context("cannot build the HTTP client")?;
    let avatar_settings = AvatarSettings {
        sizes: settings.sorted_sizes(),
        default_size: settings.images.default_size,
        default: default_choice(settings.images.default_image),
        lifetimes: Lifetimes {
            ttl: settings.cache.fresh_for(),
            grace: settings.cache.stale_for(),
        },
        negative_ttl: settings.cache.negative_ttl,
        limits,
        request_timeout: settings.server.serve_timeout,
    };
    Ok(Avatars::new(
        avatar_settings,
        settings.cache.memory_mb.saturating_mul(1024 * 1024),
        disk,
        fetcher,
        core.repo.clone(),
        core.store.clone(),
        core.clock.clone(),
        core.pool.clone(),
    ))
}

/// The runner with every job type: upload processing, webhook delivery, the periodic sweep and
/// purge.
fn start_jobs(
    settings: &Settings,
    core: &Core,
    avatars: &Avatars,
    notifier: &Notifier,
    wake_jobs: Arc<Notify>,
) -> anyhow::Result<Runner> {
    let jobs = &settings.jobs;
    let backoff = Backoff {
        base: jobs.retry_base,
        max: jobs.retry_max,
    };
    let runner_settings = RunnerSettings {
        lease: jobs.lease,
        heartbeat: jobs.heartbeat,
        poll: JOB_POLL,
        backoff,
    };
    let mut runner = Runner::new(core.clock.clone(), runner_settings);
    let process_upload = ProcessUpload {
        repo: core.repo.clone(),
        store: core.store.clone(),
        avatars: avatars.clone(),
        pool: core.pool.clone(),
        notifier: notifier.clone(),
        clock: core.clock.clone(),
        max_attempts: jobs.max_attempts,
        uploads: settings.uploads.clone(),
        urls: core.urls.clone(),
    };
    runner.spawn(Arc::new(process_upload), jobs.workers, wake_jobs);
    if !settings.webhooks.url.is_empty() {
        let webhooks = &settings.webhooks;
        let deliverer =
            Deliverer::new(webhooks.secret.expose(), webhooks.allow_private).map_err(|e| {
                anyhow::anyhow!(
                    "invalid configuration: webhooks.secret (AVATAR_WEBHOOK_SECRET): {e}"
                )
            })?;
        let deliver = DeliverWebhook {
            repo: core.repo.clone(),
            deliverer,
            clock: core.clock.clone(),
            max_attempts: webhooks.max_attempts,
        };
        runner.spawn(Arc::new(deliver), 1, notifier.webhook_signal());
    }
    let sweep = Sweep {
        avatars: avatars.clone(),
        store: core.store.clone(),
        temp_retention: settings.uploads.temp_retention,
    };
    let period = settings.cache.cleanup_interval.max(Duration::from_secs(1));
    runner.every("sweep-temporary-data", period, move || {
        let sweep = sweep.clone();
        async move { sweep.run().await }
    });
    let purge = PurgeExpired {
        repo: core.repo.clone(),
        clock: core.clock.clone(),
        grant_retention: settings.uploads.temp_retention,
        job_retention: jobs.retention,
    };
    runner.every("purge-expired-records", period, move || {
        let purge = purge.clone();
        async move { purge.run().await }
    });
    Ok(runner)
}

/// Demo mode (the page at `/demo/` and `POST /demo/token`) mints HS256 tokens, so it needs an
/// HS256 secret: without any JWT configuration one is generated for this process and used to
/// verify user tokens too. With a public key configured, `auto` turns demo mode off and `true`
/// is a configuration error.
fn demo_tokens(settings: &mut Settings) -> anyhow::Result<Option<TokenMinter>> {
    if !settings.demo_enabled() {
        return Ok(None);
    }
    let auth = &mut settings.auth;
    let public_key =
        !auth.jwt_public_key.trim().is_empty() || !auth.jwt_public_key_file.trim().is_empty();
    if public_key {
        if settings.demo.enabled == DemoMode::On {
            anyhow::bail!(
                "invalid configuration: demo.enabled (AVATAR_DEMO): demo tokens are HS256, but user \
                 tokens are verified with a public key (AVATAR_JWT_PUBLIC_KEY[_FILE])"
            );
        }
        tracing::info!("demo page off: user tokens are verified with a public key");
        return Ok(None);
    }
    if auth.jwt_secret.is_empty() {
        auth.jwt_secret = Secret::new(hex::encode(rand::random::<[u8; 32]>()));
        tracing::warn!(
            "demo mode without AVATAR_JWT_SECRET: user tokens are checked against a secret \
             generated for this process"
        );
    }
    Ok(Some(TokenMinter::new(
        auth.jwt_secret.expose().as_bytes(),
        settings.demo.token_ttl,
        Some(auth.jwt_issuer.trim().to_owned()),
        Some(auth.jwt_audience.trim().to_owned()),
    )))
}

/// SHA-256 of each service API key (compared in constant time).
fn api_key_digests(settings: &Settings) -> Vec<[u8; 32]> {
    settings
        .server
        .api_keys
        .iter()
        .map(|k| Sha256::digest(k.expose().trim().as_bytes()).into())
        .collect()
}

/// Tasks with nothing to finish: the disk index rebuild and the metrics upkeep.
fn housekeeping(state: &AppState, disk: DiskTier) -> Vec<JoinHandle<()>> {
    let rebuild = tokio::task::spawn_blocking(move || {
        let entries = disk.rebuild();
        tracing::info!(entries, "disk cache index rebuilt");
    });
    // The recorder keeps histogram samples until upkeep drains them: without a scraper,
    // they would pile up for ever.
    let prometheus = state.metrics.prometheus.clone();
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            prometheus.run_upkeep();
        }
    });
    vec![
        upkeep,
        tokio::spawn(async move {
            let _ = rebuild.await;
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_slots_and_per_upstream_limits_come_from_the_environment() {
        let env = [
            ("AVATAR_UPSTREAM_QUEUE_TIMEOUT", "2s"),
            ("AVATAR_UPSTREAM_MAX_RETRY_AFTER", "3m"),
            ("AVATAR_UPSTREAM_BACKOFF", "10s"),
            ("AVATAR_UPSTREAM_FAILURES_BEFORE_BACKOFF", "5"),
            ("AVATAR_UPSTREAM_WARN_INTERVAL", "1m"),
            ("AVATAR_UPSTREAM_AZURE_HOSTS", "dev.azure.com"),
            ("AVATAR_UPSTREAM_AZURE_MAX_CONCURRENT", "4"),
            ("AVATAR_UPSTREAM_GITLAB_HOSTS", "gitlab.example.com"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let settings = Settings::load_from(None, env).expect("valid");
        let f = fetch_settings(&settings, imaging::Limits::default());
        assert_eq!(f.queue_timeout, Duration::from_secs(2));
        assert_eq!(f.backoff.max, Duration::from_secs(180));
        assert_eq!(f.backoff.base, Duration::from_secs(10));
        assert_eq!(f.backoff.failures_to_open, 5);
        assert_eq!(f.warn_interval, Duration::from_secs(60));
        let upstreams = Upstreams::from_settings(&upstream_settings(&settings)).expect("valid");
        let limit = |name: &str| {
            upstreams
                .iter()
                .find(|u| u.name == name)
                .map(|u| u.max_concurrent)
        };
        assert_eq!(limit("azure"), Some(Some(4)));
        assert_eq!(
            limit("gitlab"),
            Some(None),
            "half the global limit by default"
        );
        assert!(
            !settings.upstreams.contains_key("queue"),
            "not an upstream named QUEUE"
        );
    }
}
