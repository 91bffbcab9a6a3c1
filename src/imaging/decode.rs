//! Decoding into 8-bit RGB or RGBA, as small as the requested variants allow.
//!
//! JPEG goes through jpeg-decoder so that it can be decoded at 1/2, 1/4 or 1/8 scale (the
//! IDCT simply computes fewer output pixels per 8x8 block): the smallest scale at which the
//! crop is still at least as large as the largest variant. On a 12 MP photo rendered at 512
//! that is 1/4: measured here, 50 ms instead of 90 ms (entropy decoding still reads every
//! coefficient) and a decoded buffer 16 times smaller. It is what libvips does. PNG, GIF and
//! WebP go through `image`, under `image::Limits` as a second line behind the header check of
//! [`crate::imaging::probe()`].
//!
//! Pixels stay in the orientation they are stored in: the crop rectangle is mapped into that
//! space instead (see [`crate::imaging::resize`]).

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::{DynamicImage, ImageDecoder};
use jpeg_decoder::{CodingProcess, PixelFormat};

use crate::imaging::colour::{self, Samples};
use crate::imaging::jpeg;
use crate::imaging::{Crop, ImageKind, ImagingError, Limits, Probe};

/// Pixel layout of a decoded or resized buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channels {
    Rgb,
    Rgba,
}

impl Channels {
    pub fn count(self) -> usize {
        match self {
            Channels::Rgb => 3,
            Channels::Rgba => 4,
        }
    }
}

/// A rectangle in decoded pixels; fractional when the decoder scaled the image down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rect {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

/// A decoded image in stored (un-rotated) orientation, and where the crop lies in it.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub width: u32,
    pub height: u32,
    pub channels: Channels,
    /// Row-major, tightly packed, `width * height * channels` bytes.
    pub pixels: Vec<u8>,
    /// The crop, in this buffer's pixels.
    pub rect: Rect,
    /// How much the decoder scaled down: 1, 2, 4 or 8.
    pub denominator: u32,
    /// Whether RGBA pixels are premultiplied by their alpha (see
    /// [`crate::imaging::resize::isolate_crop`]).
    pub premultiplied: bool,
}

/// Runs a third-party parser or decoder so that a panic inside it becomes
/// [`ImagingError::Corrupt`] instead of taking the worker down. Those crates are fuzzed, but
/// they parse hostile bytes, and one missed bounds check must not become a denial of service.
pub(crate) fn guarded<T>(
    what: &str,
    work: impl FnOnce() -> Result<T, ImagingError>,
) -> Result<T, ImagingError> {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| {
        Err(ImagingError::Corrupt(format!(
            "{what} decoder gave up on this input"
        )))
    })
}

/// The largest DCT scale-down (8, 4, 2, else 1) that keeps a crop whose shorter side is
/// `crop_side` full-size pixels at least `largest` pixels wide.
pub(crate) fn dct_denominator(crop_side: u32, largest: u32) -> u32 {
    [8, 4, 2]
        .into_iter()
        .find(|d| crop_side / d >= largest)
        .unwrap_or(1)
}

/// Decodes `bytes` (already probed) so that `raw_rect`, the crop in stored pixels, can be
/// resampled to `largest` without upscaling anything the source had.
pub(crate) fn decode(
    bytes: &[u8],
    probe: &Probe,
    limits: &Limits,
    raw_rect: Crop,
    largest: u32,
) -> Result<Source, ImagingError> {
    let (raw_width, raw_height) = if probe.orientation >= 5 {
        (probe.height, probe.width)
    } else {
        (probe.width, probe.height)
    };
    let source = match probe.kind {
        ImageKind::Jpeg => decode_jpeg(bytes, limits, raw_rect, largest)?,
        kind => {
            let (width, height, channels, pixels) =
                decode_with_image(kind, bytes, limits, (raw_width, raw_height))?;
            Source {
                width,
                height,
                channels,
                pixels,
                rect: scaled_rect(raw_rect, 1.0, 1.0),
                denominator: 1,
                premultiplied: false,
            }
        }
    };
    let expected = (
        raw_width.div_ceil(source.denominator),
        raw_height.div_ceil(source.denominator),
    );
    if (source.width, source.height) != expected {
        return Err(ImagingError::Corrupt(format!(
            "decoded {}x{} pixels where the header promised {raw_width}x{raw_height}",
            source.width, source.height
        )));
    }
    Ok(source)
}

