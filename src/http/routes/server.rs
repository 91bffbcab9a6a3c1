//! The connection loop: what a client can make the server hold, bounded.
//!
//! `axum::serve` has no header-read timeout, no connection cap and waits for ever at shutdown
//! for a stream that never ends. This loop serves the same router through hyper's own
//! connection builder with:
//!
//! - a header-read timeout (`AVATAR_HEADER_READ_TIMEOUT`): a client that sends half a request
//!   line and trickles headers is closed when it runs out. The timer starts with the connection,
//!   so a client that connects and sends nothing at all is closed too, and it runs again while a
//!   kept-alive connection waits for its next request, so it is the idle timeout as well. The
//!   server speaks HTTP/1.1 only: HTTP/2 without TLS (h2c) would need a protocol sniff first,
//!   and a client that never completes one would hold its connection past every timer (hyper
//!   #3756). Browsers speak HTTP/2 to the TLS-terminating proxy in front, not to this port.
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
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Cancelled at shutdown: every connection finishes its request in flight, then closes.
    let closing = CancellationToken::new();
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
            .serve_connection(TokioIo::new(stream), hyper_service)
            .with_upgrades();
        let closing = closing.clone();
        connections.spawn(async move {
            // Errors here are the client's (reset, timeout, malformed request): nothing to log.
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = closing.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    closing.cancel();
    let all_closed = async { while connections.join_next().await.is_some() {} };
    tokio::select! {
        () = all_closed => {}
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
