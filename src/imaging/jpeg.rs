//! JPEG structure: one walk over the markers, before any decoder runs.
//!
//! The walk gives two things the decoder does not:
//!
//! - **Work and memory, up front.** Each `SOS` marker starts a scan, and a progressive
//!   decoder passes over the whole coefficient buffer once per scan: a 420 KB file with 5000
//!   scans of a 7000x7000 image is 23 s of CPU. Real encoders write 1 scan (baseline) or about
//!   10 (libjpeg's and mozjpeg's progressive scripts; jpegtran's most elaborate ones stay under
//!   30), so [`Structure::scans`] is checked against `Limits::max_jpeg_scans` (libjpeg-turbo's
//!   documented defence: `-maxscans` / `TJPARAM_SCANLIMIT`). The frame header (components,
//!   sampling, precision) feeds the memory estimate.
//! - **Truncated files, decoded as far as the data goes.** libjpeg, libvips and browsers show
//!   a JPEG whose end is missing (no `EOI`, a final scan cut short, a cut inside a header
//!   between progressive scans) with the missing part grey or at the precision reached.
//!   jpeg-decoder instead fails on the unexpected end of input. [`Structure::repaired`] gives
//!   it a stream ending the way libjpeg pretends it does: the complete part, then the restart
//!   markers the rest of the interrupted scan would have had, then `EOI`. Its Huffman reader
//!   then fills the missing bits with zeros, exactly like libjpeg's. A file cut before its
//!   first scan's data is still corrupt.

use std::borrow::Cow;

use crate::imaging::ImagingError;

/// One image component of the frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Component {
    pub id: u8,
    pub h: u8,
    pub v: u8,
}

/// What the markers say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Structure {
    /// Number of `SOS` markers (scans), complete or not.
    pub scans: u32,
    /// `SOF2`, `SOF6`, `SOF10` or `SOF14`: the decoder keeps every coefficient in memory.
    pub progressive: bool,
    /// `SOF3`, `SOF7`, `SOF11` or `SOF15`: no DCT, so no scaled decoding.
    pub lossless: bool,
    /// Sample precision in bits (8, or 12/16 for extended and lossless JPEGs).
    pub precision: u8,
    pub width: u32,
    pub height: u32,
    pub components: Vec<Component>,
    /// Where the file ends early, and what to append for a decoder to see a complete stream;
    /// `None` when the stream reaches `EOI` (or is something the walk does not understand,
    /// which is left to the decoder to judge).
    truncation: Option<Truncation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Truncation {
    /// Bytes kept from the input.
    keep: usize,
    /// Restart markers to append (numbered from `next_rst`) before `EOI`.
    missing_rsts: u32,
    next_rst: u8,
}

impl Structure {
    /// Whether the file ends before its `EOI` marker.
    #[cfg(test)]
    pub fn truncated(&self) -> bool {
        self.truncation.is_some()
    }

