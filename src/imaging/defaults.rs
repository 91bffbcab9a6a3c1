//! Generated default avatars, for users with no upload and no reachable upstream avatar: the
//! resolver's last resort, so a page never shows a broken image.
//!
//! Each is drawn at the exact output size (no resampling, so edges stay crisp) and goes
//! through the same encoders as [`crate::imaging::render`]. Everything derives from
//! `sha256(seed)`: one user always gets the same picture, on every replica, with no state.
//!
//! - [`DefaultStyle::Identicon`]: a 5x5 grid mirrored left-right, one saturated colour on a
//!   light tint of it.
//! - [`DefaultStyle::MysteryPerson`] (`mp`): a light anti-aliased silhouette on neutral grey.
//! - [`DefaultStyle::Initials`]: up to two white initials on a colour from the seed, set in the
//!   bundled DejaVu Sans Bold; falls back to the identicon when there is nothing to write.
//! - [`DefaultStyle::Blank`]: fully transparent (white in JPEG).

use std::fmt;
use std::str::FromStr;

use ab_glyph::{Font, FontRef, Glyph, PxScale, ScaleFont, point};
use sha2::{Digest, Sha256};
use tiny_skia::{Color, FillRule, Paint, PathBuilder, Pixmap, Rect, Transform};

use crate::imaging::decode::Channels;
use crate::imaging::resize::Square;
use crate::imaging::{Encoded, ImagingError, Preferred, check_size, encode};

/// DejaVu Sans Bold (Bitstream Vera licence, see `assets/fonts/LICENSE-DejaVu.txt`): wide
/// Latin, Greek and Cyrillic coverage, legible at 32 px.
static FONT: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/fonts/DejaVuSans-Bold.ttf"
));

/// Which picture to generate; the names are Gravatar's `d=` vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DefaultStyle {
    /// `identicon`: a symmetric 5x5 pattern from the seed.
    Identicon,
    /// `mp` ("mystery person"): a generic silhouette.
    MysteryPerson,
    /// `initials`: the display name's initials on a colour from the seed.
    Initials,
    /// `blank`: a transparent image.
    Blank,
}

impl DefaultStyle {
    /// The `d=` name of this style.
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultStyle::Identicon => "identicon",
            DefaultStyle::MysteryPerson => "mp",
            DefaultStyle::Initials => "initials",
            DefaultStyle::Blank => "blank",
        }
    }
}

impl fmt::Display for DefaultStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `d=` value that names no generated style (`404` is not a picture either: the route
/// handles it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown default style {0:?} (expected identicon, mp, initials or blank)")]
pub struct UnknownDefaultStyle(pub String);

impl FromStr for DefaultStyle {
    type Err = UnknownDefaultStyle;

    /// Parses `identicon`, `mp` (and Gravatar's older `mm`), `initials`, `blank`;
    /// case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "identicon" => Ok(DefaultStyle::Identicon),
            "mp" | "mm" => Ok(DefaultStyle::MysteryPerson),
            "initials" => Ok(DefaultStyle::Initials),
            "blank" => Ok(DefaultStyle::Blank),
            _ => Err(UnknownDefaultStyle(s.to_owned())),
        }
    }
}

/// Draws the `style` default for `seed` (typically the user's public key) at `size` x `size`
/// and encodes it. Only `Blank` is transparent, so [`Preferred::JpegOrPng`] gives PNG for it
/// and JPEG for the others (pass `Exactly(Png)` to keep identicon edges free of JPEG ringing).
pub fn render_default(
    style: DefaultStyle,
    seed: &[u8],
    display_name: Option<&str>,
    size: u32,
    format: Preferred,
) -> Result<Encoded, ImagingError> {
    check_size(std::iter::once(size))?;
    let hash: [u8; 32] = Sha256::digest(seed).into();
    let square = match style {
        DefaultStyle::Identicon => identicon(&hash, size),
        DefaultStyle::MysteryPerson => mystery_person(size)?,
        DefaultStyle::Initials => {
            match initials_picture(&hash, display_name.unwrap_or_default(), size)? {
                Some(square) => square,
                None => identicon(&hash, size),
            }
        }
        DefaultStyle::Blank => Square {
            size,
            channels: Channels::Rgba,
            pixels: vec![0; size as usize * size as usize * 4],
        },
    };
    let has_alpha = square.channels == Channels::Rgba;
    encode::encode(&square, format.resolve(has_alpha))
}

