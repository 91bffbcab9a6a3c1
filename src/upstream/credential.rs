//! The credential of an upstream, turned into one request header.

use base64::Engine;
use reqwest::header::{HeaderName, HeaderValue};

use crate::config::UpstreamSettings;

/// One credential, attached only to requests for the upstream's own hosts.
#[derive(Clone, Default)]
pub enum Credential {
    /// Public upstream.
    #[default]
    None,
    /// A ready header (Basic, Bearer, custom or Cookie), marked sensitive.
    Header(HeaderName, HeaderValue),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Header(name, _) => write!(f, "Header({name}: [redacted])"),
        }
    }
}

impl Credential {
    /// From the settings of an upstream: at most one kind of credential.
    pub fn from_settings(s: &UpstreamSettings) -> Result<Self, String> {
        let basic = |user: &str, password: &str| {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {token}")
        };
        let mut found: Vec<(HeaderName, String)> = Vec::new();
        if !s.pat.is_empty() {
            found.push((reqwest::header::AUTHORIZATION, basic("", s.pat.expose())));
        }
        if !s.bearer.is_empty() {
            found.push((
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", s.bearer.expose()),
            ));
        }
        if !s.basic_user.is_empty() || !s.basic_password.is_empty() {
            if s.basic_user.is_empty() {
                return Err("basic_password needs basic_user".into());
            }
            found.push((
                reqwest::header::AUTHORIZATION,
                basic(s.basic_user.expose(), s.basic_password.expose()),
            ));
        }
        if !s.header.is_empty() {
            let (name, value) = s
                .header
                .expose()
                .split_once(':')
                .ok_or("header must look like `Name: value`")?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| "header name is not a valid HTTP header name")?;
            found.push((name, value.trim().to_owned()));
        }
        if !s.cookie.is_empty() {
            found.push((reqwest::header::COOKIE, s.cookie.expose().to_owned()));
        }
        match found.len() {
            0 => Ok(Self::None),
            1 => {
                let (name, value) = found.remove(0);
                let mut value = HeaderValue::from_str(&value)
                    .map_err(|_| "credential contains characters not allowed in a header")?;
                value.set_sensitive(true);
                Ok(Self::Header(name, value))
            }
            _ => Err(
                "configure one credential per upstream (pat, bearer, basic, header or cookie)"
                    .into(),
            ),
        }
    }

    /// Attach to a request.
    pub fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::None => request,
            Self::Header(name, value) => request.header(name.clone(), value.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn a_pat_is_basic_with_an_empty_user() {
        let s = UpstreamSettings {
            pat: Secret::new("abc"),
            ..Default::default()
        };
        let Credential::Header(name, value) = Credential::from_settings(&s).expect("ok") else {
            panic!("expected a header");
        };
        assert_eq!(name, reqwest::header::AUTHORIZATION);
        assert_eq!(value.to_str().expect("ascii"), "Basic OmFiYw==");
        assert!(value.is_sensitive());
        assert!(!format!("{:?}", Credential::from_settings(&s)).contains("OmFiYw"));
    }

    #[test]
    fn custom_headers_and_cookies_work() {
        let s = UpstreamSettings {
            header: Secret::new("Private-Token: t0k"),
            ..Default::default()
        };
        let Credential::Header(name, value) = Credential::from_settings(&s).expect("ok") else {
            panic!("expected a header");
        };
        assert_eq!(name.as_str(), "private-token");
        assert_eq!(value.to_str().expect("ascii"), "t0k");
        let s = UpstreamSettings {
            header: Secret::new("no colon"),
            ..Default::default()
        };
        assert!(Credential::from_settings(&s).is_err());
    }
}
