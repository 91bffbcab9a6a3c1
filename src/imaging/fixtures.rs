//! Test fixtures, all generated in code: images in every input kind, hostile headers, EXIF
//! segments, and a tiny DC-only JPEG writer for CMYK files (no encoder at hand writes them).

use image::ImageEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;

/// Quadrant colours of [`jpeg_quadrants`]: top-left, top-right, bottom-left, bottom-right.
pub const RED: [u8; 3] = [230, 20, 20];
pub const GREEN: [u8; 3] = [20, 200, 20];
pub const BLUE: [u8; 3] = [20, 20, 230];
pub const YELLOW: [u8; 3] = [240, 230, 20];

/// Whether two colours are within `tolerance` on every channel.
pub fn near(got: &[u8], want: &[u8], tolerance: u8) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(g, w)| g.abs_diff(*w) <= tolerance)
}

fn quadrant_rgb(w: u32, h: u32) -> Vec<u8> {
    let mut px = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let c = match (x < w / 2, y < h / 2) {
                (true, true) => RED,
                (false, true) => GREEN,
                (true, false) => BLUE,
                (false, false) => YELLOW,
            };
            px.extend_from_slice(&c);
        }
    }
    px
}

fn gradient_rgb(w: u32, h: u32) -> Vec<u8> {
    (0..h)
        .flat_map(|y| (0..w).flat_map(move |x| [(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8]))
        .collect()
}

/// A JPEG (quality 95) with four flat quadrants: red, green / blue, yellow.
pub fn jpeg_quadrants(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 95)
        .write_image(&quadrant_rgb(w, h), w, h, image::ExtendedColorType::Rgb8)
        .expect("encode fixture");
    out
}

/// A single-channel JPEG of one grey level.
pub fn jpeg_gray(w: u32, h: u32, level: u8) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 95)
        .write_image(
            &vec![level; (w * h) as usize],
            w,
            h,
            image::ExtendedColorType::L8,
        )
        .expect("encode fixture");
    out
}

/// An RGB PNG with a gradient.
pub fn png_rgb(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(&gradient_rgb(w, h), w, h, image::ExtendedColorType::Rgb8)
        .expect("encode fixture");
    out
}

/// An RGBA PNG: left half opaque red, right half fully transparent.
pub fn png_half_transparent(w: u32, h: u32) -> Vec<u8> {
    let px: Vec<u8> = (0..h)
        .flat_map(|_| {
            (0..w).flat_map(move |x| {
                if x < w / 2 {
                    [220, 30, 30, 255]
                } else {
                    [0, 0, 0, 0]
                }
            })
        })
        .collect();
    png_rgba(w, h, &px)
}

/// A PNG of the given pixels in any colour type `image` writes (grey, grey+alpha, 16-bit...).
pub fn png_of(w: u32, h: u32, color: image::ExtendedColorType, px: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(px, w, h, color)
        .expect("encode fixture");
    out
}

/// An RGBA PNG of the given pixels.
pub fn png_rgba(w: u32, h: u32, px: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(px, w, h, image::ExtendedColorType::Rgba8)
        .expect("encode fixture");
    out
}

/// A GIF with a gradient.
pub fn gif(w: u32, h: u32) -> Vec<u8> {
    let rgba: Vec<u8> = gradient_rgb(w, h)
        .chunks_exact(3)
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect();
    let mut out = Vec::new();
    image::codecs::gif::GifEncoder::new(&mut out)
        .encode(&rgba, w, h, image::ExtendedColorType::Rgba8)
        .expect("encode fixture");
    out
}

/// A lossless WebP (`VP8L`) with a gradient.
pub fn webp_lossless(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut out)
        .write_image(&gradient_rgb(w, h), w, h, image::ExtendedColorType::Rgb8)
        .expect("encode fixture");
    out
}

/// A lossy WebP (`VP8 `) with a gradient.
pub fn webp_lossy(w: u32, h: u32) -> Vec<u8> {
    webp::Encoder::from_rgb(&gradient_rgb(w, h), w, h)
        .encode_simple(false, 90.0)
        .expect("encode fixture")
        .to_vec()
}

