//! `/avatar/{key}`: what an `<img>` sees.

use crate::helpers::*;

#[tokio::test]
async fn serves_the_upstream_avatar_with_the_credential_and_caches_it_in_memory() {
    let upstream = FakeUpstream::start().await;
    upstream.set(
        "avatars/ada.jpg",
        Behaviour::Image(jpeg([200, 30, 30], 300)),
    );
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    let key = app.register("ada", &upstream.url("avatars/ada.jpg")).await;

    let first = app.get(&format!("/avatar/{key}?s=128")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-avatar-source"], "upstream");
    assert_eq!(first.headers()["x-cache"], "miss");
    assert_eq!(first.headers()["content-type"], "image/jpeg");
    let body = first.bytes().await.expect("body");
    let (colour, w, h) = centre(&body);
    assert_eq!((w, h), (128, 128));
    assert!(close_to(colour, [200, 30, 30]), "{colour:?}");

    let second = app.get(&format!("/avatar/{key}?s=128")).await;
    assert_eq!(second.headers()["x-cache"], "hit-memory");
    assert_eq!(second.bytes().await.expect("body"), body);
    assert_eq!(
        upstream.hits("avatars/ada.jpg"),
        1,
        "a hit needs no upstream request"
    );
    assert_eq!(
        upstream.auth_seen("avatars/ada.jpg"),
        vec![Some(format!("Bearer {UPSTREAM_TOKEN}"))]
    );
}

#[tokio::test]
async fn other_sizes_and_formats_derive_from_one_upstream_copy() {
    let upstream = FakeUpstream::start().await;
    upstream.set("avatars/b.jpg", Behaviour::Image(jpeg([20, 160, 40], 600)));
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    let key = app.register("b", &upstream.url("avatars/b.jpg")).await;

    for (query, side) in [
        ("s=20", 32),
        ("s=64", 64),
        ("size=300", 512),
        ("s=5000", 512),
        ("s=abc", 128),
    ] {
        let r = app.get(&format!("/avatar/{key}?{query}")).await;
        assert_eq!(r.status(), 200, "{query}");
        let (_, w, h) = centre(&r.bytes().await.expect("body"));
        assert_eq!((w, h), (side, side), "{query}");
    }
    let webp = app.get(&format!("/avatar/{key}.webp")).await;
    assert_eq!(webp.headers()["content-type"], "image/webp");
    assert!(
        webp.headers().get("vary").is_none(),
        "the extension decides, not Accept"
    );
    let png = app.get(&format!("/avatar/{key}.png?s=64")).await;
    assert_eq!(png.headers()["content-type"], "image/png");
    let negotiated = app
        .client
        .get(format!("{}/avatar/{key}", app.base))
        .header("accept", "image/avif,image/webp,*/*")
        .send()
        .await
        .expect("sent");
    assert_eq!(negotiated.headers()["content-type"], "image/webp");
    assert_eq!(negotiated.headers()["vary"], "Accept");
    assert_eq!(upstream.hits("avatars/b.jpg"), 1);
}

#[tokio::test]
async fn responses_carry_the_security_and_caching_headers_and_honour_if_none_match() {
    let upstream = FakeUpstream::start().await;
    upstream.set("avatars/c.jpg", Behaviour::Image(jpeg([10, 10, 200], 200)));
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    let key = app.register("c", &upstream.url("avatars/c.jpg")).await;

    let r = app.get(&format!("/avatar/{key}")).await;
    let h = r.headers().clone();
    let body = r.bytes().await.expect("body");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["content-security-policy"], "default-src 'none'; sandbox");
    assert_eq!(h["content-length"], body.len().to_string().as_str());
    assert!(h.contains_key("last-modified"));
    let etag = h["etag"].to_str().expect("ascii").to_owned();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "strong etag: {etag}"
    );
    assert!(
        h["cache-control"]
            .to_str()
            .expect("ascii")
            .contains("stale-while-revalidate")
    );

    let cached = app
        .client
        .get(format!("{}/avatar/{key}", app.base))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("sent");
    assert_eq!(cached.status(), 304);
    assert_eq!(cached.headers()["etag"], etag.as_str());
    assert!(cached.bytes().await.expect("body").is_empty());

    let head = app
        .client
        .head(format!("{}/avatar/{key}", app.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        body.len().to_string().as_str()
    );
}

