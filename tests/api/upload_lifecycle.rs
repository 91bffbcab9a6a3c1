//! Upload lifecycle and bounds over real HTTP: a signed `PUT` is judged before its body is read,
//! upload bodies and per-user uploads are bounded, one job per upload, a deleted avatar stays
//! deleted, failed jobs can be retried while their original is kept, originals go after
//! processing, and no internal path reaches a user.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use avatar_proxy::store::{BlobStore, ObjectBlobStore, StoreError};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::upload_flows::{JWT_SECRET, token};

/// A token that outlives every clock advance of these tests.
fn bearer(user: &str) -> String {
    token(user, 10 * 365 * 86400)
}

fn jwt_env() -> Vec<(&'static str, String)> {
    vec![("AVATAR_JWT_SECRET", JWT_SECRET.into())]
}

async fn grant_response(app: &TestApp, user: &str, len: usize) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/uploads", app.base))
        .bearer_auth(bearer(user))
        .json(&json!({"content_type": "image/jpeg", "content_length": len}))
        .send()
        .await
        .expect("sent")
}

async fn grant(app: &TestApp, user: &str, len: usize) -> Value {
    let r = grant_response(app, user, len).await;
    assert_eq!(r.status(), 201);
    r.json().await.expect("json")
}

async fn put(app: &TestApp, url: &str, body: Bytes) -> reqwest::Response {
    app.client
        .put(url)
        .header("content-type", "image/jpeg")
        .body(body)
        .send()
        .await
        .expect("sent")
}

async fn post_raw(app: &TestApp, user: &str, content_type: &str, body: Bytes) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/avatar", app.base))
        .bearer_auth(bearer(user))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("sent")
}

async fn start(app: &TestApp, user: &str, upload_id: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/avatar", app.base))
        .bearer_auth(bearer(user))
        .json(&json!({"upload_id": upload_id}))
        .send()
        .await
        .expect("sent")
}

async fn job(app: &TestApp, user: &str, job_id: &str) -> Value {
    app.client
        .get(format!("{}/v1/jobs/{job_id}", app.base))
        .bearer_auth(bearer(user))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json")
}

async fn job_until(app: &TestApp, user: &str, job_id: &str, done: &[&str]) -> Value {
    for _ in 0..2000 {
        let body = job(app, user, job_id).await;
        if done.iter().any(|s| body["status"] == *s) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("job {job_id} never reached {done:?}");
}

async fn retry(app: &TestApp, user: &str, job_id: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/jobs/{job_id}/retry", app.base))
        .bearer_auth(bearer(user))
        .send()
        .await
        .expect("sent")
}

/// Send a request head (and `partial` body bytes) on a raw connection and return the status
/// line and headers of whatever the server answers, without ever sending the rest of the body.
/// The timeout only turns "the server waits for a body that never comes" into a failure.
async fn head_only(
    app: &TestApp,
    method: &str,
    url: &str,
    headers: &str,
    partial: &[u8],
) -> String {
    let (stream, request) = open_head(app, method, url, headers, partial).await;
    read_head(stream, &request).await
}

async fn open_head(
    app: &TestApp,
    method: &str,
    url: &str,
    headers: &str,
    partial: &[u8],
) -> (TcpStream, String) {
    let target = url.strip_prefix(&app.base).expect("our URL");
    let addr = app.base.strip_prefix("http://").expect("http");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.expect("head");
    stream.write_all(partial).await.expect("partial body");
    (stream, request)
}

async fn read_head(mut stream: TcpStream, request: &str) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer without the body: the server waited for it\n{request}"
    );
    String::from_utf8_lossy(&got).into_owned()
}

fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"))
}

#[tokio::test]
async fn a_signed_put_is_refused_before_its_body_is_read_when_its_url_or_headers_are_wrong() {
    let app = spawn_app(&jwt_env()).await;
    let body_len = 1_000_000;
    let g = grant(&app, "early", body_len).await;
    let url = g["url"].as_str().expect("url").to_owned();
    let (before_sig, sig) = url.split_once("&sig=").expect("sig");
    let tampered_sig = format!("{before_sig}&sig=A{}", &sig[1..]);
    let other_id = url.replace(g["upload_id"].as_str().expect("id"), &"0".repeat(32));
    let cases = [
        (
            "an altered signature",
            tampered_sig.clone(),
            "image/jpeg",
            body_len,
            403,
        ),
        ("another upload's id", other_id, "image/jpeg", body_len, 403),
        ("another type", url.clone(), "image/png", body_len, 415),
        (
            "a longer body than granted",
            url.clone(),
            "image/jpeg",
            body_len + 1,
            413,
        ),
    ];
    for (what, target, content_type, length, status) in cases {
        let head = head_only(
            &app,
            "PUT",
            &target,
            &format!("Content-Type: {content_type}\r\nContent-Length: {length}\r\n"),
            b"",
        )
        .await;
        assert_eq!(status_of(&head), status, "{what}: {head}");
        assert!(head.contains("application/json"), "{what}: {head}");
    }
    app.clock.advance(Duration::from_secs(301));
    let head = head_only(
        &app,
        "PUT",
        &url,
        &format!("Content-Type: image/jpeg\r\nContent-Length: {body_len}\r\n"),
        b"",
    )
    .await;
    assert_eq!(status_of(&head), 403, "an expired URL: {head}");
}

