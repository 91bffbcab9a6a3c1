//! Image content from an upstream, as an identity provider serves it: colour-managed,
//! truncated, hostile, animated. The same pipeline serves uploads (see upload_flows.rs).

use bytes::Bytes;

use crate::helpers::*;

fn case(name: &str) -> Bytes {
    Bytes::from(
        std::fs::read(format!(
            "{}/tests/fixtures/imaging/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture"),
    )
}

/// Serves `body` at `path`, registers a user for it, and fetches `/avatar/{key}{query}`:
/// (source header, decoded RGB image).
async fn avatar_of(body: Bytes, path: &str, query: &str) -> (String, image::RgbImage) {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    upstream.set(path, Behaviour::Image(body));
    let key = app
        .register(&path.replace(['/', '.'], "-"), &upstream.url(path))
        .await;
    let r = app.get(&format!("/avatar/{key}{query}")).await;
    assert_eq!(r.status(), 200);
    let source = r.headers()["x-avatar-source"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let img = image::load_from_memory(&r.bytes().await.expect("body"))
        .expect("an image")
        .to_rgb8();
    (source, img)
}

fn near(got: [u8; 3], want: [u8; 3], tolerance: u8) -> bool {
    got.iter()
        .zip(want)
        .all(|(g, w)| g.abs_diff(w) <= tolerance)
}

#[tokio::test]
async fn an_upstream_display_p3_avatar_is_served_in_srgb() {
    let (source, img) = avatar_of(case("p3-patches.png"), "p3.png", ".png?s=64").await;
    assert_eq!(source, "upstream");
    // Quadrant centres, as ImageMagick (with srgb.icc), libvips and Chromium show them.
    let want = [[217, 41, 38], [0, 172, 35], [244, 134, 0], [0, 152, 151]];
    for (i, (x, y)) in [(16, 16), (48, 16), (16, 48), (48, 48)]
        .into_iter()
        .enumerate()
    {
        let got = img.get_pixel(x, y).0;
        assert!(near(got, want[i], 10), "quadrant {i}: {got:?}");
    }
}

#[tokio::test]
async fn an_upstream_jpeg_without_its_end_marker_is_the_picture_not_the_default() {
    let (source, img) = avatar_of(case("jpeg-missing-eoi.jpg"), "eoi.jpg", ".png?s=64").await;
    assert_eq!(source, "upstream");
    let want = [[220, 30, 30], [30, 179, 59], [30, 60, 220], [239, 220, 20]];
    for (i, (x, y)) in [(16, 16), (48, 16), (16, 48), (48, 48)]
        .into_iter()
        .enumerate()
    {
        let got = img.get_pixel(x, y).0;
        assert!(near(got, want[i], 12), "quadrant {i}: {got:?}");
    }
}

#[tokio::test]
async fn an_upstream_jpeg_with_thousands_of_scans_gets_the_default_image() {
    let (source, img) =
        avatar_of(case("progressive-5000-scans.jpg"), "scans.jpg", ".png?s=64").await;
    assert_eq!(source, "default");
    assert_eq!(img.dimensions(), (64, 64));
}
