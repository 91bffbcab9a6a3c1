//! Decode memory, estimated from the headers before a single pixel is decoded.
//!
//! A file's size says nothing about its decoded size: a 157 KB PNG of 7071x7071 flat pixels
//! is 150 MB of RGB once decoded. [`estimate`] adds up the large buffers the pipeline holds
//! at its peak, per kind:
//!
//! - **JPEG** (from the marker walk): jpeg-decoder's per-component planes at the DCT scale
//!   used (`blocks x (8/d)²` bytes, twice that above 8 bits), a progressive file's coefficient
//!   buffer at full resolution whatever the scale (64 `i16` a block, every component), the
//!   interleaved output (1, 3 or 4 bytes a pixel) and, for grey, the RGB it is widened to.
//! - **PNG** (from `IHDR`): the decoded frame at its bit depth (palette and grey expanded by
//!   `image`, 16-bit kept), the 8-bit copy a 16-bit or grey image becomes, and the cropped
//!   RGBA copy of a transparent one.
//! - **GIF**: the RGBA canvas and the frame composed onto it, plus the crop copy.
//! - **WebP**: the decoder's ARGB or YUV working buffer, the RGBA output and the crop copy.
//!
//! Plus the resized squares and their encoders' buffers (small next to the rest). The
//! estimate is checked against `Limits::max_decode_bytes` and returned by
//! [`crate::imaging::decode_estimate`] so that a caller can bound the total across images.

use crate::imaging::decode::dct_denominator;
use crate::imaging::{Crop, ImageKind, Probe, jpeg};

/// Bytes the pipeline holds at its peak to render `raw_rect` (stored pixels) of an image
/// described by `probe` at sizes up to `largest` (`sizes` in all).
pub(crate) fn estimate(bytes: &[u8], probe: &Probe, raw_rect: Crop, sizes: &[u32]) -> u64 {
    let largest = sizes.iter().copied().max().unwrap_or(1);
    let pixels = u64::from(probe.width) * u64::from(probe.height);
    let crop = u64::from(raw_rect.width) * u64::from(raw_rect.height);
    // Each size: a resized RGBA square, and about as much again in its encoders.
    let outputs: u64 = sizes
        .iter()
        .map(|&s| u64::from(s) * u64::from(s) * 4 * 2)
        .sum();
    let decode = match probe.kind {
        ImageKind::Jpeg => jpeg_bytes(bytes, raw_rect, largest),
        ImageKind::Png => png_bytes(bytes, pixels, crop),
        ImageKind::Gif => pixels * 4 * 2 + crop * 4,
        ImageKind::Webp => pixels * 4 * 2 + crop * 4,
    };
    decode.saturating_add(outputs)
}

fn jpeg_bytes(bytes: &[u8], raw_rect: Crop, largest: u32) -> u64 {
    let s = jpeg::walk(bytes);
    let lossless = s.lossless;
    let d = if lossless {
        1
    } else {
        u64::from(dct_denominator(
            raw_rect.width.min(raw_rect.height),
            largest,
        ))
    };
    let deep = if s.precision > 8 { 2 } else { 1 };
    let blocks: u64 = s.components.iter().map(|c| s.blocks(c)).sum();
    let side = 8 / d;
    let planes = blocks * side * side * deep;
    let coefficients = if s.progressive { blocks * 64 * 2 } else { 0 };
    let out_pixels = u64::from(s.width.div_ceil(d as u32)) * u64::from(s.height.div_ceil(d as u32));
    let channels = match s.components.len() {
        1 => 1,
        4 => 4,
        _ => 3,
    };
    let output = out_pixels * channels * deep;
    // Grey is widened to RGB in a new buffer; CMYK and RGB are converted in place.
    let widened = if channels == 1 { out_pixels * 3 } else { 0 };
    planes + coefficients + output + widened
}

fn png_bytes(bytes: &[u8], pixels: u64, crop: u64) -> u64 {
    let depth = bytes.get(24).copied().unwrap_or(16);
    let colour = bytes.get(25).copied().unwrap_or(6);
    let deep = if depth == 16 { 2 } else { 1 };
    // Samples a pixel as `image` decodes it; a palette may carry transparency (tRNS).
    let (channels, grey) = match colour {
        0 => (1, true),
        4 => (2, true),
        2 => (3, false),
        3 | 6 => (4, false),
        _ => (4, false),
    };
    let decoded = pixels * channels * deep;
    // 16-bit is narrowed to 8 in a new buffer; grey is widened to RGB(A) in another.
    let narrowed = if deep == 2 { pixels * channels } else { 0 };
    let widened = if grey { pixels * (channels + 2) } else { 0 };
    let cropped = if channels % 2 == 0 { crop * 4 } else { 0 };
    decoded + narrowed + widened + cropped
}

