//! What a reload may take from a newly loaded configuration: the settings the table marks
//! [`Change::Live`], and nothing else. A setting that only a restart can change keeps its
//! running value and is named, so that the operator learns the reload did not apply it.

use std::hash::{DefaultHasher, Hash, Hasher};

use super::settings::{Change, SETTINGS};
use super::Config;

/// A loaded configuration, reconciled with the running one.
pub struct Reconciled {
    /// What to run with now: the new live settings, the running restart-only ones.
    pub config: Config,
    /// The live settings that changed.
    pub applied: Vec<&'static str>,
    /// The restart-only settings that changed and were not applied.
    pub needs_restart: Vec<&'static str>,
}

impl Config {
    /// Reconciles `new` with this running configuration.
    pub fn reconcile(&self, new: Config) -> Reconciled {
        let changed = self.changed(&new);
        let (applied, needs_restart) = changed.into_iter().partition(|key| {
            SETTINGS
                .iter()
                .any(|s| s.key == *key && s.change == Change::Live)
        });
        let config = Config {
            ttl: new.ttl,
            stale_if_error: new.stale_if_error,
            negative_ttl: new.negative_ttl,
            max_entry_size: new.max_entry_size,
            upstream_timeout: new.upstream_timeout,
            max_waiters_per_key: new.max_waiters_per_key,
            max_waiters: new.max_waiters,
            shutdown_grace: new.shutdown_grace,
            log_filter: new.log_filter,
            refresh_ahead: new.refresh_ahead,
            max_header_size: new.max_header_size,
            max_headers: new.max_headers,
            max_request_body: new.max_request_body,
            header_read_timeout: new.header_read_timeout,
            request_body_timeout: new.request_body_timeout,
            upstream_retries: new.upstream_retries,
            admin_token_file: new.admin_token_file,
            admin_token: new.admin_token,
            ..self.clone()
        };
        Reconciled {
            config,
            applied,
            needs_restart,
        }
    }

    /// The keys whose values differ between the two.
    fn changed(&self, other: &Config) -> Vec<&'static str> {
        let (ours, theirs) = (self.values(), other.values());
        let mut changed: Vec<&'static str> = ours
            .iter()
            .zip(&theirs)
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0)
            .collect();
        // The token file's path and what it holds are one setting.
        changed.dedup();
        changed
    }

    /// Every setting's value, by key, in a form only compared, never shown: a secret is a
    /// hash of its value.
    fn values(&self) -> Vec<(&'static str, String)> {
        let redis = self.redis.as_ref();
        vec![
            ("listen", format!("{}", self.listen)),
            ("admin-listen", format!("{}", self.admin_listen)),
            ("admin-token-file", format!("{:?}", self.admin_token_file)),
            (
                "admin-token-file",
                digest(&self.admin_token.as_ref().map(|t| t.expose().to_vec())),
            ),
            ("upstream", self.upstream.to_string()),
            ("ttl", format!("{:?}", self.ttl)),
            ("stale-if-error", format!("{:?}", self.stale_if_error)),
            ("negative-ttl", format!("{:?}", self.negative_ttl)),
            ("max-capacity", self.max_capacity.to_string()),
            ("max-entry-size", self.max_entry_size.to_string()),
            ("auth-mode", self.auth_mode.as_str().to_string()),
            ("upstream-timeout", format!("{:?}", self.upstream_timeout)),
            ("connect-timeout", format!("{:?}", self.connect_timeout)),
            ("max-waiters-per-key", self.max_waiters_per_key.to_string()),
            ("max-waiters", self.max_waiters.to_string()),
            ("shutdown-grace", format!("{:?}", self.shutdown_grace)),
            ("log-format", format!("{:?}", self.log_format)),
            ("log-filter", format!("{:?}", self.log_filter)),
            ("refresh-ahead", self.refresh_ahead.to_string()),
            ("max-header-size", self.max_header_size.to_string()),
            ("max-headers", self.max_headers.to_string()),
            ("max-request-body", self.max_request_body.to_string()),
            (
                "request-body-timeout",
                format!("{:?}", self.request_body_timeout),
            ),
            ("max-connections", self.max_connections.to_string()),
            (
                "max-upstream-requests",
                self.max_upstream_requests.to_string(),
            ),
            (
                "header-read-timeout",
                format!("{:?}", self.header_read_timeout),
            ),
            ("upstream-retries", self.upstream_retries.to_string()),
            ("redis", digest(&redis.map(|r| &r.urls))),
            ("redis-cluster", format!("{:?}", redis.map(|r| r.cluster))),
            (
                "redis-grant-key",
                digest(&redis.and_then(|r| r.grant_key.as_ref().map(|k| k.expose().to_vec()))),
            ),
            ("redis-timeout", format!("{:?}", redis.map(|r| r.timeout))),
            ("redis-lease", format!("{:?}", redis.map(|r| &r.lease))),
            ("redis-prefix", format!("{:?}", redis.map(|r| &r.prefix))),
            ("redis-ca-file", format!("{:?}", redis.map(|r| &r.ca_file))),
            (
                "redis-cert-file",
                format!("{:?}", redis.map(|r| r.client_cert.as_ref().map(|c| &c.0))),
            ),
            (
                "redis-key-file",
                format!("{:?}", redis.map(|r| r.client_cert.as_ref().map(|c| &c.1))),
            ),
        ]
    }
}

