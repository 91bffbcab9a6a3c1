//! User authentication: verifying the JWT that a user presents as `Authorization: Bearer <JWT>`.
//!
//! The service never issues user tokens; an identity provider does, and the operator tells the
//! service how to check them (`AVATAR_JWT_SECRET` for HS256, or `AVATAR_JWT_PUBLIC_KEY[_FILE]`
//! with `AVATAR_JWT_ALGORITHM` = RS256 | ES256 | EdDSA, plus optional `AVATAR_JWT_ISSUER` and
//! `AVATAR_JWT_AUDIENCE`). A [`JwtVerifier`] is built once from those [`JwtSettings`] and then
//! checks every token against them:
//!
//! - the algorithm is pinned by configuration, never read from the token: a header that names any
//!   other algorithm (`none`, or HS256 "signed" with the RSA public key as an HMAC secret) is
//!   refused before any cryptography runs;
//! - `exp` is required and enforced with a small configured leeway; `nbf` is enforced when present;
//! - `iss` and `aud` are required and checked only when configured;
//! - `sub`, the user id, must be a non-empty string of at most [`MAX_SUBJECT_BYTES`] bytes.
//!
//! Signature checking is `jsonwebtoken` (aws-lc-rs); time checks are done here with an explicit
//! `now`, so tests and the service's clock decide what time it is.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;

pub use jsonwebtoken::Algorithm;

/// Longest accepted `sub` claim, in bytes. User ids are keys into the metadata store and are
/// hashed into public avatar keys; anything longer is not an id a sane identity provider issues.
pub const MAX_SUBJECT_BYTES: usize = 512;

/// Longest accepted token, in bytes. Real tokens are well under 2 KiB; the cap bounds the work an
/// anonymous caller can make the service do (base64 and JSON decoding happen before the signature
/// check).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Default clock-skew allowance for `exp` and `nbf`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;

/// Shortest HS256 secret accepted: RFC 7518 §3.2 requires a key at least as long as the hash
/// output (32 bytes for SHA-256).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// The key that user tokens are checked against; its variant pins the accepted algorithm.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKey {
    /// A shared HMAC secret (`AVATAR_JWT_SECRET`): tokens must be HS256.
    Hs256(Vec<u8>),
    /// A public key in PEM (`AVATAR_JWT_PUBLIC_KEY` or the file named by
    /// `AVATAR_JWT_PUBLIC_KEY_FILE`): tokens must use `algorithm`, one of RS256, ES256 (P-256)
    /// or EdDSA (Ed25519). SPKI (`BEGIN PUBLIC KEY`) is accepted for all three, PKCS#1
    /// (`BEGIN RSA PUBLIC KEY`) for RS256.
    Public {
        /// The one algorithm tokens may use.
        algorithm: Algorithm,
        /// The PEM text of the public key.
        pem: Vec<u8>,
    },
}

impl JwtKey {
    /// Builds the key from the configuration values as an operator writes them: the algorithm
    /// name (`AVATAR_JWT_ALGORITHM`; empty means HS256 when a secret is given), the HMAC secret
    /// and the public key PEM. Exactly one of `secret` and `public_pem` must be given, and it
    /// must fit the algorithm.
    pub fn from_config(
        algorithm: Option<&str>,
        secret: Option<&[u8]>,
        public_pem: Option<Vec<u8>>,
    ) -> Result<Self, String> {
        let algorithm = match algorithm.map(str::trim).filter(|a| !a.is_empty()) {
            Some(name) => Some(parse_algorithm(name)?),
            None => None,
        };
        match (algorithm, secret, public_pem) {
            (_, Some(_), Some(_)) => Err(
                "both a JWT secret and a JWT public key are configured; set only one".to_owned(),
            ),
            (None | Some(Algorithm::HS256), Some(secret), None) => {
                Ok(JwtKey::Hs256(secret.to_vec()))
            }
            (Some(other), Some(_), None) => Err(format!(
                "JWT algorithm {} needs a public key, not a secret",
                algorithm_name(other)
            )),
            (None, None, Some(_)) => Err(
                "a JWT public key is configured without its algorithm (RS256, ES256 or EdDSA)"
                    .to_owned(),
            ),
            (Some(Algorithm::HS256), None, Some(_)) => {
                Err("JWT algorithm HS256 needs a secret, not a public key".to_owned())
            }
            (Some(algorithm), None, Some(pem)) => Ok(JwtKey::Public { algorithm, pem }),
            (_, None, None) => {
                Err("neither a JWT secret nor a JWT public key is configured".to_owned())
            }
        }
    }

