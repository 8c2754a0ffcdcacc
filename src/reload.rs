//! A reload (SIGHUP): the configuration is loaded again from the same command line,
//! environment and file, and what may change while running is handed to the parts that read
//! it. A setting that only a restart can change is named in a warning and keeps its value;
//! a configuration that does not load is logged and the running one kept. The cache, the
//! connections and the fleet are untouched either way.

use std::sync::Arc;

use crate::admin::{self, Admin};
use crate::config::{Config, ConfigError, Reconciled};
use crate::flow::Flow;
use crate::http::limits::RequestLimits;
use crate::logging;

/// The running configuration and what a reload retunes.
pub struct Reloader {
    running: Config,
    flow: Arc<Flow>,
    limits: Arc<RequestLimits>,
    admin: Arc<Admin>,
}

impl Reloader {
    pub fn new(
        running: Config,
        flow: Arc<Flow>,
        limits: Arc<RequestLimits>,
        admin: Arc<Admin>,
    ) -> Reloader {
        Reloader {
            running,
            flow,
            limits,
            admin,
        }
    }

    /// Applies a configuration loaded again (or why it could not be); returns the one now
    /// running if the load succeeded.
    pub fn apply(&mut self, loaded: Result<Config, ConfigError>) -> Option<&Config> {
        let metrics = self.flow.metrics().clone();
        let new = match loaded {
            Ok(new) => new,
            Err(e) => {
                // The message names the setting and where it came from, never a secret.
                tracing::error!(error = %e, "configuration reload failed; the running configuration is kept");
                metrics.reloads().reload_failed();
                return None;
            }
        };
        let Reconciled {
            config,
            applied,
            needs_restart,
        } = self.running.reconcile(new);
        if !needs_restart.is_empty() {
            tracing::warn!(
                settings = %needs_restart.join(", "),
                "configuration reload: these settings take a restart and keep their running values"
            );
        }
        self.limits.retune(&config);
        for note in self.flow.retune(&config) {
            tracing::warn!(note = %note, "configuration reload: applied in part");
        }
        self.admin.set_token(config.admin_token.as_ref());
        admin::warn_if_exposed(&config);
        tracing::info!(
            applied = %if applied.is_empty() { "nothing changed".to_string() } else { applied.join(", ") },
            "configuration reloaded"
        );
        // Last, so that the events of this reload are written under the filter the operator
        // had when asking for it.
        if applied.contains(&"log-filter") {
            if let Err(e) = logging::set_filter(config.log_filter.as_deref()) {
                tracing::warn!(error = %e, "configuration reload: the log filter is unchanged");
            }
        }
        metrics.reloads().reloaded();
        self.running = config;
        Some(&self.running)
    }
}
