//! What `/avatar` serves when the resolver could not answer (its request timeout passed, the
//! image workers are saturated, a task failed): an `<img>` still gets an image.
//!
//! First the generated default for the key (identicon, mp, ... as the request asked), within
//! `AVATAR_FALLBACK_TIMEOUT`; failing that, a default pre-rendered at start-up for every served
//! size and kept in memory. `d=404` keeps its 404. Only if not even the pre-rendered image exists
//! does the caller answer a JSON 503.

use std::sync::Arc;
use std::time::Duration;

use super::rendition::{Rendition, RenditionKey};
use super::request::DefaultChoice;
use super::resolver::Avatars;
use crate::imaging::{self, DefaultStyle, OutputFormat, Preferred};

/// Defaults rendered once, one per served size, ascending.
#[derive(Debug, Default)]
pub struct Fallback {
    images: Vec<(u32, Arc<Rendition>)>,
}

impl Fallback {
    /// Render the configured default style (the silhouette when the default is `404`) as PNG at
    /// every size in `sizes`. Sizes that fail to render are skipped (logged).
    pub fn new(sizes: &[u32], default: DefaultChoice) -> Self {
        let style = match default {
            DefaultChoice::Style(style) => style,
            DefaultChoice::NotFound => DefaultStyle::MysteryPerson,
        };
        let mut images = Vec::new();
        for &size in sizes {
            let preferred = Preferred::Exactly(OutputFormat::Png);
            match imaging::render_default(style, b"", None, size, preferred) {
                Ok(encoded) => {
                    let rendition = Rendition::generated(encoded, 0);
                    images.push((size, Arc::new(rendition)));
                }
                Err(e) => {
                    tracing::error!(size, error = %e, "cannot pre-render the fallback default")
                }
            }
        }
        images.sort_by_key(|(s, _)| *s);
        Self { images }
    }

    /// The pre-rendered default closest to `size` (the next larger one, else the largest).
    pub fn for_size(&self, size: u32) -> Option<Arc<Rendition>> {
        self.images
            .iter()
            .find(|(s, _)| *s >= size)
            .or(self.images.last())
            .map(|(_, r)| r.clone())
    }
}

/// The answer for a request whose resolution failed: the key's generated default within
/// `budget` (zero: straight to the pre-rendered one), else the pre-rendered one. `None` only
/// when neither exists.
pub async fn rescue(
    avatars: &Avatars,
    rkey: &RenditionKey,
    budget: Duration,
) -> Option<Arc<Rendition>> {
    if budget.is_zero() && rkey.default != DefaultChoice::NotFound {
        return avatars.fallback().for_size(rkey.size);
    }
    // `d=404` needs no image work: its answer always comes back here.
    match tokio::time::timeout(budget, avatars.default_for(rkey)).await {
        Ok(Ok(rendition)) => Some(rendition),
        _ => avatars.fallback().for_size(rkey.size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_size_has_a_pre_rendered_png() {
        let f = Fallback::new(
            &[32, 128, 512],
            DefaultChoice::Style(DefaultStyle::Identicon),
        );
        for (asked, side) in [(16, 32), (32, 32), (100, 128), (512, 512), (9999, 512)] {
            let r = f.for_size(asked).expect("an image");
            let img = image::load_from_memory(&r.bytes).expect("a PNG");
            assert_eq!(img.width(), side, "asked {asked}");
        }
        let f = Fallback::new(&[64], DefaultChoice::NotFound);
        assert!(f.for_size(64).expect("an image").found);
    }
}
