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
