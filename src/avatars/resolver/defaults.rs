//! Generated defaults (identicon, mystery person, initials, blank) and the `d=404` answer.

use super::*;

impl Avatars {
    /// The generated default, or the `d=404` answer.
    pub(super) async fn default_rendition(
        &self,
        rkey: &RenditionKey,
        user_key: Option<&UserKey>,
        display_name: Option<&str>,
    ) -> Result<(Rendition, CacheStatus), Arc<ResolveError>> {
        let now = self.0.clock.now_millis();
        let fresh_until = now.saturating_add(millis(self.0.settings.negative_ttl));
        let style = match rkey.default {
            DefaultChoice::NotFound => {
                return Ok((not_found_rendition(fresh_until), CacheStatus::Miss));
            }
            DefaultChoice::Style(style) => style,
        };
        // Invalid keys share one seed, so garbage URLs cannot make us render endless images.
        let seed = user_key.map(|k| k.as_str().to_owned()).unwrap_or_default();
        let name = display_name.map(str::to_owned);
        // Generated images have hard edges and flat colours: PNG unless a format was asked for.
        let preferred = match rkey.format {
            FormatChoice::Auto => imaging::Preferred::Exactly(imaging::OutputFormat::Png),
            FormatChoice::Exactly(f) => imaging::Preferred::Exactly(f),
        };
        let size = rkey.size;
        let encoded = self
            .image_work(move || {
                imaging::render_default(style, seed.as_bytes(), name.as_deref(), size, preferred)
            })
            .await
            .map_err(Arc::new)?;
        let rendition = Rendition::generated(encoded, fresh_until);
        Ok((rendition, CacheStatus::Miss))
    }
}

pub(super) fn not_found_rendition(fresh_until: Millis) -> Rendition {
    let body = Bytes::from_static(
        br#"{"code":"not-found","message":"no avatar for this key","user_message":"No picture"}"#,
    );
    Rendition {
        found: false,
        etag: etag_from_digest(&hex::encode(Sha256::digest(&body))),
        bytes: body,
        content_type: "application/json",
        last_modified: None,
        source: SourceKind::Default,
        version: None,
        source_key: None,
        fresh_until,
        stale_until: fresh_until,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_404_answer_is_a_json_error_that_expires_with_the_negative_ttl() {
        let r = not_found_rendition(42);
        assert!(!r.found);
        assert_eq!(r.content_type, "application/json");
        assert_eq!((r.fresh_until, r.stale_until), (42, 42));
        let body: serde_json::Value = serde_json::from_slice(&r.bytes).expect("json");
        assert_eq!(body["code"], "not-found");
    }
}
