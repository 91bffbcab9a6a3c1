//! `GET /v1/events`: the signed-in user's own events, over WebSocket, or Server-Sent Events when
//! `Accept: text/event-stream`. The JWT may come as `access_token` (browsers cannot set headers
//! on either).

use std::convert::Infallible;
use std::sync::Arc;
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
use tokio::sync::broadcast::{self, error::RecvError};

use crate::auth::User;
use crate::events::Event;
use crate::http::{ApiError, AppState};
use crate::keys::UserKey;

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
    let receiver = state.notifier.subscribe();
    if wants_sse {
        let stream = own_events(receiver, user.key).map(|event| {
            Ok::<_, Infallible>(
                SseEvent::default()
                    .event(
                        serde_json::to_value(event.kind)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                    )
                    .id(event.id.clone())
                    .data(serde_json::to_string(&*event).unwrap_or_default()),
            )
        });
        return Sse::new(stream)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response();
    }
    match ws {
        Ok(upgrade) => upgrade.on_upgrade(move |socket| forward(socket, receiver, user.key)),
        Err(_) => ApiError::client(
            StatusCode::BAD_REQUEST,
            "upgrade-required",
            "connect with WebSocket, or send Accept: text/event-stream for SSE",
        )
        .into_response(),
    }
}

/// The events of one user, skipping over any a slow reader missed.
fn own_events(
    receiver: broadcast::Receiver<Arc<Event>>,
    key: UserKey,
) -> impl Stream<Item = Arc<Event>> {
    futures::stream::unfold((receiver, key), |(mut receiver, key)| async move {
        loop {
            match receiver.recv().await {
                Ok(event) if event.user_key == key => return Some((event, (receiver, key))),
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

async fn forward(socket: WebSocket, receiver: broadcast::Receiver<Arc<Event>>, key: UserKey) {
    let (mut sink, mut incoming) = socket.split();
    let mut events = Box::pin(own_events(receiver, key));
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { break };
                let text = serde_json::to_string(&*event).unwrap_or_default();
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
