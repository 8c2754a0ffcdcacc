//! Prometheus metrics, on a registry of our own, served by the admin listener.
//!
//! Names and labels are part of the interface (the dashboard and the alert rules use them).
//! No label takes its value from a request: routes, results, reasons, causes, kinds and
//! status codes come from fixed sets. Counters that the hit path touches are resolved to
//! their label children once, at start-up.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use http::HeaderValue;

use crate::image::Protocol;
use crate::outcome::{CacheResult, Outcome};
use crate::route::RouteKind;

mod l2;
mod labels;
mod reloads;

pub use l2::{FleetMessage, FleetWait, L2Metrics, L2Op, L2Result};
pub use labels::{grpc_status_label, status_label, InvalidationReason, Rejection, GRPC_STATUSES};
pub use reloads::ReloadMetrics;

const PREFIX: &str = "baremetal_image_cache";

/// From a cache hit (tens of microseconds) to a slow upstream (seconds).
pub(crate) const LATENCY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const RESULTS: [CacheResult; 4] = [
    CacheResult::Hit,
    CacheResult::Miss,
    CacheResult::Stale,
    CacheResult::Bypass,
];

/// One finished client request, counted and logged once, by the front-end that answered
/// it: its route, its Image.Get outcome if it was one, its status and how long it took.
pub struct RequestEvent<'a> {
    pub protocol: Protocol,
    pub route: RouteKind,
    pub outcome: Option<&'a Outcome>,
    pub status: u16,
    pub elapsed: Duration,
    /// Only when debug events are written: a hit does not make one up otherwise.
    pub request_id: Option<&'a HeaderValue>,
}

impl RequestEvent<'_> {
    pub fn emit(self, metrics: &Metrics) {
        metrics.request(self.protocol, self.route, self.outcome, self.elapsed);
        tracing::debug!(
            request_id = self.request_id.and_then(|v| v.to_str().ok()).unwrap_or(""),
            protocol = self.protocol.as_str(),
            route = self.route.as_str(),
            result = self.outcome.map_or("none", |o| o.result.as_str()),
            status = self.status,
            elapsed_us = self.elapsed.as_micros() as u64,
            "request"
        );
    }
}

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Registry,
    /// `[result][protocol]`, resolved up front.
    requests: [[IntCounter; 2]; 4],
    /// `[protocol]`.
    coalesced: [IntCounter; 2],
    invalidations: IntCounterVec,
    evictions: IntCounterVec,
    entries: IntGauge,
    size_bytes: IntGauge,
    upstream_requests: IntCounterVec,
    upstream_duration: HistogramVec,
    upstream_errors: IntCounterVec,
    upstream_grpc: IntCounterVec,
    /// `[route][result][protocol]`, resolved up front.
    request_duration: [[[Histogram; 2]; 4]; 3],
    inflight_fetches: IntGauge,
    waiters: IntGauge,
    rejected: IntCounterVec,
    refreshes: IntCounter,
    l2: L2Metrics,
    reloads: ReloadMetrics,
}

pub(crate) fn name(short: &str) -> String {
    format!("{PREFIX}_{short}")
}

/// A counter with one label, registered, each of `values` exported at zero from the start
/// (a dashboard or an alert then sees a series before its first event).
pub(crate) fn counts_by(
    registry: &Registry,
    short_name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = &'static str>,
) -> Result<IntCounterVec, prometheus::Error> {
    let counter = register(
        registry,
        IntCounterVec::new(Opts::new(name(short_name), help), &[label])?,
    )?;
    for value in values {
        counter.with_label_values(&[value]);
    }
    Ok(counter)
}

