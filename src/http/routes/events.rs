//! `GET /v1/events`: the signed-in user's own events, over WebSocket, or Server-Sent Events when
//! `Accept: text/event-stream`. The JWT may come as `access_token` (browsers cannot set headers
//! on either). Only the user's own channel is read; a connection that falls behind gets
//! `{"type": "Lagged", "missed": n}` (SSE event `Lagged`) instead of silently skipping.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt, Stream, StreamExt};
use serde_json::json;

use crate::auth::User;
use crate::events::{Delivery, Subscription};
use crate::http::{ApiError, AppState};

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/events", get(events))
}

async fn events(
    user: User,
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    let subscription = state.notifier.subscribe(&user.key);
    if wants_sse {
        let stream = deliveries(subscription).map(|delivery| {
            Ok::<_, Infallible>(match delivery {
                Delivery::Event(event) => SseEvent::default()
                    .event(
                        serde_json::to_value(event.kind)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                    )
                    .id(event.id.clone())
                    .data(serde_json::to_string(&*event).unwrap_or_default()),
                Delivery::Lagged(missed) => {
                    SseEvent::default().event("Lagged").data(lagged(missed))
                }
            })
        });
        return Sse::new(stream)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response();
    }
    match ws {
        Ok(upgrade) => upgrade.on_upgrade(move |socket| forward(socket, subscription)),
        Err(_) => ApiError::client(
            StatusCode::BAD_REQUEST,
            "upgrade-required",
            "connect with WebSocket, or send Accept: text/event-stream for SSE",
        )
        .into_response(),
    }
}

/// One user's deliveries as a stream.
fn deliveries(subscription: Subscription) -> impl Stream<Item = Delivery> {
    futures::stream::unfold(subscription, |mut subscription| async move {
        let next = subscription.next().await?;
        Some((next, subscription))
    })
}

/// The message telling a connection it missed `missed` events.
fn lagged(missed: u64) -> String {
    json!({"type": "Lagged", "missed": missed}).to_string()
}

async fn forward(socket: WebSocket, subscription: Subscription) {
    let (mut sink, mut incoming) = socket.split();
    let mut deliveries = Box::pin(deliveries(subscription));
    loop {
        tokio::select! {
            delivery = deliveries.next() => {
                let text = match delivery {
                    None => break,
                    Some(Delivery::Event(event)) => serde_json::to_string(&*event).unwrap_or_default(),
                    Some(Delivery::Lagged(missed)) => lagged(missed),
                };
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            message = incoming.next() => match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
        }
    }
}
