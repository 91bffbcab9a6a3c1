//! Webhook signatures the Standard Webhooks way, so a receiver can check our deliveries with any
//! of that project's libraries (or Svix's, which share the format).
//!
//! Every delivery carries three headers:
//! - `webhook-id`: the message id, the same on every retry of one event (receivers deduplicate
//!   on it);
//! - `webhook-timestamp`: unix seconds of this attempt (fresh on each retry);
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`; several
//!   space-separated signatures may appear (secret rotation), and one valid is enough.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use reqwest::header::{HeaderName, HeaderValue};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

type HmacSha256 = Hmac<Sha256>;

/// The `webhook-id` header.
pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
/// The `webhook-timestamp` header.
pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
/// The `webhook-signature` header.
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// Prefix of secrets in the Standard Webhooks form.
pub const SECRET_PREFIX: &str = "whsec_";

/// Shortest secret accepted, in bytes (after base64 decoding for `whsec_` secrets): the
/// Standard Webhooks specification asks for 24 to 64 bytes.
pub const MIN_SECRET_BYTES: usize = 24;

/// Standard base64 that takes the secret with or without its `=` padding, as secrets are copied
/// around by hand.
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The key of one webhook endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

impl WebhookSecret {
    /// Parses a configured secret (surrounding whitespace ignored):
    /// - `whsec_<base64>`: the Standard Webhooks form; the key is the base64-decoded bytes
    ///   (standard alphabet, padding optional). Invalid base64 after the prefix is an error, never
    ///   taken as a raw secret.
    /// - anything else: a raw secret; the key is the UTF-8 bytes of the string as written.
    ///
    /// Prefer the `whsec_` form (see [`WebhookSecret::generate`]): the reference receiver
    /// libraries base64-decode a secret even without the prefix, so a raw secret given to them
    /// verbatim does not verify there; a receiver would have to use the raw bytes as the key.
    ///
    /// Either way the key must be at least [`MIN_SECRET_BYTES`] bytes.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let key = match s.strip_prefix(SECRET_PREFIX) {
            Some(encoded) => LENIENT_STANDARD.decode(encoded).map_err(|_| {
                "the webhook secret after \"whsec_\" is not valid base64".to_owned()
            })?,
            None => s.as_bytes().to_vec(),
        };
        if key.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the webhook secret is {} bytes; at least {MIN_SECRET_BYTES} are required",
                key.len()
            ));
        }
        Ok(Self(key))
    }

    /// A new random secret (32 bytes) in the `whsec_` form, for an operator to configure on both
    /// ends.
    pub fn generate() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
    }

    fn tag(&self, msg_id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
        // HMAC takes keys of any length (RFC 2104), so `new_from_slice` cannot fail for it.
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// The `webhook-signature` value for one delivery attempt:
    /// `v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        format!(
            "v1,{}",
            STANDARD.encode(self.tag(msg_id, &timestamp.to_string(), body))
        )
    }

    /// Checks a delivery as a receiver would. `headers` is (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`); the timestamp must be within `tolerance_secs` of `now` (unix
    /// seconds) either way, and at least one `v1,` entry of the space-separated signature header
    /// must match (compared in constant time). Entries of other versions are skipped.
    pub fn verify(
        &self,
        headers: (&str, &str, &str),
        body: &[u8],
        now: i64,
        tolerance_secs: u64,
    ) -> bool {
        let (msg_id, timestamp, signatures) = headers;
        if msg_id.is_empty()
            || timestamp.is_empty()
            || timestamp.len() > 19
            || !timestamp.bytes().all(|b| b.is_ascii_digit())
        {
            return false;
        }
        let Ok(ts) = timestamp.parse::<i64>() else {
            return false;
        };
        if now.abs_diff(ts) > tolerance_secs {
            return false;
        }
        let expected = self.tag(msg_id, timestamp, body);
        let mut matched = false;
        for entry in signatures.split(' ').filter(|e| !e.is_empty()) {
            let Some(("v1", encoded)) = entry.split_once(',') else {
                continue;
            };
            let Ok(presented) = STANDARD.decode(encoded) else {
                continue;
            };
            // No early exit: the time taken does not say which entry matched.
            matched |= bool::from(expected.as_slice().ct_eq(&presented));
        }
        matched
    }
}

