//! The HTTP listener: hyper's connection loop with the limits a public origin needs and
//! `axum::serve` leaves out. A peer gets `HEADER_READ` to send a request head (a keep-alive
//! connection as long to start its next one), so half-sent requests cannot pile up; past
//! `MAX_CONNECTIONS` a new connection is closed at once, and the ones open keep being served.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

const HEADER_READ: Duration = Duration::from_secs(10);
/// The most a request head may take (hyper answers 431 beyond it); bodies stream through.
const MAX_HEAD: usize = 64 << 10;
const MAX_CONNECTIONS: usize = 8192;
/// How long to wait after `accept` fails (out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until the task is dropped; over TLS when given an acceptor (the
/// handshake, too, must finish within `HEADER_READ`).
pub async fn serve(listener: TcpListener, app: Router, tls: Option<TlsAcceptor>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ)
        .max_buf_size(MAX_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HEADER_READ)
        .keep_alive_timeout(HEADER_READ);
    let builder = Arc::new(builder);
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting an HTTP connection failed");
                metrics::counter!("steadycast_http_connections_refused_total", "why" => "accept")
                    .increment(1);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics::counter!("steadycast_http_connections_refused_total", "why" => "limit")
                .increment(1);
            continue;
        };
        let _ = socket.set_nodelay(true);
        // Handlers that need the peer's address (the API's failure limiter) find it here.
        let with_peer = app
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let (builder, service) = (builder.clone(), TowerToHyperService::new(with_peer));
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(socket), service)
                        .await
                }
                Some(acceptor) => match timeout(HEADER_READ, acceptor.accept(socket)).await {
                    Ok(Ok(stream)) => {
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await
                    }
                    failed => {
                        let why = if failed.is_err() {
                            "tls_timeout"
                        } else {
                            "tls"
                        };
                        metrics::counter!("steadycast_http_connections_refused_total", "why" => why)
                            .increment(1);
                        return;
                    }
                },
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
}
