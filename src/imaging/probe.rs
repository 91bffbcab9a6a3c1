//! Sniffing and probing: what an input is and how big it claims to be, from its first bytes.
//!
//! The order matters for decompression bombs: the dimensions are read by hand from the fixed
//! header of each format (PNG `IHDR`, GIF logical screen, WebP `VP8 `/`VP8L`/`VP8X`, JPEG
//! `SOF`) and checked against [`Limits`] before any decoder allocates a pixel buffer. Only then
//! does the format's own decoder parse the header, so a malformed one is reported as
//! [`ImagingError::Corrupt`] at upload time rather than in a job.

use std::io::Cursor;

use image::ImageDecoder;

use crate::imaging::decode::guarded;
use crate::imaging::exif::{self, ExifInfo};
use crate::imaging::jpeg;
use crate::imaging::{Crop, ImageKind, ImagingError, Limits, Probe};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Recognises PNG, JPEG, GIF and WebP by their magic bytes; anything else (SVG, HTML, XML,
/// text, empty input) is `None`.
pub fn sniff(bytes: &[u8]) -> Option<ImageKind> {
    if bytes.starts_with(PNG_MAGIC) {
        Some(ImageKind::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageKind::Jpeg)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(ImageKind::Gif)
    } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        Some(ImageKind::Webp)
    } else {
        None
    }
}

/// Reads the kind, the upright dimensions and the EXIF orientation from the header, without
/// decoding pixels, and refuses images over `limits` before anything large is allocated.
pub fn probe(bytes: &[u8], limits: &Limits) -> Result<Probe, ImagingError> {
    inspect(bytes, limits).map(|inspected| inspected.probe)
}

/// Checks that `crop` is a non-empty rectangle inside the upright image that `probe`
/// describes. The message says what is wrong in the client's terms.
pub fn validate_crop(crop: &Crop, probe: &Probe) -> Result<(), ImagingError> {
    if crop.width == 0 || crop.height == 0 {
        return Err(ImagingError::InvalidCrop(format!(
            "crop is empty ({}x{}): width and height must be at least 1",
            crop.width, crop.height
        )));
    }
    let right = crop.x.checked_add(crop.width).ok_or_else(|| {
        ImagingError::InvalidCrop("crop overflows: x + width is out of range".into())
    })?;
    let bottom = crop.y.checked_add(crop.height).ok_or_else(|| {
        ImagingError::InvalidCrop("crop overflows: y + height is out of range".into())
    })?;
    if right > probe.width {
        return Err(ImagingError::InvalidCrop(format!(
            "crop extends past the right edge: x + width = {right}, but the image is {} pixels wide",
            probe.width
        )));
    }
    if bottom > probe.height {
        return Err(ImagingError::InvalidCrop(format!(
            "crop extends past the bottom edge: y + height = {bottom}, but the image is {} pixels high",
            probe.height
        )));
    }
    Ok(())
}

/// A probe plus the EXIF facts read on the way, so [`crate::imaging::render`] reads the
/// container once.
pub(crate) struct Inspected {
    pub probe: Probe,
    pub exif: ExifInfo,
}

pub(crate) fn inspect(bytes: &[u8], limits: &Limits) -> Result<Inspected, ImagingError> {
    let kind = sniff(bytes).ok_or(ImagingError::Unsupported)?;
    let (width, height) = match kind {
        ImageKind::Jpeg => jpeg_size(bytes)?,
        ImageKind::Png => png_size(bytes)?,
        ImageKind::Gif => gif_size(bytes)?,
        ImageKind::Webp => webp_size(bytes)?,
    };
    check_limits(width, height, limits)?;
    if kind == ImageKind::Jpeg {
        jpeg::walk(bytes).check_scans(limits.max_jpeg_scans)?;
    } else {
        // The decoder's own header parse (the JPEG one above already was the decoder's).
        let (w, h) = library_size(kind, bytes)?;
        if (w, h) != (width, height) {
            return Err(ImagingError::Corrupt(format!(
                "header says {width}x{height} but the decoder sees {w}x{h}"
            )));
        }
    }
    let exif = exif::read(bytes, kind);
    let (width, height) = if exif.orientation >= 5 {
        (height, width)
    } else {
        (width, height)
    };
    Ok(Inspected {
        probe: Probe {
            kind,
            width,
            height,
            orientation: exif.orientation,
        },
        exif,
    })
}