/// HSL (hue in degrees, saturation and lightness in 0..=1) to RGB.
fn hsl(hue: f32, saturation: f32, lightness: f32) -> [u8; 3] {
    let c = (1.0 - (2.0 * lightness - 1.0).abs()) * saturation;
    let h = (hue.rem_euclid(360.0)) / 60.0;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = lightness - c / 2.0;
    let channel = |v: f32| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    [channel(r), channel(g), channel(b)]
}

/// A hue from the hash that skips 50°–80°: at the saturations used here those yellows turn
/// olive and mustard (the "muddy" ones), and light yellow has no contrast on a light tint.
fn pleasant_hue(hash: &[u8; 32]) -> f32 {
    let raw = u16::from_be_bytes([hash[0], hash[1]]) % 330;
    f32::from(if raw >= 50 { raw + 30 } else { raw })
}

fn identicon(hash: &[u8; 32], size: u32) -> Square {
    let hue = pleasant_hue(hash);
    let foreground = hsl(
        hue,
        0.55 + f32::from(hash[2] % 20) / 100.0,
        0.42 + f32::from(hash[3] % 10) / 100.0,
    );
    let background = hsl(hue, 0.35, 0.94);

    // 15 free cells (3 columns x 5 rows); columns 3 and 4 mirror 1 and 0.
    let mut cells = [[false; 5]; 3];
    for (i, cell) in cells.iter_mut().flatten().enumerate() {
        *cell = hash[4 + i] & 1 == 1;
    }
    let filled = cells.iter().flatten().filter(|c| **c).count();
    if filled < 4 {
        // A near-empty pattern reads as a broken image: use its negative.
        cells.iter_mut().flatten().for_each(|c| *c = !*c);
    }

    // Whole-pixel cells (crisp at any size) with about half a cell of margin.
    let cell = i64::from((size / 6).max(1));
    let margin = (i64::from(size) - 5 * cell) / 2;
    let painted = |p: u32| -> Option<usize> {
        let offset = i64::from(p) - margin;
        (0..5 * cell)
            .contains(&offset)
            .then(|| (offset / cell) as usize)
    };
    let mut pixels = Vec::with_capacity(size as usize * size as usize * 3);
    for y in 0..size {
        let row = painted(y);
        for x in 0..size {
            let on = match (painted(x), row) {
                (Some(col), Some(row)) => cells[col.min(4 - col)][row],
                _ => false,
            };
            pixels.extend_from_slice(if on { &foreground } else { &background });
        }
    }
    Square {
        size,
        channels: Channels::Rgb,
        pixels,
    }
}

fn mystery_person(size: u32) -> Result<Square, ImagingError> {
    let failed = || ImagingError::Encode("could not draw the silhouette".into());
    let mut pixmap = Pixmap::new(size, size).ok_or_else(failed)?;
    pixmap.fill(Color::from_rgba8(189, 189, 189, 255));
    let mut paint = Paint::default();
    paint.set_color_rgba8(241, 241, 241, 255);
    paint.anti_alias = true;
    let s = size as f32;
    let head = PathBuilder::from_circle(0.5 * s, 0.38 * s, 0.19 * s).ok_or_else(failed)?;
    // Shoulders: the top of a wide oval running off the bottom edge.
    let body = Rect::from_xywh(0.15 * s, 0.63 * s, 0.70 * s, 0.70 * s)
        .and_then(PathBuilder::from_oval)
        .ok_or_else(failed)?;
    for path in [&head, &body] {
        pixmap.fill_path(path, &paint, FillRule::Winding, Transform::identity(), None);
    }
    // Opaque everywhere, so premultiplied equals straight RGBA: drop the alpha byte.
    let pixels = pixmap
        .data()
        .chunks_exact(4)
        .flat_map(|px| [px[0], px[1], px[2]])
        .collect();
    Ok(Square {
        size,
        channels: Channels::Rgb,
        pixels,
    })
}

