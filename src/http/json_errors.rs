//! Every error the router sends leaves in the JSON error shape `{code, message, user_message}`.
//!
//! Handlers answer with [`ApiError`], but some responses are made before or around them: axum's
//! own rejections (a body over its limit → `413`, a `Path`, `Query`, `Json`, `Multipart` or
//! `WebSocketUpgrade` that does not parse → plain text), a method a route does not take (`405`,
//! empty), a timeout layer (`408`, empty). [`shape_errors`] is the one layer that turns each of
//! those into an [`ApiError`] of the same status, keeping the original's headers (`Allow` on a
//! `405`) and, for client errors, its message. Responses that already are JSON errors, and
//! `/avatar` images (a `d=404` answer is an image), pass untouched.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, LoggedError};

/// The longest rejection text kept as the message (axum's are one line).
const MAX_MESSAGE_BYTES: usize = 1024;

/// Middleware: reshape every error response that is not already the JSON error shape.
pub async fn shape_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if !needs_shape(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_MESSAGE_BYTES)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let mut shaped = shape(parts.status, text).into_response();
    shaped.headers_mut().remove(header::CONTENT_LENGTH);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE
            && name != header::CONTENT_LENGTH
            && !shaped.headers().contains_key(name)
        {
            shaped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    shaped
}

/// An error status whose body is not ours: empty or plain text, and not marked by [`ApiError`].
fn needs_shape(response: &Response<Body>) -> bool {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<LoggedError>().is_some()
    {
        return false;
    }
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|t| t.starts_with("text/plain"))
}

/// The [`ApiError`] for `status`: its code by status, the rejection's text as the message for
/// client errors (it describes the client's input), a generic one for our own faults.
fn shape(status: StatusCode, text: Option<String>) -> ApiError {
    if status.is_server_error() {
        let error = if status == StatusCode::INTERNAL_SERVER_ERROR {
            ApiError::internal("error response without a body", &status)
        } else {
            ApiError::unavailable("unavailable", "the service cannot answer right now")
        };
        return error.with_status(status);
    }
    let code = match status {
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::REQUEST_TIMEOUT => "request-timeout",
        StatusCode::LENGTH_REQUIRED => "length-required",
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid-request",
        StatusCode::UPGRADE_REQUIRED => "upgrade-required",
        StatusCode::TOO_MANY_REQUESTS => "rate-limited",
        _ => "bad-request",
    };
    let message = text.unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("the request was refused")
            .to_lowercase()
    });
    ApiError::client(status, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_keep_their_status_and_message_server_errors_say_nothing_inside() {
        let e = shape(
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("length limit exceeded".into()),
        );
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large")
        );
        let e = shape(StatusCode::METHOD_NOT_ALLOWED, None);
        assert_eq!(e.code(), "method-not-allowed");
        let e = shape(StatusCode::BAD_GATEWAY, Some("/srv/secret/path".into()));
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        let body = e.into_response();
        assert!(
            body.extensions()
                .get::<LoggedError>()
                .is_some_and(|l| !l.message.contains("/srv"))
        );
    }
}
