//! The identity registry service: backend services register identity records (user id →
//! upstream avatar URL, display name) and get them back pointing at this service.
//!
//! Records whose avatar URL belongs to a configured upstream are registered and rewritten to
//! `{base}/avatar/{key}` (with `?v=` when the version is known); records that cannot be proxied
//! are rewritten to the same local URL backed by the default image and listed as skipped, never
//! left pointing at an upstream a browser cannot load.

use std::sync::Arc;

use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::avatars::Avatars;
use crate::clock::Clock;
use crate::keys::{KeyDeriver, UserKey};
use crate::repo::{Identity, RepoError};
use crate::urls::PublicUrls;

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// More records than one call may carry (`AVATAR_REWRITE_MAX_RECORDS`).
    #[error("at most {0} identities per call")]
    TooManyRecords(usize),
    /// The user id is empty or longer than 512 bytes.
    #[error("user id must be 1 to 512 bytes")]
    InvalidUserId,
    /// The avatar URL is malformed or not on an allow-listed host.
    #[error("avatar_url refused: {0}")]
    UpstreamNotAllowed(&'static str),
    /// The metadata store failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// How much fetching a rewrite call asks for.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Prefetch {
    /// Register only.
    None,
    /// Fetch after answering.
    #[default]
    Background,
    /// Fetch (bounded concurrency) before answering, so versions are known.
    Wait,
}