/// Up to two initials: the first letter or digit of the first word and of the last word,
/// uppercased. Words without any (emoji, punctuation) are skipped.
fn initials(name: &str) -> String {
    let firsts: Vec<char> = name
        .split_whitespace()
        .filter_map(|word| word.chars().find(|c| c.is_alphanumeric()))
        .collect();
    let picked = match firsts.as_slice() {
        [] => vec![],
        [only] => vec![*only],
        [first, .., last] => vec![*first, *last],
    };
    picked
        .into_iter()
        .filter_map(|c| c.to_uppercase().next())
        .collect()
}

/// Lays `letters` out on a baseline at y = 0 and returns the glyphs and the union of their
/// ink boxes (not the line box: initials have no descenders, and the ink is what the eye
/// centres), or `None` when nothing has an outline.
fn layout(
    font: &FontRef<'_>,
    letters: &[char],
    scale: PxScale,
) -> Option<(Vec<Glyph>, ab_glyph::Rect)> {
    let scaled = font.as_scaled(scale);
    let mut caret = 0.0f32;
    let mut previous = None;
    let mut glyphs: Vec<Glyph> = Vec::with_capacity(letters.len());
    for c in letters {
        let id = scaled.glyph_id(*c);
        if let Some(prev) = previous {
            caret += scaled.kern(prev, id);
        }
        glyphs.push(id.with_scale_and_position(scale, point(caret, 0.0)));
        caret += scaled.h_advance(id);
        previous = Some(id);
    }
    let bounds = glyphs
        .iter()
        .filter_map(|g| scaled.outline_glyph(g.clone()))
        .map(|o| o.px_bounds())
        .reduce(|a, b| ab_glyph::Rect {
            min: point(a.min.x.min(b.min.x), a.min.y.min(b.min.y)),
            max: point(a.max.x.max(b.max.x), a.max.y.max(b.max.y)),
        })?;
    Some((glyphs, bounds))
}

