//! The authenticated fetcher.
//!
//! Redirects are followed by hand (at most [`MAX_REDIRECTS`]) so every hop is checked against the
//! allow-list and the address rules, and the credential is only attached on the original origin.
//! The body is read chunk by chunk under a byte cap, then sniffed and probed (dimensions) before
//! anyone may cache it. Sign-in pages in any disguise (203, HTML, a redirect to a login page,
//! 401/403) are authentication failures: counted, reported, never cached.
//!
//! Around each request: [`Health`] refuses at once while an upstream backs off (`Retry-After`,
//! failures in a row) or a URL failed recently, [`Slots`] bounds requests in flight overall and
//! per upstream (with a queue timeout), and [`Reporter`] turns failures into rate-limited
//! warnings. `Content-Encoding: gzip | deflate | br` is decoded by the client; the byte cap
//! applies to the decoded bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use url::Url;

use super::guard::{BlockedAddress, PublicOnlyResolver, refuses_literal};
use super::health::{Health, parse_retry_after};
use super::limits::Slots;
use super::redirect::{Chain, Hop, follow_location};
use super::report::{Reporter, Trouble};
use super::{FetchSettings, Upstream, Upstreams};
use crate::clock::Clock;
use crate::imaging::{self, ImageKind};

/// Redirect hops followed at most.
pub const MAX_REDIRECTS: usize = 3;

/// Validators for a conditional request, as the upstream sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validators {
    /// `ETag`.
    pub etag: Option<String>,
    /// `Last-Modified`.
    pub last_modified: Option<String>,
}

impl Validators {
    fn from_headers(headers: &HeaderMap) -> Self {
        let get = |name| {
            headers
                .get(name)
                .and_then(|v: &header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        Self {
            etag: get(header::ETAG),
            last_modified: get(header::LAST_MODIFIED),
        }
    }

    fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// A successfully fetched image, sniffed and probed.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The image bytes.
    pub bytes: Bytes,
    /// What the magic bytes say it is.
    pub kind: ImageKind,
    /// For the next conditional request.
    pub validators: Validators,
}

/// What an upstream answered.
#[derive(Debug, Clone)]
pub enum FetchOutcome {
    /// A new image.
    Fetched(Fetched),
    /// 304: the cached copy is still current.
    NotModified(Validators),
    /// 404 or 410: this user has no avatar there.
    NotFound,
}

/// Why a fetch failed. Messages never contain the URL or the credential.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The URL (or a redirect) is not on an allow-listed host.
    #[error("host not allow-listed")]
    NotAllowed,
    /// The host resolved to a refused address.
    #[error("address refused by the SSRF guard")]
    BlockedAddress,
    /// The upstream wants credentials we do not have (or it showed a sign-in page).
    #[error("authentication failed: {0}")]
    AuthFailure(&'static str),
    /// Any other unexpected status.
    #[error("upstream answered HTTP {0}")]
    Status(u16),
    /// `429 Too Many Requests` or `503 Service Unavailable`, with the `Retry-After` it sent
    /// (RFC 9110 §10.2.3), if any.
    #[error("upstream throttled us{}", .0.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    Throttled(Option<Duration>),
    /// Not asked: the upstream is backing off (throttled or failing), or this URL failed
    /// recently. No request was made.
    #[error("upstream backing off; not asked")]
    CoolingDown,
    /// No download slot freed up within the queue timeout. No request was made.
    #[error("no download slot within the queue timeout")]
    NoSlot,
    /// `304 Not Modified` to a request that sent no validators: nothing it could refer to
    /// (RFC 9110 §15.4.5 allows 304 only for a conditional GET).
    #[error("upstream answered 304 to an unconditional request")]
    UnsolicitedNotModified,
    /// More than [`MAX_REDIRECTS`] hops.
    #[error("too many redirects")]
    TooManyRedirects,
    /// The body exceeded the byte cap.
    #[error("image exceeds {0} bytes")]
    TooLarge(usize),
    /// The bytes are not PNG, JPEG, GIF or WebP.
    #[error("body is not a supported image")]
    NotAnImage,
    /// An image, but refused (dimensions over the limits, corrupt header).
    #[error("image refused: {0}")]
    BadImage(String),
    /// Connect or total timeout.
    #[error("timed out")]
    Timeout,
    /// Connection failures, truncated bodies.
    #[error("network error: {0}")]
    Network(String),
}

impl UpstreamError {
    /// Metrics label.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::NotAllowed => "not_allowed",
            Self::BlockedAddress => "blocked_address",
            Self::AuthFailure(_) => "auth_failure",
            Self::Status(_) | Self::UnsolicitedNotModified => "http_error",
            Self::Throttled(_) => "throttled",
            Self::CoolingDown => "backoff",
            Self::NoSlot => "no_slot",
            Self::TooManyRedirects => "too_many_redirects",
            Self::TooLarge(_) => "too_large",
            Self::NotAnImage => "not_an_image",
            Self::BadImage(_) => "bad_image",
            Self::Timeout => "timeout",
            Self::Network(_) => "network",
        }
    }

    fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            return Self::Timeout;
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<BlockedAddress>() {
                return Self::BlockedAddress;
            }
            source = err.source();
        }
        Self::Network(e.without_url().to_string())
    }
}

/// Fetches avatars from allow-listed upstreams.
pub struct Fetcher {
    upstreams: Upstreams,
    /// Resolves through [`PublicOnlyResolver`]: the default for every upstream.
    public: reqwest::Client,
    /// Plain resolver, only for redirect chains that stay on `allow_private` upstreams.
    private: reqwest::Client,
    /// Download slots, global and per upstream, with a queue timeout.
    slots: Slots,
    /// Backoff state per upstream and per failed URL.
    health: Health,
    /// Rate-limited operator warnings.
    reporter: Reporter,
    clock: Arc<dyn Clock>,
    max_bytes: usize,
    limits: imaging::Limits,
}

impl Fetcher {
    /// Build the HTTP clients (decoding `gzip`, `deflate` and `br` bodies) and the state kept
    /// per upstream; backoff deadlines and warning intervals follow `clock`.
    pub fn new(
        upstreams: Upstreams,
        settings: FetchSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, reqwest::Error> {
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(settings.timeout)
                .connect_timeout(settings.connect_timeout)
                .no_proxy()
                .gzip(true)
                .deflate(true)
                .brotli(true)
                .user_agent(concat!("avatar-proxy/", env!("CARGO_PKG_VERSION")))
        };
        let slots = Slots::new(
            settings.max_concurrent,
            upstreams
                .iter()
                .map(|u| (u.name.as_str(), u.max_concurrent)),
            settings.queue_timeout,
        );
        Ok(Self {
            public: builder().dns_resolver(PublicOnlyResolver).build()?,
            private: builder().build()?,
            slots,
            health: Health::new(clock.clone(), settings.backoff),
            reporter: Reporter::new(clock.clone(), settings.warn_interval),
            clock,
            upstreams,
            max_bytes: settings.max_bytes,
            limits: settings.limits,
        })
    }

