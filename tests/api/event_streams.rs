//! Event streams (`GET /v1/events`, WebSocket and SSE) are bounded: small client messages, a
//! per-user cap, an end at the token's expiry and at shutdown, CORS for SSE. Time is paused
//! (tokio's test clock) once the streams are open, so expiries pass without waiting for them.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::helpers::*;
use crate::upload_flows::{JWT_SECRET, token};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn jwt(extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![("AVATAR_JWT_SECRET", JWT_SECRET.to_owned())];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    env
}

async fn websocket(app: &TestApp, token: &str) -> Socket {
    let url = format!(
        "ws://{}/v1/events?access_token={token}",
        app.base.trim_start_matches("http://")
    );
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket")
        .0
}

async fn sse(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .get(format!("{}/v1/events", app.base))
        .bearer_auth(token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("sent")
}

/// The close frame the server sends next (skipping pings and events); `None` if none came.
async fn close_code(ws: &mut Socket) -> Option<CloseCode> {
    loop {
        match ws.next().await? {
            Ok(Message::Close(frame)) => return frame.map(|f| f.code),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Read an SSE body until the server ends it.
async fn read_to_end(mut response: reqwest::Response) {
    while let Ok(Some(_)) = response.chunk().await {}
}

#[tokio::test]
async fn a_websocket_message_over_the_limit_closes_the_stream_with_1009() {
    let app = spawn_app(&jwt(&[("AVATAR_EVENTS_MAX_MESSAGE_BYTES", "1024")])).await;
    let mut ws = websocket(&app, &token("ada", 600)).await;
    ws.send(Message::text("x".repeat(8 * 1024)))
        .await
        .expect("sent");
    tokio::time::pause();
    let code = tokio::time::timeout(Duration::from_secs(60), close_code(&mut ws))
        .await
        .expect("the stream stayed open after an oversized message");
    assert_eq!(code, Some(CloseCode::Size));
}

#[tokio::test]
async fn a_user_beyond_the_stream_cap_gets_429_and_a_closed_stream_frees_its_slot() {
    let app = spawn_app(&jwt(&[("AVATAR_EVENTS_MAX_STREAMS_PER_USER", "2")])).await;
    let ada = token("ada", 600);
    let mut ws = websocket(&app, &ada).await;
    let open_sse = sse(&app, &ada).await;
    assert_eq!(open_sse.status(), 200);

    let refused = sse(&app, &ada).await;
    assert_eq!(refused.status(), 429);
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["code"], "too-many-streams");
    assert!(body["user_message"].is_string());
    // Another user is not affected.
    assert_eq!(sse(&app, &token("grace", 600)).await.status(), 200);

    // Closing one stream frees its slot.
    ws.close(None).await.expect("closed");
    while ws.next().await.is_some() {}
    let key = app.state.keys.key_for("ada");
    for _ in 0..200 {
        if app.state.streams.open_for(&key) < 2 {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reopened = sse(&app, &ada).await;
    assert_eq!(reopened.status(), 200);

    // An SSE client that goes away frees its slot too (seen at the next keep-alive at the latest).
    drop(open_sse);
    drop(reopened);
    tokio::time::pause();
    for _ in 0..120 {
        if app.state.streams.open_for(&key) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        app.state.streams.open_for(&key),
        0,
        "a gone SSE client kept its slot"
    );
}

#[tokio::test]
async fn event_streams_end_when_the_token_that_opened_them_expires() {
    let app = spawn_app(&jwt(&[])).await;
    let short = token("ada", 30);
    let mut ws = websocket(&app, &short).await;
    let stream = sse(&app, &short).await;
    assert_eq!(stream.status(), 200);
    tokio::time::pause();
    let code = tokio::time::timeout(Duration::from_secs(600), close_code(&mut ws))
        .await
        .expect("the WebSocket outlived its token");
    assert_eq!(code, Some(CloseCode::Policy));
    tokio::time::timeout(Duration::from_secs(600), read_to_end(stream))
        .await
        .expect("the SSE stream outlived its token");
}

#[tokio::test]
async fn at_shutdown_a_websocket_gets_a_going_away_close_and_sse_ends_before_the_deadline() {
    // A deadline far away: streams must end on the signal, not be cut at the deadline.
    let app = spawn_app(&jwt(&[("AVATAR_SHUTDOWN_TIMEOUT", "3600s")])).await;
    let ada = token("ada", 3600);
    let mut ws = websocket(&app, &ada).await;
    let stream = sse(&app, &ada).await;
    assert_eq!(stream.status(), 200);
    tokio::time::pause();
    let stopped = tokio::spawn(app.stop());
    let code = tokio::time::timeout(Duration::from_secs(60), close_code(&mut ws))
        .await
        .expect("no close frame at shutdown");
    assert_eq!(code, Some(CloseCode::Away));
    tokio::time::timeout(Duration::from_secs(60), read_to_end(stream))
        .await
        .expect("the SSE stream was still open after shutdown");
    tokio::time::timeout(Duration::from_secs(60), stopped)
        .await
        .expect("the server waited for its deadline")
        .expect("stopped");
}

#[tokio::test]
async fn sse_answers_cors_for_the_configured_origins() {
    let app = spawn_app(&jwt(&[("AVATAR_CORS_ORIGINS", "https://app.example")])).await;
    let response = app
        .client
        .get(format!("{}/v1/events", app.base))
        .bearer_auth(token("ada", 600))
        .header("accept", "text/event-stream")
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(
        header_of(&response, "access-control-allow-origin"),
        "https://app.example"
    );
    let other = app
        .client
        .get(format!("{}/v1/events", app.base))
        .bearer_auth(token("ada", 600))
        .header("accept", "text/event-stream")
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("sent");
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
