//! `spawn_app()` and the fake upstream.

use std::collections::HashMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use avatar_proxy::clock::ManualClock;
use avatar_proxy::{Application, Settings};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

pub const API_KEY: &str = "test-service-key";
pub const UPSTREAM_TOKEN: &str = "upstream-secret-token";

/// A running service under test.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: ManualClock,
    pub dir: Arc<tempfile::TempDir>,
    pub state: avatar_proxy::http::AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    pub fn key_for(&self, user_id: &str) -> String {
        self.state.keys.key_for(user_id).to_string()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request sent")
    }

    /// Register `user_id` with an upstream avatar URL through the identity API.
    pub async fn register(&self, user_id: &str, avatar_url: &str) -> String {
        let response = self
            .client
            .put(format!("{}/v1/identities/{user_id}", self.base))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({"avatar_url": avatar_url, "display_name": "Test User"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        let body: serde_json::Value = response.json().await.expect("json");
        body["key"].as_str().expect("key").to_owned()
    }

    /// Stop the server and wait for it (so the cache dir can be reopened).
    pub async fn stop(mut self) -> Arc<tempfile::TempDir> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        self.dir.clone()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Settings for a test: loopback, port 0, a temp cache dir, plus `extra` variables.
pub fn settings(dir: &std::path::Path, extra: &[(&str, String)]) -> Settings {
    let mut env: Vec<(String, String)> = vec![
        ("AVATAR_LISTEN".into(), "127.0.0.1:0".into()),
        ("AVATAR_CACHE_DIR".into(), dir.display().to_string()),
        ("AVATAR_API_KEYS".into(), API_KEY.into()),
        ("AVATAR_UPSTREAM_TIMEOUT".into(), "5s".into()),
        // Tests send hundreds of requests from one address; the rate limit tests turn them on.
        ("AVATAR_RATE_LIMIT_AVATAR_PER_MINUTE".into(), "0".into()),
        ("AVATAR_RATE_LIMIT_API_PER_MINUTE".into(), "0".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    Settings::load_from(None, env).expect("test settings are valid")
}

/// Upstream variables for the fake upstream at `addr`: bearer credential, loopback allowed.
pub fn upstream_env(name: &str, addr: SocketAddr) -> Vec<(&'static str, String)> {
    let prefix: &'static str = Box::leak(format!("AVATAR_UPSTREAM_{name}").into_boxed_str());
    vec![
        (leak(format!("{prefix}_HOSTS")), addr.to_string()),
        (leak(format!("{prefix}_BEARER")), UPSTREAM_TOKEN.into()),
        (leak(format!("{prefix}_ALLOW_HTTP")), "true".into()),
        (leak(format!("{prefix}_ALLOW_PRIVATE")), "true".into()),
    ]
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

pub async fn spawn_app(extra: &[(&str, String)]) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    spawn_app_in(dir, extra, ManualClock::new()).await
}

pub async fn spawn_app_in(
    dir: Arc<tempfile::TempDir>,
    extra: &[(&str, String)],
    clock: ManualClock,
) -> TestApp {
    spawn(dir, extra, clock, None).await
}

pub async fn spawn_app_with_store(
    dir: Arc<tempfile::TempDir>,
    extra: &[(&str, String)],
    store: Arc<dyn avatar_proxy::store::BlobStore>,
) -> TestApp {
    spawn(dir, extra, ManualClock::new(), Some(store)).await
}

async fn spawn(
    dir: Arc<tempfile::TempDir>,
    extra: &[(&str, String)],
    clock: ManualClock,
    store: Option<Arc<dyn avatar_proxy::store::BlobStore>>,
) -> TestApp {
    let settings = settings(dir.path(), extra);
    let overrides = avatar_proxy::app::Overrides {
        clock: Some(Arc::new(clock.clone())),
        store,
    };
    let app = Application::build_with(settings, overrides)
        .await
        .expect("app builds");
    let addr = app.local_addr();
    let state = app.state().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = app
            .run(async move {
                let _ = rx.await;
            })
            .await;
    });
    TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        clock,
        dir,
        state,
        shutdown: Some(tx),
        server: Some(server),
    }
}

/// A square JPEG of one colour.
pub fn jpeg(color: [u8; 3], side: u32) -> Bytes {
    let img = image::RgbImage::from_pixel(side, side, image::Rgb(color));
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encode");
    Bytes::from(out.into_inner())
}

/// The colour at the centre of an image served to us, and its dimensions.
pub fn centre(bytes: &[u8]) -> ([u8; 3], u32, u32) {
    let img = image::load_from_memory(bytes)
        .expect("a decodable image")
        .to_rgb8();
    let (w, h) = img.dimensions();
    (img.get_pixel(w / 2, h / 2).0, w, h)
}

pub fn close_to(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 12)
}

