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

use crate::outcome::{CacheResult, Outcome};

const PREFIX: &str = "baremetal_image_cache";

/// From a cache hit (tens of microseconds) to a slow upstream (seconds).
const LATENCY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The routes, as the `route` label spells them.
pub const ROUTES: [&str; 3] = ["image_get", "image_mutation", "passthrough"];

const RESULTS: [CacheResult; 4] = [
    CacheResult::Hit,
    CacheResult::Miss,
    CacheResult::Stale,
    CacheResult::Bypass,
];

/// Why an entry was dropped by the proxy (not by moka on its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidationReason {
    Creating,
    Updating,
    Deleting,
    Error,
    Unspecified,
    NotFound,
    Mutation,
    Purge,
    /// Another instance of the fleet invalidated it (or the fleet's messages had a gap).
    Fleet,
}

impl InvalidationReason {
    pub const ALL: [InvalidationReason; 9] = [
        InvalidationReason::Creating,
        InvalidationReason::Updating,
        InvalidationReason::Deleting,
        InvalidationReason::Error,
        InvalidationReason::Unspecified,
        InvalidationReason::NotFound,
        InvalidationReason::Mutation,
        InvalidationReason::Purge,
        InvalidationReason::Fleet,
    ];

    /// The reason for an image body whose status is not READY.
    pub fn for_status(status: Option<&str>) -> InvalidationReason {
        match status {
            Some("CREATING") => InvalidationReason::Creating,
            Some("UPDATING") => InvalidationReason::Updating,
            Some("DELETING") => InvalidationReason::Deleting,
            Some("ERROR") => InvalidationReason::Error,
            _ => InvalidationReason::Unspecified,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InvalidationReason::Creating => "creating",
            InvalidationReason::Updating => "updating",
            InvalidationReason::Deleting => "deleting",
            InvalidationReason::Error => "error",
            InvalidationReason::Unspecified => "unspecified",
            InvalidationReason::NotFound => "not_found",
            InvalidationReason::Mutation => "mutation",
            InvalidationReason::Purge => "purge",
            InvalidationReason::Fleet => "fleet",
        }
    }
}

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Registry,
    requests: [IntCounter; 4],
    coalesced: IntCounter,
    invalidations: IntCounterVec,
    evictions: IntCounterVec,
    entries: IntGauge,
    size_bytes: IntGauge,
    upstream_requests: IntCounterVec,
    upstream_duration: HistogramVec,
    upstream_errors: IntCounterVec,
    /// `[route][result]`, resolved up front.
    request_duration: Vec<[Histogram; 4]>,
    inflight_fetches: IntGauge,
    waiters: IntGauge,
    rejected: IntCounterVec,
    refreshes: IntCounter,
    l2: L2Metrics,
}

/// The Redis second tier's metrics (`baremetal_image_cache_l2_*`); exported, at zero, even
/// when the tier is off, so dashboards and alerts read the same series everywhere.
#[derive(Clone)]
pub struct L2Metrics {
    enabled: IntGauge,
    operations: IntCounterVec,
    duration: HistogramVec,
    circuit_open: IntGauge,
    waits: IntCounterVec,
    messages: IntCounterVec,
    unsent: IntGauge,
    subscribed: IntGauge,
}

/// A Redis command, as the `op` label spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2Op {
    Get,
    Set,
    Lease,
    Delete,
    Publish,
}

impl L2Op {
    pub const ALL: [L2Op; 5] = [
        L2Op::Get,
        L2Op::Set,
        L2Op::Lease,
        L2Op::Delete,
        L2Op::Publish,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            L2Op::Get => "get",
            L2Op::Set => "set",
            L2Op::Lease => "lease",
            L2Op::Delete => "delete",
            L2Op::Publish => "publish",
        }
    }
}

/// How a Redis command ended, as the `result` label spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2Result {
    /// Done (for `get`: found a usable value; for `lease`: won it).
    Ok,
    /// `get`: nothing there; `lease`: another instance holds it.
    Miss,
    /// Redis answered with an error or the connection failed.
    Error,
    /// No answer within `--redis-timeout`.
    Timeout,
    /// Not sent: the circuit is open.
    Skipped,
    /// `get`: a value that does not decode (not ours, or corrupted).
    Garbage,
}

impl L2Result {
    pub const ALL: [L2Result; 6] = [
        L2Result::Ok,
        L2Result::Miss,
        L2Result::Error,
        L2Result::Timeout,
        L2Result::Skipped,
        L2Result::Garbage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            L2Result::Ok => "ok",
            L2Result::Miss => "miss",
            L2Result::Error => "error",
            L2Result::Timeout => "timeout",
            L2Result::Skipped => "skipped",
            L2Result::Garbage => "garbage",
        }
    }
}

/// How an instance's wait for another instance's fill ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FleetWait {
    /// The value arrived in Redis.
    Filled,
    /// The lease was free again (the filler failed or died) and this instance took it.
    TakenOver,
    /// Redis failed or the deadline came first: this instance fetched on its own.
    GaveUp,
    /// The holder's answer was not one to share (not READY, an error, refused): this
    /// instance fetched on its own at once rather than queue for the lease.
    NotShared,
}

