//! Health, readiness, metrics, limits.

use crate::helpers::*;

#[tokio::test]
async fn health_readiness_limits_and_metrics_answer() {
    let app = spawn_app(&[]).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let limits: serde_json::Value = app.get("/v1/limits").await.json().await.expect("json");
    assert_eq!(limits["sizes"], serde_json::json!([32, 64, 128, 256, 512]));
    assert_eq!(limits["max_identities_per_rewrite"], 1000);
    app.get("/avatar/0123456789abcdef0123456789abcdef").await;
    app.get("/avatar/0123456789abcdef0123456789abcdef").await;
    let text = app.get("/metrics").await.text().await.expect("text");
    assert!(
        text.contains("avatar_cache_hits_total{tier=\"memory\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("avatar_cache_bytes{tier=\"memory\"}"),
        "{text}"
    );
    assert!(
        text.contains("avatar_serve_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn readiness_names_the_failing_component() {
    let app = spawn_app(&[]).await;
    let cache = app.dir.path().join("cache");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Root ignores permissions, so replace the directory by a file instead.
        std::fs::rename(&cache, app.dir.path().join("moved")).expect("move");
        std::fs::write(&cache, b"not a directory").expect("write");
        let r = app.get("/readyz").await;
        assert_eq!(r.status(), 503);
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["failing"], serde_json::json!(["cache_dir"]));
        assert_eq!(body["code"], "not-ready");
        let _ = std::fs::Permissions::from_mode(0o700);
    }
}

#[tokio::test]
async fn unknown_routes_get_json_errors() {
    let app = spawn_app(&[]).await;
    let r = app.get("/nope").await;
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["code"], "not-found");
}
