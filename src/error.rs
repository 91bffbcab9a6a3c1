//! The one error type of the HTTP edge: every failure leaves as
//! `{"code", "message", "user_message"}` with the right status, and is logged once, here.
//!
//! Subsystems keep their own `thiserror` enums; they become an [`ApiError`] through `From`
//! conversions that decide what a client may learn. Internal details (paths, upstream URLs,
//! database messages) are logged, never returned.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// What a client is told.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    user_message: &'static str,
    www_authenticate: Option<&'static str>,
}

/// Shown to people when the fault is ours or transient.
pub const TRY_LATER: &str = "Try again later";
/// Shown to people when their input was wrong.
pub const TRY_AGAIN: &str = "Try again";

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    user_message: &'a str,
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
            user_message: "Sign in again",
            www_authenticate: Some("Bearer"),
        }
    }

    /// A fault on our side: logged with its cause, reported without it.
    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "{context}");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "the service failed to handle this request".into(),
            user_message: TRY_LATER,
            www_authenticate: None,
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
        }
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
        if self.status.is_client_error() {
            tracing::debug!(status = %self.status, code = self.code, message = %self.message, "request refused");
        }
        let body = Body {
            code: self.code,
            message: &self.message,
            user_message: self.user_message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(challenge) = self.www_authenticate {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

impl From<crate::repo::RepoError> for ApiError {
    fn from(e: crate::repo::RepoError) -> Self {
        tracing::error!(error = %e, "metadata store failed");
        ApiError::unavailable("metadata-unavailable", "the metadata store is unavailable")
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
