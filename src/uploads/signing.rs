//! Signed upload URLs: the `PUT` URL handed out by `POST /v1/uploads` carries everything the
//! upload may do (who, what type, how many bytes, until when) plus an HMAC-SHA256 over all of it,
//! so the `PUT` needs no JWT and no database read to be authorised.
//!
//! The URL is `PUT {base}/v1/uploads/{upload_id}?key=..&type=..&max=..&exp=..&sig=..`; the upload
//! id travels in the path, the rest in the query ([`UploadSigner::query`]). The signature covers a
//! canonical encoding of every field (see [`canonical`]), never the query text itself, so
//! re-encoding the query (`%2F` vs `/`, parameter order) changes nothing, while changing any value
//! breaks it.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

type HmacSha256 = Hmac<Sha256>;

/// Domain separation: a signature made for an upload URL is never valid for anything else signed
/// with the same secret, nor for a future version of this format.
const DOMAIN: &[u8] = b"avatar-proxy upload-url v1";

/// Length of an upload id: 32 lowercase hex characters (128 random bits).
pub const UPLOAD_ID_LEN: usize = 32;

/// Longest query string [`UploadSigner::verify`] will parse; a real one is under 300 bytes.
const MAX_QUERY_BYTES: usize = 2048;

/// What one signed upload URL permits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadGrant {
    /// Random id of this upload: 32 lowercase hex characters ([`new_upload_id`]).
    pub upload_id: String,
    /// The uploading user's public key (not their user id, which the URL must not reveal).
    pub user_key: String,
    /// The declared content type (`image/jpeg`, ...); the `PUT` must send the same.
    pub content_type: String,
    /// The most bytes the `PUT` body may have.
    pub max_bytes: u64,
    /// When the URL stops working, unix seconds.
    pub expires_at: i64,
}

impl UploadGrant {
    /// A grant with a fresh random upload id.
    pub fn new(
        user_key: impl Into<String>,
        content_type: impl Into<String>,
        max_bytes: u64,
        expires_at: i64,
    ) -> Self {
        Self {
            upload_id: new_upload_id(),
            user_key: user_key.into(),
            content_type: content_type.into(),
            max_bytes,
            expires_at,
        }
    }
}

/// A fresh upload id: 16 bytes from the OS-seeded thread RNG, as 32 lowercase hex characters.
pub fn new_upload_id() -> String {
    let mut bytes = [0u8; UPLOAD_ID_LEN / 2];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether `id` has the shape of an upload id (32 lowercase hex characters); check this before
/// using an id from a path for any disk or database access.
pub fn is_valid_upload_id(id: &str) -> bool {
    id.len() == UPLOAD_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Why a `PUT` to a signed URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The upload id or query is not what [`UploadSigner::query`] produces: a parameter missing,
    /// repeated or unknown, a number that is not one.
    #[error("malformed upload URL")]
    Malformed,
    /// The signature does not match the fields: the URL was altered or signed with another secret.
    #[error("invalid upload URL signature")]
    BadSignature,
    /// The URL was genuine but its time is up.
    #[error("upload URL expired")]
    Expired,
}

/// Signs and verifies upload URLs with one server-side secret.
#[derive(Clone)]
pub struct UploadSigner {
    /// HMAC-SHA256 already keyed with the secret; cloned per use, so the key schedule runs once.
    mac: HmacSha256,
}

impl fmt::Debug for UploadSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UploadSigner([redacted])")
    }
}

