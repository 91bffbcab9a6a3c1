//! Parsing of `/avatar/{key}[.ext]?s=&d=&f=&v=`. Nothing here can fail: an `<img>` must not break
//! because of a bad query, so every invalid value falls back to its default.

use crate::imaging::{DefaultStyle, OutputFormat, Preferred};

/// What to show when a key has no avatar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DefaultChoice {
    /// Answer 404 instead of an image (`d=404`).
    NotFound,
    /// A generated image.
    Style(DefaultStyle),
}

impl DefaultChoice {
    /// Gravatar/Libravatar vocabulary.
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw.trim().to_ascii_lowercase().as_str() {
            "404" => Self::NotFound,
            "identicon" => Self::Style(DefaultStyle::Identicon),
            "mp" | "mm" | "mysteryman" | "mystery-person" => {
                Self::Style(DefaultStyle::MysteryPerson)
            }
            "initials" => Self::Style(DefaultStyle::Initials),
            "blank" => Self::Style(DefaultStyle::Blank),
            _ => return None,
        })
    }
}

/// Output format: forced by the extension or by `Accept`, or chosen from the image (JPEG, PNG
/// when transparent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FormatChoice {
    /// This format.
    Exactly(OutputFormat),
    /// JPEG, or PNG for transparent images.
    Auto,
}

impl FormatChoice {
    /// For the imaging pipeline.
    pub fn preferred(self) -> Preferred {
        match self {
            Self::Exactly(f) => Preferred::Exactly(f),
            Self::Auto => Preferred::JpegOrPng,
        }
    }

