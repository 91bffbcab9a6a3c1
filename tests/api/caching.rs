//! TTL, stale-while-revalidate, stale-if-error, single flight, budgets, restarts, integrity.
//! Time moves by hand (`ManualClock`), never by sleeping.

use std::time::Duration;

use crate::helpers::*;

fn short_ttl(upstream: &FakeUpstream) -> Vec<(&'static str, String)> {
    let mut env = upstream_env("IDP", upstream.addr);
    env.push(("AVATAR_CACHE_TTL", "60s".into()));
    env.push(("AVATAR_CACHE_STALE", "10m".into()));
    env
}

#[tokio::test]
async fn serves_stale_while_revalidating_in_the_background_then_fresh() {
    let upstream = FakeUpstream::start().await;
    let path = "avatars/swr.jpg";
    upstream.set(path, Behaviour::Image(jpeg([200, 0, 0], 64)));
    let app = spawn_app(&short_ttl(&upstream)).await;
    let key = app.register("swr", &upstream.url(path)).await;
    assert_eq!(
        app.get(&format!("/avatar/{key}")).await.headers()["x-cache"],
        "miss"
    );

    app.clock.advance(Duration::from_secs(61));
    let stale = app.get(&format!("/avatar/{key}")).await;
    assert_eq!(stale.headers()["x-cache"], "stale");
    assert_eq!(stale.status(), 200);
    // The refresh is a conditional request; the fake upstream answers 304.
    upstream.wait_for_hits(path, 2).await;
    let mut status = String::new();
    for _ in 0..100 {
        let r = app.get(&format!("/avatar/{key}")).await;
        status = r.headers()["x-cache"].to_str().expect("ascii").to_owned();
        if status != "stale" {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(status, "hit-disk", "after a 304 the copy is fresh again");
    assert_eq!(
        app.get(&format!("/avatar/{key}")).await.headers()["x-cache"],
        "hit-memory"
    );
    assert_eq!(upstream.hits(path), 2);
}

#[tokio::test]
async fn past_the_grace_fetches_first_and_shows_a_changed_avatar() {
    let upstream = FakeUpstream::start().await;
    let path = "avatars/changed.jpg";
    upstream.set(path, Behaviour::Image(jpeg([200, 0, 0], 64)));
    let app = spawn_app(&short_ttl(&upstream)).await;
    let key = app.register("changed", &upstream.url(path)).await;
    app.get(&format!("/avatar/{key}")).await;

    upstream.set(path, Behaviour::Image(jpeg([0, 200, 0], 64)));
    app.clock.advance(Duration::from_secs(60 + 600 + 1));
    let r = app.get(&format!("/avatar/{key}")).await;
    assert_eq!(r.headers()["x-cache"], "miss");
    let (c, _, _) = centre(&r.bytes().await.expect("body"));
    assert!(close_to(c, [0, 200, 0]), "{c:?}");
}

#[tokio::test]
async fn an_unchanged_avatar_past_the_grace_is_revalidated_with_a_304() {
    let upstream = FakeUpstream::start().await;
    let path = "avatars/same.jpg";
    upstream.set(path, Behaviour::Image(jpeg([0, 0, 200], 64)));
    let app = spawn_app(&short_ttl(&upstream)).await;
    let key = app.register("same", &upstream.url(path)).await;
    app.get(&format!("/avatar/{key}")).await;
    app.clock.advance(Duration::from_secs(60 + 600 + 1));
    let r = app.get(&format!("/avatar/{key}")).await;
    assert_eq!(r.headers()["x-cache"], "revalidated");
    assert_eq!(upstream.hits(path), 2);
}

#[tokio::test]
async fn serves_the_stale_copy_while_the_upstream_is_down() {
    let upstream = FakeUpstream::start().await;
    let path = "avatars/down.jpg";
    upstream.set(path, Behaviour::Image(jpeg([0, 0, 200], 64)));
    let app = spawn_app(&short_ttl(&upstream)).await;
    let key = app.register("down", &upstream.url(path)).await;
    app.get(&format!("/avatar/{key}")).await;

    upstream.set(path, Behaviour::Status(503));
    app.clock.advance(Duration::from_secs(60 + 600 + 1));
    let r = app.get(&format!("/avatar/{key}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "stale");
    assert_eq!(r.headers()["x-avatar-source"], "upstream");
    let (c, _, _) = centre(&r.bytes().await.expect("body"));
    assert!(close_to(c, [0, 0, 200]));
}

#[tokio::test]
async fn an_upstream_404_shows_the_default_and_is_remembered_briefly() {
    let upstream = FakeUpstream::start().await;
    let path = "avatars/gone.jpg";
    upstream.set(path, Behaviour::Status(404));
    let app = spawn_app(&short_ttl(&upstream)).await;
    let key = app.register("gone", &upstream.url(path)).await;
    let r = app.get(&format!("/avatar/{key}?s=64")).await;
    assert_eq!(r.headers()["x-avatar-source"], "default");
    app.get(&format!("/avatar/{key}?s=32")).await;
    assert_eq!(upstream.hits(path), 1, "the 404 is cached negatively");
    app.clock.advance(Duration::from_secs(6 * 60));
    app.get(&format!("/avatar/{key}?s=128")).await;
    assert_eq!(
        upstream.hits(path),
        2,
        "and forgotten after the negative TTL"
    );
}

#[tokio::test]
async fn a_hundred_concurrent_misses_make_one_upstream_request() {
    let upstream = FakeUpstream::start().await;
    let path = "avatars/herd.jpg";
    upstream.set(
        path,
        Behaviour::Slow(jpeg([7, 7, 7], 256), Duration::from_millis(300)),
    );
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    let key = app.register("herd", &upstream.url(path)).await;
    let requests = (0..100).map(|_| {
        let client = app.client.clone();
        let url = format!("{}/avatar/{key}", app.base);
        tokio::spawn(async move {
            let r = client.get(url).send().await.expect("sent");
            (r.status(), r.bytes().await.expect("body"))
        })
    });
    let results = futures::future::join_all(requests).await;
    let first = results[0].as_ref().expect("joined").1.clone();
    for result in results {
        let (status, body) = result.expect("joined");
        assert_eq!(status, 200);
        assert_eq!(body, first);
    }
    assert_eq!(upstream.hits(path), 1);
}

#[tokio::test]
async fn the_disk_tier_stays_within_its_budget() {
    let upstream = FakeUpstream::start().await;
    let mut env = upstream_env("IDP", upstream.addr);
    env.push(("AVATAR_CACHE_MAX_SIZE_MB", "1".into()));
    let app = spawn_app(&env).await;
    // Noisy images so the JPEGs are large (~100 KB originals).
    for i in 0..25u32 {
        let mut img = image::RgbImage::new(400, 400);
        for (x, y, p) in img.enumerate_pixels_mut() {
            let v = (x
                .wrapping_mul(2654435761)
                .wrapping_add(y.wrapping_mul(i + 7))
                >> 13) as u8;
            *p = image::Rgb([v, v.wrapping_mul(3), v ^ (i as u8)]);
        }
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut out, image::ImageFormat::Jpeg)
            .expect("encode");
        let path = format!("avatars/noise{i}.jpg");
        upstream.set(&path, Behaviour::Image(out.into_inner().into()));
        let key = app.register(&format!("n{i}"), &upstream.url(&path)).await;
        assert_eq!(app.get(&format!("/avatar/{key}?s=512")).await.status(), 200);
    }
    let content: u64 = walk(&app.dir.path().join("cache").join("content-v2"))
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let largest_entry = 200 * 1024;
    assert!(
        content <= 1024 * 1024 + largest_entry,
        "disk holds {content} bytes"
    );
    assert!(
        content > 512 * 1024,
        "the budget is used, not wasted: {content}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn a_restart_keeps_the_cache() {
    let upstream = FakeUpstream::start().await;
    let path = "avatars/keep.jpg";
    upstream.set(path, Behaviour::Image(jpeg([0, 150, 150], 64)));
    let env = upstream_env("IDP", upstream.addr);
    let app = spawn_app(&env).await;
    let key = app.register("keep", &upstream.url(path)).await;
    assert_eq!(app.get(&format!("/avatar/{key}")).await.status(), 200);
    let clock = app.clock.clone();
    let dir = app.stop().await;

    let again = spawn_app_in(dir, &env, clock).await;
    let r = again.get(&format!("/avatar/{key}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "hit-disk");
    assert_eq!(upstream.hits(path), 1, "served from disk after the restart");
}

#[tokio::test]
async fn a_corrupted_disk_entry_is_refetched_not_served() {
    let upstream = FakeUpstream::start().await;
    let path = "avatars/rot.jpg";
    upstream.set(path, Behaviour::Image(jpeg([120, 40, 200], 64)));
    let env = upstream_env("IDP", upstream.addr);
    let app = spawn_app(&env).await;
    let key = app.register("rot", &upstream.url(path)).await;
    app.get(&format!("/avatar/{key}")).await;
    let clock = app.clock.clone();
    let dir = app.stop().await;
    for file in walk(&dir.path().join("cache").join("content-v2")) {
        let mut bytes = std::fs::read(&file).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&file, bytes).expect("corrupt");
    }

    let again = spawn_app_in(dir, &env, clock).await;
    let r = again.get(&format!("/avatar/{key}")).await;
    assert_eq!(r.status(), 200);
    let (c, w, _) = centre(&r.bytes().await.expect("body"));
    assert_eq!(w, 128);
    assert!(close_to(c, [120, 40, 200]), "{c:?}");
    assert_eq!(
        upstream.hits(path),
        2,
        "the corrupted copy was fetched again"
    );
    assert!(metric(&again, "avatar_cache_corrupt_entries_total", "").await >= 1.0);
}

#[tokio::test]
async fn purging_a_key_forgets_every_copy() {
    let upstream = FakeUpstream::start().await;
    let path = "avatars/purge.jpg";
    upstream.set(path, Behaviour::Image(jpeg([0, 0, 0], 64)));
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    let key = app.register("purge", &upstream.url(path)).await;
    app.get(&format!("/avatar/{key}")).await;
    let r = app
        .client
        .delete(format!("{}/v1/cache/{key}", app.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 204);
    assert_eq!(
        app.get(&format!("/avatar/{key}")).await.headers()["x-cache"],
        "miss"
    );
    assert_eq!(upstream.hits(path), 2);
}