/// A fresh message id for an event (`msg_` and 32 hex characters): stored in the outbox so that
/// every retry of the event carries the same `webhook-id`.
pub fn new_message_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!("msg_{}", hex::encode(bytes))
}

/// The three headers of one delivery attempt of `body` as message `msg_id` at `timestamp` (unix
/// seconds). Fails only if `msg_id` cannot be a header value (control characters); ids from
/// [`new_message_id`] always can.
pub fn headers(
    secret: &WebhookSecret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<[(HeaderName, HeaderValue); 3], reqwest::header::InvalidHeaderValue> {
    let id = HeaderValue::from_str(msg_id)?;
    let signature = HeaderValue::from_str(&secret.sign(msg_id, timestamp, body))?;
    Ok([
        (WEBHOOK_ID, id),
        (WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp)),
        (WEBHOOK_SIGNATURE, signature),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published Standard Webhooks test vector (the one in the specification's reference
    /// libraries). Re-computed independently with
    /// `python3 -c 'import hmac,hashlib,base64; k=base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    /// print(base64.b64encode(hmac.new(k, b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{\"test\": 2432232314}",
    /// hashlib.sha256).digest()).decode())'`, which prints the same signature.
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TS: i64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn vector_secret() -> WebhookSecret {
        WebhookSecret::parse(VECTOR_SECRET).expect("valid secret")
    }

    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        assert_eq!(
            vector_secret().sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY),
            VECTOR_SIG
        );
    }

    #[test]
    fn verifies_the_standard_webhooks_test_vector() {
        let secret = vector_secret();
        let headers = (VECTOR_ID, "1614265330", VECTOR_SIG);
        assert!(secret.verify(headers, VECTOR_BODY, VECTOR_TS, 300));
        assert!(secret.verify(headers, VECTOR_BODY, VECTOR_TS + 300, 300));
        assert!(secret.verify(headers, VECTOR_BODY, VECTOR_TS - 300, 300));
    }

    #[test]
    fn a_raw_secret_is_used_as_its_bytes() {
        // Expected value computed independently:
        // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(
        //   b"a-raw-secret-that-is-long-enough",
        //   b"msg_2.1700000000.{\"type\":\"ProfileImageCompleted\"}", hashlib.sha256).digest()).decode())'
        let secret =
            WebhookSecret::parse("a-raw-secret-that-is-long-enough").expect("valid secret");
        assert_eq!(
            secret.sign(
                "msg_2",
                1_700_000_000,
                br#"{"type":"ProfileImageCompleted"}"#
            ),
            "v1,I3rN/IoT5K1A3SbZ7/SK4gGDIyoK6jvcOZIzdZYTYhI="
        );
    }

    #[test]
    fn parses_secrets_strictly() {
        // Padding is optional, surrounding whitespace ignored.
        let padded = format!("{SECRET_PREFIX}{}", STANDARD.encode([7u8; 31]));
        assert!(padded.ends_with('='));
        assert_eq!(
            WebhookSecret::parse(&padded).expect("valid secret"),
            WebhookSecret::parse(&format!(" {} \n", padded.trim_end_matches('=')))
                .expect("valid secret")
        );
        assert!(
            WebhookSecret::parse("whsec_not*base64*at*all*not*base64*at*all")
                .expect_err("must be refused")
                .contains("base64")
        );
        assert!(
            WebhookSecret::parse("whsec_c2hvcnQ=")
                .expect_err("must be refused")
                .contains("at least 24")
        );
        assert!(WebhookSecret::parse("short").is_err());
        assert!(WebhookSecret::parse("").is_err());
        assert!(!format!("{:?}", vector_secret()).contains("MfKQ"));
    }

    #[test]
    fn generated_secrets_parse_and_differ() {
        let a = WebhookSecret::generate();
        let b = WebhookSecret::generate();
        assert!(a.starts_with(SECRET_PREFIX));
        assert_ne!(a, b);
        assert_eq!(WebhookSecret::parse(&a).expect("valid secret").0.len(), 32);
    }

    #[test]
    fn refuses_a_tampered_body_id_or_timestamp() {
        let secret = vector_secret();
        let now = VECTOR_TS;
        assert!(!secret.verify(
            (VECTOR_ID, "1614265330", VECTOR_SIG),
            br#"{"test": 2432232315}"#,
            now,
            300
        ));
        assert!(!secret.verify(
            ("msg_other", "1614265330", VECTOR_SIG),
            VECTOR_BODY,
            now,
            300
        ));
        assert!(!secret.verify((VECTOR_ID, "1614265331", VECTOR_SIG), VECTOR_BODY, now, 300));
        let other =
            WebhookSecret::parse("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").expect("valid secret");
        assert!(!other.verify((VECTOR_ID, "1614265330", VECTOR_SIG), VECTOR_BODY, now, 300));
    }

    #[test]
    fn refuses_timestamps_outside_the_tolerance() {
        let secret = vector_secret();
        let headers = (VECTOR_ID, "1614265330", VECTOR_SIG);
        assert!(!secret.verify(headers, VECTOR_BODY, VECTOR_TS + 301, 300));
        assert!(!secret.verify(headers, VECTOR_BODY, VECTOR_TS - 301, 300));
        assert!(!secret.verify(headers, VECTOR_BODY, i64::MAX, 300));
    }

    #[test]
    fn accepts_one_valid_signature_among_several() {
        let secret = vector_secret();
        let ts = "1614265330";
        for header in [
            format!("v1,bm9wZQ== {VECTOR_SIG}"),
            format!("{VECTOR_SIG} v1,bm9wZQ=="),
            format!("v2,whatever v1a,x,y  {VECTOR_SIG} garbage"),
        ] {
            assert!(
                secret.verify((VECTOR_ID, ts, &header), VECTOR_BODY, VECTOR_TS, 300),
                "{header}"
            );
        }
        for header in [
            "v1,bm9wZQ== v1,AAAA",
            "",
            " ",
            "v1,",
            "v1",
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=AAAA",
        ] {
            assert!(
                !secret.verify((VECTOR_ID, ts, header), VECTOR_BODY, VECTOR_TS, 300),
                "{header}"
            );
        }
    }

    #[test]
    fn refuses_malformed_headers_without_panicking() {
        let secret = vector_secret();
        for (id, ts) in [
            ("", "1614265330"),
            (VECTOR_ID, ""),
            (VECTOR_ID, "+1614265330"),
            (VECTOR_ID, "-1614265330"),
            (VECTOR_ID, "1614265330.0"),
            (VECTOR_ID, "99999999999999999999999"),
            (VECTOR_ID, "2023-01-01T00:00:00Z"),
        ] {
            assert!(
                !secret.verify((id, ts, VECTOR_SIG), VECTOR_BODY, VECTOR_TS, 300),
                "{id} {ts}"
            );
        }
    }

    #[test]
    fn headers_carry_id_timestamp_and_a_verifiable_signature() {
        let secret = vector_secret();
        let [(n1, id), (n2, ts), (n3, sig)] =
            headers(&secret, VECTOR_ID, VECTOR_TS, VECTOR_BODY).expect("valid headers");
        assert_eq!(
            (n1.as_str(), n2.as_str(), n3.as_str()),
            ("webhook-id", "webhook-timestamp", "webhook-signature")
        );
        assert_eq!(id, VECTOR_ID);
        assert_eq!(ts, "1614265330");
        assert_eq!(sig, VECTOR_SIG);
        assert!(secret.verify(
            (
                id.to_str().expect("ascii header"),
                ts.to_str().expect("ascii header"),
                sig.to_str().expect("ascii header")
            ),
            VECTOR_BODY,
            VECTOR_TS,
            0
        ));
        assert!(headers(&secret, "bad\nid", VECTOR_TS, VECTOR_BODY).is_err());
    }

    #[test]
    fn message_ids_are_unique_and_header_safe() {
        let a = new_message_id();
        assert!(a.starts_with("msg_") && a.len() == 36);
        assert_ne!(a, new_message_id());
        assert!(headers(&vector_secret(), &a, 0, b"").is_ok());
    }
}
