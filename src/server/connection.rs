//! One client connection: the cap it is admitted under (and the 503 past it), which protocol
//! it speaks, and hyper serving it with the proxy's limits.
//!
//! The protocol is told by peeking at the first bytes (the HTTP/2 preface or not), and the
//! connection is then served by hyper's own builder for that protocol: hyper-util's `auto`
//! would peek again and wrap every read of the connection to replay what it saw.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::head_watch::{HeadWatch, Reported};
use crate::config::Config;
use crate::http::ProxyBody;
use crate::metrics::{Metrics, Rejection};

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

/// The HTTP/2 connection preface; until a client has sent enough to tell it apart from this,
/// the protocol is not known.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How often a stalled preface is looked at again.
const PREFACE_POLL: Duration = Duration::from_millis(5);

/// The protocol a client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// hyper's builders for both protocols, with the proxy's limits: request heads and streams,
/// and HTTP/2's timer, without which hyper's pings silently do nothing. HTTP/1's heads are
/// timed by the [`HeadWatch`]. Rebuilt by a reload, for the connections accepted after it.
pub(super) struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// How long a new connection may take to say which protocol it speaks, and an HTTP/1
    /// connection to send each request head.
    header_read_timeout: Duration,
    head_watch: Arc<HeadWatch>,
}

impl Protocols {
    pub(super) fn new(config: &Config, head_watch: Arc<HeadWatch>) -> Protocols {
        let mut http1 = http1::Builder::new();
        let max_header_size = usize::try_from(config.max_header_size).unwrap_or(usize::MAX);
        // The head watch times heads instead of hyper (which would arm a timer per request).
        http1
            .header_read_timeout(None)
            .max_buf_size(max_header_size);
        // hyper's own limit is 100 headers on a stack array; any other limit makes it allocate
        // and zero a vector for every request.
        if config.max_headers != HYPER_DEFAULT_MAX_HEADERS {
            http1.max_headers(config.max_headers);
        }
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(config.max_header_size).unwrap_or(u32::MAX))
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
        Protocols {
            http1,
            http2,
            header_read_timeout: config.header_read_timeout,
            head_watch,
        }
    }

    /// Serves `stream` with `service` once it has said which protocol it speaks (within the
    /// header-read timeout; else it is closed); with a `watcher`, a drain lets its requests
    /// finish. The `permit` is held until the connection ends.
    pub(super) fn serve<S>(
        self: &Arc<Self>,
        stream: TcpStream,
        service: S,
        watcher: Option<Watcher>,
        permit: OwnedSemaphorePermit,
    ) where
        S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let protocols = self.clone();
        tokio::spawn(async move {
            let timeout = protocols.header_read_timeout;
            let Some(protocol) = detect(&stream, timeout).await else {
                return;
            };
            let ended = match protocol {
                Protocol::Http1 => {
                    let (io, activity) = protocols.head_watch.watch(stream, timeout);
                    let service = Reported { service, activity };
                    let connection = protocols.http1.serve_connection(TokioIo::new(io), service);
                    match watcher {
                        Some(w) => w.watch(connection).await,
                        None => connection.await,
                    }
                }
                Protocol::Http2 => {
                    let connection = protocols
                        .http2
                        .serve_connection(TokioIo::new(stream), service);
                    match watcher {
                        Some(w) => w.watch(connection).await,
                        None => connection.await,
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// Waits, at most `timeout`, until the client has sent enough to tell its protocol: a byte
/// that is not the HTTP/2 preface's (HTTP/1), or the whole preface (HTTP/2). `None` if the
/// client closed or stalled.
async fn detect(stream: &TcpStream, timeout: Duration) -> Option<Protocol> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = [0u8; 24];
    loop {
        let peeked = match tokio::time::timeout_at(deadline, stream.peek(&mut seen)).await {
            Ok(Ok(n)) => n,
            _ => return None,
        };
        if peeked == 0 {
            return None;
        }
        if seen[..peeked] != H2_PREFACE[..peeked] {
            return Some(Protocol::Http1);
        }
        if peeked == seen.len() {
            return Some(Protocol::Http2);
        }
        if tokio::time::Instant::now() + PREFACE_POLL >= deadline {
            return None;
        }
        tokio::time::sleep(PREFACE_POLL).await;
    }
}

/// A listener's cap on connections, and what a connection past it gets.
pub(super) struct Gate {
    pub(super) slots: Arc<Semaphore>,
    /// Shared by the listeners: refusals under way.
    pub(super) refusals: Arc<Semaphore>,
    pub(super) rejection: Rejection,
    pub(super) metrics: Arc<Metrics>,
}

impl Gate {
    /// A slot for a new connection, held while it is served; `None` past the cap.
    pub(super) fn enter(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Turns away a connection past the cap, counted: a short 503 while few refusals are
    /// under way (each takes a descriptor for up to a second), else a plain close.
    pub(super) fn refuse(&self, stream: TcpStream) {
        self.metrics.rejected(self.rejection);
        if let Ok(refusing) = self.refusals.clone().try_acquire_owned() {
            tokio::spawn(async move {
                refuse_connection(stream).await;
                drop(refusing);
            });
        }
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

pub(super) fn local(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|e| format!("unknown ({e})"), |a| a.to_string())
}

pub(super) async fn accepted_stream(
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