fn scaled_rect(rect: Crop, sx: f64, sy: f64) -> Rect {
    Rect {
        x: f64::from(rect.x) * sx,
        y: f64::from(rect.y) * sy,
        width: f64::from(rect.width) * sx,
        height: f64::from(rect.height) * sy,
    }
}

fn decode_jpeg(
    bytes: &[u8],
    limits: &Limits,
    raw_rect: Crop,
    largest: u32,
) -> Result<Source, ImagingError> {
    let corrupt = |e: jpeg_decoder::Error| ImagingError::Corrupt(format!("JPEG: {e}"));
    let structure = jpeg::walk(bytes);
    structure.check_scans(limits.max_jpeg_scans)?;
    let stream = structure.repaired(bytes);
    guarded("JPEG", || {
        let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(&stream[..]));
        // Second line of defence behind the probe: 4 bytes a pixel covers CMYK.
        decoder.set_max_decoding_buffer_size(
            usize::try_from(limits.max_pixels.saturating_mul(4)).unwrap_or(usize::MAX),
        );
        decoder.read_info().map_err(corrupt)?;
        let info = decoder
            .info()
            .ok_or_else(|| ImagingError::Corrupt("JPEG without a frame header".into()))?;
        let (full_width, full_height) = (u32::from(info.width), u32::from(info.height));
        let wanted = dct_denominator(raw_rect.width.min(raw_rect.height), largest);
        if wanted > 1 && info.coding_process != CodingProcess::Lossless {
            // jpeg-decoder picks the smallest scale reaching the requested size on either
            // axis; asking for exactly the size at 1/wanted yields 1/wanted.
            let request = |side: u32| u16::try_from(side.div_ceil(wanted)).unwrap_or(u16::MAX);
            decoder
                .scale(request(full_width), request(full_height))
                .map_err(corrupt)?;
        }
        let data = decoder.decode().map_err(corrupt)?;
        let info = decoder
            .info()
            .ok_or_else(|| ImagingError::Corrupt("JPEG without a frame header".into()))?;
        let (width, height) = (u32::from(info.width), u32::from(info.height));
        let samples = jpeg_samples(data, info.pixel_format, width, height)?;
        let (channels, pixels) = colour::to_srgb(samples, decoder.icc_profile().as_deref())?;
        let denominator = [1, 2, 4, 8]
            .into_iter()
            .find(|d| full_width.div_ceil(*d) == width && full_height.div_ceil(*d) == height)
            .ok_or_else(|| {
                ImagingError::Corrupt(format!(
                    "JPEG decoded to {width}x{height}, not a DCT scale of {full_width}x{full_height}"
                ))
            })?;
        // Decoded pixel i covers stored pixels [i*d, (i+1)*d): coordinates scale by exactly
        // 1/d, and the rectangle stays inside the (rounded-up) decoded size.
        let scale = 1.0 / f64::from(denominator);
        Ok(Source {
            width,
            height,
            channels,
            pixels,
            rect: scaled_rect(raw_rect, scale, scale),
            denominator,
            premultiplied: false,
        })
    })
}

