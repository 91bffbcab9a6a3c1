//! Imaging: every byte of an image that reaches a browser goes through here.
//!
//! One pipeline, [`render`], serves both callers: the avatar route (an upstream avatar at the
//! requested size and format) and the upload job (a user's upload normalised into 128² and
//! 512² variants). It never trusts the input and never panics on it.
//!
//! ```text
//! bytes ─▶ probe::sniff      magic bytes only: PNG, JPEG, GIF, WebP; anything else (SVG, HTML) is refused
//!        ─▶ probe::probe     header only: dimensions checked against Limits BEFORE any pixel is decoded;
//!                            JPEG markers walked (jpeg): scans counted against max_jpeg_scans
//!        ─▶ exif             orientation (1..=8), make and model; never GPS
//!        ─▶ crop             default: centred square of the upright image; validated (probe::validate_crop)
//!        ─▶ budget           decode memory estimated from the headers, checked against max_decode_bytes
//!        ─▶ decode           JPEG: DCT-scaled (1/2, 1/4, 1/8) to the smallest scale that still covers the
//!                            largest variant, CMYK/YCCK/grey handled, a truncated file closed as libjpeg
//!                            does (jpeg::Structure::repaired); PNG/GIF (first frame)/WebP via `image`
//!                            under `image::Limits`. Third-party decoders run under catch_unwind.
//!        ─▶ colour           embedded ICC profile (JPEG APP2, PNG iCCP, WebP ICCP) applied: samples become
//!                            sRGB (moxcms); untagged images are taken as sRGB, as browsers do
//!        ─▶ resize           crop rectangle mapped back into the decoder's (un-rotated) pixels, Lanczos3 with
//!                            premultiplied alpha (fast_image_resize) straight to size², then the small
//!                            square is rotated upright (cheaper than rotating the big source)
//!        ─▶ encode           JPEG (image, q82, alpha flattened on white), PNG (image), WebP lossy (libwebp,
//!                            q80); no metadata is ever written, so EXIF/GPS cannot leak. Sizes and formats
//!                            are encoded in parallel on scoped threads.
//! ```
//!
//! [`defaults`] draws the images served when a user has no avatar at all (identicon, mystery
//! person, initials, blank) and sends them through the same encoders.
//!
//! Everything here is synchronous and CPU-bound: callers run it in `spawn_blocking` under a
//! semaphore.

pub mod defaults;
pub mod pool;

mod budget;
mod colour;
mod decode;
mod encode;
mod exif;
mod jpeg;
mod probe;
mod resize;

#[cfg(test)]
mod fixtures;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use defaults::{DefaultStyle, render_default};
pub use pool::{ImagePool, PoolError};
pub use probe::{probe, sniff, validate_crop};

/// Largest edge, in pixels, that [`render`] and [`render_default`] will produce.
///
/// The routes cap `s` at 2048; this is a safety net against a caller bug asking for a
/// gigapixel output, not a product limit.
pub const MAX_OUTPUT_SIDE: u32 = 4096;

/// An input image kind, recognised by its magic bytes (never by a declared content type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// PNG (`\x89PNG\r\n\x1a\n`).
    Png,
    /// JPEG (`FF D8 FF`).
    Jpeg,
    /// GIF87a / GIF89a; only the first frame is used, composited on the logical screen.
    Gif,
    /// WebP (`RIFF....WEBP`), lossy or lossless; only the first frame is used, composited on
    /// the canvas.
    Webp,
}

impl ImageKind {
    /// The IANA media type of this kind.
    pub fn content_type(self) -> &'static str {
        match self {
            ImageKind::Png => "image/png",
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Gif => "image/gif",
            ImageKind::Webp => "image/webp",
        }
    }

    /// The kind a declared media type names (`image/jpeg`, `image/jpg`, `image/png`,
    /// `image/gif`, `image/webp`; parameters and case ignored), or `None`.
    ///
    /// A declared type is only a claim: the bytes are still sniffed.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        match essence.to_ascii_lowercase().as_str() {
            "image/png" => Some(ImageKind::Png),
            "image/jpeg" | "image/jpg" | "image/pjpeg" => Some(ImageKind::Jpeg),
            "image/gif" => Some(ImageKind::Gif),
            "image/webp" => Some(ImageKind::Webp),
            _ => None,
        }
    }
}

/// A format that this module writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Baseline JPEG, quality 82, 4:2:0; transparency flattened onto white.
    Jpeg,
    /// PNG, 8-bit RGB or RGBA.
    Png,
    /// Lossy WebP (libwebp, quality 80), with alpha when the image has any.
    Webp,
}