#[tokio::test]
async fn upload_bodies_past_the_concurrency_limit_get_503_with_retry_after() {
    let mut env = jwt_env();
    env.push(("AVATAR_MAX_CONCURRENT_UPLOADS", "1".into()));
    let app = spawn_app(&env).await;
    let image = jpeg([10, 200, 30], 64);
    let g = grant(&app, "staller", 100_000).await;
    // A client that sends the head and a few bytes, then stalls.
    let (stalled, _) = open_head(
        &app,
        "PUT",
        g["url"].as_str().expect("url"),
        "Content-Type: image/jpeg\r\nContent-Length: 100000\r\n",
        &image[..10],
    )
    .await;
    for _ in 0..2000 {
        if app.state.uploads.bodies_in_flight() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(app.state.uploads.bodies_in_flight(), 1);

    let other = grant(&app, "patient", image.len()).await;
    let r = put(&app, other["url"].as_str().expect("url"), image.clone()).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "uploads-busy");
    let r = post_raw(&app, "patient", "image/jpeg", image.clone()).await;
    assert_eq!(r.status(), 503, "single-request uploads share the limit");

    drop(stalled);
    for _ in 0..2000 {
        if app.state.uploads.bodies_in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = put(&app, other["url"].as_str().expect("url"), image).await;
    assert_eq!(r.status(), 204, "the permit comes back with the connection");
}

#[tokio::test]
async fn a_user_past_the_upload_quota_gets_429_with_retry_after_until_the_window_moves() {
    let mut env = jwt_env();
    env.push(("AVATAR_UPLOAD_GRANTS_PER_USER", "2".into()));
    env.push(("AVATAR_UPLOAD_GRANT_WINDOW", "1h".into()));
    let app = spawn_app(&env).await;
    grant(&app, "greedy", 1000).await;
    let r = post_raw(&app, "greedy", "image/jpeg", jpeg([1, 2, 3], 32)).await;
    assert_eq!(r.status(), 202, "a single-request upload counts as one");
    let r = grant_response(&app, "greedy", 1000).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3600");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "upload-quota");
    assert_eq!(body["user_message"], "Try again later");
    let r = post_raw(&app, "greedy", "image/jpeg", jpeg([1, 2, 3], 32)).await;
    assert_eq!(r.status(), 429);
    grant(&app, "someone-else", 1000).await;
    let limits: Value = app.get("/v1/limits").await.json().await.expect("json");
    assert_eq!(
        limits["uploads"]["uploads_per_user"], 2,
        "clients can know the quota"
    );
    assert_eq!(limits["uploads"]["uploads_per_user_window_seconds"], 3600);
    app.clock.advance(Duration::from_secs(3600));
    grant(&app, "greedy", 1000).await;
}

#[tokio::test]
async fn pending_originals_per_user_are_capped_and_refused_before_the_body() {
    let mut env = jwt_env();
    env.push(("AVATAR_MAX_PENDING_ORIGINALS", "2".into()));
    env.push(("AVATAR_JOB_WORKERS", "0".into()));
    let app = spawn_app(&env).await;
    let image = jpeg([90, 90, 200], 48);
    for _ in 0..2 {
        let r = post_raw(&app, "hoarder", "image/jpeg", image.clone()).await;
        assert_eq!(r.status(), 202);
    }
    let r = post_raw(&app, "hoarder", "image/jpeg", image.clone()).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "originals-quota");

    let g = grant(&app, "hoarder", image.len()).await;
    let head = head_only(
        &app,
        "PUT",
        g["url"].as_str().expect("url"),
        &format!(
            "Content-Type: image/jpeg\r\nContent-Length: {}\r\n",
            image.len()
        ),
        b"",
    )
    .await;
    assert_eq!(status_of(&head), 429, "{head}");
    let r = post_raw(&app, "other-user", "image/jpeg", image).await;
    assert_eq!(r.status(), 202);
}