pub(crate) fn check_limits(width: u32, height: u32, limits: &Limits) -> Result<(), ImagingError> {
    if width == 0 || height == 0 {
        return Err(ImagingError::Corrupt(format!(
            "image has no pixels ({width}x{height})"
        )));
    }
    if width > limits.max_side
        || height > limits.max_side
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(ImagingError::TooLarge { width, height });
    }
    Ok(())
}

fn truncated(what: &str) -> ImagingError {
    ImagingError::Corrupt(format!("{what} header is truncated or malformed"))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn le16(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u32::from(u16::from_le_bytes([b[0], b[1]])))
}

fn le24(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(3)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], 0]))
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// PNG: the signature is followed by the `IHDR` chunk, always first.
fn png_size(bytes: &[u8]) -> Result<(u32, u32), ImagingError> {
    if bytes.get(12..16) != Some(b"IHDR") {
        return Err(truncated("PNG"));
    }
    Ok((
        be32(bytes, 16).ok_or_else(|| truncated("PNG"))?,
        be32(bytes, 20).ok_or_else(|| truncated("PNG"))?,
    ))
}

/// GIF: logical screen width and height follow the 6-byte signature. The `image` decoder
/// composes the first frame onto a canvas of this size, so this is what gets allocated.
fn gif_size(bytes: &[u8]) -> Result<(u32, u32), ImagingError> {
    Ok((
        le16(bytes, 6).ok_or_else(|| truncated("GIF"))?,
        le16(bytes, 8).ok_or_else(|| truncated("GIF"))?,
    ))
}

