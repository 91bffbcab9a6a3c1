//! Geometry: EXIF orientation, the crop square, and Lanczos3 resampling.
//!
//! The order is chosen for speed without changing the result: instead of rotating the whole
//! decoded source upright and then cropping it, the crop is mapped back into the stored
//! (un-rotated) pixels, resampled straight to `size` x `size`, and only that small square is
//! turned upright. Rotations and mirrors commute with a separable, symmetric filter, and a
//! square stays a square.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, MulDiv, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::imaging::decode::{Channels, Rect, Source};
use crate::imaging::{Crop, ImagingError};

/// An EXIF orientation: how the stored pixels must be transformed to be shown upright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Orientation {
    /// 1: stored upright.
    Normal,
    /// 2: mirrored left-right.
    MirrorHorizontal,
    /// 3: upside down.
    Rotate180,
    /// 4: mirrored top-bottom.
    MirrorVertical,
    /// 5: mirrored along the top-left to bottom-right diagonal.
    Transpose,
    /// 6: must be turned 90° clockwise to be upright.
    Rotate90,
    /// 7: mirrored along the other diagonal.
    Transverse,
    /// 8: must be turned 90° counter-clockwise to be upright.
    Rotate270,
}

impl Orientation {
    /// Values outside 1..=8 mean "as stored".
    pub fn from_exif(value: u8) -> Self {
        match value {
            2 => Orientation::MirrorHorizontal,
            3 => Orientation::Rotate180,
            4 => Orientation::MirrorVertical,
            5 => Orientation::Transpose,
            6 => Orientation::Rotate90,
            7 => Orientation::Transverse,
            8 => Orientation::Rotate270,
            _ => Orientation::Normal,
        }
    }

    fn swaps_axes(self) -> bool {
        matches!(
            self,
            Orientation::Transpose
                | Orientation::Rotate90
                | Orientation::Transverse
                | Orientation::Rotate270
        )
    }

    /// Stored size from displayed size (and back: the swap is its own inverse).
    pub fn raw_size(self, width: u32, height: u32) -> (u32, u32) {
        if self.swaps_axes() {
            (height, width)
        } else {
            (width, height)
        }
    }

    /// The stored pixel that is displayed at `(x, y)`, for a stored image of `w` x `h`.
    fn raw_point(self, x: u32, y: u32, w: u32, h: u32) -> (u32, u32) {
        match self {
            Orientation::Normal => (x, y),
            Orientation::MirrorHorizontal => (w - 1 - x, y),
            Orientation::Rotate180 => (w - 1 - x, h - 1 - y),
            Orientation::MirrorVertical => (x, h - 1 - y),
            Orientation::Transpose => (y, x),
            Orientation::Rotate90 => (y, h - 1 - x),
            Orientation::Transverse => (w - 1 - y, h - 1 - x),
            Orientation::Rotate270 => (w - 1 - y, x),
        }
    }

    /// Maps a rectangle of the displayed image into the stored image of `w` x `h`. The
    /// rectangle must lie inside the displayed image (it was validated).
    pub fn rect_to_raw(self, r: Crop, w: u32, h: u32) -> Crop {
        let from_right = |x: u32, width: u32| w.saturating_sub(x).saturating_sub(width);
        let from_bottom = |y: u32, height: u32| h.saturating_sub(y).saturating_sub(height);
        let (x, y) = match self {
            Orientation::Normal => (r.x, r.y),
            Orientation::MirrorHorizontal => (from_right(r.x, r.width), r.y),
            Orientation::Rotate180 => (from_right(r.x, r.width), from_bottom(r.y, r.height)),
            Orientation::MirrorVertical => (r.x, from_bottom(r.y, r.height)),
            Orientation::Transpose => (r.y, r.x),
            Orientation::Rotate90 => (r.y, from_bottom(r.x, r.width)),
            Orientation::Transverse => (from_right(r.y, r.height), from_bottom(r.x, r.width)),
            Orientation::Rotate270 => (from_right(r.y, r.height), r.x),
        };
        let (width, height) = self.raw_size(r.width, r.height);
        Crop {
            x,
            y,
            width,
            height,
        }
    }