    /// The allow-list.
    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// Fetch `url`, conditionally when validators are given.
    pub async fn fetch(
        &self,
        url: &Url,
        validators: Option<&Validators>,
    ) -> Result<FetchOutcome, UpstreamError> {
        let Some(origin) = self.upstreams.for_url(url).cloned() else {
            metrics::counter!("avatar_upstream_requests_total", "upstream" => "none", "outcome" => "not_allowed").increment(1);
            return Err(UpstreamError::NotAllowed);
        };
        let started = Instant::now();
        let result = match self.health.admit(&origin.name, url.as_str()) {
            Err(e) => Err(e),
            Ok(()) => match self.slots.acquire(&origin.name).await {
                Err(e) => Err(e),
                Ok(_slot) => self.fetch_hops(&origin, url, validators).await,
            },
        };
        self.health.record(&origin.name, url.as_str(), &result);
        let outcome = match &result {
            Ok(FetchOutcome::Fetched(_)) => "fetched",
            Ok(FetchOutcome::NotModified(_)) => "not_modified",
            Ok(FetchOutcome::NotFound) => "not_found",
            Err(e) => e.outcome(),
        };
        let name = origin.name.clone();
        metrics::counter!("avatar_upstream_requests_total", "upstream" => name.clone(), "outcome" => outcome).increment(1);
        if !matches!(result, Err(UpstreamError::CoolingDown)) {
            // Includes the wait for a slot: what a caller waited for this upstream.
            metrics::histogram!("avatar_upstream_request_duration_seconds", "upstream" => name.clone())
                .record(started.elapsed().as_secs_f64());
        }
        if let Err(e) = &result {
            match Trouble::of(e) {
                Some(kind) => {
                    self.reporter.report(&name, kind, e);
                }
                None => tracing::debug!(upstream = %name, error = %e, "upstream not asked"),
            }
        }
        result
    }

    /// Bytes of `url` fetched fine but could not be decoded into an image: reported like any
    /// other upstream trouble (the caller remembers the URL like a 404).
    pub fn report_undecodable(&self, url: &Url, error: &dyn std::fmt::Display) {
        let name = self
            .upstreams
            .for_url(url)
            .map_or("none", |u| u.name.as_str());
        metrics::counter!("avatar_upstream_undecodable_total", "upstream" => name.to_owned())
            .increment(1);
        self.reporter.report(name, Trouble::Undecodable, error);
    }

    /// Forget the failure memory of `url` (purges).
    pub fn forget_failures(&self, url: &str) {
        self.health.forget_url(url);
    }

