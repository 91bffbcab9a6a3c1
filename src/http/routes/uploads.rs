//! User routes (`Authorization: Bearer <JWT>`): signed uploads, processing, jobs, deletion.
//!
//! - `POST /v1/uploads` → a signed `PUT` URL; `PUT /v1/uploads/{id}?…` takes the bytes (no JWT).
//! - `POST /v1/avatar` (alias `POST /api/profile/image`): `{"upload_id", "crop"}`, or the image
//!   itself (multipart `file` + optional `crop` part, or a raw `image/*` body with crop in the query).
//! - `GET /v1/jobs/{job_id}` (owner only), `POST /v1/jobs/{job_id}/retry` (owner only, failed
//!   jobs while their original is kept), `DELETE /v1/avatar`.
//!
//! Upload bodies are read only after everything else about the request was checked, with a
//! byte cap, and at most `AVATAR_MAX_CONCURRENT_UPLOADS` at once (`503 uploads-busy` beyond).

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::User;
use crate::http::AppState;
use crate::http::{ApiError, ApiResult};
use crate::imaging::Crop;
use crate::repo::JobStatus;
use crate::uploads::parse_crop;

/// Routes of this module.
pub fn router(max_upload: usize) -> Router<AppState> {
    // Multipart framing and JSON need a little room beyond the image itself.
    let limit = DefaultBodyLimit::max(max_upload + 64 * 1024);
    Router::new()
        .route("/v1/uploads", post(create_upload))
        .route("/v1/uploads/{upload_id}", put(receive_upload).layer(limit))
        .route("/v1/avatar", post(start).delete(delete_avatar).layer(limit))
        .route("/api/profile/image", post(start).layer(limit))
        .route("/v1/jobs/{job_id}", get(job_status))
        .route("/v1/jobs/{job_id}/retry", post(retry_job))
}

#[derive(Deserialize)]
struct UploadRequest {
    content_type: String,
    content_length: u64,
}

async fn create_upload(
    user: User,
    State(state): State<AppState>,
    body: Result<Json<UploadRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(request) = body?;
    let grant = state
        .uploads
        .grant(&user, &request.content_type, request.content_length)
        .await?;
    Ok((StatusCode::CREATED, Json(grant)))
}

