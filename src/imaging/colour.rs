//! Colour management: decoded samples in whatever space their embedded ICC profile names
//! (Display P3, Adobe RGB, a CMYK press profile, a grey gamma) become sRGB before resizing.
//!
//! Browsers colour-manage images with an ICC profile and take untagged ones as sRGB; so does
//! this module (ICC.1:2010 profiles, through moxcms, the pure-Rust CMS that `image` itself
//! uses). The profile comes from JPEG `APP2 ICC_PROFILE` markers (reassembled by
//! jpeg-decoder), PNG `iCCP` and WebP `ICCP` (through `image`'s decoders); a PNG without
//! `iCCP` may declare its primaries and gamma with `cHRM` + `gAMA` ([`png_chromaticities`]).
//! A profile that
//! does not parse, or whose colour space does not match the samples (an RGB profile on a
//! grey JPEG, say), is ignored as browsers ignore it: the samples are taken as sRGB (CMYK
//! without a usable profile is converted naively, ink by ink).
//!
//! The transform runs in place over bounded chunks, so converting costs no second copy of a
//! large image.

use moxcms::{
    Chromaticity, ColorPrimaries, ColorProfile, DataColorSpace, Layout, ToneReprCurve,
    Transform8BitExecutor, TransformOptions, XyY,
};

use crate::imaging::ImagingError;
use crate::imaging::decode::Channels;

/// Pixels a transform handles per call; the scratch buffer is this many pixels of RGBA.
const CHUNK_PIXELS: usize = 16 * 1024;

/// Decoded 8-bit samples, tightly packed, as a decoder produced them.
pub(crate) enum Samples {
    /// One grey sample a pixel.
    Grey(Vec<u8>),
    /// Grey and straight (not premultiplied) alpha.
    GreyAlpha(Vec<u8>),
    /// Red, green, blue.
    Rgb(Vec<u8>),
    /// Red, green, blue, straight alpha.
    Rgba(Vec<u8>),
    /// Ink amounts, 0 = no ink (jpeg-decoder has already undone Adobe's inversion).
    Cmyk(Vec<u8>),
}

/// Converts `samples` to sRGB (RGB, or RGBA when they carry alpha) through `icc`, the
/// embedded profile, if any. A profile that does not parse, does not match the samples or
/// that moxcms cannot build a transform from is ignored (the samples are taken as sRGB).
pub(crate) fn to_srgb(
    samples: Samples,
    icc: Option<&[u8]>,
) -> Result<(Channels, Vec<u8>), ImagingError> {
    let profile = icc.and_then(|bytes| ColorProfile::new_from_slice(bytes).ok());
    to_srgb_from(samples, profile)
}

/// [`to_srgb`] from a profile already built (e.g. by [`png_chromaticities`]).
pub(crate) fn to_srgb_from(
    samples: Samples,
    profile: Option<ColorProfile>,
) -> Result<(Channels, Vec<u8>), ImagingError> {
    // A transform from the profile, when it describes samples of `space` in `src` layout.
    let transform = |space: DataColorSpace, src: Layout, dst: Layout| {
        profile
            .as_ref()
            .filter(|p| p.color_space == space)
            .and_then(|p| {
                p.create_transform_8bit(src, &ColorProfile::new_srgb(), dst, options())
                    .ok()
            })
    };
    Ok(match samples {
        Samples::Rgb(mut px) => {
            if let Some(t) = transform(DataColorSpace::Rgb, Layout::Rgb, Layout::Rgb) {
                in_place(t.as_ref(), 3, &mut px)?;
            }
            (Channels::Rgb, px)
        }
        Samples::Rgba(mut px) => {
            if let Some(t) = transform(DataColorSpace::Rgb, Layout::Rgba, Layout::Rgba) {
                in_place(t.as_ref(), 4, &mut px)?;
            }
            (Channels::Rgba, px)
        }
        Samples::Grey(px) => match transform(DataColorSpace::Gray, Layout::Gray, Layout::Rgb) {
            Some(t) => (Channels::Rgb, widen(t.as_ref(), 1, 3, &px)?),
            None => (Channels::Rgb, px.iter().flat_map(|&l| [l, l, l]).collect()),
        },
        Samples::GreyAlpha(px) => {
            match transform(DataColorSpace::Gray, Layout::GrayAlpha, Layout::Rgba) {
                Some(t) => (Channels::Rgba, widen(t.as_ref(), 2, 4, &px)?),
                None => (
                    Channels::Rgba,
                    px.chunks_exact(2)
                        .flat_map(|p| [p[0], p[0], p[0], p[1]])
                        .collect(),
                ),
            }
        }
        // moxcms reads 8-bit CMYK with the RGBA layout.
        Samples::Cmyk(mut px) => match transform(DataColorSpace::Cmyk, Layout::Rgba, Layout::Rgb) {
            Some(t) => (Channels::Rgb, narrow_in_place(t.as_ref(), &mut px)?),
            None => {
                let mul = |a: u8, b: u8| ((255 - u32::from(a)) * (255 - u32::from(b)) / 255) as u8;
                (
                    Channels::Rgb,
                    px.chunks_exact(4)
                        .flat_map(|p| [mul(p[0], p[3]), mul(p[1], p[3]), mul(p[2], p[3])])
                        .collect(),
                )
            }
        },
    })
}