/// Wraps jpeg-decoder's output as [`Samples`] for colour conversion.
fn jpeg_samples(
    data: Vec<u8>,
    format: PixelFormat,
    width: u32,
    height: u32,
) -> Result<Samples, ImagingError> {
    let pixels = width as usize * height as usize;
    if data.len() != pixels * format.pixel_bytes() {
        return Err(ImagingError::Corrupt(format!(
            "JPEG decoded to {} bytes for {width}x{height} {format:?}",
            data.len()
        )));
    }
    Ok(match format {
        PixelFormat::RGB24 => Samples::Rgb(data),
        PixelFormat::L8 => Samples::Grey(data),
        PixelFormat::L16 => {
            // Lossless JPEG with 9 to 16 bits: native-endian samples of unknown precision;
            // scale by the smallest bit depth that holds the largest sample.
            let samples: Vec<u16> = data
                .chunks_exact(2)
                .map(|b| u16::from_ne_bytes([b[0], b[1]]))
                .collect();
            let max = samples.iter().copied().max().unwrap_or(0);
            let bits = (16 - max.leading_zeros()).max(8);
            Samples::Grey(samples.iter().map(|&s| (s >> (bits - 8)) as u8).collect())
        }
        // jpeg-decoder undoes Adobe's inversion (and YCCK), so these are ink amounts.
        PixelFormat::CMYK32 => Samples::Cmyk(data),
    })
}

/// A PNG whose chunks all arrived but whose `IEND` did not (a writer or transfer that stopped
/// right after the image data) is shown whole by browsers and libpng; the png crate instead
/// fails looking for the next chunk. Such a file gets its `IEND` back; any other file is
/// returned as it is (a cut inside `IDAT` stays corrupt).
fn png_closed(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    const IEND: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];
    let mut at = 8;
    let mut seen_idat = false;
    while let Some(header) = bytes.get(at..at + 8) {
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = &header[4..8];
        if kind == b"IEND" {
            return std::borrow::Cow::Borrowed(bytes);
        }
        seen_idat |= kind == b"IDAT";
        at = match at.checked_add(12).and_then(|a| a.checked_add(length)) {
            Some(next) if next <= bytes.len() => next,
            _ => return std::borrow::Cow::Borrowed(bytes),
        };
    }
    if seen_idat && at == bytes.len() {
        let mut closed = bytes.to_vec();
        closed.extend_from_slice(&IEND);
        return std::borrow::Cow::Owned(closed);
    }
    std::borrow::Cow::Borrowed(bytes)
}