/// How the fake upstream answers one path.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// The image, with an ETag; 304 for a matching If-None-Match.
    Image(Bytes),
    /// The image after a delay.
    Slow(Bytes, Duration),
    /// This status, empty body.
    Status(u16),
    /// 203 with an HTML sign-in page.
    SignIn203,
    /// 200 with an HTML page labelled image/jpeg.
    HtmlDisguisedAsImage,
    /// A redirect to this URL.
    Redirect(String),
    /// Content-Length promises more than is sent.
    Truncated(Bytes),
    /// 50 MB of image/jpeg, streamed without Content-Length.
    Endless,
    /// A PNG whose header claims 100000 x 100000 pixels.
    Bomb,
    /// An SVG.
    Svg,
    /// `304 Not Modified` with no headers, to every request, conditional or not.
    NotModifiedAlways,
    /// This status (429, 503, ...) with this `Retry-After`, if any.
    Throttled(u16, Option<String>),
    /// A body already encoded, sent with `Content-Encoding` (`gzip`, `deflate`, `br`).
    Encoded(Bytes, &'static str),
    /// A redirect whose `Location` is these raw bytes (UTF-8 or not, unescaped).
    RawRedirect(Vec<u8>),
    /// The image once the test lets it through: each request takes one permit of the gate
    /// (`gate.add_permits(n)` releases n), so a fetch stays in flight until the test says so.
    Gated(Bytes, Arc<tokio::sync::Semaphore>),
}

#[derive(Default)]
struct UpstreamState {
    behaviours: HashMap<String, Behaviour>,
    hits: HashMap<String, usize>,
    /// Authorization headers seen, per path.
    auth_seen: HashMap<String, Vec<Option<String>>>,
}

/// A real HTTP server on loopback playing an identity provider.
#[derive(Clone)]
pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: Arc<Mutex<UpstreamState>>,
}

impl FakeUpstream {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(UpstreamState::default()));
        let router = Router::new()
            .route("/{*path}", get(serve))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    pub fn set(&self, path: &str, behaviour: Behaviour) {
        self.state
            .lock()
            .expect("lock")
            .behaviours
            .insert(path.trim_start_matches('/').to_owned(), behaviour);
    }

    pub fn hits(&self, path: &str) -> usize {
        *self
            .state
            .lock()
            .expect("lock")
            .hits
            .get(path.trim_start_matches('/'))
            .unwrap_or(&0)
    }

    pub fn auth_seen(&self, path: &str) -> Vec<Option<String>> {
        self.state
            .lock()
            .expect("lock")
            .auth_seen
            .get(path.trim_start_matches('/'))
            .cloned()
            .unwrap_or_default()
    }

    /// Wait (bounded) until `path` has been requested `n` times: for background work.
    pub async fn wait_for_hits(&self, path: &str, n: usize) {
        for _ in 0..500 {
            if self.hits(path) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "upstream never saw {n} requests for {path} (saw {})",
            self.hits(path)
        );
    }
}

