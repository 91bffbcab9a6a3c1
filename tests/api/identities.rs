//! The identity API: authentication, rewrite semantics, registration, limits.

use serde_json::{Value, json};

use crate::helpers::*;

async fn rewrite(app: &TestApp, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/identities/rewrite", app.base))
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .expect("sent")
}

#[tokio::test]
async fn rewrite_replaces_both_spellings_and_keeps_every_other_field() {
    let upstream = FakeUpstream::start().await;
    upstream.set("avatars/1.jpg", Behaviour::Image(jpeg([1, 100, 1], 64)));
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    let response = rewrite(
        &app,
        json!({
            "identities": [
                {"id": "u1", "avatar_url": upstream.url("avatars/1.jpg"), "email": "a@example.com", "nested": {"x": [1, 2]}},
                {"id": 42, "avatarUrl": upstream.url("avatars/1.jpg"), "displayName": "Grace Hopper"},
                {"id": "u3", "avatar_url": "https://evil.example/x.png"},
                {"id": "u4", "avatarUrl": "not a url"},
                {"avatar_url": upstream.url("avatars/1.jpg")},
                "not an object",
                {"id": "u7", "avatar_url": null}
            ],
            "prefetch": "none"
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let ids = body["identities"].as_array().expect("array");
    assert_eq!(ids.len(), 7);
    assert_eq!(body["rewritten"], 2);
    let key1 = app.key_for("u1");
    assert_eq!(ids[0]["avatar_url"], format!("{}/avatar/{key1}", app.base));
    assert_eq!(ids[0]["email"], "a@example.com");
    assert_eq!(ids[0]["nested"], json!({"x": [1, 2]}));
    assert_eq!(
        ids[1]["avatarUrl"],
        format!("{}/avatar/{}", app.base, app.key_for("42"))
    );
    assert_eq!(ids[1]["displayName"], "Grace Hopper");
    // Not proxiable: still rewritten to a local URL (default image), and listed.
    assert_eq!(
        ids[2]["avatar_url"],
        format!("{}/avatar/{}", app.base, app.key_for("u3"))
    );
    assert_eq!(
        ids[3]["avatarUrl"],
        format!("{}/avatar/{}", app.base, app.key_for("u4"))
    );
    assert!(
        ids[4]["avatar_url"]
            .as_str()
            .expect("str")
            .starts_with(&app.base)
    );
    assert_eq!(ids[5], "not an object");
    let skipped: Vec<(u64, String)> = body["skipped"]
        .as_array()
        .expect("array")
        .iter()
        .map(|s| {
            (
                s["index"].as_u64().expect("index"),
                s["reason"].as_str().expect("reason").to_owned(),
            )
        })
        .collect();
    let indexes: Vec<u64> = skipped.iter().map(|s| s.0).collect();
    assert_eq!(indexes, vec![2, 3, 4, 5]);
    assert!(skipped[0].1.contains("allow-listed"), "{skipped:?}");
    assert_eq!(
        upstream.hits("avatars/1.jpg"),
        0,
        "prefetch none fetches nothing"
    );
    for id in &ids[..5] {
        let url = id
            .get("avatar_url")
            .or_else(|| id.get("avatarUrl"))
            .and_then(Value::as_str)
            .expect("url");
        assert!(
            !url.contains("evil.example") && !url.contains(&upstream.addr.to_string()),
            "{url}"
        );
    }
}

#[tokio::test]
async fn prefetch_wait_fetches_before_answering_and_background_soon_after() {
    let upstream = FakeUpstream::start().await;
    for i in 0..5 {
        upstream.set(
            &format!("avatars/p{i}.jpg"),
            Behaviour::Image(jpeg([i * 40, 0, 0], 64)),
        );
    }
    let app = spawn_app(&upstream_env("IDP", upstream.addr)).await;
    let records: Vec<Value> = (0..3)
        .map(|i| json!({"id": format!("p{i}"), "avatar_url": upstream.url(&format!("avatars/p{i}.jpg"))}))
        .collect();
    let body: Value = rewrite(&app, json!({"identities": records, "prefetch": "wait"}))
        .await
        .json()
        .await
        .expect("json");
    for i in 0..3 {
        assert_eq!(upstream.hits(&format!("avatars/p{i}.jpg")), 1);
        assert!(
            body["identities"][i]["avatar_url"]
                .as_str()
                .expect("url")
                .contains("?v=")
        );
    }
    let records: Vec<Value> = (3..5)
        .map(|i| json!({"id": format!("p{i}"), "avatar_url": upstream.url(&format!("avatars/p{i}.jpg"))}))
        .collect();
    let response = rewrite(&app, json!({"identities": records})).await;
    assert_eq!(response.status(), 200);
    upstream.wait_for_hits("avatars/p3.jpg", 1).await;
    upstream.wait_for_hits("avatars/p4.jpg", 1).await;
}

#[tokio::test]
async fn the_identity_api_requires_a_service_key() {
    let app = spawn_app(&[]).await;
    let url = format!("{}/v1/identities/rewrite", app.base);
    let none = app
        .client
        .post(&url)
        .json(&json!({"identities": []}))
        .send()
        .await
        .expect("sent");
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let wrong = app
        .client
        .post(&url)
        .bearer_auth("nope")
        .json(&json!({"identities": []}))
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status(), 401);
    let body: Value = wrong.json().await.expect("json");
    assert_eq!(body["code"], "unauthorized");
    assert!(body["user_message"].is_string());
    let purge = app
        .client
        .delete(format!("{}/v1/cache/{}", app.base, app.key_for("x")))
        .send()
        .await
        .expect("sent");
    assert_eq!(purge.status(), 401);
}

#[tokio::test]
async fn the_rewrite_limits_come_from_the_settings() {
    let app = spawn_app(&[
        ("AVATAR_REWRITE_MAX_RECORDS", "2".into()),
        ("AVATAR_REWRITE_MAX_BYTES", "2048".into()),
    ])
    .await;
    let three: Vec<Value> = (0..3).map(|i| json!({"id": i})).collect();
    let r = rewrite(&app, json!({"identities": three})).await;
    assert_eq!(r.status(), 413);
    let two: Vec<Value> = (0..2).map(|i| json!({"id": i})).collect();
    assert_eq!(
        rewrite(&app, json!({"identities": two})).await.status(),
        200
    );
    let big = json!({"identities": [{"id": "x".repeat(4096)}]});
    assert_eq!(rewrite(&app, big).await.status(), 413);
    let limits: Value = app.get("/v1/limits").await.json().await.expect("json");
    assert_eq!(limits["max_identities_per_rewrite"], 2);
}

#[tokio::test]
async fn bad_requests_get_clear_errors_not_500s() {
    let app = spawn_app(&[]).await;
    let url = format!("{}/v1/identities/rewrite", app.base);
    let too_many: Vec<Value> = (0..1001).map(|i| json!({"id": i})).collect();
    let r = rewrite(&app, json!({"identities": too_many})).await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.expect("json")["code"],
        "too-many-records"
    );

    let r = app
        .client
        .post(&url)
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "invalid-json");
    assert_eq!(body["user_message"], "Try again");

    let r = rewrite(&app, json!({"identities": [], "prefetch": "sometimes"})).await;
    assert_eq!(r.status(), 422);

    let r = app
        .client
        .put(format!("{}/v1/identities/u1", app.base))
        .bearer_auth(API_KEY)
        .json(&json!({"avatar_url": "https://not-allowed.example/a.png"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<Value>().await.expect("json")["code"],
        "upstream-not-allowed"
    );

    let r = app
        .client
        .delete(format!("{}/v1/cache/not-a-key", app.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_registered_display_name_gives_initials() {
    let app = spawn_app(&[]).await;
    let r = app
        .client
        .put(format!("{}/v1/identities/ada", app.base))
        .bearer_auth(API_KEY)
        .json(&json!({"display_name": "Ada Lovelace"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let key = app.key_for("ada");
    let initials = app
        .get(&format!("/avatar/{key}.png?d=initials"))
        .await
        .bytes()
        .await
        .expect("b");
    let identicon = app
        .get(&format!("/avatar/{key}.png?d=identicon"))
        .await
        .bytes()
        .await
        .expect("b");
    assert_ne!(initials, identicon);
}