impl OutputFormat {
    /// The `Content-Type` to serve this format with.
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::Webp => "image/webp",
        }
    }

    /// The canonical file extension, without the dot: `jpg`, `png` or `webp`.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
        }
    }

    /// The format an URL extension asks for (`jpg`, `jpeg`, `png`, `webp`; case-insensitive).
    pub fn from_extension(extension: &str) -> Option<Self> {
        match extension.to_ascii_lowercase().as_str() {
            "jpg" | "jpeg" => Some(OutputFormat::Jpeg),
            "png" => Some(OutputFormat::Png),
            "webp" => Some(OutputFormat::Webp),
            _ => None,
        }
    }
}

/// What the caller wants written, before the image itself is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preferred {
    /// This format, whatever the image.
    Exactly(OutputFormat),
    /// PNG when the (cropped) image really has transparency, JPEG otherwise: the universally
    /// supported pair, each where it is good.
    JpegOrPng,
}

impl Preferred {
    /// The concrete format, given whether the image has transparent pixels.
    pub fn resolve(self, has_alpha: bool) -> OutputFormat {
        match self {
            Preferred::Exactly(format) => format,
            Preferred::JpegOrPng if has_alpha => OutputFormat::Png,
            Preferred::JpegOrPng => OutputFormat::Jpeg,
        }
    }
}

/// Decode limits, checked against the header before a single pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted `width * height` of the source (default 50 000 000, about 200 MB as
    /// RGBA).
    pub max_pixels: u64,
    /// Largest accepted width or height of the source (default 16384).
    pub max_side: u32,
    /// Most scans (`SOS` markers) accepted in a JPEG (default 64). Each scan of a progressive
    /// JPEG is one more pass over all its coefficients; real encoders write about 10.
    pub max_jpeg_scans: u32,
    /// Largest estimated decode memory for one image, in bytes (default 256 MiB): pixel
    /// buffers at the bit depth and DCT scale used, plus a progressive JPEG's coefficients.
    /// See [`decode_estimate`].
    pub max_decode_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pixels: 50_000_000,
            max_side: 16_384,
            max_jpeg_scans: 64,
            max_decode_bytes: 256 * 1024 * 1024,
        }
    }
}

/// What the header of an image says, without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The sniffed kind.
    pub kind: ImageKind,
    /// Width as displayed, i.e. after EXIF orientation (swapped for orientations 5 to 8).
    pub width: u32,
    /// Height as displayed, i.e. after EXIF orientation.
    pub height: u32,
    /// EXIF orientation, 1 to 8 (1 when absent or invalid).
    pub orientation: u8,
}

/// A crop rectangle in source pixels of the upright image (after EXIF orientation), as a
/// cropper UI shows it.
///
/// The output is square: a crop that is not square is reduced to the largest square centred
/// in it (so a cropper's off-by-one rounding costs one pixel, not a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Crop {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width; at least 1.
    pub width: u32,
    /// Height; at least 1.
    pub height: u32,
}

/// One encoded output image.
#[derive(Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The format the bytes are in.
    pub format: OutputFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The file, ready to serve; it carries no metadata.
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Encoded {
    // The bytes are an image: print their length, not a wall of numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoded")
            .field("format", &self.format)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// The EXIF facts worth keeping about an upload. Location (GPS) is never read, let alone kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExifSummary {
    /// Camera maker (`Make`), trimmed, printable, at most 64 characters.
    pub make: Option<String>,
    /// Camera model (`Model`), trimmed, printable, at most 64 characters.
    pub model: Option<String>,
    /// Width of the source as displayed (after orientation).
    pub original_width: u32,
    /// Height of the source as displayed (after orientation).
    pub original_height: u32,
    /// EXIF orientation that was applied, 1 to 8.
    pub orientation: u8,
}

/// Everything [`render`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `(size, image)`: for each requested size, in order, one image per requested format, in
    /// order; every image is exactly `size` x `size`.
    pub variants: Vec<(u32, Encoded)>,
    /// What the source's EXIF said.
    pub exif: ExifSummary,
    /// Whether the cropped source has at least one pixel that is not fully opaque.
    pub has_alpha: bool,
}