    /// Turns a stored `w` x `h` buffer of `channels`-byte pixels upright.
    pub fn apply(self, pixels: Vec<u8>, w: u32, h: u32, channels: usize) -> Vec<u8> {
        if self == Orientation::Normal {
            return pixels;
        }
        let (dw, dh) = self.raw_size(w, h);
        let mut out = Vec::with_capacity(pixels.len());
        for y in 0..dh {
            for x in 0..dw {
                let (rx, ry) = self.raw_point(x, y, w, h);
                let at = (ry as usize * w as usize + rx as usize) * channels;
                if let Some(px) = pixels.get(at..at + channels) {
                    out.extend_from_slice(px);
                }
            }
        }
        out
    }
}

/// The largest square centred in a `width` x `height` image: the default crop.
pub(crate) fn centred_square(width: u32, height: u32) -> Crop {
    square_within(Crop {
        x: 0,
        y: 0,
        width,
        height,
    })
}

/// The largest square centred in `crop`: outputs are square, and a cropper's rounding
/// (301x300) should cost a pixel, not a failed upload.
pub(crate) fn square_within(crop: Crop) -> Crop {
    let side = crop.width.min(crop.height);
    Crop {
        x: crop.x + (crop.width - side) / 2,
        y: crop.y + (crop.height - side) / 2,
        width: side,
        height: side,
    }
}

/// For RGBA sources: copies out the pixels under the crop, tells whether any is less than
/// opaque, and if so premultiplies them by alpha, once for all sizes. Premultiplied
/// resampling keeps the colour of fully transparent pixels (often black) from bleeding into
/// edges; doing it here touches the crop only, where fast_image_resize would premultiply the
/// whole source again for every size. RGB sources are returned as they are.
pub(crate) fn isolate_crop(source: Source) -> Result<(Source, bool), ImagingError> {
    if source.channels != Channels::Rgba {
        return Ok((source, false));
    }
    let rect = source.rect;
    let x0 = (rect.x.floor().max(0.0) as u32).min(source.width);
    let y0 = (rect.y.floor().max(0.0) as u32).min(source.height);
    let x1 = ((rect.x + rect.width).ceil() as u32).clamp(x0, source.width);
    let y1 = ((rect.y + rect.height).ceil() as u32).clamp(y0, source.height);
    let (width, height) = (x1 - x0, y1 - y0);
    let stride = source.width as usize * 4;
    let mut pixels = Vec::with_capacity(width as usize * height as usize * 4);
    for y in y0 as usize..y1 as usize {
        let row = source
            .pixels
            .get(y * stride + x0 as usize * 4..y * stride + x1 as usize * 4)
            .ok_or_else(|| ImagingError::Encode("crop outside the decoded image".into()))?;
        pixels.extend_from_slice(row);
    }
    let has_alpha = pixels.chunks_exact(4).any(|px| px[3] != 255);
    if has_alpha {
        let mut image = Image::from_vec_u8(width, height, pixels, PixelType::U8x4)
            .map_err(|e| ImagingError::Encode(format!("premultiply: {e}")))?;
        MulDiv::default()
            .multiply_alpha_inplace(&mut image)
            .map_err(|e| ImagingError::Encode(format!("premultiply: {e}")))?;
        pixels = image.into_vec();
    }
    let isolated = Source {
        width,
        height,
        channels: Channels::Rgba,
        pixels,
        rect: Rect {
            x: rect.x - f64::from(x0),
            y: rect.y - f64::from(y0),
            ..rect
        },
        denominator: source.denominator,
        premultiplied: has_alpha,
    };
    Ok((isolated, has_alpha))
}

/// A resized, upright, square image ready for an encoder.
#[derive(Debug, Clone)]
pub(crate) struct Square {
    pub size: u32,
    /// RGBA only when the image has real transparency.
    pub channels: Channels,
    pub pixels: Vec<u8>,
}