pub(crate) fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: T,
) -> Result<T, prometheus::Error> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl Metrics {
    /// A fresh registry with every metric, at zero, plus the process collector.
    pub fn new(max_capacity: u64) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests_vec = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    name("requests_total"),
                    "Image.Get requests by how they were answered, by protocol",
                ),
                &["result", "protocol"],
            )?,
        )?;
        let requests = RESULTS.map(|r| {
            Protocol::ALL.map(|p| requests_vec.with_label_values(&[r.as_str(), p.as_str()]))
        });
        let coalesced_vec = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    name("coalesced_total"),
                    "Image.Get requests that joined another request's upstream fetch, by protocol",
                ),
                &["protocol"],
            )?,
        )?;
        let coalesced = Protocol::ALL.map(|p| coalesced_vec.with_label_values(&[p.as_str()]));
        let invalidations = counts_by(
            &registry,
            "invalidations_total",
            "Cache entries dropped by the proxy, by reason",
            "reason",
            InvalidationReason::ALL.map(InvalidationReason::as_str),
        )?;
        let evictions = register(
            &registry,
            IntCounterVec::new(
                Opts::new(name("evictions_total"), "Cache entries removed, by cause"),
                &["cause"],
            )?,
        )?;
        for cause in ["expired", "size", "replaced", "explicit"] {
            evictions.with_label_values(&[cause]);
        }
        let entries = register(
            &registry,
            IntGauge::new(name("entries"), "Entries in the cache")?,
        )?;
        let size_bytes = register(
            &registry,
            IntGauge::new(name("size_bytes"), "Weighed size of the cache in bytes")?,
        )?;
        let capacity_bytes = register(
            &registry,
            IntGauge::new(
                name("capacity_bytes"),
                "The configured memory bound of the cache (--max-capacity)",
            )?,
        )?;
        capacity_bytes.set(i64::try_from(max_capacity).unwrap_or(i64::MAX));
        let upstream_requests = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    name("upstream_requests_total"),
                    "Upstream requests answered, by route and HTTP status",
                ),
                &["route", "code"],
            )?,
        )?;
        let upstream_duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    name("upstream_request_duration_seconds"),
                    "Time from sending an upstream request to its response head",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )?,
        )?;
        let upstream_errors = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    name("upstream_errors_total"),
                    "Upstream exchanges that failed without an answer, by kind",
                ),
                &["kind"],
            )?,
        )?;
        for kind in ["connect", "timeout", "tls", "body"] {
            upstream_errors.with_label_values(&[kind]);
        }
        let upstream_grpc = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    name("upstream_grpc_responses_total"),
                    "Upstream gRPC answers, by route and gRPC status (an answer's HTTP status is 200 \
                     whatever its gRPC status)",
                ),
                &["route", "grpc_status"],
            )?,
        )?;
        for route in RouteKind::ALL {
            for status in GRPC_STATUSES {
                upstream_grpc.with_label_values(&[route.as_str(), status]);
            }
        }
        let request_duration_vec = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    name("request_duration_seconds"),
                    "Time from a request's arrival to its response head, by route, result and protocol",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route", "result", "protocol"],
            )?,
        )?;
        let request_duration = RouteKind::ALL.map(|route| {
            RESULTS.map(|r| {
                Protocol::ALL.map(|p| {
                    request_duration_vec.with_label_values(&[
                        route.as_str(),
                        r.as_str(),
                        p.as_str(),
                    ])
                })
            })
        });
        let inflight_fetches = register(
            &registry,
            IntGauge::new(
                name("inflight_fetches"),
                "Image.Get upstream fetches in progress",
            )?,
        )?;
        let waiters = register(
            &registry,
            IntGauge::new(
                name("waiters"),
                "Requests waiting for another request's fetch",
            )?,
        )?;
        let rejected = counts_by(
            &registry,
            "rejected_total",
            "Requests or connections the proxy turned away at a limit, by limit",
            "reason",
            Rejection::ALL.map(Rejection::as_str),
        )?;
        let refreshes = register(
            &registry,
            IntCounter::new(
                name("refreshes_total"),
                "Background refreshes started by hits near the end of an entry's TTL",
            )?,
        )?;
        let build_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    name("build_info"),
                    "Build information; the value is always 1",
                ),
                &["version"],
            )?,
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let l2 = L2Metrics::new(&registry)?;
        let reloads = ReloadMetrics::new(&registry)?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        Ok(Metrics {
            registry,
            requests,
            coalesced,
            invalidations,
            evictions,
            entries,
            size_bytes,
            upstream_requests,
            upstream_duration,
            upstream_errors,
            upstream_grpc,
            request_duration,
            inflight_fetches,
            waiters,
            rejected,
            refreshes,
            l2,
            reloads,
        })
    }

    /// The configuration reloads' metrics.
    pub fn reloads(&self) -> &ReloadMetrics {
        &self.reloads
    }

    /// The Redis second tier's metrics.
    pub fn l2(&self) -> &L2Metrics {
        &self.l2
    }

    /// Records one finished request: its route, its Image.Get outcome if it was one, and how
    /// long it took to answer.
    fn request(
        &self,
        protocol: Protocol,
        route: RouteKind,
        outcome: Option<&Outcome>,
        elapsed: Duration,
    ) {
        let result = match outcome {
            Some(outcome) => {
                self.requests[result_index(outcome.result)][protocol.index()].inc();
                if outcome.coalesced {
                    self.coalesced[protocol.index()].inc();
                }
                outcome.result
            }
            // Requests that are not Image.Get never consult the cache.
            None => CacheResult::Bypass,
        };
        self.request_duration[route.index()][result_index(result)][protocol.index()]
            .observe(elapsed.as_secs_f64());
    }

    pub fn invalidated(&self, reason: InvalidationReason, entries: u64) {
        if entries > 0 {
            self.invalidations
                .with_label_values(&[reason.as_str()])
                .inc_by(entries);
        }
    }

    pub fn evicted(&self, cause: &str) {
        self.evictions.with_label_values(&[cause]).inc();
    }

    /// An upstream gRPC answer's status (from its trailers, or its headers when it came
    /// without a body).
    pub fn upstream_grpc_status(&self, route: RouteKind, grpc_status: &HeaderValue) {
        self.upstream_grpc
            .with_label_values(&[route.as_str(), grpc_status_label(grpc_status)])
            .inc();
    }

    pub fn upstream_answered(&self, route: RouteKind, status: u16, elapsed: Duration) {
        self.upstream_requests
            .with_label_values(&[route.as_str(), status_label(status)])
            .inc();
        self.upstream_duration
            .with_label_values(&[route.as_str()])
            .observe(elapsed.as_secs_f64());
    }

    pub fn rejected(&self, reason: Rejection) {
        self.rejected.with_label_values(&[reason.as_str()]).inc();
    }

    pub fn refresh_started(&self) {
        self.refreshes.inc();
    }

    pub fn upstream_failed(&self, kind: &str) {
        self.upstream_errors.with_label_values(&[kind]).inc();
    }

    /// Sets the gauges that are read off other parts at scrape time.
    pub fn set_current(&self, entries: u64, size_bytes: u64, inflight: usize, waiters: usize) {
        self.entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.size_bytes
            .set(i64::try_from(size_bytes).unwrap_or(i64::MAX));
        self.inflight_fetches
            .set(i64::try_from(inflight).unwrap_or(i64::MAX));
        self.waiters.set(i64::try_from(waiters).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

fn result_index(result: CacheResult) -> usize {
    match result {
        CacheResult::Hit => 0,
        CacheResult::Miss => 1,
        CacheResult::Stale => 2,
        CacheResult::Bypass => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exported_from_the_start() {
        let metrics = Metrics::new(1024).unwrap();
        let text = String::from_utf8(metrics.encode().unwrap()).unwrap();
        for name in [
            "baremetal_image_cache_requests_total{protocol=\"http\",result=\"hit\"} 0",
            "baremetal_image_cache_requests_total{protocol=\"grpc\",result=\"hit\"} 0",
            "baremetal_image_cache_coalesced_total{protocol=\"grpc\"} 0",
            "baremetal_image_cache_invalidations_total{reason=\"purge\"} 0",
            "baremetal_image_cache_evictions_total{cause=\"size\"} 0",
            "baremetal_image_cache_entries 0",
            "baremetal_image_cache_size_bytes 0",
            "baremetal_image_cache_upstream_errors_total{kind=\"tls\"} 0",
            "baremetal_image_cache_inflight_fetches 0",
            "baremetal_image_cache_waiters 0",
            "baremetal_image_cache_capacity_bytes 1024",
            "baremetal_image_cache_build_info{version=",
            "baremetal_image_cache_request_duration_seconds_bucket{protocol=\"http\",result=\"hit\",route=\"image_get\",le=\"0.00001\"} 0",
            "baremetal_image_cache_upstream_grpc_responses_total{grpc_status=\"UNAVAILABLE\",route=\"image_get\"} 0",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
    }
}
