//! The identity API for backend services (`Authorization: Bearer <service API key>`).
//!
//! - `POST /v1/identities/rewrite`: register records and point their avatar fields at us.
//! - `PUT /v1/identities/{user_id}`: register one.
//! - `DELETE /v1/cache/{key}`: purge a key's cached upstream copies and variants.

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post, put};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::http::extract::ServiceCaller;
use crate::http::{ApiError, ApiResult, AppState};
use crate::keys::UserKey;
use crate::repo::Identity;

/// Routes of this module; a rewrite body may have `max_body` bytes
/// (`AVATAR_REWRITE_MAX_BYTES`).
pub fn router(max_body: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/v1/identities/rewrite",
            post(rewrite).layer(DefaultBodyLimit::max(max_body)),
        )
        .route("/v1/identities/{user_id}", put(register_one))
        .route("/v1/cache/{key}", delete(purge))
}

/// How much fetching a rewrite call asks for.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Prefetch {
    /// Register only.
    None,
    /// Fetch after answering.
    #[default]
    Background,
    /// Fetch (bounded concurrency) before answering, so versions are known.
    Wait,
}

#[derive(Deserialize)]
struct RewriteRequest {
    identities: Vec<Value>,
    #[serde(default)]
    prefetch: Prefetch,
}

/// The avatar fields we recognise, in both spellings.
const AVATAR_FIELDS: [&str; 2] = ["avatar_url", "avatarUrl"];
const NAME_FIELDS: [&str; 3] = ["display_name", "displayName", "name"];

/// One record, understood.
struct Parsed {
    key: UserKey,
    user_id: String,
    /// Upstream URL admitted by the allow-list.
    upstream: Option<String>,
    display_name: Option<String>,
}

async fn rewrite(
    _caller: ServiceCaller,
    State(state): State<AppState>,
    body: Result<Json<RewriteRequest>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(request) = body?;
    let max_records = state.settings.server.rewrite_max_records;
    if request.identities.len() > max_records {
        return Err(ApiError::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-many-records",
            format!("at most {max_records} identities per call"),
        ));
    }
    let now = state.clock.now_millis();
    let mut records = request.identities;
    let mut skipped: Vec<Value> = Vec::new();
    let mut parsed: Vec<(usize, Parsed)> = Vec::new();
    for (index, record) in records.iter().enumerate() {
        match parse_record(&state, record) {
            Ok((p, reason)) => {
                if let Some(reason) = reason {
                    skipped.push(json!({"index": index, "reason": reason}));
                }
                parsed.push((index, p));
            }
            Err(reason) => skipped.push(json!({"index": index, "reason": reason})),
        }
    }
    let batch: Vec<Identity> = parsed
        .iter()
        .map(|(_, p)| Identity {
            key: p.key.clone(),
            user_id: p.user_id.clone(),
            upstream_url: p.upstream.clone(),
            display_name: p.display_name.clone(),
            updated_at: now,
        })
        .collect();
    state.avatars.register(&batch).await?;

    let urls: Vec<String> = parsed
        .iter()
        .filter_map(|(_, p)| p.upstream.clone())
        .collect();
    let concurrency = state.settings.cache.max_concurrent_downloads;
    match request.prefetch {
        Prefetch::None => {}
        Prefetch::Wait => prefetch_all(state.clone(), urls, concurrency).await,
        Prefetch::Background => {
            tokio::spawn(prefetch_all(state.clone(), urls, concurrency));
        }
    }

    let mut rewritten = 0;
    for (index, p) in &parsed {
        let version = state
            .avatars
            .current_version(&p.key, p.upstream.as_deref())
            .await;
        let local = state.urls.avatar(&p.key, version.as_deref());
        if let Some(Value::Object(record)) = records.get_mut(*index) {
            for field in AVATAR_FIELDS {
                if record.contains_key(field) {
                    record.insert(field.to_owned(), Value::String(local.clone()));
                }
            }
        }
        if p.upstream.is_some() {
            rewritten += 1;
        }
    }
    for entry in &skipped {
        // Records we could not even parse keep no upstream URL either.
        let Some(index) = entry["index"].as_u64() else {
            continue;
        };
        if parsed.iter().any(|(i, _)| *i as u64 == index) {
            continue;
        }
        if let Some(Value::Object(record)) = records.get_mut(index as usize) {
            for field in AVATAR_FIELDS {
                if record.contains_key(field) {
                    record.insert(
                        field.to_owned(),
                        Value::String(state.urls.anonymous_avatar()),
                    );
                }
            }
        }
    }
    Ok(Json(json!({
        "identities": records,
        "rewritten": rewritten,
        "skipped": skipped,
    })))
}

