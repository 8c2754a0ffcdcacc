//! The proxy service: takes one request, routes it, and answers it from the cache, from a
//! (shared) upstream fetch, or by passing it through.
//!
//! Image.Get: look up the cache for this caller; on a miss join the flight for the key
//! (credential and image in per-credential mode, image alone in shared mode). The leader's
//! fetch runs in a task of its own and decides what the answer does to the cache; everyone
//! in the flight builds their response from the one published [`FlightResult`].

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    HeaderName, AGE, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER,
};
use http::{
    request, response, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version,
};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::auth::{CredentialHasher, Fingerprint};
use crate::body::ProxyBody;
use crate::cache::{EntryKind, ImageCache, Lookup, NewEntry};
use crate::coalesce::{Coalescer, Joined, Overloaded, Wait};
use crate::config::{AuthMode, Config};
use crate::outcome::{CacheResult, Forward, Outcome};
use crate::route::{classify, Route, IMAGES_PREFIX};
use crate::upstream::{strip_hop_by_hop, BoxError, LimitedBody, Upstream, UpstreamError};

/// How many flights one request may take part in: its first, a hand-over after a failed
/// leader, and one more for a shared-mode answer that was not its to take.
const MAX_FLIGHT_ROUNDS: usize = 3;

/// Upstream headers that belong to one exchange and are never replayed to anyone else.
const PER_EXCHANGE_HEADERS: &[&str] = &[
    "date",
    "x-request-id",
    "x-server-trace-id",
    "set-cookie",
    "age",
    "content-length",
    "x-envoy-upstream-service-time",
];

static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Who shares a flight.
#[derive(Clone, PartialEq, Eq, Hash)]
struct FlightKey {
    id: Arc<str>,
    who: Option<Fingerprint>,
}

/// The upstream's answer to a flight, as every member of it sees it.
struct Answer {
    status: StatusCode,
    /// All of the upstream's headers but hop-by-hop ones; only the leader gets them all.
    headers: HeaderMap,
    body: Bytes,
    fetched_by: Option<Fingerprint>,
    stored: bool,
}

enum FlightResult {
    /// The cache was filled just before the leader would have fetched.
    Cached(Arc<crate::cache::Entry>),
    Answer(Answer),
    Failed(UpstreamError),
    /// The body was over the entry limit; the leader streams it, the rest fetch alone.
    TooLarge,
}

/// An upstream answer too big to hold, handed to the leader to stream.
struct Oversized {
    head: response::Parts,
    prefix: Bytes,
    rest: Incoming,
    deadline: Instant,
}

/// The proxy's shared state.
pub struct Proxy {
    cache: ImageCache,
    flights: Arc<Coalescer<FlightKey, FlightResult>>,
    upstream: Upstream,
    hasher: CredentialHasher,
    auth_mode: AuthMode,
    max_entry_size: usize,
    upstream_timeout: Duration,
}

impl Proxy {
    pub fn new(config: &Config) -> Result<Arc<Proxy>, BoxError> {
        Ok(Arc::new(Proxy {
            cache: ImageCache::new(config, |_| {}),
            flights: Coalescer::new(config.max_waiters_per_key, config.max_waiters),
            upstream: Upstream::new(config)?,
            hasher: CredentialHasher::new_random()?,
            auth_mode: config.auth_mode,
            max_entry_size: usize::try_from(config.max_entry_size).unwrap_or(usize::MAX),
            upstream_timeout: config.upstream_timeout,
        }))
    }

    pub fn cache(&self) -> &ImageCache {
        &self.cache
    }