/// Why an image could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImagingError {
    /// Not a PNG, JPEG, GIF or WebP file (e.g. SVG, HTML, text, empty).
    #[error("not a supported image (PNG, JPEG, GIF or WebP)")]
    Unsupported,
    /// The header declares more pixels than the limits allow (a decompression bomb, or just
    /// too big).
    #[error("image is too large ({width}x{height})")]
    TooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
    /// Truncated, malformed or otherwise undecodable.
    #[error("image is corrupt: {0}")]
    Corrupt(String),
    /// Decoding would take more work or memory than [`Limits`] allow: a progressive JPEG
    /// with more scans than `max_jpeg_scans`, or a decode estimated over `max_decode_bytes`.
    #[error("image is too complex to decode: {0}")]
    TooComplex(String),
    /// The crop is empty, overflows, or lies (partly) outside the image.
    #[error("invalid crop: {0}")]
    InvalidCrop(String),
    /// The caller asked for something this module cannot produce (no sizes, a size of 0 or
    /// above [`MAX_OUTPUT_SIDE`]): a bug on the server side, not the input's fault.
    #[error("invalid render request: {0}")]
    InvalidRequest(String),
    /// Resizing or encoding failed: a server-side fault.
    #[error("could not encode image: {0}")]
    Encode(String),
}

impl ImagingError {
    /// Whether the input is to blame (client fault: "try again" with another image or crop)
    /// rather than the server ("try again later").
    pub fn is_client_fault(&self) -> bool {
        match self {
            ImagingError::Unsupported
            | ImagingError::TooLarge { .. }
            | ImagingError::Corrupt(_)
            | ImagingError::TooComplex(_)
            | ImagingError::InvalidCrop(_) => true,
            ImagingError::InvalidRequest(_) | ImagingError::Encode(_) => false,
        }
    }

    /// A stable kebab-case code for the HTTP error body and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            ImagingError::Unsupported => "unsupported-image",
            ImagingError::TooLarge { .. } => "image-too-large",
            ImagingError::Corrupt(_) => "corrupt-image",
            ImagingError::TooComplex(_) => "image-too-complex",
            ImagingError::InvalidCrop(_) => "invalid-crop",
            ImagingError::InvalidRequest(_) => "invalid-render-request",
            ImagingError::Encode(_) => "encode-failed",
        }
    }
}

/// Renders `bytes` into square variants: for each of `sizes`, for each of `formats`, one
/// `size` x `size` image of the (upright) `crop`, or of the centred square when `crop` is
/// `None`.
///
/// Crops smaller than a size are upscaled. Nothing of the source's metadata reaches the
/// outputs.
pub fn render(
    bytes: &[u8],
    limits: &Limits,
    crop: Option<Crop>,
    sizes: &[u32],
    formats: &[Preferred],
) -> Result<Rendered, ImagingError> {
    check_request(sizes, formats)?;
    let plan = plan(bytes, limits, crop, sizes)?;
    if plan.estimate > limits.max_decode_bytes {
        return Err(ImagingError::TooComplex(format!(
            "decoding needs about {} MiB; at most {} MiB is allowed",
            plan.estimate.div_ceil(1 << 20),
            limits.max_decode_bytes >> 20
        )));
    }
    let Plan {
        inspected,
        orientation,
        raw_rect,
        ..
    } = plan;
    let probe = inspected.probe;
    let largest = sizes.iter().copied().max().unwrap_or(1);

    let source = decode::decode(bytes, &probe, limits, raw_rect, largest)?;
    let (source, has_alpha) = resize::isolate_crop(source)?;

    // Resizing is cheap next to encoding; both run in parallel across sizes and formats.
    let squares = encode::parallel(
        sizes,
        |&size| u64::from(size),
        |&size| resize::resize_square(&source, size, orientation, has_alpha),
    )?;
    let jobs: Vec<(usize, OutputFormat)> = (0..sizes.len())
        .flat_map(|i| formats.iter().map(move |f| (i, f.resolve(has_alpha))))
        .collect();
    let cost = |&(i, format): &(usize, OutputFormat)| {
        let side = u64::from(sizes.get(i).copied().unwrap_or(0));
        side * side * encode::relative_cost(format)
    };
    let encoded = encode::parallel(&jobs, cost, |&(i, format)| match squares.get(i) {
        Some(square) => encode::encode(square, format),
        None => Err(ImagingError::Encode("variant index out of range".into())),
    })?;
    let variants = jobs
        .iter()
        .zip(encoded)
        .filter_map(|(&(i, _), e)| sizes.get(i).map(|&size| (size, e)))
        .collect();

    Ok(Rendered {
        variants,
        exif: ExifSummary {
            make: inspected.exif.make,
            model: inspected.exif.model,
            original_width: probe.width,
            original_height: probe.height,
            orientation: probe.orientation,
        },
        has_alpha,
    })
}

