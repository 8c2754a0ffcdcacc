//! The upstream client: a pooled hyper-util client over rustls (ring provider, webpki roots,
//! HTTP/2 when ALPN offers it), with a connect timeout and a deadline for the whole exchange,
//! and the mapping of its failures to the API's own error answers.
//!
//! It knows nothing of the cache: it sends requests, reads bodies up to a limit, and says
//! what went wrong.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::ProxyBody;
use crate::config::{Config, UpstreamUrl};
use crate::metrics::{Metrics, Rejection};
use crate::upload::UploadFailure;

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The body type of every request the proxy sends upstream.
pub type RequestBody = BoxBody<Bytes, BoxError>;

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// What went wrong talking to the upstream. Messages never carry request headers.
#[derive(Debug, Clone)]
pub enum UpstreamError {
    /// No connection could be made (refused, unreachable, DNS, connect timeout).
    Connect(String),
    /// The TLS handshake failed.
    Tls(String),
    /// The exchange did not finish before the deadline.
    Timeout(Duration),
    /// The connection broke while the answer was being read.
    Body(String),
    /// `--max-upstream-requests` exchanges are already under way: not sent at all.
    Busy,
    /// The client's request body failed while it was being sent (over the limit, stalled,
    /// broken): the client's fault, not the upstream's.
    Upload(UploadFailure),
}

impl UpstreamError {
    /// The metric label of this kind of failure.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Tls(_) => "tls",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Body(_) => "body",
            UpstreamError::Busy => "busy",
            UpstreamError::Upload(_) => "request_body",
        }
    }

    /// The HTTP status and gRPC code the proxy answers with.
    pub fn status_and_code(&self) -> (StatusCode, u32) {
        match self {
            UpstreamError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, 4),
            UpstreamError::Busy => (StatusCode::SERVICE_UNAVAILABLE, 14),
            UpstreamError::Upload(UploadFailure::TooLarge) => (StatusCode::PAYLOAD_TOO_LARGE, 8),
            UpstreamError::Upload(UploadFailure::Stalled) => (StatusCode::REQUEST_TIMEOUT, 4),
            UpstreamError::Upload(UploadFailure::Broken) => (StatusCode::BAD_REQUEST, 3),
            _ => (StatusCode::BAD_GATEWAY, 14),
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Connect(why) => write!(f, "upstream could not be reached: {why}"),
            UpstreamError::Tls(why) => write!(f, "upstream TLS handshake failed: {why}"),
            UpstreamError::Timeout(after) => write!(
                f,
                "upstream did not answer within {}",
                humantime::format_duration(*after)
            ),
            UpstreamError::Body(why) => write!(f, "upstream answer broke off: {why}"),
            UpstreamError::Busy => {
                f.write_str("too many requests are already waiting for the upstream; retry shortly")
            }
            UpstreamError::Upload(failure) => write!(f, "{failure}"),
        }
    }
}

impl StdError for UpstreamError {}

/// A body read up to a limit.
pub enum LimitedBody {
    Complete(Bytes),
    /// Longer than the limit: what was read so far and the rest, still unread.
    TooLarge {
        prefix: Bytes,
        rest: Incoming,
    },
}

/// Which upstream capacity an exchange may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// An Image.Get fetch: the shared slots, then the ones kept for fills.
    Fill,
    /// A request passed through: the shared slots only, so that pass-through traffic
    /// (slow uploads, a hung route) can never leave the cache unable to fill.
    Forward,
}

/// The upstream API client.
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, RequestBody>,
    base: UpstreamUrl,
    timeout: Duration,
    metrics: Arc<Metrics>,
    /// One permit per exchange under way, held until its body is read or streamed:
    /// `shared` for any exchange, `fills` for Image.Get fetches only.
    shared: Arc<Semaphore>,
    fills: Arc<Semaphore>,
    retries: u32,
}

/// The part of `--max-upstream-requests` kept for Image.Get fills: a quarter (rounded down).
pub fn fill_reserve(max_upstream_requests: usize) -> usize {
    max_upstream_requests / 4
}

/// An upstream response and the concurrency slot it holds until it is dropped.
pub struct Exchange {
    pub response: Response<Incoming>,
    pub slot: OwnedSemaphorePermit,
}

