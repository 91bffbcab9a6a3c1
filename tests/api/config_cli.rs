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
