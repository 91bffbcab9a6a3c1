//! Imaging benchmarks: the upload pipeline on a 12-megapixel photo, and default generation.
//!
//! `cargo bench --bench imaging`. The photo is generated once, in memory (4000x3000, about
//! 2 MB at quality 90). `benches/imaging_vs_vips.sh` times the same work as a whole process
//! next to `vipsthumbnail`.

#[path = "support/photo.rs"]
mod photo;

use std::hint::black_box;
use std::time::Duration;

use avatar_proxy::imaging::{
    Crop, DefaultStyle, Limits, OutputFormat, Preferred, render, render_default,
};
use criterion::Criterion;

/// A face-sized crop of the photo: 2400² of 4000x3000, so a 1/4 DCT decode still covers 512.
const CROP: Crop = Crop {
    x: 800,
    y: 300,
    width: 2400,
    height: 2400,
};

fn pipeline(c: &mut Criterion) {
    let jpeg = photo::photo_jpeg(4000, 3000, 90);
    let limits = Limits::default();
    let upload_formats = [Preferred::JpegOrPng, Preferred::Exactly(OutputFormat::Webp)];
    let mut group = c.benchmark_group("render_12mp");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("crop_to_128_512_jpeg_webp", |b| {
        b.iter(|| {
            render(
                black_box(&jpeg),
                &limits,
                Some(CROP),
                &[512, 128],
                &upload_formats,
            )
        })
    });
    group.bench_function("crop_to_512_jpeg", |b| {
        b.iter(|| {
            render(
                black_box(&jpeg),
                &limits,
                Some(CROP),
                &[512],
                &[Preferred::JpegOrPng],
            )
        })
    });
    group.bench_function("default_crop_to_128_jpeg", |b| {
        b.iter(|| {
            render(
                black_box(&jpeg),
                &limits,
                None,
                &[128],
                &[Preferred::JpegOrPng],
            )
        })
    });
    group.finish();
}

fn defaults(c: &mut Criterion) {
    let mut group = c.benchmark_group("default_128");
    let png = Preferred::Exactly(OutputFormat::Png);
    group.bench_function("identicon_png", |b| {
        b.iter(|| {
            render_default(
                DefaultStyle::Identicon,
                black_box(b"user-key"),
                None,
                128,
                png,
            )
        })
    });
    group.bench_function("initials_png", |b| {
        b.iter(|| {
            render_default(
                DefaultStyle::Initials,
                black_box(b"user-key"),
                Some("Ada Lovelace"),
                128,
                png,
            )
        })
    });
    group.bench_function("mp_png", |b| {
        b.iter(|| render_default(DefaultStyle::MysteryPerson, black_box(b""), None, 128, png))
    });
    group.finish();
}

// What `criterion_group!`/`criterion_main!` expand to, written out: the macros generate an
// undocumented `pub fn`, which the crate's `missing_docs` lint refuses.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    pipeline(&mut criterion);
    defaults(&mut criterion);
    criterion.final_summary();
}
