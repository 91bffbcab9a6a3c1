//! EXIF: the orientation to apply, and the camera make and model for the job report.
//!
//! Only these three tags are read. Location (the GPS IFD) and everything else stays in the
//! source bytes, which are never served: outputs are written from pixels alone.

use std::io::Cursor;

use exif::{In, Reader, Tag, Value};

use crate::imaging::ImageKind;
use crate::imaging::decode::guarded;

/// Longest make or model kept, in characters.
const MAX_TEXT: usize = 64;

/// What [`read`] found; defaults (orientation 1, no make or model) when there is no EXIF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExifInfo {
    /// 1 to 8; 1 when absent or out of range.
    pub orientation: u8,
    pub make: Option<String>,
    pub model: Option<String>,
}

impl Default for ExifInfo {
    fn default() -> Self {
        ExifInfo {
            orientation: 1,
            make: None,
            model: None,
        }
    }
}

/// Reads the EXIF block of a JPEG (APP1), PNG (`eXIf`) or WebP (`EXIF` chunk). Absent or broken
/// EXIF is not an error: the image is simply taken as it is stored.
pub(crate) fn read(bytes: &[u8], kind: ImageKind) -> ExifInfo {
    if kind == ImageKind::Gif {
        return ExifInfo::default();
    }
    let parsed = guarded("EXIF", || {
        let mut reader = Reader::new();
        reader.continue_on_error(true);
        match reader.read_from_container(&mut Cursor::new(bytes)) {
            Ok(exif) => Ok(Some(exif)),
            // Some fields were broken: keep the ones that parsed.
            Err(exif::Error::PartialResult(partial)) => Ok(Some(partial.into_inner().0)),
            Err(_) => Ok(None),
        }
    });
    let Ok(Some(exif)) = parsed else {
        return ExifInfo::default();
    };
    let orientation = exif
        .get_field(Tag::Orientation, In::PRIMARY)
        .and_then(|field| field.value.get_uint(0))
        .and_then(|value| u8::try_from(value).ok())
        .filter(|value| (1..=8).contains(value))
        .unwrap_or(1);
    let text = |tag: Tag| {
        exif.get_field(tag, In::PRIMARY)
            .and_then(|field| match &field.value {
                Value::Ascii(parts) => parts.first().and_then(|part| printable(part)),
                _ => None,
            })
    };
    ExifInfo {
        orientation,
        make: text(Tag::Make),
        model: text(Tag::Model),
    }
}

/// Keeps printable characters only, trimmed and bounded: these strings end up in JSON and
/// in UIs.
fn printable(raw: &[u8]) -> Option<String> {
    let text: String = String::from_utf8_lossy(raw)
        .chars()
        .filter(|c| !c.is_control() && *c != char::REPLACEMENT_CHARACTER)
        .collect();
    let text: String = text.trim().chars().take(MAX_TEXT).collect();
    let text = text.trim_end().to_owned();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::fixtures;

    #[test]
    fn reads_orientation_make_and_model_from_a_jpeg() {
        let jpeg = fixtures::with_exif(
            &fixtures::jpeg_quadrants(16, 16),
            8,
            Some(("  ACME\u{7}", "Pocket 9000")),
        );
        let info = read(&jpeg, ImageKind::Jpeg);
        assert_eq!(
            info,
            ExifInfo {
                orientation: 8,
                make: Some("ACME".into()),
                model: Some("Pocket 9000".into()),
            }
        );
    }

    #[test]
    fn missing_or_invalid_exif_means_upright() {
        let plain = fixtures::jpeg_quadrants(16, 16);
        assert_eq!(read(&plain, ImageKind::Jpeg), ExifInfo::default());
        let invalid = fixtures::with_exif(&plain, 9, None);
        assert_eq!(read(&invalid, ImageKind::Jpeg).orientation, 1);
        assert_eq!(
            read(&fixtures::png_rgb(4, 4), ImageKind::Png),
            ExifInfo::default()
        );
    }

    #[test]
    fn reads_orientation_from_a_png_exif_chunk() {
        let png = fixtures::png_with_exif(&fixtures::png_rgb(4, 2), 6);
        assert_eq!(read(&png, ImageKind::Png).orientation, 6);
    }

    #[test]
    fn long_or_binary_text_is_bounded_and_cleaned() {
        let long = "x".repeat(500);
        assert_eq!(printable(long.as_bytes()).map(|s| s.len()), Some(MAX_TEXT));
        assert_eq!(printable(b"\0\0\0"), None);
        assert_eq!(printable(b"Canon\0"), Some("Canon".into()));
    }
}