/// The initials picture, or `None` when the name yields no initial the font can draw.
fn initials_picture(
    hash: &[u8; 32],
    name: &str,
    size: u32,
) -> Result<Option<Square>, ImagingError> {
    let font = FontRef::try_from_slice(FONT)
        .map_err(|_| ImagingError::Encode("the bundled font is unreadable".into()))?;
    // A letter the font lacks would come out as a box: leave it out.
    let letters: Vec<char> = initials(name)
        .chars()
        .filter(|c| font.glyph_id(*c).0 != 0)
        .collect();
    if letters.is_empty() {
        return Ok(None);
    }
    let background = hsl(
        pleasant_hue(hash),
        0.45 + f32::from(hash[2] % 15) / 100.0,
        0.40 + f32::from(hash[3] % 6) / 100.0,
    );
    let s = size as f32;
    let height = if letters.len() == 1 { 0.50 } else { 0.42 } * s;
    let Some((mut glyphs, mut bounds)) = layout(&font, &letters, PxScale::from(height)) else {
        return Ok(None);
    };
    // Wide pairs ("WM") would touch the edges: keep the ink within 70% of the width.
    let widest = 0.70 * s;
    if bounds.width() > widest {
        let smaller = PxScale::from(height * widest / bounds.width());
        let Some(relaid) = layout(&font, &letters, smaller) else {
            return Ok(None);
        };
        (glyphs, bounds) = relaid;
    }
    let scaled = font.as_scaled(glyphs.first().map_or(PxScale::from(height), |g| g.scale));
    let dx = ((s - bounds.width()) / 2.0 - bounds.min.x).round();
    let dy = ((s - bounds.height()) / 2.0 - bounds.min.y).round();

    let side = size as usize;
    let mut coverage = vec![0.0f32; side * side];
    for glyph in glyphs {
        let position = point(glyph.position.x + dx, glyph.position.y + dy);
        let Some(outlined) = scaled.outline_glyph(Glyph { position, ..glyph }) else {
            continue;
        };
        let origin = outlined.px_bounds().min;
        outlined.draw(|x, y, c| {
            let px = origin.x as i64 + i64::from(x);
            let py = origin.y as i64 + i64::from(y);
            if (0..size as i64).contains(&px) && (0..size as i64).contains(&py) {
                let i = py as usize * side + px as usize;
                if let Some(slot) = coverage.get_mut(i) {
                    *slot = slot.max(c.clamp(0.0, 1.0));
                }
            }
        });
    }
    let pixels = coverage
        .iter()
        .flat_map(|&c| {
            background.map(|b| (f32::from(b) + (255.0 - f32::from(b)) * c).round() as u8)
        })
        .collect();
    Ok(Some(Square {
        size,
        channels: Channels::Rgb,
        pixels,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::OutputFormat;

    fn png_pixels(encoded: &Encoded) -> image::RgbaImage {
        image::load_from_memory(&encoded.bytes)
            .expect("decodes")
            .to_rgba8()
    }

    fn png(style: DefaultStyle, seed: &[u8], name: Option<&str>, size: u32) -> Encoded {
        render_default(
            style,
            seed,
            name,
            size,
            Preferred::Exactly(OutputFormat::Png),
        )
        .expect("render default")
    }

    #[test]
    fn styles_parse_from_gravatar_names() {
        assert_eq!("identicon".parse(), Ok(DefaultStyle::Identicon));
        assert_eq!("mp".parse(), Ok(DefaultStyle::MysteryPerson));
        assert_eq!("MM".parse(), Ok(DefaultStyle::MysteryPerson));
        assert_eq!("initials".parse(), Ok(DefaultStyle::Initials));
        assert_eq!("blank".parse(), Ok(DefaultStyle::Blank));
        assert!("404".parse::<DefaultStyle>().is_err());
        assert!("https://example.com/a.png".parse::<DefaultStyle>().is_err());
        for style in [
            DefaultStyle::Identicon,
            DefaultStyle::MysteryPerson,
            DefaultStyle::Initials,
            DefaultStyle::Blank,
        ] {
            assert_eq!(style.to_string().parse(), Ok(style));
        }
    }

    #[test]
    fn identicons_are_deterministic_per_seed_and_differ_between_seeds() {
        let a = png(DefaultStyle::Identicon, b"user-a", None, 128);
        assert_eq!(a, png(DefaultStyle::Identicon, b"user-a", None, 128));
        let b = png(DefaultStyle::Identicon, b"user-b", None, 128);
        assert_ne!(a.bytes, b.bytes);
    }

    #[test]
    fn identicons_are_crisp_two_colour_and_mirror_symmetric() {
        for seed in [&b"alice"[..], b"bob", b"carol", b""] {
            for size in [5, 64, 128, 129, 512] {
                let img = png_pixels(&png(DefaultStyle::Identicon, seed, None, size));
                assert_eq!(img.dimensions(), (size, size));
                let mut colours: Vec<_> = img.pixels().map(|p| p.0).collect();
                colours.sort_unstable();
                colours.dedup();
                assert_eq!(colours.len(), 2, "seed {seed:?} size {size}");
                // Symmetric about the grid's centre line.
                let cell = (size / 6).max(1);
                let margin = (size - (5 * cell).min(size)) / 2;
                for y in 0..size {
                    for x in 0..5 * cell {
                        let (l, r) = (margin + x, margin + 5 * cell - 1 - x);
                        if l < size && r < size {
                            assert_eq!(img.get_pixel(l, y), img.get_pixel(r, y));
                        }
                    }
                }
                // The border is background: margins are kept.
                if size >= 64 {
                    assert_eq!(img.get_pixel(0, 0), img.get_pixel(size - 1, size - 1));
                }
            }
        }
    }

    #[test]
    fn mystery_person_is_a_light_silhouette_on_grey() {
        let img = png_pixels(&png(DefaultStyle::MysteryPerson, b"x", None, 128));
        let corner = img.get_pixel(0, 0).0;
        let head = img.get_pixel(64, 48).0;
        let shoulders = img.get_pixel(64, 120).0;
        assert_eq!(corner, [189, 189, 189, 255]);
        assert_eq!(head, [241, 241, 241, 255]);
        assert_eq!(shoulders, [241, 241, 241, 255]);
        // Anti-aliased edge: some greys strictly between the two.
        assert!(img.pixels().any(|p| p.0[0] > 189 && p.0[0] < 241));
    }

    #[test]
    fn initials_are_picked_unicode_aware() {
        assert_eq!(initials("Ada Lovelace"), "AL");
        assert_eq!(initials("  ada   king lovelace "), "AL");
        assert_eq!(initials("madonna"), "M");
        assert_eq!(initials("élodie durand"), "ÉD");
        assert_eq!(initials("Jean-Luc Picard"), "JP");
        assert_eq!(initials("(bob) smith"), "BS");
        assert_eq!(initials("ñandú 🙂"), "Ñ");
        assert_eq!(initials("Ωmega ψ"), "ΩΨ");
        assert_eq!(initials(""), "");
        assert_eq!(initials("🙂 🎉"), "");
    }

    #[test]
    fn initials_draw_white_glyphs_on_the_seed_colour() {
        let img = png_pixels(&png(
            DefaultStyle::Initials,
            b"seed",
            Some("Ada Lovelace"),
            128,
        ));
        let background = *img.get_pixel(0, 0);
        let white = img.pixels().filter(|p| p.0[..3] == [255, 255, 255]).count();
        let other = img.pixels().filter(|p| **p != background).count();
        assert!(white > 400, "only {white} white pixels");
        assert!(other > white, "anti-aliased edges expected");
        // Centred: the ink is balanced left/right and top/bottom.
        let ink: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(_, _, p)| **p != background)
            .map(|(x, y, _)| (x, y))
            .collect();
        let (min_x, max_x) = (ink.iter().map(|p| p.0).min(), ink.iter().map(|p| p.0).max());
        let (min_y, max_y) = (ink.iter().map(|p| p.1).min(), ink.iter().map(|p| p.1).max());
        let (Some(min_x), Some(max_x), Some(min_y), Some(max_y)) = (min_x, max_x, min_y, max_y)
        else {
            panic!("no ink");
        };
        assert!(min_x.abs_diff(127 - max_x) <= 2, "{min_x} {max_x}");
        assert!(min_y.abs_diff(127 - max_y) <= 2, "{min_y} {max_y}");
    }

    #[test]
    fn initials_without_a_name_fall_back_to_the_identicon() {
        let identicon = png(DefaultStyle::Identicon, b"seed", None, 64);
        for name in [None, Some(""), Some("   "), Some("🙂"), Some("李小龍")] {
            assert_eq!(
                png(DefaultStyle::Initials, b"seed", name, 64),
                identicon,
                "{name:?}"
            );
        }
    }

    #[test]
    fn blank_is_transparent_or_white() {
        let blank = render_default(DefaultStyle::Blank, b"", None, 32, Preferred::JpegOrPng)
            .expect("blank");
        assert_eq!(blank.format, OutputFormat::Png);
        assert!(png_pixels(&blank).pixels().all(|p| p.0[3] == 0));
        let webp = render_default(
            DefaultStyle::Blank,
            b"",
            None,
            32,
            Preferred::Exactly(OutputFormat::Webp),
        )
        .expect("blank webp");
        assert!(png_pixels(&webp).pixels().all(|p| p.0[3] == 0));
        let jpeg = render_default(
            DefaultStyle::Blank,
            b"",
            None,
            32,
            Preferred::Exactly(OutputFormat::Jpeg),
        )
        .expect("blank jpeg");
        assert!(
            png_pixels(&jpeg)
                .pixels()
                .all(|p| p.0[..3].iter().all(|&c| c >= 250))
        );
    }

    #[test]
    fn defaults_have_exact_sizes_in_every_format_and_refuse_silly_sizes() {
        for style in [
            DefaultStyle::Identicon,
            DefaultStyle::MysteryPerson,
            DefaultStyle::Initials,
            DefaultStyle::Blank,
        ] {
            for format in [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::Webp] {
                for size in [1, 17, 128] {
                    let out = render_default(
                        style,
                        b"k",
                        Some("Zoë Q"),
                        size,
                        Preferred::Exactly(format),
                    )
                    .expect("render");
                    assert_eq!((out.width, out.height, out.format), (size, size, format));
                    let img = png_pixels(&out);
                    assert_eq!(img.dimensions(), (size, size));
                }
            }
            assert!(matches!(
                render_default(style, b"k", None, 0, Preferred::JpegOrPng),
                Err(ImagingError::InvalidRequest(_))
            ));
        }
        let opaque = render_default(
            DefaultStyle::Identicon,
            b"k",
            None,
            64,
            Preferred::JpegOrPng,
        )
        .expect("identicon");
        assert_eq!(opaque.format, OutputFormat::Jpeg);
    }
}
