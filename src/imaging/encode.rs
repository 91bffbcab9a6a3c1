//! Encoders, and the small scheduler that runs variants in parallel.
//!
//! Outputs are written from pixels alone, so no metadata of the source (EXIF, GPS, XMP, ICC
//! comments) can reach them. JPEG uses `image`'s encoder at quality 82 (transparency is
//! flattened onto white), PNG `image`'s encoder, WebP libwebp in lossy mode at quality 80
//! (about half the bytes of the JPEG at 512², and keeps alpha).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use image::ImageEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};

use crate::imaging::decode::Channels;
use crate::imaging::resize::Square;
use crate::imaging::{Encoded, ImagingError, OutputFormat};

/// JPEG quality: the usual web trade-off between artefacts on faces and bytes.
pub(crate) const JPEG_QUALITY: u8 = 82;
/// libwebp lossy quality.
pub(crate) const WEBP_QUALITY: f32 = 80.0;

/// Rough relative encoding cost per pixel, for scheduling only (at 512² here: libwebp lossy
/// 12-16 ms, `image`'s JPEG 5-6 ms).
pub(crate) fn relative_cost(format: OutputFormat) -> u64 {
    match format {
        OutputFormat::Jpeg => 1,
        OutputFormat::Png => 2,
        OutputFormat::Webp => 3,
    }
}

/// Encodes one square.
pub(crate) fn encode(square: &Square, format: OutputFormat) -> Result<Encoded, ImagingError> {
    let size = square.size;
    let expected = size as usize * size as usize * square.channels.count();
    if square.pixels.len() != expected {
        return Err(ImagingError::Encode(format!(
            "{} bytes for a {size}x{size} image",
            square.pixels.len()
        )));
    }
    let bytes = match format {
        OutputFormat::Jpeg => jpeg(square)?,
        OutputFormat::Png => png(square)?,
        OutputFormat::Webp => webp(square)?,
    };
    Ok(Encoded {
        format,
        width: size,
        height: size,
        bytes,
    })
}

fn jpeg(square: &Square) -> Result<Vec<u8>, ImagingError> {
    let flattened;
    let rgb = match square.channels {
        Channels::Rgb => &square.pixels,
        Channels::Rgba => {
            flattened = flatten_on_white(&square.pixels);
            &flattened
        }
    };
    let mut out = Vec::with_capacity(rgb.len() / 8);
    JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
        .encode(
            rgb,
            square.size,
            square.size,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| ImagingError::Encode(format!("JPEG: {e}")))?;
    Ok(out)
}

/// Composites RGBA onto opaque white (JPEG has no alpha; white is what a page usually is).
pub(crate) fn flatten_on_white(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|px| {
            let a = u32::from(px[3]);
            let over = |c: u8| ((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8;
            [over(px[0]), over(px[1]), over(px[2])]
        })
        .collect()
}

fn png(square: &Square) -> Result<Vec<u8>, ImagingError> {
    let color = match square.channels {
        Channels::Rgb => image::ExtendedColorType::Rgb8,
        Channels::Rgba => image::ExtendedColorType::Rgba8,
    };
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Default, FilterType::Adaptive)
        .write_image(&square.pixels, square.size, square.size, color)
        .map_err(|e| ImagingError::Encode(format!("PNG: {e}")))?;
    Ok(out)
}

fn webp(square: &Square) -> Result<Vec<u8>, ImagingError> {
    let layout = match square.channels {
        Channels::Rgb => webp::PixelLayout::Rgb,
        Channels::Rgba => webp::PixelLayout::Rgba,
    };
    let memory = webp::Encoder::new(&square.pixels, layout, square.size, square.size)
        .encode_simple(false, WEBP_QUALITY)
        .map_err(|e| ImagingError::Encode(format!("WebP: {e:?}")))?;
    Ok(memory.to_vec())
}