    /// Short label used in cache keys.
    pub fn label(self) -> &'static str {
        match self {
            Self::Exactly(OutputFormat::Jpeg) => "jpg",
            Self::Exactly(OutputFormat::Png) => "png",
            Self::Exactly(OutputFormat::Webp) => "webp",
            Self::Auto => "auto",
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvatarQuery {
    /// Size in pixels, snapped to a configured size.
    pub size: u32,
    /// What to show without an avatar.
    pub default: DefaultChoice,
    /// `f=y`: show the default even if an avatar exists.
    pub force_default: bool,
    /// `v`: the version the client believes is current.
    pub version: Option<String>,
}

impl AvatarQuery {
    /// Parse a raw query string. `sizes` must be sorted ascending and non-empty.
    pub fn parse(
        raw: Option<&str>,
        sizes: &[u32],
        default_size: u32,
        default: DefaultChoice,
    ) -> Self {
        let mut query = Self {
            size: snap(default_size, sizes),
            default,
            force_default: false,
            version: None,
        };
        let Some(raw) = raw else { return query };
        for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            match name.as_ref() {
                // Gravatar's range is 1..=2048; a larger number asks for the largest size there
                // is, not for the default (it would shrink the picture it asked to enlarge).
                "s" | "size" => {
                    if let Some(s) = parse_size(&value) {
                        query.size = snap(s, sizes);
                    }
                }
                // `d=<url>` and unknown values fall back to the configured default; a URL is never
                // followed or redirected to.
                "d" | "default" => {
                    if let Some(d) = DefaultChoice::parse(&value) {
                        query.default = d;
                    }
                }
                "f" | "forcedefault" => {
                    query.force_default = matches!(value.as_ref(), "y" | "yes" | "1" | "true");
                }
                "v" if value.len() <= 64 => query.version = Some(value.into_owned()),
                _ => {}
            }
        }
        query
    }
}

/// A requested size: decimal digits, at least 1, capped at 2048 however many digits follow.
fn parse_size(raw: &str) -> Option<u32> {
    let digits = raw.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value = digits.parse::<u64>().unwrap_or(u64::MAX).min(2048);
    u32::try_from(value).ok().filter(|&s| s >= 1)
}

/// The smallest configured size at least `size`, else the largest.
pub fn snap(size: u32, sizes: &[u32]) -> u32 {
    sizes
        .iter()
        .copied()
        .find(|&s| s >= size)
        .or_else(|| sizes.last().copied())
        .unwrap_or(size)
}

/// Split `{key}.{ext}`; an extension forces the format. Unknown extensions stay part of the key
/// (which then fails validation and gets the default image).
pub fn split_extension(file: &str) -> (&str, Option<OutputFormat>) {
    if let Some((key, ext)) = file.rsplit_once('.')
        && let Some(format) = OutputFormat::from_extension(ext)
    {
        return (key, Some(format));
    }
    (file, None)
}

/// Format from the extension, else `Accept` (WebP when accepted). Returns whether `Accept` was
/// consulted, which makes the response `Vary: Accept`.
pub fn negotiate(extension: Option<OutputFormat>, accept: Option<&str>) -> (FormatChoice, bool) {
    match extension {
        Some(format) => (FormatChoice::Exactly(format), false),
        None => {
            let webp = accept.is_some_and(|a| {
                a.split(',').any(|part| {
                    let mut pieces = part.split(';');
                    let media = pieces.next().unwrap_or("").trim();
                    let refused = pieces.any(|p| {
                        p.trim()
                            .strip_prefix("q=")
                            .and_then(|q| q.trim().parse::<f32>().ok())
                            == Some(0.0)
                    });
                    media.eq_ignore_ascii_case("image/webp") && !refused
                })
            });
            let choice = if webp {
                FormatChoice::Exactly(OutputFormat::Webp)
            } else {
                FormatChoice::Auto
            };
            (choice, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: &[u32] = &[32, 64, 128, 256, 512];
    const IDENTICON: DefaultChoice = DefaultChoice::Style(DefaultStyle::Identicon);

    fn q(raw: &str) -> AvatarQuery {
        AvatarQuery::parse(Some(raw), SIZES, 128, IDENTICON)
    }

    #[test]
    fn sizes_snap_up_and_cap_and_never_fail() {
        assert_eq!(q("s=1").size, 32);
        assert_eq!(q("s=33").size, 64);
        assert_eq!(q("size=128").size, 128);
        assert_eq!(q("s=2048").size, 512);
        for above in [
            "s=513",
            "s=2049",
            "s=99999999999999",
            "s=999999999999999999999999",
        ] {
            assert_eq!(q(above).size, 512, "{above} asks for the largest size");
        }
        for bad in ["s=0", "s=-5", "s=abc", "s=", "s=%FF", "s=1.5", "s=-0"] {
            assert_eq!(q(bad).size, 128, "{bad}");
        }
        assert_eq!(AvatarQuery::parse(None, SIZES, 100, IDENTICON).size, 128);
    }

    #[test]
    fn defaults_use_the_gravatar_vocabulary_and_ignore_urls() {
        assert_eq!(q("d=404").default, DefaultChoice::NotFound);
        assert_eq!(
            q("d=mp").default,
            DefaultChoice::Style(DefaultStyle::MysteryPerson)
        );
        assert_eq!(
            q("default=blank").default,
            DefaultChoice::Style(DefaultStyle::Blank)
        );
        assert_eq!(q("d=https%3A%2F%2Fevil.example%2Fx.png").default, IDENTICON);
        assert_eq!(q("d=retro").default, IDENTICON);
        assert!(q("f=y").force_default);
        assert!(!q("f=n").force_default);
        assert_eq!(q("v=abc").version.as_deref(), Some("abc"));
    }

    #[test]
    fn extensions_force_the_format_and_accept_negotiates_webp() {
        assert_eq!(split_extension("abc.png"), ("abc", Some(OutputFormat::Png)));
        assert_eq!(
            split_extension("abc.jpg"),
            ("abc", Some(OutputFormat::Jpeg))
        );
        assert_eq!(split_extension("abc.gif"), ("abc.gif", None));
        assert_eq!(
            negotiate(Some(OutputFormat::Png), Some("image/webp")),
            (FormatChoice::Exactly(OutputFormat::Png), false)
        );
        assert_eq!(
            negotiate(None, Some("image/avif,image/webp,*/*")),
            (FormatChoice::Exactly(OutputFormat::Webp), true)
        );
        assert_eq!(
            negotiate(None, Some("image/webp;q=0")),
            (FormatChoice::Auto, true)
        );
        assert_eq!(negotiate(None, None), (FormatChoice::Auto, true));
    }
}
