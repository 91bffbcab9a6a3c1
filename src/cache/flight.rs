//! Single flight: one computation per key, however many callers ask at once.
//!
//! The computation runs in its own spawned task, so a caller that goes away (a browser that hung
//! up) neither cancels it for the others nor makes it run twice. Every waiter is released the
//! moment it completes; the key is forgotten then, so failures are not cached here.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

type Flight<V> = Shared<BoxFuture<'static, Option<V>>>;

/// Coalesces concurrent computations per key.
pub struct SingleFlight<K, V> {
    in_flight: Arc<Mutex<HashMap<K, Flight<V>>>>,
}

impl<K, V> Clone for SingleFlight<K, V> {
    fn clone(&self) -> Self {
        Self {
            in_flight: self.in_flight.clone(),
        }
    }
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Run `make()` for `key` unless a run is already under way; either way, await its result.
    /// `None` only when the computation panicked.
    pub async fn run<F, Fut>(&self, key: K, make: F) -> Option<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let flight = {
            let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&key) {
                Some(flight) => flight.clone(),
                None => {
                    let task = tokio::spawn(make());
                    let registry = self.in_flight.clone();
                    let forget = key.clone();
                    let flight: Flight<V> = async move {
                        let result = task.await.ok();
                        registry
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&forget);
                        result
                    }
                    .boxed()
                    .shared();
                    map.insert(key, flight.clone());
                    // Drive it even if every caller leaves, so the key is always forgotten.
                    tokio::spawn(flight.clone());
                    flight
                }
            }
        };
        flight.await
    }

    /// Keys currently being computed.
    pub fn in_flight(&self) -> usize {
        self.in_flight.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_run() {
        let flights: SingleFlight<&'static str, u32> = SingleFlight::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let flights = flights.clone();
                let runs = runs.clone();
                tokio::spawn(async move {
                    flights
                        .run("k", || async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            7
                        })
                        .await
                })
            })
            .collect();
        for w in waiters {
            assert_eq!(w.await.expect("joined"), Some(7));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_leaves_does_not_cancel_the_run() {
        let flights: SingleFlight<u8, u8> = SingleFlight::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let first = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run(1, || async move {
                        r.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        9
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        first.abort();
        let r = runs.clone();
        let second = flights
            .run(1, || async move {
                r.fetch_add(1, Ordering::SeqCst);
                0
            })
            .await;
        assert_eq!(second, Some(9));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
