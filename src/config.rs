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

mod bounds;
mod env;
mod redact;

pub use crate::hosts::HostPattern;
use env::{env_key, env_name_of, env_value, merge, set_path};
pub use env::{numeric_variables, unknown_variables};

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
    /// Per-client rate limits of the expensive paths.
    pub rate_limits: RateLimitSettings,
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
    /// Longest wait for a request's headers and for the next request on an idle connection
    /// (`AVATAR_HEADER_READ_TIMEOUT`).
    #[serde(with = "human_duration")]
    pub header_read_timeout: Duration,
    /// Connections open at once; past it the listener waits (`AVATAR_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Longest wait for open connections (event streams included) at shutdown
    /// (`AVATAR_SHUTDOWN_TIMEOUT`).
    #[serde(with = "human_duration")]
    pub shutdown_timeout: Duration,
    /// Longest an `/avatar` request waits for a slow path (an upstream fetch, a render) before
    /// it answers with the key's default; the work goes on for later requests
    /// (`AVATAR_SERVE_TIMEOUT`).
    #[serde(with = "human_duration")]
    pub serve_timeout: Duration,
    /// Time to render the key's default when an avatar could not be resolved, before the
    /// pre-rendered default is served (`AVATAR_FALLBACK_TIMEOUT`).
    #[serde(with = "human_duration")]
    pub fallback_timeout: Duration,
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
    /// Most scans accepted in a (progressive) JPEG (`AVATAR_MAX_JPEG_SCANS`).
    pub max_jpeg_scans: u32,
    /// Largest estimated decode memory for one image, in bytes (`AVATAR_MAX_DECODE_BYTES`).
    pub max_decode_bytes: u64,
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
    /// Longest wait for a download slot (`AVATAR_UPSTREAM_QUEUE_TIMEOUT`).
    #[serde(with = "human_duration")]
    pub queue_timeout: Duration,
    /// First backoff after a failure without `Retry-After`; doubles (`AVATAR_UPSTREAM_BACKOFF`).
    #[serde(with = "human_duration")]
    pub backoff: Duration,
    /// Cap of `Retry-After` and of backoff (`AVATAR_UPSTREAM_MAX_RETRY_AFTER`).
    #[serde(with = "human_duration")]
    pub max_retry_after: Duration,
    /// Transient failures in a row before a whole upstream backs off
    /// (`AVATAR_UPSTREAM_FAILURES_BEFORE_BACKOFF`).
    pub failures_before_backoff: u32,
    /// One warning per upstream and kind of trouble per this (`AVATAR_UPSTREAM_WARN_INTERVAL`).
    #[serde(with = "human_duration")]
    pub warn_interval: Duration,
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
    /// Upload bodies (signed `PUT`s and single-request uploads) read at once; past it a new one
    /// is refused with `503 uploads-busy` and `Retry-After` (`AVATAR_MAX_CONCURRENT_UPLOADS`).
    pub max_concurrent_uploads: usize,
    /// Uploads (grants and single-request uploads) one user may start per
    /// [`Self::grant_window`]; past it `429 upload-quota` (`AVATAR_UPLOAD_GRANTS_PER_USER`).
    pub grants_per_user: u32,
    /// The window of [`Self::grants_per_user`] (`AVATAR_UPLOAD_GRANT_WINDOW`).
    #[serde(with = "human_duration")]
    pub grant_window: Duration,
    /// Originals of one user waiting in temporary storage at once (received, not yet processed
    /// or swept); past it `429 originals-quota` (`AVATAR_MAX_PENDING_ORIGINALS`).
    pub max_pending_originals: u32,
    /// Bytes of those originals, in bytes (`AVATAR_MAX_PENDING_ORIGINAL_BYTES`).
    pub max_pending_original_bytes: u64,
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
    /// Finished jobs (and their status) are purged after this (`AVATAR_JOB_RETENTION`).
    #[serde(with = "human_duration")]
    pub retention: Duration,
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
    /// Largest WebSocket message or frame a client may send, in bytes; past it the stream is
    /// closed (`AVATAR_EVENTS_MAX_MESSAGE_BYTES`). Clients never need to send data.
    pub max_message_bytes: usize,
    /// Event streams (WebSocket and SSE together) one user may hold open; past it `429`
    /// (`AVATAR_EVENTS_MAX_STREAMS_PER_USER`).
    pub max_streams_per_user: usize,
}