    /// Answers one client request. Never fails: every problem becomes an API-shaped error.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<ProxyBody> {
        let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
        match classify(request.method(), target) {
            Route::ImageGet { id, head } => {
                let id: Arc<str> = Arc::from(id);
                let (parts, _) = request.into_parts();
                self.image_get(parts, id, head).await
            }
            Route::ImageMutation { id } => self.forward(request, Some(id)).await,
            Route::Passthrough => self.forward(request, None).await,
        }
    }

    async fn image_get(
        self: Arc<Self>,
        parts: request::Parts,
        id: Arc<str>,
        head: bool,
    ) -> Response<ProxyBody> {
        let deadline = self.upstream.deadline();
        let who = self.hasher.fingerprint(&parts.headers);
        let forward = if self.auth_mode == AuthMode::PerCredential && who.is_none() {
            Forward::Bypass
        } else if wants_no_cache(&parts.headers) {
            Forward::Request
        } else {
            Forward::Miss
        };
        if forward == Forward::Miss {
            if let Lookup::Fresh(entry) = self.cache.lookup(&id, who).await {
                return hit_response(&entry, head);
            }
        }
        let result = match forward {
            Forward::Miss => CacheResult::Miss,
            _ => CacheResult::Bypass,
        };
        let key = FlightKey {
            id: id.clone(),
            who: match self.auth_mode {
                AuthMode::PerCredential => who,
                AuthMode::Shared => None,
            },
        };
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        headers.remove(HOST);

        let mut last_error = UpstreamError::Connect("the upstream fetch was abandoned".into());
        for round in 1..=MAX_FLIGHT_ROUNDS {
            let (subscription, mut oversized) = match self.flights.join(key.clone()) {
                Err(over) => return overloaded_response(over, result, forward),
                Ok(Joined::Waiter(subscription)) => (subscription, None),
                Ok(Joined::Leader(publisher, subscription)) => {
                    if forward == Forward::Miss {
                        if let Lookup::Fresh(entry) = self.cache.lookup(&id, who).await {
                            publisher.publish(FlightResult::Cached(entry.clone()));
                            return hit_response(&entry, head);
                        }
                    }
                    let (hand_over, oversized) = oneshot::channel();
                    let fetch =
                        self.clone()
                            .fetch(id.clone(), headers.clone(), who, deadline, hand_over);
                    tokio::spawn(async move { publisher.publish(fetch.await) });
                    (subscription, Some(oversized))
                }
            };
            let coalesced = subscription.is_waiter();
            let shared = match subscription.wait(deadline).await {
                Wait::Done(shared) => shared,
                Wait::Abandoned => continue,
                Wait::TimedOut => {
                    let err = UpstreamError::Timeout(self.upstream_timeout);
                    return self
                        .failed(&id, who, err, result, forward, coalesced, head)
                        .await;
                }
            };
            let mut outcome = Outcome::forwarded(result, forward);
            outcome.coalesced = coalesced;
            match &*shared {
                FlightResult::Cached(entry) => return hit_response(entry, head),
                FlightResult::Answer(answer) => {
                    // In shared mode only a 200 is everyone's; another status belongs to the
                    // credential it was given to.
                    if self.auth_mode == AuthMode::Shared
                        && answer.status != StatusCode::OK
                        && answer.fetched_by != who
                        && round < MAX_FLIGHT_ROUNDS
                    {
                        continue;
                    }
                    if answer.status.is_server_error() {
                        if let Some(stale) = self
                            .stale_response(&id, who, Some(answer.status), head)
                            .await
                        {
                            return stale;
                        }
                    }
                    outcome.upstream_status = Some(answer.status.as_u16());
                    outcome.stored = answer.stored;
                    return answer_response(answer, &outcome, head);
                }
                FlightResult::Failed(err) => {
                    if coalesced && round < MAX_FLIGHT_ROUNDS {
                        if let Some(stale) = self.stale_response(&id, who, None, head).await {
                            return stale;
                        }
                        last_error = err.clone();
                        continue;
                    }
                    return self
                        .failed(&id, who, err.clone(), result, forward, coalesced, head)
                        .await;
                }
                FlightResult::TooLarge => {
                    return match oversized.take() {
                        Some(receiver) => match receiver.await {
                            Ok(big) => oversized_response(big, &outcome, self.upstream_timeout),
                            Err(_) => error_response(
                                &UpstreamError::Body("the oversized answer was lost".into()),
                                Some(&outcome),
                            ),
                        },
                        None => self.fetch_alone(&id, headers, outcome, deadline).await,
                    };
                }
            }
        }
        self.failed(&id, who, last_error, result, forward, false, head)
            .await
    }

    /// The leader's fetch: one upstream GET, its effect on the cache, and the result every
    /// member of the flight is answered from.
    async fn fetch(
        self: Arc<Self>,
        id: Arc<str>,
        headers: HeaderMap,
        who: Option<Fingerprint>,
        deadline: Instant,
        hand_over: oneshot::Sender<Oversized>,
    ) -> FlightResult {
        let started = Instant::now();
        let result = self
            .fetch_from_upstream(&id, headers, who, deadline, hand_over)
            .await;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match &result {
            FlightResult::Answer(answer) => tracing::info!(
                route = "image_get",
                status = answer.status.as_u16(),
                stored = answer.stored,
                elapsed_ms,
                "upstream fetch"
            ),
            FlightResult::Failed(err) => tracing::info!(
                route = "image_get",
                error = %err,
                kind = err.kind(),
                elapsed_ms,
                "upstream fetch failed"
            ),
            FlightResult::TooLarge => tracing::info!(
                route = "image_get",
                elapsed_ms,
                "upstream answer too large to cache; streamed through"
            ),
            FlightResult::Cached(_) => {}
        }
        result
    }

    async fn fetch_from_upstream(
        &self,
        id: &str,
        headers: HeaderMap,
        who: Option<Fingerprint>,
        deadline: Instant,
        hand_over: oneshot::Sender<Oversized>,
    ) -> FlightResult {
        let request = match self.image_request(id, headers) {
            Ok(request) => request,
            Err(err) => return FlightResult::Failed(err),
        };
        let response = match self.upstream.send(request, deadline).await {
            Ok(response) => response,
            Err(err) => return FlightResult::Failed(err),
        };
        let (mut head, body) = response.into_parts();
        strip_hop_by_hop(&mut head.headers);
        let received_at = Instant::now();
        let body = match self
            .upstream
            .read_limited(body, self.max_entry_size, deadline)
            .await
        {
            Err(err) => return FlightResult::Failed(err),
            Ok(LimitedBody::TooLarge { prefix, rest }) => {
                // If the leader's client has gone, dropping the body closes the exchange.
                let _ = hand_over.send(Oversized {
                    head,
                    prefix,
                    rest,
                    deadline,
                });
                return FlightResult::TooLarge;
            }
            Ok(LimitedBody::Complete(body)) => body,
        };
        let stored = self
            .apply_to_cache(id, &head, &body, who, received_at)
            .await;
        FlightResult::Answer(Answer {
            status: head.status,
            headers: head.headers,
            body,
            fetched_by: who,
            stored,
        })
    }

    fn image_request(
        &self,
        id: &str,
        headers: HeaderMap,
    ) -> Result<Request<crate::upstream::RequestBody>, UpstreamError> {
        let uri = self
            .upstream
            .uri_for(&format!("{IMAGES_PREFIX}{id}"))
            .map_err(|e| UpstreamError::Connect(format!("bad upstream URI: {e}")))?;
        let mut request = Request::new(Empty::new().map_err(|never| match never {}).boxed());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// What an upstream answer does to the cache; true if it was stored.
    async fn apply_to_cache(
        &self,
        id: &str,
        head: &response::Parts,
        body: &Bytes,
        who: Option<Fingerprint>,
        received_at: Instant,
    ) -> bool {
        // Without a credential an entry could never be served in per-credential mode.
        let storable = self.auth_mode == AuthMode::Shared || who.is_some();
        let kind = match head.status {
            StatusCode::OK => match image_state(body) {
                Some(state) if state.id.as_deref() == Some(id) => {
                    if state.status.as_deref() == Some("READY") {
                        EntryKind::Ready
                    } else {
                        let reason = invalidation_reason(state.status.as_deref());
                        if self.cache.invalidate(id).await {
                            tracing::info!(reason, "image invalidated by its status");
                        }
                        return false;
                    }
                }
                // Not JSON, or not the image asked for: answered, never stored, and no
                // reason to believe the cached image changed.
                _ => return false,
            },
            StatusCode::NOT_FOUND => {
                if self.cache.invalidate(id).await {
                    tracing::info!(reason = "not_found", "image invalidated by a 404");
                }
                if !self.cache.stores_not_found() {
                    return false;
                }
                EntryKind::NotFound
            }
            _ => return false,
        };
        if !storable {
            return false;
        }
        let entry = NewEntry {
            kind,
            status: head.status,
            headers: replayable(&head.headers),
            body: body.clone(),
            received_at,
        };
        self.cache.store(id, entry, who).await;
        true
    }

    /// Serves the stale entry if the upstream failed and this caller may have it.
    async fn stale_response(
        &self,
        id: &str,
        who: Option<Fingerprint>,
        upstream_status: Option<StatusCode>,
        head: bool,
    ) -> Option<Response<ProxyBody>> {
        match self.cache.lookup(id, who).await {
            Lookup::Stale(entry) => {
                let now = Instant::now();
                let mut outcome = Outcome::forwarded(CacheResult::Stale, Forward::Stale);
                outcome.upstream_status = upstream_status.map(|s| s.as_u16());
                outcome.ttl = Some(entry.ttl_secs(now));
                Some(entry_response(&entry, &outcome, head, now))
            }
            // Someone refreshed it meanwhile.
            Lookup::Fresh(entry) => Some(hit_response(&entry, head)),
            Lookup::Miss => None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn failed(
        &self,
        id: &str,
        who: Option<Fingerprint>,
        err: UpstreamError,
        result: CacheResult,
        forward: Forward,
        coalesced: bool,
        head: bool,
    ) -> Response<ProxyBody> {
        if let Some(stale) = self.stale_response(id, who, None, head).await {
            return stale;
        }
        let mut outcome = Outcome::forwarded(result, forward);
        outcome.coalesced = coalesced;
        tracing::info!(route = "image_get", error = %err, kind = err.kind(), "answered with an error");
        error_response(&err, Some(&outcome))
    }

    /// A request that was in a flight whose answer was too big to share fetches by itself.
    async fn fetch_alone(
        &self,
        id: &str,
        headers: HeaderMap,
        outcome: Outcome,
        deadline: Instant,
    ) -> Response<ProxyBody> {
        let request = match self.image_request(id, headers) {
            Ok(request) => request,
            Err(err) => return error_response(&err, Some(&outcome)),
        };
        match self.upstream.send(request, deadline).await {
            Err(err) => error_response(&err, Some(&outcome)),
            Ok(response) => {
                let (mut head, rest) = response.into_parts();
                strip_hop_by_hop(&mut head.headers);
                let big = Oversized {
                    head,
                    prefix: Bytes::new(),
                    rest,
                    deadline,
                };
                oversized_response(big, &outcome, self.upstream_timeout)
            }
        }
    }

    /// Passes a request through, streamed both ways. Mutations invalidate their image
    /// before the request goes and again once it is answered, so that a fetch racing the
    /// mutation cannot leave the old image behind.
    async fn forward(
        &self,
        request: Request<Incoming>,
        mutated: Option<String>,
    ) -> Response<ProxyBody> {
        let deadline = self.upstream.deadline();
        if let Some(id) = &mutated {
            self.cache.invalidate(id).await;
        }
        let (mut parts, body) = request.into_parts();
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = match self.upstream.uri_for(target) {
            Ok(uri) => uri,
            Err(_) => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    3,
                    "the request target cannot be forwarded",
                );
            }
        };
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(HOST);
        let mut upstream_request = Request::new(body.map_err(BoxError::from).boxed());
        *upstream_request.method_mut() = parts.method;
        *upstream_request.uri_mut() = uri;
        *upstream_request.headers_mut() = parts.headers;
        let result = self.upstream.send(upstream_request, deadline).await;
        if let Some(id) = &mutated {
            if self.cache.invalidate(id).await {
                tracing::info!(reason = "mutation", "image invalidated by a mutation");
            }
        }
        match result {
            Err(err) => {
                tracing::info!(route = "passthrough", error = %err, kind = err.kind(), "upstream request failed");
                error_response(&err, None)
            }
            Ok(response) => {
                let (mut head, body) = response.into_parts();
                strip_hop_by_hop(&mut head.headers);
                head.version = Version::default();
                Response::from_parts(
                    head,
                    ProxyBody::upstream(None, body, deadline, self.upstream_timeout),
                )
            }
        }
    }
}

