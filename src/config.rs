//! Settings: `config/default.toml` (compiled in) → optional file → `AVATAR_*` environment.
//!
//! The layers are merged as TOML tables, then deserialised once into [`Settings`]. Environment
//! variables are mapped to keys by one table ([`ENV_KEYS`]) plus the per-upstream
//! `AVATAR_UPSTREAM_<NAME>_<FIELD>` family, so every error can name both the key and the variable.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::hosts::HostPattern;

/// The defaults, documented key by key; the base layer of every configuration.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// A configuration problem, naming the key (and variable) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is present but wrong.
    #[error("invalid configuration: {key}: {message}")]
    Invalid {
        /// Dotted key, with the environment variable when it came from there.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The configuration file could not be read or parsed.
    #[error("cannot read configuration file {path}: {message}")]
    File {
        /// The file named by `--config` / `AVATAR_CONFIG`.
        path: PathBuf,
        /// The parser's explanation.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.to_string(),
    }
}

/// A secret value: never printed, never logged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no value was configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "[redacted]"
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "[redacted]" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Every setting of the service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Listener, public URL, service keys, logging.
    pub server: ServerSettings,
    /// The two-tier cache of upstream avatars and derived variants.
    pub cache: CacheSettings,
    /// Sizes, defaults and decode limits.
    pub images: ImageSettings,
    /// Timeouts shared by every upstream.
    pub upstream: UpstreamDefaults,
    /// Metadata database.
    pub database: DatabaseSettings,
    /// Durable blob store.
    pub store: StoreSettings,
    /// User authentication (JWT).
    pub auth: AuthSettings,
    /// User uploads.
    pub uploads: UploadSettings,
    /// Background jobs.
    pub jobs: JobSettings,
    /// Webhook delivery.
    pub webhooks: WebhookSettings,
    /// Live events (WebSocket/SSE).
    pub events: EventSettings,
    /// The profile page at `/demo/` and its demo tokens.
    pub demo: DemoSettings,
    /// Named upstreams, each with its hosts and one credential.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamSettings>,
}

/// `[server]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind (`AVATAR_LISTEN`).
    pub listen: SocketAddr,
    /// Base of the URLs handed to browsers (`AVATAR_PUBLIC_BASE_URL`); empty → `http://{listen}`.
    #[serde(with = "optional_url")]
    pub public_base_url: Option<url::Url>,
    /// Bearer keys of backend services (`AVATAR_API_KEYS`).
    pub api_keys: Vec<Secret>,
    /// HMAC secret for public keys (`AVATAR_KEY_SECRET`); empty → generated and kept on disk.
    pub key_secret: Secret,
    /// `pretty` or `json` (`AVATAR_LOG_FORMAT`).
    pub log_format: LogFormat,
    /// Upper bound of one request to this service (`AVATAR_REQUEST_TIMEOUT`).
    #[serde(with = "human_duration")]
    pub request_timeout: Duration,
    /// Identity records per rewrite call (`AVATAR_REWRITE_MAX_RECORDS`).
    pub rewrite_max_records: usize,
    /// Largest rewrite request body, in bytes (`AVATAR_REWRITE_MAX_BYTES`).
    pub rewrite_max_bytes: usize,
}

