//! Redirect hops: where a `Location` leads, and what each hop may carry.
//!
//! The credential and the validators go only to the origin, and never again once the chain has
//! left it; the unguarded (private) client is used only while every hop is on an
//! `allow_private` upstream. `Location` values with raw bytes outside ASCII are percent-encoded,
//! as browsers do.

use std::borrow::Cow;

use url::Url;

use super::Upstream;

/// What a redirect chain has been through so far.
pub(super) struct Chain {
    origin: url::Origin,
    /// Once the chain has left the origin, the credential and validators stay behind, even if a
    /// later hop comes back to it (the detour could have been chosen by anyone).
    left_origin: bool,
    /// The unguarded client only while every hop so far is on an `allow_private` upstream: a
    /// public upstream cannot redirect us into an internal upstream's network.
    private: bool,
}

/// How to send one hop.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Hop {
    /// Attach the credential and the validators.
    pub(super) on_origin: bool,
    /// Use the client without the address guard.
    pub(super) private: bool,
}

impl Chain {
    pub(super) fn new(url: &Url, origin: &Upstream) -> Self {
        Self {
            origin: url.origin(),
            left_origin: false,
            private: origin.allow_private,
        }
    }

    pub(super) fn hop(&mut self, url: &Url, upstream: &Upstream) -> Hop {
        self.left_origin |= url.origin() != self.origin;
        self.private &= upstream.allow_private;
        Hop {
            on_origin: !self.left_origin,
            private: self.private,
        }
    }
}

/// The target of a `Location` header, resolved against the current URL. Raw bytes outside
/// ASCII are taken as UTF-8 when they are (what browsers do) and percent-encoded either way, so
/// `/avatars/Zoë.png` is followed as `/avatars/Zo%C3%AB.png`.
pub(super) fn follow_location(current: &Url, raw: &[u8]) -> Option<Url> {
    let text: Cow<'_, str> = match std::str::from_utf8(raw) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => Cow::Owned(
            raw.iter()
                .map(|&b| {
                    if b.is_ascii() {
                        char::from(b).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect(),
        ),
    };
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    current.join(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Credential;
    use crate::upstream::guard::refuses_literal;

    fn upstream(allow_private: bool) -> Upstream {
        Upstream {
            name: "u".into(),
            hosts: Vec::new(),
            credential: Credential::None,
            allow_http: true,
            allow_private,
            max_concurrent: None,
        }
    }

    #[test]
    fn the_credential_stays_behind_once_a_chain_left_its_origin() {
        let idp = upstream(false);
        let cdn = upstream(false);
        let start = Url::parse("https://idp.example/a.png").expect("url");
        let mut chain = Chain::new(&start, &idp);
        assert!(chain.hop(&start, &idp).on_origin);
        let same = Url::parse("https://idp.example/b.png").expect("url");
        assert!(
            chain.hop(&same, &idp).on_origin,
            "a hop on the origin keeps it"
        );
        let away = Url::parse("https://cdn.example/x").expect("url");
        assert!(!chain.hop(&away, &cdn).on_origin);
        assert!(
            !chain.hop(&start, &idp).on_origin,
            "coming back does not bring the credential back"
        );
    }

    #[test]
    fn a_public_upstream_never_redirects_into_the_private_client() {
        let public = upstream(false);
        let internal = upstream(true);
        let start = Url::parse("https://idp.example/a.png").expect("url");
        let inside = Url::parse("http://10.0.0.5/a.png").expect("url");
        let mut chain = Chain::new(&start, &public);
        assert!(!chain.hop(&start, &public).private);
        assert!(!chain.hop(&inside, &internal).private);
        assert!(refuses_literal(&inside), "so the literal is refused");
        let mut chain = Chain::new(&inside, &internal);
        assert!(chain.hop(&inside, &internal).private);
        assert!(!chain.hop(&start, &public).private);
        assert!(
            !chain.hop(&inside, &internal).private,
            "once public, always guarded"
        );
    }

    #[test]
    fn raw_utf8_in_a_location_is_percent_encoded_and_followed() {
        let here = Url::parse("https://idp.example/avatars/old.png").expect("url");
        let next = follow_location(&here, "/avatars/Zoë.png".as_bytes()).expect("followed");
        assert_eq!(next.as_str(), "https://idp.example/avatars/Zo%C3%AB.png");
        let latin1 = follow_location(&here, b"Zo\xeb.png").expect("followed");
        assert_eq!(latin1.as_str(), "https://idp.example/avatars/Zo%EB.png");
        assert!(follow_location(&here, b"  ").is_none());
    }
}
