//! The profile-image flow as a person does it: choose a file, crop while it uploads, Save, watch
//! the pictures change here and in a second window; and the ways it goes wrong.

use std::io::Cursor;
use std::time::Duration;

use fantoccini::Locator;
use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use fantoccini::key::Key;
use serde_json::Value;

use crate::driver::{Browser, browser};
use crate::helpers::*;

/// An 800 x 400 JPEG: left half red, right half blue, so a crop can be told from another.
fn two_tone() -> Vec<u8> {
    let img = image::RgbImage::from_fn(800, 400, |x, _| {
        if x < 400 {
            image::Rgb([220, 20, 20])
        } else {
            image::Rgb([20, 20, 220])
        }
    });
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encode");
    out.into_inner()
}

/// Open the page and wait until it has signed in and its WebSocket is open.
async fn open_page(browser: &mut Browser, app: &TestApp) {
    browser
        .client
        .goto(&format!("{}/demo/", app.base))
        .await
        .expect("page loads");
    browser
        .wait_until(
            "document.getElementById('user-id').textContent.startsWith('demo-') && \
             document.getElementById('live').textContent.startsWith('Live updates on')",
            "sign-in and live updates",
        )
        .await;
}

async fn choose_file(browser: &Browser, path: &std::path::Path) {
    browser
        .client
        .find(Locator::Id("file"))
        .await
        .expect("file input")
        .send_keys(&path.display().to_string())
        .await
        .expect("file chosen");
}

async fn src(browser: &Browser, id: &str) -> String {
    browser
        .client
        .find(Locator::Id(id))
        .await
        .expect("img")
        .attr("src")
        .await
        .expect("attr")
        .unwrap_or_default()
}

/// Requests the page made to a path (from the browser's own resource timing).
async fn requests_to(browser: &Browser, path: &str) -> u64 {
    browser
        .js(&format!(
            "return performance.getEntriesByType('resource')\
               .filter(e => new URL(e.name).pathname.startsWith('{path}')).length;"
        ))
        .await
        .as_u64()
        .expect("a count")
}

/// Every sampled pixel of an image served to us: centre, corners (inset 4 px), edge midpoints.
fn samples(bytes: &[u8]) -> (u32, Vec<[u8; 3]>) {
    let img = image::load_from_memory(bytes).expect("decodable").to_rgb8();
    let (w, h) = img.dimensions();
    let points = [
        (w / 2, h / 2),
        (4, 4),
        (w - 5, 4),
        (4, h - 5),
        (w - 5, h - 5),
        (w / 2, 4),
        (4, h / 2),
    ];
    assert_eq!(w, h, "square");
    (
        w,
        points.iter().map(|&(x, y)| img.get_pixel(x, y).0).collect(),
    )
}