/// First pause before retrying a failed connection; doubled per retry, jittered ±50 %.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// The client could not be built.
#[derive(Debug)]
pub struct SetupError(String);

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot set up the upstream client: {}", self.0)
    }
}

impl StdError for SetupError {}

impl Upstream {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Upstream, SetupError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| SetupError(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        // Without a timer the pool's idle timeout silently does nothing.
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(https);
        Ok(Upstream {
            client,
            base: config.upstream.clone(),
            timeout: config.upstream_timeout,
            metrics,
            shared: Arc::new(Semaphore::new(
                config.max_upstream_requests - fill_reserve(config.max_upstream_requests),
            )),
            fills: Arc::new(Semaphore::new(fill_reserve(config.max_upstream_requests))),
            retries: config.upstream_retries,
        })
    }

    /// The deadline of an exchange that starts now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// The upstream URI for a raw request target (path and query as received).
    pub fn uri_for(&self, target: &str) -> Result<Uri, http::Error> {
        let mut path = String::with_capacity(self.base.path_prefix.len() + target.len());
        path.push_str(&self.base.path_prefix);
        path.push_str(target);
        Uri::builder()
            .scheme(self.base.scheme.clone())
            .authority(self.base.authority.clone())
            .path_and_query(path)
            .build()
    }

    /// Sends a request for `route` and waits for the response head until `deadline`. Every
    /// exchange is counted here: an answer by its status, a failure by its kind. A GET or
    /// HEAD without a body whose connection cannot be made is retried with jittered backoff,
    /// `--upstream-retries` times at most, inside the deadline. Past the concurrency limit
    /// nothing is sent: the answer is `Busy` at once rather than a queue without bound.
    pub async fn send(
        &self,
        mut request: Request<RequestBody>,
        deadline: Instant,
        route: &'static str,
        purpose: Purpose,
    ) -> Result<Exchange, UpstreamError> {
        let slot = match (self.shared.clone().try_acquire_owned(), purpose) {
            (Ok(slot), _) => slot,
            (Err(_), Purpose::Fill) => match self.fills.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    self.metrics.rejected(Rejection::UpstreamBusy);
                    return Err(UpstreamError::Busy);
                }
            },
            (Err(_), Purpose::Forward) => {
                self.metrics.rejected(Rejection::UpstreamBusy);
                return Err(UpstreamError::Busy);
            }
        };
        let retry_template = (self.retries > 0
            && (request.method() == Method::GET || request.method() == Method::HEAD)
            && request.body().is_end_stream())
        .then(|| {
            (
                request.method().clone(),
                request.uri().clone(),
                request.headers().clone(),
            )
        });
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let result = match tokio::time::timeout_at(
                deadline.into(),
                self.client.request(request),
            )
            .await
            {
                Err(_) => Err(UpstreamError::Timeout(self.timeout)),
                Ok(Ok(response)) if response.status().is_informational() => {
                    // hyper hands over a 101 (no other 1xx is final); the API has no
                    // upgrades, and relaying one would hand the client a raw connection.
                    self.metrics.upstream_answered(
                        route,
                        response.status().as_u16(),
                        started.elapsed(),
                    );
                    Err(UpstreamError::Body(format!(
                        "the upstream answered {}, which the proxy does not relay",
                        response.status()
                    )))
                }
                Ok(Ok(response)) => Ok(response),
                Ok(Err(e)) => Err(classify_client_error(&e)),
            };
            match result {
                Ok(response) => {
                    self.metrics.upstream_answered(
                        route,
                        response.status().as_u16(),
                        started.elapsed(),
                    );
                    return Ok(Exchange { response, slot });
                }
                Err(err) => {
                    if !matches!(err, UpstreamError::Upload(_)) {
                        self.metrics.upstream_failed(err.kind());
                    }
                    let backoff = jittered(RETRY_BACKOFF * 2u32.saturating_pow(attempt));
                    match &retry_template {
                        Some((method, uri, headers))
                            if matches!(err, UpstreamError::Connect(_))
                                && attempt < self.retries
                                && Instant::now() + backoff < deadline =>
                        {
                            tracing::debug!(route, attempt, error = %err, "retrying upstream connection");
                            tokio::time::sleep(backoff).await;
                            attempt += 1;
                            request =
                                Request::new(Empty::new().map_err(|never| match never {}).boxed());
                            *request.method_mut() = method.clone();
                            *request.uri_mut() = uri.clone();
                            *request.headers_mut() = headers.clone();
                        }
                        _ => return Err(err),
                    }
                }
            }
        }
    }

    /// Streams an upstream body to a client after `prefix`, under the exchange's deadline;
    /// a failure part-way is counted like any other.
    pub fn stream(
        &self,
        prefix: Bytes,
        body: Incoming,
        deadline: Instant,
        slot: OwnedSemaphorePermit,
    ) -> ProxyBody {
        ProxyBody::upstream(
            prefix,
            body,
            deadline,
            self.timeout,
            self.metrics.clone(),
            slot,
        )
    }

    /// Reads `body` until it ends, `limit` bytes are exceeded, or `deadline` passes.
    pub async fn read_limited(
        &self,
        body: Incoming,
        limit: usize,
        deadline: Instant,
    ) -> Result<LimitedBody, UpstreamError> {
        let result = self.read_limited_uncounted(body, limit, deadline).await;
        if let Err(err) = &result {
            self.metrics.upstream_failed(err.kind());
        }
        result
    }

    async fn read_limited_uncounted(
        &self,
        mut body: Incoming,
        limit: usize,
        deadline: Instant,
    ) -> Result<LimitedBody, UpstreamError> {
        let mut buf = BytesMut::new();
        loop {
            let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
                Err(_) => return Err(UpstreamError::Timeout(self.timeout)),
                Ok(None) => return Ok(LimitedBody::Complete(buf.freeze())),
                Ok(Some(Err(e))) => return Err(UpstreamError::Body(describe(&e))),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
                if buf.len() > limit {
                    return Ok(LimitedBody::TooLarge {
                        prefix: buf.freeze(),
                        rest: body,
                    });
                }
            }
        }
    }
}

