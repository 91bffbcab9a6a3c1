//! Renders one image file into avatar variants, the way an upload job does: for the
//! side-by-side timing against `vipsthumbnail` in `benches/imaging_vs_vips.sh`.
//!
//! ```text
//! render_file IN.jpg OUT_DIR [--sizes 128,512] [--crop X,Y,W,H]
//! render_file --make-fixture OUT.jpg      # the synthetic 12 MP, ~2 MB photo of the benches
//! ```

#[path = "../benches/support/photo.rs"]
mod photo;

use std::path::PathBuf;
use std::process::ExitCode;

use avatar_proxy::imaging::{Crop, Limits, OutputFormat, Preferred, render};

fn numbers(text: &str) -> Result<Vec<u32>, String> {
    text.split(',')
        .map(|n| n.trim().parse().map_err(|e| format!("{n:?}: {e}")))
        .collect()
}

fn run(args: Vec<String>) -> Result<(), String> {
    if let [flag, path] = args.as_slice()
        && flag == "--make-fixture"
    {
        let jpeg = photo::photo_jpeg(4000, 3000, 90);
        std::fs::write(path, &jpeg).map_err(|e| format!("{path}: {e}"))?;
        println!("wrote {path}: 4000x3000, {} bytes", jpeg.len());
        return Ok(());
    }
    let mut positional = Vec::new();
    let mut sizes = vec![128, 512];
    let mut crop = None;
    let mut rest = args.into_iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--sizes" => sizes = numbers(&rest.next().ok_or("--sizes needs a value")?)?,
            "--crop" => {
                let [x, y, width, height] = numbers(&rest.next().ok_or("--crop needs a value")?)?
                    .try_into()
                    .map_err(|_| "--crop needs X,Y,W,H")?;
                crop = Some(Crop {
                    x,
                    y,
                    width,
                    height,
                });
            }
            _ => positional.push(arg),
        }
    }
    let [input, out_dir] = positional.try_into().map_err(
        |_| "usage: render_file IN OUT_DIR [--sizes 128,512] [--crop X,Y,W,H] | --make-fixture OUT",
    )?;
    let bytes = std::fs::read(&input).map_err(|e| format!("{input}: {e}"))?;
    let formats = [Preferred::JpegOrPng, Preferred::Exactly(OutputFormat::Webp)];
    let rendered = render(&bytes, &Limits::default(), crop, &sizes, &formats)
        .map_err(|e| format!("{input}: {e}"))?;
    let out_dir = PathBuf::from(out_dir);
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    for (size, encoded) in &rendered.variants {
        let path = out_dir.join(format!("{size}.{}", encoded.format.extension()));
        std::fs::write(&path, &encoded.bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("render_file: {message}");
            ExitCode::FAILURE
        }
    }
}