/// WebP: the first chunk after `RIFF....WEBP` is `VP8 ` (lossy), `VP8L` (lossless) or `VP8X`
/// (extended, with the canvas size).
fn webp_size(bytes: &[u8]) -> Result<(u32, u32), ImagingError> {
    let payload = 20;
    let size = match bytes.get(12..16) {
        Some(b"VP8 ") => {
            // 3-byte frame tag, start code 9d 01 2a, then 14-bit width and height.
            if bytes.get(payload + 3..payload + 6) != Some(&[0x9d, 0x01, 0x2a]) {
                return Err(truncated("WebP"));
            }
            le16(bytes, payload + 6)
                .zip(le16(bytes, payload + 8))
                .map(|(w, h)| (w & 0x3fff, h & 0x3fff))
        }
        Some(b"VP8L") => {
            if bytes.get(payload) != Some(&0x2f) {
                return Err(truncated("WebP"));
            }
            le32(bytes, payload + 1).map(|bits| ((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
        }
        Some(b"VP8X") => le24(bytes, payload + 4)
            .zip(le24(bytes, payload + 7))
            .map(|(w, h)| (w + 1, h + 1)),
        _ => None,
    };
    size.ok_or_else(|| truncated("WebP"))
}

/// JPEG: jpeg-decoder's `read_info` stops right after the frame header (`SOF`), before any
/// entropy-coded data.
fn jpeg_size(bytes: &[u8]) -> Result<(u32, u32), ImagingError> {
    let info = guarded("JPEG", || {
        let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
        decoder
            .read_info()
            .map_err(|e| ImagingError::Corrupt(format!("JPEG: {e}")))?;
        decoder.info().ok_or_else(|| truncated("JPEG"))
    })?;
    Ok((u32::from(info.width), u32::from(info.height)))
}

fn library_size(kind: ImageKind, bytes: &[u8]) -> Result<(u32, u32), ImagingError> {
    let corrupt = |e: image::ImageError| ImagingError::Corrupt(e.to_string());
    guarded("image header", || {
        let cursor = Cursor::new(bytes);
        match kind {
            ImageKind::Png => image::codecs::png::PngDecoder::new(cursor)
                .map(|d| d.dimensions())
                .map_err(corrupt),
            ImageKind::Gif => image::codecs::gif::GifDecoder::new(cursor)
                .map(|d| d.dimensions())
                .map_err(corrupt),
            ImageKind::Webp => image::codecs::webp::WebPDecoder::new(cursor)
                .map(|d| d.dimensions())
                .map_err(corrupt),
            ImageKind::Jpeg => jpeg_size(bytes),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::fixtures;

    fn probe_of(width: u32, height: u32) -> Probe {
        Probe {
            kind: ImageKind::Png,
            width,
            height,
            orientation: 1,
        }
    }

    #[test]
    fn sniff_recognises_the_four_kinds() {
        assert_eq!(sniff(&fixtures::png_rgb(4, 4)), Some(ImageKind::Png));
        assert_eq!(
            sniff(&fixtures::jpeg_quadrants(16, 16)),
            Some(ImageKind::Jpeg)
        );
        assert_eq!(sniff(&fixtures::gif(4, 4)), Some(ImageKind::Gif));
        assert_eq!(sniff(&fixtures::webp_lossless(4, 4)), Some(ImageKind::Webp));
    }

    #[test]
    fn sniff_refuses_svg_html_xml_text_and_empty() {
        for bytes in [
            &b"<svg xmlns=\"http://www.w3.org/2000/svg\"><rect/></svg>"[..],
            b"<?xml version=\"1.0\"?><svg/>",
            b"<!DOCTYPE html><html><body>Sign in</body></html>",
            b"\xEF\xBB\xBF<html>",
            b"hello, world",
            b"",
            b"\x89PN",
            b"RIFF\0\0\0\0WAVEfmt ",
        ] {
            assert_eq!(sniff(bytes), None, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn probe_reads_sizes_of_every_kind() {
        let limits = Limits::default();
        for (bytes, kind) in [
            (fixtures::png_rgb(30, 20), ImageKind::Png),
            (fixtures::jpeg_quadrants(32, 24), ImageKind::Jpeg),
            (fixtures::gif(30, 20), ImageKind::Gif),
            (fixtures::webp_lossless(30, 20), ImageKind::Webp),
            (fixtures::webp_lossy(30, 20), ImageKind::Webp),
        ] {
            let probe = probe(&bytes, &limits).expect("probe");
            assert_eq!(probe.kind, kind);
            assert_eq!(probe.orientation, 1);
            if kind == ImageKind::Jpeg {
                assert_eq!((probe.width, probe.height), (32, 24));
            } else {
                assert_eq!((probe.width, probe.height), (30, 20), "{kind:?}");
            }
        }
    }

    #[test]
    fn probe_swaps_dimensions_for_rotated_jpeg() {
        let jpeg = fixtures::with_exif(&fixtures::jpeg_quadrants(64, 32), 6, None);
        let probe = probe(&jpeg, &Limits::default()).expect("probe");
        assert_eq!((probe.width, probe.height, probe.orientation), (32, 64, 6));
    }

    #[test]
    fn probe_rejects_a_png_bomb_from_its_header_alone() {
        // Only the signature and IHDR: had anything tried to decode, this would be Corrupt.
        let bomb = fixtures::png_header_only(100_000, 100_000);
        assert_eq!(
            probe(&bomb, &Limits::default()),
            Err(ImagingError::TooLarge {
                width: 100_000,
                height: 100_000
            })
        );
    }

    #[test]
    fn probe_rejects_just_over_max_pixels_and_max_side() {
        let limits = Limits::default();
        // 7072² = 50 013 184 > 50 000 000, each side well under 16384.
        let over = fixtures::png_header_only(7072, 7072);
        assert_eq!(
            probe(&over, &limits),
            Err(ImagingError::TooLarge {
                width: 7072,
                height: 7072
            })
        );
        // 7071² = 49 999 041 passes the limit check; the header-only file then fails as corrupt.
        let under = fixtures::png_header_only(7071, 7071);
        assert!(matches!(
            probe(&under, &limits),
            Err(ImagingError::Corrupt(_))
        ));
        let tall = fixtures::png_header_only(1, 16_385);
        assert!(matches!(
            probe(&tall, &limits),
            Err(ImagingError::TooLarge { .. })
        ));
        let tight = Limits {
            max_pixels: 100,
            max_side: 16_384,
            ..Limits::default()
        };
        assert!(matches!(
            probe(&fixtures::png_rgb(11, 10), &tight),
            Err(ImagingError::TooLarge { .. })
        ));
        assert!(probe(&fixtures::png_rgb(10, 10), &tight).is_ok());
    }

    #[test]
    fn probe_rejects_bombs_in_jpeg_gif_and_webp_headers() {
        let limits = Limits::default();
        let jpeg = fixtures::jpeg_header_only(65_000, 65_000);
        assert!(matches!(
            probe(&jpeg, &limits),
            Err(ImagingError::TooLarge { .. })
        ));
        let mut gif = b"GIF89a".to_vec();
        gif.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0]);
        assert!(matches!(
            probe(&gif, &limits),
            Err(ImagingError::TooLarge { .. })
        ));
        let mut webp = b"RIFF\x00\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00".to_vec();
        webp.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            probe(&webp, &limits),
            Err(ImagingError::TooLarge { .. })
        ));
    }

    #[test]
    fn probe_reports_zero_sizes_as_corrupt() {
        let zero = fixtures::png_header_only(0, 10);
        assert!(matches!(
            probe(&zero, &Limits::default()),
            Err(ImagingError::Corrupt(_))
        ));
    }

    #[test]
    fn probe_reports_truncated_files_as_corrupt_and_garbage_as_unsupported() {
        let limits = Limits::default();
        // image's encoder writes the frame header (SOF) at bytes 20..39: cut before its end.
        let jpeg = fixtures::jpeg_quadrants(64, 64);
        for cut in [3, 10, 25, 38] {
            assert!(
                matches!(probe(&jpeg[..cut], &limits), Err(ImagingError::Corrupt(_))),
                "cut at {cut}"
            );
        }
        let png = fixtures::png_rgb(8, 8);
        assert!(matches!(
            probe(&png[..20], &limits),
            Err(ImagingError::Corrupt(_))
        ));
        assert_eq!(
            probe(b"garbage garbage garbage", &limits),
            Err(ImagingError::Unsupported)
        );
        assert_eq!(probe(b"", &limits), Err(ImagingError::Unsupported));
    }

    #[test]
    fn probe_survives_random_garbage_behind_every_magic() {
        let limits = Limits::default();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect()
        };
        let magics: [&[u8]; 5] = [
            PNG_MAGIC,
            b"\xFF\xD8\xFF",
            b"GIF89a",
            b"RIFF\x10\x00\x00\x00WEBPVP8 ",
            b"RIFF\x10\x00\x00\x00WEBPVP8L",
        ];
        for magic in magics {
            for len in [0, 1, 7, 16, 64, 300] {
                let mut bytes = magic.to_vec();
                bytes.extend(noise(len));
                // Must return, never panic; the result itself does not matter.
                let _ = probe(&bytes, &limits);
            }
        }
    }

    #[test]
    fn crops_inside_the_image_are_valid() {
        let probe = probe_of(100, 50);
        for crop in [
            Crop {
                x: 0,
                y: 0,
                width: 100,
                height: 50,
            },
            Crop {
                x: 99,
                y: 49,
                width: 1,
                height: 1,
            },
            Crop {
                x: 10,
                y: 5,
                width: 40,
                height: 40,
            },
        ] {
            assert_eq!(validate_crop(&crop, &probe), Ok(()), "{crop:?}");
        }
    }

    #[test]
    fn every_invalid_crop_is_refused_with_a_message() {
        let probe = probe_of(100, 50);
        let cases = [
            (0, 0, 0, 10, "empty"),
            (0, 0, 10, 0, "empty"),
            (91, 0, 10, 10, "right edge"),
            (0, 41, 10, 10, "bottom edge"),
            (100, 0, 1, 1, "right edge"),
            (u32::MAX, 0, 1, 1, "overflows"),
            (0, u32::MAX - 1, 1, 2, "overflows"),
            (1, 0, u32::MAX, 1, "overflows"),
            (0, 0, 101, 50, "right edge"),
        ];
        for (x, y, width, height, expected) in cases {
            let crop = Crop {
                x,
                y,
                width,
                height,
            };
            match validate_crop(&crop, &probe) {
                Err(ImagingError::InvalidCrop(message)) => {
                    assert!(message.contains(expected), "{crop:?}: {message}")
                }
                other => panic!("{crop:?}: {other:?}"),
            }
        }
    }
}