/// The answer to a rewrite.
#[derive(Debug)]
pub struct Rewritten {
    /// The records, avatar fields rewritten, every other field untouched.
    pub identities: Vec<Value>,
    /// How many now point at a proxied upstream avatar.
    pub rewritten: usize,
    /// `{"index", "reason"}` of records that show the default image.
    pub skipped: Vec<Value>,
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

/// The identity service. Cheap to clone.
#[derive(Clone)]
pub struct Identities {
    /// Registration, versions, prefetch.
    pub avatars: Avatars,
    /// User id → public key.
    pub keys: KeyDeriver,
    /// The local URLs handed back.
    pub urls: PublicUrls,
    /// Registration times.
    pub clock: Arc<dyn Clock>,
    /// Records per call (`AVATAR_REWRITE_MAX_RECORDS`).
    pub max_records: usize,
    /// Concurrent prefetches (`AVATAR_CACHE_MAX_CONCURRENT_DOWNLOADS`).
    pub prefetch_concurrency: usize,
}

impl Identities {
    /// Register `records` and point their avatar fields at this service.
    pub async fn rewrite(
        &self,
        mut records: Vec<Value>,
        prefetch: Prefetch,
    ) -> Result<Rewritten, IdentityError> {
        if records.len() > self.max_records {
            return Err(IdentityError::TooManyRecords(self.max_records));
        }
        let now = self.clock.now_millis();
        let mut skipped: Vec<Value> = Vec::new();
        let mut parsed: Vec<(usize, Parsed)> = Vec::new();
        for (index, record) in records.iter().enumerate() {
            match self.parse_record(record) {
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
        self.avatars.register(&batch).await?;

        self.prefetch(&parsed, prefetch).await;
        let rewritten = self.point_at_us(&mut records, &parsed).await;
        for entry in &skipped {
            // Records we could not even parse keep no upstream URL either.
            let Some(index) = entry["index"].as_u64() else {
                continue;
            };
            if parsed.iter().any(|(i, _)| *i as u64 == index) {
                continue;
            }
            if let Some(Value::Object(record)) = records.get_mut(index as usize) {
                set_avatar_fields(record, &self.urls.anonymous_avatar());
            }
        }
        Ok(Rewritten {
            identities: records,
            rewritten,
            skipped,
        })
    }

    /// Fetch the admitted upstream avatars now, later, or not at all.
    async fn prefetch(&self, parsed: &[(usize, Parsed)], prefetch: Prefetch) {
        let urls: Vec<String> = parsed
            .iter()
            .filter_map(|(_, p)| p.upstream.clone())
            .collect();
        let concurrency = self.prefetch_concurrency;
        match prefetch {
            Prefetch::None => {}
            Prefetch::Wait => prefetch_all(self.avatars.clone(), urls, concurrency).await,
            Prefetch::Background => {
                tokio::spawn(prefetch_all(self.avatars.clone(), urls, concurrency));
            }
        }
    }

    /// Point the avatar fields of registered records at their local URL (with `?v=` when the
    /// version is known); how many of them have an upstream avatar.
    async fn point_at_us(&self, records: &mut [Value], parsed: &[(usize, Parsed)]) -> usize {
        let mut rewritten = 0;
        for (index, p) in parsed {
            let version = self
                .avatars
                .current_version(&p.key, p.upstream.as_deref())
                .await;
            let local = self.urls.avatar(&p.key, version.as_deref());
            if let Some(Value::Object(record)) = records.get_mut(*index) {
                set_avatar_fields(record, &local);
            }
            if p.upstream.is_some() {
                rewritten += 1;
            }
        }
        rewritten
    }

    /// Register one identity; its public key and local URL.
    pub async fn register_one(
        &self,
        user_id: String,
        avatar_url: Option<&str>,
        display_name: Option<String>,
    ) -> Result<(UserKey, String), IdentityError> {
        if user_id.trim().is_empty() || user_id.len() > 512 {
            return Err(IdentityError::InvalidUserId);
        }
        let upstream = match avatar_url.map(str::trim) {
            None | Some("") => None,
            Some(url) => match self.avatars.upstreams().admit(url) {
                Ok((parsed, _)) => Some(parsed.to_string()),
                Err(reason) => return Err(IdentityError::UpstreamNotAllowed(reason)),
            },
        };
        let key = self.keys.key_for(&user_id);
        let identity = Identity {
            key: key.clone(),
            user_id,
            upstream_url: upstream,
            display_name: display_name.map(|s| s.chars().take(200).collect()),
            updated_at: self.clock.now_millis(),
        };
        self.avatars
            .register(std::slice::from_ref(&identity))
            .await?;
        let version = self
            .avatars
            .current_version(&key, identity.upstream_url.as_deref())
            .await;
        let url = self.urls.avatar(&key, version.as_deref());
        Ok((key, url))
    }

    /// Understand one record: its key and, when admissible, its upstream URL. `Err` when the
    /// record cannot be registered at all; `Ok((_, Some(reason)))` when it is registered without
    /// an upstream (it shows the default image).
    fn parse_record(&self, record: &Value) -> Result<(Parsed, Option<String>), String> {
        let Value::Object(map) = record else {
            return Err("not an object".into());
        };
        let user_id = match map.get("id") {
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 512 => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err("id must be a non-empty string or a number".into()),
            None => return Err("missing id".into()),
        };
        let key = self.keys.key_for(&user_id);
        let display_name = display_name(map);
        let avatar = AVATAR_FIELDS.iter().find_map(|f| map.get(*f));
        let (upstream, reason) = match avatar {
            None | Some(Value::Null) => (None, None),
            Some(Value::String(url)) if url.trim().is_empty() => (None, None),
            Some(Value::String(url)) => match self.avatars.upstreams().admit(url) {
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
}

async fn prefetch_all(avatars: Avatars, urls: Vec<String>, concurrency: usize) {
    futures::stream::iter(urls)
        .map(|url| {
            let avatars = avatars.clone();
            async move { avatars.prefetch(&url).await }
        })
        .buffer_unordered(concurrency.max(1))
        .for_each(|_| async {})
        .await;
}

fn display_name(map: &Map<String, Value>) -> Option<String> {
    NAME_FIELDS
        .iter()
        .find_map(|f| map.get(*f).and_then(Value::as_str))
        .map(|s| s.chars().take(200).collect())
}

/// Replace whichever avatar fields the record has (both spellings) with `url`.
fn set_avatar_fields(record: &mut Map<String, Value>, url: &str) {
    for field in AVATAR_FIELDS {
        if record.contains_key(field) {
            record.insert(field.to_owned(), Value::String(url.to_owned()));
        }
    }
}