    /// The algorithm this key pins.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            JwtKey::Hs256(_) => Algorithm::HS256,
            JwtKey::Public { algorithm, .. } => *algorithm,
        }
    }
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtKey::Hs256(_) => f.write_str("Hs256([redacted])"),
            JwtKey::Public { algorithm, pem } => f
                .debug_struct("Public")
                .field("algorithm", algorithm)
                .field("pem_bytes", &pem.len())
                .finish(),
        }
    }
}

/// Parses an algorithm name as configured (`AVATAR_JWT_ALGORITHM`). Accepted, case-insensitively:
/// `HS256`, `RS256`, `ES256`, `EdDSA`.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    match name.trim().to_ascii_uppercase().as_str() {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        "EDDSA" => Ok(Algorithm::EdDSA),
        _ => Err(format!(
            "unsupported JWT algorithm {name:?}; use HS256, RS256, ES256 or EdDSA"
        )),
    }
}

/// The JOSE name of a supported algorithm, as it appears in a token header.
fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        _ => "unsupported",
    }
}

/// How user tokens are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The verification key, which also pins the algorithm.
    pub key: JwtKey,
    /// When set, tokens must carry exactly this `iss`.
    pub issuer: Option<String>,
    /// When set, tokens must carry this value in `aud` (a string or an array).
    pub audience: Option<String>,
    /// Clock-skew allowance for `exp` and `nbf`, in seconds ([`DEFAULT_LEEWAY_SECS`] is sensible).
    pub leeway_secs: u64,
}

impl JwtSettings {
    /// Settings with no issuer or audience check and the default leeway.
    pub fn new(key: JwtKey) -> Self {
        Self {
            key,
            issuer: None,
            audience: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
}

/// The claims the service uses from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserClaims {
    /// The user id (`sub`): non-empty, at most [`MAX_SUBJECT_BYTES`] bytes.
    pub sub: String,
    /// Expiry (`exp`), unix seconds.
    pub exp: i64,
}

/// Why a token was refused. The messages are safe to show clients: they never quote the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("missing bearer token")]
    Missing,
    /// The token is not a well-formed JWT, or a claim has the wrong type, or `exp` is absent.
    #[error("malformed token")]
    Malformed,
    /// The token's `exp` has passed.
    #[error("token expired")]
    Expired,
    /// The token's `nbf` is still in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// The token's header names another algorithm than the configured one (including `none`).
    #[error("token algorithm not accepted")]
    WrongAlgorithm,
    /// The signature does not verify with the configured key.
    #[error("invalid token signature")]
    BadSignature,
    /// An issuer is configured and the token's `iss` is absent or different.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// An audience is configured and the token's `aud` is absent or does not include it.
    #[error("token audience not accepted")]
    WrongAudience,
    /// `sub` is absent, empty or longer than [`MAX_SUBJECT_BYTES`].
    #[error("token has no valid subject")]
    MissingSubject,
}

impl AuthError {
    /// A stable kebab-case code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing-token",
            AuthError::Malformed => "malformed-token",
            AuthError::Expired => "token-expired",
            AuthError::NotYetValid => "token-not-yet-valid",
            AuthError::WrongAlgorithm => "wrong-token-algorithm",
            AuthError::BadSignature => "bad-token-signature",
            AuthError::WrongIssuer => "wrong-token-issuer",
            AuthError::WrongAudience => "wrong-token-audience",
            AuthError::MissingSubject => "missing-token-subject",
        }
    }
}

