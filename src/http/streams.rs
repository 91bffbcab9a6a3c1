//! What bounds an event stream (`GET /v1/events`, WebSocket or SSE): how many one user may hold
//! open, and when each one ends.
//!
//! A stream holds a [`StreamSlot`] of its user for as long as it is open; past
//! `AVATAR_EVENTS_MAX_STREAMS_PER_USER` slots a new stream is refused. Every stream ends at the
//! earlier of two moments, [`StreamEnd`]: the expiry of the token that opened it (an event stream
//! must not outlive its credential), and the service's shutdown signal (so `SIGTERM` closes
//! streams cleanly instead of cutting them at `AVATAR_SHUTDOWN_TIMEOUT`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::keys::UserKey;

/// Open event streams per user, capped.
#[derive(Clone)]
pub struct StreamSlots {
    max_per_user: usize,
    open: Arc<Mutex<HashMap<UserKey, usize>>>,
}

impl StreamSlots {
    /// At most `max_per_user` open streams per user (0 is read as 1).
    pub fn new(max_per_user: usize) -> Self {
        Self {
            max_per_user: max_per_user.max(1),
            open: Arc::default(),
        }
    }

    /// Take one of `user`'s slots; `None` when all of them are held.
    pub fn try_open(&self, user: &UserKey) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(user.clone()).or_insert(0);
        if *count >= self.max_per_user {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            slots: self.clone(),
            user: user.clone(),
        })
    }

    /// Streams `user` holds open now.
    pub fn open_for(&self, user: &UserKey) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(user).copied().unwrap_or(0)
    }

    /// The most streams one user may hold.
    pub fn max_per_user(&self) -> usize {
        self.max_per_user
    }
}

/// One open stream of one user; the slot is free again when this is dropped.
pub struct StreamSlot {
    slots: StreamSlots,
    user: UserKey,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The token that opened it expired.
    TokenExpired,
    /// The service is shutting down.
    ShuttingDown,
}

/// When a stream must end: its token's expiry, or shutdown, whichever comes first.
pub struct StreamEnd {
    expires: tokio::time::Instant,
    shutdown: CancellationToken,
}

impl StreamEnd {
    /// A stream whose token is valid for `remaining` more, ended early by `shutdown`.
    pub fn new(remaining: Duration, shutdown: CancellationToken) -> Self {
        Self {
            expires: tokio::time::Instant::now() + remaining,
            shutdown,
        }
    }

    /// Wait for the end; why it came.
    pub async fn reached(&self) -> EndReason {
        tokio::select! {
            () = self.shutdown.cancelled() => EndReason::ShuttingDown,
            () = tokio::time::sleep_until(self.expires) => EndReason::TokenExpired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_holds_at_most_the_cap_and_a_closed_stream_frees_its_slot() {
        let slots = StreamSlots::new(2);
        let ada = UserKey::parse(&"a".repeat(32)).expect("a key");
        let first = slots.try_open(&ada).expect("first");
        let _second = slots.try_open(&ada).expect("second");
        assert!(slots.try_open(&ada).is_none(), "a third beyond the cap");
        drop(first);
        assert_eq!(slots.open_for(&ada), 1);
        assert!(slots.try_open(&ada).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_ends_at_its_token_expiry_or_at_shutdown_whichever_is_first() {
        let shutdown = CancellationToken::new();
        let end = StreamEnd::new(Duration::from_secs(30), shutdown.clone());
        assert_eq!(end.reached().await, EndReason::TokenExpired);
        let end = StreamEnd::new(Duration::from_secs(3600), shutdown.clone());
        shutdown.cancel();
        assert_eq!(end.reached().await, EndReason::ShuttingDown);
    }
}