impl FleetWait {
    pub const ALL: [FleetWait; 4] = [
        FleetWait::Filled,
        FleetWait::TakenOver,
        FleetWait::GaveUp,
        FleetWait::NotShared,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FleetWait::Filled => "filled",
            FleetWait::TakenOver => "taken_over",
            FleetWait::GaveUp => "gave_up",
            FleetWait::NotShared => "not_shared",
        }
    }
}

/// A pub/sub event from the rest of the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FleetMessage {
    /// An image was invalidated on some instance.
    Invalidate,
    /// Some instance finished a fill.
    Filled,
    /// The subscription was re-established after a gap; the local tier was dropped.
    Resync,
}

impl FleetMessage {
    pub const ALL: [FleetMessage; 3] = [
        FleetMessage::Invalidate,
        FleetMessage::Filled,
        FleetMessage::Resync,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FleetMessage::Invalidate => "invalidate",
            FleetMessage::Filled => "filled",
            FleetMessage::Resync => "resync",
        }
    }
}

impl L2Metrics {
    fn new(registry: &Registry) -> Result<L2Metrics, prometheus::Error> {
        let enabled = register(
            registry,
            IntGauge::new(
                name("l2_enabled"),
                "1 when the Redis second tier is configured",
            )?,
        )?;
        let operations = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    name("l2_operations_total"),
                    "Redis second-tier commands, by command and result",
                ),
                &["op", "result"],
            )?,
        )?;
        for op in L2Op::ALL {
            for result in L2Result::ALL {
                operations.with_label_values(&[op.as_str(), result.as_str()]);
            }
        }
        let duration = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    name("l2_operation_duration_seconds"),
                    "Time a Redis second-tier command took, by command",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["op"],
            )?,
        )?;
        for op in L2Op::ALL {
            duration.with_label_values(&[op.as_str()]);
        }
        let circuit_open = register(
            registry,
            IntGauge::new(
                name("l2_circuit_open"),
                "1 while Redis is being skipped after repeated failures",
            )?,
        )?;
        let waits = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    name("l2_fleet_waits_total"),
                    "Waits for another instance's fill, by how they ended",
                ),
                &["outcome"],
            )?,
        )?;
        for wait in FleetWait::ALL {
            waits.with_label_values(&[wait.as_str()]);
        }
        let messages = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    name("l2_messages_total"),
                    "Pub/sub events received from the fleet, by kind",
                ),
                &["kind"],
            )?,
        )?;
        for kind in FleetMessage::ALL {
            messages.with_label_values(&[kind.as_str()]);
        }
        let unsent = register(
            registry,
            IntGauge::new(
                name("l2_unsent_invalidations"),
                "Invalidations Redis has not taken yet (retried every second; a purge of \
                 everything counts as one)",
            )?,
        )?;
        let subscribed = register(
            registry,
            IntGauge::new(
                name("l2_subscribed"),
                "1 while the fleet subscription is up: only then are shared values taken",
            )?,
        )?;
        Ok(L2Metrics {
            enabled,
            operations,
            duration,
            circuit_open,
            waits,
            messages,
            unsent,
            subscribed,
        })
    }

    pub fn set_enabled(&self) {
        self.enabled.set(1);
    }

    pub fn operation(&self, op: L2Op, result: L2Result, elapsed: Duration) {
        self.operations
            .with_label_values(&[op.as_str(), result.as_str()])
            .inc();
        if result != L2Result::Skipped {
            self.duration
                .with_label_values(&[op.as_str()])
                .observe(elapsed.as_secs_f64());
        }
    }

    pub fn set_subscribed(&self, up: bool) {
        self.subscribed.set(i64::from(up));
    }

    pub fn set_unsent(&self, count: usize) {
        self.unsent.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn set_circuit_open(&self, open: bool) {
        self.circuit_open.set(i64::from(open));
    }

    pub fn waited(&self, how: FleetWait) {
        self.waits.with_label_values(&[how.as_str()]).inc();
    }

    pub fn message(&self, kind: FleetMessage) {
        self.messages.with_label_values(&[kind.as_str()]).inc();
    }
}

/// Why the proxy turned a request or connection away itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// `--max-connections` reached.
    Connections,
    /// `--max-upstream-requests` reached.
    UpstreamBusy,
    /// `--max-waiters-per-key` or `--max-waiters` reached.
    Waiters,
    /// `--max-request-body` exceeded.
    RequestBody,
    /// A request body paused for longer than `--request-body-timeout`.
    RequestBodyTimeout,
    /// More request headers than `--max-headers` (HTTP/2; hyper answers HTTP/1's itself).
    Headers,
    /// A method, transfer coding or upgrade the proxy does not support.
    NotImplemented,
    /// A request target that is not a path.
    Target,
    /// The admin listener's connection cap reached.
    AdminConnections,
}

