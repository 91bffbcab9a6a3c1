//! The one error type of the HTTP edge: every failure leaves as
//! `{"code", "message", "user_message"}` with the right status, and is logged once, here.
//!
//! Services keep their own `thiserror` enums; they become an [`ApiError`] through `From`
//! conversions that decide what a client may learn. Internal details (paths, upstream URLs,
//! database messages) travel in the response's extensions to [`log_errors`], the one layer that
//! logs them, and never reach the body.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub use crate::fault::{TRY_AGAIN, TRY_LATER};
use crate::identities::IdentityError;
use crate::repo::RepoError;
use crate::store::StoreError;
use crate::uploads::UploadError;

/// What a client is told.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    user_message: &'static str,
    www_authenticate: Option<&'static str>,
    /// What few refusals add (boxed: most errors carry none of it).
    extra: Option<Box<Extra>>,
    /// What went wrong on our side, for the log only.
    cause: Option<String>,
}

/// The rarely used parts of an [`ApiError`].
#[derive(Debug, Default)]
struct Extra {
    /// `Retry-After`, in whole seconds (429, 503).
    retry_after: Option<u64>,
    /// The job a refusal is about (`409 job-exists`), sent as `job_id` in the body.
    job_id: Option<String>,
    /// Send `Connection: close`.
    close: bool,
}

/// Attached to every error response so [`log_errors`] can log it once, with its cause.
#[derive(Debug, Clone)]
pub struct LoggedError {
    /// Machine-readable code.
    pub code: &'static str,
    /// The message the client got.
    pub message: String,
    /// The internal cause, when there is one (never sent to the client).
    pub cause: Option<Arc<str>>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    user_message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_id: Option<&'a str>,
}