async fn prefetch_all(state: AppState, urls: Vec<String>, concurrency: usize) {
    futures::stream::iter(urls)
        .map(|url| {
            let avatars = state.avatars.clone();
            async move { avatars.prefetch(&url).await }
        })
        .buffer_unordered(concurrency.max(1))
        .for_each(|_| async {})
        .await;
}

/// Understand one record: its key and, when admissible, its upstream URL. `Err` when the
/// record cannot be registered at all; `Ok((_, Some(reason)))` when it is registered without
/// an upstream (it shows the default image).
fn parse_record(state: &AppState, record: &Value) -> Result<(Parsed, Option<String>), String> {
    let Value::Object(map) = record else {
        return Err("not an object".into());
    };
    let user_id = match map.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 512 => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err("id must be a non-empty string or a number".into()),
        None => return Err("missing id".into()),
    };
    let key = state.keys.key_for(&user_id);
    let display_name = display_name(map);
    let avatar = AVATAR_FIELDS.iter().find_map(|f| map.get(*f));
    let (upstream, reason) = match avatar {
        None | Some(Value::Null) => (None, None),
        Some(Value::String(url)) if url.trim().is_empty() => (None, None),
        Some(Value::String(url)) => match state.avatars.upstreams().admit(url) {
            Ok((parsed, _)) => (Some(parsed.to_string()), None),
            Err(reason) => (None, Some(reason.to_owned())),
        },
        Some(_) => (None, Some("avatar URL is not a string".to_owned())),
    };
    Ok((
        Parsed {
            key,
            user_id,
            upstream,
            display_name,
        },
        reason,
    ))
}

fn display_name(map: &Map<String, Value>) -> Option<String> {
    NAME_FIELDS
        .iter()
        .find_map(|f| map.get(*f).and_then(Value::as_str))
        .map(|s| s.chars().take(200).collect())
}

#[derive(Deserialize)]
struct RegisterRequest {
    #[serde(default, alias = "avatarUrl")]
    avatar_url: Option<String>,
    #[serde(default, alias = "displayName")]
    display_name: Option<String>,
}

async fn register_one(
    _caller: ServiceCaller,
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(request) = body?;
    if user_id.trim().is_empty() || user_id.len() > 512 {
        return Err(ApiError::bad_request(
            "invalid-user-id",
            "user id must be 1 to 512 bytes",
        ));
    }
    let upstream = match request.avatar_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(url) => match state.avatars.upstreams().admit(url) {
            Ok((parsed, _)) => Some(parsed.to_string()),
            Err(reason) => {
                return Err(ApiError::client(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "upstream-not-allowed",
                    format!("avatar_url refused: {reason}"),
                ));
            }
        },
    };
    let key = state.keys.key_for(&user_id);
    let identity = Identity {
        key: key.clone(),
        user_id,
        upstream_url: upstream,
        display_name: request.display_name.map(|s| s.chars().take(200).collect()),
        updated_at: state.clock.now_millis(),
    };
    state
        .avatars
        .register(std::slice::from_ref(&identity))
        .await?;
    let version = state
        .avatars
        .current_version(&key, identity.upstream_url.as_deref())
        .await;
    Ok(Json(json!({
        "key": key.as_str(),
        "avatar_url": state.urls.avatar(&key, version.as_deref()),
    })))
}

async fn purge(
    _caller: ServiceCaller,
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<StatusCode> {
    let key = UserKey::parse(&key).ok_or_else(|| {
        ApiError::bad_request("invalid-key", "a key is 32 lowercase hex characters")
    })?;
    state.avatars.purge(&key).await?;
    Ok(StatusCode::NO_CONTENT)
}
