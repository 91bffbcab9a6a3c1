//! The connection loop: what a client can make the server hold, bounded.
//!
//! `axum::serve` has no header-read timeout, no connection cap and waits for ever at shutdown
//! for a stream that never ends. This loop serves the same router through hyper's own
//! connection builder with:
//!
//! - a header-read timeout (`AVATAR_HEADER_READ_TIMEOUT`): a client that sends half a request
//!   line and trickles headers is closed when it runs out; in HTTP/1.1 the same timer runs while
//!   a kept-alive connection waits for its next request, so it is the idle timeout too. HTTP/2
//!   connections are pinged at that interval and closed when a ping goes unanswered.
//! - a connection cap (`AVATAR_MAX_CONNECTIONS`): past it, the listener stops accepting until a
//!   connection ends (clients wait in the kernel's backlog instead of exhausting descriptors).
//! - a bounded graceful shutdown (`AVATAR_SHUTDOWN_TIMEOUT`): on the signal the listener closes,
//!   every connection is asked to finish its in-flight requests, and whatever is still open at
//!   the deadline (event streams, stalled uploads) is closed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Bounds of the connection loop.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest wait for a request's headers, and for the next request on an idle connection.
    pub header_read_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Longest wait for open connections at shutdown.
    pub shutdown_timeout: Duration,
}

/// Serve `service` on `listener` until `shutdown`, within `limits`. Each request carries the
/// peer address as [`ConnectInfo<SocketAddr>`].
pub async fn serve_connections<S>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept_within(&listener, &permits) => accepted,
        };
        let Some((stream, peer, permit)) = accepted else {
            continue;
        };
        let service = service.clone();
        let hyper_service = hyper::service::service_fn(move |request: hyper::Request<_>| {
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            tower::ServiceExt::oneshot(service.clone(), request)
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), hyper_service)
            .into_owned();
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            // Errors here are the client's (reset, timeout, malformed request): nothing to log.
            let _ = connection.await;
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_timeout) => {
            tracing::warn!(
                open = connections.len(),
                "shutdown deadline reached; closing the connections still open"
            );
        }
    }
    connections.shutdown().await;
    Ok(())
}

/// Wait for a connection slot, then for a connection. `None` when accepting failed; a failure
/// for lack of descriptors backs off briefly instead of spinning.
async fn accept_within(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> Option<(
    tokio::net::TcpStream,
    SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
)> {
    let permit = permits.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, peer)) => {
            let _ = stream.set_nodelay(true);
            Some((stream, peer, permit))
        }
        Err(e) => {
            tracing::warn!(error = %e, "accepting a connection failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}