async fn serve(
    State(state): State<Arc<Mutex<UpstreamState>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let behaviour = {
        let mut s = state.lock().expect("lock");
        *s.hits.entry(path.clone()).or_default() += 1;
        s.auth_seen
            .entry(path.clone())
            .or_default()
            .push(auth.clone());
        s.behaviours.get(&path).cloned()
    };
    let Some(behaviour) = behaviour else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Like a real identity provider: no credential, no avatar (except on public paths).
    let authorised = auth.as_deref() == Some(&format!("Bearer {UPSTREAM_TOKEN}"));
    if !authorised && !path.starts_with("public/") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match behaviour {
        Behaviour::Image(bytes) => image_response(bytes, &headers),
        Behaviour::Slow(bytes, delay) => {
            tokio::time::sleep(delay).await;
            image_response(bytes, &headers)
        }
        Behaviour::Gated(bytes, gate) => {
            gate.acquire().await.expect("gate open").forget();
            image_response(bytes, &headers)
        }
        Behaviour::Status(code) => StatusCode::from_u16(code).expect("status").into_response(),
        Behaviour::SignIn203 => (
            StatusCode::NON_AUTHORITATIVE_INFORMATION,
            [(header::CONTENT_TYPE, "text/html")],
            "<!DOCTYPE html><html><body>Sign in</body></html>",
        )
            .into_response(),
        Behaviour::HtmlDisguisedAsImage => (
            [(header::CONTENT_TYPE, "image/jpeg")],
            "\n<!DOCTYPE html><html><body>Please sign in</body></html>",
        )
            .into_response(),
        Behaviour::Redirect(to) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
        Behaviour::Truncated(bytes) => {
            let half = bytes.slice(..bytes.len() / 2);
            let mut response = Response::new(Body::from(half));
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
            response
        }
        Behaviour::Endless => {
            let head = jpeg([1, 2, 3], 64);
            let chunks = std::iter::once(Ok::<_, std::io::Error>(head))
                .chain((0..800).map(|_| Ok(Bytes::from(vec![0u8; 64 * 1024]))));
            (
                [(header::CONTENT_TYPE, "image/jpeg")],
                Body::from_stream(futures::stream::iter(chunks)),
            )
                .into_response()
        }
        Behaviour::Bomb => (
            [(header::CONTENT_TYPE, "image/png")],
            png_header(100_000, 100_000),
        )
            .into_response(),
        Behaviour::NotModifiedAlways => StatusCode::NOT_MODIFIED.into_response(),
        Behaviour::Throttled(code, retry_after) => {
            let mut response = StatusCode::from_u16(code).expect("status").into_response();
            if let Some(after) = retry_after {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_str(&after).expect("header"),
                );
            }
            response
        }
        Behaviour::Encoded(body, encoding) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CONTENT_ENCODING, encoding),
            ],
            body,
        )
            .into_response(),
        Behaviour::RawRedirect(location) => {
            let mut response = StatusCode::FOUND.into_response();
            response.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_bytes(&location).expect("obs-text is a valid header value"),
            );
            response
        }
        Behaviour::Svg => (
            [(header::CONTENT_TYPE, "image/svg+xml")],
            r#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#,
        )
            .into_response(),
    }
}

fn image_response(bytes: Bytes, request: &HeaderMap) -> Response {
    use sha2::Digest;
    let etag = format!("\"{}\"", hex::encode(&sha2::Sha256::digest(&bytes)[..8]));
    if request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "image/jpeg".to_owned()),
            (header::ETAG, etag),
            (
                header::LAST_MODIFIED,
                "Tue, 01 Sep 2026 10:00:00 GMT".to_owned(),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// A PNG signature and IHDR claiming `w` x `h`, followed by a tiny IDAT: a decompression bomb's
/// header, which must be refused before any pixel is decoded.
pub fn png_header(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc_input = kind.to_vec();
        crc_input.extend_from_slice(data);
        out.extend_from_slice(&crc_input);
        out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A counter's value in the Prometheus text of `/metrics` (sum over matching label sets).
pub async fn metric(app: &TestApp, name: &str, label_filter: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.expect("text");
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label_filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A TCP listener that accepts connections and never answers: a hung upstream.
pub struct HungUpstream {
    pub addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl HungUpstream {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Keep it open, say nothing.
                held.push(socket);
            }
        });
        Self { addr, accepted }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Settings for a loopback upstream without a credential.
pub fn public_upstream_env(name: &str, addr: SocketAddr) -> Vec<(&'static str, String)> {
    let prefix = format!("AVATAR_UPSTREAM_{name}");
    vec![
        (leak(format!("{prefix}_HOSTS")), addr.to_string()),
        (leak(format!("{prefix}_ALLOW_HTTP")), "true".into()),
        (leak(format!("{prefix}_ALLOW_PRIVATE")), "true".into()),
    ]
}

/// Poll `/metrics` (bounded) until `name` filtered by `labels` reaches `at_least`.
pub async fn wait_for_metric(app: &TestApp, name: &str, labels: &str, at_least: f64) {
    for _ in 0..500 {
        if metric(app, name, labels).await >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name}{{{labels}}} never reached {at_least}");
}

/// The value of a response header, or "" when absent.
pub fn header_of(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}
