//! Upstreams that throttle, hang or fail: bounded upstream requests per page view, download slots
//! that cannot be starved, an image for every `<img>`, and warnings an operator can read.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::*;

fn short_ttl(extra: Vec<(&'static str, String)>) -> Vec<(&'static str, String)> {
    let mut env = extra;
    env.push(("AVATAR_CACHE_TTL", "60s".into()));
    env.push(("AVATAR_CACHE_STALE", "10m".into()));
    env
}

async fn upstream_requests(app: &TestApp) -> f64 {
    metric(app, "avatar_upstream_requests_total", "upstream=\"idp\"").await
}

#[tokio::test]
async fn stale_views_of_a_throttling_upstream_make_one_request_until_retry_after_passes() {
    let upstream = FakeUpstream::start().await;
    let path = "avatars/throttled.jpg";
    upstream.set(path, Behaviour::Image(jpeg([200, 0, 0], 64)));
    let app = spawn_app(&short_ttl(upstream_env("IDP", upstream.addr))).await;
    let key = app.register("throttled", &upstream.url(path)).await;
    assert_eq!(
        header_of(&app.get(&format!("/avatar/{key}")).await, "x-avatar-source"),
        "upstream"
    );
    assert_eq!(upstream.hits(path), 1);

    upstream.set(path, Behaviour::Throttled(429, Some("120".into())));
    app.clock.advance(Duration::from_secs(61));
    for view in 1..=15 {
        let r = app.get(&format!("/avatar/{key}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header_of(&r, "x-cache"), "stale");
        let (c, _, _) = centre(&r.bytes().await.expect("body"));
        assert!(close_to(c, [200, 0, 0]), "the stale copy, view {view}");
        // Each view's background refresh has asked the fetcher before the next view.
        wait_for_metric(
            &app,
            "avatar_upstream_requests_total",
            "upstream=\"idp\"",
            1.0 + f64::from(view),
        )
        .await;
    }
    assert_eq!(upstream.hits(path), 2, "one refresh reached the upstream");
    assert_eq!(
        metric(
            &app,
            "avatar_upstream_requests_total",
            "outcome=\"backoff\""
        )
        .await,
        14.0,
        "the other refreshes were answered without a request"
    );

    app.clock.advance(Duration::from_secs(121));
    upstream.set(path, Behaviour::Image(jpeg([0, 200, 0], 64)));
    app.get(&format!("/avatar/{key}")).await;
    wait_for_metric(
        &app,
        "avatar_upstream_requests_total",
        "upstream=\"idp\"",
        17.0,
    )
    .await;
    assert_eq!(
        upstream.hits(path),
        3,
        "asked again once Retry-After passed"
    );
}

#[tokio::test]
async fn an_expired_copy_of_a_throttled_upstream_is_served_at_once_without_asking_again() {
    let upstream = FakeUpstream::start().await;
    let path = "avatars/expired.jpg";
    upstream.set(path, Behaviour::Image(jpeg([0, 0, 200], 64)));
    let mut env = upstream_env("IDP", upstream.addr);
    env.push(("AVATAR_CACHE_TTL", "60s".into()));
    env.push(("AVATAR_CACHE_STALE", "1s".into()));
    let app = spawn_app(&env).await;
    let key = app.register("expired", &upstream.url(path)).await;
    app.get(&format!("/avatar/{key}")).await;

    // An HTTP-date this time, 90 s ahead of the app's clock.
    let now = std::time::UNIX_EPOCH
        + Duration::from_millis(
            u64::try_from(avatar_proxy::clock::Clock::now_millis(&app.clock)).expect("after 1970"),
        );
    let date = httpdate::fmt_http_date(now + Duration::from_secs(62 + 90));
    upstream.set(path, Behaviour::Throttled(503, Some(date)));
    app.clock.advance(Duration::from_secs(62));
    for size in [32, 64, 128, 32, 64, 128, 256] {
        let r = app.get(&format!("/avatar/{key}?s={size}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            header_of(&r, "x-avatar-source"),
            "upstream",
            "stale-if-error"
        );
        assert_eq!(header_of(&r, "x-cache"), "stale");
    }
    assert_eq!(
        upstream.hits(path),
        2,
        "one request, then the backoff answered"
    );
    app.clock.advance(Duration::from_secs(60));
    app.get(&format!("/avatar/{key}?s=512")).await;
    assert_eq!(upstream.hits(path), 2, "90 s have not passed yet");
    app.clock.advance(Duration::from_secs(31));
    app.get(&format!("/avatar/{key}?s=512")).await;
    assert_eq!(upstream.hits(path), 3);
}

#[tokio::test]
async fn a_failing_upstream_backs_off_after_failures_in_a_row() {
    let upstream = FakeUpstream::start().await;
    let mut env = upstream_env("IDP", upstream.addr);
    env.push(("AVATAR_UPSTREAM_FAILURES_BEFORE_BACKOFF", "3".into()));
    let app = spawn_app(&env).await;
    for i in 0..10 {
        let path = format!("avatars/down-{i}.jpg");
        upstream.set(&path, Behaviour::Status(502));
        let key = app
            .register(&format!("down{i}"), &upstream.url(&path))
            .await;
        let r = app.get(&format!("/avatar/{key}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header_of(&r, "x-avatar-source"), "default");
    }
    let asked: usize = (0..10)
        .map(|i| upstream.hits(&format!("avatars/down-{i}.jpg")))
        .sum();
    assert_eq!(asked, 3, "three 502s in a row, then the upstream rests");
    assert_eq!(upstream_requests(&app).await, 10.0);
}

#[tokio::test]
async fn a_hung_upstream_cannot_starve_other_upstreams_of_download_slots() {
    let hung = HungUpstream::start().await;
    let healthy = FakeUpstream::start().await;
    let mut env = upstream_env("IDP", healthy.addr);
    env.extend(public_upstream_env("HUNG", hung.addr));
    env.push(("AVATAR_CACHE_MAX_CONCURRENT_DOWNLOADS", "2".into()));
    // Hung requests outlast the test; the queue and request timeouts bound every answer.
    env.push(("AVATAR_UPSTREAM_TIMEOUT", "60s".into()));
    env.push(("AVATAR_UPSTREAM_QUEUE_TIMEOUT", "2s".into()));
    env.push(("AVATAR_REQUEST_TIMEOUT", "4s".into()));
    let app = Arc::new(spawn_app(&env).await);
    let mut keys = Vec::new();
    for i in 0..4 {
        let url = hung.url(&format!("avatars/hung-{i}.jpg"));
        keys.push((app.register(&format!("hung{i}"), &url).await, false));
        let path = format!("avatars/ok-{i}.jpg");
        healthy.set(&path, Behaviour::Image(jpeg([0, 100, 200], 64)));
        let key = app.register(&format!("ok{i}"), &healthy.url(&path)).await;
        keys.push((key, true));
    }
    let mut tasks = Vec::new();
    for (key, is_healthy) in keys {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let r = app.get(&format!("/avatar/{key}?s=64")).await;
            let status = r.status();
            let source = header_of(&r, "x-avatar-source");
            let cache_control = header_of(&r, "cache-control");
            let body = r.bytes().await.expect("body");
            (is_healthy, status, source, cache_control, body)
        }));
    }
    for task in tasks {
        let (is_healthy, status, source, cache_control, body) = task.await.expect("task");
        assert_eq!(status, 200, "never a JSON 503");
        let (_, w, _) = centre(&body);
        assert_eq!(w, 64);
        if is_healthy {
            assert_eq!(source, "upstream", "healthy avatars get their image");
        } else {
            assert_eq!(source, "default");
            assert_eq!(
                cache_control, "public, max-age=60",
                "a default is not kept long"
            );
        }
    }
    assert_eq!(
        hung.accepted(),
        1,
        "the hung upstream holds its own share of the slots only"
    );
}

#[tokio::test]
async fn the_avatar_route_answers_an_image_when_the_resolver_times_out() {
    let upstream = FakeUpstream::start().await;
    let path = "avatars/slow.jpg";
    upstream.set(
        path,
        Behaviour::Slow(jpeg([9, 9, 9], 64), Duration::from_secs(30)),
    );
    let mut env = upstream_env("IDP", upstream.addr);
    env.push(("AVATAR_UPSTREAM_TIMEOUT", "60s".into()));
    env.push(("AVATAR_REQUEST_TIMEOUT", "300ms".into()));
    let app = spawn_app(&env).await;
    let key = app.register("slow", &upstream.url(path)).await;
    let r = app.get(&format!("/avatar/{key}?s=64")).await;
    assert_eq!(r.status(), 200, "an image, not a JSON 503");
    assert_eq!(header_of(&r, "content-type"), "image/png");
    assert_eq!(header_of(&r, "x-avatar-source"), "default");
    assert_eq!(header_of(&r, "cache-control"), "public, max-age=60");
    let body = r.bytes().await.expect("body");
    // The key's own generated default, as `f=y` shows it.
    let forced = app.get(&format!("/avatar/{key}?s=64&f=y")).await;
    assert_eq!(body, forced.bytes().await.expect("body"));

    let r = app.get(&format!("/avatar/{key}?s=64&d=404")).await;
    assert_eq!(r.status(), 404, "d=404 keeps its 404");
    assert_eq!(metric(&app, "avatar_fallback_served_total", "").await, 2.0);
}

#[tokio::test]
async fn the_pre_rendered_default_is_the_last_resort() {
    let upstream = FakeUpstream::start().await;
    let path = "avatars/slow.jpg";
    upstream.set(
        path,
        Behaviour::Slow(jpeg([9, 9, 9], 64), Duration::from_secs(30)),
    );
    let mut env = upstream_env("IDP", upstream.addr);
    env.push(("AVATAR_UPSTREAM_TIMEOUT", "60s".into()));
    env.push(("AVATAR_REQUEST_TIMEOUT", "300ms".into()));
    // No time to render the key's default: the one kept in memory is served.
    env.push(("AVATAR_FALLBACK_TIMEOUT", "0s".into()));
    let app = spawn_app(&env).await;
    let key = app.register("slowest", &upstream.url(path)).await;
    let r = app.get(&format!("/avatar/{key}?s=64")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header_of(&r, "cache-control"), "public, max-age=60");
    let body = r.bytes().await.expect("body");
    let (_, w, h) = centre(&body);
    assert_eq!((w, h), (64, 64));
    let settings = app.state.avatars.settings();
    let kept = avatar_proxy::avatars::fallback::Fallback::new(&settings.sizes, settings.default);
    assert_eq!(body, kept.for_size(64).expect("pre-rendered").bytes);
    let own = app.get(&format!("/avatar/{key}?s=64&f=y")).await;
    assert_ne!(body, own.bytes().await.expect("body"), "not the key's own");
}

/// A PNG whose header is fine (64 x 64) but whose pixel data is garbage: it passes the probe
/// and fails to decode.
fn undecodable_png() -> bytes::Bytes {
    let mut png = png_header(64, 64);
    // Replace the tiny IDAT's zlib stream by bytes no inflater accepts.
    let idat = png
        .windows(4)
        .position(|w| w == b"IDAT")
        .expect("an IDAT chunk");
    for byte in &mut png[idat + 4..idat + 12] {
        *byte = 0xff;
    }
    bytes::Bytes::from(png)
}

#[tokio::test]
async fn undecodable_bytes_are_remembered_like_a_404_and_reported() {
    let upstream = FakeUpstream::start().await;
    let path = "avatars/garbage.png";
    upstream.set(path, Behaviour::Image(undecodable_png()));
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    let key = app.register("garbage", &upstream.url(path)).await;
    for query in ["s=32", "s=64", "s=128", "s=64&x=1"] {
        for file in [key.clone(), format!("{key}.webp"), format!("{key}.png")] {
            let r = app.get(&format!("/avatar/{file}?{query}")).await;
            assert_eq!(r.status(), 200);
            assert_eq!(header_of(&r, "x-avatar-source"), "default");
        }
    }
    assert_eq!(
        upstream.hits(path),
        1,
        "downloaded once, not per size and format"
    );
    assert_eq!(
        metric(
            &app,
            "avatar_upstream_undecodable_total",
            "upstream=\"idp\""
        )
        .await,
        1.0
    );
    app.clock.advance(Duration::from_secs(6 * 60));
    app.get(&format!("/avatar/{key}?s=256")).await;
    assert_eq!(upstream.hits(path), 2, "asked again after the negative TTL");
}

/// Log lines written while the returned guard lives (current-thread runtime: the app's tasks
/// run on this thread and see this subscriber).
fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink(buffer.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

fn lines_with(buffer: &Mutex<Vec<u8>>, needle: &str) -> Vec<String> {
    String::from_utf8_lossy(&buffer.lock().expect("lock"))
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn operators_get_one_warning_per_upstream_and_kind_per_interval() {
    let (logs, _guard) = capture_logs();
    let upstream = FakeUpstream::start().await;
    let mut env = upstream_env("IDP", upstream.addr);
    env.push(("AVATAR_UPSTREAM_WARN_INTERVAL", "5m".into()));
    let app = spawn_app(&env).await;
    let mut keys = Vec::new();
    for i in 0..6 {
        let path = format!("avatars/secret-path-{i}.jpg?token=query-secret");
        upstream.set(
            &format!("avatars/secret-path-{i}.jpg"),
            Behaviour::Status(401),
        );
        keys.push(
            app.register(&format!("auth{i}"), &upstream.url(&path))
                .await,
        );
        let path = format!("avatars/broken-{i}.png");
        upstream.set(&path, Behaviour::Image(undecodable_png()));
        keys.push(
            app.register(&format!("broken{i}"), &upstream.url(&path))
                .await,
        );
    }
    for key in &keys {
        assert_eq!(app.get(&format!("/avatar/{key}")).await.status(), 200);
    }
    let trouble = lines_with(&logs, "upstream trouble");
    assert_eq!(
        lines_with(&logs, "kind=auth_failing").len(),
        1,
        "{trouble:#?}"
    );
    assert_eq!(
        lines_with(&logs, "kind=undecodable").len(),
        1,
        "{trouble:#?}"
    );
    assert_eq!(trouble.len(), 2, "{trouble:#?}");
    for line in &trouble {
        assert!(line.contains("upstream=idp"), "{line}");
        for secret in ["secret-path", "query-secret", UPSTREAM_TOKEN, "127.0.0.1"] {
            assert!(!line.contains(secret), "{line}");
        }
    }
    // A new interval: the next failure is told again, with the count of those only counted.
    app.clock.advance(Duration::from_secs(301));
    let path = "avatars/later.jpg";
    upstream.set(path, Behaviour::Status(401));
    let key = app.register("later", &upstream.url(path)).await;
    app.get(&format!("/avatar/{key}")).await;
    let auth = lines_with(&logs, "kind=auth_failing");
    assert_eq!(auth.len(), 2, "{auth:#?}");
    assert!(auth[1].contains("suppressed=5"), "{}", auth[1]);
}

#[tokio::test]
async fn a_failed_fetch_is_remembered_for_every_size_and_format() {
    let upstream = FakeUpstream::start().await;
    let elsewhere = FakeUpstream::start().await;
    let cases = [
        (
            "avatars/off-list.jpg",
            Behaviour::Redirect(elsewhere.url("public/x.jpg")),
        ),
        ("avatars/teapot.jpg", Behaviour::Status(418)),
        ("avatars/html.jpg", Behaviour::HtmlDisguisedAsImage),
    ];
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    for (path, behaviour) in cases {
        upstream.set(path, behaviour);
        let key = app
            .register(&path.replace(['/', '.'], "-"), &upstream.url(path))
            .await;
        for file in [key.clone(), format!("{key}.png"), format!("{key}.webp")] {
            for size in [32, 64, 128] {
                let r = app.get(&format!("/avatar/{file}?s={size}")).await;
                assert_eq!(header_of(&r, "x-avatar-source"), "default", "{path}");
            }
        }
        assert_eq!(
            upstream.hits(path),
            1,
            "{path}: asked once, not per size and format"
        );
    }
}

#[tokio::test]
async fn a_cold_avatar_behind_a_slow_upstream_answers_the_default_at_the_serve_timeout_then_the_picture()
 {
    let upstream = FakeUpstream::start().await;
    let path = "avatars/slow-cold.jpg";
    upstream.set(
        path,
        Behaviour::Slow(jpeg([200, 30, 30], 64), Duration::from_millis(1500)),
    );
    let mut env = upstream_env("IDP", upstream.addr);
    env.push(("AVATAR_SERVE_TIMEOUT", "200ms".into()));
    let app = spawn_app(&env).await;
    let key = app.register("slow-cold", &upstream.url(path)).await;
    // The upstream takes longer than the serve timeout: the <img> gets the default at once.
    let first = app.get(&format!("/avatar/{key}?s=64")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-avatar-source"], "default");
    assert_eq!(first.headers()["cache-control"], "public, max-age=60");
    // The fetch went on in the background: once it is done, the picture is served.
    upstream.wait_for_hits(path, 1).await;
    let mut source = String::new();
    for _ in 0..300 {
        let r = app.get(&format!("/avatar/{key}?s=64")).await;
        source = r.headers()["x-avatar-source"]
            .to_str()
            .expect("ascii")
            .to_owned();
        if source == "upstream" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(source, "upstream");
    assert_eq!(upstream.hits(path), 1, "one fetch, not one per request");
}
