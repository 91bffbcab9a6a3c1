//! Invalidation wins over builds in flight: an upload, a delete or a purge that completes while
//! a rendition of the old state is being built is what the next request shows, at every size.
//! Deterministic: the old build is held (an upstream or a blob store that waits for the test)
//! until the change has completed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use avatar_proxy::keys::UserKey;
use avatar_proxy::repo::Identity;
use avatar_proxy::store::{BlobStore, ObjectBlobStore, StoreError};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::helpers::*;
use crate::upload_flows::{JWT_SECRET, token};

const RED: [u8; 3] = [210, 20, 20];
const BLUE: [u8; 3] = [20, 20, 210];
const GREEN: [u8; 3] = [20, 190, 20];

fn env_with(upstream: &FakeUpstream) -> Vec<(&'static str, String)> {
    let mut env = upstream_env("IDP", upstream.addr);
    env.push(("AVATAR_JWT_SECRET", JWT_SECRET.into()));
    env
}

/// Register `user` with `url` in the registry directly (no prefetch), returning the key.
async fn register_quietly(app: &TestApp, user: &str, url: &str) -> String {
    let key = app.key_for(user);
    let identity = Identity {
        key: UserKey::parse(&key).expect("key"),
        user_id: user.to_owned(),
        upstream_url: Some(url.to_owned()),
        display_name: None,
        updated_at: 0,
    };
    app.state
        .avatars
        .register(&[identity])
        .await
        .expect("registered");
    key
}

