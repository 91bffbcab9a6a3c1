//! The profile page (`/demo/`) and its tokens, mounted only in demo mode (`AVATAR_DEMO`; on by
//! default on loopback). Off, every path here is the router's 404.
//!
//! - `GET /demo/` (and `/demo` → redirect): the page; `GET /demo/{demo.css, demo.js}`: its parts.
//!   Plain files from `assets/demo/`, compiled in; each with its content type, `nosniff`, and a
//!   CSP that allows only this origin (plus the public base URL, where uploads and pictures live).
//! - `POST /demo/token` `{"name"?}` → a short-lived HS256 token for `demo-<name>` (random name
//!   when none), with the user's avatar and events URLs.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::auth::minter::MintError;
use crate::http::{ApiError, ApiResult, AppState};

const INDEX: &str = include_str!("../../../assets/demo/index.html");
const STYLE: &str = include_str!("../../../assets/demo/demo.css");
const SCRIPT: &str = include_str!("../../../assets/demo/demo.js");

/// Routes of this module (merged only when demo mode is on).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/demo", get(|| async { Redirect::permanent("demo/") }))
        .route("/demo/", get(index))
        .route("/demo/demo.css", get(style))
        .route("/demo/demo.js", get(script))
        .route("/demo/token", post(token))
}

async fn index(State(state): State<AppState>) -> Response {
    asset(&state, "text/html; charset=utf-8", INDEX)
}

async fn style(State(state): State<AppState>) -> Response {
    asset(&state, "text/css; charset=utf-8", STYLE)
}

async fn script(State(state): State<AppState>) -> Response {
    asset(&state, "text/javascript; charset=utf-8", SCRIPT)
}

fn asset(state: &AppState, content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy(state.urls.base())) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

/// Scripts and styles from this origin only (no inline code, no `eval`); pictures from here, the
/// public base URL and the `blob:` preview of the chosen file; requests to here and the public
/// base (HTTP for uploads, WebSocket for events); no frames, forms, plugins or base changes.
pub fn content_security_policy(public_base: &str) -> String {
    let (http, ws) = match url::Url::parse(public_base) {
        Ok(url) => {
            let origin = url.origin().ascii_serialization();
            let ws = origin.replacen("http", "ws", 1);
            (format!(" {origin}"), format!(" {ws}"))
        }
        Err(_) => (String::new(), String::new()),
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:{http}; \
         connect-src 'self'{http}{ws}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

#[derive(Deserialize, Default)]
struct TokenRequest {
    #[serde(default)]
    name: Option<String>,
}

async fn token(
    State(state): State<AppState>,
    body: Result<Json<TokenRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let Some(minter) = &state.demo else {
        return Err(ApiError::not_found("route"));
    };
    let Json(request) = body?;
    let now = crate::clock::unix_seconds(state.clock.now_millis());
    let minted = minter
        .mint(request.name.as_deref(), now)
        .map_err(|e| match e {
            MintError::InvalidName => ApiError::bad_request("invalid-name", e.to_string()),
            MintError::Signing(_) => ApiError::internal("demo token", &e),
        })?;
    let key = state.keys.key_for(&minted.user_id);
    let version = state.repo.avatar(&key).await?.map(|a| a.version);
    let body = json!({
        "access_token": minted.token,
        "token_type": "Bearer",
        "expires_in": minter.ttl().as_secs(),
        "expires_at": crate::clock::rfc3339(crate::clock::from_unix_seconds(minted.expires_at)),
        "user_id": minted.user_id,
        "avatar_url": state.urls.avatar(&key, version.as_deref()),
        "events_url": state.urls.events(),
    });
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_public_origin_for_requests_pictures_and_the_websocket() {
        let csp = content_security_policy("https://avatars.example/base");
        assert!(csp.contains("connect-src 'self' https://avatars.example wss://avatars.example;"));
        assert!(csp.contains("img-src 'self' blob: https://avatars.example;"));
        assert!(csp.starts_with("default-src 'none'; script-src 'self'; style-src 'self';"));
        assert!(!csp.contains("unsafe"));
    }
}
