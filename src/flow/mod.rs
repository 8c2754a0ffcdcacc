//! The Image.Get flow, the same for every protocol: who may read (auth), the local cache,
//! one flight per key (coalesce), the fleet tier, and the upstream; then the [`Outcome`]
//! that the front-end turns into its protocol's headers, and into metrics and logs.
//!
//! A hit is answered in [`Flow::hit`] from the cache's table of recent lookups alone, without
//! waiting; [`Flow::get`] answers the rest, from moka or else a flight. A miss joins or leads
//! the flight for its key ([`flight`]): the leader's fetch runs in a task of its own, asks the
//! fleet first, else the upstream, and applies what the front-end judged of the answer to the
//! cache and the fleet ([`fill`]). When nothing can be fetched, a stale copy or an error
//! answers ([`fallback`]). Invalidations, purges, refusals and mutations act on the cache and
//! the fleet together ([`invalidate`]).
//!
//! The front-ends tell the flow what their protocol needs through [`FrontEnd`]: which
//! protocol it is, the upstream request of a fill, and a [`Verdict`] on each answer.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use http::{response, HeaderMap, Request};
use tokio::time::Instant;

use crate::auth::{CredentialHasher, Fingerprint};
use crate::cache::{removal_cause_label, ImageCache, Lookup, Moment};
use crate::coalesce::Coalescer;
use crate::config::{AuthMode, Config};
use crate::error::BoxError;
use crate::fleet::{Fleet, Reader, SharedAnswer};
use crate::http::headers::{replayable, wants_no_cache};
use crate::image::Protocol;
use crate::metrics::Metrics;
use crate::outcome::{Forward, Outcome};
use crate::tunable::TunableCount;
use crate::upstream::{RequestBody, Upstream, UpstreamError};

mod fallback;
mod fill;
mod flight;
mod invalidate;
mod verdict;

pub use invalidate::MutationEffect;
pub use verdict::{Answer, Fetched, Served, Verdict};

use flight::FlightKey;

/// What a front-end tells the flow about its protocol.
pub trait FrontEnd: Send + Sync + 'static {
    /// The protocol: an image has one entry, one flight and one shared value per protocol.
    fn protocol(&self) -> Protocol;

    /// What of the client's request headers a fill sends upstream: an allow-list (the
    /// answer is shared and may be stored), plus a request ID.
    fn fill_headers(&self, headers: &HeaderMap) -> HeaderMap;

    /// The upstream request that fetches image `id`, with `headers` (already the fill's
    /// allow-list, request ID included).
    fn fill_request(
        &self,
        upstream: &Upstream,
        id: &str,
        headers: HeaderMap,
    ) -> Result<Request<RequestBody>, UpstreamError>;

    /// What an upstream answer to a fetch of `id` means: its head, its whole body and its
    /// trailers.
    fn judge(
        &self,
        id: &str,
        head: &response::Parts,
        body: &[u8],
        trailers: Option<&HeaderMap>,
    ) -> Verdict;

    /// Whether a value another instance shared is a READY image of `id` (Redis is not ours
    /// alone: a value is checked before it is served).
    fn is_ready(&self, id: &str, answer: &SharedAnswer) -> bool;

    /// The headers an entry made of this answer keeps, to be replayed with its body: those
    /// that describe the body, and (gRPC) the status of an error, which is metadata too.
    fn kept_headers(&self, head: &response::Parts, trailers: Option<&HeaderMap>) -> HeaderMap {
        let _ = trailers;
        replayable(&head.headers)
    }
}

/// One Image.Get, as a front-end hands it to the flow.
pub struct ImageGet<'a> {
    pub front: &'a Arc<dyn FrontEnd>,
    pub id: &'a str,
    /// The client's request headers.
    pub headers: &'a HeaderMap,
    /// When the request arrived: the hit path reads the clock no more than that.
    pub started: Instant,
    /// The caller's own deadline (gRPC's `grpc-timeout`), if it has one sooner than
    /// `--upstream-timeout`: it waits no longer, though a fetch it leads goes on for the
    /// others.
    pub deadline: Option<Instant>,
}

/// What the flow answered, and what happened: the front-end renders the first and hands
/// the second to the headers, the metrics and the log.
pub struct Reply {
    pub served: Served,
    pub outcome: Outcome,
}

