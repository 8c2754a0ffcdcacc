//! Configuration reloads: how many were tried and how they ended, when the running
//! configuration was last loaded, and whether the last reload took. Named as Prometheus names
//! its own, so the same alert shapes apply.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use super::{name, register};

pub struct ReloadMetrics {
    reloads: IntCounterVec,
    last_success: IntGauge,
    last_successful: IntGauge,
}

impl ReloadMetrics {
    pub(super) fn new(registry: &Registry) -> Result<ReloadMetrics, prometheus::Error> {
        let reloads = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    name("config_reloads_total"),
                    "Configuration reloads (SIGHUP), by result: ok, or failed (the running \
                     configuration kept)",
                ),
                &["result"],
            )?,
        )?;
        for result in ["ok", "failed"] {
            reloads.with_label_values(&[result]);
        }
        let last_success = register(
            registry,
            IntGauge::new(
                name("config_last_reload_success_timestamp_seconds"),
                "When the running configuration was loaded (start-up or the last good reload), \
                 in Unix seconds",
            )?,
        )?;
        let last_successful = register(
            registry,
            IntGauge::new(
                name("config_last_reload_successful"),
                "1 if the last configuration load (start-up or reload) succeeded, else 0",
            )?,
        )?;
        let metrics = ReloadMetrics {
            reloads,
            last_success,
            last_successful,
        };
        // The configuration the process started with was a good load.
        metrics.loaded();
        Ok(metrics)
    }

    fn loaded(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_success
            .set(i64::try_from(now).unwrap_or(i64::MAX));
        self.last_successful.set(1);
    }

    /// A reload that took.
    pub fn reloaded(&self) {
        self.reloads.with_label_values(&["ok"]).inc();
        self.loaded();
    }

    /// A reload that failed: the running configuration stays.
    pub fn reload_failed(&self) {
        self.reloads.with_label_values(&["failed"]).inc();
        self.last_successful.set(0);
    }
}