/// The colour space a PNG without `iCCP` declares with `cHRM` and `gAMA`, as Chromium reads
/// it: both chunks present (and no `sRGB` chunk) make an RGB profile of those primaries, white
/// point and power-law curve; anything else (one of the two alone, `sRGB`, implausible
/// values) means sRGB, `None`. Only the chunks before the first `IDAT` count (PNG 1.2, 4.3).
pub(crate) fn png_chromaticities(bytes: &[u8]) -> Option<ColorProfile> {
    let (mut chrm, mut gama) = (None, None);
    let mut at = 8;
    while let Some(header) = bytes.get(at..at + 8) {
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = &header[4..8];
        let data = bytes.get(at + 8..at.checked_add(8 + length)?)?;
        let number = |i: usize| {
            data.get(i * 4..i * 4 + 4)
                .map(|b| f64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])) / 100_000.0)
        };
        match kind {
            b"IDAT" | b"IEND" => break,
            b"sRGB" | b"iCCP" => return None,
            b"cHRM" => chrm = (0..8).map(number).collect::<Option<Vec<f64>>>(),
            b"gAMA" => gama = number(0),
            _ => {}
        }
        at = at.checked_add(12 + length)?;
    }
    let (c, gamma) = (chrm?, gama?);
    // gAMA is the encoding exponent (1/2.2 = 45455); the decoding curve is its inverse.
    let plausible = c.iter().all(|&v| v > 0.0 && v < 1.0)
        && c.chunks_exact(2)
            .all(|xy| xy[1] > 0.01 && xy[0] + xy[1] <= 1.0)
        && (0.1..=1.0).contains(&gamma);
    if !plausible {
        return None;
    }
    let mut profile = ColorProfile::new_srgb();
    let xy = |i: usize| Chromaticity::new(c[i] as f32, c[i + 1] as f32);
    profile.update_rgb_colorimetry(
        XyY::new(c[0], c[1], 1.0),
        ColorPrimaries {
            red: xy(2),
            green: xy(4),
            blue: xy(6),
        },
    );
    let curve = ToneReprCurve::Parametric(vec![(1.0 / gamma) as f32]);
    profile.red_trc = Some(curve.clone());
    profile.green_trc = Some(curve.clone());
    profile.blue_trc = Some(curve);
    Some(profile)
}

fn options() -> TransformOptions {
    // Perceptual intent where the profile has tables for it (CMYK); matrix-shaper profiles
    // (P3, Adobe RGB, grey) are colorimetric whatever the intent, as in lcms and browsers.
    TransformOptions::default()
}

fn failed(e: moxcms::CmsError) -> ImagingError {
    // The transform was built for these layouts: a length mismatch is our bug, not the input's.
    ImagingError::Encode(format!("colour transform: {e}"))
}

/// Same channel count in and out: through a bounded scratch buffer, chunk by chunk.
fn in_place(
    transform: &Transform8BitExecutor,
    channels: usize,
    pixels: &mut [u8],
) -> Result<(), ImagingError> {
    let step = CHUNK_PIXELS * channels;
    let mut scratch = vec![0u8; step.min(pixels.len())];
    for chunk in pixels.chunks_mut(step) {
        let out = &mut scratch[..chunk.len()];
        transform.transform(chunk, out).map_err(failed)?;
        chunk.copy_from_slice(out);
    }
    Ok(())
}

/// Grey (1 or 2 channels) to RGB or RGBA (3 or 4).
fn widen(
    transform: &Transform8BitExecutor,
    from: usize,
    to: usize,
    pixels: &[u8],
) -> Result<Vec<u8>, ImagingError> {
    let mut out = vec![0u8; pixels.len() / from * to];
    for (src, dst) in pixels
        .chunks(CHUNK_PIXELS * from)
        .zip(out.chunks_mut(CHUNK_PIXELS * to))
    {
        transform.transform(src, dst).map_err(failed)?;
    }
    Ok(out)
}