/// Upload `body` as `user` through the single-request flow and wait for its job.
async fn upload(app: &TestApp, user: &str, body: Bytes) {
    let r = app
        .client
        .post(format!("{}/v1/avatar", app.base))
        .bearer_auth(token(user, 600))
        .header("content-type", "image/jpeg")
        .body(body)
        .send()
        .await
        .expect("sent");
    assert!(r.status().is_success(), "{}", r.status());
    let job: Value = r.json().await.expect("json");
    let id = job["job_id"].as_str().expect("job id").to_owned();
    for _ in 0..1000 {
        let body: Value = app
            .client
            .get(format!("{}/v1/jobs/{id}", app.base))
            .bearer_auth(token(user, 600))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        if body["status"] == "completed" {
            return;
        }
        assert_ne!(body["status"], "failed", "{body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id} never finished");
}

/// The colour and source the key shows at size `s`.
async fn shown(app: &TestApp, key: &str, s: u32) -> ([u8; 3], String) {
    let r = app.get(&format!("/avatar/{key}?s={s}")).await;
    assert_eq!(r.status(), 200);
    let source = header_of(&r, "x-avatar-source");
    let bytes = r.bytes().await.expect("body");
    (centre(&bytes).0, source)
}

/// Wait (bounded) until `n()` reaches `at_least`: the held build has reached its gate.
async fn until(at_least: usize, n: impl Fn() -> usize) {
    for _ in 0..500 {
        if n() >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the build never reached its gate");
}

#[tokio::test]
async fn an_upload_that_finishes_while_the_old_picture_is_being_built_shows_at_every_size() {
    let upstream = FakeUpstream::start().await;
    let gate = Arc::new(Semaphore::new(0));
    let path = "avatars/race-upload.jpg";
    upstream.set(path, Behaviour::Gated(jpeg(RED, 600), gate.clone()));
    let app = Arc::new(spawn_app(&env_with(&upstream)).await);
    let key = register_quietly(&app, "racer", &upstream.url(path)).await;

    // A request for s=512 builds from the upstream picture, and is held there.
    let held = tokio::spawn({
        let (app, key) = (app.clone(), key.clone());
        async move { shown(&app, &key, 512).await }
    });
    until(1, || upstream.hits(path)).await;

    // Meanwhile the user uploads a new picture, and its job completes.
    upload(&app, "racer", jpeg(BLUE, 300)).await;
    gate.add_permits(100);
    held.await.expect("held request");

    for s in [512, 256, 128, 32] {
        let (colour, source) = shown(&app, &key, s).await;
        assert_eq!(source, "upload", "s={s}");
        assert!(
            close_to(colour, BLUE),
            "s={s} shows {colour:?}, not the upload"
        );
    }
}

/// A blob store whose reads, once armed, wait for the test after reading (so the bytes of the
/// old upload are in hand while the test deletes it).
struct HeldStore {
    inner: ObjectBlobStore,
    armed: AtomicBool,
    held: AtomicUsize,
    gate: Semaphore,
}

#[async_trait]
impl BlobStore for HeldStore {
    async fn put(&self, path: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.inner.put(path, bytes).await
    }
    async fn get(&self, path: &str) -> Result<Bytes, StoreError> {
        let bytes = self.inner.get(path).await?;
        if self.armed.load(Ordering::SeqCst) {
            self.held.fetch_add(1, Ordering::SeqCst);
            self.gate.acquire().await.expect("gate open").forget();
        }
        Ok(bytes)
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
async fn a_delete_while_the_upload_is_being_built_falls_back_at_every_size() {
    let upstream = FakeUpstream::start().await;
    let path = "avatars/race-delete.jpg";
    upstream.set(path, Behaviour::Image(jpeg(RED, 600)));
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    let store = Arc::new(HeldStore {
        inner: ObjectBlobStore::local(&dir.path().join("store")).expect("store"),
        armed: AtomicBool::new(false),
        held: AtomicUsize::new(0),
        gate: Semaphore::new(0),
    });
    let app = Arc::new(spawn_app_with_store(dir, &env_with(&upstream), store.clone()).await);
    let key = register_quietly(&app, "deleter", &upstream.url(path)).await;
    upload(&app, "deleter", jpeg(BLUE, 300)).await;

    // A request for s=512 reads the upload's variant, and is held with its bytes in hand.
    store.armed.store(true, Ordering::SeqCst);
    let held = tokio::spawn({
        let (app, key) = (app.clone(), key.clone());
        async move { shown(&app, &key, 512).await }
    });
    until(1, || store.held.load(Ordering::SeqCst)).await;

    // Meanwhile the user deletes the upload.
    let r = app
        .client
        .delete(format!("{}/v1/avatar", app.base))
        .bearer_auth(token("deleter", 600))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 204);
    store.armed.store(false, Ordering::SeqCst);
    store.gate.add_permits(100);
    held.await.expect("held request");

    for s in [512, 128, 256] {
        let (colour, source) = shown(&app, &key, s).await;
        assert_eq!(source, "upstream", "s={s}");
        assert!(
            close_to(colour, RED),
            "s={s} shows {colour:?}, the deleted upload"
        );
    }
}

#[tokio::test]
async fn a_purge_while_the_old_picture_is_being_fetched_refetches_at_every_size() {
    let upstream = FakeUpstream::start().await;
    let gate = Arc::new(Semaphore::new(0));
    let path = "avatars/race-purge.jpg";
    upstream.set(path, Behaviour::Gated(jpeg(RED, 600), gate.clone()));
    let app = Arc::new(spawn_app(&env_with(&upstream)).await);
    let key = register_quietly(&app, "purger", &upstream.url(path)).await;

    // A request for s=512 fetches the old picture, and is held at the upstream.
    let held = tokio::spawn({
        let (app, key) = (app.clone(), key.clone());
        async move { shown(&app, &key, 512).await }
    });
    until(1, || upstream.hits(path)).await;

    // Meanwhile the picture changes upstream and the backend purges the key.
    upstream.set(path, Behaviour::Image(jpeg(GREEN, 600)));
    let r = app
        .client
        .delete(format!("{}/v1/cache/{key}", app.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 204);
    gate.add_permits(100);
    held.await.expect("held request");

    for s in [512, 256, 64] {
        let (colour, source) = shown(&app, &key, s).await;
        assert_eq!(source, "upstream", "s={s}");
        assert!(
            close_to(colour, GREEN),
            "s={s} shows {colour:?}, the purged picture"
        );
    }
}