/// `base` scaled by a random factor between 0.5 and 1.5, so that retries from many
/// requests do not land on the upstream together.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
}

fn classify_client_error(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    if let Some(failure) = cause_of::<UploadFailure>(e) {
        return UpstreamError::Upload(*failure);
    }
    if caused_by::<rustls::Error>(e) {
        return UpstreamError::Tls(describe(e));
    }
    if e.is_connect() {
        return UpstreamError::Connect(describe(e));
    }
    // The connection was made but broke before a complete response head arrived.
    UpstreamError::Body(describe(e))
}

/// Whether an error of type `E` is anywhere in the chain.
fn caused_by<E: StdError + 'static>(e: &(dyn StdError + 'static)) -> bool {
    cause_of::<E>(e).is_some()
}

/// The first error of type `E` in the chain.
fn cause_of<'a, E: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        current = cause(err);
    }
    None
}

/// The next error in the chain. `io::Error::source` skips the error it wraps (and rustls
/// errors arrive wrapped twice), so wrapped errors are unpacked by hand.
fn cause<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        if let Some(inner) = io.get_ref() {
            return Some(inner);
        }
    }
    err.source()
}

/// The error and its causes on one line.
fn describe(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut current = cause(e);
    while let Some(err) = current {
        let part = err.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        current = cause(err);
    }
    text
}

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1), plus
/// those the `Connection` header names. They are never forwarded in either direction.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    use http::header::{
        CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING,
        UPGRADE,
    };
    let named: Vec<http::HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| http::HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        CONNECTION,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("close, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        h.insert("x-request-id", HeaderValue::from_static("r"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["authorization", "x-request-id"]);
    }

    #[test]
    fn errors_map_to_the_api_shape_codes() {
        assert_eq!(
            UpstreamError::Timeout(Duration::from_secs(1)).status_and_code(),
            (StatusCode::GATEWAY_TIMEOUT, 4)
        );
        assert_eq!(
            UpstreamError::Connect("refused".into()).status_and_code(),
            (StatusCode::BAD_GATEWAY, 14)
        );
    }
}