impl Rejection {
    pub const ALL: [Rejection; 9] = [
        Rejection::Connections,
        Rejection::UpstreamBusy,
        Rejection::Waiters,
        Rejection::RequestBody,
        Rejection::RequestBodyTimeout,
        Rejection::Headers,
        Rejection::NotImplemented,
        Rejection::Target,
        Rejection::AdminConnections,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Connections => "connections",
            Rejection::UpstreamBusy => "upstream_busy",
            Rejection::Waiters => "waiters",
            Rejection::RequestBody => "request_body",
            Rejection::RequestBodyTimeout => "request_body_timeout",
            Rejection::Headers => "headers",
            Rejection::NotImplemented => "not_implemented",
            Rejection::Target => "target",
            Rejection::AdminConnections => "admin_connections",
        }
    }
}

fn name(short: &str) -> String {
    format!("{PREFIX}_{short}")
}

fn register<T: prometheus::core::Collector + Clone + 'static>(
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
                    "Image.Get requests by how they were answered",
                ),
                &["result"],
            )?,
        )?;
        let requests = RESULTS.map(|r| requests_vec.with_label_values(&[r.as_str()]));
        let coalesced = register(
            &registry,
            IntCounter::new(
                name("coalesced_total"),
                "Image.Get requests that joined another request's upstream fetch",
            )?,
        )?;
        let invalidations = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    name("invalidations_total"),
                    "Cache entries dropped by the proxy, by reason",
                ),
                &["reason"],
            )?,
        )?;
        for reason in InvalidationReason::ALL {
            invalidations.with_label_values(&[reason.as_str()]);
        }
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
        let request_duration_vec = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    name("request_duration_seconds"),
                    "Time from a request's arrival to its response head, by route and result",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route", "result"],
            )?,
        )?;
        let request_duration = ROUTES
            .iter()
            .map(|route| {
                RESULTS.map(|r| request_duration_vec.with_label_values(&[route, r.as_str()]))
            })
            .collect();
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
        let rejected = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    name("rejected_total"),
                    "Requests or connections the proxy turned away at a limit, by limit",
                ),
                &["reason"],
            )?,
        )?;
        for reason in Rejection::ALL {
            rejected.with_label_values(&[reason.as_str()]);
        }
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
            request_duration,
            inflight_fetches,
            waiters,
            rejected,
            refreshes,
            l2,
        })
    }

    /// The Redis second tier's metrics.
    pub fn l2(&self) -> &L2Metrics {
        &self.l2
    }

    /// Records one finished request: its route, its Image.Get outcome if it was one, and how
    /// long it took to answer.
    pub fn request(&self, route: usize, outcome: Option<&Outcome>, elapsed: Duration) {
        let result = match outcome {
            Some(outcome) => {
                self.requests[result_index(outcome.result)].inc();
                if outcome.coalesced {
                    self.coalesced.inc();
                }
                outcome.result
            }
            // Requests that are not Image.Get never consult the cache.
            None => CacheResult::Bypass,
        };
        if let Some(by_result) = self.request_duration.get(route) {
            by_result[result_index(result)].observe(elapsed.as_secs_f64());
        }
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

    pub fn upstream_answered(&self, route: &str, status: u16, elapsed: Duration) {
        self.upstream_requests
            .with_label_values(&[route, status_label(status)])
            .inc();
        self.upstream_duration
            .with_label_values(&[route])
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

/// The `code` label: the status as three digits, from a fixed set so that a broken upstream
/// cannot create series at will.
fn status_label(status: u16) -> &'static str {
    const KNOWN: &[(u16, &str)] = &[
        (200, "200"),
        (201, "201"),
        (202, "202"),
        (204, "204"),
        (301, "301"),
        (302, "302"),
        (304, "304"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (409, "409"),
        (412, "412"),
        (413, "413"),
        (429, "429"),
        (499, "499"),
        (500, "500"),
        (501, "501"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    if let Some((_, label)) = KNOWN.iter().find(|(code, _)| *code == status) {
        return label;
    }
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
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
            "baremetal_image_cache_requests_total{result=\"hit\"} 0",
            "baremetal_image_cache_coalesced_total 0",
            "baremetal_image_cache_invalidations_total{reason=\"purge\"} 0",
            "baremetal_image_cache_evictions_total{cause=\"size\"} 0",
            "baremetal_image_cache_entries 0",
            "baremetal_image_cache_size_bytes 0",
            "baremetal_image_cache_upstream_errors_total{kind=\"tls\"} 0",
            "baremetal_image_cache_inflight_fetches 0",
            "baremetal_image_cache_waiters 0",
            "baremetal_image_cache_capacity_bytes 1024",
            "baremetal_image_cache_build_info{version=",
            "baremetal_image_cache_request_duration_seconds_bucket{result=\"hit\",route=\"image_get\",le=\"0.00001\"} 0",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
    }

    #[test]
    fn status_labels_come_from_a_fixed_set() {
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(999), "5xx");
    }
}