#[tokio::test]
async fn a_cropped_picture_replaces_both_sizes_here_and_live_in_a_second_window() {
    let Some(mut browser) = browser("flow").await else {
        return;
    };
    let app = spawn_app(&[]).await;
    let files = tempfile::tempdir().expect("tempdir");
    let picture = files.path().join("portrait.jpg");
    std::fs::write(&picture, two_tone()).expect("written");

    open_page(&mut browser, &app).await;
    let first = browser.client.window().await.expect("window");
    let user = browser.text("user-id").await;
    assert!(src(&browser, "avatar-128").await.contains("s=128"));
    // A second window of the same browser: the same demo user (the name is kept in
    // localStorage), listening to the same events.
    let second = browser
        .client
        .new_window(false)
        .await
        .expect("new window")
        .handle;
    browser
        .client
        .switch_to_window(second.clone())
        .await
        .expect("switch");
    open_page(&mut browser, &app).await;
    assert_eq!(browser.text("user-id").await, user, "the same user");
    let before = src(&browser, "avatar-128").await;
    browser
        .client
        .switch_to_window(first.clone())
        .await
        .expect("switch");

    choose_file(&browser, &picture).await;
    browser
        .wait_until("!document.getElementById('cropper').hidden", "the crop box")
        .await;
    // The original uploads at once, while the user is still cropping.
    browser
        .wait_until(
            "document.getElementById('upload-status').textContent.startsWith('Uploaded')",
            "the background upload",
        )
        .await;
    assert_eq!(
        browser.text("crop-info").await,
        "400 × 400 px from (200, 0)",
        "starts as the centred square"
    );
    // Half the size with the keyboard on the slider (5 % a step), then drag the box far right:
    // it stops at the edge, on the blue half.
    let slider = browser
        .client
        .find(Locator::Id("crop-size"))
        .await
        .expect("slider");
    slider.click().await.expect("focus");
    let value = || async {
        browser
            .js("return Number(document.getElementById('crop-size').value);")
            .await
            .as_u64()
            .expect("number")
    };
    while value().await > 50 {
        slider.send_keys(&Key::Left.to_string()).await.expect("key");
    }
    assert_eq!(
        browser.text("crop-info").await,
        "200 × 200 px from (300, 100)"
    );
    let crop_box = browser
        .client
        .find(Locator::Id("crop-box"))
        .await
        .expect("box");
    let drag = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element: crop_box,
            duration: None,
            x: 0.0,
            y: 0.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::MoveBy {
            duration: Some(Duration::from_millis(250)),
            x: 250.0,
            y: 0.0,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    browser.client.perform_actions(drag).await.expect("dragged");
    assert_eq!(
        browser.text("crop-info").await,
        "200 × 200 px from (600, 100)"
    );
    browser.screenshot("cropping").await;

    // Record what the progress state shows while the job runs (it may be brief).
    browser
        .js("window.progressSeen = [];
             const watch = () => { if (!document.getElementById('progress').hidden)
               window.progressSeen.push(document.getElementById('progress-text').textContent); };
             new MutationObserver(watch).observe(document.getElementById('progress'),
               {attributes: true, subtree: true, childList: true, characterData: true});")
        .await;
    browser
        .client
        .find(Locator::Id("save"))
        .await
        .expect("save")
        .click()
        .await
        .expect("clicked");
    browser
        .wait_until(
            "document.getElementById('message').textContent.startsWith('Saved')",
            "ProfileImageCompleted",
        )
        .await;
    browser
        .wait_until(
            "['avatar-128', 'avatar-512'].every(id => document.getElementById(id).complete && \
               document.getElementById(id).naturalWidth > 0)",
            "the new pictures to load",
        )
        .await;
    browser.screenshot("saved").await;
    assert!(
        browser
            .js("return document.getElementById('progress').hidden;")
            .await
            == Value::Bool(true)
    );
    let seen = browser.js("return window.progressSeen;").await;
    assert!(
        seen.as_array()
            .is_some_and(|s| s.iter().any(|t| t == "Processing your picture…")),
        "a progress state until the event arrived: {seen}"
    );

    for (id, size) in [("avatar-128", 128u32), ("avatar-512", 512)] {
        let url = src(&browser, id).await;
        assert!(
            url.contains(&format!("s={size}")) && url.contains("v="),
            "{id}: {url}"
        );
        let natural = browser
            .js(&format!(
                "return document.getElementById('{id}').naturalWidth;"
            ))
            .await;
        assert_eq!(
            natural.as_u64(),
            Some(u64::from(size)),
            "{id} shows the {size} picture"
        );
        // The pixels served at that URL are the crop: all of it from the blue half.
        let r = app.client.get(&url).send().await.expect("fetched");
        assert_eq!(r.headers()["x-avatar-source"], "upload");
        let (side, pixels) = samples(&r.bytes().await.expect("body"));
        assert_eq!(side, size);
        for pixel in pixels {
            assert!(
                close_to(pixel, [20, 20, 220]),
                "{id}: {pixel:?} is not the blue crop"
            );
        }
    }
    let new_128 = src(&browser, "avatar-128").await;

    browser
        .client
        .switch_to_window(second)
        .await
        .expect("switch");
    browser
        .wait_until(
            &format!(
                "document.getElementById('avatar-128').src === {new:?} && \
                 document.getElementById('avatar-128').naturalWidth === 128",
                new = new_128
            ),
            "the second window's live update",
        )
        .await;
    assert_ne!(src(&browser, "avatar-128").await, before);
    assert!(src(&browser, "avatar-512").await.contains("v="));
    browser.screenshot("second-window").await;
    browser.close().await;
}

#[tokio::test]
async fn a_wrong_file_type_and_an_oversized_file_are_refused_in_the_browser_without_uploading() {
    let Some(mut browser) = browser("refused").await else {
        return;
    };
    let app = spawn_app(&[("AVATAR_MAX_UPLOAD_BYTES", "102400".into())]).await;
    let files = tempfile::tempdir().expect("tempdir");
    let gif = files.path().join("animation.gif");
    std::fs::write(&gif, b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;").expect("written");
    let renamed = files.path().join("notes.jpg");
    std::fs::write(&renamed, "these are not pixels").expect("written");
    // Noise does not compress: a JPEG well over 100 KB.
    let noise = image::RgbImage::from_fn(500, 500, |x, y| {
        let v = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)).to_le_bytes();
        image::Rgb([v[0], v[1], v[2]])
    });
    let mut big = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(noise)
        .write_to(&mut big, image::ImageFormat::Jpeg)
        .expect("encode");
    let big = big.into_inner();
    assert!(big.len() > 102_400, "{} bytes", big.len());
    let large = files.path().join("holiday.jpg");
    std::fs::write(&large, &big).expect("written");

    open_page(&mut browser, &app).await;
    assert_eq!(
        browser.text("file-rules").await,
        "JPEG, PNG or WebP, at most 100 KB.",
        "the limit comes from GET /v1/limits"
    );

    choose_file(&browser, &gif).await;
    browser
        .wait_until(
            "document.getElementById('message').textContent !== ''",
            "a message",
        )
        .await;
    assert_eq!(
        browser.text("message").await,
        "“animation.gif” is not a JPEG, PNG or WebP picture. Choose one of those."
    );
    browser.screenshot("wrong-type").await;

    choose_file(&browser, &renamed).await;
    browser
        .wait_until(
            "document.getElementById('message').textContent.includes('notes.jpg')",
            "a message",
        )
        .await;
    assert_eq!(
        browser.text("message").await,
        "“notes.jpg” is not a JPEG, PNG or WebP picture. Choose one of those."
    );

    choose_file(&browser, &large).await;
    browser
        .wait_until(
            "document.getElementById('message').textContent.includes('holiday.jpg')",
            "a message",
        )
        .await;
    let kb = big.len().div_ceil(1024);
    assert_eq!(
        browser.text("message").await,
        format!("“holiday.jpg” is {kb} KB; pictures may be at most 100 KB. Choose a smaller one.")
    );
    browser.screenshot("too-large").await;

    assert_eq!(
        requests_to(&browser, "/v1/uploads").await,
        0,
        "nothing was uploaded"
    );
    assert!(
        browser
            .js("return document.getElementById('cropper').hidden;")
            .await
            == Value::Bool(true)
    );
    assert!(
        browser
            .js("return document.getElementById('save').disabled;")
            .await
            == Value::Bool(true)
    );
    browser.close().await;
}

#[tokio::test]
async fn a_picture_that_cannot_be_processed_ends_in_try_again_later() {
    let Some(mut browser) = browser("failed-job").await else {
        return;
    };
    let app = spawn_app(&[]).await;
    let files = tempfile::tempdir().expect("tempdir");
    // Valid JPEG magic bytes and header, cut inside its first scan header: the upload is
    // accepted, the job has no image data to decode. (A JPEG cut later in its data renders as
    // far as the data goes, as browsers show it.)
    let full = two_tone();
    let sos = full
        .windows(2)
        .position(|w| w == [0xFF, 0xDA])
        .expect("a JPEG has a scan");
    let broken = files.path().join("broken.jpg");
    std::fs::write(&broken, &full[..sos + 4]).expect("written");

    open_page(&mut browser, &app).await;
    let before = src(&browser, "avatar-128").await;
    choose_file(&browser, &broken).await;
    browser
        .wait_until(
            "document.getElementById('upload-status').textContent.startsWith('Uploaded') && \
             !document.getElementById('save').disabled",
            "the upload",
        )
        .await;
    browser
        .client
        .find(Locator::Id("save"))
        .await
        .expect("save")
        .click()
        .await
        .expect("clicked");
    browser
        .wait_until(
            "document.getElementById('message').textContent !== ''",
            "ProfileImageFailed",
        )
        .await;
    assert_eq!(browser.text("message").await, "Try again later");
    assert_eq!(browser.text("live").await, "Live updates on.");
    assert!(
        browser
            .js("return document.getElementById('progress').hidden;")
            .await
            == Value::Bool(true)
    );
    assert_eq!(
        src(&browser, "avatar-128").await,
        before,
        "the old picture stays"
    );
    browser.screenshot("try-again-later").await;
    browser.close().await;
}

/// A blob store that is down: every write fails (reads and deletes never get that far).
struct DownStore;

#[async_trait::async_trait]
impl avatar_proxy::store::BlobStore for DownStore {
    async fn put(&self, _: &str, _: bytes::Bytes) -> Result<(), avatar_proxy::store::StoreError> {
        Err(avatar_proxy::store::StoreError::Backend(
            "injected outage".into(),
        ))
    }
    async fn get(&self, _: &str) -> Result<bytes::Bytes, avatar_proxy::store::StoreError> {
        Err(avatar_proxy::store::StoreError::NotFound)
    }
    async fn delete(&self, _: &str) -> Result<(), avatar_proxy::store::StoreError> {
        Ok(())
    }
    async fn delete_prefix(&self, _: &str) -> Result<usize, avatar_proxy::store::StoreError> {
        Ok(0)
    }
    async fn delete_older_than(
        &self,
        _: &str,
        _: Duration,
    ) -> Result<usize, avatar_proxy::store::StoreError> {
        Ok(0)
    }
    async fn health(&self) -> Result<(), avatar_proxy::store::StoreError> {
        Ok(())
    }
}

#[tokio::test]
async fn an_upload_the_service_cannot_store_ends_in_try_again_later_without_a_job() {
    let Some(mut browser) = browser("failed-upload").await else {
        return;
    };
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("tempdir"));
    let app = spawn_app_with_store(dir, &[], std::sync::Arc::new(DownStore)).await;
    let files = tempfile::tempdir().expect("tempdir");
    let picture = files.path().join("portrait.jpg");
    std::fs::write(&picture, two_tone()).expect("written");

    open_page(&mut browser, &app).await;
    choose_file(&browser, &picture).await;
    browser
        .wait_until(
            "document.getElementById('upload-status').textContent === \
               'The upload failed. Try again later.' && !document.getElementById('save').disabled",
            "the failed background upload",
        )
        .await;
    browser
        .client
        .find(Locator::Id("save"))
        .await
        .expect("save")
        .click()
        .await
        .expect("clicked");
    browser
        .wait_until(
            "document.getElementById('message').textContent !== ''",
            "a message",
        )
        .await;
    assert_eq!(browser.text("message").await, "Try again later");
    assert_eq!(
        requests_to(&browser, "/v1/avatar").await,
        0,
        "no job was asked for"
    );
    browser.screenshot("upload-failed").await;
    browser.close().await;
}

#[tokio::test]
async fn opened_away_from_the_public_base_url_the_page_says_where_uploads_go() {
    let Some(mut browser) = browser("other-origin").await else {
        return;
    };
    let app = spawn_app(&[]).await;
    let elsewhere = app.base.replace("127.0.0.1", "localhost");
    browser
        .client
        .goto(&format!("{elsewhere}/demo/"))
        .await
        .expect("page loads");
    browser
        .wait_until("!document.getElementById('origin-note').hidden", "the note")
        .await;
    assert_eq!(
        browser.text("origin-note").await,
        format!(
            "Uploads go to {base}: open this page at {base}/demo/ for them to work.",
            base = app.base
        )
    );
    browser.screenshot("origin-note").await;
    browser.close().await;
}