/// Checks user tokens against one configured key. Build it once at start-up and share it.
#[derive(Clone)]
pub struct JwtVerifier {
    /// The parsed key; parsing PEM per request would be wasted work.
    key: DecodingKey,
    /// The pinned algorithm.
    algorithm: Algorithm,
    /// Signature, `iss` and `aud` rules handed to `jsonwebtoken`; its own time checks are off
    /// because they read the system clock, and ours take `now` explicitly.
    validation: Validation,
    /// Clock-skew allowance, seconds.
    leeway_secs: i64,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("leeway_secs", &self.leeway_secs)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Parses and checks the key once. Fails with a message naming the problem: a short HMAC
    /// secret, an algorithm that is not supported, a PEM that does not parse or holds the wrong
    /// kind of key (a private key, an RSA key under 2048 bits, a curve other than P-256 for ES256,
    /// a key other than Ed25519 for EdDSA).
    pub fn new(settings: JwtSettings) -> Result<Self, String> {
        let algorithm = settings.key.algorithm();
        let key = match &settings.key {
            JwtKey::Hs256(secret) => {
                if secret.len() < MIN_HS256_SECRET_BYTES {
                    return Err(format!(
                        "the JWT HS256 secret is {} bytes; at least {MIN_HS256_SECRET_BYTES} are \
                         required (RFC 7518 section 3.2)",
                        secret.len()
                    ));
                }
                DecodingKey::from_secret(secret)
            }
            JwtKey::Public { algorithm, pem } => public_key(*algorithm, pem)?,
        };

        let mut validation = Validation::new(algorithm);
        // Time is checked in `verify_at`; `exp` presence too, so that a token without it is
        // reported as malformed rather than by a library error string.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        if let Some(issuer) = settings.issuer.as_deref().filter(|s| !s.is_empty()) {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        match settings.audience.as_deref().filter(|s| !s.is_empty()) {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".to_owned());
                validation.validate_aud = true;
            }
            // Not configured: not checked (the library would otherwise refuse any token that
            // carries an `aud`).
            None => validation.validate_aud = false,
        }

        Ok(Self {
            key,
            algorithm,
            validation,
            leeway_secs: i64::try_from(settings.leeway_secs).unwrap_or(i64::MAX),
        })
    }

    /// The algorithm tokens must use.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Verifies a token at the current wall-clock time.
    pub fn verify(&self, token: &str) -> Result<UserClaims, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.verify_at(token, now)
    }

    /// Verifies a token as of `now` (unix seconds): shape, pinned algorithm, signature, `iss`,
    /// `aud`, then `exp` / `nbf`, then `sub`.
    pub fn verify_at(&self, token: &str, now: i64) -> Result<UserClaims, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        self.check_header(token)?;

        let data = jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation)
            .map_err(|e| classify(e.kind()))?;
        let claims = data.claims;

        let exp = claims
            .exp
            .as_ref()
            .map(numeric_date)
            .ok_or(AuthError::Malformed)??;
        if now >= exp.saturating_add(self.leeway_secs) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = claims.nbf.as_ref().map(numeric_date).transpose()?
            && now.saturating_add(self.leeway_secs) < nbf
        {
            return Err(AuthError::NotYetValid);
        }

        match claims.sub {
            Some(sub) if !sub.is_empty() && sub.len() <= MAX_SUBJECT_BYTES => {
                Ok(UserClaims { sub, exp })
            }
            _ => Err(AuthError::MissingSubject),
        }
    }

    /// Reads the protected header ourselves so that the pinned algorithm is enforced before
    /// anything else, and so that `alg: none` (which `jsonwebtoken` cannot even parse) is
    /// reported as a wrong algorithm rather than as a malformed token.
    fn check_header(&self, token: &str) -> Result<(), AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| AuthError::Malformed)?;
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&header).map_err(|_| AuthError::Malformed)?;
        match header.get("alg").and_then(serde_json::Value::as_str) {
            Some(alg) if alg == algorithm_name(self.algorithm) => {}
            Some(_) => return Err(AuthError::WrongAlgorithm),
            None => return Err(AuthError::Malformed),
        }
        // RFC 7515 §4.1.11: a recipient must refuse critical extensions it does not understand,
        // and this verifier understands none (this also refuses unencoded payloads, `b64: false`).
        if header.contains_key("crit") {
            return Err(AuthError::Malformed);
        }
        Ok(())
    }
}

/// The claims read from the payload; everything else in it is ignored.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<serde_json::Number>,
    #[serde(default)]
    nbf: Option<serde_json::Number>,
}

/// A JWT NumericDate (RFC 7519 §2): seconds, possibly fractional.
fn numeric_date(value: &serde_json::Number) -> Result<i64, AuthError> {
    if let Some(secs) = value.as_i64() {
        return Ok(secs);
    }
    match value.as_f64() {
        // Truncation is the intent: a fractional second never extends a token's life.
        Some(secs) if secs.is_finite() && secs.abs() < 1e15 => Ok(secs.floor() as i64),
        _ => Err(AuthError::Malformed),
    }
}