/// Runs `work` on every item, on up to `available_parallelism` threads (the calling thread
/// is one of them), and returns the results in input order. Items are started heaviest
/// first by `cost`, and each worker takes the next one as it finishes, so one big WebP does
/// not end up queued behind the small ones.
///
/// Scoped threads rather than a pool: a render has two to six items of a few milliseconds to
/// tens of milliseconds, where a thread spawn (tens of microseconds) is noise, and the
/// caller's semaphore already bounds how many renders run at once.
pub(crate) fn parallel<T: Sync, R: Send>(
    items: &[T],
    cost: impl Fn(&T) -> u64,
    work: impl Fn(&T) -> Result<R, ImagingError> + Sync,
) -> Result<Vec<R>, ImagingError> {
    // available_parallelism reads cgroup files on Linux: once per process is enough.
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from));
    let threads = cores.min(items.len());
    let run = |item: &T| {
        catch_unwind(AssertUnwindSafe(|| work(item)))
            .unwrap_or_else(|_| Err(ImagingError::Encode("an encoder panicked".into())))
    };
    if threads <= 1 {
        return items.iter().map(run).collect();
    }
    let mut order: Vec<(usize, &T)> = items.iter().enumerate().collect();
    order.sort_by_key(|(_, item)| std::cmp::Reverse(cost(item)));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<R, ImagingError>>>> =
        Mutex::new(items.iter().map(|_| None).collect());
    let worker = || {
        while let Some(&(i, item)) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            let result = run(item);
            if let Ok(mut slots) = results.lock()
                && let Some(slot) = slots.get_mut(i)
            {
                *slot = Some(result);
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(worker);
        }
        worker();
    });
    results
        .into_inner()
        .map_err(|_| ImagingError::Encode("worker state poisoned".into()))?
        .into_iter()
        .map(|slot| slot.unwrap_or_else(|| Err(ImagingError::Encode("variant was lost".into()))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(channels: Channels, px: &[u8], size: u32) -> Square {
        Square {
            size,
            channels,
            pixels: px.repeat((size * size) as usize),
        }
    }

    #[test]
    fn every_format_round_trips_at_the_exact_size() {
        for (channels, px) in [
            (Channels::Rgb, &[200u8, 40, 90][..]),
            (Channels::Rgba, &[200u8, 40, 90, 128][..]),
        ] {
            let sq = square(channels, px, 33);
            for format in [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::Webp] {
                let encoded = encode(&sq, format).expect("encode");
                assert_eq!((encoded.width, encoded.height), (33, 33));
                let decoded = image::load_from_memory(&encoded.bytes).expect("decode");
                assert_eq!((decoded.width(), decoded.height()), (33, 33));
                let has_alpha = decoded.color().has_alpha();
                let expect_alpha = channels == Channels::Rgba && format != OutputFormat::Jpeg;
                assert_eq!(has_alpha, expect_alpha, "{channels:?} {format:?}");
            }
        }
    }

    #[test]
    fn jpeg_flattens_transparency_onto_white() {
        assert_eq!(flatten_on_white(&[0, 0, 0, 0]), [255, 255, 255]);
        assert_eq!(flatten_on_white(&[10, 20, 30, 255]), [10, 20, 30]);
        assert_eq!(flatten_on_white(&[0, 0, 0, 128]), [127, 127, 127]);
    }

    #[test]
    fn a_wrong_buffer_is_an_error_not_a_panic() {
        let bad = Square {
            size: 10,
            channels: Channels::Rgb,
            pixels: vec![0; 5],
        };
        for format in [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::Webp] {
            assert!(matches!(encode(&bad, format), Err(ImagingError::Encode(_))));
        }
    }

    #[test]
    fn parallel_keeps_order_and_reports_failures() {
        let items: Vec<u32> = (0..9).collect();
        let doubled = parallel(&items, |&i| u64::from(i % 4), |&i| Ok(i * 2)).expect("parallel");
        assert_eq!(doubled, (0..9).map(|i| i * 2).collect::<Vec<_>>());
        let failed = parallel(
            &items,
            |_| 0,
            |&i| {
                if i == 5 {
                    Err(ImagingError::Encode("five".into()))
                } else {
                    Ok(i)
                }
            },
        );
        assert_eq!(failed, Err(ImagingError::Encode("five".into())));
        let panicked: Result<Vec<u32>, _> = parallel(
            &items,
            |_| 0,
            |&i| {
                assert!(i != 3, "deliberate");
                Ok(i)
            },
        );
        assert!(matches!(panicked, Err(ImagingError::Encode(_))));
    }
}
