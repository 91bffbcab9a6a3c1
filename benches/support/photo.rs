//! A synthetic photo-like JPEG for benchmarks: smooth colour fields (sky, skin-like
//! gradients), hard-edged shapes, and sensor-like noise, so that the entropy decoder and the
//! resampler have realistic work. Deterministic: same bytes on every run.

use image::ImageEncoder;
use image::codecs::jpeg::JpegEncoder;

/// Pixels of the synthetic photo, RGB8.
pub fn photo_rgb(width: u32, height: u32) -> Vec<u8> {
    let mut state = 0x853c_49e6_748f_ea9b_u64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) % 13) as f32 - 6.0
    };
    let (w, h) = (width as f32, height as f32);
    let mut pixels = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height {
        let fy = y as f32 / h;
        for x in 0..width {
            let fx = x as f32 / w;
            // Smooth fields.
            let mut r = 120.0 + 90.0 * (fx * 3.1 + fy * 1.7).sin();
            let mut g = 110.0 + 70.0 * (fy * 4.3 - fx * 0.9).cos();
            let mut b = 140.0 + 80.0 * ((fx - 0.5) * (fy - 0.3) * 9.0).sin();
            // A "face": a soft disc of skin tone with a hard rim.
            let (dx, dy) = (fx - 0.52, (fy - 0.45) * h / w);
            let d = (dx * dx + dy * dy).sqrt();
            if d < 0.17 {
                let shade = 1.0 - d * 2.0;
                r = 225.0 * shade + 20.0;
                g = 180.0 * shade + 15.0;
                b = 150.0 * shade + 10.0;
            }
            // Stripes and a window frame: hard edges at several angles.
            if ((fx * 40.0 + fy * 13.0) as u32).is_multiple_of(7) && fy > 0.75 {
                r *= 0.35;
                g *= 0.35;
                b *= 0.35;
            }
            if (fx > 0.08 && fx < 0.095) || (fy > 0.12 && fy < 0.13 && fx < 0.3) {
                r = 245.0;
                g = 245.0;
                b = 240.0;
            }
            let n = noise();
            pixels.push((r + n).clamp(0.0, 255.0) as u8);
            pixels.push((g + n * 0.8).clamp(0.0, 255.0) as u8);
            pixels.push((b + n * 1.2).clamp(0.0, 255.0) as u8);
        }
    }
    pixels
}

/// The synthetic photo as a JPEG of the given quality.
pub fn photo_jpeg(width: u32, height: u32, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    if let Err(e) = JpegEncoder::new_with_quality(&mut out, quality).write_image(
        &photo_rgb(width, height),
        width,
        height,
        image::ExtendedColorType::Rgb8,
    ) {
        panic!("could not encode the synthetic photo: {e}");
    }
    out
}