/// `[rate_limits]`: per-client limits (by IP address, IPv6 by /64) of the paths where a request
/// costs real work. A rate of 0 turns that limit off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// `/avatar` requests that render or fetch (memory hits never count), sustained per minute
    /// (`AVATAR_RATE_LIMIT_AVATAR_PER_MINUTE`).
    pub avatar_per_minute: u32,
    /// Such requests a client may make at once (`AVATAR_RATE_LIMIT_AVATAR_BURST`).
    pub avatar_burst: u32,
    /// JSON API requests (identities, uploads, jobs), sustained per minute
    /// (`AVATAR_RATE_LIMIT_API_PER_MINUTE`).
    pub api_per_minute: u32,
    /// JSON API requests a client may make at once (`AVATAR_RATE_LIMIT_API_BURST`).
    pub api_burst: u32,
    /// Clients tracked per limit before idle ones are forgotten
    /// (`AVATAR_RATE_LIMIT_MAX_CLIENTS`).
    pub max_clients: usize,
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
    /// Requests in flight to this upstream; unset: half of `cache.max_concurrent_downloads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<usize>,
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
        // Every error names the variable that sets its key, whichever layer the value came from.
        let named = |path: String| match sources.get(&path).cloned().or_else(|| env_name_of(&path))
        {
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
        self.validate_server(&key)?;
        self.validate_images_and_cache(&key)?;
        self.validate_uploads_and_jobs(&key)?;
        self.validate_webhooks_and_upstreams(&key)?;
        self.validate_bounds(&key)?;
        Ok(())
    }

    /// The listener, the public URL, the service keys, the rewrite limits.
    fn validate_server(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        if let Some(url) = &self.server.public_base_url
            && (!url.username().is_empty() || url.password().is_some())
        {
            return Err(invalid(
                key("server.public_base_url"),
                "must not carry a user name or password (browsers receive it in every URL)",
            ));
        }
        if self.server.serve_timeout.is_zero() {
            return Err(invalid(
                key("server.serve_timeout"),
                "must be longer than zero",
            ));
        }
        if let Some(url) = &self.server.public_base_url
            && !matches!(url.scheme(), "http" | "https")
        {
            return Err(invalid(
                key("server.public_base_url"),
                "must be an http or https URL",
            ));
        }
        if self.server.listen.ip().is_unspecified() && self.server.public_base_url.is_none() {
            return Err(invalid(
                key("server.public_base_url"),
                format!(
                    "AVATAR_PUBLIC_BASE_URL must be set when AVATAR_LISTEN is a wildcard address \
                     ({}): browsers cannot load images from it; set AVATAR_PUBLIC_BASE_URL to \
                     the URL browsers use, e.g. https://avatars.example.com",
                    self.server.listen
                ),
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
        if !(1..=1_000_000).contains(&self.server.max_connections) {
            return Err(invalid(
                key("server.max_connections"),
                "must be between 1 and 1000000",
            ));
        }
        if self.server.header_read_timeout.is_zero() {
            return Err(invalid(
                key("server.header_read_timeout"),
                "must be longer than zero",
            ));
        }
        Ok(())
    }

    /// Sizes, decode limits, cache budgets and lifetimes.
    fn validate_images_and_cache(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
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
        if images.max_jpeg_scans == 0 {
            return Err(invalid(
                key("images.max_jpeg_scans"),
                "must be at least 1 (a baseline JPEG has one scan)",
            ));
        }
        if images.max_decode_bytes < 1 << 20 {
            return Err(invalid(
                key("images.max_decode_bytes"),
                "must be at least 1048576 (1 MiB)",
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
            let at_fault = if self.cache.ttl.is_some() {
                "cache.ttl"
            } else {
                "cache.ttl_hours"
            };
            return Err(invalid(key(at_fault), "must be longer than zero"));
        }
        Ok(())
    }

    /// Uploads, the job runner, events.
    fn validate_uploads_and_jobs(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
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
        if uploads.max_concurrent_uploads == 0 || uploads.max_concurrent_uploads > 100_000 {
            return Err(invalid(
                key("uploads.max_concurrent_uploads"),
                "must be in 1..=100000",
            ));
        }
        if uploads.grants_per_user == 0 {
            return Err(invalid(
                key("uploads.grants_per_user"),
                "must be at least 1",
            ));
        }
        if uploads.grant_window.is_zero() {
            return Err(invalid(
                key("uploads.grant_window"),
                "must be longer than zero",
            ));
        }
        if uploads.max_pending_originals == 0 {
            return Err(invalid(
                key("uploads.max_pending_originals"),
                "must be at least 1",
            ));
        }
        if uploads.max_pending_original_bytes < uploads.max_bytes {
            return Err(invalid(
                key("uploads.max_pending_original_bytes"),
                "must leave room for one upload of uploads.max_bytes (AVATAR_MAX_UPLOAD_BYTES)",
            ));
        }
        if self.jobs.lease < Duration::from_secs(1) {
            return Err(invalid(key("jobs.lease"), "must be at least 1s"));
        }
        if self.jobs.heartbeat.is_zero() || self.jobs.heartbeat >= self.jobs.lease {
            return Err(invalid(
                key("jobs.heartbeat"),
                "must be above 0 and below jobs.lease (AVATAR_JOB_LEASE)",
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
        Ok(())
    }

    /// Webhook delivery and the upstreams.
    fn validate_webhooks_and_upstreams(
        &self,
        key: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfigError> {
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

    /// The effective configuration as TOML, secrets redacted, and the userinfo and query of
    /// every URL-shaped value (whatever its key) replaced by `redacted`.
    pub fn redacted_toml(&self) -> String {
        let rendered = toml::Value::try_from(self).map(redact::redact_urls);
        rendered
            .and_then(|v| toml::to_string_pretty(&v))
            .unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

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

/// Serde adapter for durations written as "90s", "24h", "7d" (or a number of seconds).
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
        .and_then(|d| {
            if d > super::bounds::MAX_DURATION {
                Err(format!(
                    "{} is too long: at most 100 years",
                    humantime::format_duration(d)
                ))
            } else {
                Ok(d)
            }
        })
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
mod tests;
