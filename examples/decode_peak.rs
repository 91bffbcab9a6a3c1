//! Renders one file as the upload job does (128 and 512, JPEG-or-PNG and WebP) and prints the
//! outcome, the decode estimate and the time taken: for measuring worst cases with
//! `/usr/bin/time -v` (peak RSS). Limits come from `AVATAR_MAX_JPEG_SCANS` and
//! `AVATAR_MAX_DECODE_BYTES` when set, else the defaults.
//!
//! `cargo run --example decode_peak -- FILE`

use std::time::Instant;

use avatar_proxy::imaging::{self, Limits, OutputFormat, Preferred};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: decode_peak FILE")?;
    let bytes = std::fs::read(&path)?;
    let mut limits = Limits::default();
    if let Ok(v) = std::env::var("AVATAR_MAX_JPEG_SCANS") {
        limits.max_jpeg_scans = v.parse()?;
    }
    if let Ok(v) = std::env::var("AVATAR_MAX_DECODE_BYTES") {
        limits.max_decode_bytes = v.parse()?;
    }
    let sizes = [128, 512];
    let estimate = imaging::decode_estimate(&bytes, &limits, None, &sizes);
    let started = Instant::now();
    let result = imaging::render(
        &bytes,
        &limits,
        None,
        &sizes,
        &[Preferred::JpegOrPng, Preferred::Exactly(OutputFormat::Webp)],
    );
    let took = started.elapsed();
    match result {
        Ok(rendered) => println!(
            "{path}: rendered {} variants in {took:?}; estimate {estimate:?} bytes",
            rendered.variants.len()
        ),
        Err(e) => println!(
            "{path}: {} ({e}) after {took:?}; estimate {estimate:?}",
            e.code()
        ),
    }
    Ok(())
}
