//! Redaction of URLs in printed configuration: one pass over every string value, so any
//! URL-valued setting, present or future, loses its userinfo (`user:password@`) and its query
//! (`?token=…`), where credentials travel.

/// What replaces a URL's userinfo and query.
const REDACTED: &str = "redacted";

/// `value` with every string that parses as a URL carrying userinfo or a query redacted.
pub(super) fn redact_urls(value: toml::Value) -> toml::Value {
    match value {
        toml::Value::String(s) => toml::Value::String(redact_url(&s)),
        toml::Value::Array(items) => {
            toml::Value::Array(items.into_iter().map(redact_urls).collect())
        }
        toml::Value::Table(table) => toml::Value::Table(
            table
                .into_iter()
                .map(|(k, v)| (k, redact_urls(v)))
                .collect(),
        ),
        other => other,
    }
}

/// One string: unchanged unless it is an absolute URL with userinfo or a query.
fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text.trim()) else {
        return text.to_owned();
    };
    let has_userinfo = !url.username().is_empty() || url.password().is_some();
    if !has_userinfo && url.query().is_none() {
        return text.to_owned();
    }
    if has_userinfo {
        // Fails only for URLs that cannot have userinfo, which then have none.
        let _ = url.set_password(None);
        let _ = url.set_username(REDACTED);
    }
    if url.query().is_some() {
        url.set_query(Some(REDACTED));
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn userinfo_and_query_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact_url("postgres://user:pw@db.example/avatars"),
            "postgres://redacted@db.example/avatars"
        );
        assert_eq!(
            redact_url("https://hooks.example/x?token=abc"),
            "https://hooks.example/x?redacted"
        );
        assert_eq!(
            redact_url("https://:tok@hooks.example/x?a=1#f"),
            "https://redacted@hooks.example/x?redacted#f"
        );
        for plain in [
            "https://avatars.example/",
            "dev.azure.com",
            "./avatar_cache",
            "90s",
        ] {
            assert_eq!(redact_url(plain), plain);
        }
    }
}
