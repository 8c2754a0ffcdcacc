//! The proxy service: takes one request, routes it, and answers it from the cache, from a
//! (shared) upstream fetch, or by passing it through.
//!
//! Image.Get: look up the cache for this caller; on a miss join the flight for the key
//! (credential and image in per-credential mode, image alone in shared mode). The leader's
//! fetch runs in a task of its own and decides what the answer does to the cache; everyone
//! in the flight builds their response from the one published `FlightResult`.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{
    HeaderName, AGE, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LANGUAGE, CONTENT_LENGTH,
    CONTENT_TYPE, ETAG, HOST, LAST_MODIFIED, RETRY_AFTER,
};
use http::{response, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use serde::Deserialize;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::admission::admit;
use crate::auth::{CredentialHasher, Fingerprint};
use crate::body::ProxyBody;
use crate::cache::{removal_cause_label, EntryKind, Generation, ImageCache, Lookup, NewEntry};
use crate::coalesce::{Coalescer, Joined, Overloaded, Wait};
use crate::config::{AuthMode, Config};
use crate::fleet::{Accept, Claim, Fill, Fleet, SharedAnswer, Ticket};
use crate::metrics::{InvalidationReason, Metrics, Rejection};
use crate::outcome::{CacheResult, Forward, Outcome};
use crate::route::{classify, Route, IMAGES_PREFIX};
use crate::upload::{receive, Received, UploadFailure, UploadLimits};
use crate::upstream::{strip_hop_by_hop, BoxError, LimitedBody, Purpose, Upstream, UpstreamError};

/// Header values for numbers below this are made once and shared.
const PRECOMPUTED_NUMBERS: u64 = 4096;

/// How many flights one request may take part in: its first, a hand-over after a failed
/// leader, and one more for a shared-mode answer that was not its to take.
const MAX_FLIGHT_ROUNDS: usize = 3;

/// The upstream headers replayed from the cache, or to a request that shared another's
/// fetch: those that describe the body itself (RFC 9110 representation metadata). An
/// allow-list, so whatever a gateway or tracer adds to one exchange (`set-cookie`,
/// `traceparent`, `server-timing`, an echoed request ID, `cache-control: private` ...) never
/// reaches another caller.
const REPLAYED_HEADERS: [HeaderName; 5] = [
    CONTENT_TYPE,
    CONTENT_ENCODING,
    CONTENT_LANGUAGE,
    ETAG,
    LAST_MODIFIED,
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
    /// The cache was filled just before the leader would have fetched (or from the fleet).
    /// It carries no entry: each member looks the cache up for its own credential, so an
    /// entry only some may read (a 404 kept for one token) is never handed to the others.
    Cached,
    Answer(Answer),
    Failed(UpstreamError),
    /// The body was over the entry limit; the leader streams it, the rest fetch alone.
    TooLarge,
}

/// An upstream answer too big to hold, handed to the leader to stream.
struct Oversized {
    slot: OwnedSemaphorePermit,
    head: response::Parts,
    prefix: Bytes,
    rest: Incoming,
    deadline: Instant,
}

/// Request headers a fill passes upstream. A fill's answer is shared and may be stored, so
/// nothing that could shape it for one caller (`Range`, `If-None-Match`, `Accept-Encoding`,
/// `Expect`, a body's `Content-Length`) goes with it.
const FILL_HEADERS: &[&str] = &[
    "authorization",
    "accept",
    "accept-language",
    "user-agent",
    "x-request-id",
    "x-client-request-id",
    "x-client-trace-id",
];

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The proxy's shared state.
pub struct Proxy {
    cache: ImageCache,
    flights: Arc<Coalescer<FlightKey, FlightResult>>,
    upstream: Upstream,
    hasher: CredentialHasher,
    metrics: Arc<Metrics>,
    auth_mode: AuthMode,
    max_entry_size: usize,
    upload_limits: UploadLimits,
    max_headers: usize,
    refresh_ahead: u8,
    upstream_timeout: Duration,
    fleet: Option<Arc<Fleet>>,
}

/// What an upstream answer means for the rest of the fleet.
enum FleetEffect {
    /// A READY image: share it.
    Share(SharedAnswer, SystemTime),
    /// The image is no longer what others may hold: drop it everywhere.
    Invalidate,
    /// The API refused this credential (401, 403): forget that it may read the image.
    Revoke,
    /// A 404 that dropped no copy here: the image is gone for everyone if the fleet holds
    /// it (and, per-credential, this credential could read it); forget the credential's
    /// grant.
    NotFound,
    /// Nothing to tell, and nothing anyone else could be given (too big, or changed while
    /// it was fetched): the instances waiting on this fetch fetch on their own.
    NotShareable,
    /// Nothing to tell: a failure, or an answer for this caller only.
    Nothing,
}

/// One Image.Get answer before its cache headers are set: the response and what happened.
type Answered = (Response<ProxyBody>, Outcome);

impl Proxy {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Arc<Proxy>, BoxError> {
        let on_evict = {
            let metrics = metrics.clone();
            move |cause| metrics.evicted(removal_cause_label(cause))
        };
        let fleet = match &config.redis {
            None => None,
            Some(redis) => {
                // rediss:// goes through rustls; make ring its provider before anything asks.
                let _ = rustls::crypto::ring::default_provider().install_default();
                Some(Arc::new(Fleet::new(
                    redis,
                    config.auth_mode,
                    config.ttl,
                    usize::try_from(config.max_entry_size).unwrap_or(usize::MAX),
                    metrics.l2().clone(),
                )?))
            }
        };
        let proxy = Arc::new(Proxy {
            cache: ImageCache::new(config, on_evict),
            flights: Coalescer::new(config.max_waiters_per_key, config.max_waiters),
            upstream: Upstream::new(config, metrics.clone())?,
            hasher: CredentialHasher::new_random()?,
            metrics,
            auth_mode: config.auth_mode,
            max_entry_size: usize::try_from(config.max_entry_size).unwrap_or(usize::MAX),
            upload_limits: UploadLimits {
                max: config.max_request_body,
                idle: config.request_body_timeout,
            },
            max_headers: config.max_headers,
            refresh_ahead: config.refresh_ahead,
            upstream_timeout: config.upstream_timeout,
            fleet,
        });
        if let Some(fleet) = &proxy.fleet {
            fleet.listen(Arc::downgrade(&proxy), |proxy: Arc<Proxy>, id| async move {
                proxy.dropped_by_fleet(id.as_deref()).await;
            });
            fleet.retry_unsent();
        }
        Ok(proxy)
    }

    /// Another instance invalidated `id` (`None`: everything, or messages were missed).
    async fn dropped_by_fleet(&self, id: Option<&str>) {
        let dropped = match id {
            Some(id) => u64::from(self.cache.invalidate(id).await),
            None => self.cache.purge_all().await,
        };
        self.metrics.invalidated(InvalidationReason::Fleet, dropped);
    }

    pub fn cache(&self) -> &ImageCache {
        &self.cache
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Settles the gauges that are read at scrape time.
    pub async fn refresh_gauges(&self) {
        let (entries, size) = self.cache.usage().await;
        self.metrics.set_current(
            entries,
            size,
            self.flights.inflight(),
            self.flights.waiters(),
        );
    }

    /// Answers one client request. Never fails: every problem becomes an API-shaped error.
    /// The `Outcome` of an Image.Get request is turned into its headers, its metrics and its
    /// log event here, and nowhere else.
    pub async fn handle(self: Arc<Self>, mut request: Request<Incoming>) -> Response<ProxyBody> {
        let started = Instant::now();
        // Upstream-bound requests get an ID when they are forwarded; a hit only needs one
        // when its debug event is going to be written.
        let debug = tracing::enabled!(tracing::Level::DEBUG);
        if debug {
            ensure_request_id(request.headers_mut());
        }
        let request_id = debug
            .then(|| request.headers().get(&X_REQUEST_ID).cloned())
            .flatten();
        if let Err(refusal) = admit(
            request.method(),
            request.uri(),
            request.headers(),
            self.max_headers,
        ) {
            self.metrics.rejected(refusal.rejection());
            let (status, code, message) = refusal.answer();
            return api_error(status, code, &message);
        }
        let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let route = classify(request.method(), target);
        let route_index = route_index(&route);
        let route_label = route.as_str();
        let (mut response, outcome) = match route {
            Route::ImageGet { id, head } => {
                let (response, outcome) =
                    self.image_get(request.headers(), id, head, started).await;
                (response, Some(outcome))
            }
            Route::ImageMutation { id } => {
                ensure_request_id(request.headers_mut());
                (self.forward(request, Some(id)).await, None)
            }
            Route::Passthrough => {
                ensure_request_id(request.headers_mut());
                (self.forward(request, None).await, None)
            }
        };
        let elapsed = started.elapsed();
        self.metrics.request(route_index, outcome.as_ref(), elapsed);
        if let Some(outcome) = &outcome {
            response
                .headers_mut()
                .insert(X_CACHE.clone(), outcome.result.x_cache());
            response
                .headers_mut()
                .insert(CACHE_STATUS.clone(), outcome.cache_status());
        }
        tracing::debug!(
            request_id = request_id.as_ref().map_or("", header_text),
            route = route_label,
            result = outcome.as_ref().map_or("none", |o| o.result.as_str()),
            status = response.status().as_u16(),
            elapsed_us = elapsed.as_micros() as u64,
            "request"
        );
        response
    }

    /// Answers an Image.Get. `started` is when the request arrived: the hit path reads the
    /// clock no more than that.
    async fn image_get(
        self: &Arc<Self>,
        request_headers: &HeaderMap,
        id: &str,
        head: bool,
        started: Instant,
    ) -> Answered {
        let who = self.hasher.fingerprint(request_headers);
        let forward = if self.auth_mode == AuthMode::PerCredential && who.is_none() {
            Forward::Bypass
        } else if wants_no_cache(request_headers) {
            Forward::Request
        } else {
            Forward::Miss
        };
        if forward == Forward::Miss {
            if let Lookup::Fresh(entry) = self.cache.lookup(id, who, started).await {
                if self.refresh_ahead > 0
                    && self
                        .cache
                        .claim_refresh(id, &entry, who, started, self.refresh_ahead)
                {
                    let age = entry.age(started);
                    let checked_age = entry.checked_age(who, started).unwrap_or(age);
                    self.refresh_in_background(id, request_headers, who, age, checked_age);
                }
                return hit(&entry, head, started);
            }
        }
        self.image_get_upstream(request_headers, Arc::from(id), head, who, forward, started)
            .await
    }

    /// The miss path of Image.Get: join or lead the flight for the key.
    async fn image_get_upstream(
        self: &Arc<Self>,
        request_headers: &HeaderMap,
        id: Arc<str>,
        head: bool,
        who: Option<Fingerprint>,
        forward: Forward,
        started: Instant,
    ) -> Answered {
        let deadline = started + self.upstream_timeout;
        let result = match forward {
            Forward::Miss => CacheResult::Miss,
            _ => CacheResult::Bypass,
        };
        let key = self.flight_key(&id, who);
        let headers = fill_headers(request_headers);

        let mut last_error = UpstreamError::Connect("the upstream fetch was abandoned".into());
        for round in 1..=MAX_FLIGHT_ROUNDS {
            let last_round = round == MAX_FLIGHT_ROUNDS;
            let mut outcome = Outcome::forwarded(result, forward);
            let (subscription, mut oversized) = match self.flights.join(key.clone()) {
                Err(over) => {
                    self.metrics.rejected(Rejection::Waiters);
                    return (overloaded_response(over), outcome);
                }
                Ok(Joined::Waiter(subscription)) => (subscription, None),
                Ok(Joined::Leader(publisher, subscription)) => {
                    if forward == Forward::Miss {
                        if let Lookup::Fresh(entry) =
                            self.cache.lookup(&id, who, Instant::now()).await
                        {
                            publisher.publish(FlightResult::Cached);
                            return hit(&entry, head, Instant::now());
                        }
                    }
                    let (hand_over, oversized) = oneshot::channel();
                    // Its own task: the fetch completes for the others even if this client goes.
                    let proxy = self.clone();
                    let (id, headers) = (id.clone(), headers.clone());
                    let fleet_read = (forward == Forward::Miss).then_some(Accept::Fresh);
                    tokio::spawn(async move {
                        let started = Instant::now();
                        let result = proxy
                            .fetch(&id, &headers, who, fleet_read, deadline, hand_over)
                            .await;
                        log_fetch(&result, &headers, started.elapsed(), publisher.waiters());
                        publisher.publish(result)
                    });
                    (subscription, Some(oversized))
                }
            };
            outcome.coalesced = subscription.is_waiter();
            let shared = match subscription.wait(deadline).await {
                Wait::Done(shared) => shared,
                Wait::Abandoned => continue,
                Wait::TimedOut => {
                    let err = UpstreamError::Timeout(self.upstream_timeout);
                    return self.failed(&id, who, err, outcome, head).await;
                }
            };
            match &*shared {
                FlightResult::Cached => {
                    // A caller that asked for a fresh answer does not take the cached one.
                    if forward == Forward::Request && !last_round {
                        continue;
                    }
                    let now = Instant::now();
                    match self.cache.lookup(&id, who, now).await {
                        Lookup::Fresh(entry) => return hit(&entry, head, now),
                        // Not this caller's to read, or gone again already.
                        _ if last_round => {
                            return self
                                .fetch_alone(&id, headers, outcome, deadline, head)
                                .await
                        }
                        _ => continue,
                    }
                }
                FlightResult::Answer(answer) => {
                    if !self.may_share(answer, who) {
                        if last_round {
                            return self
                                .fetch_alone(&id, headers, outcome, deadline, head)
                                .await;
                        }
                        continue;
                    }
                    if answer.status.is_server_error() && forward != Forward::Request {
                        if let Some(stale) = self.stale(&id, who, Some(answer.status), head).await {
                            return stale;
                        }
                    }
                    outcome.upstream_status = Some(answer.status.as_u16());
                    outcome.stored = answer.stored;
                    return (answer_response(answer, outcome.coalesced, head), outcome);
                }
                FlightResult::Failed(err) => {
                    if outcome.coalesced && !last_round {
                        if forward != Forward::Request {
                            if let Some(stale) = self.stale(&id, who, None, head).await {
                                return stale;
                            }
                        }
                        last_error = err.clone();
                        continue;
                    }
                    return self.failed(&id, who, err.clone(), outcome, head).await;
                }
                FlightResult::TooLarge => {
                    return match oversized.take() {
                        Some(receiver) => match receiver.await {
                            Ok(big) => (self.oversized_response(big, head), outcome),
                            Err(_) => {
                                let err =
                                    UpstreamError::Body("the oversized answer was lost".into());
                                (error_response(&err), outcome)
                            }
                        },
                        None => {
                            self.fetch_alone(&id, headers, outcome, deadline, head)
                                .await
                        }
                    };
                }
            }
        }
        let outcome = Outcome::forwarded(result, forward);
        self.failed(&id, who, last_error, outcome, head).await
    }

    /// Starts the background fetch that a hit claimed for a hot entry near the end of its
    /// freshness, unless a fetch is already running for the key: the entry is renewed (or
    /// dropped, if the image is no longer READY) before it can expire, so a hot image never
    /// misses.
    fn refresh_in_background(
        self: &Arc<Self>,
        id: &str,
        headers: &HeaderMap,
        who: Option<Fingerprint>,
        age: Duration,
        checked_age: Duration,
    ) {
        let id: Arc<str> = Arc::from(id);
        let key = self.flight_key(&id, who);
        let Ok(Joined::Leader(publisher, _)) = self.flights.join(key) else {
            return;
        };
        self.metrics.refresh_started();
        let proxy = self.clone();
        let headers = fill_headers(headers);
        let deadline = self.upstream.deadline();
        tokio::spawn(async move {
            // Nobody streams an oversized refresh: dropping the receiver drops the body.
            let (hand_over, _) = oneshot::channel();
            let started = Instant::now();
            // Another instance may have refreshed it already: take theirs if it is newer (in
            // per-credential mode, with a newer check of this caller: a newer value fetched
            // for someone else does not renew the caller's).
            let fleet_read = Some(Accept::Newer {
                value: age,
                check: checked_age,
            });
            let result = proxy
                .fetch(&id, &headers, who, fleet_read, deadline, hand_over)
                .await;
            log_fetch(&result, &headers, started.elapsed(), publisher.waiters());
            publisher.publish(result);
        });
    }

    fn flight_key(&self, id: &Arc<str>, who: Option<Fingerprint>) -> FlightKey {
        FlightKey {
            id: id.clone(),
            who: match self.auth_mode {
                AuthMode::PerCredential => who,
                AuthMode::Shared => None,
            },
        }
    }

    /// Whether `who` may be given a flight's answer. In shared mode a 200 is everyone's, and
    /// so is an outage (5xx, 429); any other status belongs to the credential it was given to.
    fn may_share(&self, answer: &Answer, who: Option<Fingerprint>) -> bool {
        self.auth_mode == AuthMode::PerCredential
            || answer.fetched_by == who
            || answer.status == StatusCode::OK
            || answer.status == StatusCode::TOO_MANY_REQUESTS
            || answer.status.is_server_error()
    }

    /// The leader's fetch: from the fleet tier if another instance has (or is getting) the
    /// image and `fleet_read` allows it, else one upstream GET, its effect on the cache and
    /// the fleet, and the result every member of the flight is answered from.
    async fn fetch(
        &self,
        id: &str,
        headers: &HeaderMap,
        who: Option<Fingerprint>,
        fleet_read: Option<Accept>,
        deadline: Instant,
        hand_over: oneshot::Sender<Oversized>,
    ) -> FlightResult {
        let generation = self.cache.generation(id);
        let Some(fleet) = &self.fleet else {
            return self
                .fetch_upstream(id, headers, who, deadline, hand_over, generation)
                .await
                .0;
        };
        // `None`: this caller's reads cannot be shared (per-credential without a grant key).
        let reader = fleet.reader(id, headers);
        let mut ticket = Ticket::default();
        match (&reader, fleet_read) {
            (Some(reader), Some(accept)) => {
                // Half of the time left at most, so that a fetch of our own still fits after.
                let now = Instant::now();
                let wait_until = now + deadline.saturating_duration_since(now) / 2;
                match fleet.claim(id, reader.as_deref(), accept, wait_until).await {
                    Claim::Found(shared) => {
                        if self.store_shared(id, shared, who, generation).await {
                            return FlightResult::Cached;
                        }
                        // Unusable (or invalidated meanwhile): fetch, and replace it.
                        ticket = fleet.ticket(id).await;
                    }
                    Claim::Fetch(fetch) => ticket = fetch,
                }
            }
            // A no-cache fetch does not read the fleet, but may refresh it.
            (Some(_), None) => ticket = fleet.ticket(id).await,
            (None, _) => {}
        }
        // The fetch starts now: an invalidation during the wait for the fleet is behind it.
        let generation = self.cache.generation(id);
        let (result, effect) = self
            .fetch_upstream(id, headers, who, deadline, hand_over, generation)
            .await;
        // Redis is not waited for: the flight is answered now, the fleet hears a moment later.
        let fleet = fleet.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let fill = match (effect, reader) {
                (FleetEffect::Share(answer, produced), Some(reader)) => {
                    let reader = reader.as_deref();
                    return fleet.publish(&id, reader, &answer, produced, ticket).await;
                }
                (FleetEffect::Invalidate, _) => {
                    fleet.invalidate(&id).await;
                    Fill::NotShareable
                }
                (FleetEffect::NotFound, Some(reader)) => {
                    fleet.not_found(&id, reader.as_deref()).await;
                    Fill::NotShareable
                }
                // A per-credential lease is this token's alone: its waiters would be refused
                // too, so they need not queue for it.
                (FleetEffect::Revoke, Some(Some(record))) => {
                    fleet.revoke(&id, &record).await;
                    Fill::NotShareable
                }
                (FleetEffect::NotShareable, _) => Fill::NotShareable,
                _ => Fill::Failed,
            };
            fleet.release(ticket, &id, fill).await;
        });
        result
    }

    /// Takes another instance's answer into the local cache, for `who`; whether `who` can
    /// now be served it (not if it was invalidated meanwhile).
    async fn store_shared(
        &self,
        id: &str,
        shared: SharedAnswer,
        who: Option<Fingerprint>,
        generation: Generation,
    ) -> bool {
        // (The fleet let through only a READY image of this ID within --max-entry-size.)
        let now = Instant::now();
        let entry = NewEntry {
            kind: EntryKind::Ready,
            status: shared.status,
            headers: replayable(&shared.headers),
            body: shared.body,
            received_at: now.checked_sub(shared.age).unwrap_or(now),
        };
        let granted_at = now.checked_sub(shared.granted_age).unwrap_or(now);
        self.cache
            .store_granted(id, entry, who, granted_at, generation)
            .await
            && matches!(self.cache.lookup(id, who, now).await, Lookup::Fresh(_))
    }

    /// One upstream GET for the image and its effect on the local cache; what it means for
    /// the fleet is returned for the caller to tell.
    async fn fetch_upstream(
        &self,
        id: &str,
        headers: &HeaderMap,
        who: Option<Fingerprint>,
        deadline: Instant,
        hand_over: oneshot::Sender<Oversized>,
        generation: Generation,
    ) -> (FlightResult, FleetEffect) {
        let failed = |err| (FlightResult::Failed(err), FleetEffect::Nothing);
        let request = match self.image_request(id, headers.clone()) {
            Ok(request) => request,
            Err(err) => return failed(err),
        };
        let (response, slot) = match self
            .upstream
            .send(request, deadline, "image_get", Purpose::Fill)
            .await
        {
            Ok(exchange) => (exchange.response, exchange.slot),
            Err(err) => return failed(err),
        };
        let (mut head, body) = response.into_parts();
        strip_hop_by_hop(&mut head.headers);
        let received_at = Instant::now();
        let body = match self
            .upstream
            .read_limited(body, self.max_entry_size, deadline)
            .await
        {
            Err(err) => return failed(err),
            Ok(LimitedBody::TooLarge { prefix, rest }) => {
                // If the leader's client has gone, dropping the body closes the exchange.
                let _ = hand_over.send(Oversized {
                    slot,
                    head,
                    prefix,
                    rest,
                    deadline,
                });
                return (FlightResult::TooLarge, FleetEffect::NotShareable);
            }
            Ok(LimitedBody::Complete(body)) => body,
        };
        let (stored, effect) = self
            .apply_to_cache(id, &head, &body, who, received_at, generation)
            .await;
        let answer = Answer {
            status: head.status,
            headers: head.headers,
            body,
            fetched_by: who,
            stored,
        };
        (FlightResult::Answer(answer), effect)
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

    /// What an upstream answer does to the cache: whether it was stored, and what the
    /// fleet should hear of it.
    async fn apply_to_cache(
        &self,
        id: &str,
        head: &response::Parts,
        body: &Bytes,
        who: Option<Fingerprint>,
        received_at: Instant,
        mut generation: Generation,
    ) -> (bool, FleetEffect) {
        let mut not_found_effect = FleetEffect::Nothing;
        let kind = match head.status {
            StatusCode::OK => match image_state(body) {
                Some(state) if state.id.as_deref() == Some(id) => {
                    if state.status.as_deref() == Some("READY") {
                        EntryKind::Ready
                    } else {
                        // The caller was shown the image, so it is theirs to report on.
                        let reason = InvalidationReason::for_status(state.status.as_deref());
                        self.invalidate_for(id, who, reason).await;
                        return (false, FleetEffect::Invalidate);
                    }
                }
                // Not JSON, or not the image asked for: answered, never stored, and no
                // reason to believe the cached image changed.
                _ => return (false, FleetEffect::Nothing),
            },
            StatusCode::NOT_FOUND => {
                // A 404 may only mean "not for you": it drops the fleet's copy only when it
                // dropped a copy this caller could read (here, or by its grant in Redis; in
                // shared mode every caller may read every image).
                not_found_effect = FleetEffect::NotFound;
                if self
                    .invalidate_for(id, who, InvalidationReason::NotFound)
                    .await
                {
                    // Our own invalidation must not stop us storing the 404 that caused it.
                    generation = self.cache.generation(id);
                    not_found_effect = FleetEffect::Invalidate;
                }
                if !self.cache.stores_not_found() {
                    return (false, not_found_effect);
                }
                EntryKind::NotFound
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                self.refused(id, who, head.status).await;
                return (false, FleetEffect::Revoke);
            }
            _ => return (false, FleetEffect::Nothing),
        };
        // Without a credential an entry could never be served in per-credential mode.
        if self.auth_mode == AuthMode::PerCredential && who.is_none() {
            return (false, not_found_effect);
        }
        let headers = detached(&replayable(&head.headers));
        let shared = (kind == EntryKind::Ready).then(|| SharedAnswer {
            status: head.status,
            headers: headers.clone(),
            body: body.clone(),
            age: received_at.elapsed(),
            granted_age: received_at.elapsed(),
        });
        let entry = NewEntry {
            kind,
            status: head.status,
            headers,
            body: body.clone(),
            received_at,
        };
        let stored = self.cache.store(id, entry, who, generation).await;
        let effect = match shared {
            // Not stored here means invalidated while it was fetched: not for others either.
            Some(answer) if stored => {
                let produced = SystemTime::now()
                    .checked_sub(answer.age)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                FleetEffect::Share(answer, produced)
            }
            Some(_) => FleetEffect::NotShareable,
            // A stored 404: what it did to the fleet was decided above.
            None => not_found_effect,
        };
        (stored, effect)
    }

    /// The API refused `who` for `id` (401, 403): its grant of `id` ends at once, and a 401
    /// (the credential itself is unknown or expired) ends every grant it holds.
    async fn refused(&self, id: &str, who: Option<Fingerprint>, status: StatusCode) {
        let Some(who) = who else { return };
        if status == StatusCode::UNAUTHORIZED {
            self.cache.refuse_credential(who);
        }
        self.cache.revoke(id, who).await;
    }

    async fn invalidate_for(
        &self,
        id: &str,
        who: Option<Fingerprint>,
        reason: InvalidationReason,
    ) -> bool {
        let dropped = self.cache.invalidate_for(id, who).await;
        if dropped {
            self.metrics.invalidated(reason, 1);
            tracing::info!(reason = reason.as_str(), "image invalidated");
        }
        dropped
    }

    /// Drops an image on the proxy's own authority (a mutation or a purge), here and, with
    /// the fleet tier, everywhere.
    pub async fn invalidate(&self, id: &str, reason: InvalidationReason) -> bool {
        let dropped = self.cache.invalidate(id).await;
        if dropped {
            self.metrics.invalidated(reason, 1);
        }
        if let Some(fleet) = &self.fleet {
            fleet.invalidate(id).await;
        }
        dropped
    }

    /// Drops every entry (an admin purge), here and, with the fleet tier, everywhere;
    /// returns how many there were here.
    pub async fn purge_all(&self) -> u64 {
        if let Some(fleet) = &self.fleet {
            fleet.invalidate_all().await;
        }
        let purged = self.cache.purge_all().await;
        self.metrics.invalidated(InvalidationReason::Purge, purged);
        purged
    }

    /// Serves the stale entry if the upstream failed and this caller may have it.
    async fn stale(
        &self,
        id: &str,
        who: Option<Fingerprint>,
        upstream_status: Option<StatusCode>,
        head: bool,
    ) -> Option<Answered> {
        match self.cache.lookup(id, who, Instant::now()).await {
            Lookup::Stale(entry) => {
                let now = Instant::now();
                let mut outcome = Outcome::forwarded(CacheResult::Stale, Forward::Stale);
                outcome.upstream_status = upstream_status.map(|s| s.as_u16());
                outcome.ttl = Some(entry.ttl_secs(now));
                Some((entry_response(&entry, head, now), outcome))
            }
            // Someone refreshed it meanwhile.
            Lookup::Fresh(entry) => Some(hit(&entry, head, Instant::now())),
            Lookup::Miss => None,
        }
    }

    async fn failed(
        &self,
        id: &str,
        who: Option<Fingerprint>,
        err: UpstreamError,
        outcome: Outcome,
        head: bool,
    ) -> Answered {
        // A client that asked for a fresh answer gets the failure, not a cached copy.
        if outcome.forward != Some(Forward::Request) {
            if let Some(stale) = self.stale(id, who, None, head).await {
                return stale;
            }
        }
        tracing::info!(route = "image_get", error = %err, kind = err.kind(), "answered with an error");
        (error_response(&err), outcome)
    }

    /// Fetches by itself, streamed and uncached: for a request whose flight's answer was too
    /// big to share, or belonged to another credential.
    async fn fetch_alone(
        &self,
        id: &str,
        headers: HeaderMap,
        mut outcome: Outcome,
        deadline: Instant,
        head: bool,
    ) -> Answered {
        let request = match self.image_request(id, headers) {
            Ok(request) => request,
            Err(err) => return (error_response(&err), outcome),
        };
        match self
            .upstream
            .send(request, deadline, "image_get", Purpose::Fill)
            .await
        {
            Err(err) => (error_response(&err), outcome),
            Ok(exchange) => {
                let (mut head_parts, rest) = exchange.response.into_parts();
                strip_hop_by_hop(&mut head_parts.headers);
                outcome.upstream_status = Some(head_parts.status.as_u16());
                let big = Oversized {
                    slot: exchange.slot,
                    head: head_parts,
                    prefix: Bytes::new(),
                    rest,
                    deadline,
                };
                (self.oversized_response(big, head), outcome)
            }
        }
    }

    fn oversized_response(&self, big: Oversized, head: bool) -> Response<ProxyBody> {
        let mut parts = big.head;
        parts.version = Version::default();
        let body = if head {
            ProxyBody::empty()
        } else {
            self.upstream
                .stream(big.prefix, big.rest, big.deadline, big.slot)
        };
        Response::from_parts(parts, body)
    }

    /// The answer to a request whose body the proxy would not pass on.
    fn upload_refused(&self, failure: UploadFailure) -> Response<ProxyBody> {
        match failure {
            UploadFailure::TooLarge => {
                self.metrics.rejected(Rejection::RequestBody);
                api_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    8,
                    &format!(
                        "the request body is larger than the proxy's limit of {} bytes",
                        self.upload_limits.max
                    ),
                )
            }
            UploadFailure::Stalled => {
                self.metrics.rejected(Rejection::RequestBodyTimeout);
                api_error(
                    StatusCode::REQUEST_TIMEOUT,
                    4,
                    &format!(
                        "the request body paused for longer than {}",
                        humantime::format_duration(self.upload_limits.idle)
                    ),
                )
            }
            UploadFailure::Broken => {
                api_error(StatusCode::BAD_REQUEST, 3, "the request body broke off")
            }
        }
    }

    /// Passes a request through, streamed both ways. A 401 ends every grant the caller's
    /// credential holds; a mutation's answer decides what happens to its image (see
    /// [`MutationEffect`]).
    async fn forward(
        &self,
        request: Request<Incoming>,
        mutated: Option<String>,
    ) -> Response<ProxyBody> {
        let deadline = self.upstream.deadline();
        let route = if mutated.is_some() {
            "image_mutation"
        } else {
            "passthrough"
        };
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
        let request_id = request_id_of(&parts.headers).to_string();
        if content_length(&parts.headers).is_some_and(|len| len > self.upload_limits.max) {
            return self.upload_refused(UploadFailure::TooLarge);
        }
        let who = self.hasher.fingerprint(&parts.headers);
        let mutation = mutated.map(|id| {
            let reader = self
                .fleet
                .as_ref()
                .and_then(|f| f.reader(&id, &parts.headers));
            (id, reader)
        });
        // A small body is read whole before anything goes upstream, so a client that
        // stalls holds no upstream slot; a big one streams under the same limits.
        let body = match receive(body, self.upload_limits).await {
            Ok(Received::Whole(bytes)) => Full::new(bytes).map_err(|never| match never {}).boxed(),
            Ok(Received::Streaming(stream)) => stream.map_err(BoxError::from).boxed(),
            Err(failure) => return self.upload_refused(failure),
        };
        let mut upstream_request = Request::new(body);
        *upstream_request.method_mut() = parts.method;
        *upstream_request.uri_mut() = uri;
        *upstream_request.headers_mut() = parts.headers;
        let started = Instant::now();
        let result = self
            .upstream
            .send(upstream_request, deadline, route, Purpose::Forward)
            .await;
        if let (Ok(exchange), Some(who)) = (&result, who) {
            if exchange.response.status() == StatusCode::UNAUTHORIZED {
                self.cache.refuse_credential(who);
            }
        }
        if let Some((id, reader)) = mutation {
            let effect = MutationEffect::of(result.as_ref().map(|e| e.response.status()));
            self.mutation_answered(&id, who, reader, effect).await;
        }
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Err(UpstreamError::Upload(failure)) => self.upload_refused(failure),
            Err(err) => {
                tracing::info!(route, request_id, error = %err, kind = err.kind(), elapsed_ms, "upstream request failed");
                error_response(&err)
            }
            Ok(exchange) => {
                let (mut head, body) = exchange.response.into_parts();
                tracing::info!(
                    route,
                    request_id,
                    status = head.status.as_u16(),
                    elapsed_ms,
                    "upstream request"
                );
                strip_hop_by_hop(&mut head.headers);
                head.version = Version::default();
                let body = self
                    .upstream
                    .stream(Bytes::new(), body, deadline, exchange.slot);
                Response::from_parts(head, body)
            }
        }
    }

    /// What a mutation's answer does to its image, here and in the fleet. Only an answer
    /// that the change may have been made drops anything: a refusal drops nothing (anyone
    /// can send a DELETE), and a 404 follows the Image.Get rule.
    async fn mutation_answered(
        &self,
        id: &str,
        who: Option<Fingerprint>,
        reader: Option<Option<String>>,
        effect: MutationEffect,
    ) {
        match effect {
            MutationEffect::NotApplied => {}
            MutationEffect::Applied => {
                self.invalidate(id, InvalidationReason::Mutation).await;
            }
            MutationEffect::Gone => {
                if self
                    .invalidate_for(id, who, InvalidationReason::NotFound)
                    .await
                {
                    if let Some(fleet) = &self.fleet {
                        fleet.invalidate(id).await;
                    }
                } else if let (Some(fleet), Some(reader)) = (&self.fleet, reader) {
                    fleet.not_found(id, reader.as_deref()).await;
                }
            }
            MutationEffect::Unknown => {
                let dropped = self.cache.invalidate(id).await;
                self.metrics
                    .invalidated(InvalidationReason::Mutation, u64::from(dropped));
                if let Some(fleet) = &self.fleet {
                    fleet.invalidate_if_shared(id).await;
                }
            }
        }
    }
}