/// Log output style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, coloured when on a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[cache]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// Cache, database and generated secret directory (`AVATAR_CACHE_DIR`).
    pub dir: PathBuf,
    /// Freshness in hours (`AVATAR_CACHE_TTL_HOURS`); `ttl` wins when set.
    pub ttl_hours: u64,
    /// Freshness in human form (`AVATAR_CACHE_TTL`).
    #[serde(default, with = "human_duration::option")]
    pub ttl: Option<Duration>,
    /// Stale-while-revalidate grace (`AVATAR_CACHE_STALE`).
    #[serde(with = "human_duration")]
    pub stale: Duration,
    /// Grace in hours (`AVATAR_CACHE_STALE_HOURS`); wins over `stale` when set.
    #[serde(default)]
    pub stale_hours: Option<u64>,
    /// How long an upstream 404 is remembered (`AVATAR_CACHE_NEGATIVE_TTL`).
    #[serde(with = "human_duration")]
    pub negative_ttl: Duration,
    /// Disk budget in MiB (`AVATAR_CACHE_MAX_SIZE_MB`).
    pub max_size_mb: u64,
    /// Memory budget in MiB (`AVATAR_MEMORY_CACHE_MB`).
    pub memory_mb: u64,
    /// Upstream requests in flight (`AVATAR_CACHE_MAX_CONCURRENT_DOWNLOADS`).
    pub max_concurrent_downloads: usize,
    /// Period of the cleanup task (`AVATAR_CACHE_CLEANUP_INTERVAL`).
    #[serde(with = "human_duration")]
    pub cleanup_interval: Duration,
}

impl CacheSettings {
    /// Effective freshness lifetime.
    pub fn fresh_for(&self) -> Duration {
        self.ttl
            .unwrap_or(Duration::from_secs(self.ttl_hours.saturating_mul(3600)))
    }
    /// Effective stale-while-revalidate grace.
    pub fn stale_for(&self) -> Duration {
        self.stale_hours
            .map(|h| Duration::from_secs(h.saturating_mul(3600)))
            .unwrap_or(self.stale)
    }
}

/// `[images]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSettings {
    /// Served sizes, ascending (`AVATAR_SIZES`).
    pub sizes: Vec<u32>,
    /// Size when none is asked for (`AVATAR_DEFAULT_SIZE`).
    pub default_size: u32,
    /// What a key without avatar shows (`AVATAR_DEFAULT_IMAGE`).
    pub default_image: DefaultImage,
    /// Largest upstream image in bytes (`AVATAR_MAX_IMAGE_BYTES`).
    pub max_image_bytes: usize,
    /// Largest decoded image in pixels (`AVATAR_MAX_PIXELS`).
    pub max_pixels: u64,
    /// Images processed at once; 0 = CPU cores (`AVATAR_IMAGE_WORKERS`).
    pub workers: usize,
}

/// `[upstream]`: settings shared by all upstreams.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamDefaults {
    /// Total time of one upstream request (`AVATAR_UPSTREAM_TIMEOUT`).
    #[serde(with = "human_duration")]
    pub timeout: Duration,
    /// Connection time (`AVATAR_UPSTREAM_CONNECT_TIMEOUT`).
    #[serde(with = "human_duration")]
    pub connect_timeout: Duration,
}

/// `[database]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://…`; empty → SQLite in the cache dir (`AVATAR_DATABASE_URL`).
    pub url: Secret,
}

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `file:///path`; empty → a folder in the cache dir (`AVATAR_STORE`).
    pub url: String,
}

/// `[auth]`: JWT validation for user endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 secret (`AVATAR_JWT_SECRET`).
    pub jwt_secret: Secret,
    /// PEM public key (`AVATAR_JWT_PUBLIC_KEY`).
    pub jwt_public_key: String,
    /// Path of a PEM public key (`AVATAR_JWT_PUBLIC_KEY_FILE`).
    pub jwt_public_key_file: String,
    /// Pinned algorithm (`AVATAR_JWT_ALGORITHM`).
    pub jwt_algorithm: String,
    /// Required `iss` when set (`AVATAR_JWT_ISSUER`).
    pub jwt_issuer: String,
    /// Required `aud` when set (`AVATAR_JWT_AUDIENCE`).
    pub jwt_audience: String,
}

