//! The fleet tier: an optional Redis second level shared by every instance, so that a whole
//! fleet of sidecars costs the API about one request per image.
//!
//! Keys (`R` is `--redis-prefix`, `P` is `R` plus the auth mode, so instances in different
//! modes never share values; `{id}` is a hash tag, so an image's keys live on one cluster
//! slot):
//! - `P image:{id}`: the shared answer, with the time the upstream produced it (so `Age` and
//!   expiry agree across instances), written with the remaining TTL.
//! - `R gen:{id}`: the image's invalidation generation, one for both modes. Invalidating
//!   deletes the values of both modes and bumps it; a fill writes only if the generation is
//!   still the one it saw before fetching (a check-and-set script), so a fetch that raced an
//!   invalidation is never shared.
//! - `P grant:{id}:HMAC`: per-credential mode, "this credential may read this image", holding
//!   the generation it was granted in: an invalidation ends every grant, like a local one.
//! - `P lease:{id}[:HMAC]`: one instance's right to fetch (`SET NX PX`, a random token so
//!   that only its owner deletes it), renewed while the fetch runs. The others wait, woken
//!   by a message on `filled` or by a bounded poll, and take the lease over when it expires.
//! - `P pass:{id}[:HMAC]`: for a second after a fetch that found nothing anyone could share
//!   (the image is not READY, gone or too big): the waiters fetch on their own at once
//!   instead of queueing. (After a failure the lease simply goes to the next waiter.)
//!
//! Invalidations are published on `invalidate`; every instance drops the ID (`*:ms`: all,
//! with the time also recorded in `R purged-at` so older values are ignored). An
//! invalidation Redis does not take (down, slow) is kept and retried every second, and until
//! then this instance trusts no shared value of that image from before it. Every command has
//! a deadline; after [`commands::CIRCUIT_FAILURES`] failures in a row the tier is skipped for
//! [`commands::CIRCUIT_COOLDOWN`], the connections are remade, then one probe tries again. An instance
//! without Redis is a single-tier cache, never a broken one.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use redis::aio::ConnectionManagerConfig;
use redis::cluster::ClusterClient;
use tokio::sync::broadcast;

use crate::auth::GrantHasher;
use crate::config::{redacted_url, AuthMode, RedisConfig};
use crate::metrics::L2Metrics;
use crate::tunable::TunableDuration;

mod codec;
mod commands;
mod invalidation;
mod keys;
mod lease;
mod scripts;
mod subscription;

pub use lease::{Accept, Claim, Ticket};

use commands::{Commands, Servers, CONNECT_DEADLINES};
use invalidation::Unsent;
use keys::Keys;

/// How long an image's invalidation generation is kept after its last bump, at least: far
/// longer than any fetch, so a fill never sees it vanish (and so mistake an old generation
/// for today's). See [`generation_life`].
const GENERATION_LIFE: Duration = Duration::from_secs(24 * 3600);

/// Who may be given a shared value this caller reads, and under which name its right to
/// read is recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reader {
    /// Shared mode: every caller may read every READY image.
    Anyone,
    /// Per-credential mode: the caller's grant record (a keyed hash of the image ID and
    /// its credential, never the credential itself).
    Credential(String),
}

impl Reader {
    fn record(&self) -> Option<&str> {
        match self {
            Reader::Anyone => None,
            Reader::Credential(record) => Some(record),
        }
    }
}

/// Whether a value read from Redis may be used: a READY image of the ID it is stored under,
/// within the entry limit. Only such values are ever written, but Redis is not ours alone;
/// the front-end whose values they are knows what READY means.
pub type Usable<'a> = &'a (dyn Fn(&str, &SharedAnswer) -> bool + Sync);

/// An image answer as the fleet shares it.
#[derive(Debug)]
pub struct SharedAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// How old the answer is now, by the wall clock of the instance that produced it.
    pub age: Duration,
    /// How long ago the reader's credential was checked by the API (its grant record was
    /// written); the answer's age in shared mode.
    pub granted_age: Duration,
}

/// The Redis tier of one instance.
pub struct Fleet {
    commands: Commands,
    subscribe_to: Vec<redis::Client>,
    keys: Keys,
    grants: Option<GrantHasher>,
    auth_mode: AuthMode,
    /// `--ttl`: how long a shared value or grant is good for (a reload may change it).
    ttl: TunableDuration,
    timeout: Duration,
    lease: Duration,
    generation_life: TunableDuration,
    filled: broadcast::Sender<Arc<str>>,
    /// Values and grants produced before this (Unix ms) were purged.
    purged_before: AtomicU64,
    /// Whether the subscription has ever failed: then it resyncs on its next connection.
    missed_messages: AtomicBool,
    /// Whether the subscription is up: only then are shared values taken, as only then would
    /// an invalidation of them be heard.
    listening: AtomicBool,
    unsent: Mutex<Unsent>,
}