impl ApiError {
    /// A client mistake (400-range) with a precise message.
    pub fn client(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            user_message: TRY_AGAIN,
            www_authenticate: None,
            extra: None,
            cause: None,
        }
    }

    /// 400 with a code and message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404.
    pub fn not_found(what: &str) -> Self {
        Self::client(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{what} not found"),
        )
    }

    /// 401 with a `WWW-Authenticate` challenge.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.into(),
            user_message: crate::fault::SIGN_IN_AGAIN,
            www_authenticate: Some("Bearer"),
            extra: None,
            cause: None,
        }
    }

    /// A fault on our side: reported without its cause, which [`log_errors`] logs.
    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "the service failed to handle this request".into(),
            user_message: TRY_LATER,
            www_authenticate: None,
            extra: None,
            cause: Some(format!("{context}: {cause}")),
        }
    }

    /// A dependency is down (database, store).
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code,
            message: message.into(),
            user_message: TRY_LATER,
            www_authenticate: None,
            extra: None,
            cause: None,
        }
    }

    /// 429 `rate-limited` with `Retry-After: seconds` (RFC 6585 §4): this client sent more
    /// requests than its limit allows; it may try again after `seconds`.
    pub fn rate_limited(seconds: u64) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate-limited",
            message: format!("too many requests from this client; retry after {seconds} s"),
            user_message: TRY_LATER,
            www_authenticate: None,
            extra: Some(Box::new(Extra {
                retry_after: Some(seconds.max(1)),
                ..Extra::default()
            })),
            cause: None,
        }
    }

    /// Record the internal cause (logged once by [`log_errors`], never sent).
    pub fn caused_by(mut self, cause: &dyn std::fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    /// The same error with another status (for responses reshaped into this form).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Send `Retry-After` (rounded up to whole seconds, at least 1).
    pub fn with_retry_after(mut self, after: std::time::Duration) -> Self {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        self.extra.get_or_insert_default().retry_after = Some(secs.max(1));
        self
    }

    /// Ask for the connection to be closed after this response (`Connection: close`): for
    /// refusals sent before a request body was read, so the body is never waited for.
    pub fn closing_connection(mut self) -> Self {
        self.extra.get_or_insert_default().close = true;
        self
    }

    /// Name the job a refusal is about (`job_id` in the body).
    pub fn with_job_id(mut self, job_id: impl Into<String>) -> Self {
        self.extra.get_or_insert_default().job_id = Some(job_id.into());
        self
    }

    /// Override the human-facing message.
    pub fn with_user_message(mut self, user_message: &'static str) -> Self {
        self.user_message = user_message;
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            code: self.code,
            message: &self.message,
            user_message: self.user_message,
            job_id: self.extra.as_ref().and_then(|e| e.job_id.as_deref()),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(challenge) = self.www_authenticate {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        let extra = self.extra.unwrap_or_default();
        if extra.close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(secs) = extra.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response.extensions_mut().insert(LoggedError {
            code: self.code,
            message: self.message,
            cause: self.cause.map(Arc::from),
        });
        response
    }
}

/// The layer that logs every error response once: server faults as errors with their cause,
/// refusals at debug level (a client's mistake is not an operator's problem).
pub async fn log_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    if let Some(e) = response.extensions().get::<LoggedError>() {
        let status = response.status();
        if status.is_server_error() {
            tracing::error!(%status, code = e.code, cause = e.cause.as_deref().unwrap_or(""), "request failed");
        } else {
            tracing::debug!(%status, code = e.code, message = %e.message, "request refused");
        }
    }
    response
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        ApiError::unavailable("metadata-unavailable", "the metadata store is unavailable")
            .caused_by(&e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::unavailable("store-unavailable", "the image store is unavailable").caused_by(&e)
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        let message = e.to_string();
        match e {
            IdentityError::Repo(e) => e.into(),
            IdentityError::TooManyRecords(_) => {
                ApiError::client(StatusCode::PAYLOAD_TOO_LARGE, "too-many-records", message)
            }
            IdentityError::InvalidUserId => ApiError::bad_request("invalid-user-id", message),
            IdentityError::UpstreamNotAllowed(_) => ApiError::client(
                StatusCode::UNPROCESSABLE_ENTITY,
                "upstream-not-allowed",
                message,
            ),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        use UploadError as U;
        let message = e.to_string();
        let (status, code) = match e {
            U::Repo(e) => return e.into(),
            U::Store(e) => return e.into(),
            U::UnsupportedType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-type"),
            U::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too-large"),
            U::UrlExpired => (StatusCode::FORBIDDEN, "upload-url-expired"),
            U::InvalidSignature => (StatusCode::FORBIDDEN, "invalid-signature"),
            U::ContentTypeMismatch(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "content-type-mismatch")
            }
            U::AlreadyUploaded => (StatusCode::CONFLICT, "already-uploaded"),
            U::NotFound | U::JobNotFound | U::NoAvatar => (StatusCode::NOT_FOUND, "not-found"),
            U::Incomplete => (StatusCode::CONFLICT, "upload-incomplete"),
            U::Expired => (StatusCode::GONE, "upload-expired"),
            U::UnsupportedImage => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-image"),
            U::InvalidImage(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-image"),
            U::TooComplex(_) => (StatusCode::UNPROCESSABLE_ENTITY, "image-too-complex"),
            U::InvalidCrop(_) => (StatusCode::BAD_REQUEST, "invalid-crop"),
            U::Busy => {
                return ApiError::unavailable("uploads-busy", message)
                    .with_retry_after(std::time::Duration::from_secs(1));
            }
            U::GrantQuota { retry_after } => {
                return ApiError::client(StatusCode::TOO_MANY_REQUESTS, "upload-quota", message)
                    .with_user_message(TRY_LATER)
                    .with_retry_after(retry_after);
            }
            U::OriginalsQuota { retry_after } => {
                return ApiError::client(StatusCode::TOO_MANY_REQUESTS, "originals-quota", message)
                    .with_user_message(TRY_LATER)
                    .with_retry_after(retry_after);
            }
            U::JobExists(job_id) => {
                return ApiError::client(StatusCode::CONFLICT, "job-exists", message)
                    .with_job_id(job_id.as_str());
            }
            U::NotRetryable(_) => (StatusCode::CONFLICT, "job-not-retryable"),
        };
        ApiError::client(status, code, message)
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection as J;
        match e {
            J::MissingJsonContentType(_) => ApiError::client(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "expected Content-Type: application/json",
            ),
            J::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::client(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    "request body too large",
                )
            }
            J::JsonDataError(e) => ApiError::client(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-request",
                e.body_text(),
            ),
            other => ApiError::bad_request("invalid-json", other.body_text()),
        }
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_upload_refusal_keeps_its_status_and_code() {
        let cases = [
            (UploadError::TooLarge(10), 413, "too-large"),
            (UploadError::UrlExpired, 403, "upload-url-expired"),
            (UploadError::AlreadyUploaded, 409, "already-uploaded"),
            (UploadError::Expired, 410, "upload-expired"),
            (UploadError::InvalidCrop("x".into()), 400, "invalid-crop"),
            (UploadError::InvalidImage("x".into()), 422, "invalid-image"),
            (
                UploadError::Store(StoreError::NotFound),
                503,
                "store-unavailable",
            ),
        ];
        for (error, status, code) in cases {
            let api = ApiError::from(error);
            assert_eq!((api.status().as_u16(), api.code()), (status, code));
        }
    }

    #[test]
    fn a_backend_cause_reaches_the_log_layer_never_the_body() {
        let error = ApiError::from(StoreError::Backend("/var/cache/store: disk on fire".into()));
        let response = error.into_response();
        let logged = response
            .extensions()
            .get::<LoggedError>()
            .expect("attached for the log layer")
            .clone();
        assert!(
            logged
                .cause
                .as_deref()
                .is_some_and(|c| c.contains("disk on fire"))
        );
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!logged.message.contains("disk on fire"));
    }
}
