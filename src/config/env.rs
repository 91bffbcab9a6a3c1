//! Environment variables: which `AVATAR_*` name sets which key, and how its text becomes a
//! TOML value layered over the defaults and the config file.

use super::{ConfigError, invalid};

/// How a value from the environment is turned into a TOML value.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Str,
    Int,
    Bool,
    StrList,
    IntList,
}

/// Every plain environment variable and the key it sets.
pub(super) const ENV_KEYS: &[(&str, &str, Kind)] = &[
    ("AVATAR_LISTEN", "server.listen", Kind::Str),
    (
        "AVATAR_PUBLIC_BASE_URL",
        "server.public_base_url",
        Kind::Str,
    ),
    ("AVATAR_API_KEYS", "server.api_keys", Kind::StrList),
    ("AVATAR_KEY_SECRET", "server.key_secret", Kind::Str),
    ("AVATAR_LOG_FORMAT", "server.log_format", Kind::Str),
    (
        "AVATAR_REQUEST_TIMEOUT",
        "server.request_timeout",
        Kind::Str,
    ),
    (
        "AVATAR_HEADER_READ_TIMEOUT",
        "server.header_read_timeout",
        Kind::Str,
    ),
    (
        "AVATAR_MAX_CONNECTIONS",
        "server.max_connections",
        Kind::Int,
    ),
    (
        "AVATAR_SHUTDOWN_TIMEOUT",
        "server.shutdown_timeout",
        Kind::Str,
    ),
    ("AVATAR_SERVE_TIMEOUT", "server.serve_timeout", Kind::Str),
    (
        "AVATAR_FALLBACK_TIMEOUT",
        "server.fallback_timeout",
        Kind::Str,
    ),
    ("AVATAR_CACHE_DIR", "cache.dir", Kind::Str),
    ("AVATAR_CACHE_TTL_HOURS", "cache.ttl_hours", Kind::Int),
    ("AVATAR_CACHE_TTL", "cache.ttl", Kind::Str),
    ("AVATAR_CACHE_STALE", "cache.stale", Kind::Str),
    ("AVATAR_CACHE_STALE_HOURS", "cache.stale_hours", Kind::Int),
    ("AVATAR_CACHE_NEGATIVE_TTL", "cache.negative_ttl", Kind::Str),
    ("AVATAR_CACHE_MAX_SIZE_MB", "cache.max_size_mb", Kind::Int),
    ("AVATAR_MEMORY_CACHE_MB", "cache.memory_mb", Kind::Int),
    (
        "AVATAR_CACHE_MAX_CONCURRENT_DOWNLOADS",
        "cache.max_concurrent_downloads",
        Kind::Int,
    ),
    (
        "AVATAR_CACHE_CLEANUP_INTERVAL",
        "cache.cleanup_interval",
        Kind::Str,
    ),
    ("AVATAR_SIZES", "images.sizes", Kind::IntList),
    ("AVATAR_DEFAULT_SIZE", "images.default_size", Kind::Int),
    ("AVATAR_DEFAULT_IMAGE", "images.default_image", Kind::Str),
    (
        "AVATAR_MAX_IMAGE_BYTES",
        "images.max_image_bytes",
        Kind::Int,
    ),
    ("AVATAR_MAX_PIXELS", "images.max_pixels", Kind::Int),
    ("AVATAR_MAX_JPEG_SCANS", "images.max_jpeg_scans", Kind::Int),
    (
        "AVATAR_MAX_DECODE_BYTES",
        "images.max_decode_bytes",
        Kind::Int,
    ),
    ("AVATAR_IMAGE_WORKERS", "images.workers", Kind::Int),
    ("AVATAR_UPSTREAM_TIMEOUT", "upstream.timeout", Kind::Str),
    (
        "AVATAR_UPSTREAM_CONNECT_TIMEOUT",
        "upstream.connect_timeout",
        Kind::Str,
    ),
    (
        "AVATAR_UPSTREAM_QUEUE_TIMEOUT",
        "upstream.queue_timeout",
        Kind::Str,
    ),
    ("AVATAR_UPSTREAM_BACKOFF", "upstream.backoff", Kind::Str),
    (
        "AVATAR_UPSTREAM_MAX_RETRY_AFTER",
        "upstream.max_retry_after",
        Kind::Str,
    ),
    (
        "AVATAR_UPSTREAM_FAILURES_BEFORE_BACKOFF",
        "upstream.failures_before_backoff",
        Kind::Int,
    ),
    (
        "AVATAR_UPSTREAM_WARN_INTERVAL",
        "upstream.warn_interval",
        Kind::Str,
    ),
    ("AVATAR_DATABASE_URL", "database.url", Kind::Str),
    ("AVATAR_JWT_SECRET", "auth.jwt_secret", Kind::Str),
    ("AVATAR_JWT_PUBLIC_KEY", "auth.jwt_public_key", Kind::Str),
    (
        "AVATAR_JWT_PUBLIC_KEY_FILE",
        "auth.jwt_public_key_file",
        Kind::Str,
    ),
    ("AVATAR_JWT_ALGORITHM", "auth.jwt_algorithm", Kind::Str),
    ("AVATAR_JWT_ISSUER", "auth.jwt_issuer", Kind::Str),
    ("AVATAR_JWT_AUDIENCE", "auth.jwt_audience", Kind::Str),
    ("AVATAR_MAX_UPLOAD_BYTES", "uploads.max_bytes", Kind::Int),
    ("AVATAR_UPLOAD_URL_TTL", "uploads.url_ttl", Kind::Str),
    ("AVATAR_TEMP_RETENTION", "uploads.temp_retention", Kind::Str),
    ("AVATAR_CORS_ORIGINS", "uploads.cors_origins", Kind::StrList),
    (
        "AVATAR_VARIANT_SIZES",
        "uploads.variant_sizes",
        Kind::IntList,
    ),
    (
        "AVATAR_KEEP_ORIGINALS",
        "uploads.keep_originals",
        Kind::Bool,
    ),
    (
        "AVATAR_MAX_CONCURRENT_UPLOADS",
        "uploads.max_concurrent_uploads",
        Kind::Int,
    ),
    (
        "AVATAR_UPLOAD_GRANTS_PER_USER",
        "uploads.grants_per_user",
        Kind::Int,
    ),
    (
        "AVATAR_UPLOAD_GRANT_WINDOW",
        "uploads.grant_window",
        Kind::Str,
    ),
    (
        "AVATAR_MAX_PENDING_ORIGINALS",
        "uploads.max_pending_originals",
        Kind::Int,
    ),
    (
        "AVATAR_MAX_PENDING_ORIGINAL_BYTES",
        "uploads.max_pending_original_bytes",
        Kind::Int,
    ),
    ("AVATAR_JOB_MAX_ATTEMPTS", "jobs.max_attempts", Kind::Int),
    ("AVATAR_JOB_WORKERS", "jobs.workers", Kind::Int),
    ("AVATAR_JOB_RETRY_BASE", "jobs.retry_base", Kind::Str),
    ("AVATAR_JOB_RETRY_MAX", "jobs.retry_max", Kind::Str),
    ("AVATAR_JOB_RETENTION", "jobs.retention", Kind::Str),
    ("AVATAR_EVENTS_BUFFER", "events.buffer", Kind::Int),
    ("AVATAR_DEMO", "demo.enabled", Kind::Str),
    ("AVATAR_DEMO_TOKEN_TTL", "demo.token_ttl", Kind::Str),
    (
        "AVATAR_EVENTS_MAX_MESSAGE_BYTES",
        "events.max_message_bytes",
        Kind::Int,
    ),
    (
        "AVATAR_EVENTS_MAX_STREAMS_PER_USER",
        "events.max_streams_per_user",
        Kind::Int,
    ),
    (
        "AVATAR_RATE_LIMIT_AVATAR_PER_MINUTE",
        "rate_limits.avatar_per_minute",
        Kind::Int,
    ),
    (
        "AVATAR_RATE_LIMIT_AVATAR_BURST",
        "rate_limits.avatar_burst",
        Kind::Int,
    ),
    (
        "AVATAR_RATE_LIMIT_API_PER_MINUTE",
        "rate_limits.api_per_minute",
        Kind::Int,
    ),
    (
        "AVATAR_RATE_LIMIT_API_BURST",
        "rate_limits.api_burst",
        Kind::Int,
    ),
    (
        "AVATAR_RATE_LIMIT_MAX_CLIENTS",
        "rate_limits.max_clients",
        Kind::Int,
    ),
    ("AVATAR_STORE", "store.url", Kind::Str),
    (
        "AVATAR_REWRITE_MAX_RECORDS",
        "server.rewrite_max_records",
        Kind::Int,
    ),
    (
        "AVATAR_REWRITE_MAX_BYTES",
        "server.rewrite_max_bytes",
        Kind::Int,
    ),
    ("AVATAR_JOB_LEASE", "jobs.lease", Kind::Str),
    ("AVATAR_JOB_HEARTBEAT", "jobs.heartbeat", Kind::Str),
    ("AVATAR_JOB_DRAIN_TIMEOUT", "jobs.drain_timeout", Kind::Str),
    ("AVATAR_WEBHOOK_URL", "webhooks.url", Kind::Str),
    ("AVATAR_WEBHOOK_SECRET", "webhooks.secret", Kind::Str),
    (
        "AVATAR_WEBHOOK_ALLOW_PRIVATE",
        "webhooks.allow_private",
        Kind::Bool,
    ),
    (
        "AVATAR_WEBHOOK_MAX_ATTEMPTS",
        "webhooks.max_attempts",
        Kind::Int,
    ),
];