    /// The stream a decoder should see: `bytes` itself when it is complete, otherwise its
    /// complete part closed as libjpeg closes a truncated file (see the module docs).
    pub fn repaired<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let Some(t) = &self.truncation else {
            return Cow::Borrowed(bytes);
        };
        let mut out = Vec::with_capacity(t.keep + 2 * t.missing_rsts as usize + 2);
        out.extend_from_slice(&bytes[..t.keep.min(bytes.len())]);
        for i in 0..t.missing_rsts {
            out.extend_from_slice(&[0xFF, 0xD0 + ((u32::from(t.next_rst) + i) % 8) as u8]);
        }
        out.extend_from_slice(&[0xFF, 0xD9]);
        Cow::Owned(out)
    }

    /// Refuses a file with more scans than `limit`.
    pub fn check_scans(&self, limit: u32) -> Result<(), ImagingError> {
        if self.scans > limit {
            return Err(ImagingError::TooComplex(format!(
                "JPEG has {} scans; at most {limit} are accepted",
                self.scans
            )));
        }
        Ok(())
    }

    fn max_sampling(&self) -> (u32, u32) {
        let h = self.components.iter().map(|c| c.h).max().unwrap_or(1);
        let v = self.components.iter().map(|c| c.v).max().unwrap_or(1);
        (u32::from(h.max(1)), u32::from(v.max(1)))
    }

    /// 8x8 blocks of component `c` covering the image (what a decoder allocates per
    /// component, padded to whole MCUs).
    pub fn blocks(&self, c: &Component) -> u64 {
        let (hmax, vmax) = self.max_sampling();
        let mcus_x = u64::from(self.width.div_ceil(8 * hmax));
        let mcus_y = u64::from(self.height.div_ceil(8 * vmax));
        mcus_x * u64::from(c.h) * mcus_y * u64::from(c.v)
    }

    /// MCUs in a scan of `ids` (a one-component scan is not interleaved: one block an MCU).
    fn scan_mcus(&self, ids: &[u8]) -> u64 {
        let (hmax, vmax) = self.max_sampling();
        match ids {
            [id] => {
                let Some(c) = self.components.iter().find(|c| c.id == *id) else {
                    return 0;
                };
                let w = (u64::from(self.width) * u64::from(c.h)).div_ceil(u64::from(hmax));
                let h = (u64::from(self.height) * u64::from(c.v)).div_ceil(u64::from(vmax));
                w.div_ceil(8) * h.div_ceil(8)
            }
            _ => {
                u64::from(self.width.div_ceil(8 * hmax)) * u64::from(self.height.div_ceil(8 * vmax))
            }
        }
    }
}

fn be16(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at + 2)?;
    Some(usize::from(u16::from_be_bytes([b[0], b[1]])))
}

fn is_sof(marker: u8) -> bool {
    matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

/// Walks the markers of `bytes` (which start with `FF D8`), without decoding anything.
pub(crate) fn walk(bytes: &[u8]) -> Structure {
    let mut s = Structure::default();
    let mut restart_interval = 0u64;
    let mut pos = 2;
    loop {
        // A file may end cleanly between two segments: after a scan, that is a truncation.
        if pos >= bytes.len() {
            s.truncation = truncate_at(&s, pos, 0, 0);
            return s;
        }
        if bytes[pos] != 0xFF {
            // Not a marker where one must be: the decoder judges (and says what is wrong).
            return s;
        }
        // Fill bytes (B.1.1.2) before the marker code.
        let mut code_at = pos + 1;
        while bytes.get(code_at) == Some(&0xFF) {
            code_at += 1;
        }
        let Some(&marker) = bytes.get(code_at) else {
            s.truncation = truncate_at(&s, pos, 0, 0);
            return s;
        };
        match marker {
            0xD9 => return s,
            0x01 | 0xD0..=0xD8 => {
                pos = code_at + 1;
                continue;
            }
            _ => {}
        }
        let segment = code_at + 1;
        let Some(length) = be16(bytes, segment).filter(|&l| l >= 2) else {
            s.truncation = truncate_at(&s, pos, 0, 0);
            return s;
        };
        let end = segment + length;
        let Some(body) = bytes.get(segment + 2..end) else {
            // A segment cut short: keep what came before it.
            s.truncation = truncate_at(&s, pos, 0, 0);
            return s;
        };
        if is_sof(marker) {
            s.progressive = matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE);
            s.lossless = matches!(marker, 0xC3 | 0xC7 | 0xCB | 0xCF);
            if let [precision, h1, h0, w1, w0, count, rest @ ..] = body {
                s.precision = *precision;
                s.height = u32::from(u16::from_be_bytes([*h1, *h0]));
                s.width = u32::from(u16::from_be_bytes([*w1, *w0]));
                s.components = rest
                    .chunks_exact(3)
                    .take(usize::from(*count))
                    .map(|c| Component {
                        id: c[0],
                        h: c[1] >> 4,
                        v: c[1] & 0x0F,
                    })
                    .collect();
            }
        } else if marker == 0xDD {
            restart_interval = be16(body, 0).unwrap_or(0) as u64;
        } else if marker == 0xDA {
            s.scans = s.scans.saturating_add(1);
            let count = usize::from(body.first().copied().unwrap_or(0));
            let ids: Vec<u8> = body
                .get(1..)
                .unwrap_or_default()
                .chunks_exact(2)
                .take(count)
                .map(|c| c[0])
                .collect();
            // Entropy-coded data runs to the next marker that is neither stuffing (FF 00)
            // nor a restart marker.
            let mut at = end;
            let mut rsts = 0u32;
            loop {
                let Some(offset) = bytes
                    .get(at..)
                    .and_then(|d| d.iter().position(|&b| b == 0xFF))
                else {
                    // The data stops inside this scan.
                    let missing = missing_rsts(&s, &ids, restart_interval, rsts);
                    s.truncation = truncate_at(&s, bytes.len(), missing, (rsts % 8) as u8);
                    return s;
                };
                let ff = at + offset;
                match bytes.get(ff + 1) {
                    None => {
                        // A lone FF at the very end: half a marker, dropped.
                        let missing = missing_rsts(&s, &ids, restart_interval, rsts);
                        s.truncation = truncate_at(&s, ff, missing, (rsts % 8) as u8);
                        return s;
                    }
                    Some(0x00) | Some(0xFF) => at = ff + 1,
                    Some(0xD0..=0xD7) => {
                        rsts = rsts.saturating_add(1);
                        at = ff + 2;
                    }
                    Some(_) => {
                        pos = ff;
                        break;
                    }
                }
            }
            continue;
        }
        pos = end;
    }
}

