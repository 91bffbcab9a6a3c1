//! The settings' tests: defaults, environment names, validation, redaction.

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

#[test]
fn decode_limits_default_to_the_documented_values_and_refuse_nonsense() {
    let s = load(&[]).expect("defaults load");
    assert_eq!(s.images.max_jpeg_scans, 64);
    assert_eq!(s.images.max_decode_bytes, 256 * 1024 * 1024);
    let s = load(&[
        ("AVATAR_MAX_JPEG_SCANS", "200"),
        ("AVATAR_MAX_DECODE_BYTES", "1048576"),
    ])
    .expect("loads");
    assert_eq!(
        (s.images.max_jpeg_scans, s.images.max_decode_bytes),
        (200, 1 << 20)
    );
    let err = load(&[("AVATAR_MAX_JPEG_SCANS", "0")]).expect_err("rejects");
    assert!(err.to_string().contains("AVATAR_MAX_JPEG_SCANS"), "{err}");
    let err = load(&[("AVATAR_MAX_DECODE_BYTES", "1000")]).expect_err("rejects");
    assert!(err.to_string().contains("AVATAR_MAX_DECODE_BYTES"), "{err}");
}

#[test]
fn the_demo_page_is_on_by_default_on_loopback_only() {
    assert!(load(&[]).expect("loads").demo_enabled());
    let base = ("AVATAR_PUBLIC_BASE_URL", "https://avatars.example.com");
    let public = load(&[("AVATAR_LISTEN", "0.0.0.0:8080"), base]).expect("loads");
    assert_eq!(public.demo.enabled, DemoMode::Auto);
    assert!(!public.demo_enabled());
    let forced = load(&[
        ("AVATAR_LISTEN", "0.0.0.0:8080"),
        ("AVATAR_DEMO", "true"),
        base,
    ])
    .expect("loads");
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
fn rate_limits_and_stream_bounds_default_sanely_and_come_from_the_environment() {
    let s = load(&[]).expect("defaults load");
    // A page of 200 cold avatars from one client fits in the burst.
    assert!(s.rate_limits.avatar_burst >= 200);
    assert!(s.rate_limits.avatar_per_minute > 0 && s.rate_limits.api_per_minute > 0);
    assert!(s.events.max_message_bytes <= 64 * 1024);
    assert!(s.events.max_streams_per_user >= 1);
    let s = load(&[
        ("AVATAR_RATE_LIMIT_AVATAR_PER_MINUTE", "0"),
        ("AVATAR_RATE_LIMIT_AVATAR_BURST", "7"),
        ("AVATAR_RATE_LIMIT_API_PER_MINUTE", "30"),
        ("AVATAR_RATE_LIMIT_API_BURST", "5"),
        ("AVATAR_RATE_LIMIT_MAX_CLIENTS", "1000"),
        ("AVATAR_EVENTS_MAX_MESSAGE_BYTES", "512"),
        ("AVATAR_EVENTS_MAX_STREAMS_PER_USER", "3"),
    ])
    .expect("valid");
    let r = &s.rate_limits;
    assert_eq!(
        (
            r.avatar_per_minute,
            r.avatar_burst,
            r.api_per_minute,
            r.api_burst
        ),
        (0, 7, 30, 5)
    );
    assert_eq!(r.max_clients, 1000);
    assert_eq!(
        (s.events.max_message_bytes, s.events.max_streams_per_user),
        (512, 3)
    );
}

#[test]
fn printed_configuration_redacts_the_userinfo_and_query_of_every_url() {
    let s = load(&[
        (
            "AVATAR_WEBHOOK_URL",
            "https://hooks.example/x?token=hook-very-secret",
        ),
        ("AVATAR_WEBHOOK_SECRET", "whsec_x"),
        (
            "AVATAR_STORE",
            "s3://store-user:store-very-secret@bucket/prefix",
        ),
        (
            "AVATAR_PUBLIC_BASE_URL",
            // (userinfo is refused here: browsers would receive it)
            "https://avatars.example/?k=base-very-secret",
        ),
        (
            "AVATAR_CORS_ORIGINS",
            "https://app.example?t=cors-very-secret",
        ),
        (
            "AVATAR_DATABASE_URL",
            "postgres://user:db-very-secret@db/avatars",
        ),
    ])
    .expect("loads");
    let text = s.redacted_toml();
    assert!(!text.contains("very-secret"), "{text}");
    assert!(!text.contains("store-user"), "{text}");
    assert!(text.contains("https://hooks.example/x?redacted"), "{text}");
    assert!(text.contains("s3://redacted@bucket/prefix"), "{text}");
}

#[test]
fn a_host_pattern_starting_with_a_non_ascii_letter_is_normalised_not_a_panic() {
    for (raw, punycode) in [
        ("übel.example", "xn--bel-goa.example"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("*.bücher.example", "*.xn--bcher-kva.example"),
    ] {
        let s = load(&[("AVATAR_UPSTREAM_X_HOSTS", raw)]).expect("loads");
        assert_eq!(s.upstreams["x"].hosts[0].to_string(), punycode);
    }
    let err = load(&[("AVATAR_UPSTREAM_X_HOSTS", "ü*.example")]).expect_err("rejects");
    assert!(err.to_string().contains("AVATAR_UPSTREAM_X_HOSTS"), "{err}");
}

#[test]
fn extreme_numbers_and_durations_are_refused_naming_the_variable() {
    let values = [
        "-1",
        "100000000",
        "9223372036854775807",
        "18446744073709551616",
        "500000000y",
        "99999999999999d",
    ];
    let variables = numeric_variables();
    assert!(variables.contains(&"AVATAR_JOB_WORKERS") && variables.contains(&"AVATAR_CACHE_TTL"));
    for var in variables
        .into_iter()
        .chain(["AVATAR_UPSTREAM_X_MAX_CONCURRENT"])
    {
        for value in values {
            let loaded = load(&[(var, value), ("AVATAR_UPSTREAM_X_HOSTS", "x.example")]);
            // A value may be fine (a rewrite body of 100 MB); a refusal names the variable.
            if let Err(err) = loaded {
                assert!(err.to_string().contains(var), "{var}={value}: {err}");
            }
        }
    }
    for (var, value) in [
        ("AVATAR_IMAGE_WORKERS", "100000000"),
        ("AVATAR_JOB_WORKERS", "100000000"),
        (
            "AVATAR_CACHE_MAX_CONCURRENT_DOWNLOADS",
            "9223372036854775807",
        ),
        ("AVATAR_UPSTREAM_X_MAX_CONCURRENT", "9223372036854775807"),
        ("AVATAR_EVENTS_BUFFER", "100000000"),
        ("AVATAR_CACHE_TTL", "500000000y"),
        ("AVATAR_CACHE_TTL_HOURS", "9223372036854775807"),
        ("AVATAR_REQUEST_TIMEOUT", "99999999999999d"),
    ] {
        let err = load(&[(var, value), ("AVATAR_UPSTREAM_X_HOSTS", "x.example")]).expect_err(var);
        assert!(err.to_string().contains(var), "{var}={value}: {err}");
    }
}

#[test]
fn every_error_names_the_variable_even_when_the_value_came_from_elsewhere() {
    let err = load(&[("AVATAR_CACHE_TTL_HOURS", "0")]).expect_err("rejects");
    assert!(err.to_string().contains("AVATAR_CACHE_TTL_HOURS"), "{err}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[jobs]\nworkers = 100000000\n").expect("write");
    let err = Settings::load_from(Some(&path), []).expect_err("rejects");
    assert!(
        err.to_string()
            .contains("jobs.workers (AVATAR_JOB_WORKERS)"),
        "{err}"
    );
    assert_eq!(
        env::env_name_of("upstreams.azure.max_concurrent").as_deref(),
        Some("AVATAR_UPSTREAM_AZURE_MAX_CONCURRENT")
    );
}

#[test]
fn unknown_variables_are_reported_with_the_closest_name() {
    let env = [
        ("AVATAR_CACHE_TTL_HOUR", "5"),
        ("AVATAR_CACHE_TTL_HOURS", "5"),
        ("AVATAR_CONFIG", "x.toml"),
        ("AVATAR_UPSTREAM_A_HOSTS", "a.example"),
        ("AVATAR_SOMETHING_ELSE_ENTIRELY", "1"),
        ("HOME", "/root"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(
        unknown_variables(env),
        [
            "unknown variable AVATAR_CACHE_TTL_HOUR; did you mean AVATAR_CACHE_TTL_HOURS?",
            "unknown variable AVATAR_SOMETHING_ELSE_ENTIRELY; it sets nothing",
        ]
    );
}

#[test]
fn a_wildcard_listen_address_needs_a_public_base_url() {
    for listen in ["0.0.0.0:8080", "[::]:8080"] {
        let err = load(&[("AVATAR_LISTEN", listen)]).expect_err("refuses");
        let text = err.to_string();
        assert!(text.contains("AVATAR_PUBLIC_BASE_URL"), "{text}");
        assert!(text.contains("https://avatars.example.com"), "{text}");
        let s = load(&[
            ("AVATAR_LISTEN", listen),
            ("AVATAR_PUBLIC_BASE_URL", "https://avatars.example.com"),
        ])
        .expect("loads with a public URL");
        assert!(s.server.listen.ip().is_unspecified());
    }
    load(&[("AVATAR_LISTEN", "127.0.0.1:8080")]).expect("a specific address needs none");
}