/// Fields of `AVATAR_UPSTREAM_<NAME>_<FIELD>`, longest first so `_BASIC_USER` wins over `_USER`.
pub(super) const UPSTREAM_FIELDS: &[(&str, Kind)] = &[
    ("BASIC_PASSWORD", Kind::Str),
    ("MAX_CONCURRENT", Kind::Int),
    ("ALLOW_PRIVATE", Kind::Bool),
    ("BASIC_USER", Kind::Str),
    ("ALLOW_HTTP", Kind::Bool),
    ("BEARER", Kind::Str),
    ("HEADER", Kind::Str),
    ("COOKIE", Kind::Str),
    ("HOSTS", Kind::StrList),
    ("PAT", Kind::Str),
];

/// Which key an environment variable sets, if it is one of ours.
pub(super) fn env_key(name: &str) -> Result<Option<(String, Kind)>, ConfigError> {
    if let Some(&(_, key, kind)) = ENV_KEYS.iter().find(|(var, _, _)| *var == name) {
        return Ok(Some((key.to_owned(), kind)));
    }
    let Some(rest) = name.strip_prefix("AVATAR_UPSTREAM_") else {
        return Ok(None);
    };
    for &(field, kind) in UPSTREAM_FIELDS {
        if let Some(upstream) = rest.strip_suffix(field).and_then(|r| r.strip_suffix('_'))
            && !upstream.is_empty()
        {
            let upstream = upstream.to_ascii_lowercase();
            return Ok(Some((
                format!("upstreams.{upstream}.{}", field.to_ascii_lowercase()),
                kind,
            )));
        }
    }
    Err(invalid(
        name,
        "unknown upstream field; expected _HOSTS, _PAT, _BEARER, _BASIC_USER, _BASIC_PASSWORD, \
         _HEADER, _COOKIE, _ALLOW_HTTP, _ALLOW_PRIVATE or _MAX_CONCURRENT",
    ))
}

