//! The credential of an upstream, turned into one request header.

use base64::Engine;
use reqwest::header::{HeaderName, HeaderValue};

/// The credential fields of one upstream, as configured (at most one kind set); built from
/// the settings at start-up, so this layer does not read the configuration itself.
#[derive(Debug, Clone, Default)]
pub struct CredentialSettings {
    /// Personal access token, sent as Basic with an empty user.
    pub pat: String,
    /// Bearer token.
    pub bearer: String,
    /// Basic auth user.
    pub basic_user: String,
    /// Basic auth password.
    pub basic_password: String,
    /// A custom header, `Name: value`.
    pub header: String,
    /// A cookie header value.
    pub cookie: String,
}

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
    pub fn from_settings(s: &CredentialSettings) -> Result<Self, String> {
        let basic = |user: &str, password: &str| {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {token}")
        };
        let mut found: Vec<(HeaderName, String)> = Vec::new();
        if !s.pat.is_empty() {
            found.push((reqwest::header::AUTHORIZATION, basic("", &s.pat)));
        }
        if !s.bearer.is_empty() {
            found.push((
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", s.bearer),
            ));
        }
        if !s.basic_user.is_empty() || !s.basic_password.is_empty() {
            if s.basic_user.is_empty() {
                return Err("basic_password needs basic_user".into());
            }
            found.push((
                reqwest::header::AUTHORIZATION,
                basic(&s.basic_user, &s.basic_password),
            ));
        }
        if !s.header.is_empty() {
            let (name, value) = s
                .header
                .split_once(':')
                .ok_or("header must look like `Name: value`")?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| "header name is not a valid HTTP header name")?;
            found.push((name, value.trim().to_owned()));
        }
        if !s.cookie.is_empty() {
            found.push((reqwest::header::COOKIE, s.cookie.clone()));
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

    #[test]
    fn a_pat_is_basic_with_an_empty_user() {
        let s = CredentialSettings {
            pat: "abc".into(),
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
        let s = CredentialSettings {
            header: "Private-Token: t0k".into(),
            ..Default::default()
        };
        let Credential::Header(name, value) = Credential::from_settings(&s).expect("ok") else {
            panic!("expected a header");
        };
        assert_eq!(name.as_str(), "private-token");
        assert_eq!(value.to_str().expect("ascii"), "t0k");
        let s = CredentialSettings {
            header: "no colon".into(),
            ..Default::default()
        };
        assert!(Credential::from_settings(&s).is_err());
    }
}
