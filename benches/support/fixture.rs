//! The benchmark avatar, generated in code so benches and the load script need no files from
//! elsewhere: a 512x512 JPEG of about 38 KB (a typical upstream avatar: Azure DevOps, GitLab and
//! Entra serve JPEGs of this order), and a way to make byte-distinct copies of it.
//!
//! Shared by `benches/serving.rs` and `examples/make_fixture.rs` through `#[path]`, so the
//! criterion benches and `benches/load.sh` measure the very same image.

use image::ImageEncoder;
use image::codecs::jpeg::JpegEncoder;

/// Side of the fixture, in pixels.
pub const SIDE: u32 = 512;

/// The size the fixture aims for, in bytes.
pub const TARGET_BYTES: usize = 38 * 1024;

/// Pixels that compress like a photo rather than a flat test card: smooth shading (a lit
/// "head" on a gradient background) plus deterministic sensor-like noise.
fn pixels() -> Vec<u8> {
    let mut px = Vec::with_capacity((SIDE * SIDE * 3) as usize);
    // xorshift32: deterministic, so every run encodes the same bytes.
    let mut state: u32 = 0x9E37_79B9;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 25) as i32 - 12
    };
    let c = SIDE as f32 / 2.0;
    for y in 0..SIDE {
        for x in 0..SIDE {
            let (fx, fy) = (x as f32, y as f32);
            let head = ((fx - c).powi(2) + (fy - c * 0.8).powi(2)).sqrt() / (c * 0.55);
            let shoulders =
                ((fx - c).powi(2) / 4.0 + (fy - SIDE as f32).powi(2)).sqrt() / (c * 0.9);
            let base = if head < 1.0 {
                let light = 1.0 - head * 0.5;
                [230.0 * light, 180.0 * light, 150.0 * light]
            } else if shoulders < 1.0 {
                [40.0 + 60.0 * shoulders, 70.0, 140.0 - 40.0 * shoulders]
            } else {
                [60.0 + fx * 0.3, 120.0 + fy * 0.2, 170.0 - fx * 0.1]
            };
            for channel in base {
                px.push((channel as i32 + noise()).clamp(0, 255) as u8);
            }
        }
    }
    px
}

fn encode(px: &[u8], quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .write_image(px, SIDE, SIDE, image::ExtendedColorType::Rgb8)
        .expect("the fixture encodes");
    out
}

/// The fixture: the quality whose output is closest to [`TARGET_BYTES`].
pub fn avatar_jpeg() -> Vec<u8> {
    let px = pixels();
    (40..=95)
        .map(|q| encode(&px, q))
        .min_by_key(|jpeg| jpeg.len().abs_diff(TARGET_BYTES))
        .expect("at least one quality")
}

/// A byte-distinct copy of `jpeg`: a COM segment carrying `tag` right after SOI. Decoders skip
/// comments, so it costs the same to decode, but its digest differs, so the service can share
/// neither the upstream copy nor the derived variants with any other copy (variants are keyed by
/// the digest of their source). Inserting the segment leaves a valid JPEG.
pub fn tagged(jpeg: &[u8], tag: &[u8]) -> Vec<u8> {
    assert!(jpeg.starts_with(&[0xFF, 0xD8]), "not a JPEG");
    let tag = &tag[..tag.len().min(60_000)];
    let len = u16::try_from(tag.len() + 2).expect("short tag");
    let mut out = Vec::with_capacity(jpeg.len() + tag.len() + 4);
    out.extend_from_slice(&jpeg[..2]);
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(tag);
    out.extend_from_slice(&jpeg[2..]);
    out
}