pub(super) fn env_value(name: &str, raw: &str, kind: Kind) -> Result<toml::Value, ConfigError> {
    let list = || {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let int = |s: &str| {
        s.trim()
            .parse::<i64>()
            .map_err(|_| invalid(name, format!("`{s}` is not a whole number")))
    };
    Ok(match kind {
        Kind::Str => toml::Value::String(raw.to_owned()),
        Kind::Int => toml::Value::Integer(int(raw)?),
        Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => toml::Value::Boolean(true),
            "0" | "false" | "no" | "off" | "" => toml::Value::Boolean(false),
            other => return Err(invalid(name, format!("`{other}` is not true or false"))),
        },
        Kind::StrList => toml::Value::Array(list().map(toml::Value::String).collect()),
        Kind::IntList => toml::Value::Array(
            list()
                .map(|s| int(&s).map(toml::Value::Integer))
                .collect::<Result<_, _>>()?,
        ),
    })
}

pub(super) fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) {
    let mut parts = path.split('.').peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.insert(part.to_owned(), value);
            return;
        }
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            return;
        };
        current = next;
    }
}

pub(super) fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// The environment variable that sets a dotted key (`cache.ttl` → `AVATAR_CACHE_TTL`,
/// `upstreams.azure.pat` → `AVATAR_UPSTREAM_AZURE_PAT`); list indices are ignored.
pub(super) fn env_name_of(path: &str) -> Option<String> {
    let path = path.split('[').next().unwrap_or(path);
    if let Some(&(var, _, _)) = ENV_KEYS.iter().find(|(_, key, _)| *key == path) {
        return Some(var.to_owned());
    }
    let rest = path.strip_prefix("upstreams.")?;
    let (name, field) = rest.rsplit_once('.').unwrap_or((rest, ""));
    let field = UPSTREAM_FIELDS
        .iter()
        .find(|(f, _)| f.eq_ignore_ascii_case(field))
        .map_or(String::new(), |(f, _)| format!("_{f}"));
    Some(format!(
        "AVATAR_UPSTREAM_{}{field}",
        name.to_ascii_uppercase()
    ))
}

