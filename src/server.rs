//! The listeners: accept connections, serve HTTP/1.1 and HTTP/2 on them with hyper, and shut
//! down gracefully.
//!
//! [`run`] is the whole program once the configuration is loaded and the sockets bound; tests
//! call it with listeners on `127.0.0.1:0` and a shutdown future of their own.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::admin::Admin;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::upstream::BoxError;

/// How long a client may take to send a request head before its connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed accept (out of file descriptors, say) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Runs the proxy on `listener` and the admin endpoints on `admin_listener` until `shutdown`
/// resolves; then stops accepting, lets in-flight requests finish within the grace period,
/// and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BoxError> {
    let metrics = Arc::new(Metrics::new(config.max_capacity)?);
    let proxy = Proxy::new(&config, metrics)?;
    let ready = Arc::new(AtomicBool::new(false));
    let admin = Admin::new(proxy.clone(), ready.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer the header-read timeout silently does nothing.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();

    tracing::info!(
        listen = %local(&listener),
        admin = %local(&admin_listener),
        upstream = %config.upstream,
        auth_mode = config.auth_mode.as_str(),
        "baremetal-image-cache started"
    );
    ready.store(true, Ordering::Relaxed);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Some(stream) = accepted_stream(accepted).await else { continue };
                let proxy = proxy.clone();
                let service = service_fn(move |request| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(request).await) }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "client connection ended with an error");
                    }
                });
            }
            accepted = admin_listener.accept() => {
                let Some(stream) = accepted_stream(accepted).await else { continue };
                // Admin connections are not drained: they must keep answering during the drain.
                tokio::spawn(serve_admin(&builder, stream, &admin));
            }
        }
    }

    // Stop taking clients, but keep answering the admin listener while in-flight requests
    // finish, so that probes see /readyz turn 503 rather than a refused connection.
    ready.store(false, Ordering::Relaxed);
    drop(listener);
    tracing::info!(grace = %humantime::format_duration(config.shutdown_grace), "shutting down: draining in-flight requests");
    let drained = graceful.shutdown();
    let grace_over = tokio::time::sleep(config.shutdown_grace);
    tokio::pin!(drained, grace_over);
    loop {
        tokio::select! {
            _ = &mut drained => {
                tracing::info!("all connections closed");
                break;
            }
            _ = &mut grace_over => {
                tracing::warn!("grace period over; closing the remaining connections");
                break;
            }
            accepted = admin_listener.accept() => {
                let Some(stream) = accepted_stream(accepted).await else { continue };
                tokio::spawn(serve_admin(&builder, stream, &admin));
            }
        }
    }
    Ok(())
}

fn serve_admin(
    builder: &auto::Builder<TokioExecutor>,
    stream: tokio::net::TcpStream,
    admin: &Arc<Admin>,
) -> impl Future<Output = ()> + Send + 'static {
    let admin = admin.clone();
    let service = service_fn(move |request| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(admin.handle(request).await) }
    });
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    async move {
        let _ = connection.await;
    }
}

fn local(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|e| format!("unknown ({e})"), |a| a.to_string())
}

async fn accepted_stream(
    accepted: std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)>,
) -> Option<tokio::net::TcpStream> {
    match accepted {
        Ok((stream, _)) => {
            let _ = stream.set_nodelay(true);
            Some(stream)
        }
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(ACCEPT_BACKOFF).await;
            None
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the proxy");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
