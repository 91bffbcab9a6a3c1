//! Serving benchmarks: the three paths an `<img>` request can take, measured end to end over HTTP
//! against the real server on loopback (router, middleware, resolver, caches, fetcher, imaging),
//! with an in-process fake upstream serving a generated ~38 KB JPEG. No network, no files from
//! elsewhere.
//!
//! - `memory_hit`: `GET /avatar/{key}` of a key already served: the hot path (no I/O at all).
//! - `disk_hit`: the variant is on disk but not in memory (see [`disk_hit`] for how that is
//!   isolated): registry cache, disk index, one content read, a memory-tier insert.
//! - `miss`: a key never seen: registry lookup, upstream fetch, store, decode, resize, encode,
//!   store the variant.
//!
//! Every request asserts its `x-cache` header, so a bench that silently measured another path
//! fails instead of reporting a wrong number. Client, server and fake upstream share one
//! current-thread runtime, and requests go one after another over a keep-alive connection: each
//! figure is the CPU cost of one request through both HTTP stacks and the loopback, without
//! cross-thread wake-ups. (With the server on its own multi-thread runtime, this VM measured
//! 40 µs or 121 µs for the same memory hit depending on whether the other core was busy: idle
//! cores wake slowly, and that latency swamped the path under test.) Throughput with the
//! server's real runtime, against nginx, is `benches/load.sh`'s job.
//!
//! Run: `cargo bench --bench serving` (add a filter such as `-- memory_hit` to run one).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use avatar_proxy::http::AppState;
use avatar_proxy::{Application, Settings};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use criterion::{Criterion, Throughput};
use tokio::runtime::Runtime;

#[allow(dead_code)]
#[path = "support/fixture.rs"]
mod fixture;

const API_KEY: &str = "bench-service-key";

/// The fake identity provider: `GET /a/{tag}` answers the fixture, made byte-distinct per tag
/// so that distinct users never share an upstream copy or a variant.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

struct UpstreamState {
    jpeg: Vec<u8>,
    hits: Arc<AtomicUsize>,
}

async fn upstream_avatar(
    State(state): State<Arc<UpstreamState>>,
    Path(tag): Path<String>,
) -> impl IntoResponse {
    state.hits.fetch_add(1, Ordering::Relaxed);
    (
        [(header::CONTENT_TYPE, "image/jpeg")],
        fixture::tagged(&state.jpeg, tag.as_bytes()),
    )
}

fn start_upstream(rt: &Runtime) -> Upstream {
    let hits = Arc::new(AtomicUsize::new(0));
    let state = Arc::new(UpstreamState {
        jpeg: fixture::avatar_jpeg(),
        hits: hits.clone(),
    });
    let router = axum::Router::new()
        .route("/a/{tag}", axum::routing::get(upstream_avatar))
        .with_state(state);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the fake upstream");
    let addr = listener.local_addr().expect("upstream address");
    rt.spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Upstream { addr, hits }
}