/// Resamples `source.rect` to `size` x `size` (Lanczos3) and turns the result upright.
/// Premultiplied sources are un-premultiplied after resampling; RGBA sources without
/// transparency come out as RGB.
pub(crate) fn resize_square(
    source: &Source,
    size: u32,
    orientation: Orientation,
    has_alpha: bool,
) -> Result<Square, ImagingError> {
    let failed = |e: &dyn std::fmt::Display| ImagingError::Encode(format!("resize: {e}"));
    let pixel_type = match source.channels {
        Channels::Rgb => PixelType::U8x3,
        Channels::Rgba => PixelType::U8x4,
    };
    let src = ImageRef::new(source.width, source.height, &source.pixels, pixel_type)
        .map_err(|e| failed(&e))?;
    let mut dst = Image::new(size, size, pixel_type);
    let rect = source.rect;
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .crop(rect.x, rect.y, rect.width, rect.height)
        // Alpha was dealt with once, in `isolate_crop`.
        .use_alpha(false);
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| failed(&e))?;
    if source.premultiplied {
        MulDiv::default()
            .divide_alpha_inplace(&mut dst)
            .map_err(|e| failed(&e))?;
    }
    let mut pixels = dst.into_vec();
    let mut channels = source.channels;
    if channels == Channels::Rgba && !has_alpha {
        pixels = pixels
            .chunks_exact(4)
            .flat_map(|px| [px[0], px[1], px[2]])
            .collect();
        channels = Channels::Rgb;
    }
    let pixels = orientation.apply(pixels, size, size, channels.count());
    Ok(Square {
        size,
        channels,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::decode::Rect;

    const ALL: [Orientation; 8] = [
        Orientation::Normal,
        Orientation::MirrorHorizontal,
        Orientation::Rotate180,
        Orientation::MirrorVertical,
        Orientation::Transpose,
        Orientation::Rotate90,
        Orientation::Transverse,
        Orientation::Rotate270,
    ];

    /// A 3x2 image whose pixels are their own stored indices 0..6.
    fn indices() -> Vec<u8> {
        (0..6).collect()
    }

    #[test]
    fn apply_matches_the_exif_definitions() {
        // Stored:  0 1 2
        //          3 4 5
        let expected: [(u8, &[u8]); 8] = [
            (1, &[0, 1, 2, 3, 4, 5]),
            (2, &[2, 1, 0, 5, 4, 3]),
            (3, &[5, 4, 3, 2, 1, 0]),
            (4, &[3, 4, 5, 0, 1, 2]),
            (5, &[0, 3, 1, 4, 2, 5]), // 2 wide, 3 high
            (6, &[3, 0, 4, 1, 5, 2]), // turned clockwise
            (7, &[5, 2, 4, 1, 3, 0]),
            (8, &[2, 5, 1, 4, 0, 3]), // turned counter-clockwise
        ];
        for (value, want) in expected {
            let o = Orientation::from_exif(value);
            assert_eq!(o.apply(indices(), 3, 2, 1), want, "orientation {value}");
        }
    }

    #[test]
    fn rect_to_raw_selects_the_pixels_that_apply_shows() {
        // For every orientation and every 1x1 and 2x1 rectangle of the displayed image, the
        // mapped stored rectangle must contain exactly the stored pixels displayed there.
        let (w, h) = (4u32, 3u32);
        let stored: Vec<u8> = (0..(w * h) as u8).collect();
        for o in ALL {
            let (dw, dh) = o.raw_size(w, h);
            let shown = o.apply(stored.clone(), w, h, 1);
            for (rw, rh) in [(1, 1), (2, 1), (1, 2), (2, 2)] {
                for y in 0..=dh - rh {
                    for x in 0..=dw - rw {
                        let crop = Crop {
                            x,
                            y,
                            width: rw,
                            height: rh,
                        };
                        let mut want: Vec<u8> = (y..y + rh)
                            .flat_map(|yy| (x..x + rw).map(move |xx| (yy, xx)))
                            .map(|(yy, xx)| shown[(yy * dw + xx) as usize])
                            .collect();
                        let raw = o.rect_to_raw(crop, w, h);
                        let mut got: Vec<u8> = (raw.y..raw.y + raw.height)
                            .flat_map(|yy| (raw.x..raw.x + raw.width).map(move |xx| (yy, xx)))
                            .map(|(yy, xx)| stored[(yy * w + xx) as usize])
                            .collect();
                        want.sort_unstable();
                        got.sort_unstable();
                        assert_eq!(got, want, "{o:?} {crop:?} → {raw:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn default_crop_is_the_centred_square() {
        let c = centred_square(300, 200);
        assert_eq!((c.x, c.y, c.width, c.height), (50, 0, 200, 200));
        let c = centred_square(200, 301);
        assert_eq!((c.x, c.y, c.width, c.height), (0, 50, 200, 200));
        let c = square_within(Crop {
            x: 10,
            y: 20,
            width: 31,
            height: 30,
        });
        assert_eq!((c.x, c.y, c.width, c.height), (10, 20, 30, 30));
    }

    fn flat_source(channels: Channels, px: &[u8], w: u32, h: u32) -> Source {
        Source {
            width: w,
            height: h,
            channels,
            pixels: px.repeat((w * h) as usize),
            rect: Rect {
                x: 0.0,
                y: 0.0,
                width: f64::from(w),
                height: f64::from(h),
            },
            denominator: 1,
            premultiplied: false,
        }
    }

    #[test]
    fn resizes_down_and_up_to_exact_squares() {
        let source = flat_source(Channels::Rgb, &[10, 200, 30], 40, 40);
        for size in [1, 7, 40, 128] {
            let square =
                resize_square(&source, size, Orientation::Rotate90, false).expect("resize");
            assert_eq!(square.size, size);
            assert_eq!(square.pixels.len(), (size * size * 3) as usize);
            assert!(square.pixels.chunks_exact(3).all(|p| p == [10, 200, 30]));
        }
    }

    #[test]
    fn transparent_pixels_do_not_bleed_their_colour() {
        // Left half opaque white, right half fully transparent *black*: without premultiplied
        // alpha, the black would darken the edge.
        let (w, h) = (64u32, 64u32);
        let mut source = flat_source(Channels::Rgba, &[255, 255, 255, 255], w, h);
        for y in 0..h {
            for x in w / 2..w {
                let i = ((y * w + x) * 4) as usize;
                source.pixels[i..i + 4].copy_from_slice(&[0, 0, 0, 0]);
            }
        }
        let (source, has_alpha) = isolate_crop(source).expect("isolate");
        assert!(has_alpha && source.premultiplied);
        let square = resize_square(&source, 16, Orientation::Normal, true).expect("resize");
        assert_eq!(square.channels, Channels::Rgba);
        for px in square.pixels.chunks_exact(4).filter(|p| p[3] > 16) {
            assert!(px[0] > 240 && px[1] > 240 && px[2] > 240, "{px:?}");
        }
    }

    #[test]
    fn only_pixels_under_the_crop_decide_transparency() {
        // 20x10: opaque left half, transparent right half.
        let mut source = flat_source(Channels::Rgba, &[9, 9, 9, 255], 20, 10);
        for y in 0..10 {
            for x in 10..20 {
                source.pixels[(y * 20 + x) * 4 + 3] = 0;
            }
        }
        let left = Rect {
            x: 2.0,
            y: 1.0,
            width: 8.0,
            height: 8.0,
        };
        let (isolated, has_alpha) = isolate_crop(Source {
            rect: left,
            ..source.clone()
        })
        .expect("isolate");
        assert!(!has_alpha);
        assert_eq!((isolated.width, isolated.height), (8, 8));
        assert_eq!((isolated.rect.x, isolated.rect.y), (0.0, 0.0));
        let (_, has_alpha) = isolate_crop(Source {
            rect: Rect { x: 2.5, ..left },
            ..source
        })
        .expect("isolate");
        assert!(has_alpha, "a crop reaching into the transparent half");
    }

    #[test]
    fn opaque_rgba_comes_out_as_rgb() {
        let source = flat_source(Channels::Rgba, &[1, 2, 3, 255], 8, 8);
        let square = resize_square(&source, 4, Orientation::Normal, false).expect("resize");
        assert_eq!(square.channels, Channels::Rgb);
        assert_eq!(square.pixels.len(), 4 * 4 * 3);
    }
}
