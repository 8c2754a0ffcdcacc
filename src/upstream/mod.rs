//! The upstream client: a pooled hyper-util client over rustls (ring provider, webpki roots,
//! HTTP/2 when ALPN offers it), with a connect timeout, a deadline for the whole exchange,
//! and a cap on concurrent exchanges of which a part is kept for cache fills.
//!
//! It knows nothing of the cache: it sends requests, reads bodies up to a limit, streams
//! them, and says what went wrong ([`UpstreamError`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
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
use tokio::time::Instant;

use crate::config::{Config, UpstreamUrl};
use crate::error::BoxError;
use crate::metrics::{Metrics, Rejection};
use crate::route::RouteKind;
use crate::tunable::{TunableCount, TunableDuration};

mod body;
mod error;

pub use body::UpstreamBody;
use error::classify_client_error;
pub use error::UpstreamError;

/// The body type of every request the proxy sends upstream.
pub type RequestBody = BoxBody<Bytes, BoxError>;

/// Where a gRPC answer says how it ended: in its trailers, or in its headers when it has no
/// body.
pub const GRPC_STATUS: &str = "grpc-status";

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A body read up to a limit.
pub enum LimitedBody {
    /// All of it, and its trailers (gRPC's status comes in them).
    Complete {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Longer than the limit: what was read so far and the rest, still unread.
    TooLarge { prefix: Bytes, rest: Incoming },
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
    /// HTTP/1.1, or HTTP/2 where the upstream offers it by ALPN.
    client: Client<HttpsConnector<HttpConnector>, RequestBody>,
    /// HTTP/2 always, for gRPC: ALPN `h2` on `https://`, prior knowledge on `http://`.
    http2: Client<HttpsConnector<HttpConnector>, RequestBody>,
    base: UpstreamUrl,
    timeout: TunableDuration,
    metrics: Arc<Metrics>,
    /// One permit per exchange under way, held until its body is read or streamed:
    /// `shared` for any exchange, `fills` for Image.Get fetches only.
    shared: Arc<Semaphore>,
    fills: Arc<Semaphore>,
    retries: TunableCount,
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

impl std::error::Error for SetupError {}

impl Upstream {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Upstream, SetupError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        let tls = || {
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
                .map_err(|e| SetupError(e.to_string()))
                .map(|builder| builder.https_or_http())
        };
        let https = tls()?
            .enable_http1()
            .enable_http2()
            .wrap_connector(http.clone());
        let https_h2 = tls()?.enable_http2().wrap_connector(http);
        // Without a timer the pool's idle timeout silently does nothing.
        let builder = || {
            let mut builder = Client::builder(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(POOL_IDLE_TIMEOUT);
            builder
        };
        Ok(Upstream {
            client: builder().build(https),
            http2: builder().http2_only(true).build(https_h2),
            base: config.upstream.clone(),
            timeout: TunableDuration::new(config.upstream_timeout),
            metrics,
            shared: Arc::new(Semaphore::new(
                config.max_upstream_requests - fill_reserve(config.max_upstream_requests),
            )),
            fills: Arc::new(Semaphore::new(fill_reserve(config.max_upstream_requests))),
            retries: TunableCount::new(u64::from(config.upstream_retries)),
        })
    }

    /// How long a whole exchange may take (`--upstream-timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout.get()
    }

    /// Takes the timeout and retries of a reloaded configuration, for exchanges that start
    /// from now on.
    pub fn retune(&self, config: &Config) {
        self.timeout.set(config.upstream_timeout);
        self.retries.set(u64::from(config.upstream_retries));
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

    /// Sends a request for `route` and waits for the response head until `deadline`: a
    /// request marked HTTP/2 (gRPC) always goes over HTTP/2, any other over the connection
    /// the upstream offers. Every exchange is counted here: an answer by its status, a
    /// failure by its kind. A GET or HEAD without a body whose connection cannot be made is
    /// retried with jittered backoff, `--upstream-retries` times at most, inside the
    /// deadline. Past the concurrency limit nothing is sent: the answer is `Busy` at once
    /// rather than a queue without bound.
    pub async fn send(
        &self,
        request: Request<RequestBody>,
        deadline: Instant,
        route: RouteKind,
        purpose: Purpose,
    ) -> Result<Exchange, UpstreamError> {
        let template = ((request.method() == Method::GET || request.method() == Method::HEAD)
            && request.body().is_end_stream())
        .then(|| {
            (
                request.method().clone(),
                request.uri().clone(),
                request.version(),
                request.headers().clone(),
            )
        });
        let again = || {
            let (method, uri, version, headers) = template.clone()?;
            let mut request = Request::new(Empty::new().map_err(|never| match never {}).boxed());
            *request.method_mut() = method;
            *request.uri_mut() = uri;
            *request.version_mut() = version;
            *request.headers_mut() = headers;
            Some(request)
        };
        self.exchange(request, again, deadline, route, purpose)
            .await
    }

    /// [`Upstream::send`] for a cache fill, which `make` makes (again for each retry: a
    /// fill's request has nothing of the client's that could not be made twice).
    pub async fn send_fill(
        &self,
        make: impl Fn() -> Result<Request<RequestBody>, UpstreamError>,
        deadline: Instant,
    ) -> Result<Exchange, UpstreamError> {
        let first = make()?;
        self.exchange(
            first,
            || make().ok(),
            deadline,
            RouteKind::ImageGet,
            Purpose::Fill,
        )
        .await
    }

    /// One exchange, with its retries (`again` makes the request again, if it can be).
    async fn exchange(
        &self,
        mut request: Request<RequestBody>,
        again: impl Fn() -> Option<Request<RequestBody>>,
        deadline: Instant,
        route: RouteKind,
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
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let client = if request.version() == Version::HTTP_2 {
                &self.http2
            } else {
                &self.client
            };
            let result = match tokio::time::timeout_at(deadline, client.request(request)).await {
                Err(_) => Err(UpstreamError::Timeout(self.timeout())),
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
            let err = match result {
                Ok(response) => {
                    self.metrics.upstream_answered(
                        route,
                        response.status().as_u16(),
                        started.elapsed(),
                    );
                    // A gRPC answer without a body has its status in its headers.
                    if let Some(status) = response.headers().get(GRPC_STATUS) {
                        self.metrics.upstream_grpc_status(route, status);
                    }
                    return Ok(Exchange { response, slot });
                }
                Err(err) => err,
            };
            if !matches!(err, UpstreamError::Upload(_)) {
                self.metrics.upstream_failed(err.kind());
            }
            // Only a connection that could not be made is retried: nothing was sent.
            let backoff = jittered(RETRY_BACKOFF * 2u32.saturating_pow(attempt));
            let retry = matches!(err, UpstreamError::Connect(_))
                && u64::from(attempt) < self.retries.get()
                && Instant::now() + backoff < deadline;
            match retry.then(&again).flatten() {
                Some(next) => {
                    tracing::debug!(route = route.as_str(), attempt, error = %err, "retrying upstream connection");
                    tokio::time::sleep(backoff).await;
                    attempt += 1;
                    request = next;
                }
                None => return Err(err),
            }
        }
    }

    /// Streams an upstream body of `route` to a client after `prefix`, under the exchange's
    /// deadline; a failure part-way is counted like any other, and so is a gRPC status in
    /// its trailers.
    pub fn stream(
        &self,
        route: RouteKind,
        prefix: Bytes,
        body: Incoming,
        deadline: Instant,
        slot: OwnedSemaphorePermit,
    ) -> UpstreamBody {
        UpstreamBody::new(
            route,
            prefix,
            body,
            deadline,
            self.timeout(),
            self.metrics.clone(),
            slot,
        )
    }

    /// Reads a `route` answer's `body` until it ends, `limit` bytes are exceeded, or
    /// `deadline` passes. A failure is counted, and so is a gRPC status in its trailers.
    pub async fn read_limited(
        &self,
        route: RouteKind,
        body: Incoming,
        limit: usize,
        deadline: Instant,
    ) -> Result<LimitedBody, UpstreamError> {
        let result = self.read_limited_uncounted(body, limit, deadline).await;
        match &result {
            Err(err) => self.metrics.upstream_failed(err.kind()),
            Ok(LimitedBody::Complete {
                trailers: Some(trailers),
                ..
            }) => {
                if let Some(status) = trailers.get(GRPC_STATUS) {
                    self.metrics.upstream_grpc_status(route, status);
                }
            }
            Ok(_) => {}
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
        let mut trailers = None;
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Err(UpstreamError::Timeout(self.timeout())),
                Ok(None) => {
                    return Ok(LimitedBody::Complete {
                        data: buf.freeze(),
                        trailers,
                    })
                }
                Ok(Some(Err(e))) => return Err(UpstreamError::Body(crate::error::describe(&e))),
                Ok(Some(Ok(frame))) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if let Ok(map) = frame.into_trailers() {
                        trailers = Some(map);
                    }
                    continue;
                }
            };
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

/// `base` scaled by a random factor between 0.5 and 1.5, so that retries from many
/// requests do not land on the upstream together.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
}
