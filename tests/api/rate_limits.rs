//! Per-client rate limits of the expensive paths (`AVATAR_RATE_LIMIT_*`): `/avatar` counts only
//! requests that would render or fetch and answers a limited `<img>` with the pre-rendered
//! default; the JSON API answers `429` with `Retry-After`.

use crate::helpers::*;

fn tight_limits() -> Vec<(&'static str, String)> {
    vec![
        ("AVATAR_RATE_LIMIT_AVATAR_PER_MINUTE", "1".into()),
        ("AVATAR_RATE_LIMIT_AVATAR_BURST", "2".into()),
        ("AVATAR_RATE_LIMIT_API_PER_MINUTE", "1".into()),
        ("AVATAR_RATE_LIMIT_API_BURST", "2".into()),
    ]
}

fn key(n: u8) -> String {
    format!("{n:02x}").repeat(16)
}

#[tokio::test]
async fn an_img_over_its_render_limit_gets_the_pre_rendered_default_and_memory_hits_never_count() {
    let app = spawn_app(&tight_limits()).await;
    // Two misses use the burst; hits of the first key in between count for nothing.
    for _ in 0..5 {
        let r = app.get(&format!("/avatar/{}?s=64", key(1))).await;
        assert_eq!(r.status(), 200);
        assert!(
            r.headers().get("retry-after").is_none(),
            "a hit was limited"
        );
    }
    let r = app.get(&format!("/avatar/{}?s=64", key(2))).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("retry-after").is_none());

    // The third miss is over the limit: still an image, the one rendered at start-up.
    let r = app.get(&format!("/avatar/{}?s=64", key(3))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header_of(&r, "content-type"), "image/png");
    assert_eq!(header_of(&r, "cache-control"), "public, max-age=60");
    let retry: u64 = header_of(&r, "retry-after").parse().expect("seconds");
    assert!(retry >= 1);
    let fallback = app
        .state
        .avatars
        .fallback()
        .for_size(64)
        .expect("pre-rendered");
    assert_eq!(r.bytes().await.expect("body"), fallback.bytes);

    // Hits stay cheap and unlimited for the same client.
    let r = app.get(&format!("/avatar/{}?s=64", key(1))).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("retry-after").is_none());
    assert_ne!(
        r.bytes().await.expect("body"),
        fallback.bytes,
        "the hit is the key's own image"
    );
}

#[tokio::test]
async fn the_json_api_answers_429_with_retry_after_past_its_limit() {
    let app = spawn_app(&tight_limits()).await;
    let register = |user: &'static str| {
        app.client
            .put(format!("{}/v1/identities/{user}", app.base))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({"display_name": "Ada"}))
            .send()
    };
    assert_eq!(register("a").await.expect("sent").status(), 200);
    assert_eq!(register("b").await.expect("sent").status(), 200);
    let r = register("c").await.expect("sent");
    assert_eq!(r.status(), 429);
    let retry: u64 = header_of(&r, "retry-after").parse().expect("seconds");
    assert!(retry >= 1);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["code"], "rate-limited");
    assert!(body["message"].is_string() && body["user_message"].is_string());
    // Operators' endpoints are not part of the API limit.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_rate_of_zero_turns_the_limits_off() {
    let app = spawn_app(&[
        ("AVATAR_RATE_LIMIT_AVATAR_PER_MINUTE", "0".into()),
        ("AVATAR_RATE_LIMIT_API_PER_MINUTE", "0".into()),
    ])
    .await;
    for n in 0..20 {
        let r = app.get(&format!("/avatar/{}?s=32", key(n))).await;
        assert!(r.headers().get("retry-after").is_none());
    }
    assert_eq!(app.state.limits.avatar.tracked(), 0);
}