/// What the answer to a mutation (`PATCH`, `DELETE`, `POST` on an image) says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MutationEffect {
    /// A 2xx: the API took the change.
    Applied,
    /// A 404: gone, or not the caller's to see.
    Gone,
    /// The API proved it did not take it (a 4xx other than 404, a 1xx or 3xx), or the
    /// request never reached it (no connection, no slot, a body over the limit).
    NotApplied,
    /// No answer, or a 5xx: the change may or may not have been made.
    Unknown,
}

impl MutationEffect {
    fn of(answer: Result<StatusCode, &UpstreamError>) -> MutationEffect {
        match answer {
            Ok(status) if status.is_success() => MutationEffect::Applied,
            Ok(StatusCode::NOT_FOUND) => MutationEffect::Gone,
            Ok(status) if status.is_server_error() => MutationEffect::Unknown,
            Ok(_) => MutationEffect::NotApplied,
            Err(
                UpstreamError::Connect(_)
                | UpstreamError::Tls(_)
                | UpstreamError::Busy
                | UpstreamError::Upload(_),
            ) => MutationEffect::NotApplied,
            Err(UpstreamError::Timeout(_) | UpstreamError::Body(_)) => MutationEffect::Unknown,
        }
    }
}

/// The one info event per Image.Get upstream fetch.
fn log_fetch(result: &FlightResult, headers: &HeaderMap, elapsed: Duration, waiters: usize) {
    let request_id = request_id_of(headers);
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    let coalesced = waiters > 0;
    match result {
        FlightResult::Answer(answer) => tracing::info!(
            route = "image_get",
            request_id,
            status = answer.status.as_u16(),
            stored = answer.stored,
            coalesced,
            waiters,
            elapsed_ms,
            "upstream fetch"
        ),
        FlightResult::Failed(err) => tracing::info!(
            route = "image_get",
            request_id,
            error = %err,
            kind = err.kind(),
            coalesced,
            waiters,
            elapsed_ms,
            "upstream fetch failed"
        ),
        FlightResult::TooLarge => tracing::info!(
            route = "image_get",
            request_id,
            coalesced,
            waiters,
            elapsed_ms,
            "upstream answer too large to cache; streamed through"
        ),
        FlightResult::Cached => {}
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn route_index(route: &Route<'_>) -> usize {
    match route {
        Route::ImageGet { .. } => 0,
        Route::ImageMutation { .. } => 1,
        Route::Passthrough => 2,
    }
}

/// The request's `x-request-id`, for logs ("" if it has none or it is not text).
fn request_id_of(headers: &HeaderMap) -> &str {
    headers.get(&X_REQUEST_ID).map_or("", header_text)
}

fn header_text(value: &HeaderValue) -> &str {
    value.to_str().unwrap_or("")
}

/// Gives the request an `x-request-id` if it has none, so that the upstream's logs and ours
/// can be joined.
fn ensure_request_id(headers: &mut HeaderMap) {
    if !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID.clone(), new_request_id());
    }
}