/// The peak memory, in bytes, that [`render`] would need for these arguments, estimated from
/// the headers alone (see the `budget` module: decode buffers at the bit depth and JPEG DCT
/// scale used, a progressive JPEG's full-resolution coefficients, colour-conversion and crop
/// copies, the output squares).
///
/// [`render`] refuses an image whose estimate exceeds [`Limits::max_decode_bytes`]; a caller
/// running several renders at once can also bound their total by this figure (for example
/// with a semaphore of bytes). Errors are those of the probe and the crop check.
pub fn decode_estimate(
    bytes: &[u8],
    limits: &Limits,
    crop: Option<Crop>,
    sizes: &[u32],
) -> Result<u64, ImagingError> {
    check_size(sizes.iter().copied())?;
    plan(bytes, limits, crop, sizes).map(|plan| plan.estimate)
}

/// What the headers decide before decoding.
struct Plan {
    inspected: probe::Inspected,
    orientation: resize::Orientation,
    /// The square crop in stored (un-rotated) pixels.
    raw_rect: Crop,
    estimate: u64,
}

fn plan(
    bytes: &[u8],
    limits: &Limits,
    crop: Option<Crop>,
    sizes: &[u32],
) -> Result<Plan, ImagingError> {
    let inspected = probe::inspect(bytes, limits)?;
    let probe = inspected.probe;
    let crop = match crop {
        Some(crop) => {
            validate_crop(&crop, &probe)?;
            crop
        }
        None => resize::centred_square(probe.width, probe.height),
    };
    let square = resize::square_within(crop);
    let orientation = resize::Orientation::from_exif(probe.orientation);
    let (raw_width, raw_height) = orientation.raw_size(probe.width, probe.height);
    let raw_rect = orientation.rect_to_raw(square, raw_width, raw_height);
    let estimate = budget::estimate(bytes, &probe, raw_rect, sizes);
    Ok(Plan {
        inspected,
        orientation,
        raw_rect,
        estimate,
    })
}

fn check_request(sizes: &[u32], formats: &[Preferred]) -> Result<(), ImagingError> {
    if sizes.is_empty() || formats.is_empty() {
        return Err(ImagingError::InvalidRequest(
            "at least one size and one format are required".into(),
        ));
    }
    check_size(sizes.iter().copied())
}