/// The signed `PUT`: the URL and headers are verified before a byte of the body is read (a
/// refusal is answered at once and the connection closed), then the body is read with the
/// grant's length as the cap.
async fn receive_upload(
    State(state): State<AppState>,
    Path(upload_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let content_length = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("invalid-content-length", "invalid Content-Length")
                })?,
        ),
    };
    let put = state
        .uploads
        .authorise_put(
            &upload_id,
            query.as_deref().unwrap_or(""),
            content_type,
            content_length,
        )
        .await
        .map_err(closing)?;
    let bytes = read_capped(body, put.max_bytes()).await?;
    state.uploads.receive(put, bytes).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A refusal sent before the body was read: the unread body would otherwise be drained (or
/// waited for) to reuse the connection, so the connection is closed instead.
fn closing(e: crate::uploads::UploadError) -> ApiError {
    ApiError::from(e).closing_connection()
}

/// The whole body, or `413 too-large` as soon as it passes `cap` bytes.
async fn read_capped(body: Body, cap: u64) -> ApiResult<Bytes> {
    let too_large = || {
        ApiError::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("images may have at most {cap} bytes"),
        )
        .closing_connection()
    };
    let mut stream = body.into_data_stream();
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::bad_request("invalid-body", "the body was cut short"))?;
        if (out.len() + chunk.len()) as u64 > cap {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// Largest JSON body of `POST /v1/avatar` (`{upload_id, crop}` takes under 200 bytes).
const START_JSON_MAX_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
struct StartRequest {
    upload_id: String,
    #[serde(default)]
    crop: Option<Value>,
}

/// One handler for the three shapes of `POST /v1/avatar`, told apart by `Content-Type`.
async fn start(
    user: User,
    State(state): State<AppState>,
    request: Request,
) -> ApiResult<impl IntoResponse> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let accepted = if content_type.starts_with("application/json") {
        // `{upload_id, crop}` is tiny: a larger body is refused as soon as it passes the cap,
        // whatever the route's limit for image bodies.
        let bytes = axum::body::to_bytes(request.into_body(), START_JSON_MAX_BYTES)
            .await
            .map_err(|_| {
                ApiError::client(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    format!("the JSON body may have at most {START_JSON_MAX_BYTES} bytes"),
                )
                .closing_connection()
            })?;
        let Json(body) = Json::<StartRequest>::from_bytes(&bytes)?;
        let crop = body
            .crop
            .as_ref()
            .filter(|c| !c.is_null())
            .map(parse_crop)
            .transpose()?;
        state.uploads.start(&user, &body.upload_id, crop).await?
    } else if content_type.starts_with("multipart/form-data") {
        let _permit = state.uploads.body_permit().map_err(closing)?;
        let mut multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::bad_request("invalid-multipart", e.body_text()))?;
        let (mut file, mut file_type, mut crop) = (None, None, None);
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| ApiError::bad_request("invalid-multipart", e.body_text()))?
        {
            match field.name() {
                Some("file") => {
                    file_type = field.content_type().map(str::to_owned);
                    file = Some(field.bytes().await.map_err(|e| multipart_error(&e))?);
                }
                Some("crop") => {
                    let text = field.text().await.map_err(|e| multipart_error(&e))?;
                    let value: Value = serde_json::from_str(&text).map_err(|_| {
                        ApiError::bad_request("invalid-crop", "the crop part must be JSON")
                    })?;
                    crop = Some(parse_crop(&value)?);
                }
                _ => {}
            }
        }
        let file = file.ok_or_else(|| {
            ApiError::bad_request("missing-file", "send the image as the `file` part")
        })?;
        state
            .uploads
            .direct(&user, file_type.as_deref(), file, crop)
            .await?
    } else if content_type.starts_with("image/")
        || (!content_type.is_empty() && crate::uploads::says_nothing(&content_type))
    {
        // A raw body labelled `application/octet-stream` is judged by its bytes, as a
        // multipart part with that label is.
        let crop = crop_from_query(request.uri().query())?;
        let _permit = state.uploads.body_permit().map_err(closing)?;
        let body = Bytes::from_request(request, &state)
            .await
            .map_err(|e| ApiError::client(e.status(), "invalid-body", e.body_text()))?;
        state
            .uploads
            .direct(&user, Some(&content_type), body, crop)
            .await?
    } else {
        return Err(ApiError::client(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send JSON {upload_id, crop}, multipart with a `file` part, or an image body \
             (image/* or application/octet-stream)",
        ));
    };
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

fn multipart_error(e: &axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "the image is too large",
        )
    } else {
        ApiError::bad_request("invalid-multipart", e.body_text())
    }
}

/// `?x=&y=&width=&height=`: all four or none.
fn crop_from_query(query: Option<&str>) -> Result<Option<Crop>, ApiError> {
    let mut found = serde_json::Map::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if matches!(k.as_ref(), "x" | "y" | "width" | "height") {
            let n: u32 = v.parse().map_err(|_| {
                ApiError::bad_request("invalid-crop", format!("{k} must be a whole number"))
            })?;
            found.insert(k.into_owned(), json!(n));
        }
    }
    if found.is_empty() {
        return Ok(None);
    }
    Ok(parse_crop(&Value::Object(found)).map(Some)?)
}

async fn job_status(
    user: User,
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let job = state.uploads.job(&user, &job_id).await?;
    let mut body = json!({
        "job_id": job.job_id,
        "status": job.status.as_str(),
        "attempts": job.attempts,
        "created_at": crate::clock::rfc3339(job.created_at),
        "updated_at": crate::clock::rfc3339(job.updated_at),
    });
    match job.status {
        JobStatus::Completed => body["result"] = json!(job.result),
        JobStatus::Failed => body["error"] = json!(job.error),
        _ => {}
    }
    Ok(Json(body))
}

async fn retry_job(
    user: User,
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let accepted = state.uploads.retry(&user, &job_id).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

async fn delete_avatar(user: User, State(state): State<AppState>) -> ApiResult<StatusCode> {
    let removed = state.uploads.remove_avatar(&user).await;
    // Whatever happened, the renditions cached for this user may be stale now.
    state.avatars.forget(&user.key);
    removed?;
    Ok(StatusCode::NO_CONTENT)
}