/// A random UUID (version 4).
fn new_request_id() -> HeaderValue {
    let bits: u128 = rand::random();
    let bits = (bits & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    let id = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The headers a fill sends upstream: an allow-list, plus a request ID.
fn fill_headers(headers: &HeaderMap) -> HeaderMap {
    let mut fill = HeaderMap::with_capacity(FILL_HEADERS.len() + 1);
    for name in FILL_HEADERS {
        for value in headers.get_all(*name) {
            fill.append(*name, value.clone());
        }
    }
    ensure_request_id(&mut fill);
    fill
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

/// Whether `body` is the JSON of image `id` in status READY: the only answer that is stored.
pub(crate) fn is_ready_image(id: &str, body: &[u8]) -> bool {
    image_state(body).is_some_and(|state| {
        state.id.as_deref() == Some(id) && state.status.as_deref() == Some("READY")
    })
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

/// The headers of an answer (from the upstream, or another instance through Redis) that may
/// be replayed to another caller: [`REPLAYED_HEADERS`], and nothing else.
fn replayable(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in REPLAYED_HEADERS {
        for value in headers.get_all(&name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// A copy of `headers` that owns its bytes. hyper parses header values as slices of the
/// connection's read buffer, so keeping them in a long-lived entry would pin that whole
/// buffer (kilobytes) for each few-byte header.
fn detached(headers: &HeaderMap) -> HeaderMap {
    let mut owned = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name =
            HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        let value = match value.as_bytes() {
            b"application/json" => HeaderValue::from_static("application/json"),
            b"application/json; charset=utf-8" => {
                HeaderValue::from_static("application/json; charset=utf-8")
            }
            bytes => HeaderValue::from_bytes(bytes).unwrap_or_else(|_| value.clone()),
        };
        owned.append(name, value);
    }
    owned
}

fn hit(entry: &crate::cache::Entry, head: bool, now: Instant) -> Answered {
    (
        entry_response(entry, head, now),
        Outcome::hit(entry.ttl_secs(now)),
    )
}

fn entry_response(entry: &crate::cache::Entry, head: bool, now: Instant) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = entry.status;
    let headers = response.headers_mut();
    headers.reserve(entry.headers.len() + 4);
    for (name, value) in entry.headers.iter() {
        headers.append(name, value.clone());
    }
    headers.insert(AGE, number_value(entry.age(now).as_secs()));
    headers.insert(CONTENT_LENGTH, number_value(entry.body.len() as u64));
    if !head {
        *response.body_mut() = ProxyBody::full(entry.body.clone());
    }
    response
}

/// A header value for a number; the small ones are made once, so a hit does not format and
/// allocate its `Age` or (for bodies under 4 KiB) its `Content-Length`.
fn number_value(number: u64) -> HeaderValue {
    static SMALL: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let small = SMALL.get_or_init(|| (0..PRECOMPUTED_NUMBERS).map(HeaderValue::from).collect());
    usize::try_from(number)
        .ok()
        .and_then(|n| small.get(n))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(number))
}

fn answer_response(answer: &Answer, coalesced: bool, head: bool) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = answer.status;
    // A waiter did not make this exchange: it gets no other request's IDs or cookies.
    *response.headers_mut() = if coalesced {
        replayable(&answer.headers)
    } else {
        answer.headers.clone()
    };
    with_body(response, answer.body.clone(), head)
}

/// Puts `body` in the response, or for HEAD no body but the `Content-Length` a GET would
/// have.
fn with_body(mut response: Response<ProxyBody>, body: Bytes, head: bool) -> Response<ProxyBody> {
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    if !head {
        *response.body_mut() = ProxyBody::full(body);
    }
    response
}

/// The API's error body, its fields in the API's order.
#[derive(serde::Serialize)]
struct ApiErrorBody<'a> {
    code: u32,
    message: &'a str,
    details: [(); 0],
}

/// An error made by the proxy itself, in the API's own shape.
pub fn api_error(status: StatusCode, code: u32, message: &str) -> Response<ProxyBody> {
    let body = serde_json::to_vec(&ApiErrorBody {
        code,
        message,
        details: [],
    })
    .unwrap_or_default();
    let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(err: &UpstreamError) -> Response<ProxyBody> {
    let (status, code) = err.status_and_code();
    let mut response = api_error(status, code, &err.to_string());
    if matches!(err, UpstreamError::Busy) {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn overloaded_response(over: Overloaded) -> Response<ProxyBody> {
    let message = match over {
        Overloaded::PerKey => "too many requests are waiting for this image; retry shortly",
        Overloaded::Total => "too many requests are waiting for the upstream; retry shortly",
    };
    let mut response = api_error(StatusCode::SERVICE_UNAVAILABLE, 14, message);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
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
    fn errors_have_the_apis_shape_in_its_order() {
        let body = serde_json::to_string(&ApiErrorBody {
            code: 14,
            message: "a \"quoted\" message",
            details: [],
        })
        .unwrap();
        assert_eq!(
            body,
            r#"{"code":14,"message":"a \"quoted\" message","details":[]}"#
        );
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
    fn only_representation_headers_are_replayed() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("r"));
        h.insert("date", HeaderValue::from_static("d"));
        h.insert("x-anything-new", HeaderValue::from_static("n"));
        h.insert("connection", HeaderValue::from_static("close"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.append("etag", HeaderValue::from_static("\"a\""));
        let kept = replayable(&h);
        assert_eq!(kept.len(), 2);
        assert!(kept.contains_key("content-type") && kept.contains_key("etag"));
    }
}