#[cfg(test)]
mod tests {
    use crate::imaging::fixtures;
    use crate::imaging::{ImagingError, Limits, OutputFormat, Preferred, decode_estimate, render};

    const MIB: u64 = 1 << 20;

    fn estimate(bytes: &[u8], sizes: &[u32]) -> u64 {
        decode_estimate(bytes, &Limits::default(), None, sizes).expect("estimate")
    }

    #[test]
    fn a_png_that_compresses_well_is_estimated_by_its_decoded_size_not_its_file_size() {
        // 7071x7071 (just under max_pixels): 150 MB of RGB, however small the file.
        // Measured with examples/decode_peak (peak RSS, limit lifted): RGB 165 MiB, grey +
        // alpha 388 MiB, 16-bit RGB 435 MiB; the files are 146 KB, 97 KB and 292 KB.
        let rgb = fixtures::png_headers(7071, 7071, 8, 2);
        let e = estimate(&rgb, &[128, 512]);
        assert!((145 * MIB..170 * MIB).contains(&e), "{e}");
        let grey_alpha = estimate(&fixtures::png_headers(7071, 7071, 8, 4), &[128]);
        assert!(grey_alpha > 380 * MIB, "{grey_alpha}");
        let deep = estimate(&fixtures::png_headers(7071, 7071, 16, 2), &[128]);
        assert!(deep > 420 * MIB, "{deep}");
        // So the default budget (256 MiB) refuses the last two before decoding.
        for png in [
            fixtures::png_headers(7071, 7071, 8, 4),
            fixtures::png_headers(7071, 7071, 16, 2),
        ] {
            let refused = render(
                &png,
                &Limits::default(),
                None,
                &[128],
                &[Preferred::JpegOrPng],
            );
            assert!(
                matches!(refused, Err(ImagingError::TooComplex(_))),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn an_image_over_the_decode_budget_is_refused_before_decoding() {
        // A header with no pixel data: refused by the budget before a decoder sees it.
        let png = fixtures::png_headers(2000, 2000, 8, 2);
        let tight = Limits {
            max_decode_bytes: 8 * MIB,
            ..Limits::default()
        };
        let refused = render(&png, &tight, None, &[128], &[Preferred::JpegOrPng]);
        match refused {
            Err(ImagingError::TooComplex(message)) => {
                assert!(message.contains("MiB"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        // Within the budget, a real image renders.
        let small = fixtures::png_rgb(600, 600);
        let rendered = render(
            &small,
            &tight,
            None,
            &[128],
            &[Preferred::Exactly(OutputFormat::Png)],
        );
        assert!(rendered.is_ok(), "{rendered:?}");
    }

    #[test]
    fn a_jpeg_is_estimated_at_the_dct_scale_used_but_progressive_coefficients_at_full_size() {
        let baseline = fixtures::jpeg_quadrants(2048, 2048);
        // At 128 the decoder works at 1/8: far less than a full-size RGB buffer (12 MiB).
        let small = estimate(&baseline, &[128]);
        let full = estimate(&baseline, &[2048]);
        assert!(small < 2 * MIB, "{small}");
        assert!(full > 12 * MIB, "{full}");
        // The 5000-scan file's frame: 7000x7000 grey, progressive. Its coefficients alone are
        // 2 bytes a pixel at full size, whatever the scale (the scan limit refuses it first,
        // so the estimate is taken with that limit lifted).
        let jpeg = fixtures::file("progressive-5000-scans.jpg");
        let lifted = Limits {
            max_jpeg_scans: u32::MAX,
            ..Limits::default()
        };
        let e = decode_estimate(&jpeg, &lifted, None, &[128]).expect("estimate");
        assert!(e > 7000 * 7000 * 2, "{e}");
    }

    #[test]
    fn the_estimate_is_checked_like_render_checks_its_inputs() {
        assert_eq!(
            decode_estimate(b"<svg/>", &Limits::default(), None, &[64]),
            Err(ImagingError::Unsupported)
        );
        assert!(matches!(
            decode_estimate(&fixtures::png_rgb(8, 8), &Limits::default(), None, &[0]),
            Err(ImagingError::InvalidRequest(_))
        ));
    }
}