impl UploadSigner {
    /// A signer keyed with `secret`. Use at least 32 random bytes; every replica that serves
    /// `PUT`s must have the same secret.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            // HMAC takes keys of any length (RFC 2104 hashes long ones and pads short ones), so
            // `new_from_slice` cannot fail for it.
            mac: HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length"),
        }
    }

    fn tag(&self, grant: &UploadGrant) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(&canonical(grant));
        mac.finalize().into_bytes().into()
    }

    /// The signature of `grant`: base64url without padding of HMAC-SHA256 over [`canonical`].
    pub fn sign(&self, grant: &UploadGrant) -> String {
        URL_SAFE_NO_PAD.encode(self.tag(grant))
    }

    /// The query string of the grant's `PUT` URL (no leading `?`):
    /// `key=..&type=..&max=..&exp=..&sig=..`, form-urlencoded.
    pub fn query(&self, grant: &UploadGrant) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("key", &grant.user_key)
            .append_pair("type", &grant.content_type)
            .append_pair("max", &grant.max_bytes.to_string())
            .append_pair("exp", &grant.expires_at.to_string())
            .append_pair("sig", &self.sign(grant))
            .finish()
    }

    /// Parses `query` (as produced by [`Self::query`], without the leading `?`) for the upload
    /// `upload_id` (from the path), checks the signature in constant time, then the expiry: the
    /// URL is expired from `now == expires_at` on (unix seconds). Returns the grant it carries.
    pub fn verify(
        &self,
        upload_id: &str,
        query: &str,
        now: i64,
    ) -> Result<UploadGrant, SignatureError> {
        if !is_valid_upload_id(upload_id) || query.len() > MAX_QUERY_BYTES {
            return Err(SignatureError::Malformed);
        }
        let mut key = None;
        let mut content_type = None;
        let mut max = None;
        let mut exp = None;
        let mut sig = None;
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "key" => &mut key,
                "type" => &mut content_type,
                "max" => &mut max,
                "exp" => &mut exp,
                "sig" => &mut sig,
                // The URL is handed out whole and used verbatim; anything else is not ours.
                _ => return Err(SignatureError::Malformed),
            };
            if slot.replace(value.into_owned()).is_some() {
                // Repeated: which copy would a later reader believe? Refuse instead of choosing.
                return Err(SignatureError::Malformed);
            }
        }
        let (Some(user_key), Some(content_type), Some(max), Some(exp), Some(sig)) =
            (key, content_type, max, exp, sig)
        else {
            return Err(SignatureError::Malformed);
        };
        let grant = UploadGrant {
            upload_id: upload_id.to_owned(),
            user_key,
            content_type,
            max_bytes: parse_decimal(&max)?,
            expires_at: i64::try_from(parse_decimal(&exp)?)
                .map_err(|_| SignatureError::Malformed)?,
        };

        let presented = URL_SAFE_NO_PAD
            .decode(sig.as_bytes())
            .map_err(|_| SignatureError::BadSignature)?;
        let expected = self.tag(&grant);
        // `ct_eq` on slices of different lengths is false without looking at contents.
        if !bool::from(expected.as_slice().ct_eq(&presented)) {
            return Err(SignatureError::BadSignature);
        }
        if now >= grant.expires_at {
            return Err(SignatureError::Expired);
        }
        Ok(grant)
    }
}

/// The signed bytes: a domain tag, then every field as an 8-byte big-endian length followed by
/// its bytes (numbers as 8-byte big-endian integers, which need no length).
///
/// Why length prefixes rather than joining with `\n`: `user_key` and `content_type` come from
/// outside and nothing here guarantees they cannot contain `\n`; with a separator,
/// `("a\nb", "c")` and `("a", "b\nc")` would sign alike. Length-prefixed fields cannot collide
/// whatever they contain, and the fixed field order means no field can stand in for another.
pub fn canonical(grant: &UploadGrant) -> Vec<u8> {
    let strings = [
        DOMAIN,
        grant.upload_id.as_bytes(),
        grant.user_key.as_bytes(),
        grant.content_type.as_bytes(),
    ];
    let mut out = Vec::with_capacity(strings.iter().map(|s| s.len() + 8).sum::<usize>() + 16);
    for field in strings {
        out.extend_from_slice(&(field.len() as u64).to_be_bytes());
        out.extend_from_slice(field);
    }
    out.extend_from_slice(&grant.max_bytes.to_be_bytes());
    out.extend_from_slice(&grant.expires_at.to_be_bytes());
    out
}

