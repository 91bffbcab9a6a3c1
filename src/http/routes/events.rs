//! `GET /v1/events`: the signed-in user's own events, over WebSocket, or Server-Sent Events when
//! `Accept: text/event-stream`. The JWT may come as `access_token` (browsers cannot set headers
//! on either). Only the user's own channel is read; a connection that falls behind gets
//! `{"type": "Lagged", "missed": n}` (SSE event `Lagged`) instead of silently skipping.
//!
//! Bounds ([`crate::http::streams`]): a user holds at most `AVATAR_EVENTS_MAX_STREAMS_PER_USER`
//! streams (one more: `429 too-many-streams`); a WebSocket client may send messages of at most
//! `AVATAR_EVENTS_MAX_MESSAGE_BYTES` (it never needs to send any; a larger one closes the socket
//! with 1009). A stream ends when its token expires (WebSocket: close 1008 "token expired") and
//! at shutdown (WebSocket: close 1001 "going away"); an SSE stream simply ends.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{
    CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code,
    rejection::WebSocketUpgradeRejection,
};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt, Stream, StreamExt};
use serde_json::json;

use crate::auth::User;
use crate::events::{Delivery, Subscription};
use crate::http::streams::{EndReason, StreamEnd, StreamSlot};
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
    let Some(slot) = state.streams.try_open(&user.key) else {
        return ApiError::client(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-streams",
            format!(
                "at most {} event streams per user are open at once; close one first",
                state.streams.max_per_user()
            ),
        )
        .into_response();
    };
    let end = stream_end(&state, &user);
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
        // The stream holds its slot until it is dropped, and ends at expiry or shutdown.
        let stream = stream.take_until(async move {
            let _slot = slot;
            end.reached().await
        });
        return Sse::new(stream)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response();
    }
    let max_message = state.settings.events.max_message_bytes.max(1);
    match ws {
        Ok(upgrade) => upgrade
            .max_message_size(max_message)
            .max_frame_size(max_message)
            .on_upgrade(move |socket| forward(socket, subscription, end, slot)),
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

/// When the stream of `user` ends: its token's expiry (on the service clock), or shutdown.
fn stream_end(state: &AppState, user: &User) -> StreamEnd {
    let now_millis = state.clock.now_millis();
    let remaining = user
        .expires_at
        .saturating_mul(1000)
        .saturating_sub(now_millis);
    let remaining = Duration::from_millis(u64::try_from(remaining).unwrap_or(0));
    StreamEnd::new(remaining, state.shutdown.clone())
}

/// Forward the user's deliveries to the socket until either side closes, the client sends too
/// much, the token expires or the service shuts down (the last three with a close frame).
async fn forward(socket: WebSocket, subscription: Subscription, end: StreamEnd, _slot: StreamSlot) {
    let (mut sink, mut incoming) = socket.split();
    let mut deliveries = Box::pin(deliveries(subscription));
    let ended = end.reached();
    tokio::pin!(ended);
    let close = loop {
        tokio::select! {
            reason = &mut ended => break Some(match reason {
                EndReason::ShuttingDown => (close_code::AWAY, "going away"),
                EndReason::TokenExpired => (close_code::POLICY, "token expired"),
            }),
            delivery = deliveries.next() => {
                let text = match delivery {
                    None => break Some((close_code::AWAY, "going away")),
                    Some(Delivery::Event(event)) => serde_json::to_string(&*event).unwrap_or_default(),
                    Some(Delivery::Lagged(missed)) => lagged(missed),
                };
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break None;
                }
            }
            message = incoming.next() => match message {
                None | Some(Ok(Message::Close(_))) => break None,
                // The only error a well-behaved connection can meet here is a message or frame
                // over the limit; either way the client gets told and the socket closes.
                Some(Err(_)) => break Some((close_code::SIZE, "message too big")),
                Some(Ok(_)) => {}
            },
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = sink.send(Message::Close(Some(frame))).await;
        let _ = sink.close().await;
    }
}