/// `[uploads]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadSettings {
    /// Largest upload (`AVATAR_MAX_UPLOAD_BYTES`).
    pub max_bytes: u64,
    /// Signed URL lifetime (`AVATAR_UPLOAD_URL_TTL`).
    #[serde(with = "human_duration")]
    pub url_ttl: Duration,
    /// Originals are swept after this (`AVATAR_TEMP_RETENTION`).
    #[serde(with = "human_duration")]
    pub temp_retention: Duration,
    /// Browser origins allowed to upload (`AVATAR_CORS_ORIGINS`).
    pub cors_origins: Vec<String>,
    /// Variant sizes (`AVATAR_VARIANT_SIZES`).
    pub variant_sizes: Vec<u32>,
    /// Keep originals after processing (`AVATAR_KEEP_ORIGINALS`).
    pub keep_originals: bool,
}

/// `[jobs]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    /// Attempts before failing for good (`AVATAR_JOB_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// Workers on this replica (`AVATAR_JOB_WORKERS`).
    pub workers: usize,
    /// First retry delay (`AVATAR_JOB_RETRY_BASE`); the one backoff policy of every job.
    #[serde(with = "human_duration")]
    pub retry_base: Duration,
    /// Longest retry delay (`AVATAR_JOB_RETRY_MAX`).
    #[serde(with = "human_duration")]
    pub retry_max: Duration,
    /// How long a claimed job is held without a heartbeat (`AVATAR_JOB_LEASE`): after a crash,
    /// another runner takes the job over once it runs out.
    #[serde(with = "human_duration")]
    pub lease: Duration,
    /// How often a running job renews its lease (`AVATAR_JOB_HEARTBEAT`); below the lease.
    #[serde(with = "human_duration")]
    pub heartbeat: Duration,
    /// At shutdown, how long running jobs may finish before they are cut
    /// (`AVATAR_JOB_DRAIN_TIMEOUT`).
    #[serde(with = "human_duration")]
    pub drain_timeout: Duration,
}

/// `[webhooks]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Endpoint (`AVATAR_WEBHOOK_URL`); empty disables webhooks.
    pub url: String,
    /// Signing secret (`AVATAR_WEBHOOK_SECRET`).
    pub secret: Secret,
    /// Allow private targets (`AVATAR_WEBHOOK_ALLOW_PRIVATE`).
    pub allow_private: bool,
    /// Delivery attempts (`AVATAR_WEBHOOK_MAX_ATTEMPTS`).
    pub max_attempts: u32,
}

/// What a key without an avatar shows (`AVATAR_DEFAULT_IMAGE`): the Gravatar/Libravatar
/// vocabulary, case-insensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultImage {
    /// `404`: no image, a 404.
    NotFound,
    /// `identicon`: a geometric pattern from the key.
    Identicon,
    /// `mp` (also `mm`, `mysteryman`, `mystery-person`): a silhouette.
    MysteryPerson,
    /// `initials`: the display name's initials.
    Initials,
    /// `blank`: a transparent image.
    Blank,
}

impl DefaultImage {
    /// Parse the vocabulary; `None` for anything else.
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw.trim().to_ascii_lowercase().as_str() {
            "404" => Self::NotFound,
            "identicon" => Self::Identicon,
            "mp" | "mm" | "mysteryman" | "mystery-person" => Self::MysteryPerson,
            "initials" => Self::Initials,
            "blank" => Self::Blank,
            _ => return None,
        })
    }

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "404",
            Self::Identicon => "identicon",
            Self::MysteryPerson => "mp",
            Self::Initials => "initials",
            Self::Blank => "blank",
        }
    }
}

impl Serialize for DefaultImage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DefaultImage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).ok_or_else(|| {
            serde::de::Error::custom("expected identicon, mp, initials, blank or 404")
        })
    }
}

/// `[events]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// Events kept for one user's slow connection before it is told it lagged
    /// (`AVATAR_EVENTS_BUFFER`).
    pub buffer: usize,
}

/// `[demo]`: the profile page at `/demo/` and `POST /demo/token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSettings {
    /// `auto` (on when listening on loopback), `true` or `false` (`AVATAR_DEMO`).
    pub enabled: DemoMode,
    /// Lifetime of a demo token (`AVATAR_DEMO_TOKEN_TTL`).
    #[serde(with = "human_duration")]
    pub token_ttl: Duration,
}

