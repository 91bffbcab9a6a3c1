//! HTTP details real upstreams send: compressed bodies, raw UTF-8 in `Location`, redirect chains
//! that leave the credential's origin and come back.

use std::io::Write;

use bytes::Bytes;

use crate::helpers::*;

fn gzip(data: &[u8]) -> Bytes {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    Bytes::from(e.finish().expect("gzip"))
}

fn deflate(data: &[u8]) -> Bytes {
    // HTTP's "deflate" is the zlib format (RFC 9110 §8.4.1.2).
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("deflate");
    Bytes::from(e.finish().expect("deflate"))
}

fn brotli(data: &[u8]) -> Bytes {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).expect("brotli");
    }
    Bytes::from(out)
}

#[tokio::test]
async fn gzip_deflate_and_brotli_image_bodies_are_decoded() {
    let upstream = FakeUpstream::start().await;
    let image = jpeg([30, 160, 90], 96);
    let cases = [
        ("avatars/gzip.jpg", gzip(&image), "gzip"),
        ("avatars/deflate.jpg", deflate(&image), "deflate"),
        ("avatars/br.jpg", brotli(&image), "br"),
    ];
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    for (path, body, encoding) in cases {
        upstream.set(path, Behaviour::Encoded(body, encoding));
        let key = app.register(encoding, &upstream.url(path)).await;
        let r = app.get(&format!("/avatar/{key}?s=64")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header_of(&r, "x-avatar-source"), "upstream", "{encoding}");
        let (c, w, _) = centre(&r.bytes().await.expect("body"));
        assert_eq!(w, 64);
        assert!(close_to(c, [30, 160, 90]), "{encoding}: {c:?}");
    }
}

#[tokio::test]
async fn a_gzip_bomb_is_cut_at_the_byte_cap_of_the_decoded_body() {
    let upstream = FakeUpstream::start().await;
    // 32 MiB once inflated, about 32 KiB on the wire, and a JPEG's start to pass any sniffing.
    let mut inflated = jpeg([1, 2, 3], 16).to_vec();
    inflated.resize(32 * 1024 * 1024, 0);
    let bomb = gzip(&inflated);
    assert!(bomb.len() < 100 * 1024);
    let path = "avatars/bomb.jpg";
    upstream.set(path, Behaviour::Encoded(bomb, "gzip"));
    let mut env = upstream_env("IDP", upstream.addr);
    env.push(("AVATAR_MAX_IMAGE_BYTES", (1024 * 1024).to_string()));
    let app = spawn_app(&env).await;
    let key = app.register("bomb", &upstream.url(path)).await;
    let r = app.get(&format!("/avatar/{key}?s=64")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header_of(&r, "x-avatar-source"), "default");
    assert_eq!(
        metric(
            &app,
            "avatar_upstream_requests_total",
            "outcome=\"too_large\""
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_location_with_raw_utf8_is_percent_encoded_and_followed() {
    let upstream = FakeUpstream::start().await;
    upstream.set("avatars/Zoë.jpg", Behaviour::Image(jpeg([200, 100, 0], 64)));
    upstream.set(
        "avatars/moved.jpg",
        Behaviour::RawRedirect("/avatars/Zoë.jpg".as_bytes().to_vec()),
    );
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    let key = app
        .register("zoe", &upstream.url("avatars/moved.jpg"))
        .await;
    let r = app.get(&format!("/avatar/{key}?s=64")).await;
    assert_eq!(header_of(&r, "x-avatar-source"), "upstream");
    let (c, _, _) = centre(&r.bytes().await.expect("body"));
    assert!(close_to(c, [200, 100, 0]));
    assert_eq!(upstream.hits("avatars/Zoë.jpg"), 1);
}

#[tokio::test]
async fn the_credential_stays_behind_once_a_redirect_chain_left_its_origin() {
    let upstream = FakeUpstream::start().await;
    let cdn = FakeUpstream::start().await;
    upstream.set(
        "avatars/away.jpg",
        Behaviour::Redirect(cdn.url("public/bounce")),
    );
    cdn.set(
        "public/bounce",
        Behaviour::Redirect(upstream.url("avatars/back.jpg")),
    );
    upstream.set("avatars/back.jpg", Behaviour::Image(jpeg([5, 5, 5], 64)));
    let mut env = upstream_env("IDP", upstream.addr);
    env.extend(public_upstream_env("CDN", cdn.addr));
    let app = spawn_app(&env).await;
    let key = app
        .register("bounce", &upstream.url("avatars/away.jpg"))
        .await;
    let r = app.get(&format!("/avatar/{key}?s=64")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        upstream.auth_seen("avatars/away.jpg"),
        vec![Some(format!("Bearer {UPSTREAM_TOKEN}"))]
    );
    assert_eq!(cdn.auth_seen("public/bounce"), vec![None]);
    assert_eq!(
        upstream.auth_seen("avatars/back.jpg"),
        vec![None],
        "the credential is not sent again after the chain left its origin"
    );
    // Without the credential the upstream says 401: the default image, never a leak.
    assert_eq!(header_of(&r, "x-avatar-source"), "default");
}
