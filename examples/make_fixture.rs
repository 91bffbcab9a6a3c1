//! Write the benchmark avatar (a generated 512x512 JPEG of about 38 KB, the same image the
//! criterion benches serve) to a file, for `benches/load.sh`.
//!
//! Usage: `cargo run --release --example make_fixture -- OUT.jpg`

#[allow(dead_code)]
#[path = "../benches/support/fixture.rs"]
mod fixture;

fn main() -> std::io::Result<()> {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: make_fixture OUT.jpg");
        std::process::exit(2);
    };
    let jpeg = fixture::avatar_jpeg();
    std::fs::write(&out, &jpeg)?;
    println!("{} bytes", jpeg.len());
    Ok(())
}
