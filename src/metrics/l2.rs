//! The Redis second tier's metrics (`baremetal_image_cache_l2_*`) and the label values they
//! take.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

use super::{counts_by, name, register, LATENCY_BUCKETS};

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
    pub(super) fn new(registry: &Registry) -> Result<L2Metrics, prometheus::Error> {
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
        let waits = counts_by(
            registry,
            "l2_fleet_waits_total",
            "Waits for another instance's fill, by how they ended",
            "outcome",
            FleetWait::ALL.map(FleetWait::as_str),
        )?;
        let messages = counts_by(
            registry,
            "l2_messages_total",
            "Pub/sub events received from the fleet, by kind",
            "kind",
            FleetMessage::ALL.map(FleetMessage::as_str),
        )?;
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