/// One running avatar-proxy, with its own cache directory.
struct Service {
    base: String,
    upstream: SocketAddr,
    state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Service {
    fn start(rt: &Runtime, upstream: SocketAddr, extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("cache dir");
        let mut env: Vec<(String, String)> = vec![
            ("AVATAR_LISTEN".into(), "127.0.0.1:0".into()),
            ("AVATAR_CACHE_DIR".into(), dir.path().display().to_string()),
            ("AVATAR_API_KEYS".into(), API_KEY.into()),
            ("AVATAR_UPSTREAM_BENCH_HOSTS".into(), upstream.to_string()),
            (
                "AVATAR_UPSTREAM_BENCH_BEARER".into(),
                "bench-upstream-token".into(),
            ),
            ("AVATAR_UPSTREAM_BENCH_ALLOW_HTTP".into(), "true".into()),
            ("AVATAR_UPSTREAM_BENCH_ALLOW_PRIVATE".into(), "true".into()),
        ];
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let settings = Settings::load_from(None, env).expect("bench settings are valid");
        let app = rt
            .block_on(Application::build(settings))
            .expect("the app builds");
        let base = format!("http://{}", app.local_addr());
        let state = app.state().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = rt.spawn(async move {
            let _ = app
                .run(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            base,
            upstream,
            state,
            shutdown: Some(tx),
            server: Some(server),
            _dir: dir,
        }
    }

    /// The avatar URL of `user_id` (the key comes from the app's own deriver).
    fn avatar_url(&self, user_id: &str) -> String {
        format!("{}/avatar/{}", self.base, self.state.keys.key_for(user_id))
    }

    /// Register users through the identity API, each with its own upstream URL. Batched through
    /// `rewrite` (one transaction per call) so registering hundreds stays quick.
    async fn register(&self, client: &reqwest::Client, user_ids: &[String]) {
        for chunk in user_ids.chunks(1000) {
            let identities: Vec<serde_json::Value> = chunk
                .iter()
                .map(|id| {
                    serde_json::json!({
                        "id": id,
                        "avatar_url": format!("http://{}/a/{id}", self.upstream),
                        "display_name": "Bench User",
                    })
                })
                .collect();
            let response = client
                .post(format!("{}/v1/identities/rewrite", self.base))
                .bearer_auth(API_KEY)
                .json(&serde_json::json!({"identities": identities, "prefetch": "none"}))
                .send()
                .await
                .expect("rewrite sent");
            assert_eq!(response.status(), 200, "rewrite refused");
            let body: serde_json::Value = response.json().await.expect("rewrite answer");
            assert_eq!(
                body["rewritten"].as_u64(),
                Some(chunk.len() as u64),
                "every identity registered: {body}"
            );
        }
    }

    fn stop(mut self, rt: &Runtime) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = rt.block_on(server);
        }
    }
}

/// GET an avatar, read the whole body, and insist it took the expected path.
async fn get(client: &reqwest::Client, url: &str, expected: &str) -> usize {
    let response = client.get(url).send().await.expect("request sent");
    assert_eq!(response.status(), 200, "GET {url}");
    let cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.bytes().await.expect("body read");
    assert_eq!(cache, expected, "GET {url} took the wrong path");
    body.len()
}

fn client() -> reqwest::Client {
    // Keep-alive is reqwest's default; `no_proxy` so proxy variables of the environment cannot
    // route loopback traffic elsewhere.
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("HTTP client")
}

fn runtime() -> Runtime {
    // One thread for everything (see the module docs); image work still goes to the blocking
    // pool, as in production.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// (a) The hot path: a key already served, answered from the memory tier.
fn memory_hit(c: &mut Criterion, rt: &Runtime, upstream: &Upstream) {
    // Set up lazily: criterion only calls the closure when the bench is not filtered out.
    let mut setup: Option<(Service, reqwest::Client, String)> = None;
    let mut group = c.benchmark_group("serving");
    group.throughput(Throughput::Elements(1));
    group.bench_function("memory_hit", |b| {
        let (_, http, url) = setup.get_or_insert_with(|| {
            let service = Service::start(rt, upstream.addr, &[]);
            let http = client();
            let url = service.avatar_url("memory-hit-user");
            rt.block_on(async {
                service
                    .register(&http, &["memory-hit-user".to_owned()])
                    .await;
                get(&http, &url, "miss").await;
                let size = get(&http, &url, "hit-memory").await;
                eprintln!("memory_hit: one key, {size} B body");
            });
            (service, http, url)
        });
        let (http, url): (&reqwest::Client, &str) = (http, url);
        b.to_async(rt).iter(|| get(http, url, "hit-memory"));
    });
    group.finish();
    if let Some((service, ..)) = setup {
        service.stop(rt);
    }
}

/// (b) A disk-tier hit: the variant is on disk, its rendition is not in memory.
///
/// How that is isolated: the memory tier is an LRU bounded in bytes, and its smallest setting is
/// 1 MiB (`AVATAR_MEMORY_CACHE_MB=1`). We register K users with distinct images, K at least twice
/// the number of renditions that fit in 1 MiB, serve each once (rendering its variant to disk),
/// then request them round-robin. With cyclic access over more keys than the LRU holds, every
/// key was evicted by the time its turn comes back (each key is inserted on its miss and not read
/// again for K requests; more than capacity inserts happened in between), so every request is a
/// memory miss whose source copy and variant are both on the disk tier: `x-cache: hit-disk`,
/// asserted on each request. Nothing else is cold: the registry cache (60 s TTL) is warm, the
/// files are in the page cache (as a hot disk tier's would be), and no upstream is contacted.
/// The memory-tier insert and the eviction it triggers are part of the measured cost, as they
/// are in production. A fresh app over the same cache dir would measure each key's disk hit only
/// once, and serving distinct sizes of one key would measure renders, not disk hits.
fn disk_hit(c: &mut Criterion, rt: &Runtime, upstream: &Upstream) {
    let mut setup: Option<(Service, reqwest::Client, Vec<String>)> = None;
    let next = AtomicUsize::new(0);
    let mut group = c.benchmark_group("serving");
    group.throughput(Throughput::Elements(1));
    group.bench_function("disk_hit", |b| {
        let (_, http, urls) = setup.get_or_insert_with(|| {
            let service = Service::start(rt, upstream.addr, &[("AVATAR_MEMORY_CACHE_MB", "1")]);
            let http = client();
            let urls = rt.block_on(async {
                let probe = vec!["disk-hit-probe".to_owned()];
                service.register(&http, &probe).await;
                let size = get(&http, &service.avatar_url(&probe[0]), "miss").await;
                // Memory-tier weight of a rendition: body + 512 bytes (`Rendition::weight`).
                let capacity = (1024 * 1024) / (size + 512);
                let keys = (2 * capacity + 16).min(4000);
                let ids: Vec<String> = (0..keys).map(|i| format!("disk-hit-{i}")).collect();
                service.register(&http, &ids).await;
                let urls: Vec<String> = ids.iter().map(|id| service.avatar_url(id)).collect();
                for url in &urls {
                    get(&http, url, "miss").await;
                }
                eprintln!(
                    "disk_hit: {keys} keys cycled through a 1 MiB memory tier \
                     (holds ~{capacity} renditions of {size} B)"
                );
                urls
            });
            (service, http, urls)
        });
        let (http, urls, next): (&reqwest::Client, &[String], &AtomicUsize) = (http, urls, &next);
        b.to_async(rt).iter(|| {
            let i = next.fetch_add(1, Ordering::Relaxed) % urls.len();
            get(http, &urls[i], "hit-disk")
        });
    });
    group.finish();
    if let Some((service, ..)) = setup {
        service.stop(rt);
    }
}

/// (c) A miss: a user never seen, so upstream fetch → store → render → store the variant.
/// Registration happens before the clock starts (it is the identity API's cost, not serving's);
/// each timed request is the first GET of a freshly registered user with a byte-distinct image.
fn miss(c: &mut Criterion, rt: &Runtime, upstream: &Upstream) {
    let mut setup: Option<(Service, reqwest::Client)> = None;
    let fetched_before = upstream.hits.load(Ordering::Relaxed);
    let serial = AtomicUsize::new(0);
    let served = AtomicUsize::new(0);
    let mut group = c.benchmark_group("serving");
    group.throughput(Throughput::Elements(1));
    // A miss costs milliseconds (a render): fewer, longer samples.
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("miss", |b| {
        let (service, http) =
            setup.get_or_insert_with(|| (Service::start(rt, upstream.addr, &[]), client()));
        let (service, http, serial, served): (&Service, &reqwest::Client, _, _) =
            (service, http, &serial, &served);
        b.to_async(rt).iter_custom(|iters| async move {
            let first = serial.fetch_add(iters as usize, Ordering::Relaxed);
            let ids: Vec<String> = (first..first + iters as usize)
                .map(|i| format!("miss-{i}"))
                .collect();
            service.register(http, &ids).await;
            let urls: Vec<String> = ids.iter().map(|id| service.avatar_url(id)).collect();
            let started = Instant::now();
            for url in &urls {
                get(http, url, "miss").await;
            }
            let elapsed = started.elapsed();
            served.fetch_add(urls.len(), Ordering::Relaxed);
            elapsed
        });
    });
    group.finish();
    if let Some((service, _)) = setup {
        // Every miss really went upstream (no sharing, no coalescing across users).
        let fetched = upstream.hits.load(Ordering::Relaxed) - fetched_before;
        assert_eq!(
            fetched,
            served.load(Ordering::Relaxed),
            "one upstream fetch per miss"
        );
        service.stop(rt);
    }
}

fn serving(c: &mut Criterion) {
    let rt = runtime();
    let upstream = start_upstream(&rt);
    // Each bench gets its own service and cache directory.
    memory_hit(c, &rt, &upstream);
    disk_hit(c, &rt, &upstream);
    miss(c, &rt, &upstream);
}

// What `criterion_group!`/`criterion_main!` expand to, written out: the macros generate an
// undocumented public function, which the crate's `missing_docs` lint would flag.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    serving(&mut c);
    c.final_summary();
}