/// The fields of an image body that decide whether it is cached.
#[derive(Deserialize)]
struct ImageState<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
}

/// Parses the whole body (so invalid JSON anywhere is caught) but keeps only `id` and
/// `status`.
fn image_state(body: &[u8]) -> Option<ImageState<'_>> {
    serde_json::from_slice(body).ok()
}

/// The invalidation reason (metric label) for a non-READY status.
pub fn invalidation_reason(status: Option<&str>) -> &'static str {
    match status {
        Some("CREATING") => "creating",
        Some("UPDATING") => "updating",
        Some("DELETING") => "deleting",
        Some("ERROR") => "error",
        _ => "unspecified",
    }
}

fn wants_no_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|d| d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("max-age=0"))
}

/// The headers of an upstream answer that may be replayed to another caller.
fn replayable(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    for name in PER_EXCHANGE_HEADERS {
        kept.remove(*name);
    }
    kept
}

fn hit_response(entry: &crate::cache::Entry, head: bool) -> Response<ProxyBody> {
    let now = Instant::now();
    entry_response(entry, &Outcome::hit(entry.ttl_secs(now)), head, now)
}

fn entry_response(
    entry: &crate::cache::Entry,
    outcome: &Outcome,
    head: bool,
    now: Instant,
) -> Response<ProxyBody> {
    let mut response = with_body(entry.body.clone(), head);
    *response.status_mut() = entry.status;
    let headers = response.headers_mut();
    for (name, value) in &entry.headers {
        headers.append(name, value.clone());
    }
    headers.insert(AGE, HeaderValue::from(entry.age(now).as_secs()));
    set_cache_headers(headers, outcome);
    response
}

