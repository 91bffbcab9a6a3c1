//! Every error the service sends is `{code, message, user_message}` JSON, whoever made it: a
//! handler, axum's extractor rejections and body limits, a method a route does not take, an
//! unknown route. And the `Bearer` scheme is read case-insensitively (RFC 9110 §11.1).

use reqwest::Method;

use crate::helpers::*;
use crate::upload_flows::{JWT_SECRET, token};

#[tokio::test]
async fn every_error_the_service_sends_is_the_json_error_shape() {
    let app = spawn_app(&[
        ("AVATAR_JWT_SECRET", JWT_SECRET.into()),
        ("AVATAR_MAX_UPLOAD_BYTES", "2048".into()),
    ])
    .await;
    let user = token("ada", 600);
    let too_big = vec![0u8; 200 * 1024];
    let c = &app.client;
    let url = |path: &str| format!("{}{path}", app.base);
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        ("unknown route", c.get(url("/nope")), 404),
        ("method not allowed", c.get(url("/v1/uploads")), 405),
        (
            "method not allowed with auth",
            c.patch(url("/v1/avatar")).bearer_auth(&user),
            405,
        ),
        (
            // Refused from its URL before the oversized body is read.
            "signed PUT with a bad signature and a body over the limit",
            c.put(url("/v1/uploads/anything?sig=x"))
                .header("content-type", "image/jpeg")
                .body(too_big.clone()),
            403,
        ),
        (
            "path that is not UTF-8",
            c.delete(url("/v1/cache/%FF%FE")).bearer_auth(API_KEY),
            400,
        ),
        (
            "job path that is not UTF-8",
            c.get(url("/v1/jobs/%FF")).bearer_auth(&user),
            400,
        ),
        (
            "JSON that does not parse",
            c.post(url("/v1/identities/rewrite"))
                .bearer_auth(API_KEY)
                .header("content-type", "application/json")
                .body("{"),
            400,
        ),
        (
            "multipart without a boundary",
            c.post(url("/v1/avatar"))
                .bearer_auth(&user)
                .header("content-type", "multipart/form-data")
                .body("--x--"),
            400,
        ),
        (
            "websocket upgrade without a key",
            c.get(url("/v1/events"))
                .bearer_auth(&user)
                .header("connection", "upgrade")
                .header("upgrade", "websocket"),
            400,
        ),
        ("no credentials", c.post(url("/v1/uploads")), 401),
    ];
    for (what, request, status) in cases {
        let response = request.send().await.expect("sent");
        assert_eq!(response.status().as_u16(), status, "{what}");
        if status == 405 {
            assert!(
                response.headers().get("allow").is_some(),
                "{what}: Allow kept"
            );
        }
        assert!(
            header_of(&response, "content-type").starts_with("application/json"),
            "{what}: {:?}",
            response.headers().get("content-type")
        );
        let body: serde_json::Value = response.json().await.expect("json");
        for field in ["code", "message", "user_message"] {
            assert!(
                body[field].as_str().is_some_and(|s| !s.is_empty()),
                "{what}: {field} in {body}"
            );
        }
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_for_api_keys_and_user_tokens() {
    let app = spawn_app(&[("AVATAR_JWT_SECRET", JWT_SECRET.into())]).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = app
            .client
            .put(format!("{}/v1/identities/ada", app.base))
            .header("authorization", format!("{scheme} {API_KEY}"))
            .json(&serde_json::json!({"display_name": "Ada"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 200, "API key with {scheme}");
        let r = app
            .client
            .request(Method::POST, format!("{}/v1/uploads", app.base))
            .header("authorization", format!("{scheme} {}", token("ada", 600)))
            .json(&serde_json::json!({"content_type": "image/png", "content_length": 100}))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 201, "JWT with {scheme}");
    }
}