/// CRC-32 (IEEE) as PNG chunks use it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    let mut covered = kind.to_vec();
    covered.extend_from_slice(data);
    chunk.extend_from_slice(&crc32(&covered).to_be_bytes());
    chunk
}

/// A PNG signature and a valid `IHDR` claiming `w` x `h`, and nothing else: a bomb's header.
pub fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png
}

/// A PNG whose headers (`IHDR` with this bit depth and colour type, the start of `IDAT`) pass
/// every header check but whose pixel data is a stub: decoding it fails as corrupt, so a
/// test using it shows that a refusal came before decoding.
pub fn png_headers(w: u32, h: u32, depth: u8, colour: u8) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, colour, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    // A zlib header and one empty stored block: valid, far too short.
    png.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x01, 0x00, 0x00, 0x00, 0xff, 0xff],
    ));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

/// `png` with an `eXIf` chunk carrying `orientation`, right after `IHDR`.
pub fn png_with_exif(png: &[u8], orientation: u16) -> Vec<u8> {
    let after_ihdr = 8 + 25;
    let mut out = png[..after_ihdr].to_vec();
    out.extend(png_chunk(b"eXIf", &tiff_exif(orientation, None)));
    out.extend_from_slice(&png[after_ihdr..]);
    out
}

/// A JPEG whose frame header claims `w` x `h` (at most 65535), with no data behind it.
pub fn jpeg_header_only(w: u16, h: u16) -> Vec<u8> {
    let mut jpeg = vec![0xFF, 0xD8];
    jpeg.extend_from_slice(&[0xFF, 0xC0, 0, 17, 8]);
    jpeg.extend_from_slice(&h.to_be_bytes());
    jpeg.extend_from_slice(&w.to_be_bytes());
    jpeg.extend_from_slice(&[3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0]);
    jpeg
}

/// A big-endian TIFF block with Orientation, optionally Make and Model, and a GPS IFD (so
/// tests can check that location never leaks).
pub fn tiff_exif(orientation: u16, make_model: Option<(&str, &str)>) -> Vec<u8> {
    let mut strings: Vec<(u16, Vec<u8>)> = Vec::new();
    if let Some((make, model)) = make_model {
        strings.push((0x010F, [make.as_bytes(), b"\0"].concat()));
        strings.push((0x0110, [model.as_bytes(), b"\0"].concat()));
    }
    let entries = strings.len() + 2; // + Orientation + GPS pointer
    let ifd_end = 8 + 2 + 12 * entries + 4;
    let mut data_area: Vec<u8> = Vec::new();
    let mut ifd: Vec<u8> = (entries as u16).to_be_bytes().to_vec();
    for (tag, text) in &strings {
        ifd.extend_from_slice(&tag.to_be_bytes());
        ifd.extend_from_slice(&2u16.to_be_bytes()); // ASCII
        ifd.extend_from_slice(&(text.len() as u32).to_be_bytes());
        ifd.extend_from_slice(&((ifd_end + data_area.len()) as u32).to_be_bytes());
        data_area.extend_from_slice(text);
    }
    ifd.extend_from_slice(&0x0112u16.to_be_bytes());
    ifd.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    ifd.extend_from_slice(&1u32.to_be_bytes());
    ifd.extend_from_slice(&orientation.to_be_bytes());
    ifd.extend_from_slice(&[0, 0]);
    let gps_at = ifd_end + data_area.len();
    ifd.extend_from_slice(&0x8825u16.to_be_bytes());
    ifd.extend_from_slice(&4u16.to_be_bytes()); // LONG
    ifd.extend_from_slice(&1u32.to_be_bytes());
    ifd.extend_from_slice(&(gps_at as u32).to_be_bytes());
    ifd.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    // GPS IFD: GPSLatitudeRef = "N".
    data_area.extend_from_slice(&1u16.to_be_bytes());
    data_area.extend_from_slice(&[0x00, 0x01, 0x00, 0x02, 0, 0, 0, 2, b'N', 0, 0, 0]);
    data_area.extend_from_slice(&0u32.to_be_bytes());

    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
    tiff.extend(ifd);
    tiff.extend(data_area);
    tiff
}