/// Whether the demo page is served (`AVATAR_DEMO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoMode {
    /// Unset: on when the listener is a loopback address, off otherwise.
    Auto,
    /// `true`: on whatever the listener.
    On,
    /// `false`: off.
    Off,
}

impl DemoMode {
    /// `auto` (or empty), or a boolean word (`true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`).
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Self::Auto,
            "1" | "true" | "yes" | "on" => Self::On,
            "0" | "false" | "no" | "off" => Self::Off,
            _ => return None,
        })
    }
}

impl Serialize for DemoMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Self::Auto => "auto",
            Self::On => "true",
            Self::Off => "false",
        })
    }
}

impl<'de> Deserialize<'de> for DemoMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Self::On),
            Raw::Bool(false) => Ok(Self::Off),
            Raw::Text(t) => Self::parse(&t)
                .ok_or_else(|| serde::de::Error::custom("expected auto, true or false")),
        }
    }
}

/// `[upstreams.NAME]`: one upstream identity provider.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// Host patterns: `host`, `host:port` or `*.domain`.
    #[serde(default)]
    pub hosts: Vec<HostPattern>,
    /// Personal access token, sent as Basic with an empty user.
    #[serde(default)]
    pub pat: Secret,
    /// Bearer token.
    #[serde(default)]
    pub bearer: Secret,
    /// Basic auth user.
    #[serde(default)]
    pub basic_user: Secret,
    /// Basic auth password.
    #[serde(default)]
    pub basic_password: Secret,
    /// A custom header, `Name: value`.
    #[serde(default)]
    pub header: Secret,
    /// A cookie header value.
    #[serde(default)]
    pub cookie: Secret,
    /// Allow plain HTTP (tests on loopback).
    #[serde(default)]
    pub allow_http: bool,
    /// Allow private, loopback and link-local addresses (internal upstreams, tests).
    #[serde(default)]
    pub allow_private: bool,
}

impl UpstreamSettings {
    /// The kinds of credential configured (`pat`, `bearer`, `basic`, `header`, `cookie`); at
    /// most one is valid.
    pub fn credential_kinds(&self) -> Vec<&'static str> {
        [
            ("pat", !self.pat.is_empty()),
            ("bearer", !self.bearer.is_empty()),
            (
                "basic",
                !self.basic_user.is_empty() || !self.basic_password.is_empty(),
            ),
            ("header", !self.header.is_empty()),
            ("cookie", !self.cookie.is_empty()),
        ]
        .into_iter()
        .filter_map(|(kind, set)| set.then_some(kind))
        .collect()
    }
}

/// How a value from the environment is turned into a TOML value.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    StrList,
    IntList,
}