/// Restart markers the rest of an interrupted scan would have carried.
fn missing_rsts(s: &Structure, ids: &[u8], interval: u64, seen: u32) -> u32 {
    if interval == 0 {
        return 0;
    }
    let intervals = s.scan_mcus(ids).div_ceil(interval);
    let expected = u32::try_from(intervals.saturating_sub(1)).unwrap_or(u32::MAX);
    // More than the frame could ever need means the header lies; let the decoder judge.
    expected.saturating_sub(seen).min(1 << 20)
}

/// A truncation keeping `keep` bytes, or `None` when no scan has started: a file without any
/// image data is corrupt, not truncated.
fn truncate_at(s: &Structure, keep: usize, missing_rsts: u32, next_rst: u8) -> Option<Truncation> {
    (s.scans > 0).then_some(Truncation {
        keep,
        missing_rsts,
        next_rst,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::fixtures::{self, near};
    use crate::imaging::{Limits, OutputFormat, Preferred, probe, render};

    /// Renders at 64x64 and reads the centres of the four quadrants.
    fn quadrants(bytes: &[u8]) -> Result<[[u8; 3]; 4], ImagingError> {
        let rendered = render(
            bytes,
            &Limits::default(),
            None,
            &[64],
            &[Preferred::Exactly(OutputFormat::Png)],
        )?;
        let img = image::load_from_memory(&rendered.variants[0].1.bytes)
            .expect("png")
            .to_rgb8();
        Ok([(16, 16), (48, 16), (16, 48), (48, 48)].map(|(x, y)| img.get_pixel(x, y).0))
    }

    // The patches of the cjpeg-made fixtures (ImageMagick's `q.png`, see the README there).
    const PATCHES: [[u8; 3]; 4] = [[200, 60, 50], [60, 170, 60], [230, 140, 30], [30, 150, 150]];

    #[test]
    fn a_jpeg_without_its_end_of_image_marker_renders_like_libjpeg_shows_it() {
        let jpeg = fixtures::file("jpeg-missing-eoi.jpg");
        assert!(walk(&jpeg).truncated());
        assert!(probe(&jpeg, &Limits::default()).is_ok());
        // What djpeg / ImageMagick decode (with "Premature end of JPEG file").
        let want = [[220, 30, 30], [30, 179, 59], [30, 60, 220], [239, 220, 20]];
        let got = quadrants(&jpeg).expect("renders");
        for (g, w) in got.iter().zip(&want) {
            assert!(near(g, w, 8), "{got:?}");
        }
    }

    #[test]
    fn a_baseline_jpeg_cut_inside_a_restart_interval_renders_what_arrived() {
        // 128x128 (cjpeg -restart 1: one interval per 16-pixel MCU row), data from byte 629.
        let jpeg = fixtures::file("baseline-restart.jpg");
        assert!(!walk(&jpeg).truncated());
        for keep in [900, jpeg.len() - 1, jpeg.len() - 2] {
            let cut = &jpeg[..keep];
            assert!(walk(cut).truncated(), "kept {keep}");
            let got = quadrants(cut).unwrap_or_else(|e| panic!("kept {keep}: {e}"));
            assert!(near(&got[0], &PATCHES[0], 8), "kept {keep}: {got:?}");
            assert!(near(&got[1], &PATCHES[1], 8), "kept {keep}: {got:?}");
        }
        // Cut in the third MCU row: what never arrived is mid-grey, as djpeg shows it.
        let got = quadrants(&jpeg[..738]).expect("renders");
        assert!(near(&got[0], &PATCHES[0], 8), "{got:?}");
        assert!(near(&got[2], &[128; 3], 4), "{got:?}");
        assert!(near(&got[3], &[128; 3], 4), "{got:?}");
    }

    #[test]
    fn a_progressive_jpeg_cut_in_a_later_scan_or_header_renders_the_whole_picture() {
        // Ten scans with restart markers; every cut after the first complete scans (DC of
        // all components) still has every patch, at the precision reached.
        let jpeg = fixtures::file("progressive-restart.jpg");
        let sos: Vec<usize> = jpeg
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w == &[0xFF, 0xDA])
            .map(|(i, _)| i)
            .collect();
        assert_eq!(sos.len(), 10);
        // Inside the 6th scan's header, inside its data, between scans, and without EOI.
        for keep in [sos[5] + 3, sos[5] + 30, sos[7], jpeg.len() - 2] {
            let got = quadrants(&jpeg[..keep]).unwrap_or_else(|e| panic!("kept {keep}: {e}"));
            for (g, w) in got.iter().zip(&PATCHES) {
                assert!(near(g, w, 24), "kept {keep}: {got:?}");
            }
        }
    }

    #[test]
    fn a_jpeg_cut_before_its_first_scan_is_still_corrupt() {
        let jpeg = fixtures::file("baseline-restart.jpg");
        let sos = jpeg
            .windows(2)
            .position(|w| w == [0xFF, 0xDA])
            .expect("SOS");
        for keep in [100, sos, sos + 5] {
            let cut = &jpeg[..keep];
            assert!(!walk(cut).truncated(), "kept {keep}");
            assert!(
                matches!(quadrants(cut), Err(ImagingError::Corrupt(_))),
                "kept {keep}"
            );
        }
    }

    #[test]
    fn a_progressive_jpeg_with_thousands_of_scans_is_refused_before_decoding() {
        // 7000x7000 grey, 5001 scans, 420 KB: 23 s of decoding before this check existed.
        let jpeg = fixtures::file("progressive-5000-scans.jpg");
        let structure = walk(&jpeg);
        assert_eq!(structure.scans, 5001);
        assert!(structure.progressive);
        let refused = probe(&jpeg, &Limits::default());
        assert!(
            matches!(&refused, Err(ImagingError::TooComplex(m)) if m.contains("5001 scans")),
            "{refused:?}"
        );
        let rendered = quadrants(&jpeg);
        assert!(matches!(rendered, Err(ImagingError::TooComplex(_))));
        assert_eq!(rendered.expect_err("refused").code(), "image-too-complex");
    }

    #[test]
    fn the_scan_limit_is_a_setting_and_real_progressive_files_are_within_the_default() {
        let progressive = fixtures::file("progressive-restart.jpg");
        assert_eq!(walk(&progressive).scans, 10);
        assert!(quadrants(&progressive).is_ok());
        let tight = Limits {
            max_jpeg_scans: 9,
            ..Limits::default()
        };
        assert!(matches!(
            probe(&progressive, &tight),
            Err(ImagingError::TooComplex(_))
        ));
        let baseline = fixtures::jpeg_quadrants(32, 32);
        assert_eq!(walk(&baseline).scans, 1);
        assert!(
            probe(
                &baseline,
                &Limits {
                    max_jpeg_scans: 1,
                    ..Limits::default()
                }
            )
            .is_ok()
        );
    }
}