fn answer_response(answer: &Answer, outcome: &Outcome, head: bool) -> Response<ProxyBody> {
    let mut response = with_body(answer.body.clone(), head);
    *response.status_mut() = answer.status;
    // A waiter did not make this exchange: it gets no other request's IDs or cookies.
    *response.headers_mut() = if outcome.coalesced {
        replayable(&answer.headers)
    } else {
        let mut all = answer.headers.clone();
        all.remove(CONTENT_LENGTH);
        all
    };
    set_cache_headers(response.headers_mut(), outcome);
    response
}

fn oversized_response(big: Oversized, outcome: &Outcome, timeout: Duration) -> Response<ProxyBody> {
    let mut head = big.head;
    head.version = Version::default();
    set_cache_headers(&mut head.headers, outcome);
    let prefix = (!big.prefix.is_empty()).then_some(big.prefix);
    Response::from_parts(
        head,
        ProxyBody::upstream(prefix, big.rest, big.deadline, timeout),
    )
}

/// A response with `body`, or for HEAD none but the `Content-Length` a GET would have.
fn with_body(body: Bytes, head: bool) -> Response<ProxyBody> {
    if head {
        let mut response = Response::new(ProxyBody::empty());
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        response
    } else {
        Response::new(ProxyBody::full(body))
    }
}