/// Variables read outside the settings table (the command line's `--config`).
const OTHER_VARIABLES: &[&str] = &["AVATAR_CONFIG"];

/// Warnings for `AVATAR_*` variables that set nothing (a typo leaves its default in force),
/// each with the closest known name when one is within a small edit distance:
/// `unknown variable AVATAR_CACHE_TTL_HOUR; did you mean AVATAR_CACHE_TTL_HOURS?`.
/// Upstream variables (`AVATAR_UPSTREAM_<NAME>_<FIELD>`) are checked by loading instead.
pub fn unknown_variables(env: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let known = || {
        ENV_KEYS
            .iter()
            .map(|(var, _, _)| *var)
            .chain(OTHER_VARIABLES.iter().copied())
    };
    let mut names: Vec<String> = env
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("AVATAR_"))
        .filter(|name| !known().any(|k| k == name))
        .filter(|name| !matches!(env_key(name), Ok(Some(_)) | Err(_)))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let closest = known()
                .map(|k| (strsim::levenshtein(&name, k), k))
                .min()
                .filter(|(distance, _)| *distance <= 3);
            match closest {
                Some((_, k)) => format!("unknown variable {name}; did you mean {k}?"),
                None => format!("unknown variable {name}; it sets nothing"),
            }
        })
        .collect()
}

/// Every plain variable that holds a number or a duration (`AVATAR_JOB_WORKERS`,
/// `AVATAR_CACHE_TTL`, …): integer kinds, and text kinds whose default is a duration (or, like
/// `cache.ttl`, absent). For tests that try extreme values of each.
pub fn numeric_variables() -> Vec<&'static str> {
    let defaults: toml::Table = super::DEFAULT_TOML.parse().unwrap_or_default();
    let default_of = |key: &str| {
        key.split('.')
            .try_fold(None::<&toml::Value>, |at, part| match at {
                None => defaults.get(part).map(Some),
                Some(toml::Value::Table(t)) => t.get(part).map(Some),
                Some(_) => None,
            })
            .flatten()
    };
    ENV_KEYS
        .iter()
        .filter(|(_, key, kind)| match kind {
            Kind::Int | Kind::IntList => true,
            Kind::Str => match default_of(key) {
                None => true,
                Some(toml::Value::String(s)) => humantime::parse_duration(s).is_ok(),
                Some(_) => false,
            },
            Kind::Bool | Kind::StrList => false,
        })
        .map(|(var, _, _)| *var)
        .collect()
}
