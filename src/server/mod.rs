//! The listeners: accept connections, hand each to hyper (`connection`), take reloads, and
//! shut down gracefully; the signals that ask for the last two are in `signals`.
//!
//! [`run`] is the whole program once the configuration is loaded and the sockets bound; tests
//! call it with listeners on `127.0.0.1:0` and a shutdown future of their own.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::FutureExt;
use hyper::service::service_fn;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};

use crate::admin::{self, Admin};
use crate::config::{redacted_url, Config, ConfigError};
use crate::descriptors::{self, ADMIN_MAX_CONNECTIONS, MAX_REFUSALS};
use crate::error::BoxError;
use crate::flow::Flow;
use crate::grpc::{is_grpc, Grpc};
use crate::http::limits::RequestLimits;
use crate::metrics::{Metrics, Rejection};
#[cfg(unix)]
use crate::notify::notify;
use crate::reload::Reloader;
use crate::rest::Rest;

mod connection;
mod head_watch;
mod signals;

use connection::{accepted_stream, local, Gate, Protocols};
#[cfg(unix)]
pub use signals::reload_signal;
pub use signals::shutdown_signal;

/// A configuration loaded again for a reload, or why it could not be.
pub type Reload = Result<Config, ConfigError>;

/// Runs the proxy on `listener` and the admin endpoints on `admin_listener` until `shutdown`
/// resolves; then stops accepting, lets in-flight requests finish within the grace period,
/// and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BoxError> {
    // No reloads: the sender is gone, so the channel is closed from the start.
    let (_, reloads) = mpsc::channel(1);
    run_with_reloads(config, listener, admin_listener, shutdown, reloads).await
}

/// [`run`], taking each configuration that arrives on `reloads` as a reload (the binary
/// sends one per SIGHUP).
pub async fn run_with_reloads(
    config: Config,
    listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::Receiver<Reload>,
) -> Result<(), BoxError> {
    let loaded = config.clone();
    let mut config = config;
    let budget = descriptors::plan(config.max_connections, config.max_upstream_requests);
    config.max_connections = budget.max_connections;
    config.max_upstream_requests = budget.max_upstream_requests;
    let metrics = Arc::new(Metrics::new(config.max_capacity)?);
    let flow = Flow::new(&config, metrics.clone())?;
    let limits = Arc::new(RequestLimits::new(&config));
    let rest = Rest::new(flow.clone(), limits.clone());
    let grpc = Grpc::new(flow.clone(), limits.clone());
    let ready = Arc::new(AtomicBool::new(false));
    let admin = Admin::new(flow.clone(), ready.clone(), config.admin_token.as_ref());
    let mut reloader = Reloader::new(loaded, flow, limits, admin.clone());
    let mut reloads_open = true;
    let head_watch = Arc::new(head_watch::HeadWatch::new());
    let mut protocols = Arc::new(Protocols::new(&config, head_watch.clone()));
    let mut shutdown_grace = config.shutdown_grace;
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let proxy_gate = Gate {
        slots: Arc::new(Semaphore::new(config.max_connections)),
        refusals: refusals.clone(),
        rejection: Rejection::Connections,
        metrics: metrics.clone(),
    };
    let admin_gate = Gate {
        slots: Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS)),
        refusals,
        rejection: Rejection::AdminConnections,
        metrics,
    };
    let graceful = GracefulShutdown::new();

    tracing::info!(
        listen = %local(&listener),
        admin = %local(&admin_listener),
        upstream = %config.upstream,
        auth_mode = config.auth_mode.as_str(),
        redis = %config.redis.as_ref().map_or_else(
            || "off".to_string(),
            |r| r.urls.iter().map(|u| redacted_url(u)).collect::<Vec<_>>().join(","),
        ),
        "baremetal-image-cache started"
    );
    admin::warn_if_exposed(&config);
    ready.store(true, Ordering::Relaxed);
    #[cfg(unix)]
    notify("READY=1");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            reload = reloads.recv(), if reloads_open => {
                let Some(reload) = reload else {
                    reloads_open = false;
                    continue;
                };
                if let Some(running) = reloader.apply(reload) {
                    // Connections accepted from now on take the new head limits and timeout.
                    protocols = Arc::new(Protocols::new(running, head_watch.clone()));
                    shutdown_grace = running.shutdown_grace;
                }
            }
            accepted = listener.accept() => {
                let Some((stream, _)) = accepted_stream(accepted).await else { continue };
                let Some(permit) = proxy_gate.enter() else {
                    proxy_gate.refuse(stream);
                    continue;
                };
                let (rest, grpc) = (rest.clone(), grpc.clone());
                // One listener for REST and gRPC: a gRPC call says so by its content type.
                let service = service_fn(move |request| {
                    let handling = if is_grpc(&request) {
                        grpc.handle(request)
                    } else {
                        rest.handle(request)
                    };
                    handling.map(Ok::<_, Infallible>)
                });
                protocols.serve(stream, service, Some(graceful.watcher()), permit);
            }
            accepted = admin_listener.accept() => {
                let Some((stream, peer)) = accepted_stream(accepted).await else { continue };
                // Admin connections are not drained: they must keep answering during the drain.
                serve_admin(&admin_gate, &protocols, stream, peer, &admin);
            }
        }
    }

    // Stop taking clients, but keep answering the admin listener while in-flight requests
    // finish, so that probes see /readyz turn 503 rather than a refused connection.
    ready.store(false, Ordering::Relaxed);
    #[cfg(unix)]
    notify("STOPPING=1");
    drop(listener);
    tracing::info!(grace = %humantime::format_duration(shutdown_grace), "shutting down: draining in-flight requests");
    let drained = graceful.shutdown();
    let grace_over = tokio::time::sleep(shutdown_grace);
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
                let Some((stream, peer)) = accepted_stream(accepted).await else { continue };
                serve_admin(&admin_gate, &protocols, stream, peer, &admin);
            }
        }
    }
    Ok(())
}

/// Serves one admin connection, under the same first-byte and header deadlines as the
/// proxy's and within the admin cap.
fn serve_admin(
    gate: &Gate,
    protocols: &Arc<Protocols>,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    admin: &Arc<Admin>,
) {
    let Some(permit) = gate.enter() else {
        gate.refuse(stream);
        return;
    };
    let admin = admin.clone();
    let service = service_fn(move |request| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(admin.handle(request, peer).await) }
    });
    protocols.serve(stream, service, None, permit);
}