fn check_size(mut sizes: impl Iterator<Item = u32>) -> Result<(), ImagingError> {
    match sizes.find(|s| *s == 0 || *s > MAX_OUTPUT_SIDE) {
        Some(bad) => Err(ImagingError::InvalidRequest(format!(
            "size {bad} is outside 1..={MAX_OUTPUT_SIDE}"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::fixtures::{self, BLUE, GREEN, RED, YELLOW, near};

    /// Displayed quadrants (top-left, top-right, bottom-left, bottom-right) of a stored
    /// red/green over blue/yellow image under each EXIF orientation, from the EXIF
    /// definitions (e.g. 6: "the 0th row is the visual right side, the 0th column the top").
    fn upright_quadrants(orientation: u8) -> [[u8; 3]; 4] {
        match orientation {
            1 => [RED, GREEN, BLUE, YELLOW],
            2 => [GREEN, RED, YELLOW, BLUE],
            3 => [YELLOW, BLUE, GREEN, RED],
            4 => [BLUE, YELLOW, RED, GREEN],
            5 => [RED, BLUE, GREEN, YELLOW],
            6 => [BLUE, RED, YELLOW, GREEN],
            7 => [YELLOW, GREEN, BLUE, RED],
            _ => [GREEN, YELLOW, RED, BLUE],
        }
    }

    fn decode_rgb(encoded: &Encoded) -> image::RgbImage {
        image::load_from_memory(&encoded.bytes)
            .expect("output decodes")
            .to_rgb8()
    }

    fn png_only() -> [Preferred; 1] {
        [Preferred::Exactly(OutputFormat::Png)]
    }

    fn only(rendered: &Rendered) -> &Encoded {
        &rendered.variants[0].1
    }

    fn crop(x: u32, y: u32, width: u32, height: u32) -> Crop {
        Crop {
            x,
            y,
            width,
            height,
        }
    }

    #[test]
    fn exif_rotated_jpegs_come_out_upright_in_all_eight_orientations() {
        let stored = fixtures::jpeg_quadrants(64, 64);
        for orientation in 1..=8u8 {
            let jpeg = fixtures::with_exif(&stored, u16::from(orientation), None);
            let rendered =
                render(&jpeg, &Limits::default(), None, &[32], &png_only()).expect("render");
            assert_eq!(rendered.exif.orientation, orientation);
            let img = decode_rgb(only(&rendered));
            let want = upright_quadrants(orientation);
            for (i, (x, y)) in [(6, 6), (26, 6), (6, 26), (26, 26)].into_iter().enumerate() {
                let got = img.get_pixel(x, y).0;
                assert!(
                    near(&got, &want[i], 24),
                    "orientation {orientation} quadrant {i}: {got:?} != {:?}",
                    want[i]
                );
            }
        }
    }

    #[test]
    fn a_crop_of_a_rotated_jpeg_lands_on_the_upright_region() {
        // Stored 64x32, orientation 6: displayed 32x64, blue|red over yellow|green.
        let jpeg = fixtures::with_exif(&fixtures::jpeg_quadrants(64, 32), 6, None);
        let limits = Limits::default();
        let probe = probe(&jpeg, &limits).expect("probe");
        assert_eq!((probe.width, probe.height), (32, 64));
        // Bottom-right displayed quadrant (16..32, 32..64), squared to 16x16 at y = 40.
        let rendered = render(
            &jpeg,
            &limits,
            Some(crop(16, 32, 16, 32)),
            &[8],
            &png_only(),
        )
        .expect("render");
        let img = decode_rgb(only(&rendered));
        for p in img.pixels() {
            assert!(near(&p.0, &GREEN, 40), "{:?}", p.0);
        }
        assert_eq!(
            (rendered.exif.original_width, rendered.exif.original_height),
            (32, 64)
        );
    }

    #[test]
    fn dct_scaled_decode_keeps_the_crop_on_the_right_region() {
        // 2048x1536; the crop straddles the vertical boundary between the left and right
        // quadrants, and is large enough (600) for a 1/8 decode at size 64.
        assert_eq!(decode::dct_denominator(600, 64), 8);
        let stored = fixtures::jpeg_quadrants(2048, 1536);
        for orientation in [1u8, 6, 3, 8] {
            let jpeg = fixtures::with_exif(&stored, u16::from(orientation), None);
            let limits = Limits::default();
            let probe = probe(&jpeg, &limits).expect("probe");
            let boundary = probe.width / 2;
            let region = crop(boundary - 300, 100, 600, 600);
            let rendered =
                render(&jpeg, &limits, Some(region), &[64], &png_only()).expect("render");
            let img = decode_rgb(only(&rendered));
            let want = upright_quadrants(orientation);
            for y in [4, 32, 60] {
                let (left, right) = (img.get_pixel(6, y).0, img.get_pixel(57, y).0);
                assert!(near(&left, &want[0], 30), "o{orientation} left {left:?}");
                assert!(near(&right, &want[1], 30), "o{orientation} right {right:?}");
            }
        }
    }

    #[test]
    fn transparency_picks_png_and_opacity_picks_jpeg() {
        let limits = Limits::default();
        let formats = [Preferred::JpegOrPng, Preferred::Exactly(OutputFormat::Webp)];
        // 64x32: opaque left half, transparent right half; the default crop spans both.
        let png = fixtures::png_half_transparent(64, 32);
        let rendered = render(&png, &limits, None, &[16], &formats).expect("render");
        assert!(rendered.has_alpha);
        assert_eq!(rendered.variants[0].1.format, OutputFormat::Png);
        let webp = image::load_from_memory(&rendered.variants[1].1.bytes).expect("webp");
        assert!(webp.color().has_alpha());
        // The same file cropped to its opaque half has no transparency.
        let rendered =
            render(&png, &limits, Some(crop(0, 0, 32, 32)), &[16], &formats).expect("render");
        assert!(!rendered.has_alpha);
        assert_eq!(rendered.variants[0].1.format, OutputFormat::Jpeg);
        let jpeg = decode_rgb(&rendered.variants[0].1);
        assert!(near(&jpeg.get_pixel(8, 8).0, &[220, 30, 30], 20));
        // An opaque source.
        let rendered =
            render(&fixtures::png_rgb(20, 20), &limits, None, &[8], &formats).expect("render");
        assert_eq!(rendered.variants[0].1.format, OutputFormat::Jpeg);
    }

    #[test]
    fn outputs_have_exact_sizes_in_order_and_carry_no_metadata() {
        let jpeg = fixtures::with_exif(
            &fixtures::jpeg_quadrants(640, 480),
            1,
            Some(("ACME Cameras", "Pocket 9000")),
        );
        let formats = [
            Preferred::JpegOrPng,
            Preferred::Exactly(OutputFormat::Webp),
            Preferred::Exactly(OutputFormat::Png),
        ];
        let rendered =
            render(&jpeg, &Limits::default(), None, &[128, 512], &formats).expect("render");
        let layout: Vec<(u32, OutputFormat)> = rendered
            .variants
            .iter()
            .map(|(size, e)| (*size, e.format))
            .collect();
        assert_eq!(
            layout,
            [
                (128, OutputFormat::Jpeg),
                (128, OutputFormat::Webp),
                (128, OutputFormat::Png),
                (512, OutputFormat::Jpeg),
                (512, OutputFormat::Webp),
                (512, OutputFormat::Png),
            ]
        );
        for (size, encoded) in &rendered.variants {
            assert_eq!((encoded.width, encoded.height), (*size, *size));
            let img = decode_rgb(encoded);
            assert_eq!(img.dimensions(), (*size, *size));
            let has = |needle: &[u8]| encoded.bytes.windows(needle.len()).any(|w| w == needle);
            assert!(
                !has(b"Exif"),
                "{size} {:?} has an Exif block",
                encoded.format
            );
            assert!(!has(b"ACME"), "{size} {:?} leaks the make", encoded.format);
            assert!(
                !has(b"Pocket"),
                "{size} {:?} leaks the model",
                encoded.format
            );
        }
        assert_eq!(rendered.exif.make.as_deref(), Some("ACME Cameras"));
        assert_eq!(rendered.exif.model.as_deref(), Some("Pocket 9000"));
        let json = serde_json::to_string(&rendered.exif).expect("json");
        assert!(!json.to_ascii_lowercase().contains("gps"), "{json}");
    }

    #[test]
    fn small_crops_are_upscaled_to_the_requested_square() {
        let png = fixtures::png_rgb(40, 30);
        let rendered = render(
            &png,
            &Limits::default(),
            Some(crop(5, 5, 10, 12)),
            &[512, 1],
            &[Preferred::Exactly(OutputFormat::Webp)],
        )
        .expect("render");
        for (size, encoded) in &rendered.variants {
            assert_eq!(decode_rgb(encoded).dimensions(), (*size, *size));
        }
    }

    #[test]
    fn grayscale_and_cmyk_jpegs_render_in_colour() {
        let limits = Limits::default();
        let gray = fixtures::jpeg_gray(48, 48, 90);
        let img = decode_rgb(only(
            &render(&gray, &limits, None, &[24], &png_only()).expect("gray"),
        ));
        assert!(img.pixels().all(|p| near(&p.0, &[90, 90, 90], 3)));

        let inks = [
            [0, 255, 255, 0],
            [255, 0, 255, 0],
            [255, 255, 0, 0],
            [0, 0, 0, 0],
        ];
        let cmyk = fixtures::jpeg_cmyk(64, 64, inks, Some(0));
        let img = decode_rgb(only(
            &render(&cmyk, &limits, None, &[32], &png_only()).expect("cmyk"),
        ));
        let want = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]];
        for (i, (x, y)) in [(6, 6), (26, 6), (6, 26), (26, 26)].into_iter().enumerate() {
            assert!(near(&img.get_pixel(x, y).0, &want[i], 6), "quadrant {i}");
        }
    }

    #[test]
    fn every_input_kind_renders_to_every_format() {
        let formats = [
            Preferred::Exactly(OutputFormat::Jpeg),
            Preferred::Exactly(OutputFormat::Png),
            Preferred::Exactly(OutputFormat::Webp),
        ];
        for bytes in [
            fixtures::png_rgb(50, 40),
            fixtures::jpeg_quadrants(48, 40),
            fixtures::gif(50, 40),
            fixtures::webp_lossy(50, 40),
            fixtures::webp_lossless(50, 40),
        ] {
            let rendered =
                render(&bytes, &Limits::default(), None, &[32], &formats).expect("render");
            assert_eq!(rendered.variants.len(), 3);
            assert_eq!(
                (rendered.exif.original_width, rendered.exif.original_height),
                sniff(&bytes)
                    .map(|k| if k == ImageKind::Jpeg {
                        (48, 40)
                    } else {
                        (50, 40)
                    })
                    .expect("kind")
            );
        }
    }

    #[test]
    fn an_animated_gif_webp_or_apng_becomes_its_first_frame_composited_on_its_canvas() {
        let limits = Limits::default();
        let formats = [Preferred::JpegOrPng];
        let red = [220, 20, 20];
        for (name, bytes) in [
            ("webp", fixtures::webp_animated()),
            ("apng", fixtures::apng()),
        ] {
            let rendered = render(&bytes, &limits, None, &[32], &formats).expect(name);
            assert!(!rendered.has_alpha, "{name}");
            let img = decode_rgb(only(&rendered));
            for (x, y) in [(2, 2), (16, 16), (29, 29)] {
                let got = img.get_pixel(x, y).0;
                assert!(near(&got, &red, 12), "{name} at ({x},{y}): {got:?}");
            }
        }
        // The GIF's first frame covers only the middle of its canvas: the rest is transparent,
        // as browsers show it, so the avatar keeps that transparency (PNG).
        let rendered =
            render(&fixtures::gif_animated(), &limits, None, &[64], &formats).expect("gif");
        assert!(rendered.has_alpha);
        assert_eq!(only(&rendered).format, OutputFormat::Png);
        let img = image::load_from_memory(&only(&rendered).bytes)
            .expect("png")
            .to_rgba8();
        let centre = img.get_pixel(32, 32).0;
        assert!(
            near(&centre[..3], &red, 12) && centre[3] == 255,
            "{centre:?}"
        );
        assert_eq!(img.get_pixel(2, 2).0[3], 0, "outside the first frame");
    }

    #[test]
    fn grey_grey_alpha_and_16_bit_pngs_render() {
        use image::ExtendedColorType as C;
        let limits = Limits::default();
        let formats = [Preferred::JpegOrPng];
        let grey = fixtures::png_of(8, 8, C::L8, &[77; 64]);
        let rendered = render(&grey, &limits, None, &[4], &formats).expect("grey");
        assert_eq!(rendered.variants[0].1.format, OutputFormat::Jpeg);
        assert!(near(
            &decode_rgb(only(&rendered)).get_pixel(2, 2).0,
            &[77, 77, 77],
            3
        ));
        let grey_alpha = fixtures::png_of(8, 8, C::La8, &[200, 100].repeat(64));
        let rendered = render(&grey_alpha, &limits, None, &[4], &formats).expect("grey+alpha");
        assert!(rendered.has_alpha);
        assert_eq!(rendered.variants[0].1.format, OutputFormat::Png);
        // 16-bit samples (native-endian in `image`'s buffers): 0xC000 → 192.
        let deep = fixtures::png_of(8, 8, C::Rgb16, &0xC000u16.to_ne_bytes().repeat(8 * 8 * 3));
        let rendered = render(&deep, &limits, None, &[4], &formats).expect("16-bit");
        assert!(near(
            &decode_rgb(only(&rendered)).get_pixel(2, 2).0,
            &[192, 192, 192],
            3
        ));
    }

    #[test]
    fn hostile_inputs_are_errors_never_panics() {
        let limits = Limits::default();
        let formats = [Preferred::JpegOrPng];
        let jpeg = fixtures::jpeg_quadrants(128, 128);
        // Cut anywhere: unsupported (no magic), corrupt (no image data yet) or, once a scan
        // has started, the picture as far as the data goes.
        let first_scan = jpeg
            .windows(2)
            .position(|w| w == [0xFF, 0xDA])
            .expect("SOS");
        for keep in (0..jpeg.len()).step_by(97).chain([jpeg.len() - 2]) {
            let result = render(&jpeg[..keep], &limits, None, &[64], &formats);
            match result {
                Err(ImagingError::Corrupt(_)) if keep <= first_scan + 20 => {}
                Err(ImagingError::Unsupported) if keep < 3 => {}
                Ok(_) if keep > first_scan => {}
                Err(e) => panic!("truncated to {keep}: {e:?}"),
                Ok(_) => panic!("truncated to {keep}: rendered"),
            }
        }
        assert_eq!(
            render(
                b"<svg><script>alert(1)</script></svg>",
                &limits,
                None,
                &[64],
                &formats
            ),
            Err(ImagingError::Unsupported)
        );
        assert_eq!(
            render(b"", &limits, None, &[64], &formats),
            Err(ImagingError::Unsupported)
        );
        // Garbage behind valid magic, and bytes flipped inside valid files.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for original in [
            jpeg.clone(),
            fixtures::png_rgb(32, 32),
            fixtures::gif(32, 32),
            fixtures::webp_lossy(32, 32),
            fixtures::jpeg_cmyk(32, 32, [[0; 4]; 4], None),
        ] {
            for _ in 0..150 {
                let mut bytes = original.clone();
                for _ in 0..4 {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = next() as u8;
                }
                // Any result is fine as long as it is a result.
                let _ = render(&bytes, &limits, None, &[16], &formats);
            }
        }
    }

    #[test]
    fn bombs_are_refused_before_decoding() {
        let bomb = fixtures::png_header_only(100_000, 100_000);
        assert_eq!(
            render(
                &bomb,
                &Limits::default(),
                None,
                &[128],
                &[Preferred::JpegOrPng]
            ),
            Err(ImagingError::TooLarge {
                width: 100_000,
                height: 100_000
            })
        );
    }

    #[test]
    fn invalid_crops_are_refused_before_decoding() {
        // A header without pixels: had it been decoded, the error would be Corrupt.
        let jpeg = fixtures::jpeg_header_only(100, 80);
        for bad in [
            crop(0, 0, 0, 10),
            crop(90, 0, 20, 20),
            crop(0, 70, 20, 20),
            crop(u32::MAX, 0, 2, 2),
            crop(0, 1, 5, u32::MAX),
        ] {
            let result = render(&jpeg, &Limits::default(), Some(bad), &[64], &png_only());
            assert!(
                matches!(result, Err(ImagingError::InvalidCrop(_))),
                "{bad:?}: {result:?}"
            );
        }
    }

    #[test]
    fn caller_mistakes_are_server_faults() {
        let png = fixtures::png_rgb(8, 8);
        let limits = Limits::default();
        for (sizes, formats) in [
            (&[][..], &png_only()[..]),
            (&[64][..], &[][..]),
            (&[0][..], &png_only()[..]),
            (&[MAX_OUTPUT_SIDE + 1][..], &png_only()[..]),
        ] {
            let error = render(&png, &limits, None, sizes, formats).expect_err("refused");
            assert!(matches!(error, ImagingError::InvalidRequest(_)));
            assert!(!error.is_client_fault());
        }
    }

    #[test]
    fn errors_say_whose_fault_they_are() {
        let client = [
            ImagingError::Unsupported,
            ImagingError::TooLarge {
                width: 1,
                height: 1,
            },
            ImagingError::Corrupt("x".into()),
            ImagingError::TooComplex("x".into()),
            ImagingError::InvalidCrop("x".into()),
        ];
        assert!(client.iter().all(ImagingError::is_client_fault));
        assert!(!ImagingError::Encode("x".into()).is_client_fault());
        let mut codes: Vec<&str> = client.iter().map(ImagingError::code).collect();
        codes.push(ImagingError::Encode(String::new()).code());
        codes.push(ImagingError::InvalidRequest(String::new()).code());
        let count = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), count, "codes are distinct");
    }

    #[test]
    fn formats_and_kinds_map_to_extensions_and_media_types() {
        for format in [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::Webp] {
            assert_eq!(
                OutputFormat::from_extension(format.extension()),
                Some(format)
            );
            assert!(format.content_type().starts_with("image/"));
        }
        assert_eq!(
            OutputFormat::from_extension("JPEG"),
            Some(OutputFormat::Jpeg)
        );
        assert_eq!(OutputFormat::from_extension("svg"), None);
        assert_eq!(OutputFormat::from_extension("gif"), None);
        assert_eq!(
            ImageKind::from_content_type("Image/JPEG; charset=binary"),
            Some(ImageKind::Jpeg)
        );
        assert_eq!(ImageKind::from_content_type("image/svg+xml"), None);
        for kind in [
            ImageKind::Png,
            ImageKind::Jpeg,
            ImageKind::Gif,
            ImageKind::Webp,
        ] {
            assert_eq!(
                ImageKind::from_content_type(kind.content_type()),
                Some(kind)
            );
        }
        assert_eq!(Preferred::JpegOrPng.resolve(true), OutputFormat::Png);
        assert_eq!(Preferred::JpegOrPng.resolve(false), OutputFormat::Jpeg);
    }

    #[test]
    fn crops_deserialize_from_the_api_shape() {
        let parsed: Crop =
            serde_json::from_str(r#"{"x": 1, "y": 2, "width": 30, "height": 40}"#).expect("crop");
        assert_eq!(parsed, crop(1, 2, 30, 40));
        assert!(
            serde_json::from_str::<Crop>(r#"{"x": -1, "y": 2, "width": 3, "height": 4}"#).is_err()
        );
    }
}