/// Why the tier could not be set up (a bad URL; an unreachable Redis is not an error).
#[derive(Debug)]
pub struct FleetError(String);

impl std::fmt::Display for FleetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FleetError {}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn random_token() -> String {
    let mut bytes = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How long an image's generation is kept after its last bump: [`GENERATION_LIFE`], or
/// longer than any value or grant written before the bump can live.
fn generation_life(ttl: Duration) -> Duration {
    GENERATION_LIFE.max(ttl + Duration::from_secs(3600))
}

impl Fleet {
    /// Takes a reloaded `--ttl`: values and grants shared from now on are kept that long.
    pub fn retune(&self, ttl: Duration) {
        self.ttl.set(ttl);
        self.generation_life.set(generation_life(ttl));
    }

    /// A tier for `config`. Nothing is sent until it is used, so a Redis that is down at
    /// start-up only means misses until it is up.
    pub fn new(
        config: &RedisConfig,
        auth_mode: AuthMode,
        ttl: Duration,
        metrics: L2Metrics,
    ) -> Result<Fleet, FleetError> {
        let bad = |url: &str, e: redis::RedisError| {
            FleetError(format!("redis: {}: {:?}", redacted_url(url), e.kind()))
        };
        let read = |name: &str, path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| FleetError(format!("{name}: cannot read {}: {e}", path.display())))
        };
        let roots = match &config.ca_file {
            None => None,
            Some(path) => Some(read("redis-ca-file", path)?),
        };
        let client_tls = match &config.client_cert {
            None => None,
            Some((cert, key)) => Some(redis::ClientTlsConfig {
                client_cert: read("redis-cert-file", cert)?,
                client_key: read("redis-key-file", key)?,
            }),
        };
        let custom_tls = roots.is_some() || client_tls.is_some();
        let certificates = || redis::TlsCertificates {
            client_tls: client_tls.clone(),
            root_cert: roots.clone(),
        };
        let subscribe_to = config
            .urls
            .iter()
            .map(|url| {
                if custom_tls {
                    redis::Client::build_with_tls(url.as_str(), certificates())
                } else {
                    redis::Client::open(url.as_str())
                }
                .map_err(|e| bad(url, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let connect_timeout = config.timeout * CONNECT_DEADLINES;
        // The clients' own response deadline is a backstop: each command is bounded by
        // `--redis-timeout` in `run`, which must fire first to be counted as a timeout.
        let servers = if config.is_cluster() {
            let mut builder = ClusterClient::builder(config.urls.clone())
                .connection_timeout(connect_timeout)
                .response_timeout(config.timeout * 2)
                .retries(1);
            if custom_tls {
                builder = builder.certs(certificates());
            }
            let first = config.urls.first().map_or("", String::as_str);
            let client = builder.build().map_err(|e| bad(first, e))?;
            Servers::Cluster(Box::new(client))
        } else {
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(config.timeout * 2))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(1));
            let Some(client) = subscribe_to.first() else {
                return Err(FleetError("redis: no URL given".to_string()));
            };
            Servers::Single(Box::new((client.clone(), manager_config)))
        };
        metrics.set_enabled();
        let (filled, _) = broadcast::channel(1024);
        Ok(Fleet {
            commands: Commands::new(servers, config.timeout, metrics),
            subscribe_to,
            keys: Keys::new(&config.prefix, auth_mode),
            grants: config
                .grant_key
                .as_ref()
                .map(|key| GrantHasher::new(key.expose())),
            auth_mode,
            ttl: TunableDuration::new(ttl),
            timeout: config.timeout,
            lease: config.lease,
            generation_life: TunableDuration::new(generation_life(ttl)),
            filled,
            purged_before: AtomicU64::new(0),
            missed_messages: AtomicBool::new(false),
            listening: AtomicBool::new(false),
            unsent: Mutex::new(Unsent::default()),
        })
    }

    fn metrics(&self) -> &L2Metrics {
        self.commands.metrics()
    }

    /// Who the caller is to the fleet for image `id`: anyone (shared mode), its grant record
    /// (per-credential mode with a grant key and a credential), or `None` when its reads
    /// cannot be shared (per-credential without a grant key, or without a credential).
    pub fn reader(&self, id: &str, headers: &HeaderMap) -> Option<Reader> {
        match self.auth_mode {
            AuthMode::Shared => Some(Reader::Anyone),
            AuthMode::PerCredential => self
                .grants
                .as_ref()
                .and_then(|g| g.record(id, headers))
                .map(Reader::Credential),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_outlives_every_value_and_grant_of_it() {
        assert_eq!(generation_life(Duration::from_secs(60)), GENERATION_LIFE);
        let month = Duration::from_secs(30 * 24 * 3600);
        assert!(generation_life(month) > month);
    }
}
