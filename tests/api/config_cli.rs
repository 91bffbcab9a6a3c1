//! The binary's configuration commands, run as a newcomer would.

use std::process::Command;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_avatar-proxy"))
}

#[test]
fn config_prints_the_effective_configuration_with_secrets_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = binary()
        .arg("config")
        .env("AVATAR_CACHE_DIR", dir.path())
        .env("AVATAR_API_KEYS", "super-secret-key")
        .env("AVATAR_UPSTREAM_AZURE_HOSTS", "dev.azure.com")
        .env("AVATAR_UPSTREAM_AZURE_PAT", "super-secret-pat")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dev.azure.com"), "{text}");
    assert!(text.contains("[redacted]"));
    assert!(!text.contains("super-secret"), "{text}");
}

#[test]
fn invalid_configuration_fails_at_start_naming_the_key() {
    let out = binary()
        .arg("config")
        .env("AVATAR_CACHE_TTL_HOURS", "tomorrow")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("AVATAR_CACHE_TTL_HOURS"), "{text}");
}

#[test]
fn key_prints_the_services_key_and_refuses_without_its_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = binary()
        .args(["key", "alice"])
        .env("AVATAR_CACHE_DIR", dir.path())
        .env_remove("AVATAR_KEY_SECRET")
        .output()
        .expect("runs");
    assert!(!out.status.success(), "a key was printed without a secret");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("AVATAR_KEY_SECRET"), "{text}");
    assert!(
        !dir.path().join("key_secret").exists(),
        "the key command created a secret"
    );
    // With the secret the service keeps, the key is the one the service derives.
    std::fs::write(dir.path().join("key_secret"), "kept-secret").expect("write");
    let out = binary()
        .args(["key", "alice"])
        .env("AVATAR_CACHE_DIR", dir.path())
        .env_remove("AVATAR_KEY_SECRET")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let expected = avatar_proxy::keys::KeyDeriver::new(b"kept-secret")
        .key_for("alice")
        .to_string();
    assert_eq!(printed, expected);
}

/// Runs `avatar-proxy config` with these variables (and a temp cache dir).
fn config_with(env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = binary();
    cmd.arg("config").env("AVATAR_CACHE_DIR", dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("runs")
}

#[test]
fn config_redacts_the_userinfo_and_query_of_every_url_it_prints() {
    let out = config_with(&[
        (
            "AVATAR_WEBHOOK_URL",
            "https://hooks.example/x?token=tok-very-secret",
        ),
        ("AVATAR_WEBHOOK_SECRET", "whsec_abc"),
        ("AVATAR_STORE", "s3://key-id:key-very-secret@bucket/avatars"),
        (
            "AVATAR_DATABASE_URL",
            "postgres://user:pw-very-secret@db/avatars",
        ),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("very-secret") && !text.contains("key-id"),
        "{text}"
    );
    assert!(text.contains("https://hooks.example/x?redacted"), "{text}");
}

#[test]
fn an_unknown_variable_is_reported_with_the_name_it_probably_meant() {
    let out = config_with(&[("AVATAR_CACHE_TTL_HOUR", "5")]);
    assert!(out.status.success(), "a typo is a warning, not a failure");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(
            "unknown variable AVATAR_CACHE_TTL_HOUR; did you mean AVATAR_CACHE_TTL_HOURS?"
        ),
        "{text}"
    );
}

#[test]
fn a_wildcard_listen_address_without_a_public_url_is_refused_saying_what_to_set() {
    let out = config_with(&[("AVATAR_LISTEN", "0.0.0.0:8080")]);
    assert!(
        !out.status.success(),
        "started with http://0.0.0.0:8080 as its public URL"
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("AVATAR_PUBLIC_BASE_URL"), "{text}");
    let out = config_with(&[
        ("AVATAR_LISTEN", "0.0.0.0:8080"),
        ("AVATAR_PUBLIC_BASE_URL", "https://avatars.example.com"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_host_pattern_with_a_leading_non_ascii_letter_starts_instead_of_panicking() {
    let out = config_with(&[("AVATAR_UPSTREAM_X_HOSTS", "übel.example")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("xn--bel-goa.example"));
}

/// Every numeric and duration setting, at extreme values: either refused naming its variable,
/// or the application builds; never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_values_of_every_number_and_duration_never_panic_at_start() {
    let values = [
        "0",
        "4096",
        "100000000",
        "9223372036854775807",
        "36500d",
        "500000000y",
    ];
    let mut variables = avatar_proxy::config::numeric_variables();
    variables.push("AVATAR_UPSTREAM_X_MAX_CONCURRENT");
    let mut built = 0;
    for var in variables {
        for value in values {
            let dir = tempfile::tempdir().expect("tempdir");
            let env = [
                ("AVATAR_LISTEN", "127.0.0.1:0".to_owned()),
                ("AVATAR_CACHE_DIR", dir.path().display().to_string()),
                ("AVATAR_UPSTREAM_X_HOSTS", "x.example".to_owned()),
                (var, value.to_owned()),
            ]
            .map(|(k, v)| (k.to_owned(), v));
            let loaded = std::panic::catch_unwind(|| avatar_proxy::Settings::load_from(None, env));
            let settings = match loaded {
                Err(_) => panic!("{var}={value}: loading panicked"),
                Ok(Err(e)) => {
                    assert!(e.to_string().contains(var), "{var}={value}: {e}");
                    continue;
                }
                Ok(Ok(settings)) => settings,
            };
            let build = tokio::spawn(avatar_proxy::Application::build(settings)).await;
            match build {
                Err(e) => panic!("{var}={value}: start-up panicked: {e}"),
                Ok(Err(e)) => assert!(format!("{e:#}").contains(var), "{var}={value}: {e:#}"),
                Ok(Ok(app)) => {
                    built += 1;
                    drop(app);
                }
            }
        }
    }
    assert!(built > 0, "no value was accepted at all");
}

#[test]
fn start_up_errors_name_the_environment_variable() {
    for (var, value) in [
        ("AVATAR_STORE", "bogus://x"),
        ("AVATAR_DATABASE_URL", "nope://x"),
        ("AVATAR_JWT_PUBLIC_KEY_FILE", "/nonexistent/key.pem"),
        ("AVATAR_CACHE_TTL_HOURS", "0"),
        ("AVATAR_JWT_PUBLIC_KEY", "not a PEM key"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = binary()
            .arg("serve")
            .env("AVATAR_CACHE_DIR", dir.path())
            .env("AVATAR_LISTEN", "127.0.0.1:0")
            .env(var, value)
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{var}={value} started");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains(var), "{var}={value}: {text}");
    }
}