/// A value that is compared but must not be shown, even in a debugger's view of the list.
fn digest<T: Hash>(value: &T) -> String {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish().to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{RedisConfig, Secret};

    #[test]
    fn nothing_changed_is_nothing_to_apply() {
        let running = Config::default();
        let reconciled = running.reconcile(Config::default());
        assert!(reconciled.applied.is_empty() && reconciled.needs_restart.is_empty());
    }

    #[test]
    fn every_setting_but_config_is_compared() {
        let keys: Vec<&str> = Config::default().values().iter().map(|v| v.0).collect();
        for setting in SETTINGS.iter().filter(|s| s.key != "config") {
            assert!(
                keys.contains(&setting.key),
                "{} is not compared",
                setting.key
            );
        }
    }

    /// A configuration in which every setting differs from the defaults.
    fn all_changed() -> Config {
        let d = Config::default();
        Config {
            listen: "127.0.0.1:1".parse().unwrap(),
            admin_listen: "127.0.0.1:2".parse().unwrap(),
            admin_token_file: Some("/run/token".into()),
            admin_token: Some(Secret::new("t".repeat(20))),
            upstream: crate::config::UpstreamUrl {
                path_prefix: "/x".into(),
                ..d.upstream.clone()
            },
            ttl: d.ttl * 2,
            stale_if_error: d.stale_if_error * 2,
            negative_ttl: Duration::from_secs(9),
            max_capacity: d.max_capacity * 2,
            max_entry_size: d.max_entry_size * 2,
            auth_mode: crate::config::AuthMode::Shared,
            upstream_timeout: d.upstream_timeout * 2,
            connect_timeout: d.connect_timeout * 2,
            max_waiters_per_key: d.max_waiters_per_key * 2,
            max_waiters: d.max_waiters * 2,
            shutdown_grace: d.shutdown_grace * 2,
            log_format: crate::config::LogFormat::Json,
            log_filter: Some("debug".into()),
            refresh_ahead: d.refresh_ahead + 1,
            max_header_size: d.max_header_size * 2,
            max_headers: d.max_headers * 2,
            max_request_body: d.max_request_body * 2,
            max_connections: d.max_connections * 2,
            max_upstream_requests: d.max_upstream_requests * 2,
            header_read_timeout: d.header_read_timeout * 2,
            request_body_timeout: d.request_body_timeout * 2,
            upstream_retries: d.upstream_retries + 1,
            redis: Some(RedisConfig {
                urls: vec!["redis://127.0.0.1:1".into()],
                cluster: true,
                grant_key: Some(Secret::new("k".repeat(40))),
                timeout: Duration::from_secs(1),
                lease: Duration::from_secs(1),
                prefix: "p:".into(),
                ca_file: Some("/ca".into()),
                client_cert: Some(("/c".into(), "/k".into())),
            }),
        }
    }

    #[test]
    fn live_settings_are_applied_and_the_others_named_and_kept() {
        let running = Config::default();
        let reconciled = running.reconcile(all_changed());
        for setting in SETTINGS.iter().filter(|s| s.key != "config") {
            let (applied, named) = (
                reconciled.applied.contains(&setting.key),
                reconciled.needs_restart.contains(&setting.key),
            );
            match setting.change {
                Change::Live => assert!(applied && !named, "{}", setting.key),
                Change::Restart => assert!(named && !applied, "{}", setting.key),
            }
        }
        // What runs now differs from the new file exactly in the restart-only settings,
        // and from the old configuration exactly in the live ones.
        let restart_only: Vec<&str> = SETTINGS
            .iter()
            .filter(|s| s.change == Change::Restart && s.key != "config")
            .map(|s| s.key)
            .collect();
        let still_different = reconciled.config.changed(&all_changed());
        assert_eq!(still_different, restart_only);
        let from_old = running.changed(&reconciled.config);
        let live: Vec<&str> = SETTINGS
            .iter()
            .filter(|s| s.change == Change::Live)
            .map(|s| s.key)
            .collect();
        assert_eq!(from_old, live);
    }

    #[test]
    fn a_new_token_in_the_same_file_is_a_change() {
        let running = Config {
            admin_token_file: Some("/run/token".into()),
            admin_token: Some(Secret::new("a".repeat(20))),
            ..Config::default()
        };
        let new = Config {
            admin_token: Some(Secret::new("b".repeat(20))),
            ..running.clone()
        };
        let reconciled = running.reconcile(new);
        assert_eq!(reconciled.applied, ["admin-token-file"]);
        assert!(reconciled.needs_restart.is_empty());
    }
}
