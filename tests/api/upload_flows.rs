//! Uploads end to end: signed and single-request flows, jobs, events, webhooks, and every way a
//! client can get it wrong.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use avatar_proxy::store::{BlobStore, ObjectBlobStore, StoreError};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::*;

pub const JWT_SECRET: &str = "a-test-jwt-secret-of-at-least-32-bytes!!";

pub fn token(sub: &str, exp_offset: i64) -> String {
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + exp_offset;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("token")
}

fn jwt_env() -> Vec<(&'static str, String)> {
    vec![("AVATAR_JWT_SECRET", JWT_SECRET.into())]
}

async fn grant(app: &TestApp, user: &str, content_type: &str, len: usize) -> Value {
    let r = app
        .client
        .post(format!("{}/v1/uploads", app.base))
        .bearer_auth(token(user, 600))
        .json(&json!({"content_type": content_type, "content_length": len}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 201);
    r.json().await.expect("json")
}

async fn put(app: &TestApp, url: &str, content_type: &str, body: Bytes) -> reqwest::Response {
    app.client
        .put(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("sent")
}

async fn start(app: &TestApp, user: &str, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/avatar", app.base))
        .bearer_auth(token(user, 600))
        .json(&body)
        .send()
        .await
        .expect("sent")
}

/// Serve `router` on loopback as the webhook receiver at `path`; the app settings that point at it.
async fn webhook_env(
    router: axum::Router,
    path: &str,
    secret: &str,
) -> Vec<(&'static str, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}{path}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let mut env = jwt_env();
    env.push(("AVATAR_WEBHOOK_URL", hook));
    env.push(("AVATAR_WEBHOOK_SECRET", secret.to_owned()));
    env.push(("AVATAR_WEBHOOK_ALLOW_PRIVATE", "true".into()));
    env
}

/// `POST /v1/avatar` with a raw JPEG body: the single-request upload.
async fn post_image(app: &TestApp, bearer: &str, body: Bytes) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/avatar", app.base))
        .bearer_auth(bearer)
        .header("content-type", "image/jpeg")
        .body(body)
        .send()
        .await
        .expect("sent")
}

async fn job_until_done(app: &TestApp, user: &str, job_id: &str) -> Value {
    for _ in 0..1000 {
        let r = app
            .client
            .get(format!("{}/v1/jobs/{job_id}", app.base))
            .bearer_auth(token(user, 600))
            .send()
            .await
            .expect("sent");
        let body: Value = r.json().await.expect("json");
        if body["status"] == "completed" || body["status"] == "failed" {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {job_id} never finished");
}

/// A two-tone picture: left half red, right half blue, so crops can be told apart.
fn two_tone(w: u32, h: u32) -> Bytes {
    let img = image::RgbImage::from_fn(w, h, |x, _| {
        if x < w / 2 {
            image::Rgb([220, 20, 20])
        } else {
            image::Rgb([20, 20, 220])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encode");
    Bytes::from(out.into_inner())
}

#[tokio::test]
async fn the_signed_url_flow_ends_in_a_websocket_event_and_a_new_avatar() {
    let app = spawn_app(&jwt_env()).await;
    let ws_url = format!(
        "ws://{}/v1/events?access_token={}",
        app.base.trim_start_matches("http://"),
        token("ada", 600)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("websocket");

    let picture = two_tone(800, 400);
    let g = grant(&app, "ada", "image/jpeg", picture.len()).await;
    assert_eq!(g["method"], "PUT");
    assert_eq!(g["headers"]["Content-Type"], "image/jpeg");
    let r = put(&app, g["url"].as_str().expect("url"), "image/jpeg", picture).await;
    assert_eq!(r.status(), 204);
    // Crop the blue right half.
    let r = start(&app, "ada", json!({"upload_id": g["upload_id"], "crop": {"x": 450, "y": 50, "width": 300, "height": 300}})).await;
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.expect("json");
    assert_eq!(accepted["status"], "queued");
    assert!(
        accepted["status_url"]
            .as_str()
            .expect("url")
            .ends_with(accepted["job_id"].as_str().expect("id"))
    );

    let mut kinds = Vec::new();
    let mut completed = Value::Null;
    while completed.is_null() {
        let message = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("an event")
            .expect("open")
            .expect("ok");
        let event: Value = serde_json::from_str(message.to_text().expect("text")).expect("json");
        assert!(event["id"].is_string() && event["timestamp"].is_string());
        kinds.push(event["type"].as_str().expect("type").to_owned());
        if event["type"] == "ProfileImageCompleted" {
            completed = event;
        }
    }
    assert_eq!(kinds, vec!["ProfileImageUpdated", "ProfileImageCompleted"]);
    let url = completed["data"]["urls"]["512"]
        .as_str()
        .expect("512 url")
        .to_owned();
    assert!(url.contains("v="), "{url}");
    let r = app.client.get(&url).send().await.expect("sent");
    assert_eq!(r.headers()["x-avatar-source"], "upload");
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let (colour, w, h) = centre(&r.bytes().await.expect("body"));
    assert_eq!((w, h), (512, 512));
    assert!(
        close_to(colour, [20, 20, 220]),
        "the crop kept the blue half: {colour:?}"
    );

    let key = app.key_for("ada");
    let small = app.get(&format!("/avatar/{key}?s=64")).await;
    assert_eq!(small.headers()["x-avatar-source"], "upload");
    assert_eq!(
        small.headers()["x-cache"],
        "miss",
        "derived now, from the 512 variant"
    );
    assert_eq!(
        centre(&small.bytes().await.expect("b")).1,
        64,
        "other sizes derive from the 512 variant"
    );

    let job = job_until_done(&app, "ada", accepted["job_id"].as_str().expect("id")).await;
    assert_eq!(job["status"], "completed");
    let variants = job["result"]["variants"].as_array().expect("variants");
    assert_eq!(
        variants.len(),
        4,
        "128 and 512, JPEG and WebP: {variants:?}"
    );
    assert!(job["result"]["version"].is_string());
    assert!(job["result"]["exif"].is_object());
}

#[tokio::test]
async fn single_request_uploads_work_as_multipart_and_raw_with_sse_events() {
    let app = spawn_app(&jwt_env()).await;
    let sse = app
        .client
        .get(format!("{}/v1/events", app.base))
        .bearer_auth(token("bob", 600))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("sse");
    assert_eq!(sse.status(), 200);
    let mut sse = sse.bytes_stream();

    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(jpeg([0, 180, 0], 300).to_vec())
                .mime_str("image/jpeg")
                .expect("mime"),
        )
        .text("crop", r#"{"x": 0, "y": 0, "width": 200, "height": 200}"#);
    let r = app
        .client
        .post(format!("{}/v1/avatar", app.base))
        .bearer_auth(token("bob", 600))
        .multipart(form)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 202);
    let mut seen = String::new();
    while !seen.contains("ProfileImageCompleted") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), sse.next())
            .await
            .expect("event")
            .expect("open")
            .expect("ok");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: ProfileImageUpdated"), "{seen}");
    let key = app.key_for("bob");
    let r = app.get(&format!("/avatar/{key}?s=128")).await;
    assert_eq!(r.headers()["x-avatar-source"], "upload");
    assert!(close_to(
        centre(&r.bytes().await.expect("b")).0,
        [0, 180, 0]
    ));

    let raw = app
        .client
        .post(format!(
            "{}/api/profile/image?x=10&y=10&width=100&height=100",
            app.base
        ))
        .bearer_auth(token("bob", 600))
        .header("content-type", "image/jpeg")
        .body(jpeg([200, 200, 0], 300))
        .send()
        .await
        .expect("sent");
    assert_eq!(raw.status(), 202);
    let job: Value = raw.json().await.expect("json");
    let done = job_until_done(&app, "bob", job["job_id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "completed");
    let r = app.get(&format!("/avatar/{key}?s=128")).await;
    assert!(
        close_to(centre(&r.bytes().await.expect("b")).0, [200, 200, 0]),
        "the newer upload wins at once"
    );
}

#[tokio::test]
async fn upload_urls_refuse_tampering_expiry_replays_wrong_types_and_oversize() {
    let app = spawn_app(&jwt_env()).await;
    let picture = jpeg([5, 5, 5], 100);
    let g = grant(&app, "eve", "image/jpeg", picture.len()).await;
    let url = g["url"].as_str().expect("url").to_owned();

    let tampered = url.replace("max=", "max=9");
    assert_eq!(
        put(&app, &tampered, "image/jpeg", picture.clone())
            .await
            .status(),
        403
    );
    let png = {
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(image::RgbImage::new(10, 10))
            .write_to(&mut out, image::ImageFormat::Png)
            .expect("png");
        Bytes::from(out.into_inner())
    };
    let r = put(&app, &url, "image/jpeg", png).await;
    assert_eq!(
        r.status(),
        415,
        "the bytes are sniffed, not the header trusted"
    );
    assert_eq!(
        put(&app, &url, "image/png", picture.clone()).await.status(),
        415
    );
    let mut bigger = picture.to_vec();
    bigger.extend_from_slice(&[0; 10]);
    assert_eq!(
        put(&app, &url, "image/jpeg", Bytes::from(bigger))
            .await
            .status(),
        413
    );
    assert_eq!(
        put(&app, &url, "image/jpeg", picture.clone())
            .await
            .status(),
        204
    );
    let replay = put(&app, &url, "image/jpeg", picture.clone()).await;
    assert_eq!(replay.status(), 409);
    assert_eq!(
        replay.json::<Value>().await.expect("json")["code"],
        "already-uploaded"
    );

    let g2 = grant(&app, "eve", "image/jpeg", picture.len()).await;
    app.clock.advance(Duration::from_secs(301));
    let expired = put(
        &app,
        g2["url"].as_str().expect("url"),
        "image/jpeg",
        picture.clone(),
    )
    .await;
    assert_eq!(expired.status(), 403);
    assert_eq!(
        expired.json::<Value>().await.expect("json")["code"],
        "upload-url-expired"
    );

    let r = app
        .client
        .post(format!("{}/v1/uploads", app.base))
        .bearer_auth(token("eve", 600))
        .json(&json!({"content_type": "image/svg+xml", "content_length": 10}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 415);
    let r = app
        .client
        .post(format!("{}/v1/uploads", app.base))
        .bearer_auth(token("eve", 600))
        .json(&json!({"content_type": "image/png", "content_length": 6 * 1024 * 1024}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn invalid_crops_are_refused_at_once_with_try_again() {
    let app = spawn_app(&jwt_env()).await;
    let picture = jpeg([9, 9, 9], 200);
    let g = grant(&app, "cat", "image/jpeg", picture.len()).await;
    put(&app, g["url"].as_str().expect("url"), "image/jpeg", picture).await;
    for crop in [
        json!({"x": 0, "y": 0, "width": 0, "height": 10}),
        json!({"x": 150, "y": 0, "width": 100, "height": 100}),
        json!({"x": 4294967295u64, "y": 0, "width": 2, "height": 2}),
        json!({"x": -1, "y": 0, "width": 10, "height": 10}),
        json!({"x": "1", "y": 0, "width": 10, "height": 10}),
        json!({"x": 1.5, "y": 0, "width": 10, "height": 10}),
        json!({"x": 0, "y": 0}),
    ] {
        let r = start(
            &app,
            "cat",
            json!({"upload_id": g["upload_id"], "crop": crop}),
        )
        .await;
        assert_eq!(r.status(), 400, "{crop}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["code"], "invalid-crop", "{crop}");
        assert_eq!(body["user_message"], "Try again");
    }
}

#[tokio::test]
async fn bad_images_fail_clearly() {
    let app = spawn_app(&jwt_env()).await;
    let send = |body: Bytes, content_type: &'static str| {
        let client = app.client.clone();
        let url = format!("{}/v1/avatar", app.base);
        async move {
            client
                .post(url)
                .bearer_auth(token("dan", 600))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .expect("sent")
        }
    };
    let bomb = send(Bytes::from(png_header(100_000, 100_000)), "image/png").await;
    assert_eq!(bomb.status(), 422);
    assert_eq!(
        bomb.json::<Value>().await.expect("json")["code"],
        "invalid-image"
    );
    let svg = send(
        Bytes::from_static(b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
        "image/svg+xml",
    )
    .await;
    assert_eq!(svg.status(), 415);
    // A JPEG cut inside its first scan header passes the header probe but has no image data:
    // processing fails at once, without retries. (A JPEG cut later renders as far as the data
    // goes: see image_content.rs.)
    let full = two_tone(400, 400);
    let sos = full
        .windows(2)
        .position(|w| w == [0xFF, 0xDA])
        .expect("SOS");
    let truncated = full.slice(..sos + 4);
    let r = send(truncated, "image/jpeg").await;
    assert_eq!(r.status(), 202);
    let job: Value = r.json().await.expect("json");
    let done = job_until_done(&app, "dan", job["job_id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["error"]["code"], "invalid-image");
    // A processing fault, as the design's fault table has it (only a bad crop says "Try again").
    assert_eq!(done["error"]["user_message"], "Try again later");
    let key = app.key_for("dan");
    assert_eq!(
        app.get(&format!("/avatar/{key}")).await.headers()["x-avatar-source"],
        "default"
    );
}

#[tokio::test]
async fn jobs_belong_to_their_owner_and_tokens_are_checked() {
    let app = spawn_app(&jwt_env()).await;
    let r = post_image(&app, &token("owner", 600), jpeg([1, 1, 1], 64)).await;
    let job: Value = r.json().await.expect("json");
    let job_url = format!(
        "{}/v1/jobs/{}",
        app.base,
        job["job_id"].as_str().expect("id")
    );
    let other = app
        .client
        .get(&job_url)
        .bearer_auth(token("intruder", 600))
        .send()
        .await
        .expect("sent");
    assert_eq!(other.status(), 404);

    let none = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "owner", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(b"some-other-secret-that-is-long-enough"),
    )
    .expect("token");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let alg_none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(r#"{"sub":"owner","exp":4000000000}"#)
    );
    for bad in [none, alg_none, token("owner", -3600), "garbage".to_owned()] {
        let r = app
            .client
            .get(&job_url)
            .bearer_auth(&bad)
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 401, "{bad}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
    }
    assert_eq!(
        app.client
            .get(&job_url)
            .send()
            .await
            .expect("sent")
            .status(),
        401
    );
}

/// A store whose writes of variants fail a set number of times, like a flaky S3.
struct FlakyStore {
    inner: ObjectBlobStore,
    failures_left: AtomicUsize,
}

#[async_trait]
impl BlobStore for FlakyStore {
    async fn put(&self, path: &str, bytes: Bytes) -> Result<(), StoreError> {
        if path.starts_with("avatar/")
            && self
                .failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(StoreError::Backend("injected failure".into()));
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
async fn a_job_is_retried_after_transient_store_failures() {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    let store = Arc::new(FlakyStore {
        inner: ObjectBlobStore::local(&dir.path().join("store")).expect("store"),
        failures_left: AtomicUsize::new(2),
    });
    // One worker: the test moves the clock past the job lease between polls, which other
    // workers would (rightly) take for a dead runner.
    let mut env = jwt_env();
    env.push(("AVATAR_JOB_WORKERS", "1".into()));
    let app = spawn_app_with_store(dir, &env, store).await;
    let r = post_image(
        &app,
        &token("flaky", 10 * 365 * 86400),
        jpeg([30, 90, 150], 200),
    )
    .await;
    let job: Value = r.json().await.expect("json");
    let job_url = format!(
        "{}/v1/jobs/{}",
        app.base,
        job["job_id"].as_str().expect("id")
    );
    let mut last = Value::Null;
    for _ in 0..2000 {
        last = app
            .client
            .get(&job_url)
            .bearer_auth(token("flaky", 10 * 365 * 86400))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        if last["status"] == "completed" || last["status"] == "failed" {
            break;
        }
        // Retries wait for their backoff: move time instead of waiting for it.
        app.clock.advance(Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(last["attempts"], 3);
}

#[tokio::test]
async fn a_queued_job_is_processed_after_a_restart() {
    let mut env = jwt_env();
    env.push(("AVATAR_JOB_WORKERS", "0".into()));
    let app = spawn_app(&env).await;
    let r = post_image(&app, &token("sleeper", 600), jpeg([250, 120, 0], 100)).await;
    let job: Value = r.json().await.expect("json");
    let clock = app.clock.clone();
    let dir = app.stop().await;
    let again = spawn_app_in(dir, &jwt_env(), clock).await;
    let done = job_until_done(&again, "sleeper", job["job_id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "completed");
    let key = again.key_for("sleeper");
    assert_eq!(
        again.get(&format!("/avatar/{key}")).await.headers()["x-avatar-source"],
        "upload"
    );
}

/// Queue one upload with no worker running, then claim it as a runner that is about to die
/// (`kill -9` mid-render): the job is left `processing` under that runner's 10 s lease.
async fn a_job_left_by_a_dead_worker(
    user: &str,
    extra: &[(&'static str, String)],
) -> (TestApp, String) {
    use avatar_proxy::clock::Clock;
    let mut env = jwt_env();
    env.push(("AVATAR_JOB_WORKERS", "0".into()));
    env.extend_from_slice(extra);
    let app = spawn_app(&env).await;
    let r = post_image(&app, &token(user, 600), jpeg([40, 160, 90], 100)).await;
    let job: Value = r.json().await.expect("json");
    let job_id = job["job_id"].as_str().expect("id").to_owned();
    let now = app.clock.now_millis();
    let claimed = app
        .state
        .repo
        .claim_job(now, now + 10_000, "runner-killed-mid-render")
        .await
        .expect("claim")
        .expect("the queued job");
    assert_eq!(claimed.job_id.as_str(), job_id);
    (app, job_id)
}

#[tokio::test]
async fn a_job_whose_worker_was_killed_is_completed_by_the_restarted_service_within_15_seconds() {
    use avatar_proxy::clock::Clock;
    let (app, job_id) = a_job_left_by_a_dead_worker("crashed", &[]).await;
    let clock = app.clock.clone();
    let dir = app.stop().await;
    let again = spawn_app_in(dir, &jwt_env(), clock.clone()).await;
    let now = clock.now_millis();
    assert_eq!(
        again
            .state
            .repo
            .claim_job(now, now + 1, "probe")
            .await
            .expect("claim"),
        None,
        "the dead worker's lease still holds the job"
    );
    clock.advance(Duration::from_secs(11));
    let done = job_until_done(&again, "crashed", &job_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["attempts"], 2);
    let key = again.key_for("crashed");
    assert_eq!(
        again.get(&format!("/avatar/{key}")).await.headers()["x-avatar-source"],
        "upload"
    );
}

#[tokio::test]
async fn a_job_reclaimed_after_its_last_attempt_fails_instead_of_running_for_ever() {
    let cap = [("AVATAR_JOB_MAX_ATTEMPTS", "1".to_owned())];
    let (app, job_id) = a_job_left_by_a_dead_worker("doomed", &cap).await;
    let clock = app.clock.clone();
    let dir = app.stop().await;
    let mut env = jwt_env();
    env.extend_from_slice(&cap);
    let again = spawn_app_in(dir, &env, clock.clone()).await;
    clock.advance(Duration::from_secs(11));
    let done = job_until_done(&again, "doomed", &job_id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "processing-failed");
    assert_eq!(done["error"]["user_message"], "Try again later");
}

#[tokio::test]
async fn deleting_the_upload_falls_back_to_the_upstream_avatar() {
    let upstream = FakeUpstream::start().await;
    upstream.set("avatars/fb.jpg", Behaviour::Image(jpeg([0, 200, 200], 64)));
    let mut env = upstream_env("IDP", upstream.addr);
    env.extend(jwt_env());
    let app = spawn_app(&env).await;
    let key = app
        .register("fallback", &upstream.url("avatars/fb.jpg"))
        .await;
    assert_eq!(
        app.get(&format!("/avatar/{key}")).await.headers()["x-avatar-source"],
        "upstream"
    );
    let r = post_image(&app, &token("fallback", 600), jpeg([200, 0, 200], 100)).await;
    let job: Value = r.json().await.expect("json");
    job_until_done(&app, "fallback", job["job_id"].as_str().expect("id")).await;
    assert_eq!(
        app.get(&format!("/avatar/{key}")).await.headers()["x-avatar-source"],
        "upload"
    );
    let r = app
        .client
        .delete(format!("{}/v1/avatar", app.base))
        .bearer_auth(token("fallback", 600))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 204);
    assert_eq!(
        app.get(&format!("/avatar/{key}")).await.headers()["x-avatar-source"],
        "upstream"
    );
}

#[tokio::test]
async fn webhooks_are_signed_and_retried_until_accepted() {
    use avatar_proxy::webhooks::signature::WebhookSecret;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let received: Arc<std::sync::Mutex<Vec<(bool, Value)>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let router = {
        let received = received.clone();
        let calls = calls.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
                let received = received.clone();
                let calls = calls.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    let ok = WebhookSecret::parse(secret).expect("secret").verify(
                        (
                            &h("webhook-id"),
                            &h("webhook-timestamp"),
                            &h("webhook-signature"),
                        ),
                        &body,
                        h("webhook-timestamp").parse().unwrap_or(0),
                        300,
                    );
                    // Fail the first two deliveries.
                    if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    received
                        .lock()
                        .expect("lock")
                        .push((ok, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let env = webhook_env(router, "/hook", secret).await;
    let app = spawn_app(&env).await;
    let r = post_image(&app, &token("hooked", 600), jpeg([10, 20, 30], 100)).await;
    assert_eq!(r.status(), 202);
    for _ in 0..2000 {
        let done = {
            let got = received.lock().expect("lock");
            ["ProfileImageUpdated", "ProfileImageCompleted"]
                .iter()
                .all(|kind| got.iter().any(|(_, v)| v["type"] == *kind))
        };
        if done {
            break;
        }
        app.clock.advance(Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let received = received.lock().expect("lock").clone();
    assert!(
        received.iter().all(|(ok, _)| *ok),
        "every delivery is correctly signed"
    );
    let kinds: Vec<&str> = received
        .iter()
        .filter_map(|(_, v)| v["type"].as_str())
        .collect();
    assert!(
        kinds.contains(&"ProfileImageUpdated") && kinds.contains(&"ProfileImageCompleted"),
        "{kinds:?}"
    );
    assert!(
        calls.load(Ordering::SeqCst) >= 4,
        "two failures, then both events"
    );
}

/// `jpeg` with an EXIF APP1 segment saying "rotate 90° clockwise to display" (orientation 6).
fn with_orientation_6(jpeg: &[u8]) -> Bytes {
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one IFD entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&[0, 6, 0, 0]); // value 6, padded
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xff, 0xe1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    Bytes::from(out)
}

#[tokio::test]
async fn an_exif_rotated_upload_comes_out_upright_and_crops_in_display_pixels() {
    let app = spawn_app(&jwt_env()).await;
    // Stored landscape 400x200, red left / blue right; displayed portrait 200x400, red on top.
    let picture = with_orientation_6(&two_tone(400, 200));
    let r = app
        .client
        .post(format!(
            "{}/v1/avatar?x=0&y=200&width=200&height=200",
            app.base
        ))
        .bearer_auth(token("tilted", 600))
        .header("content-type", "image/jpeg")
        .body(picture)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        r.status(),
        202,
        "the crop is valid only in display coordinates"
    );
    let job: Value = r.json().await.expect("json");
    let done = job_until_done(&app, "tilted", job["job_id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["exif"]["orientation"], 6);
    let key = app.key_for("tilted");
    let served = app
        .get(&format!("/avatar/{key}?s=128"))
        .await
        .bytes()
        .await
        .expect("b");
    assert!(
        close_to(centre(&served).0, [20, 20, 220]),
        "the bottom of the upright picture is blue"
    );
    assert!(
        !served.windows(4).any(|w| w == b"Exif"),
        "metadata is stripped"
    );
}

#[tokio::test]
async fn the_rewrite_api_returns_the_upload_version() {
    let app = spawn_app(&jwt_env()).await;
    let r = post_image(&app, &token("versioned", 600), jpeg([90, 10, 10], 100)).await;
    let job: Value = r.json().await.expect("json");
    let done = job_until_done(&app, "versioned", job["job_id"].as_str().expect("id")).await;
    let version = done["result"]["version"]
        .as_str()
        .expect("version")
        .to_owned();
    let body: Value = app
        .client
        .post(format!("{}/v1/identities/rewrite", app.base))
        .bearer_auth(API_KEY)
        .json(&json!({"identities": [{"id": "versioned", "avatar_url": null}], "prefetch": "none"}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let url = body["identities"][0]["avatar_url"].as_str().expect("url");
    assert!(url.ends_with(&format!("?v={version}")), "{url}");
    let r = app.client.get(url).send().await.expect("sent");
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
}

#[tokio::test]
async fn an_endpoint_answering_410_is_disabled() {
    let calls = Arc::new(AtomicUsize::new(0));
    let router = {
        let calls = calls.clone();
        axum::Router::new().route(
            "/gone",
            axum::routing::post(move || {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::GONE
                }
            }),
        )
    };
    let env = webhook_env(router, "/gone", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").await;
    let app = spawn_app(&env).await;
    let r = post_image(&app, &token("gone", 600), jpeg([1, 2, 3], 64)).await;
    let job: Value = r.json().await.expect("json");
    job_until_done(&app, "gone", job["job_id"].as_str().expect("id")).await;
    // Wait until the outbox is empty: every message was either delivered once or dropped.
    for _ in 0..500 {
        let due = app
            .state
            .repo
            .due_webhooks(i64::MAX, 10)
            .await
            .expect("outbox");
        if due.is_empty() && calls.load(Ordering::SeqCst) >= 1 {
            break;
        }
        app.clock.advance(Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Give the Completed message (queued right after the job was marked done) time to go out.
    for _ in 0..100 {
        app.clock.advance(Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        app.state
            .repo
            .due_webhooks(i64::MAX, 10)
            .await
            .expect("outbox")
            .is_empty()
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "after a 410 nothing more is sent"
    );
    let endpoint = app.state.settings.webhooks.url.clone();
    assert!(
        app.state
            .repo
            .endpoint_disabled(&endpoint)
            .await
            .expect("check")
    );
}

#[tokio::test]
async fn browsers_may_upload_from_the_configured_origin_only() {
    let mut env = jwt_env();
    env.push(("AVATAR_CORS_ORIGINS", "https://app.example".into()));
    let app = spawn_app(&env).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, format!("{}/v1/uploads", app.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example").await.expect("sent");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let refused = preflight("https://evil.example").await.expect("sent");
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn webhook_targets_at_private_addresses_are_refused_in_every_spelling() {
    let calls = Arc::new(AtomicUsize::new(0));
    let router = {
        let calls = calls.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    for spelling in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://2130706433:{port}/hook"),
        format!("http://0x7f.0.0.1:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
    ] {
        let mut env = jwt_env();
        env.push(("AVATAR_WEBHOOK_URL", spelling.clone()));
        env.push((
            "AVATAR_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        ));
        env.push(("AVATAR_WEBHOOK_ALLOW_PRIVATE", "false".into()));
        let app = spawn_app(&env).await;
        let r = post_image(&app, &token("guarded", 600), jpeg([1, 2, 3], 64)).await;
        let job: Value = r.json().await.expect("json");
        job_until_done(&app, "guarded", job["job_id"].as_str().expect("id")).await;
        // Refused messages leave the outbox at once; delivered ones would too, so count calls.
        for _ in 0..500 {
            let due = app
                .state
                .repo
                .due_webhooks(i64::MAX, 10)
                .await
                .expect("outbox");
            if due.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0, "{spelling} was delivered");
        assert!(
            metric(&app, "avatar_webhooks_total", "outcome=\"refused\"").await >= 1.0,
            "{spelling}"
        );
    }
}

/// A log sink for one test: everything the service writes at every level.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

#[tokio::test]
async fn no_token_or_signature_reaches_the_logs_at_any_level() {
    let logs = CapturedLogs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = spawn_app(&jwt_env()).await;
    let jwt = token("logged", 600);
    let granted = grant(&app, "logged", "image/jpeg", 2000).await;
    let url = granted["url"].as_str().expect("url").to_owned();
    let signature = url::Url::parse(&url)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "sig")
        .map(|(_, v)| v.into_owned())
        .expect("sig");
    assert_eq!(
        put(&app, &url, "image/jpeg", jpeg([1, 2, 3], 64))
            .await
            .status(),
        204
    );
    // Browsers pass the JWT in the query of the event stream.
    let events = app
        .client
        .get(format!("{}/v1/events?access_token={jwt}", app.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("sent");
    assert_eq!(events.status(), 200);
    drop(events);
    let bad = app
        .get("/v1/events?access_token=not-a-real-token-but-still-secret")
        .await;
    assert_eq!(bad.status(), 401);
    let text = logs.text();
    assert!(
        text.contains("/v1/uploads"),
        "the requests were logged: {text}"
    );
    for secret in [
        jwt.as_str(),
        signature.as_str(),
        "not-a-real-token-but-still-secret",
    ] {
        assert!(!text.contains(secret), "a secret reached the logs: {text}");
    }
}

#[tokio::test]
async fn every_file_the_service_writes_is_private_to_its_user() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app(&jwt_env()).await;
    let r = post_image(&app, &token("private", 600), jpeg([9, 8, 7], 256)).await;
    let job: Value = r.json().await.expect("json");
    job_until_done(&app, "private", job["job_id"].as_str().expect("id")).await;
    let key = app.key_for("private");
    assert_eq!(app.get(&format!("/avatar/{key}?s=64")).await.status(), 200);
    let granted = grant(&app, "private", "image/jpeg", 2000).await;
    let url = granted["url"].as_str().expect("url").to_owned();
    assert_eq!(
        put(&app, &url, "image/jpeg", jpeg([1, 2, 3], 64))
            .await
            .status(),
        204
    );
    let mut stack = vec![app.dir.path().to_owned()];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable").flatten() {
            let meta = entry.metadata().expect("metadata");
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(
                mode & 0o077,
                0,
                "{} is {mode:o}",
                entry
                    .path()
                    .strip_prefix(app.dir.path())
                    .expect("inside")
                    .display()
            );
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                files += 1;
            }
        }
    }
    assert!(files >= 5, "only {files} files were checked");
}

/// A multipart upload of `bytes` as the `file` part labelled `mime`.
async fn post_multipart(
    app: &TestApp,
    user: &str,
    bytes: Vec<u8>,
    mime: &str,
) -> reqwest::Response {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes)
            .file_name("avatar")
            .mime_str(mime)
            .expect("mime"),
    );
    app.client
        .post(format!("{}/v1/avatar", app.base))
        .bearer_auth(token(user, 600))
        .multipart(form)
        .send()
        .await
        .expect("sent")
}

#[tokio::test]
async fn a_multipart_part_labelled_octet_stream_is_judged_by_its_bytes() {
    // curl -F file=@avatar labels a file without an extension application/octet-stream.
    let app = spawn_app(&jwt_env()).await;
    for (i, bytes) in [jpeg([0, 0, 200], 200).to_vec(), {
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            64,
            64,
            image::Rgb([0, 0, 200]),
        ))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("png");
        png
    }]
    .into_iter()
    .enumerate()
    {
        let user = format!("octet{i}");
        let r = post_multipart(&app, &user, bytes, "application/octet-stream").await;
        assert_eq!(r.status(), 202, "{i}: {:?}", r.text().await);
        let job: Value = r.json().await.expect("json");
        let done = job_until_done(&app, &user, job["job_id"].as_str().expect("id")).await;
        assert_eq!(done["status"], "completed", "{done}");
        let key = app.key_for(&user);
        let avatar = app.get(&format!("/avatar/{key}?s=64")).await;
        assert_eq!(avatar.headers()["x-avatar-source"], "upload");
        assert!(close_to(
            centre(&avatar.bytes().await.expect("b")).0,
            [0, 0, 200]
        ));
    }
    // The label is no pass: bytes that are no image are still refused.
    let r = post_multipart(
        &app,
        "octet-svg",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec(),
        "application/octet-stream",
    )
    .await;
    assert_eq!(r.status(), 415);
    assert_eq!(
        r.json::<Value>().await.expect("json")["code"],
        "unsupported-image"
    );
    // A specific claim that is not an image type is still refused, as before.
    let r = post_multipart(
        &app,
        "octet-text",
        jpeg([1, 1, 1], 8).to_vec(),
        "text/plain",
    )
    .await;
    assert_eq!(r.status(), 415);
}

fn case(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/imaging/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

#[tokio::test]
async fn an_upload_without_its_jpeg_end_marker_completes_with_the_picture() {
    let app = spawn_app(&jwt_env()).await;
    // The top-left quadrant of the case file is red (220,30,30) in libjpeg's decoding.
    let r = app
        .client
        .post(format!(
            "{}/api/profile/image?x=0&y=0&width=64&height=64",
            app.base
        ))
        .bearer_auth(token("eoi", 600))
        .header("content-type", "image/jpeg")
        .body(case("jpeg-missing-eoi.jpg"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 202);
    let job: Value = r.json().await.expect("json");
    let done = job_until_done(&app, "eoi", job["job_id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "completed", "{done}");
    let key = app.key_for("eoi");
    let avatar = app.get(&format!("/avatar/{key}?s=64")).await;
    assert_eq!(avatar.headers()["x-avatar-source"], "upload");
    assert!(close_to(
        centre(&avatar.bytes().await.expect("b")).0,
        [220, 30, 30]
    ));
}

#[tokio::test]
async fn a_display_p3_upload_is_served_in_srgb() {
    let app = spawn_app(&jwt_env()).await;
    // Top-left quadrant: stored (200,60,50) in Display P3, (217,41,38) in sRGB.
    let r = app
        .client
        .post(format!(
            "{}/api/profile/image?x=0&y=0&width=128&height=128",
            app.base
        ))
        .bearer_auth(token("p3", 600))
        .header("content-type", "image/png")
        .body(case("p3-patches.png"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 202);
    let job: Value = r.json().await.expect("json");
    let done = job_until_done(&app, "p3", job["job_id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "completed", "{done}");
    let key = app.key_for("p3");
    for format in ["png", "webp", "jpg"] {
        let avatar = app.get(&format!("/avatar/{key}.{format}?s=128")).await;
        let (colour, _, _) = centre(&avatar.bytes().await.expect("b"));
        assert!(
            colour
                .iter()
                .zip([217, 41, 38])
                .all(|(c, w)| c.abs_diff(w) <= 10),
            "{format}: {colour:?}"
        );
    }
}

#[tokio::test]
async fn a_jpeg_with_thousands_of_progressive_scans_is_refused_at_once_with_a_clear_code() {
    let app = spawn_app(&jwt_env()).await;
    let r = app
        .client
        .post(format!("{}/v1/avatar", app.base))
        .bearer_auth(token("scans", 600))
        .header("content-type", "image/jpeg")
        .body(case("progressive-5000-scans.jpg"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "image-too-complex", "{body}");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("5001 scans"),
        "{body}"
    );
    // The limit is a setting: raised, the scans pass, and the decode budget (here 1 MiB:
    // the file's 7000x7000 coefficients need about 100 MiB) refuses it instead, still at once.
    let mut env = jwt_env();
    env.push(("AVATAR_MAX_JPEG_SCANS", "10000".into()));
    env.push(("AVATAR_MAX_DECODE_BYTES", (1 << 20).to_string()));
    let app = spawn_app(&env).await;
    let r = app
        .client
        .post(format!("{}/v1/avatar", app.base))
        .bearer_auth(token("scans", 600))
        .header("content-type", "image/jpeg")
        .body(case("progressive-5000-scans.jpg"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "image-too-complex", "{body}");
    assert!(
        body["message"].as_str().expect("message").contains("MiB"),
        "{body}"
    );
}