/// Maps a `jsonwebtoken` failure to what a client may be told.
fn classify(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::WrongAlgorithm,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::WrongAudience,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        // Key problems are caught in `JwtVerifier::new`; if one slipped through, the token is
        // still not verified, which is all the client needs to know.
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => AuthError::BadSignature,
        _ => AuthError::Malformed,
    }
}

/// Parses a PEM public key for `algorithm` and checks it is the right kind of key.
fn public_key(algorithm: Algorithm, pem: &[u8]) -> Result<DecodingKey, String> {
    if pem
        .windows(b"PRIVATE KEY".len())
        .any(|w| w == b"PRIVATE KEY")
    {
        return Err(
            "the JWT public key PEM holds a private key; give the service only the public key"
                .to_owned(),
        );
    }
    match algorithm {
        Algorithm::RS256 => {
            let key = DecodingKey::from_rsa_pem(pem)
                .map_err(|e| format!("the JWT public key is not an RSA public key in PEM: {e}"))?;
            let jwk = Jwk::from_decoding_key(&key, Some(algorithm))
                .map_err(|e| format!("the JWT RSA public key does not parse: {e}"))?;
            let AlgorithmParameters::RSA(rsa) = &jwk.algorithm else {
                return Err("the JWT public key is not an RSA key".to_owned());
            };
            let modulus = URL_SAFE_NO_PAD
                .decode(&rsa.n)
                .map_err(|_| "the JWT RSA public key has an unreadable modulus".to_owned())?;
            let bits = significant_bits(&modulus);
            if !(2048..=8192).contains(&bits) {
                return Err(format!(
                    "the JWT RSA public key has {bits} bits; 2048 to 8192 are accepted"
                ));
            }
            Ok(key)
        }
        Algorithm::ES256 => {
            let key = DecodingKey::from_ec_pem(pem)
                .map_err(|e| format!("the JWT public key is not an EC public key in PEM: {e}"))?;
            match Jwk::from_decoding_key(&key, Some(algorithm)).map(|jwk| jwk.algorithm) {
                Ok(AlgorithmParameters::EllipticCurve(ec)) if ec.curve == EllipticCurve::P256 => {
                    Ok(key)
                }
                _ => Err("ES256 needs an uncompressed P-256 public key".to_owned()),
            }
        }
        Algorithm::EdDSA => {
            let key = DecodingKey::from_ed_pem(pem).map_err(|e| {
                format!("the JWT public key is not an Ed25519 public key in PEM: {e}")
            })?;
            match Jwk::from_decoding_key(&key, Some(algorithm)) {
                Ok(_) => Ok(key),
                Err(_) => Err("EdDSA needs an Ed25519 public key".to_owned()),
            }
        }
        other => Err(format!(
            "JWT algorithm {other:?} is not supported with a public key; use RS256, ES256 or EdDSA"
        )),
    }
}

/// Bit length of a big-endian unsigned integer.
fn significant_bits(be: &[u8]) -> usize {
    let mut bytes = be.iter().skip_while(|b| **b == 0);
    match bytes.next() {
        None => 0,
        Some(first) => (8 - first.leading_zeros() as usize) + 8 * bytes.count(),
    }
}