/// CMYK (4 bytes a pixel) to RGB (3), written over the front of the same buffer.
fn narrow_in_place(
    transform: &Transform8BitExecutor,
    pixels: &mut Vec<u8>,
) -> Result<Vec<u8>, ImagingError> {
    let count = pixels.len() / 4;
    let mut scratch = vec![0u8; CHUNK_PIXELS.min(count) * 3];
    let mut written = 0;
    for start in (0..count).step_by(CHUNK_PIXELS) {
        let n = CHUNK_PIXELS.min(count - start);
        let out = &mut scratch[..n * 3];
        transform
            .transform(&pixels[start * 4..(start + n) * 4], out)
            .map_err(failed)?;
        // Output lags input (3 bytes a pixel for 4), so no unread sample is overwritten.
        pixels[written..written + n * 3].copy_from_slice(out);
        written += n * 3;
    }
    pixels.truncate(written);
    Ok(std::mem::take(pixels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::fixtures::{self, near};
    use crate::imaging::{Limits, OutputFormat, Preferred, render};

    /// Renders `bytes` at 64x64 PNG and reads the centres of the four quadrants.
    fn quadrants(bytes: &[u8]) -> [[u8; 3]; 4] {
        let rendered = render(
            bytes,
            &Limits::default(),
            None,
            &[64],
            &[Preferred::Exactly(OutputFormat::Png)],
        )
        .expect("render");
        let img = image::load_from_memory(&rendered.variants[0].1.bytes)
            .expect("png")
            .to_rgb8();
        [(16, 16), (48, 16), (16, 48), (48, 48)].map(|(x, y)| img.get_pixel(x, y).0)
    }

    fn assert_quadrants(got: [[u8; 3]; 4], want: [[u8; 3]; 4], tolerance: u8) {
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(near(g, w, tolerance), "quadrant {i}: {g:?}, want {w:?}");
        }
    }

    // Expected values: `convert FILE -profile srgb.icc` (ImageMagick 6.9 with lcms2 and
    // ghostscript's srgb.icc); for the P3 case also what libvips and Chromium show.
    const P3_IN_SRGB: [[u8; 3]; 4] = [[217, 41, 38], [0, 172, 35], [244, 134, 0], [0, 152, 151]];

    #[test]
    fn a_display_p3_png_is_converted_to_srgb_like_a_browser_shows_it() {
        // The stored numbers are (200,60,50) (60,170,60) (230,140,30) (30,150,150).
        assert_quadrants(quadrants(&fixtures::file("p3-patches.png")), P3_IN_SRGB, 10);
    }

    #[test]
    fn a_display_p3_webp_is_converted_through_its_iccp_chunk() {
        let p3 = fixtures::png_icc(&fixtures::file("p3-patches.png"));
        let webp = fixtures::webp_with_icc(
            [[200, 60, 50], [60, 170, 60], [230, 140, 30], [30, 150, 150]],
            p3,
        );
        assert_quadrants(quadrants(&webp), P3_IN_SRGB, 10);
    }

    #[test]
    fn an_adobe_rgb_png_is_converted_to_srgb() {
        // Same stored numbers as the P3 case, tagged with ghostscript's a98.icc.
        assert_quadrants(
            quadrants(&fixtures::file("adobe-rgb-patches.png")),
            [[231, 57, 46], [0, 172, 44], [255, 141, 0], [0, 151, 151]],
            10,
        );
    }

    #[test]
    fn a_grey_jpeg_with_a_linear_grey_profile_is_converted_to_srgb() {
        // Stored levels 64, 191, 128, 26 under ghostscript's ps_gray.icc (gamma 1.0).
        let want = [136, 224, 187, 88].map(|l| [l; 3]);
        assert_quadrants(quadrants(&fixtures::file("linear-grey.jpg")), want, 10);
    }

    #[test]
    fn a_cmyk_jpeg_is_converted_through_its_profile_split_over_three_app2_markers() {
        let jpeg = fixtures::file("cmyk-profile.jpg");
        let markers = jpeg.windows(12).filter(|w| w == b"ICC_PROFILE\0").count();
        assert_eq!(markers, 3, "the 187 KB profile spans three APP2 markers");
        assert_quadrants(
            quadrants(&jpeg),
            [
                [199, 100, 73],
                [72, 142, 104],
                [228, 158, 68],
                [0, 129, 164],
            ],
            12,
        );
    }

    #[test]
    fn untagged_images_and_unusable_profiles_are_taken_as_srgb() {
        let stored = [[200, 60, 50], [60, 170, 60], [230, 140, 30], [30, 150, 150]];
        // A profile that does not parse, and an RGB profile on grey samples, are ignored.
        let (channels, px) =
            to_srgb(Samples::Rgb(vec![200, 60, 50]), Some(b"not a profile")).expect("converts");
        assert_eq!((channels, px), (Channels::Rgb, vec![200, 60, 50]));
        let p3 = fixtures::png_icc(&fixtures::file("p3-patches.png"));
        let (channels, px) = to_srgb(Samples::Grey(vec![77]), Some(&p3)).expect("converts");
        assert_eq!((channels, px), (Channels::Rgb, vec![77, 77, 77]));
        let webp = fixtures::webp_with_icc(stored, b"garbage".to_vec());
        assert_quadrants(quadrants(&webp), stored, 2);
    }

    #[test]
    fn alpha_survives_the_conversion_untouched() {
        let p3 = fixtures::png_icc(&fixtures::file("p3-patches.png"));
        let (channels, px) =
            to_srgb(Samples::Rgba([200, 60, 50, 7].repeat(20_000)), Some(&p3)).expect("converts");
        assert_eq!(channels, Channels::Rgba);
        assert!(
            px.chunks_exact(4)
                .all(|p| p[3] == 7 && near(&p[..3], &[217, 41, 38], 10))
        );
    }

    #[test]
    fn damaged_profiles_are_ignored_or_applied_never_a_panic() {
        let profiles = [
            fixtures::png_icc(&fixtures::file("p3-patches.png")),
            fixtures::png_icc(&fixtures::file("adobe-rgb-patches.png")),
        ];
        let mut state = 0x853c_49e6_748f_ea9b_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for original in profiles {
            for round in 0..300 {
                let mut icc = original.clone();
                for _ in 0..1 + round % 6 {
                    let at = (next() as usize) % icc.len();
                    icc[at] = next() as u8;
                }
                if round % 50 == 0 {
                    icc.truncate((next() as usize) % icc.len());
                }
                for samples in [
                    Samples::Rgb(vec![200, 60, 50, 1, 2, 3]),
                    Samples::Grey(vec![9, 99]),
                    Samples::Cmyk(vec![1, 2, 3, 4]),
                ] {
                    // Any outcome but a panic; a converted buffer keeps its size.
                    if let Ok((channels, px)) = to_srgb(samples, Some(&icc)) {
                        assert_eq!(px.len() % channels.count(), 0);
                    }
                }
            }
        }
        // The CMYK press profile (LUT-based, 187 KB): damage in its header and tag table,
        // where sizes and offsets live.
        let jpeg = fixtures::file("cmyk-profile.jpg");
        let mut decoder = jpeg_decoder::Decoder::new(std::io::Cursor::new(&jpeg[..]));
        decoder.read_info().expect("info");
        let cmyk = decoder.icc_profile().expect("profile");
        for _ in 0..60 {
            let mut icc = cmyk.clone();
            for _ in 0..3 {
                let at = (next() as usize) % 512;
                icc[at] = next() as u8;
            }
            if let Ok((channels, px)) = to_srgb(Samples::Cmyk(vec![1, 2, 3, 4]), Some(&icc)) {
                assert_eq!(px.len() % channels.count(), 0);
            }
        }
    }

    fn be(values: &[u32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    const STORED: [[u8; 3]; 4] = [[200, 60, 50], [60, 170, 60], [230, 140, 30], [30, 150, 150]];

    /// cHRM of Display P3 (D65 white), in PNG's units of 1/100000.
    fn p3_chrm() -> Vec<u8> {
        be(&[31270, 32900, 68000, 32000, 26500, 69000, 15000, 6000])
    }

    #[test]
    fn a_png_declaring_its_primaries_with_chrm_and_gama_is_converted_like_chromium_does() {
        let png =
            fixtures::png_quadrants_with(STORED, &[(b"cHRM", p3_chrm()), (b"gAMA", be(&[45455]))]);
        // Computed: gamma 2.2 decoded, P3 primaries to sRGB primaries (both D65), sRGB encoded.
        let want = [[219, 37, 34], [0, 174, 29], [245, 136, 0], [0, 154, 153]];
        assert_quadrants(quadrants(&png), want, 4);
    }

    #[test]
    fn gama_alone_srgb_chunks_and_implausible_chrm_leave_a_png_as_srgb() {
        for chunks in [
            vec![(b"gAMA", be(&[45455]))],
            vec![(b"cHRM", p3_chrm())],
            vec![
                (b"sRGB", vec![0]),
                (b"cHRM", p3_chrm()),
                (b"gAMA", be(&[45455])),
            ],
            vec![(b"cHRM", be(&[0; 8])), (b"gAMA", be(&[45455]))],
            vec![(b"cHRM", p3_chrm()), (b"gAMA", be(&[0]))],
            vec![(b"cHRM", vec![1, 2, 3]), (b"gAMA", be(&[45455]))],
        ] {
            let png = fixtures::png_quadrants_with(STORED, &chunks);
            assert!(png_chromaticities(&png).is_none(), "{chunks:?}");
            assert_quadrants(quadrants(&png), STORED, 2);
        }
    }
}