/// `jpeg` with an EXIF APP1 segment inserted right after SOI.
pub fn with_exif(jpeg: &[u8], orientation: u16, make_model: Option<(&str, &str)>) -> Vec<u8> {
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend(tiff_exif(orientation, make_model));
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend(payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A baseline 4-component (CMYK) JPEG of four flat quadrants, each given as ink amounts
/// (C, M, Y, K; 0 = no ink), stored inverted as Adobe does. Every 8x8 block carries only its
/// DC coefficient, so the file is a few dozen lines of writer. `adobe` adds an APP14 marker
/// with that colour transform. `w` and `h` must be multiples of 16.
pub fn jpeg_cmyk(w: u16, h: u16, inks: [[u8; 4]; 4], adobe: Option<u8>) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    if let Some(transform) = adobe {
        out.extend_from_slice(&[0xFF, 0xEE, 0, 14]);
        out.extend_from_slice(b"Adobe");
        out.extend_from_slice(&[0, 100, 0, 0, 0, 0, transform]);
    }
    // Quantisation table 0: all ones.
    out.extend_from_slice(&[0xFF, 0xDB, 0, 67, 0]);
    out.extend_from_slice(&[1; 64]);
    // Frame: 8-bit, four components, no subsampling, table 0.
    out.extend_from_slice(&[0xFF, 0xC0, 0, 8 + 3 * 4, 8]);
    out.extend_from_slice(&h.to_be_bytes());
    out.extend_from_slice(&w.to_be_bytes());
    out.push(4);
    for id in 1..=4 {
        out.extend_from_slice(&[id, 0x11, 0]);
    }
    // DC table 0: categories 0..=11, each a 4-bit code equal to the category.
    out.extend_from_slice(&[0xFF, 0xC4, 0, 2 + 1 + 16 + 12, 0x00]);
    out.extend_from_slice(&[0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend(0..12u8);
    // AC table 0: only end-of-block, code "0".
    out.extend_from_slice(&[0xFF, 0xC4, 0, 2 + 1 + 16 + 1, 0x10]);
    out.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    // Scan: all four components interleaved.
    out.extend_from_slice(&[0xFF, 0xDA, 0, 6 + 2 * 4, 4]);
    for id in 1..=4 {
        out.extend_from_slice(&[id, 0x00]);
    }
    out.extend_from_slice(&[0, 63, 0]);

    let mut bits = BitWriter::default();
    let mut previous = [0i32; 4];
    let (bw, bh) = (w / 8, h / 8);
    for by in 0..bh {
        for bx in 0..bw {
            let quadrant = usize::from(bx >= bw / 2) + 2 * usize::from(by >= bh / 2);
            for (c, prev) in previous.iter_mut().enumerate() {
                let stored = 255 - i32::from(inks[quadrant][c]);
                let dc = 8 * (stored - 128);
                let diff = dc - *prev;
                *prev = dc;
                let category = 32 - diff.unsigned_abs().leading_zeros();
                bits.put(category, 4);
                if category > 0 {
                    let value = if diff < 0 {
                        diff + (1 << category) - 1
                    } else {
                        diff
                    };
                    bits.put(value as u32, category);
                }
                bits.put(0, 1); // end of block
            }
        }
    }
    out.extend(bits.finish());
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u32,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, value: u32, count: u32) {
        for i in (0..count).rev() {
            self.acc = (self.acc << 1) | ((value >> i) & 1);
            self.n += 1;
            if self.n == 8 {
                let byte = self.acc as u8;
                self.out.push(byte);
                if byte == 0xFF {
                    self.out.push(0); // byte stuffing
                }
                self.acc = 0;
                self.n = 0;
            }
        }
    }

    fn finish(mut self) -> Vec<u8> {
        while self.n != 0 {
            self.put(1, 1);
        }
        self.out
    }
}

/// A file from `tests/fixtures/imaging/` (real-world cases and files made with ImageMagick;
/// see the README there).
pub fn file(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/imaging")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The ICC profile embedded in a PNG.
pub fn png_icc(png: &[u8]) -> Vec<u8> {
    use image::ImageDecoder;
    image::codecs::png::PngDecoder::new(std::io::Cursor::new(png))
        .expect("png")
        .icc_profile()
        .expect("icc")
        .expect("profile present")
}

/// A 64x64 lossless WebP of four flat quadrants (`colours` in reading order) carrying `icc`
/// in an `ICCP` chunk.
pub fn webp_with_icc(colours: [[u8; 3]; 4], icc: Vec<u8>) -> Vec<u8> {
    let px: Vec<u8> = (0..64u32)
        .flat_map(|y| (0..64u32).map(move |x| (x / 32 + 2 * (y / 32)) as usize))
        .flat_map(|q| colours[q])
        .collect();
    let mut out = Vec::new();
    let mut encoder = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
    encoder.set_icc_profile(icc).expect("webp takes a profile");
    encoder
        .write_image(&px, 64, 64, image::ExtendedColorType::Rgb8)
        .expect("encode fixture");
    out
}

/// A 64x64 animated GIF: frame 1 is a 32x32 red square at (16, 16), the rest of the canvas
/// left transparent; frame 2 is all blue.
pub fn gif_animated() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = gif::Encoder::new(&mut out, 64, 64, &[]).expect("gif");
        let mut red = gif::Frame::from_rgba(32, 32, &mut [220, 20, 20, 255].repeat(32 * 32));
        red.left = 16;
        red.top = 16;
        red.delay = 50;
        encoder.write_frame(&red).expect("frame");
        let mut blue = gif::Frame::from_rgba(64, 64, &mut [20, 20, 220, 255].repeat(64 * 64));
        blue.delay = 50;
        encoder.write_frame(&blue).expect("frame");
    }
    out
}

/// A 64x64 animated WebP (libwebp's animation encoder): red, then blue.
pub fn webp_animated() -> Vec<u8> {
    let config = webp::WebPConfig::new().expect("config");
    let red = [220, 20, 20, 255].repeat(64 * 64);
    let blue = [20, 20, 220, 255].repeat(64 * 64);
    let mut encoder = webp::AnimEncoder::new(64, 64, &config);
    encoder.add_frame(webp::AnimFrame::from_rgba(&red, 64, 64, 0));
    encoder.add_frame(webp::AnimFrame::from_rgba(&blue, 64, 64, 500));
    encoder.try_encode().expect("animated webp").to_vec()
}

/// A 64x64 APNG: the default image (also the first frame) red, the second frame blue.
pub fn apng() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, 64, 64);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_animated(2, 0).expect("animated");
        let mut writer = encoder.write_header().expect("header");
        writer
            .write_image_data(&[220, 20, 20].repeat(64 * 64))
            .expect("frame 1");
        writer
            .write_image_data(&[20, 20, 220].repeat(64 * 64))
            .expect("frame 2");
        writer.finish().expect("finish");
    }
    out
}

/// A 64x64 RGB PNG of four flat quadrants (`colours` in reading order) with `chunks`
/// (type, data) inserted right after `IHDR`.
pub fn png_quadrants_with(colours: [[u8; 3]; 4], chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let px: Vec<u8> = (0..64u32)
        .flat_map(|y| (0..64u32).map(move |x| (x / 32 + 2 * (y / 32)) as usize))
        .flat_map(|q| colours[q])
        .collect();
    let png = png_of(64, 64, image::ExtendedColorType::Rgb8, &px);
    let after_ihdr = 8 + 25;
    let mut out = png[..after_ihdr].to_vec();
    for (kind, data) in chunks {
        out.extend(png_chunk(kind, data));
    }
    out.extend_from_slice(&png[after_ihdr..]);
    out
}