/// A non-negative decimal of ASCII digits only (no sign, no spaces), fitting in a `u64`.
fn parse_decimal(s: &str) -> Result<u64, SignatureError> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed);
    }
    s.parse().map_err(|_| SignatureError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn signer() -> UploadSigner {
        UploadSigner::new(b"upload-signing-secret-for-tests-only")
    }

    fn grant() -> UploadGrant {
        UploadGrant {
            upload_id: "0123456789abcdef0123456789abcdef".into(),
            user_key: "9f86d081884c7d659a2feaa0c55ad015".into(),
            content_type: "image/jpeg".into(),
            max_bytes: 5 * 1024 * 1024,
            expires_at: NOW + 300,
        }
    }

    /// Replaces the value of one parameter in a query, keeping everything else byte for byte.
    fn with_param(query: &str, name: &str, value: &str) -> String {
        url::form_urlencoded::parse(query.as_bytes())
            .fold(
                url::form_urlencoded::Serializer::new(String::new()),
                |mut s, (k, v)| {
                    s.append_pair(&k, if k == name { value } else { &v });
                    s
                },
            )
            .finish()
    }

    #[test]
    fn a_signed_grant_round_trips_through_its_query() {
        let s = signer();
        let g = grant();
        let q = s.query(&g);
        assert_eq!(
            q,
            format!(
                "key=9f86d081884c7d659a2feaa0c55ad015&type=image%2Fjpeg&max=5242880&exp={}&sig={}",
                NOW + 300,
                s.sign(&g)
            )
        );
        assert_eq!(s.verify(&g.upload_id, &q, NOW), Ok(g.clone()));
        assert_eq!(s.verify(&g.upload_id, &q, NOW + 299), Ok(g));
    }

    #[test]
    fn a_fresh_grant_has_a_random_well_formed_id() {
        let a = UploadGrant::new("k", "image/png", 10, NOW);
        let b = UploadGrant::new("k", "image/png", 10, NOW);
        assert!(is_valid_upload_id(&a.upload_id) && is_valid_upload_id(&b.upload_id));
        assert_ne!(a.upload_id, b.upload_id);
        let s = signer();
        assert_eq!(s.verify(&a.upload_id, &s.query(&a), NOW - 1), Ok(a.clone()));
        assert_eq!(
            s.verify(&b.upload_id, &s.query(&a), NOW - 1),
            Err(SignatureError::BadSignature)
        );
    }

    #[test]
    fn the_signature_is_base64url_of_32_bytes_and_deterministic() {
        let sig = signer().sign(&grant());
        assert_eq!(sig.len(), 43);
        assert!(
            sig.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(sig, signer().sign(&grant()));
        assert_ne!(sig, UploadSigner::new(b"another secret").sign(&grant()));
    }

    #[test]
    fn every_tampered_field_is_refused() {
        let s = signer();
        let g = grant();
        let q = s.query(&g);
        let other_id = "fedcba9876543210fedcba9876543210";
        assert_eq!(
            s.verify(other_id, &q, NOW),
            Err(SignatureError::BadSignature)
        );
        for (name, value) in [
            ("key", "0000000000000000000000000000000a"),
            ("type", "image/png"),
            ("type", "image/jpeg "),
            ("max", "5242881"),
            ("max", "05242880x"),
            ("exp", &(NOW + 301).to_string()),
            ("exp", &(NOW + 86_400).to_string()),
        ] {
            let tampered = with_param(&q, name, value);
            let err = s
                .verify(&g.upload_id, &tampered, NOW)
                .expect_err("must be refused");
            assert!(
                matches!(
                    err,
                    SignatureError::BadSignature | SignatureError::Malformed
                ),
                "{name}={value}: {err:?}"
            );
            assert_ne!(tampered, q);
        }
        let mut sig = s.sign(&g).into_bytes();
        sig[0] = if sig[0] == b'A' { b'B' } else { b'A' };
        let flipped = with_param(&q, "sig", std::str::from_utf8(&sig).expect("ascii"));
        assert_eq!(
            s.verify(&g.upload_id, &flipped, NOW),
            Err(SignatureError::BadSignature)
        );
        for bad_sig in ["", "AAAA", "not base64!", &format!("{}AA", s.sign(&g))] {
            assert_eq!(
                s.verify(&g.upload_id, &with_param(&q, "sig", bad_sig), NOW),
                Err(SignatureError::BadSignature),
                "sig={bad_sig}"
            );
        }
        assert_eq!(
            UploadSigner::new(b"another secret").verify(&g.upload_id, &q, NOW),
            Err(SignatureError::BadSignature)
        );
    }

    #[test]
    fn fields_cannot_be_shifted_into_each_other() {
        let s = signer();
        let a = UploadGrant {
            user_key: "ab\n".into(),
            content_type: "image/png".into(),
            ..grant()
        };
        let b = UploadGrant {
            user_key: "ab".into(),
            content_type: "\nimage/png".into(),
            ..grant()
        };
        assert_ne!(canonical(&a), canonical(&b));
        assert_ne!(s.sign(&a), s.sign(&b));
        // The query carries such values safely too.
        assert_eq!(s.verify(&a.upload_id, &s.query(&a), NOW), Ok(a));
    }

    #[test]
    fn an_expired_url_is_refused_from_its_expiry_second_on() {
        let s = signer();
        let g = grant();
        let q = s.query(&g);
        assert!(s.verify(&g.upload_id, &q, g.expires_at - 1).is_ok());
        assert_eq!(
            s.verify(&g.upload_id, &q, g.expires_at),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            s.verify(&g.upload_id, &q, g.expires_at + 3600),
            Err(SignatureError::Expired)
        );
    }

    #[test]
    fn malformed_queries_are_refused_without_panicking() {
        let s = signer();
        let g = grant();
        let q = s.query(&g);
        let sig = s.sign(&g);
        let exp = g.expires_at;
        let cases = [
            String::new(),
            "&&&".to_owned(),
            "=".to_owned(),
            // each parameter missing in turn
            format!("type=image%2Fjpeg&max=5242880&exp={exp}&sig={sig}"),
            format!("key={}&max=5242880&exp={exp}&sig={sig}", g.user_key),
            format!("key={}&type=image%2Fjpeg&exp={exp}&sig={sig}", g.user_key),
            format!("key={}&type=image%2Fjpeg&max=5242880&sig={sig}", g.user_key),
            format!("key={}&type=image%2Fjpeg&max=5242880&exp={exp}", g.user_key),
            // duplicates, even of the same value
            format!("{q}&max=5242880"),
            format!("{q}&sig={sig}"),
            format!("key=x&{q}"),
            // unknown parameter
            format!("{q}&admin=1"),
            // non-numeric or out-of-range numbers
            with_param(&q, "max", "lots"),
            with_param(&q, "max", "-1"),
            with_param(&q, "max", "+5242880"),
            with_param(&q, "max", " 5242880"),
            with_param(&q, "max", "1e6"),
            with_param(&q, "max", ""),
            with_param(&q, "max", "99999999999999999999999"),
            with_param(&q, "exp", "soon"),
            with_param(&q, "exp", "-5"),
            with_param(&q, "exp", "18446744073709551615"),
            "x".repeat(MAX_QUERY_BYTES + 1),
        ];
        for case in &cases {
            assert_eq!(
                s.verify(&g.upload_id, case, NOW),
                Err(SignatureError::Malformed),
                "{case:.80}"
            );
        }
        for bad_id in [
            "",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "../../../../etc/passwd0123456789a",
            "0123456789abcdef0123456789abcdeg",
        ] {
            assert_eq!(
                s.verify(bad_id, &q, NOW),
                Err(SignatureError::Malformed),
                "{bad_id}"
            );
        }
    }

    #[test]
    fn parameter_order_and_encoding_do_not_matter() {
        let s = signer();
        let g = grant();
        let reordered = format!(
            "sig={}&exp={}&max={}&type=image/jpeg&key={}",
            s.sign(&g),
            g.expires_at,
            g.max_bytes,
            g.user_key
        );
        assert_eq!(s.verify(&g.upload_id, &reordered, NOW), Ok(g));
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        assert!(!format!("{:?}", signer()).contains("secret"));
    }
}
