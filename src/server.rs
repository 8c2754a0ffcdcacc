//! The listeners: accept connections, serve HTTP/1.1 and HTTP/2 on them with hyper, and shut
//! down gracefully.
//!
//! [`run`] is the whole program once the configuration is loaded and the sockets bound; tests
//! call it with listeners on `127.0.0.1:0` and a shutdown future of their own.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

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

/// The number of request headers hyper allows when not told otherwise.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// Streams one HTTP/2 client may have open at once.
const H2_MAX_CONCURRENT_STREAMS: u32 = 256;

/// HTTP/2 pings find dead peers: one every interval, and the connection goes if a ping is not
/// answered within the timeout.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a refused connection waits for the client's request head before answering.
const REFUSAL_HEAD_WAIT: Duration = Duration::from_millis(100);

/// How long a refused connection gets to take its 503.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Pause after a failed accept (out of file descriptors, say) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

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
    let mut builder = Arc::new(connection_builder(&config));
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
    let mut first_byte_timeout = config.header_read_timeout;
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
                    builder = Arc::new(connection_builder(running));
                    first_byte_timeout = running.header_read_timeout;
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
                    let (rest, grpc) = (rest.clone(), grpc.clone());
                    async move {
                        let response = if is_grpc(&request) {
                            grpc.handle(request).await
                        } else {
                            rest.handle(request).await
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    if !protocol_known(&stream, first_byte_timeout).await {
                        return;
                    }
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(connection.into_owned()).await {
                        tracing::debug!(error = %e, "client connection ended with an error");
                    }
                    drop(permit);
                });
            }
            accepted = admin_listener.accept() => {
                let Some((stream, peer)) = accepted_stream(accepted).await else { continue };
                // Admin connections are not drained: they must keep answering during the drain.
                admin_gate.serve_admin(&builder, stream, peer, &admin, first_byte_timeout);
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
                admin_gate.serve_admin(&builder, stream, peer, &admin, first_byte_timeout);
            }
        }
    }
    Ok(())
}

/// A listener's cap on connections, and what a connection past it gets.
struct Gate {
    slots: Arc<Semaphore>,
    /// Shared by the listeners: refusals under way.
    refusals: Arc<Semaphore>,
    rejection: Rejection,
    metrics: Arc<Metrics>,
}

impl Gate {
    /// A slot for a new connection, held while it is served; `None` past the cap.
    fn enter(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Turns away a connection past the cap, counted: a short 503 while few refusals are
    /// under way (each takes a descriptor for up to a second), else a plain close.
    fn refuse(&self, stream: TcpStream) {
        self.metrics.rejected(self.rejection);
        if let Ok(refusing) = self.refusals.clone().try_acquire_owned() {
            tokio::spawn(async move {
                refuse_connection(stream).await;
                drop(refusing);
            });
        }
    }

    /// Serves one admin connection, under the same first-byte and header deadlines as the
    /// proxy's and within the admin cap.
    fn serve_admin(
        &self,
        builder: &Arc<auto::Builder<TokioExecutor>>,
        stream: TcpStream,
        peer: SocketAddr,
        admin: &Arc<Admin>,
        first_byte_timeout: Duration,
    ) {
        let Some(permit) = self.enter() else {
            self.refuse(stream);
            return;
        };
        let admin = admin.clone();
        let service = service_fn(move |request| {
            let admin = admin.clone();
            async move { Ok::<_, Infallible>(admin.handle(request, peer).await) }
        });
        let builder = builder.clone();
        tokio::spawn(async move {
            if protocol_known(&stream, first_byte_timeout).await {
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
            drop(permit);
        });
    }
}

/// The HTTP/1 and HTTP/2 server settings: limits on request heads and streams, and the
/// timer without which hyper's header-read timeout silently does nothing.
fn connection_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let max_header_size = usize::try_from(config.max_header_size).unwrap_or(usize::MAX);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(max_header_size);
    // hyper's own limit is 100 headers on a stack array; any other limit makes it allocate
    // and zero a vector for every request.
    if config.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        builder.http1().max_headers(config.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_size).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
    builder
}

/// The HTTP/2 connection preface; until a client has sent enough to tell it apart from this,
/// hyper cannot choose a protocol.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How often a stalled preface is looked at again.
const PREFACE_POLL: Duration = Duration::from_millis(5);

/// Waits, at most `timeout`, until the client has sent enough for hyper to choose HTTP/1 or
/// HTTP/2 without waiting itself: a byte that is not the HTTP/2 preface's, or the whole
/// preface. False if the client closed or stalled.
async fn protocol_known(stream: &tokio::net::TcpStream, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = [0u8; 24];
    loop {
        let peeked = match tokio::time::timeout_at(deadline, stream.peek(&mut seen)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if peeked == 0 {
            return false;
        }
        if peeked == seen.len() || seen[..peeked] != H2_PREFACE[..peeked] {
            return true;
        }
        if tokio::time::Instant::now() + PREFACE_POLL >= deadline {
            return false;
        }
        tokio::time::sleep(PREFACE_POLL).await;
    }
}

/// Past a connection cap: a short 503 in the API's error shape, then close. Written by hand
/// because no HTTP connection is served for it. What the client has sent of its request
/// head (within [`REFUSAL_HEAD_WAIT`]) is read first, so that a client still sending does
/// not take the answer for a protocol error and closing does not reset the connection
/// before the answer is read; a client that sends nothing gets the answer all the same.
async fn refuse_connection(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BODY: &str =
        r#"{"code":14,"message":"too many client connections; retry shortly","details":[]}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut head = [0u8; 8192];
    let mut read = 0;
    let _ = tokio::time::timeout(REFUSAL_HEAD_WAIT, async {
        while read < head.len() && !head[..read].windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut head[read..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
    let _ =
        tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, stream.write_all(response.as_bytes())).await;
    let _ = stream.shutdown().await;
    // Whatever else has arrived (a body) is taken, without waiting for more.
    while let Ok(n) = stream.try_read(&mut head) {
        if n == 0 {
            break;
        }
    }
}

fn local(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|e| format!("unknown ({e})"), |a| a.to_string())
}

async fn accepted_stream(
    accepted: std::io::Result<(TcpStream, SocketAddr)>,
) -> Option<(TcpStream, SocketAddr)> {
    match accepted {
        Ok((stream, peer)) => {
            let _ = stream.set_nodelay(true);
            Some((stream, peer))
        }
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(ACCEPT_BACKOFF).await;
            None
        }
    }
}

/// Listens for SIGHUP at once (its default action would end the process), and returns the
/// task that, on every one, loads the configuration again from the process's own command
/// line, environment and file and sends it (or why it did not load) to `reloads`. The task
/// ends when the receiver is gone.
#[cfg(unix)]
pub fn reload_signal(
    reloads: mpsc::Sender<Reload>,
) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: loading the configuration again");
            // Reading the file blocks; it is small, but not worth a runtime thread.
            let loaded = tokio::task::spawn_blocking(|| Config::load(std::env::args_os())).await;
            let loaded = loaded.unwrap_or_else(|e| {
                Err(ConfigError::Invalid(format!(
                    "the configuration could not be loaded: {e}"
                )))
            });
            if reloads.send(loaded).await.is_err() {
                return;
            }
        }
    })
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