/// The shared state of the Image.Get flow.
pub struct Flow {
    cache: ImageCache,
    flights: Arc<Coalescer<FlightKey, Fetched>>,
    upstream: Arc<Upstream>,
    hasher: CredentialHasher,
    metrics: Arc<Metrics>,
    fleet: Option<Arc<Fleet>>,
    auth_mode: AuthMode,
    max_entry_size: TunableCount,
    /// `--refresh-ahead`, in percent of the TTL.
    refresh_ahead: AtomicU8,
}

impl Flow {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Arc<Flow>, BoxError> {
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
                    metrics.l2().clone(),
                )?))
            }
        };
        let flow = Arc::new(Flow {
            cache: ImageCache::new(config, on_evict),
            flights: Coalescer::new(config.max_waiters_per_key, config.max_waiters),
            upstream: Arc::new(Upstream::new(config, metrics.clone())?),
            hasher: CredentialHasher::new_random()?,
            metrics,
            fleet,
            auth_mode: config.auth_mode,
            max_entry_size: TunableCount::new(config.max_entry_size),
            refresh_ahead: AtomicU8::new(config.refresh_ahead),
        });
        if let Some(fleet) = &flow.fleet {
            fleet.listen(Arc::downgrade(&flow), |flow: Arc<Flow>, id| async move {
                flow.dropped_by_fleet(id.as_deref()).await;
            });
            fleet.retry_unsent();
        }
        Ok(flow)
    }

    /// Takes the settings of a reloaded configuration that the flow reads per request:
    /// freshness, refresh-ahead, the largest entry, waiter limits and the upstream's timeout
    /// and retries. Returns what cannot take effect in full without a restart.
    pub fn retune(&self, config: &Config) -> Vec<String> {
        self.max_entry_size.set(config.max_entry_size);
        self.refresh_ahead
            .store(config.refresh_ahead, Ordering::Relaxed);
        self.flights
            .set_limits(config.max_waiters_per_key, config.max_waiters);
        self.upstream.retune(config);
        if let Some(fleet) = &self.fleet {
            fleet.retune(config.ttl);
        }
        self.cache.retune(config).into_iter().collect()
    }

    /// `--max-entry-size`.
    fn max_entry_size(&self) -> usize {
        self.max_entry_size.get_usize()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The upstream client, for front-ends passing requests through.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// The keyed fingerprint of a request's credential.
    pub fn fingerprint(&self, headers: &HeaderMap) -> Option<Fingerprint> {
        self.hasher.fingerprint(headers)
    }

    /// Who the caller is to the fleet for image `id` (`None`: no fleet, or its reads
    /// cannot be shared).
    pub fn fleet_reader(&self, id: &str, headers: &HeaderMap) -> Option<Reader> {
        self.fleet.as_ref().and_then(|f| f.reader(id, headers))
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

    /// Answers an Image.Get from the table of recent lookups, without waiting, if this
    /// caller may be served a fresh entry it holds: the hit path. `None`: ask
    /// [`Flow::get`].
    pub fn hit(self: &Arc<Self>, request: &ImageGet<'_>) -> Option<Reply> {
        let who = self.hasher.fingerprint(request.headers);
        if self.forward(request.headers, who) != Forward::Miss {
            return None;
        }
        // The request's one reading of the clock, as the cache counts time.
        let now = Moment::of(request.started);
        let protocol = request.front.protocol();
        match self.cache.lookup_recent(protocol, request.id, who, now)? {
            Lookup::Fresh(entry) => {
                self.maybe_refresh(request, &entry, who, now);
                Some(fallback::hit(entry, now))
            }
            Lookup::Stale(_) | Lookup::Miss => None,
        }
    }

    /// Answers an Image.Get: from the cache (as moka holds it) if this caller may be served
    /// a fresh entry, else from the flight for its key.
    pub async fn get(self: &Arc<Self>, request: ImageGet<'_>) -> Reply {
        let who = self.hasher.fingerprint(request.headers);
        let forward = self.forward(request.headers, who);
        if forward == Forward::Miss {
            let protocol = request.front.protocol();
            let now = Moment::of(request.started);
            let found = self.cache.lookup(protocol, request.id, who, now).await;
            if let Lookup::Fresh(entry) = found {
                self.maybe_refresh(&request, &entry, who, now);
                return fallback::hit(entry, now);
            }
        }
        self.miss(request, who, forward).await
    }

    /// How a request for an image goes to the upstream if the cache cannot answer it.
    fn forward(&self, headers: &HeaderMap, who: Option<Fingerprint>) -> Forward {
        if self.auth_mode == AuthMode::PerCredential && who.is_none() {
            Forward::Bypass
        } else if wants_no_cache(headers) {
            Forward::Request
        } else {
            Forward::Miss
        }
    }
}
