//! The profile page at `/demo/` and `POST /demo/token`: on by default on loopback only, never
//! minting tokens when off, served with its content types and a strict CSP.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::upload_flows::{JWT_SECRET, token};

async fn mint(app: &TestApp, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}/demo/token", app.base))
        .json(&body)
        .send()
        .await
        .expect("sent")
}

async fn grant_with(app: &TestApp, bearer: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/uploads", app.base))
        .bearer_auth(bearer)
        .json(&json!({"content_type": "image/jpeg", "content_length": 1000}))
        .send()
        .await
        .expect("sent")
}

/// An Ed25519 public key in SPKI PEM, for a service that verifies user tokens with a public key.
fn ed25519_public_pem() -> String {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use base64::Engine as _;
    let pair = Ed25519KeyPair::generate().expect("key");
    let mut der = hex::decode("302a300506032b6570032100").expect("prefix");
    der.extend_from_slice(pair.public_key().as_ref());
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
}

#[tokio::test]
async fn the_page_is_served_on_loopback_by_default_with_its_types_and_a_strict_csp() {
    let app = spawn_app(&[]).await;
    let page = app.get("/demo/").await;
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let csp = headers["content-security-policy"].to_str().expect("ascii");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let html = page.text().await.expect("text");
    assert!(html.contains(r#"<script src="demo.js" defer></script>"#));
    assert_eq!(
        html.matches("<script").count(),
        1,
        "no inline script: the CSP would block it"
    );
    assert!(
        !html.contains("style="),
        "no inline style: the CSP would block it"
    );
    for (path, content_type) in [
        ("/demo/demo.js", "text/javascript; charset=utf-8"),
        ("/demo/demo.css", "text/css; charset=utf-8"),
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], content_type, "{path}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("{}/demo", app.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(bare.status(), 308);
    assert_eq!(
        bare.headers()["location"],
        "demo/",
        "relative: the service may sit under a prefix"
    );
}

#[tokio::test]
async fn with_demo_mode_off_there_is_no_page_and_no_token_is_ever_minted() {
    let app = spawn_app(&[
        ("AVATAR_DEMO", "false".into()),
        ("AVATAR_JWT_SECRET", JWT_SECRET.into()),
    ])
    .await;
    for path in ["/demo/", "/demo/demo.js"] {
        assert_eq!(app.get(path).await.status(), 404, "{path}");
    }
    let r = mint(&app, json!({"name": "ada"})).await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "not-found");
    assert!(body.get("access_token").is_none());
}

#[tokio::test]
async fn auto_mode_is_off_on_a_non_loopback_listener_unless_avatar_demo_is_true() {
    // Bound on every interface, reached over loopback only.
    // A wildcard listener needs the public URL browsers use.
    let public = (
        "AVATAR_PUBLIC_BASE_URL",
        "http://avatars.example.com".to_owned(),
    );
    let auto = spawn_app(&[("AVATAR_LISTEN", "0.0.0.0:0".into()), public.clone()]).await;
    let base = auto.base.replace("0.0.0.0", "127.0.0.1");
    let page = auto
        .client
        .get(format!("{base}/demo/"))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 404);
    let minted = auto
        .client
        .post(format!("{base}/demo/token"))
        .json(&json!({}))
        .send()
        .await
        .expect("sent");
    assert_eq!(minted.status(), 404);

    let forced = spawn_app(&[
        ("AVATAR_LISTEN", "0.0.0.0:0".into()),
        ("AVATAR_DEMO", "true".into()),
        public,
    ])
    .await;
    let base = forced.base.replace("0.0.0.0", "127.0.0.1");
    let page = forced
        .client
        .get(format!("{base}/demo/"))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 200);
}

#[tokio::test]
async fn without_a_jwt_secret_demo_mode_generates_one_that_signs_and_verifies_tokens_for_15_minutes()
 {
    let app = spawn_app(&[]).await;
    let r = mint(&app, json!({"name": "ada"})).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["user_id"], "demo-ada");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let key = app.key_for("demo-ada");
    assert_eq!(body["avatar_url"], format!("{}/avatar/{key}", app.base));
    assert!(
        body["events_url"]
            .as_str()
            .expect("url")
            .starts_with("ws://")
    );
    let demo_token = body["access_token"].as_str().expect("token").to_owned();

    assert_eq!(grant_with(&app, &demo_token).await.status(), 201);
    // A token signed with any other secret is still refused.
    assert_eq!(
        grant_with(&app, &token("demo-ada", 600)).await.status(),
        401
    );
    // Short-lived: refused once 15 minutes (and the verifier's one-minute leeway) have passed.
    app.clock.advance(Duration::from_secs(15 * 60 + 61));
    assert_eq!(grant_with(&app, &demo_token).await.status(), 401);
}

#[tokio::test]
async fn demo_tokens_use_the_configured_secret_and_demo_names_only() {
    let app = spawn_app(&[("AVATAR_JWT_SECRET", JWT_SECRET.into())]).await;
    let body: Value = mint(&app, json!({"name": "grace"}))
        .await
        .json()
        .await
        .expect("json");
    let demo_token = body["access_token"].as_str().expect("token");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_exp = false;
    let claims = jsonwebtoken::decode::<Value>(
        demo_token,
        &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &validation,
    )
    .expect("signed with the configured secret")
    .claims;
    assert_eq!(claims["sub"], "demo-grace");
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        900
    );
    // Tokens from the real identity provider keep working.
    assert_eq!(grant_with(&app, &token("grace", 600)).await.status(), 201);

    let r = mint(&app, json!({"name": "grace hopper"})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.expect("json")["code"],
        "invalid-name"
    );
    let random: Value = mint(&app, json!({})).await.json().await.expect("json");
    let other: Value = mint(&app, json!({})).await.json().await.expect("json");
    assert!(random["user_id"].as_str().expect("id").starts_with("demo-"));
    assert_ne!(random["user_id"], other["user_id"]);
}

#[tokio::test]
async fn with_a_public_key_demo_mode_is_off_in_auto_and_an_error_when_forced() {
    let pem = ed25519_public_pem();
    let env = [
        ("AVATAR_JWT_PUBLIC_KEY", pem.clone()),
        ("AVATAR_JWT_ALGORITHM", "EdDSA".into()),
    ];
    let app = spawn_app(&env).await;
    assert_eq!(app.get("/demo/").await.status(), 404);
    assert_eq!(mint(&app, json!({})).await.status(), 404);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut forced = env.to_vec();
    forced.push(("AVATAR_DEMO", "true".into()));
    let err = avatar_proxy::Application::build(settings(dir.path(), &forced))
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("demo.enabled (AVATAR_DEMO)"),
        "{err}"
    );
}