fn originals_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("store").join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_processed_original_is_deleted_unless_originals_are_kept() {
    for (keep, expected) in [("false", 0), ("true", 1)] {
        let mut env = jwt_env();
        env.push(("AVATAR_KEEP_ORIGINALS", keep.into()));
        let app = spawn_app(&env).await;
        let r = post_raw(&app, "private", "image/jpeg", jpeg([5, 5, 250], 80)).await;
        let accepted: Value = r.json().await.expect("json");
        let done = job_until(
            &app,
            "private",
            accepted["job_id"].as_str().expect("id"),
            &["completed", "failed"],
        )
        .await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(
            originals_in(app.dir.path()),
            expected,
            "AVATAR_KEEP_ORIGINALS={keep}"
        );
    }
}

#[tokio::test]
async fn concurrent_and_repeated_starts_for_one_upload_make_one_job() {
    let app = spawn_app(&jwt_env()).await;
    let image = jpeg([200, 100, 0], 64);
    let g = grant(&app, "eager", image.len()).await;
    assert_eq!(
        put(&app, g["url"].as_str().expect("url"), image)
            .await
            .status(),
        204
    );
    let upload_id = g["upload_id"].as_str().expect("id");
    let answers = futures::future::join_all((0..4).map(|_| start(&app, "eager", upload_id))).await;
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for r in answers {
        let status = r.status().as_u16();
        let body: Value = r.json().await.expect("json");
        match status {
            202 => accepted.push(body),
            409 => refused.push(body),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(accepted.len(), 1, "{accepted:?} {refused:?}");
    let job_id = accepted[0]["job_id"].as_str().expect("id").to_owned();
    for body in &refused {
        assert_eq!(body["code"], "job-exists");
        assert_eq!(body["job_id"], job_id.as_str());
    }
    job_until(&app, "eager", &job_id, &["completed"]).await;
    let r = start(&app, "eager", upload_id).await;
    assert_eq!(r.status(), 409, "a repeat after completion");
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        (body["code"].as_str(), body["job_id"].as_str()),
        (Some("job-exists"), Some(job_id.as_str()))
    );
}

#[tokio::test]
async fn a_json_start_request_is_small_whatever_the_image_limit() {
    let app = spawn_app(&jwt_env()).await;
    let padding = "x".repeat(100_000);
    let r = app
        .client
        .post(format!("{}/v1/avatar", app.base))
        .bearer_auth(bearer("padder"))
        .json(&json!({"upload_id": "0".repeat(32), "padding": padding}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "payload-too-large");
}

/// A store under the test's control: variant writes can be held (the job stays `processing`
/// until released) or failed with an error naming the file, as a real filesystem error does.
struct ControlledStore {
    inner: ObjectBlobStore,
    root: String,
    hold: AtomicBool,
    entered: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
    failures_left: AtomicUsize,
}

impl ControlledStore {
    fn new(dir: &std::path::Path) -> Arc<Self> {
        let root = dir.join("store");
        Arc::new(Self {
            inner: ObjectBlobStore::local(&root).expect("store"),
            root: root.display().to_string(),
            hold: AtomicBool::new(false),
            entered: tokio::sync::Notify::new(),
            release: tokio::sync::Semaphore::new(0),
            failures_left: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl BlobStore for ControlledStore {
    async fn put(&self, path: &str, bytes: Bytes) -> Result<(), StoreError> {
        if path.starts_with("avatar/") {
            if self.hold.load(Ordering::SeqCst) {
                self.entered.notify_one();
                self.release.acquire().await.expect("open").forget();
            }
            if self
                .failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(StoreError::Backend(format!(
                    "Unable to open file {}/{path}#12: Permission denied (os error 13)",
                    self.root
                )));
            }
        }
        self.inner.put(path, bytes).await
    }
    async fn get(&self, path: &str) -> Result<Bytes, StoreError> {
        self.inner.get(path).await
    }
    async fn delete(&self, path: &str) -> Result<(), StoreError> {
        self.inner.delete(path).await
    }
    async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        self.inner.delete_prefix(prefix).await
    }
    async fn delete_older_than(&self, prefix: &str, age: Duration) -> Result<usize, StoreError> {
        self.inner.delete_older_than(prefix, age).await
    }
    async fn health(&self) -> Result<(), StoreError> {
        self.inner.health().await
    }
}

#[tokio::test]
async fn deleting_the_avatar_supersedes_a_job_still_processing() {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    let store = ControlledStore::new(dir.path());
    let app = spawn_app_with_store(dir, &jwt_env(), store.clone()).await;
    let key = app.key_for("regretful");
    let first: Value = post_raw(&app, "regretful", "image/jpeg", jpeg([0, 0, 255], 64))
        .await
        .json()
        .await
        .expect("json");
    job_until(
        &app,
        "regretful",
        first["job_id"].as_str().expect("id"),
        &["completed"],
    )
    .await;

    store.hold.store(true, Ordering::SeqCst);
    let second: Value = post_raw(&app, "regretful", "image/jpeg", jpeg([255, 0, 0], 64))
        .await
        .json()
        .await
        .expect("json");
    let second_id = second["job_id"].as_str().expect("id");
    store.entered.notified().await;
    assert_eq!(
        job(&app, "regretful", second_id).await["status"],
        "processing"
    );

    let r = app
        .client
        .delete(format!("{}/v1/avatar", app.base))
        .bearer_auth(bearer("regretful"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 204);
    store.hold.store(false, Ordering::SeqCst);
    store.release.add_permits(1000);

    let settled = job_until(&app, "regretful", second_id, &["failed", "completed"]).await;
    assert_eq!(settled["status"], "failed", "{settled}");
    assert_eq!(settled["error"]["code"], "superseded");
    // Stopping drains the runner: the held job has run to its end before we look again.
    let user_key = app.state.keys.key_for("regretful");
    let clock = app.clock.clone();
    let dir = app.stop().await;
    let again = spawn_app_in(dir, &jwt_env(), clock).await;
    assert_eq!(
        again.state.repo.avatar(&user_key).await.expect("repo"),
        None
    );
    let served = again.get(&format!("/avatar/{key}")).await;
    assert_ne!(served.headers()["x-avatar-source"], "upload");
    let settled = job(&again, "regretful", second_id).await;
    assert_eq!(settled["error"]["code"], "superseded", "{settled}");
}

#[tokio::test]
async fn a_failed_job_is_retried_by_its_owner_until_its_original_expires_and_shows_no_path() {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    let store = ControlledStore::new(dir.path());
    let root = store.root.clone();
    let mut env = jwt_env();
    env.push(("AVATAR_JOB_MAX_ATTEMPTS", "1".into()));
    let app = spawn_app_with_store(dir, &env, store.clone()).await;

    store.failures_left.store(2, Ordering::SeqCst);
    let mut failed_jobs = Vec::new();
    for colour in [[10, 20, 30], [30, 20, 10]] {
        let accepted: Value = post_raw(&app, "unlucky", "image/jpeg", jpeg(colour, 64))
            .await
            .json()
            .await
            .expect("json");
        let id = accepted["job_id"].as_str().expect("id").to_owned();
        let failed = job_until(&app, "unlucky", &id, &["failed", "completed"]).await;
        assert_eq!(failed["status"], "failed", "{failed}");
        assert_eq!(failed["error"]["code"], "processing-failed");
        let text = failed.to_string();
        assert!(
            !text.contains(&root),
            "an internal path reached the user: {text}"
        );
        assert!(
            !text.contains("os error"),
            "an internal cause reached the user: {text}"
        );
        failed_jobs.push(id);
    }

    let r = retry(&app, "stranger", &failed_jobs[0]).await;
    assert_eq!(r.status(), 404, "owner only");
    let r = retry(&app, "unlucky", &failed_jobs[0]).await;
    assert_eq!(r.status(), 202);
    let done = job_until(&app, "unlucky", &failed_jobs[0], &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed", "{done}");
    let r = retry(&app, "unlucky", &failed_jobs[0]).await;
    assert_eq!(r.status(), 409, "a completed job is not retried");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "job-not-retryable");

    app.clock.advance(Duration::from_secs(25 * 3600));
    let r = retry(&app, "unlucky", &failed_jobs[1]).await;
    assert_eq!(r.status(), 410, "past AVATAR_TEMP_RETENTION");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "upload-expired");
}

#[tokio::test]
async fn a_raw_body_labelled_octet_stream_is_judged_by_its_bytes() {
    let app = spawn_app(&jwt_env()).await;
    let r = post_raw(
        &app,
        "curl-user",
        "application/octet-stream",
        jpeg([9, 99, 199], 64),
    )
    .await;
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let r = post_raw(
        &app,
        "curl-user",
        "application/octet-stream",
        Bytes::from_static(b"just some text, not an image"),
    )
    .await;
    assert_eq!(r.status(), 415);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "unsupported-image");
}