#[tokio::test]
async fn the_current_version_is_cached_immutably_and_an_old_one_is_not() {
    let upstream = FakeUpstream::start().await;
    upstream.set("avatars/v.jpg", Behaviour::Image(jpeg([90, 90, 90], 100)));
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    let response = app
        .client
        .post(format!("{}/v1/identities/rewrite", app.base))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({
            "identities": [{"id": "v", "avatar_url": upstream.url("avatars/v.jpg")}],
            "prefetch": "wait"
        }))
        .send()
        .await
        .expect("sent");
    let body: serde_json::Value = response.json().await.expect("json");
    let url = body["identities"][0]["avatar_url"]
        .as_str()
        .expect("url")
        .to_owned();
    assert!(url.contains("?v="), "{url}");

    let current = app.client.get(&url).send().await.expect("sent");
    assert_eq!(
        current.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let old = app
        .client
        .get(format!("{}&x=1", url.replace("?v=", "?v=0")))
        .send()
        .await
        .expect("sent");
    assert_ne!(
        old.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
}

#[tokio::test]
async fn unknown_and_malformed_keys_get_the_default_image_never_an_error() {
    let app = spawn_app(&[]).await;
    for path in [
        "/avatar/0123456789abcdef0123456789abcdef",
        "/avatar/not-a-key",
        "/avatar/..%2F..%2Fetc%2Fpasswd",
        "/avatar/%FF%FE",
        "/avatar/0123456789ABCDEF0123456789ABCDEF.png",
        "/avatar/x.gif?s=-1&d=http://evil.example/a.png",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["x-avatar-source"], "default", "{path}");
        let (_, w, h) = centre(&r.bytes().await.expect("body"));
        assert_eq!((w, h), (128, 128), "{path}");
    }
    let r = app
        .get("/avatar/0123456789abcdef0123456789abcdef?d=404")
        .await;
    assert_eq!(r.status(), 404);
    let err: serde_json::Value = r.json().await.expect("json");
    assert_eq!(err["code"], "not-found");
}

#[tokio::test]
async fn every_default_style_renders_and_f_y_forces_it() {
    let upstream = FakeUpstream::start().await;
    upstream.set("avatars/d.jpg", Behaviour::Image(jpeg([250, 250, 0], 100)));
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    let key = app.register("d", &upstream.url("avatars/d.jpg")).await;
    let mut seen = std::collections::HashSet::new();
    for d in ["identicon", "mp", "initials", "blank"] {
        let r = app.get(&format!("/avatar/{key}.png?d={d}&f=y&s=64")).await;
        assert_eq!(r.status(), 200, "{d}");
        assert_eq!(r.headers()["x-avatar-source"], "default", "{d}");
        let body = r.bytes().await.expect("body");
        let (_, w, _) = centre(&body);
        assert_eq!(w, 64);
        assert!(seen.insert(body), "{d} must differ from the others");
    }
    let real = app.get(&format!("/avatar/{key}.png?d=mp&s=64")).await;
    assert_eq!(real.headers()["x-avatar-source"], "upstream");
}

#[tokio::test]
async fn a_new_registration_is_visible_on_the_very_next_request() {
    let upstream = FakeUpstream::start().await;
    upstream.set("avatars/old.jpg", Behaviour::Image(jpeg([200, 0, 0], 64)));
    upstream.set("avatars/new.jpg", Behaviour::Image(jpeg([0, 0, 200], 64)));
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    let key = app.register("e", &upstream.url("avatars/old.jpg")).await;
    let (c, _, _) = centre(
        &app.get(&format!("/avatar/{key}"))
            .await
            .bytes()
            .await
            .expect("b"),
    );
    assert!(close_to(c, [200, 0, 0]));
    app.register("e", &upstream.url("avatars/new.jpg")).await;
    let (c, _, _) = centre(
        &app.get(&format!("/avatar/{key}"))
            .await
            .bytes()
            .await
            .expect("b"),
    );
    assert!(close_to(c, [0, 0, 200]), "{c:?}");
}

#[tokio::test]
async fn malformed_keys_share_one_memory_entry_whatever_their_length() {
    let app = spawn_app(&[]).await;
    for i in 0..200 {
        // 8 KB of key text each, all different.
        let key = format!("{i:05}{}", "x".repeat(8 * 1024));
        let r = app.get(&format!("/avatar/{key}?d=404")).await;
        assert_eq!(r.status(), 404);
        let r = app.get(&format!("/avatar/{key}?s=64")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-avatar-source"], "default");
    }
    let entries = metric(&app, "avatar_cache_entries", "tier=\"memory\"").await;
    assert!(
        entries <= 2.0,
        "{entries} memory entries for malformed keys"
    );
    let bytes = metric(&app, "avatar_cache_bytes", "tier=\"memory\"").await;
    assert!(
        bytes < 64.0 * 1024.0,
        "{bytes} bytes held for malformed keys"
    );
}