    async fn fetch_hops(
        &self,
        origin: &Arc<Upstream>,
        url: &Url,
        validators: Option<&Validators>,
    ) -> Result<FetchOutcome, UpstreamError> {
        let mut current = url.clone();
        let mut chain = Chain::new(url, origin);
        for hop in 0..=MAX_REDIRECTS {
            let upstream = if hop == 0 {
                origin.clone()
            } else {
                self.upstreams
                    .for_url(&current)
                    .cloned()
                    .ok_or(UpstreamError::NotAllowed)?
            };
            let Hop { on_origin, private } = chain.hop(&current, &upstream);
            if !private && refuses_literal(&current) {
                return Err(UpstreamError::BlockedAddress);
            }
            let client = if private { &self.private } else { &self.public };
            let mut request = client.get(current.clone()).header(
                header::ACCEPT,
                "image/webp,image/png,image/jpeg,image/gif;q=0.9,*/*;q=0.1",
            );
            let conditional = on_origin && validators.is_some_and(|v| !v.is_empty());
            if on_origin {
                request = origin.credential.apply(request);
                if let Some(v) = validators {
                    if let Some(etag) = &v.etag {
                        request = request.header(header::IF_NONE_MATCH, etag);
                    }
                    if let Some(lm) = &v.last_modified {
                        request = request.header(header::IF_MODIFIED_SINCE, lm);
                    }
                }
            }
            let response = request.send().await.map_err(UpstreamError::from_reqwest)?;
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            {
                let now = self.clock.now_millis();
                let after = response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| parse_retry_after(v.as_bytes(), now));
                return Err(UpstreamError::Throttled(after));
            }
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let next = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| follow_location(&current, v.as_bytes()))
                    .ok_or(UpstreamError::Status(status.as_u16()))?;
                if looks_like_sign_in(&next) {
                    return Err(UpstreamError::AuthFailure("redirect to a sign-in page"));
                }
                current = next;
                continue;
            }
            return match status {
                StatusCode::NOT_MODIFIED if !conditional => {
                    Err(UpstreamError::UnsolicitedNotModified)
                }
                StatusCode::NOT_MODIFIED => {
                    let fresh = Validators::from_headers(response.headers());
                    Ok(FetchOutcome::NotModified(if fresh.is_empty() {
                        validators.cloned().unwrap_or_default()
                    } else {
                        fresh
                    }))
                }
                StatusCode::NON_AUTHORITATIVE_INFORMATION => {
                    Err(UpstreamError::AuthFailure("HTTP 203 (sign-in page)"))
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    Err(UpstreamError::AuthFailure("HTTP 401/403"))
                }
                StatusCode::NOT_FOUND | StatusCode::GONE => Ok(FetchOutcome::NotFound),
                s if !s.is_success() => Err(UpstreamError::Status(s.as_u16())),
                _ => self.read_image(response).await.map(FetchOutcome::Fetched),
            };
        }
        Err(UpstreamError::TooManyRedirects)
    }

    async fn read_image(&self, mut response: reqwest::Response) -> Result<Fetched, UpstreamError> {
        let validators = Validators::from_headers(response.headers());
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("text/html") || content_type.contains("xhtml") {
            return Err(UpstreamError::AuthFailure("HTML page instead of an image"));
        }
        if response
            .content_length()
            .is_some_and(|len| len > self.max_bytes as u64)
        {
            return Err(UpstreamError::TooLarge(self.max_bytes));
        }
        let mut body = BytesMut::with_capacity(
            response
                .content_length()
                .map_or(16 * 1024, |l| l as usize)
                .min(self.max_bytes),
        );
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(UpstreamError::from_reqwest)?
        {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(UpstreamError::TooLarge(self.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        let bytes = body.freeze();
        if looks_like_html(&bytes) {
            return Err(UpstreamError::AuthFailure("HTML page instead of an image"));
        }
        let kind = imaging::sniff(&bytes).ok_or(UpstreamError::NotAnImage)?;
        imaging::probe(&bytes, &self.limits).map_err(|e| UpstreamError::BadImage(e.to_string()))?;
        Ok(Fetched {
            bytes,
            kind,
            validators,
        })
    }
}

/// Sign-in pages that identity providers redirect unauthenticated image requests to.
fn looks_like_sign_in(url: &Url) -> bool {
    let host = url.host_str().unwrap_or("").to_ascii_lowercase();
    let path = url.path().to_ascii_lowercase();
    let query = url.query().unwrap_or("").to_ascii_lowercase();
    host.starts_with("login.")
        || host.starts_with("signin.")
        || host.starts_with("sso.")
        || [
            "login",
            "signin",
            "sign_in",
            "sign-in",
            "/oauth",
            "/authorize",
            "/saml",
            "/sso",
        ]
        .iter()
        .any(|needle| path.contains(needle))
        || query.contains("returnurl=")
        || query.contains("redirect_uri=")
}

/// HTML sniffing of the first bytes, whatever the Content-Type claimed.
fn looks_like_html(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(512)];
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let trimmed = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    trimmed.starts_with("<!doctype html")
        || trimmed.starts_with("<html")
        || trimmed.starts_with("<head")
        || trimmed.starts_with("<body")
        || (trimmed.starts_with('<') && text.contains("<html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_redirects_are_recognised() {
        for url in [
            "https://login.microsoftonline.com/common/oauth2/authorize?x=1",
            "https://dev.azure.com/_signin?realm=x",
            "https://gitlab.example.com/users/sign_in",
            "https://app.vssps.visualstudio.com/_signin?returnUrl=/x",
        ] {
            assert!(looks_like_sign_in(&Url::parse(url).expect("url")), "{url}");
        }
        assert!(!looks_like_sign_in(
            &Url::parse("https://cdn.example.com/avatars/42.png").expect("url")
        ));
    }

    #[test]
    fn html_is_recognised_behind_whitespace_and_bom() {
        assert!(looks_like_html(b"  \n<!DOCTYPE html><html>"));
        assert!(looks_like_html("\u{feff}<html lang=en>".as_bytes()));
        assert!(looks_like_html(b"<?xml version=\"1.0\"?><html>"));
        assert!(!looks_like_html(b"\x89PNG\r\n\x1a\n"));
    }
}