fn set_cache_headers(headers: &mut HeaderMap, outcome: &Outcome) {
    headers.insert(X_CACHE.clone(), outcome.result.x_cache());
    headers.insert(CACHE_STATUS.clone(), outcome.cache_status());
}

/// An error made by the proxy itself, in the API's own shape.
pub fn api_error(status: StatusCode, code: u32, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "code": code, "message": message, "details": [] });
    let mut response = Response::new(ProxyBody::full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(err: &UpstreamError, outcome: Option<&Outcome>) -> Response<ProxyBody> {
    let (status, code) = err.status_and_code();
    let mut response = api_error(status, code, &err.to_string());
    if let Some(outcome) = outcome {
        set_cache_headers(response.headers_mut(), outcome);
    }
    response
}

fn overloaded_response(
    over: Overloaded,
    result: CacheResult,
    forward: Forward,
) -> Response<ProxyBody> {
    let message = match over {
        Overloaded::PerKey => "too many requests are waiting for this image; retry shortly",
        Overloaded::Total => "too many requests are waiting for the upstream; retry shortly",
    };
    let mut response = api_error(StatusCode::SERVICE_UNAVAILABLE, 14, message);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    set_cache_headers(response.headers_mut(), &Outcome::forwarded(result, forward));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_state_reads_id_and_status_of_valid_json_only() {
        let state = image_state(br#"{"id":"ly5a","status":"READY","labels":{"a":"b"}}"#).unwrap();
        assert_eq!(state.id.as_deref(), Some("ly5a"));
        assert_eq!(state.status.as_deref(), Some("READY"));
        assert!(image_state(br#"{"id":"ly5a","status":"READY""#).is_none());
        assert!(image_state(b"[1,2]").is_none());
        assert!(image_state(br#"{"id":"ly5a"} trailing"#).is_none());
    }

    #[test]
    fn no_cache_is_recognised() {
        let mut h = HeaderMap::new();
        assert!(!wants_no_cache(&h));
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("max-stale, No-Cache"),
        );
        assert!(wants_no_cache(&h));
    }

    #[test]
    fn per_exchange_headers_are_not_replayed() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("r"));
        h.insert("date", HeaderValue::from_static("d"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        let kept = replayable(&h);
        assert_eq!(kept.len(), 1);
        assert!(kept.contains_key("content-type"));
    }
}