/// Every plain environment variable and the key it sets.
const ENV_KEYS: &[(&str, &str, Kind)] = &[
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
    ("AVATAR_IMAGE_WORKERS", "images.workers", Kind::Int),
    ("AVATAR_UPSTREAM_TIMEOUT", "upstream.timeout", Kind::Str),
    (
        "AVATAR_UPSTREAM_CONNECT_TIMEOUT",
        "upstream.connect_timeout",
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
    ("AVATAR_JOB_MAX_ATTEMPTS", "jobs.max_attempts", Kind::Int),
    ("AVATAR_JOB_WORKERS", "jobs.workers", Kind::Int),
    ("AVATAR_JOB_RETRY_BASE", "jobs.retry_base", Kind::Str),
    ("AVATAR_JOB_RETRY_MAX", "jobs.retry_max", Kind::Str),
    ("AVATAR_EVENTS_BUFFER", "events.buffer", Kind::Int),
    ("AVATAR_DEMO", "demo.enabled", Kind::Str),
    ("AVATAR_DEMO_TOKEN_TTL", "demo.token_ttl", Kind::Str),
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
const UPSTREAM_FIELDS: &[(&str, Kind)] = &[
    ("BASIC_PASSWORD", Kind::Str),
    ("ALLOW_PRIVATE", Kind::Bool),
    ("BASIC_USER", Kind::Str),
    ("ALLOW_HTTP", Kind::Bool),
    ("BEARER", Kind::Str),
    ("HEADER", Kind::Str),
    ("COOKIE", Kind::Str),
    ("HOSTS", Kind::StrList),
    ("PAT", Kind::Str),
];

impl Settings {
    /// Load from the compiled-in defaults, an optional file, and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Load with an explicit environment (tests pass their own).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = DEFAULT_TOML
            .parse()
            .map_err(|e| invalid("config/default.toml", e))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            let overlay: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::File {
                        path: path.to_owned(),
                        message: e.message().to_owned(),
                    })?;
            merge(&mut table, overlay);
        }
        let mut sources: BTreeMap<String, String> = BTreeMap::new();
        for (name, raw) in env {
            let Some((key, kind)) = env_key(&name)? else {
                continue;
            };
            let value = env_value(&name, &raw, kind)?;
            set_path(&mut table, &key, value);
            sources.insert(key, name);
        }
        let named = |path: String| match sources.get(&path) {
            Some(var) => format!("{path} ({var})"),
            None => path,
        };
        let settings: Settings = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let path = e.path().to_string();
                invalid(named(path), e.into_inner().message())
            })?;
        settings.validate(&named)?;
        Ok(settings)
    }

    fn validate(&self, named: &dyn Fn(String) -> String) -> Result<(), ConfigError> {
        let key = |k: &str| named(k.to_owned());
        if let Some(url) = &self.server.public_base_url
            && !matches!(url.scheme(), "http" | "https")
        {
            return Err(invalid(
                key("server.public_base_url"),
                "must be an http or https URL",
            ));
        }
        if self.server.rewrite_max_records == 0 {
            return Err(invalid(
                key("server.rewrite_max_records"),
                "must be at least 1",
            ));
        }
        if self.server.api_keys.iter().any(Secret::is_empty) {
            return Err(invalid(key("server.api_keys"), "empty key in the list"));
        }
        let images = &self.images;
        if images.sizes.is_empty() || images.sizes.iter().any(|&s| s == 0 || s > 2048) {
            return Err(invalid(
                key("images.sizes"),
                "needs one or more sizes in 1..=2048",
            ));
        }
        if images.default_size == 0 || images.default_size > 2048 {
            return Err(invalid(key("images.default_size"), "must be in 1..=2048"));
        }
        if images.max_image_bytes < 1024 {
            return Err(invalid(
                key("images.max_image_bytes"),
                "must be at least 1024",
            ));
        }
        if self.cache.max_size_mb == 0 {
            return Err(invalid(key("cache.max_size_mb"), "must be at least 1"));
        }
        if self.cache.memory_mb == 0 {
            return Err(invalid(key("cache.memory_mb"), "must be at least 1"));
        }
        if self.cache.max_concurrent_downloads == 0 {
            return Err(invalid(
                key("cache.max_concurrent_downloads"),
                "must be at least 1",
            ));
        }
        if self.cache.fresh_for().is_zero() {
            return Err(invalid(key("cache.ttl"), "must be longer than zero"));
        }
        let uploads = &self.uploads;
        if uploads.variant_sizes.is_empty()
            || uploads.variant_sizes.iter().any(|&s| s == 0 || s > 2048)
        {
            return Err(invalid(
                key("uploads.variant_sizes"),
                "needs one or more sizes in 1..=2048",
            ));
        }
        if uploads.max_bytes < 1024 {
            return Err(invalid(key("uploads.max_bytes"), "must be at least 1024"));
        }
        if self.jobs.lease < Duration::from_secs(1) {
            return Err(invalid(key("jobs.lease"), "must be at least 1s"));
        }
        if self.jobs.heartbeat.is_zero() || self.jobs.heartbeat >= self.jobs.lease {
            return Err(invalid(
                key("jobs.heartbeat"),
                "must be above 0 and below jobs.lease",
            ));
        }
        if self.events.buffer == 0 {
            return Err(invalid(key("events.buffer"), "must be at least 1"));
        }
        if self.demo.token_ttl < Duration::from_secs(60)
            || self.demo.token_ttl > Duration::from_secs(24 * 3600)
        {
            return Err(invalid(key("demo.token_ttl"), "must be between 1m and 24h"));
        }
        if self.jobs.max_attempts == 0 {
            return Err(invalid(key("jobs.max_attempts"), "must be at least 1"));
        }
        if !self.webhooks.url.is_empty() {
            url::Url::parse(&self.webhooks.url).map_err(|e| invalid(key("webhooks.url"), e))?;
            if self.webhooks.secret.is_empty() {
                return Err(invalid(
                    key("webhooks.secret"),
                    "a webhook URL needs a signing secret (whsec_...)",
                ));
            }
        }
        for (name, upstream) in &self.upstreams {
            let base = format!("upstreams.{name}");
            if upstream.hosts.is_empty() {
                return Err(invalid(
                    key(&format!("{base}.hosts")),
                    "an upstream needs at least one host",
                ));
            }
            if upstream.credential_kinds().len() > 1 {
                return Err(invalid(
                    key(&base),
                    "configure one credential per upstream (pat, bearer, basic, header or cookie)",
                ));
            }
        }
        Ok(())
    }

    /// Whether the profile page and demo tokens are on: `AVATAR_DEMO`, or when it is `auto`,
    /// whether the listener is a loopback address (a page that mints tokens is for a developer's
    /// own machine, not for a network).
    pub fn demo_enabled(&self) -> bool {
        match self.demo.enabled {
            DemoMode::On => true,
            DemoMode::Off => false,
            DemoMode::Auto => self.server.listen.ip().is_loopback(),
        }
    }

    /// Sizes in ascending order without duplicates.
    pub fn sorted_sizes(&self) -> Vec<u32> {
        let mut sizes = self.images.sizes.clone();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Which key an environment variable sets, if it is one of ours.
fn env_key(name: &str) -> Result<Option<(String, Kind)>, ConfigError> {
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
         _HEADER, _COOKIE, _ALLOW_HTTP or _ALLOW_PRIVATE",
    ))
}