/// Extracts the token from an `Authorization` header value: the `Bearer` scheme (any case),
/// whitespace, then one non-empty token without whitespace. Anything else gives `None`.
pub fn bearer(header_value: &str) -> Option<&str> {
    let value = header_value.trim();
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches([' ', '\t']);
    if token.is_empty() || token.contains(char::is_whitespace) {
        return None;
    }
    Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::signature::KeyPair as _;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Wraps DER in PEM armour, as `openssl` would write it.
    fn pem(label: &str, der: &[u8]) -> Vec<u8> {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in body.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("ascii"));
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out.into_bytes()
    }

    /// A fresh key pair for `algorithm`: (private key PKCS#8 PEM, public key SPKI PEM).
    /// Generated in the test with aws-lc-rs (already in the tree through jsonwebtoken), so no
    /// key material is committed.
    fn keypair(algorithm: Algorithm) -> (Vec<u8>, Vec<u8>) {
        match algorithm {
            Algorithm::RS256 => {
                let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .expect("key generation");
                let private: aws_lc_rs::encoding::Pkcs8V1Der = kp.as_der().expect("key export");
                let public: aws_lc_rs::encoding::PublicKeyX509Der =
                    kp.public_key().as_der().expect("key export");
                (
                    pem("PRIVATE KEY", private.as_ref()),
                    pem("PUBLIC KEY", public.as_ref()),
                )
            }
            Algorithm::ES256 => {
                let kp = aws_lc_rs::signature::EcdsaKeyPair::generate(
                    &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                )
                .expect("key generation");
                let private = kp.to_pkcs8v1().expect("key export");
                let public: aws_lc_rs::encoding::PublicKeyX509Der =
                    kp.public_key().as_der().expect("key export");
                (
                    pem("PRIVATE KEY", private.as_ref()),
                    pem("PUBLIC KEY", public.as_ref()),
                )
            }
            Algorithm::EdDSA => {
                let kp = aws_lc_rs::signature::Ed25519KeyPair::generate().expect("key generation");
                let private = kp.to_pkcs8v1().expect("key export");
                let public: aws_lc_rs::encoding::PublicKeyX509Der =
                    kp.public_key().as_der().expect("key export");
                (
                    pem("PRIVATE KEY", private.as_ref()),
                    pem("PUBLIC KEY", public.as_ref()),
                )
            }
            other => panic!("no test key pair for {other:?}"),
        }
    }

    fn encoding_key(algorithm: Algorithm, private_pem: &[u8]) -> EncodingKey {
        match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(private_pem).expect("test private key"),
            Algorithm::ES256 => EncodingKey::from_ec_pem(private_pem).expect("test private key"),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(private_pem).expect("test private key"),
            other => panic!("no test encoding key for {other:?}"),
        }
    }

    fn hs_verifier() -> JwtVerifier {
        JwtVerifier::new(JwtSettings::new(JwtKey::Hs256(SECRET.to_vec()))).expect("valid settings")
    }

    fn hs_token(claims: &serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .expect("token encodes")
    }

    /// A token assembled by hand: any header, any payload, an HMAC-SHA256 signature with `key`.
    fn hand_made(header: &serde_json::Value, claims: &serde_json::Value, key: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
        mac.update(signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
    }

    #[test]
    fn accepts_a_valid_hs256_token_and_returns_its_subject() {
        let token = hs_token(&json!({"sub": "user-42", "exp": NOW + 300, "name": "x"}));
        let claims = hs_verifier()
            .verify_at(&token, NOW)
            .expect("token verifies");
        assert_eq!(
            claims,
            UserClaims {
                sub: "user-42".into(),
                exp: NOW + 300
            }
        );
    }

    #[test]
    fn verify_uses_the_wall_clock() {
        let far = 4_000_000_000_i64;
        let token = hs_token(&json!({"sub": "u", "exp": far}));
        assert_eq!(
            hs_verifier().verify(&token).expect("token verifies").exp,
            far
        );
        let token = hs_token(&json!({"sub": "u", "exp": 1_000_000_000}));
        assert_eq!(hs_verifier().verify(&token), Err(AuthError::Expired));
    }

    #[test]
    fn refuses_an_expired_token_once_the_leeway_has_passed() {
        let mut settings = JwtSettings::new(JwtKey::Hs256(SECRET.to_vec()));
        settings.leeway_secs = 30;
        let verifier = JwtVerifier::new(settings).expect("valid settings");
        let token = hs_token(&json!({"sub": "u", "exp": NOW}));
        assert!(verifier.verify_at(&token, NOW + 29).is_ok());
        assert_eq!(
            verifier.verify_at(&token, NOW + 30),
            Err(AuthError::Expired)
        );

        let mut strict = JwtSettings::new(JwtKey::Hs256(SECRET.to_vec()));
        strict.leeway_secs = 0;
        let strict = JwtVerifier::new(strict).expect("valid settings");
        assert!(strict.verify_at(&token, NOW - 1).is_ok());
        assert_eq!(strict.verify_at(&token, NOW), Err(AuthError::Expired));
    }

    #[test]
    fn refuses_a_token_without_exp() {
        let token = hs_token(&json!({"sub": "u"}));
        assert_eq!(
            hs_verifier().verify_at(&token, NOW),
            Err(AuthError::Malformed)
        );
        let token = hs_token(&json!({"sub": "u", "exp": "tomorrow"}));
        assert_eq!(
            hs_verifier().verify_at(&token, NOW),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn accepts_a_fractional_exp_and_enforces_nbf() {
        let token = hs_token(&json!({"sub": "u", "exp": (NOW + 10) as f64 + 0.5}));
        assert_eq!(
            hs_verifier()
                .verify_at(&token, NOW)
                .expect("token verifies")
                .exp,
            NOW + 10
        );

        let token = hs_token(&json!({"sub": "u", "exp": NOW + 600, "nbf": NOW + 300}));
        assert_eq!(
            hs_verifier().verify_at(&token, NOW),
            Err(AuthError::NotYetValid)
        );
        assert!(hs_verifier().verify_at(&token, NOW + 300).is_ok());
    }

    #[test]
    fn refuses_alg_none() {
        let claims = json!({"sub": "admin", "exp": NOW + 300});
        for header in [json!({"alg": "none"}), json!({"alg": "none", "typ": "JWT"})] {
            let unsigned = format!(
                "{}.{}.",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            assert_eq!(
                hs_verifier().verify_at(&unsigned, NOW),
                Err(AuthError::WrongAlgorithm)
            );
        }
        // Case games do not help either.
        let sneaky = hand_made(&json!({"alg": "hs256"}), &claims, SECRET);
        assert_eq!(
            hs_verifier().verify_at(&sneaky, NOW),
            Err(AuthError::WrongAlgorithm)
        );
    }

    #[test]
    fn refuses_a_token_signed_with_another_secret() {
        let token = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "u", "exp": NOW + 300}),
            &EncodingKey::from_secret(b"another-secret-another-secret-another"),
        )
        .expect("token encodes");
        assert_eq!(
            hs_verifier().verify_at(&token, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn refuses_a_token_whose_payload_was_edited() {
        let token = hs_token(&json!({"sub": "alice", "exp": NOW + 300}));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64(json!({"sub": "bob", "exp": NOW + 300})
            .to_string()
            .as_bytes());
        parts[1] = &forged;
        assert_eq!(
            hs_verifier().verify_at(&parts.join("."), NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn refuses_hs256_signed_with_the_rsa_public_key() {
        let (_, public_pem) = keypair(Algorithm::RS256);
        let verifier = JwtVerifier::new(JwtSettings::new(JwtKey::Public {
            algorithm: Algorithm::RS256,
            pem: public_pem.clone(),
        }))
        .expect("valid settings");
        let claims = json!({"sub": "admin", "exp": NOW + 300});
        // The classic confusion: the attacker knows the public key and uses its bytes (as PEM,
        // or as the DER inside it) as an HMAC secret.
        let as_pem = hand_made(&json!({"alg": "HS256", "typ": "JWT"}), &claims, &public_pem);
        assert_eq!(
            verifier.verify_at(&as_pem, NOW),
            Err(AuthError::WrongAlgorithm)
        );
        // The same token with the header claiming RS256 but carrying an HMAC: a bad signature.
        let relabelled = hand_made(&json!({"alg": "RS256"}), &claims, &public_pem);
        assert_eq!(
            verifier.verify_at(&relabelled, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn refuses_an_rs256_token_when_hs256_is_configured() {
        let (private_pem, _) = keypair(Algorithm::RS256);
        let token = encode(
            &Header::new(Algorithm::RS256),
            &json!({"sub": "u", "exp": NOW + 300}),
            &encoding_key(Algorithm::RS256, &private_pem),
        )
        .expect("token encodes");
        assert_eq!(
            hs_verifier().verify_at(&token, NOW),
            Err(AuthError::WrongAlgorithm)
        );
    }

    #[test]
    fn accepts_valid_rs256_es256_and_eddsa_tokens_with_their_public_keys() {
        for algorithm in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
            let (private_pem, public_pem) = keypair(algorithm);
            let verifier = JwtVerifier::new(JwtSettings::new(JwtKey::Public {
                algorithm,
                pem: public_pem,
            }))
            .expect("valid settings");
            let token = encode(
                &Header::new(algorithm),
                &json!({"sub": format!("user-{algorithm:?}"), "exp": NOW + 60}),
                &encoding_key(algorithm, &private_pem),
            )
            .expect("token encodes");
            assert_eq!(
                verifier.verify_at(&token, NOW).expect("token verifies").sub,
                format!("user-{algorithm:?}")
            );

            // Someone else's key pair of the same kind does not pass.
            let (other_private, _) = keypair(algorithm);
            let forged = encode(
                &Header::new(algorithm),
                &json!({"sub": "u", "exp": NOW + 60}),
                &encoding_key(algorithm, &other_private),
            )
            .expect("token encodes");
            assert_eq!(
                verifier.verify_at(&forged, NOW),
                Err(AuthError::BadSignature),
                "{algorithm:?}"
            );
        }
    }

    #[test]
    fn checks_issuer_and_audience_only_when_configured() {
        let mut settings = JwtSettings::new(JwtKey::Hs256(SECRET.to_vec()));
        settings.issuer = Some("https://id.example".into());
        settings.audience = Some("avatar-proxy".into());
        let strict = JwtVerifier::new(settings).expect("valid settings");
        let exp = NOW + 300;

        let good = hs_token(
            &json!({"sub": "u", "exp": exp, "iss": "https://id.example", "aud": "avatar-proxy"}),
        );
        assert!(strict.verify_at(&good, NOW).is_ok());
        let aud_list = hs_token(
            &json!({"sub": "u", "exp": exp, "iss": "https://id.example", "aud": ["x", "avatar-proxy"]}),
        );
        assert!(strict.verify_at(&aud_list, NOW).is_ok());

        let wrong_iss = hs_token(
            &json!({"sub": "u", "exp": exp, "iss": "https://evil", "aud": "avatar-proxy"}),
        );
        assert_eq!(
            strict.verify_at(&wrong_iss, NOW),
            Err(AuthError::WrongIssuer)
        );
        let no_iss = hs_token(&json!({"sub": "u", "exp": exp, "aud": "avatar-proxy"}));
        assert_eq!(strict.verify_at(&no_iss, NOW), Err(AuthError::WrongIssuer));

        let wrong_aud = hs_token(
            &json!({"sub": "u", "exp": exp, "iss": "https://id.example", "aud": "billing"}),
        );
        assert_eq!(
            strict.verify_at(&wrong_aud, NOW),
            Err(AuthError::WrongAudience)
        );
        let no_aud = hs_token(&json!({"sub": "u", "exp": exp, "iss": "https://id.example"}));
        assert_eq!(
            strict.verify_at(&no_aud, NOW),
            Err(AuthError::WrongAudience)
        );

        // Unconfigured: whatever iss/aud the token carries is not our business.
        assert!(hs_verifier().verify_at(&wrong_iss, NOW).is_ok());
        assert!(hs_verifier().verify_at(&wrong_aud, NOW).is_ok());
    }

    #[test]
    fn requires_a_non_empty_bounded_subject() {
        let v = hs_verifier();
        let exp = NOW + 300;
        assert_eq!(
            v.verify_at(&hs_token(&json!({"exp": exp})), NOW),
            Err(AuthError::MissingSubject)
        );
        assert_eq!(
            v.verify_at(&hs_token(&json!({"sub": "", "exp": exp})), NOW),
            Err(AuthError::MissingSubject)
        );
        let long = "x".repeat(MAX_SUBJECT_BYTES + 1);
        assert_eq!(
            v.verify_at(&hs_token(&json!({"sub": long, "exp": exp})), NOW),
            Err(AuthError::MissingSubject)
        );
        let longest = "x".repeat(MAX_SUBJECT_BYTES);
        assert!(
            v.verify_at(&hs_token(&json!({"sub": longest, "exp": exp})), NOW)
                .is_ok()
        );
        assert_eq!(
            v.verify_at(&hs_token(&json!({"sub": 42, "exp": exp})), NOW),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        let v = hs_verifier();
        assert_eq!(v.verify_at("", NOW), Err(AuthError::Missing));
        assert_eq!(v.verify_at("   ", NOW), Err(AuthError::Missing));
        let valid = hs_token(&json!({"sub": "u", "exp": NOW + 300}));
        let too_long = "a".repeat(MAX_TOKEN_BYTES + 1);
        for garbage in [
            "abc",
            "a.b",
            "a.b.c.d",
            "....",
            "!!!.!!!.!!!",
            "e30.e30.",
            "bnVsbA.e30.",
            too_long.as_str(),
            &format!("{valid}.extra"),
            &valid[..valid.len() - 3],
        ] {
            let err = v.verify_at(garbage, NOW).expect_err("must be refused");
            assert!(
                matches!(err, AuthError::Malformed | AuthError::BadSignature),
                "{garbage:.40}: {err:?}"
            );
        }
        let crit = hand_made(
            &json!({"alg": "HS256", "crit": ["exp"], "exp": 1}),
            &json!({"sub": "u", "exp": NOW + 300}),
            SECRET,
        );
        assert_eq!(v.verify_at(&crit, NOW), Err(AuthError::Malformed));
    }

    #[test]
    fn error_messages_never_quote_the_token() {
        let token = hs_token(&json!({"sub": "secret-user", "exp": NOW - 1000}));
        let err = hs_verifier()
            .verify_at(&token, NOW)
            .expect_err("must be refused");
        let shown = format!("{err} {err:?} {}", err.code());
        assert!(!shown.contains("secret-user") && !shown.contains(&token[..10]));
    }

    #[test]
    fn new_names_the_problem_with_a_bad_key() {
        let short = JwtVerifier::new(JwtSettings::new(JwtKey::Hs256(b"short".to_vec())));
        assert!(short.expect_err("must be refused").contains("at least 32"));

        let not_pem = JwtVerifier::new(JwtSettings::new(JwtKey::Public {
            algorithm: Algorithm::RS256,
            pem: b"not a key".to_vec(),
        }));
        assert!(
            not_pem
                .expect_err("must be refused")
                .contains("not an RSA public key")
        );

        let (rsa_private, rsa_public) = keypair(Algorithm::RS256);
        let private = JwtVerifier::new(JwtSettings::new(JwtKey::Public {
            algorithm: Algorithm::RS256,
            pem: rsa_private,
        }));
        assert!(
            private
                .expect_err("must be refused")
                .contains("private key")
        );

        let rsa_as_ec = JwtVerifier::new(JwtSettings::new(JwtKey::Public {
            algorithm: Algorithm::ES256,
            pem: rsa_public.clone(),
        }));
        assert!(
            rsa_as_ec
                .expect_err("must be refused")
                .contains("EC public key")
        );

        let (_, ed_public) = keypair(Algorithm::EdDSA);
        let ed_as_rsa = JwtVerifier::new(JwtSettings::new(JwtKey::Public {
            algorithm: Algorithm::RS256,
            pem: ed_public,
        }));
        assert!(ed_as_rsa.is_err());

        let unsupported = JwtVerifier::new(JwtSettings::new(JwtKey::Public {
            algorithm: Algorithm::PS256,
            pem: rsa_public.clone(),
        }));
        assert!(
            unsupported
                .expect_err("must be refused")
                .contains("not supported")
        );

        let hs_as_public = JwtVerifier::new(JwtSettings::new(JwtKey::Public {
            algorithm: Algorithm::HS256,
            pem: rsa_public,
        }));
        assert!(
            hs_as_public
                .expect_err("must be refused")
                .contains("not supported")
        );
    }

    #[test]
    fn builds_keys_from_configuration_values() {
        assert_eq!(
            JwtKey::from_config(None, Some(SECRET), None).expect("valid configuration"),
            JwtKey::Hs256(SECRET.to_vec())
        );
        assert_eq!(
            JwtKey::from_config(Some("eddsa"), None, Some(b"pem".to_vec()))
                .expect("valid configuration"),
            JwtKey::Public {
                algorithm: Algorithm::EdDSA,
                pem: b"pem".to_vec()
            }
        );
        assert!(
            JwtKey::from_config(Some("RS512"), None, Some(vec![]))
                .expect_err("must be refused")
                .contains("unsupported JWT algorithm")
        );
        assert!(JwtKey::from_config(Some("none"), Some(SECRET), None).is_err());
        assert!(JwtKey::from_config(Some("RS256"), Some(SECRET), None).is_err());
        assert!(JwtKey::from_config(None, None, Some(vec![])).is_err());
        assert!(JwtKey::from_config(None, Some(SECRET), Some(vec![])).is_err());
        assert!(JwtKey::from_config(None, None, None).is_err());
        assert!(!format!("{:?}", JwtKey::Hs256(SECRET.to_vec())).contains("0123"));
    }

    #[test]
    fn bearer_extracts_the_token() {
        assert_eq!(bearer("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("BEARER\tabc"), Some("abc"));
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer("Bearer a b"), None);
        assert_eq!(bearer("Bearerabc"), None);
        assert_eq!(bearer(""), None);
    }
}
