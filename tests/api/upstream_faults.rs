//! The fault matrix: every way an upstream can misbehave ends in a default image (or the stale
//! copy) and a counted outcome, never a crash, a leaked credential, or a cached sign-in page.

use std::time::Duration;

use crate::helpers::*;

/// Register `path` on a fresh app, request it, and return (status, source header, body).
async fn outcome_of(
    upstream: &FakeUpstream,
    app: &TestApp,
    path: &str,
) -> (u16, String, bytes::Bytes) {
    let key = app
        .register(&path.replace(['/', '.'], "-"), &upstream.url(path))
        .await;
    let r = app.get(&format!("/avatar/{key}?s=64")).await;
    let status = r.status().as_u16();
    let source = r.headers()["x-avatar-source"]
        .to_str()
        .expect("ascii")
        .to_owned();
    (status, source, r.bytes().await.expect("body"))
}

#[tokio::test]
async fn every_upstream_fault_ends_in_a_default_image() {
    let upstream = FakeUpstream::start().await;
    let mut env = upstream_env("IDP", upstream.addr);
    env.push(("AVATAR_MAX_IMAGE_BYTES", (1024 * 1024).to_string()));
    // Long enough for every case on a loaded machine, shorter than the slow case.
    env.push(("AVATAR_UPSTREAM_TIMEOUT", "3s".into()));
    let app = spawn_app(&env).await;
    let cases = [
        ("faults/500.jpg", Behaviour::Status(500)),
        ("faults/401.jpg", Behaviour::Status(401)),
        ("faults/203.jpg", Behaviour::SignIn203),
        ("faults/html.jpg", Behaviour::HtmlDisguisedAsImage),
        (
            "faults/truncated.jpg",
            Behaviour::Truncated(jpeg([1, 1, 1], 300)),
        ),
        ("faults/endless.jpg", Behaviour::Endless),
        ("faults/bomb.png", Behaviour::Bomb),
        ("faults/svg.svg", Behaviour::Svg),
        (
            "faults/slow.jpg",
            Behaviour::Slow(jpeg([1, 1, 1], 64), Duration::from_secs(5)),
        ),
        (
            "faults/signin.jpg",
            Behaviour::Redirect(format!("http://{}/_signin?returnUrl=/x", upstream.addr)),
        ),
    ];
    for (path, behaviour) in cases {
        upstream.set(path, behaviour);
        let (status, source, body) = outcome_of(&upstream, &app, path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(source, "default", "{path}");
        let (_, w, _) = centre(&body);
        assert_eq!(w, 64, "{path}");
    }
    let auth_failures = metric(
        &app,
        "avatar_upstream_requests_total",
        "outcome=\"auth_failure\"",
    )
    .await;
    assert_eq!(
        auth_failures, 4.0,
        "401, 203, HTML and the sign-in redirect are auth failures"
    );
    assert_eq!(
        metric(
            &app,
            "avatar_upstream_requests_total",
            "outcome=\"too_large\""
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &app,
            "avatar_upstream_requests_total",
            "outcome=\"bad_image\""
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &app,
            "avatar_upstream_requests_total",
            "outcome=\"timeout\""
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_sign_in_page_is_never_cached_as_an_avatar() {
    let upstream = FakeUpstream::start().await;
    let path = "avatars/flaky-auth.jpg";
    upstream.set(path, Behaviour::SignIn203);
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    let key = app.register("flaky", &upstream.url(path)).await;
    assert_eq!(
        app.get(&format!("/avatar/{key}")).await.headers()["x-avatar-source"],
        "default"
    );
    // The default is cached only briefly; once the credential works the real avatar appears.
    upstream.set(path, Behaviour::Image(jpeg([10, 200, 10], 64)));
    app.clock.advance(Duration::from_secs(6 * 60));
    let r = app.get(&format!("/avatar/{key}")).await;
    assert_eq!(r.headers()["x-avatar-source"], "upstream");
}

#[tokio::test]
async fn the_credential_never_follows_a_redirect_to_another_host() {
    let upstream = FakeUpstream::start().await;
    let elsewhere = FakeUpstream::start().await;
    elsewhere.set("public/cdn.jpg", Behaviour::Image(jpeg([50, 60, 70], 64)));
    upstream.set(
        "avatars/moved.jpg",
        Behaviour::Redirect(elsewhere.url("public/cdn.jpg")),
    );
    let mut env = upstream_env("IDP", upstream.addr);
    // The CDN is allow-listed too (no credential of its own), so the redirect may be followed.
    env.push(("AVATAR_UPSTREAM_CDN_HOSTS", elsewhere.addr.to_string()));
    env.push(("AVATAR_UPSTREAM_CDN_ALLOW_HTTP", "true".into()));
    env.push(("AVATAR_UPSTREAM_CDN_ALLOW_PRIVATE", "true".into()));
    let app = spawn_app(&env).await;
    let key = app
        .register("moved", &upstream.url("avatars/moved.jpg"))
        .await;
    let r = app.get(&format!("/avatar/{key}")).await;
    assert_eq!(r.headers()["x-avatar-source"], "upstream");
    assert_eq!(elsewhere.hits("public/cdn.jpg"), 1);
    assert_eq!(
        elsewhere.auth_seen("public/cdn.jpg"),
        vec![None],
        "credential leaked off-host"
    );
    assert_eq!(
        upstream.auth_seen("avatars/moved.jpg"),
        vec![Some(format!("Bearer {UPSTREAM_TOKEN}"))]
    );
}

#[tokio::test]
async fn redirects_off_the_allow_list_and_redirect_loops_are_refused() {
    let upstream = FakeUpstream::start().await;
    let elsewhere = FakeUpstream::start().await;
    elsewhere.set("public/x.jpg", Behaviour::Image(jpeg([1, 2, 3], 64)));
    upstream.set(
        "avatars/off.jpg",
        Behaviour::Redirect(elsewhere.url("public/x.jpg")),
    );
    upstream.set(
        "avatars/loop.jpg",
        Behaviour::Redirect(upstream.url("avatars/loop.jpg")),
    );
    upstream.set(
        "avatars/meta.jpg",
        Behaviour::Redirect("http://169.254.169.254/latest/meta-data".into()),
    );
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    for path in ["avatars/off.jpg", "avatars/loop.jpg", "avatars/meta.jpg"] {
        let (status, source, _) = outcome_of(&upstream, &app, path).await;
        assert_eq!((status, source.as_str()), (200, "default"), "{path}");
    }
    assert_eq!(
        elsewhere.hits("public/x.jpg"),
        0,
        "a host off the allow-list is never contacted"
    );
    assert_eq!(
        upstream.hits("avatars/loop.jpg"),
        4,
        "the first request and three redirects"
    );
    assert_eq!(
        metric(
            &app,
            "avatar_upstream_requests_total",
            "outcome=\"not_allowed\""
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            &app,
            "avatar_upstream_requests_total",
            "outcome=\"too_many_redirects\""
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn private_addresses_are_refused_unless_the_upstream_allows_them() {
    let upstream = FakeUpstream::start().await;
    upstream.set("avatars/ssrf.jpg", Behaviour::Image(jpeg([9, 9, 9], 64)));
    let port = upstream.addr.port();
    // Allow-listed by name and by literal address, but not marked internal.
    let env: Vec<(&str, String)> = vec![
        (
            "AVATAR_UPSTREAM_PUB_HOSTS",
            format!("127.0.0.1:{port},localhost:{port}"),
        ),
        ("AVATAR_UPSTREAM_PUB_BEARER", UPSTREAM_TOKEN.into()),
        ("AVATAR_UPSTREAM_PUB_ALLOW_HTTP", "true".into()),
    ];
    let app = spawn_app(&env).await;
    for url in [
        format!("http://127.0.0.1:{port}/avatars/ssrf.jpg"),
        format!("http://localhost:{port}/avatars/ssrf.jpg"),
    ] {
        let user = format!("u{}", url.len());
        let key = app.register(&user, &url).await;
        let r = app.get(&format!("/avatar/{key}")).await;
        assert_eq!(r.headers()["x-avatar-source"], "default", "{url}");
    }
    assert_eq!(
        upstream.hits("avatars/ssrf.jpg"),
        0,
        "no request reached a private address"
    );
    assert_eq!(
        metric(
            &app,
            "avatar_upstream_requests_total",
            "outcome=\"blocked_address\""
        )
        .await,
        2.0
    );
}

#[tokio::test]
async fn responses_and_logs_never_contain_the_upstream_url_or_credential() {
    let upstream = FakeUpstream::start().await;
    upstream.set("avatars/secret-path.jpg", Behaviour::Status(500));
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    let key = app
        .register("private", &upstream.url("avatars/secret-path.jpg"))
        .await;
    let r = app.get(&format!("/avatar/{key}?d=404")).await;
    let text = format!("{:?}{}", r.headers().clone(), r.text().await.expect("text"));
    assert!(!text.contains("secret-path"), "{text}");
    assert!(!text.contains(UPSTREAM_TOKEN), "{text}");
    let config = app.state.settings.redacted_toml();
    assert!(!config.contains(UPSTREAM_TOKEN));
}

#[tokio::test]
async fn an_upstream_304_without_validators_is_an_error_not_a_loop() {
    let upstream = FakeUpstream::start().await;
    let path = "avatars/always-304.jpg";
    upstream.set(path, Behaviour::NotModifiedAlways);
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    // The default background prefetch of a rewrite was enough to overflow the stack.
    let response = app
        .client
        .post(format!("{}/v1/identities/rewrite", app.base))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({
            "identities": [{"id": "looping", "avatar_url": upstream.url(path)}],
            "prefetch": "wait"
        }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let key = app.key_for("looping");
    for _ in 0..3 {
        let r = app.get(&format!("/avatar/{key}?s=64")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-avatar-source"], "default");
    }
    assert!(
        upstream.hits(path) <= 4,
        "one GET makes a bounded number of upstream requests, saw {}",
        upstream.hits(path)
    );
    assert_eq!(
        metric(
            &app,
            "avatar_upstream_requests_total",
            "outcome=\"http_error\""
        )
        .await,
        upstream.hits(path) as f64
    );
}
