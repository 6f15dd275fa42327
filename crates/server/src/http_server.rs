//! The HTTP/1.1 listener: accept connections, serve each with hyper's
//! HTTP/1 connection, and on shutdown stop accepting and let every
//! connection finish the request it is on.
//!
//! `axum::serve` does the same, but it serves every connection through
//! hyper-util's protocol sniffer even when HTTP/2 is compiled out: the
//! sniffer reads the first 24 bytes on its own, hyper's read buffer then
//! holds them when it asks for room for a whole read, and the buffer grows
//! from 8 to 16 KiB on every connection. With 10,000 idle keep-alive
//! connections the service's resident memory went from 208 to 104 MiB
//! when this listener replaced it (heaptrack and the numbers:
//! bench/README.md).

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::Service;

/// How long to wait before accepting again after an error that is not the
/// peer's (out of descriptors, out of memory): accepting at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `shutdown` completes, then waits for
/// the open connections to finish their requests (idle ones close at once).
/// Handlers see the peer address as `ConnectInfo<SocketAddr>`, as with
/// `axum::serve` and `into_make_service_with_connect_info`.
pub async fn serve(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()>) {
    let http = hyper::server::conn::http1::Builder::new();
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    pause_after_accept_error(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let router = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            // Router's readiness is always Ready, so `call` needs no `ready` first.
            router.clone().call(request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A connection the peer gave up on before it was accepted is nobody's
/// problem; anything else is logged and paced.
async fn pause_after_accept_error(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept a connection; pausing");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}