fn env_value(name: &str, raw: &str, kind: Kind) -> Result<toml::Value, ConfigError> {
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

fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) {
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

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Serde adapter for durations written as "90s", "24h", "7d" (or a number of seconds).
/// An optional URL: empty text is `None`.
mod optional_url {
    use serde::{Deserialize, Deserializer, Serializer};
    use url::Url;

    pub fn serialize<S: Serializer>(u: &Option<Url>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(u.as_ref().map_or("", Url::as_str))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
        let raw = String::deserialize(d)?;
        if raw.trim().is_empty() {
            return Ok(None);
        }
        Url::parse(raw.trim())
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

mod human_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }

    fn parse(raw: Raw) -> Result<Duration, String> {
        match raw {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => humantime::parse_duration(t.trim())
                .map_err(|e| format!("`{t}` is not a duration like 90s, 24h or 7d ({e})")),
        }
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse(Raw::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_str(""),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            match Option::<Raw>::deserialize(d)? {
                None => Ok(None),
                Some(Raw::Text(t)) if t.trim().is_empty() => Ok(None),
                Some(raw) => parse(raw).map(Some).map_err(serde::de::Error::custom),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_from(
            None,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let s = load(&[]).expect("defaults load");
        assert_eq!(s.cache.dir, PathBuf::from("./avatar_cache"));
        assert_eq!(s.cache.fresh_for(), Duration::from_secs(24 * 3600));
        assert_eq!(s.cache.stale_for(), Duration::from_secs(7 * 24 * 3600));
        assert_eq!(s.cache.max_size_mb, 500);
        assert_eq!(s.cache.max_concurrent_downloads, 10);
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.images.sizes, vec![32, 64, 128, 256, 512]);
    }

    #[test]
    fn the_original_variable_names_work_verbatim() {
        let s = load(&[
            ("AVATAR_CACHE_DIR", "/tmp/x"),
            ("AVATAR_CACHE_TTL_HOURS", "2"),
            ("AVATAR_CACHE_MAX_SIZE_MB", "7"),
            ("AVATAR_CACHE_MAX_CONCURRENT_DOWNLOADS", "3"),
        ])
        .expect("loads");
        assert_eq!(s.cache.dir, PathBuf::from("/tmp/x"));
        assert_eq!(s.cache.fresh_for(), Duration::from_secs(7200));
        assert_eq!(s.cache.max_size_mb, 7);
        assert_eq!(s.cache.max_concurrent_downloads, 3);
    }

    #[test]
    fn human_durations_win_over_hours() {
        let s = load(&[
            ("AVATAR_CACHE_TTL_HOURS", "2"),
            ("AVATAR_CACHE_TTL", "90s"),
            ("AVATAR_CACHE_STALE", "1d"),
        ])
        .expect("loads");
        assert_eq!(s.cache.fresh_for(), Duration::from_secs(90));
        assert_eq!(s.cache.stale_for(), Duration::from_secs(86400));
    }

    #[test]
    fn upstreams_come_from_the_environment_alone() {
        let s = load(&[
            (
                "AVATAR_UPSTREAM_AZURE_HOSTS",
                "dev.azure.com, *.visualstudio.com",
            ),
            ("AVATAR_UPSTREAM_AZURE_PAT", "s3cr3t"),
            ("AVATAR_UPSTREAM_MY_GITLAB_HOSTS", "gitlab.example.com:8443"),
            ("AVATAR_UPSTREAM_MY_GITLAB_BASIC_USER", "bot"),
            ("AVATAR_UPSTREAM_MY_GITLAB_BASIC_PASSWORD", "pw"),
            ("AVATAR_UPSTREAM_MY_GITLAB_ALLOW_HTTP", "true"),
        ])
        .expect("loads");
        let azure = &s.upstreams["azure"];
        let hosts: Vec<String> = azure.hosts.iter().map(ToString::to_string).collect();
        assert_eq!(hosts, vec!["dev.azure.com", "*.visualstudio.com"]);
        assert_eq!(azure.pat.expose(), "s3cr3t");
        let gitlab = &s.upstreams["my_gitlab"];
        assert_eq!(gitlab.basic_user.expose(), "bot");
        assert!(gitlab.allow_http);
        assert!(!gitlab.allow_private);
    }

    #[test]
    fn errors_name_the_key_and_the_variable() {
        let err = load(&[("AVATAR_CACHE_TTL_HOURS", "soon")]).expect_err("rejects");
        assert!(err.to_string().contains("AVATAR_CACHE_TTL_HOURS"), "{err}");
        let err = load(&[("AVATAR_CACHE_TTL", "forever")]).expect_err("rejects");
        assert!(
            err.to_string().contains("cache.ttl (AVATAR_CACHE_TTL)"),
            "{err}"
        );
        let err = load(&[("AVATAR_SIZES", "32,4000")]).expect_err("rejects");
        assert!(err.to_string().contains("AVATAR_SIZES"), "{err}");
        let err = load(&[("AVATAR_UPSTREAM_X_TOKEN", "a")]).expect_err("rejects");
        assert!(err.to_string().contains("AVATAR_UPSTREAM_X_TOKEN"), "{err}");
        let err = load(&[("AVATAR_LISTEN", "localhost")]).expect_err("rejects");
        assert!(err.to_string().contains("server.listen"), "{err}");
    }

    #[test]
    fn settings_arrive_typed_and_bad_values_name_their_key() {
        let s = load(&[
            ("AVATAR_DEFAULT_IMAGE", "Identicon"),
            ("AVATAR_PUBLIC_BASE_URL", "https://avatars.example/"),
            ("AVATAR_UPSTREAM_A_HOSTS", "*.example.com, b.example:8443"),
        ])
        .expect("loads");
        assert_eq!(s.images.default_image, DefaultImage::Identicon);
        assert_eq!(
            s.server.public_base_url.as_ref().map(url::Url::as_str),
            Some("https://avatars.example/")
        );
        let hosts: Vec<String> = s.upstreams["a"]
            .hosts
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(hosts, ["*.example.com", "b.example:8443"]);
        let err = load(&[("AVATAR_DEFAULT_IMAGE", "sparkles")]).expect_err("rejects");
        assert!(err.to_string().contains("images.default_image"), "{err}");
        let err = load(&[("AVATAR_UPSTREAM_A_HOSTS", "a.example/path")]).expect_err("rejects");
        assert!(err.to_string().contains("upstreams.a.hosts"), "{err}");
        let err = load(&[("AVATAR_PUBLIC_BASE_URL", "not a url")]).expect_err("rejects");
        assert!(err.to_string().contains("server.public_base_url"), "{err}");
    }

    #[test]
    fn the_demo_page_is_on_by_default_on_loopback_only() {
        assert!(load(&[]).expect("loads").demo_enabled());
        let public = load(&[("AVATAR_LISTEN", "0.0.0.0:8080")]).expect("loads");
        assert_eq!(public.demo.enabled, DemoMode::Auto);
        assert!(!public.demo_enabled());
        let forced =
            load(&[("AVATAR_LISTEN", "0.0.0.0:8080"), ("AVATAR_DEMO", "true")]).expect("loads");
        assert!(forced.demo_enabled());
        let off = load(&[("AVATAR_DEMO", "false")]).expect("loads");
        assert!(!off.demo_enabled());
        assert!(
            load(&[("AVATAR_LISTEN", "[::1]:0")])
                .expect("loads")
                .demo_enabled()
        );
        let err = load(&[("AVATAR_DEMO", "sometimes")]).expect_err("rejects");
        assert!(
            err.to_string().contains("demo.enabled (AVATAR_DEMO)"),
            "{err}"
        );
        let err = load(&[("AVATAR_DEMO_TOKEN_TTL", "2s")]).expect_err("rejects");
        assert!(err.to_string().contains("AVATAR_DEMO_TOKEN_TTL"), "{err}");
    }

    #[test]
    fn two_credentials_on_one_upstream_are_refused() {
        let err = load(&[
            ("AVATAR_UPSTREAM_A_HOSTS", "a.example"),
            ("AVATAR_UPSTREAM_A_PAT", "x"),
            ("AVATAR_UPSTREAM_A_BEARER", "y"),
        ])
        .expect_err("rejects");
        assert!(err.to_string().contains("upstreams.a"), "{err}");
    }

    #[test]
    fn printed_configuration_redacts_every_secret() {
        let s = load(&[
            ("AVATAR_API_KEYS", "k1-very-secret,k2-very-secret"),
            ("AVATAR_KEY_SECRET", "hmac-very-secret"),
            ("AVATAR_UPSTREAM_A_HOSTS", "a.example"),
            ("AVATAR_UPSTREAM_A_PAT", "pat-very-secret"),
        ])
        .expect("loads");
        let text = s.redacted_toml();
        assert!(!text.contains("very-secret"), "{text}");
        assert!(text.contains("[redacted]"));
        assert!(!format!("{s:?}").contains("very-secret"));
    }

    #[test]
    fn a_config_file_overrides_defaults_and_env_overrides_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[cache]\nttl_hours = 5\nmax_size_mb = 9\n").expect("write");
        let s = Settings::load_from(
            Some(&path),
            [("AVATAR_CACHE_MAX_SIZE_MB".to_owned(), "11".to_owned())],
        )
        .expect("loads");
        assert_eq!(s.cache.fresh_for(), Duration::from_secs(5 * 3600));
        assert_eq!(s.cache.max_size_mb, 11);
    }
}