fn decode_with_image(
    kind: ImageKind,
    bytes: &[u8],
    limits: &Limits,
    (width, height): (u32, u32),
) -> Result<(u32, u32, Channels, Vec<u8>), ImagingError> {
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(limits.max_side);
    image_limits.max_image_height = Some(limits.max_side);
    // 16-bit RGBA is 8 bytes a pixel: the worst case the decoders may need for max_pixels.
    image_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8));
    let failed = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => ImagingError::TooLarge { width, height },
        other => ImagingError::Corrupt(other.to_string()),
    };
    let (image, icc) = guarded("image", || {
        fn load(
            mut decoder: impl ImageDecoder,
            limits: image::Limits,
        ) -> image::ImageResult<(DynamicImage, Option<Vec<u8>>)> {
            decoder.set_limits(limits)?;
            // A profile that cannot be read is no reason to refuse the pixels.
            let icc = decoder.icc_profile().ok().flatten();
            Ok((DynamicImage::from_decoder(decoder)?, icc))
        }
        let cursor = Cursor::new(bytes);
        match kind {
            ImageKind::Png => {
                let closed = png_closed(bytes);
                image::codecs::png::PngDecoder::new(Cursor::new(&closed[..]))
                    .and_then(|d| load(d, image_limits))
            }
            ImageKind::Gif => {
                image::codecs::gif::GifDecoder::new(cursor).and_then(|d| load(d, image_limits))
            }
            ImageKind::Webp => {
                image::codecs::webp::WebPDecoder::new(cursor).and_then(|d| load(d, image_limits))
            }
            ImageKind::Jpeg => Err(image::ImageError::Unsupported(
                image::error::UnsupportedError::from_format_and_kind(
                    image::error::ImageFormatHint::Unknown,
                    image::error::UnsupportedErrorKind::GenericFeature(
                        "JPEG is decoded by jpeg-decoder".into(),
                    ),
                ),
            )),
        }
        .map_err(failed)
    })?;
    let (width, height) = (image.width(), image.height());
    let samples = match image {
        DynamicImage::ImageRgb8(buffer) => Samples::Rgb(buffer.into_raw()),
        DynamicImage::ImageRgba8(buffer) => Samples::Rgba(buffer.into_raw()),
        DynamicImage::ImageLuma8(buffer) => Samples::Grey(buffer.into_raw()),
        DynamicImage::ImageLumaA8(buffer) => Samples::GreyAlpha(buffer.into_raw()),
        other => match (other.color().has_color(), other.color().has_alpha()) {
            (true, true) => Samples::Rgba(other.into_rgba8().into_raw()),
            (true, false) => Samples::Rgb(other.into_rgb8().into_raw()),
            (false, true) => Samples::GreyAlpha(other.into_luma_alpha8().into_raw()),
            (false, false) => Samples::Grey(other.into_luma8().into_raw()),
        },
    };
    // moxcms parses the (hostile) profile: guarded like the decoders. A PNG without iCCP may
    // still declare its colour space with cHRM + gAMA.
    let (channels, pixels) = guarded("ICC", || match icc {
        Some(icc) => colour::to_srgb(samples, Some(&icc)),
        None if kind == ImageKind::Png => {
            colour::to_srgb_from(samples, colour::png_chromaticities(bytes))
        }
        None => colour::to_srgb(samples, None),
    })?;
    Ok((width, height, channels, pixels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::fixtures;
    use crate::imaging::probe::probe;

    fn full(probe: &Probe) -> Crop {
        Crop {
            x: 0,
            y: 0,
            width: probe.width,
            height: probe.height,
        }
    }

    #[test]
    fn picks_the_smallest_dct_scale_that_still_covers_the_largest_variant() {
        assert_eq!(dct_denominator(3000, 512), 4); // 750 ≥ 512, 375 < 512
        assert_eq!(dct_denominator(4096, 512), 8); // exactly 512
        assert_eq!(dct_denominator(4095, 512), 4);
        assert_eq!(dct_denominator(1024, 512), 2);
        assert_eq!(dct_denominator(1023, 512), 1);
        assert_eq!(dct_denominator(100, 512), 1); // upscale from full resolution
        assert_eq!(dct_denominator(2400, 128), 8);
    }

    #[test]
    fn jpeg_is_decoded_at_the_chosen_scale() {
        let jpeg = fixtures::jpeg_quadrants(1024, 768);
        let limits = Limits::default();
        let probe = probe(&jpeg, &limits).expect("probe");
        let crop = Crop {
            x: 0,
            y: 0,
            width: 768,
            height: 768,
        };
        let source = decode(&jpeg, &probe, &limits, crop, 128).expect("decode");
        assert_eq!(source.denominator, 4);
        assert_eq!((source.width, source.height), (256, 192));
        assert_eq!(source.rect.width, 192.0);
        let source = decode(&jpeg, &probe, &limits, crop, 700).expect("decode");
        assert_eq!(source.denominator, 1);
        assert_eq!((source.width, source.height), (1024, 768));
    }

    #[test]
    fn grayscale_jpeg_decodes_to_grey_rgb() {
        let jpeg = fixtures::jpeg_gray(32, 32, 200);
        let limits = Limits::default();
        let probe = probe(&jpeg, &limits).expect("probe");
        let source = decode(&jpeg, &probe, &limits, full(&probe), 32).expect("decode");
        assert_eq!(source.channels, Channels::Rgb);
        let px = &source.pixels[..3];
        assert!(px.iter().all(|&c| c.abs_diff(200) <= 2), "{px:?}");
    }

    #[test]
    fn cmyk_jpegs_decode_to_the_right_colours_with_or_without_adobe_marker() {
        let limits = Limits::default();
        // Ink amounts (C, M, Y, K) → expected RGB.
        let inks = [
            [0, 255, 255, 0],
            [255, 0, 255, 0],
            [0, 0, 0, 128],
            [0, 0, 0, 0],
        ];
        let expected = [[255, 0, 0], [0, 255, 0], [127, 127, 127], [255, 255, 255]];
        for adobe in [None, Some(0)] {
            let jpeg = fixtures::jpeg_cmyk(16, 16, inks, adobe);
            let probe = probe(&jpeg, &limits).expect("probe");
            let source = decode(&jpeg, &probe, &limits, full(&probe), 16).expect("decode");
            for (quadrant, want) in expected.iter().enumerate() {
                let (x, y) = ((quadrant % 2) * 8 + 4, (quadrant / 2) * 8 + 4);
                let i = (y * 16 + x) * 3;
                let got = &source.pixels[i..i + 3];
                assert!(
                    got.iter().zip(want).all(|(g, w)| g.abs_diff(*w) <= 3),
                    "adobe {adobe:?} quadrant {quadrant}: {got:?} != {want:?}"
                );
            }
        }
    }

    #[test]
    fn a_truncated_jpeg_decodes_as_far_as_the_data_goes() {
        let jpeg = fixtures::jpeg_quadrants(256, 256);
        let limits = Limits::default();
        let probe = probe(&jpeg, &limits).expect("probe");
        let data = jpeg
            .windows(2)
            .position(|w| w == [0xFF, 0xDA])
            .expect("SOS");
        for keep in [jpeg.len() / 2, jpeg.len() - 10, jpeg.len() - 2] {
            let source = decode(&jpeg[..keep], &probe, &limits, full(&probe), 256)
                .unwrap_or_else(|e| panic!("kept {keep}: {e}"));
            assert_eq!((source.width, source.height), (256, 256));
            // The first rows arrived: the top-left quadrant is red.
            assert!(fixtures::near(&source.pixels[..3], &fixtures::RED, 24));
        }
        // Before any entropy-coded data there is nothing to show.
        let result = decode(&jpeg[..data + 4], &probe, &limits, full(&probe), 64);
        assert!(matches!(result, Err(ImagingError::Corrupt(_))));
    }

    #[test]
    fn a_png_without_its_iend_chunk_renders_whole() {
        let png = fixtures::png_rgb(64, 64);
        let limits = Limits::default();
        let cut = &png[..png.len() - 12];
        assert!(!cut.windows(4).any(|w| w == b"IEND"));
        let probe = probe(cut, &limits).expect("probe");
        let whole = decode(&png, &probe, &limits, full(&probe), 64).expect("whole");
        let closed = decode(cut, &probe, &limits, full(&probe), 64).expect("without IEND");
        assert_eq!(whole.pixels, closed.pixels);
        // A cut inside the image data is still corrupt.
        let result = decode(&png[..png.len() - 20], &probe, &limits, full(&probe), 64);
        assert!(
            matches!(result, Err(ImagingError::Corrupt(_))),
            "{result:?}"
        );
    }

    #[test]
    fn truncated_png_gif_and_webp_are_corrupt() {
        let limits = Limits::default();
        for bytes in [
            fixtures::png_rgb(64, 64),
            fixtures::gif(64, 64),
            fixtures::webp_lossy(64, 64),
        ] {
            let probe = probe(&bytes, &limits).expect("probe");
            let cut = &bytes[..bytes.len() * 2 / 3];
            let result = decode(cut, &probe, &limits, full(&probe), 64);
            assert!(
                matches!(result, Err(ImagingError::Corrupt(_))),
                "{result:?}"
            );
        }
    }

    #[test]
    fn guarded_turns_a_panic_into_corrupt() {
        let result: Result<(), _> = guarded("test", || panic!("boom"));
        assert!(matches!(result, Err(ImagingError::Corrupt(_))));
    }
}
