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
//! a deadline; after [`CIRCUIT_FAILURES`] failures in a row the tier is skipped for
//! [`CIRCUIT_COOLDOWN`], the connections are remade, then one probe tries again. An instance
//! without Redis is a single-tier cache, never a broken one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue};
use tokio::sync::broadcast;

use crate::auth::GrantHasher;
use crate::config::{redacted_url, AuthMode, RedisConfig};
use crate::metrics::{FleetMessage, FleetWait, L2Metrics, L2Op, L2Result};
use crate::proxy::is_ready_image;

/// Failures in a row that open the circuit.
pub const CIRCUIT_FAILURES: u32 = 3;
/// How long an open circuit skips Redis before one probe tries it again.
pub const CIRCUIT_COOLDOWN: Duration = Duration::from_secs(5);
/// A waiter re-reads Redis at least this often, in case the `filled` message was lost.
const FALLBACK_POLL: Duration = Duration::from_millis(200);
/// How long to wait before the first retry of a pub/sub (re)connection (doubled each time).
const FIRST_RESUBSCRIBE_BACKOFF: Duration = Duration::from_millis(50);
/// How long to wait for a pub/sub (re)connection before trying again, at most.
const MAX_RESUBSCRIBE_BACKOFF: Duration = Duration::from_secs(5);
/// The subscription is pinged this often; a ping unanswered within a few command deadlines
/// means the connection went silent, and it is remade.
const SUBSCRIPTION_PING: Duration = Duration::from_secs(5);
/// Connecting may take this many command deadlines (TLS, a remote cluster's topology).
const CONNECT_DEADLINES: u32 = 4;
/// How long an image's invalidation generation is kept after its last bump, at least: far
/// longer than any fetch, so a fill never sees it vanish (and so mistake an old generation
/// for today's). See [`generation_life`].
const GENERATION_LIFE: Duration = Duration::from_secs(24 * 3600);
/// How long waiters fetch on their own after a fetch whose answer was not shared: enough
/// for the current waiters (they look again within [`FALLBACK_POLL`]), short enough that the
/// next burst coalesces again.
const NOT_SHARED_PASS: Duration = Duration::from_secs(1);
/// How much newer a reader's check in Redis must be than the one a refresh already has, to
/// count as a new one: its own check's record is written a moment after it was made.
const NEWER_CHECK_MARGIN: Duration = Duration::from_secs(1);
/// How often unsent invalidations are tried again.
const RETRY_UNSENT: Duration = Duration::from_secs(1);
/// Most unsent invalidations kept one by one; past that they become one purge of everything.
const MAX_UNSENT: usize = 10_000;
/// Most headers a shared value may carry.
const MAX_SHARED_HEADERS: usize = 64;
/// Start of a stored value: a format tag, so that anything else under our key is garbage.
const VALUE_MAGIC: &[u8; 4] = b"BIC1";

/// Writes the value (and the grant) only if the generation is still the one seen before the
/// fetch. KEYS: image, gen[, grant]; ARGV: value, expected gen, PX ms, grant record.
const PUBLISH_SCRIPT: &str = r"
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
if KEYS[3] then redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[3]) end
return 1";

/// Deletes the values (of every mode) and bumps the generation. KEYS: gen, image...;
/// ARGV: generation life ms.
const INVALIDATE_SCRIPT: &str = r"
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
local gen = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return gen";

/// A 404 that proves nothing by itself: invalidates the image as above only if there is a
/// shared value to end, and (with a grant, per-credential) only if the grant held, so the
/// credential could read that value and the image itself is gone. The grant is deleted
/// either way. Nothing is written for IDs that were never shared (a flood of made-up IDs
/// must not fill Redis). Returns 1 when it invalidated.
/// KEYS: gen, image (shared), image (per-credential)[, grant]; ARGV: generation life ms.
const NOT_FOUND_SCRIPT: &str = r"
if KEYS[4] then
  local grant = redis.call('GET', KEYS[4])
  if not grant then return 0 end
  redis.call('DEL', KEYS[4])
  if string.match(grant, '^[^:]*') ~= (redis.call('GET', KEYS[1]) or '0') then return 0 end
end
if redis.call('EXISTS', KEYS[2], KEYS[3]) == 0 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1";

/// Takes the lease unless a recent fetch was not shared. Returns 1 (taken), 0 (held by
/// another) or -1 (fetch alone). KEYS: lease, pass; ARGV: token, PX ms.
const LEASE_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0";

/// Extends a lease that is still the caller's. KEYS: lease; ARGV: token, PX ms.
const RENEW_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0";

/// Moves the purge time forward, never back (hosts' clocks differ). KEYS: purged-at; ARGV: ms.
const PURGE_SCRIPT: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1";

/// Deletes a lease only if it is still the caller's, and when its fetch was not shared
/// (pass ms > 0) lets the waiters fetch on their own. KEYS: lease, pass; ARGV: token, pass ms.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] ~= '0' then redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) end
return 1";

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

/// What the fleet says about a local miss.
pub enum Claim {
    /// Another instance already has it.
    Found(SharedAnswer),
    /// This instance should fetch, and may share what it gets with [`Ticket`].
    Fetch(Ticket),
}

/// What a fetch needs to share its answer: the generation seen before it started (none if
/// Redis could not be read: then nothing is shared), and the lease if it won one.
#[derive(Default)]
pub struct Ticket {
    generation: Option<String>,
    lease: Option<Lease>,
}

struct Lease {
    key: String,
    pass_key: String,
    token: String,
    /// The task that keeps the lease alive while the fetch runs; stopped with the lease.
    renewal: Option<tokio::task::AbortHandle>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(renewal) = &self.renewal {
            renewal.abort();
        }
    }
}

/// Invalidations Redis did not take (down or slow when they were sent): retried until it
/// does; meanwhile shared values from before them are not trusted here.
#[derive(Default)]
struct Unsent {
    /// Image ID → when it was invalidated (Unix ms).
    ids: HashMap<String, u64>,
    /// A purge of everything, and when.
    all: Option<u64>,
}

impl Unsent {
    fn count(&self) -> usize {
        self.ids.len() + usize::from(self.all.is_some())
    }
}

/// How a fetch ended, for the instances waiting on its lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Its answer is in Redis now.
    Shared,
    /// There is nothing to share for anyone (the image is not READY, gone, too big, or
    /// changed meanwhile): the waiters fetch on their own at once instead of queueing.
    NotShareable,
    /// It failed, or its answer was for its caller only (a refused token): the next waiter
    /// takes the lease, so an ailing API is not asked by all at once.
    Failed,
}

/// Which shared values a reader accepts.
#[derive(Clone, Copy)]
pub enum Accept {
    /// Any fresh one.
    Fresh,
    /// What a refresh wants, something newer than what it has: a value produced less than
    /// `value` ago and, per-credential, a check of the reader by the API clearly newer than
    /// `check` ago (not merely the record of the very check it already has).
    Newer { value: Duration, check: Duration },
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The command connection, made on first use and remade when the circuit opens: a
/// connection that went silent is never noticed by the client library itself.
struct Store {
    servers: Servers,
    current: RwLock<Option<Connection>>,
}

/// What a command connection is made from.
enum Servers {
    Single(Box<(redis::Client, ConnectionManagerConfig)>),
    Cluster(Box<ClusterClient>),
}

impl Store {
    async fn connection(&self) -> redis::RedisResult<Connection> {
        if let Some(connection) = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        {
            return Ok(connection);
        }
        let connection = match &self.servers {
            Servers::Single(single) => {
                let (client, config) = &**single;
                Connection::Single(ConnectionManager::new_lazy_with_config(
                    client.clone(),
                    config.clone(),
                )?)
            }
            Servers::Cluster(cluster) => Connection::Cluster(cluster.get_async_connection().await?),
        };
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(connection.clone());
        Ok(connection)
    }

    fn reset(&self) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

async fn query<T: FromRedisValue>(connection: Connection, cmd: &Cmd) -> redis::RedisResult<T> {
    match connection {
        Connection::Single(mut manager) => cmd.query_async(&mut manager).await,
        Connection::Cluster(mut cluster) => cmd.query_async(&mut cluster).await,
    }
}

/// Skips Redis for a while after repeated failures, then lets one probe through.
struct Circuit {
    failures: AtomicU32,
    /// Milliseconds since `base` until which Redis is skipped; 0 = closed.
    open_until: AtomicU64,
    base: Instant,
}

impl Circuit {
    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// Whether a command may be sent. Once the cooldown is over, the first caller to ask
    /// becomes the probe (the window moves on for everyone else).
    fn allows(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        now >= until
            && self
                .open_until
                .compare_exchange(
                    until,
                    now + CIRCUIT_COOLDOWN.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Returns whether the circuit was open (and is now closed).
    fn succeeded(&self) -> bool {
        self.failures.store(0, Ordering::Release);
        self.open_until.swap(0, Ordering::AcqRel) != 0
    }

    /// Returns whether this failure opened the circuit.
    fn failed(&self) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= CIRCUIT_FAILURES {
            let until = self.now_ms() + CIRCUIT_COOLDOWN.as_millis() as u64;
            return self.open_until.swap(until.max(1), Ordering::AcqRel) == 0;
        }
        false
    }
}

/// The Redis tier of one instance.
pub struct Fleet {
    store: Store,
    subscribe_to: Vec<redis::Client>,
    /// `--redis-prefix` and the auth mode: the start of every key.
    keys: String,
    /// `--redis-prefix`: the start of every channel.
    channels: String,
    grants: Option<GrantHasher>,
    auth_mode: AuthMode,
    ttl: Duration,
    timeout: Duration,
    lease: Duration,
    generation_life: Duration,
    max_entry_size: usize,
    circuit: Circuit,
    metrics: L2Metrics,
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

impl Fleet {
    /// A tier for `config`. Nothing is sent until it is used, so a Redis that is down at
    /// start-up only means misses until it is up.
    pub fn new(
        config: &RedisConfig,
        auth_mode: AuthMode,
        ttl: Duration,
        max_entry_size: usize,
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
        let store = if config.is_cluster() {
            let mut builder = ClusterClient::builder(config.urls.clone())
                .connection_timeout(connect_timeout)
                .response_timeout(config.timeout * 2)
                .retries(1);
            if custom_tls {
                builder = builder.certs(certificates());
            }
            let client = builder.build().map_err(|e| bad(&config.urls[0], e))?;
            Store {
                servers: Servers::Cluster(Box::new(client)),
                current: RwLock::new(None),
            }
        } else {
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(config.timeout * 2))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(1));
            Store {
                servers: Servers::Single(Box::new((subscribe_to[0].clone(), manager_config))),
                current: RwLock::new(None),
            }
        };
        metrics.set_enabled();
        let (filled, _) = broadcast::channel(1024);
        Ok(Fleet {
            store,
            subscribe_to,
            keys: format!("{}{}:", config.prefix, auth_mode.as_str()),
            channels: config.prefix.clone(),
            grants: config
                .grant_key
                .as_ref()
                .map(|key| GrantHasher::new(key.expose())),
            auth_mode,
            ttl,
            timeout: config.timeout,
            lease: config.lease,
            max_entry_size,
            generation_life: generation_life(ttl),
            circuit: Circuit {
                failures: AtomicU32::new(0),
                open_until: AtomicU64::new(0),
                base: Instant::now(),
            },
            metrics,
            filled,
            purged_before: AtomicU64::new(0),
            missed_messages: AtomicBool::new(false),
            listening: AtomicBool::new(false),
            unsent: Mutex::new(Unsent::default()),
        })
    }

    fn image_key(&self, id: &str) -> String {
        format!("{}image:{{{id}}}", self.keys)
    }

    /// The image's values in every mode: an invalidation reaches instances in the other.
    fn image_keys_of_every_mode(&self, id: &str) -> [String; 2] {
        [AuthMode::Shared, AuthMode::PerCredential]
            .map(|mode| format!("{}{}:image:{{{id}}}", self.channels, mode.as_str()))
    }

    fn generation_key(&self, id: &str) -> String {
        format!("{}gen:{{{id}}}", self.channels)
    }

    fn grant_key(&self, id: &str, record: &str) -> String {
        format!("{}grant:{{{id}}}:{record}", self.keys)
    }

    fn lease_key(&self, id: &str, reader: Option<&str>) -> String {
        match reader {
            Some(record) => format!("{}lease:{{{id}}}:{record}", self.keys),
            None => format!("{}lease:{{{id}}}", self.keys),
        }
    }

    fn pass_key(&self, id: &str, reader: Option<&str>) -> String {
        match reader {
            Some(record) => format!("{}pass:{{{id}}}:{record}", self.keys),
            None => format!("{}pass:{{{id}}}", self.keys),
        }
    }

    fn purge_key(&self) -> String {
        format!("{}purged-at", self.channels)
    }

    fn channel(&self, name: &str) -> String {
        format!("{}{name}", self.channels)
    }

    /// The caller's shared authorization record, if the fleet can know who may read `id`:
    /// `Some(None)` in shared mode (everyone may), `Some(Some(record))` in per-credential mode
    /// with a grant key and a credential, `None` when reads must not be shared.
    pub fn reader(&self, id: &str, headers: &HeaderMap) -> Option<Option<String>> {
        match self.auth_mode {
            AuthMode::Shared => Some(None),
            AuthMode::PerCredential => self
                .grants
                .as_ref()
                .and_then(|g| g.record(id, headers))
                .map(Some),
        }
    }

    /// Runs one command under the deadlines and the circuit; failures are counted here,
    /// successes by the caller (who knows whether it was a hit).
    async fn run<T: FromRedisValue>(&self, op: L2Op, cmd: &Cmd) -> Result<T, ()> {
        if !self.circuit.allows() {
            self.metrics
                .operation(op, L2Result::Skipped, Duration::ZERO);
            return Err(());
        }
        let started = Instant::now();
        // Twice the clients' own connect timeout: a cluster client tries its seeds in turn.
        let connect_within = self.timeout * (2 * CONNECT_DEADLINES);
        let result = match tokio::time::timeout(connect_within, self.store.connection()).await {
            Ok(Ok(connection)) => {
                match tokio::time::timeout(self.timeout, query::<T>(connection, cmd)).await {
                    Ok(result) => Ok(result),
                    Err(elapsed) => Err(elapsed),
                }
            }
            Ok(Err(e)) => Ok(Err(e)),
            Err(elapsed) => Err(elapsed),
        };
        let failure = match result {
            Ok(Ok(value)) => {
                if self.circuit.succeeded() {
                    self.metrics.set_circuit_open(false);
                    tracing::info!("redis is answering again; the fleet tier is back");
                }
                return Ok(value);
            }
            Ok(Err(e)) => {
                tracing::debug!(op = op.as_str(), error = ?e.kind(), "redis command failed");
                L2Result::Error
            }
            Err(_) => L2Result::Timeout,
        };
        self.metrics.operation(op, failure, started.elapsed());
        if self.circuit.failed() {
            // A connection that stopped answering is not replaced by the client library.
            self.store.reset();
            self.metrics.set_circuit_open(true);
            tracing::warn!(
                op = op.as_str(),
                result = failure.as_str(),
                "redis keeps failing; skipping the fleet tier for {CIRCUIT_COOLDOWN:?}"
            );
        }
        Err(())
    }

    /// [`Fleet::run`] for a command whose success needs no telling apart: counted `ok`.
    async fn run_counted<T: FromRedisValue>(&self, op: L2Op, cmd: &Cmd) -> Result<T, ()> {
        let started = Instant::now();
        let result = self.run(op, cmd).await;
        if result.is_ok() {
            self.metrics.operation(op, L2Result::Ok, started.elapsed());
        }
        result
    }

    /// Reads the shared answer for `id` that `reader` may be given, if there is one, with
    /// the image's current generation (`Err` if Redis could not be read).
    async fn read(
        &self,
        id: &str,
        reader: Option<&str>,
        accept: Accept,
    ) -> Result<(Option<SharedAnswer>, String), ()> {
        let started = Instant::now();
        let mut mget = redis::cmd("MGET");
        mget.arg(self.image_key(id)).arg(self.generation_key(id));
        if let Some(record) = reader {
            mget.arg(self.grant_key(id, record));
        }
        let values: Vec<Option<Vec<u8>>> = self.run(L2Op::Get, &mget).await?;
        let mut values = values.into_iter();
        let (value, generation, grant) = (
            values.next().flatten(),
            values.next().flatten(),
            values.next().flatten(),
        );
        let generation = generation
            .and_then(|g| String::from_utf8(g).ok())
            .unwrap_or_else(|| "0".to_string());
        let miss = |result| {
            self.metrics.operation(L2Op::Get, result, started.elapsed());
            Ok((None, generation.clone()))
        };
        let Some(value) = value else {
            return miss(L2Result::Miss);
        };
        if !self.listening.load(Ordering::Acquire) {
            return miss(L2Result::Miss);
        }
        let Some((produced_ms, answer)) = decode(&value) else {
            tracing::warn!("the shared value of an image does not decode; ignoring it");
            return miss(L2Result::Garbage);
        };
        // Only READY images are ever written, but Redis is not ours alone: check again.
        if answer.status != StatusCode::OK
            || answer.body.len() > self.max_entry_size
            || !is_ready_image(id, &answer.body)
        {
            tracing::warn!("the shared value of an image is not a READY image of that ID");
            return miss(L2Result::Garbage);
        }
        // Nothing from before the last purge, nor from before an invalidation Redis missed.
        let purged_before = self
            .purged_before
            .load(Ordering::Acquire)
            .max(self.unsent_since(id));
        // Another host's clock may be a little ahead: an answer from the future is new.
        let age = Duration::from_millis(unix_ms(SystemTime::now()).saturating_sub(produced_ms));
        let young_enough = match accept {
            Accept::Fresh => true,
            Accept::Newer { value, .. } => age < value,
        };
        if age >= self.ttl || !young_enough || produced_ms < purged_before {
            return miss(L2Result::Miss);
        }
        let now_ms = unix_ms(SystemTime::now());
        let granted_age = match reader {
            None => age,
            Some(_) => match grant_holds(grant.as_deref(), &generation, purged_before) {
                Some(written_ms) => Duration::from_millis(now_ms.saturating_sub(written_ms)),
                None => return miss(L2Result::Miss),
            },
        };
        let checked_since = match (accept, reader) {
            (Accept::Newer { check, .. }, Some(_)) => granted_age + NEWER_CHECK_MARGIN < check,
            _ => true,
        };
        if granted_age >= self.ttl || !checked_since {
            return miss(L2Result::Miss);
        }
        self.metrics
            .operation(L2Op::Get, L2Result::Ok, started.elapsed());
        let answer = SharedAnswer {
            age,
            granted_age,
            ..answer
        };
        Ok((Some(answer), generation))
    }

    /// Finds `id` in the fleet, or decides who fetches it: this instance with the lease,
    /// after waiting for the instance that holds it, or alone when Redis is unavailable or
    /// `wait_until` comes.
    pub async fn claim(
        self: &Arc<Self>,
        id: &str,
        reader: Option<&str>,
        accept: Accept,
        wait_until: Instant,
    ) -> Claim {
        // Subscribed before the first read, so a fill that lands in between still wakes us.
        let mut filled = self.filled.subscribe();
        let lease_key = self.lease_key(id, reader);
        let pass_key = self.pass_key(id, reader);
        let token = random_token();
        let mut waited = false;
        let gave_up = |waited: bool, generation: Option<String>| {
            if waited {
                self.metrics.waited(FleetWait::GaveUp);
            }
            Claim::Fetch(Ticket {
                generation,
                lease: None,
            })
        };
        loop {
            let generation = match self.read(id, reader, accept).await {
                Ok((Some(found), _)) => {
                    if waited {
                        self.metrics.waited(FleetWait::Filled);
                    }
                    return Claim::Found(found);
                }
                Ok((None, generation)) => generation,
                Err(()) => return gave_up(waited, None),
            };
            if !self.listening.load(Ordering::Acquire) {
                // Whatever another instance fills could not be taken: no use waiting for it.
                return gave_up(waited, Some(generation));
            }
            let started = Instant::now();
            let won: Result<i64, ()> = self
                .run(
                    L2Op::Lease,
                    redis::cmd("EVAL")
                        .arg(LEASE_SCRIPT)
                        .arg(2)
                        .arg(&lease_key)
                        .arg(&pass_key)
                        .arg(&token)
                        .arg(self.lease.as_millis() as u64),
                )
                .await;
            match won {
                Ok(1) => {
                    self.metrics
                        .operation(L2Op::Lease, L2Result::Ok, started.elapsed());
                    let lease = Lease {
                        renewal: Some(self.keep_alive(&lease_key, &token)),
                        key: lease_key,
                        pass_key,
                        token,
                    };
                    // The previous holder may have published and let go of the lease between
                    // our read and our win: look once more before fetching.
                    let generation = match self.read(id, reader, accept).await {
                        Ok((Some(found), _)) => {
                            self.release_lease(lease, Fill::Shared).await;
                            if waited {
                                self.metrics.waited(FleetWait::Filled);
                            }
                            return Claim::Found(found);
                        }
                        Ok((None, generation)) => Some(generation),
                        Err(()) => None,
                    };
                    if waited {
                        self.metrics.waited(FleetWait::TakenOver);
                    }
                    return Claim::Fetch(Ticket {
                        generation,
                        lease: Some(lease),
                    });
                }
                Ok(-1) => {
                    // The last fetch's answer was not shared: queueing would only serialise
                    // the fleet's fetches of something no one can share.
                    self.metrics
                        .operation(L2Op::Lease, L2Result::Miss, started.elapsed());
                    if waited {
                        self.metrics.waited(FleetWait::NotShared);
                    }
                    return Claim::Fetch(Ticket {
                        generation: Some(generation),
                        lease: None,
                    });
                }
                Ok(_) => {
                    self.metrics
                        .operation(L2Op::Lease, L2Result::Miss, started.elapsed());
                }
                Err(()) => return gave_up(waited, Some(generation)),
            }
            let now = Instant::now();
            if now >= wait_until {
                return gave_up(true, Some(generation));
            }
            waited = true;
            let poll_until = (now + FALLBACK_POLL).min(wait_until);
            loop {
                tokio::select! {
                    message = filled.recv() => match message {
                        Ok(filled_id) if &*filled_id != id => continue,
                        // Ours, or some were missed (lagged): look again.
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => {
                            tokio::time::sleep_until(poll_until.into()).await;
                            break;
                        }
                    },
                    _ = tokio::time::sleep_until(poll_until.into()) => break,
                }
            }
        }
    }

    /// A ticket for a fetch that does not read the fleet first (`no-cache`): it may still
    /// share its answer, if the image is not invalidated meanwhile.
    pub async fn ticket(&self, id: &str) -> Ticket {
        let started = Instant::now();
        let generation: Result<Option<String>, ()> = self
            .run(L2Op::Get, redis::cmd("GET").arg(self.generation_key(id)))
            .await;
        if generation.is_ok() {
            self.metrics
                .operation(L2Op::Get, L2Result::Miss, started.elapsed());
        }
        Ticket {
            generation: generation
                .ok()
                .map(|g| g.unwrap_or_else(|| "0".to_string())),
            lease: None,
        }
    }

    /// Shares a READY answer produced at `produced` (by this host's wall clock), grants it to
    /// `reader`, and wakes the instances waiting for it; only if the image was not
    /// invalidated since `ticket` was taken. The lease, if any, is given up either way.
    pub async fn publish(
        &self,
        id: &str,
        reader: Option<&str>,
        answer: &SharedAnswer,
        produced: SystemTime,
        ticket: Ticket,
    ) {
        let left = self.ttl.saturating_sub(answer.age);
        let px = left.as_millis() as u64;
        let mut fill = Fill::Failed;
        if let (Some(generation), true) = (&ticket.generation, px > 0) {
            let produced_ms = unix_ms(produced);
            let mut script = redis::cmd("EVAL");
            script
                .arg(PUBLISH_SCRIPT)
                .arg(if reader.is_some() { 3 } else { 2 })
                .arg(self.image_key(id))
                .arg(self.generation_key(id));
            if let Some(record) = reader {
                script.arg(self.grant_key(id, record));
            }
            script
                .arg(encode(produced_ms, answer))
                .arg(generation)
                .arg(px)
                .arg(format!("{generation}:{produced_ms}"));
            let started = Instant::now();
            let stored: Result<i64, ()> = self.run(L2Op::Set, &script).await;
            match stored {
                Ok(1) => {
                    self.metrics
                        .operation(L2Op::Set, L2Result::Ok, started.elapsed());
                    fill = Fill::Shared;
                }
                Ok(_) => {
                    // Invalidated while we fetched: what we have may be the old image.
                    self.metrics
                        .operation(L2Op::Set, L2Result::Miss, started.elapsed());
                    fill = Fill::NotShareable;
                }
                Err(()) => {}
            }
        }
        self.release(ticket, id, fill).await;
    }

    /// Gives up the ticket's lease, if any, after a fetch whose answer is not shared: the
    /// waiting instances fetch on their own at once.
    pub async fn release(&self, ticket: Ticket, id: &str, fill: Fill) {
        let held_lease = ticket.lease.is_some();
        if let Some(lease) = ticket.lease {
            self.release_lease(lease, fill).await;
        }
        // Waiters look again at once: they find the value, the pass to fetch on their own,
        // or a free lease. (A no-cache fetch holds no lease, but its value may end a wait.)
        if fill == Fill::Shared || held_lease {
            self.announce("filled", id).await;
        }
    }

    async fn release_lease(&self, lease: Lease, fill: Fill) {
        let pass = match fill {
            Fill::NotShareable => NOT_SHARED_PASS.min(self.lease).as_millis() as u64,
            Fill::Shared | Fill::Failed => 0,
        };
        let _: Result<i64, ()> = self
            .run_counted(
                L2Op::Delete,
                redis::cmd("EVAL")
                    .arg(RELEASE_SCRIPT)
                    .arg(2)
                    .arg(&lease.key)
                    .arg(&lease.pass_key)
                    .arg(&lease.token)
                    .arg(pass),
            )
            .await;
    }

    /// Keeps a lease alive while its fetch runs (a slow API must not hand the fetch to
    /// another instance every `--redis-lease`); it stops when the lease is dropped, or if
    /// the lease is lost.
    fn keep_alive(self: &Arc<Self>, key: &str, token: &str) -> tokio::task::AbortHandle {
        let fleet = Arc::downgrade(self);
        let every = (self.lease / 4).max(Duration::from_millis(10));
        let (key, token) = (key.to_string(), token.to_string());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(this) = fleet.upgrade() else { return };
                // (Failures count as lease errors; a renewal is not a lease won.)
                let renewed: Result<i64, ()> = this
                    .run(
                        L2Op::Lease,
                        redis::cmd("EVAL")
                            .arg(RENEW_SCRIPT)
                            .arg(1)
                            .arg(&key)
                            .arg(&token)
                            .arg(this.lease.as_millis() as u64),
                    )
                    .await;
                if renewed == Ok(0) {
                    return;
                }
            }
        })
        .abort_handle()
    }

    /// Drops `id` everywhere: the shared value and every grant of it, and (by message)
    /// every instance's copy.
    pub async fn invalidate(&self, id: &str) {
        let at = unix_ms(SystemTime::now());
        if !self.send_invalidation(id).await {
            self.keep_unsent(Some(id), at);
        }
    }

    /// Deletes the values, bumps the generation and tells the fleet; whether Redis took it.
    async fn send_invalidation(&self, id: &str) -> bool {
        let mut script = redis::cmd("EVAL");
        script
            .arg(INVALIDATE_SCRIPT)
            .arg(3)
            .arg(self.generation_key(id))
            .arg(&self.image_keys_of_every_mode(id)[..])
            .arg(self.generation_life.as_millis() as u64);
        let deleted: Result<i64, ()> = self.run_counted(L2Op::Delete, &script).await;
        deleted.is_ok() && self.announce("invalidate", id).await
    }

    /// Forgets that `reader` may read `id`: the API refused it (401, 403). If the fleet
    /// held that grant, other instances may have taken it into their own caches, so they
    /// are told to drop their copies of `id` (and take the others' grants from Redis again,
    /// where this one is gone). A credential that never held a grant (forged, another
    /// tenant's) tells no one anything.
    pub async fn revoke(&self, id: &str, reader: &str) {
        let deleted: Result<i64, ()> = self
            .run_counted(
                L2Op::Delete,
                redis::cmd("DEL").arg(self.grant_key(id, reader)),
            )
            .await;
        if deleted == Ok(1) {
            self.announce("invalidate", id).await;
        }
    }

    /// A mutation of `id` got no answer that says whether it was made (a timeout, a 5xx):
    /// invalidates it as [`Fleet::invalidate`] does, but only if Redis holds a value of it,
    /// so that requests nobody can tell apart from refused ones write nothing for IDs the
    /// fleet never shared.
    pub async fn invalidate_if_shared(&self, id: &str) {
        let mut script = redis::cmd("EVAL");
        script
            .arg(NOT_FOUND_SCRIPT)
            .arg(3)
            .arg(self.generation_key(id))
            .arg(&self.image_keys_of_every_mode(id)[..])
            .arg(self.generation_life.as_millis() as u64);
        let invalidated: Result<i64, ()> = self.run_counted(L2Op::Delete, &script).await;
        if invalidated == Ok(1) {
            self.announce("invalidate", id).await;
        }
    }

    /// The API answered 404 for `id`, and this instance dropped no copy of it: ends the
    /// shared value if there is one (and, per-credential, `reader`'s grant held), and tells
    /// the fleet (in shared mode, always). Forgets `reader`'s grant either way. If Redis
    /// cannot be asked, nothing is kept for later: such a 404 may be for an ID that never
    /// existed.
    pub async fn not_found(&self, id: &str, reader: Option<&str>) {
        let mut script = redis::cmd("EVAL");
        script
            .arg(NOT_FOUND_SCRIPT)
            .arg(if reader.is_some() { 4 } else { 3 })
            .arg(self.generation_key(id))
            .arg(&self.image_keys_of_every_mode(id)[..]);
        if let Some(record) = reader {
            script.arg(self.grant_key(id, record));
        }
        script.arg(self.generation_life.as_millis() as u64);
        let invalidated: Result<i64, ()> = self.run_counted(L2Op::Delete, &script).await;
        // In shared mode the 404 is everyone's: other instances may hold copies that Redis
        // does not (evicted, or filled while Redis was away), so they hear it either way.
        // The message writes nothing, unlike the generation.
        if invalidated == Ok(1) || (reader.is_none() && invalidated.is_ok()) {
            let told = self.announce("invalidate", id).await;
            if !told && invalidated == Ok(1) {
                self.keep_unsent(Some(id), unix_ms(SystemTime::now()));
            }
        }
    }

    /// Drops every image everywhere: values and grants produced before now are ignored from
    /// now on.
    pub async fn invalidate_all(&self) {
        let at = unix_ms(SystemTime::now());
        self.purged_before.fetch_max(at, Ordering::AcqRel);
        if !self.send_purge(at).await {
            self.keep_unsent(None, at);
        }
    }

    /// Records the purge time and tells the fleet; whether Redis took it.
    async fn send_purge(&self, at: u64) -> bool {
        let recorded: Result<i64, ()> = self
            .run_counted(
                L2Op::Set,
                redis::cmd("EVAL")
                    .arg(PURGE_SCRIPT)
                    .arg(1)
                    .arg(self.purge_key())
                    .arg(at),
            )
            .await;
        recorded.is_ok() && self.announce("invalidate", &format!("*:{at}")).await
    }

    /// Keeps an invalidation of `id` (`None`: of everything) made at `at` that Redis did
    /// not take, for [`Fleet::retry_unsent`].
    fn keep_unsent(&self, id: Option<&str>, at: u64) {
        let mut unsent = self.unsent.lock().unwrap_or_else(|e| e.into_inner());
        match id {
            Some(id) if unsent.ids.len() < MAX_UNSENT || unsent.ids.contains_key(id) => {
                let since = unsent.ids.entry(id.to_string()).or_insert(at);
                *since = (*since).max(at);
            }
            // Too many to keep one by one: one purge of everything covers them all.
            _ => {
                self.purged_before.fetch_max(at, Ordering::AcqRel);
                unsent.all = Some(unsent.all.unwrap_or(0).max(at));
                unsent.ids.clear();
            }
        }
        self.metrics.set_unsent(unsent.count());
    }

    /// Since when shared values of `id` are not to be trusted here (an invalidation of it
    /// has not reached Redis yet); 0 if none.
    fn unsent_since(&self, id: &str) -> u64 {
        let unsent = self.unsent.lock().unwrap_or_else(|e| e.into_inner());
        unsent.ids.get(id).copied().unwrap_or(0)
    }

    /// Sends the unsent invalidations again every [`RETRY_UNSENT`] until Redis takes them,
    /// for as long as the fleet lives.
    pub fn retry_unsent(self: &Arc<Self>) {
        let fleet = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RETRY_UNSENT);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(this) = fleet.upgrade() else { return };
                let (all, ids) = {
                    let unsent = this.unsent.lock().unwrap_or_else(|e| e.into_inner());
                    if unsent.count() == 0 {
                        continue;
                    }
                    let ids: Vec<(String, u64)> = unsent
                        .ids
                        .iter()
                        .map(|(id, at)| (id.clone(), *at))
                        .collect();
                    (unsent.all, ids)
                };
                if let Some(at) = all {
                    if !this.send_purge(at).await {
                        continue;
                    }
                    let mut unsent = this.unsent.lock().unwrap_or_else(|e| e.into_inner());
                    if unsent.all == Some(at) {
                        unsent.all = None;
                    }
                    this.metrics.set_unsent(unsent.count());
                }
                for (id, at) in ids {
                    if !this.send_invalidation(&id).await {
                        break;
                    }
                    let mut unsent = this.unsent.lock().unwrap_or_else(|e| e.into_inner());
                    // Not if it was invalidated again meanwhile: that one is still to send.
                    if unsent.ids.get(&id) == Some(&at) {
                        unsent.ids.remove(&id);
                    }
                    this.metrics.set_unsent(unsent.count());
                }
            }
        });
    }

    /// Whether Redis took the message.
    async fn announce(&self, channel: &str, id: &str) -> bool {
        let published: Result<i64, ()> = self
            .run_counted(
                L2Op::Publish,
                redis::cmd("PUBLISH").arg(self.channel(channel)).arg(id),
            )
            .await;
        published.is_ok()
    }

    /// Listens to the fleet until `owner` is dropped: `filled` messages wake local waiters,
    /// `invalidate` messages reach `on_invalidate` (`None` = everything). After a gap in the
    /// subscription (or if it could not be made at first), messages may have been missed, so
    /// everything local is dropped too.
    pub fn listen<T, F>(
        self: &Arc<Self>,
        owner: Weak<T>,
        on_invalidate: impl Fn(Arc<T>, Option<String>) -> F + Send + Sync + 'static,
    ) where
        T: Send + Sync + 'static,
        F: std::future::Future<Output = ()> + Send,
    {
        let fleet = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = FIRST_RESUBSCRIBE_BACKOFF;
            let mut seed = 0usize;
            loop {
                let Some(this) = fleet.upgrade() else { return };
                let client = this.subscribe_to[seed % this.subscribe_to.len()].clone();
                seed = seed.wrapping_add(1);
                let channels = [this.channel("invalidate"), this.channel("filled")];
                // Both connecting and a ping's answer may take a few command deadlines.
                let within = this.timeout * CONNECT_DEADLINES;
                drop(this);
                let subscribed = tokio::time::timeout(within, async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channels).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                })
                .await;
                let Ok(Ok(pubsub)) = subscribed else {
                    // Once per streak of failures (a wrong URL, TLS or ACL would else be silent).
                    if backoff == FIRST_RESUBSCRIBE_BACKOFF {
                        match &subscribed {
                            Ok(Err(e)) => tracing::warn!(
                                error = %e,
                                "cannot subscribe to the fleet; retrying (no shared values meanwhile)"
                            ),
                            _ => tracing::warn!(
                                "cannot subscribe to the fleet: no answer in {within:?}; retrying \
                                 (no shared values meanwhile)"
                            ),
                        }
                    }
                    if let Some(this) = fleet.upgrade() {
                        this.missed_messages.store(true, Ordering::Release);
                    }
                    if owner.strong_count() == 0 {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RESUBSCRIBE_BACKOFF);
                    continue;
                };
                backoff = FIRST_RESUBSCRIBE_BACKOFF;
                {
                    let Some(this) = fleet.upgrade() else { return };
                    // Without the time of the last purge, older values could be served: try
                    // the whole subscription again rather than go on without it.
                    if !this.load_purge_time().await {
                        this.missed_messages.store(true, Ordering::Release);
                        drop(this);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_RESUBSCRIBE_BACKOFF);
                        continue;
                    }
                    if this.missed_messages.swap(false, Ordering::AcqRel) {
                        this.metrics.message(FleetMessage::Resync);
                        let Some(owner) = owner.upgrade() else { return };
                        on_invalidate(owner, None).await;
                    }
                    this.listening.store(true, Ordering::Release);
                    this.metrics.set_subscribed(true);
                }
                let (mut sink, mut messages) = pubsub.split();
                let mut ping = tokio::time::interval(SUBSCRIPTION_PING);
                ping.tick().await;
                loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        _ = ping.tick() => {
                            // Also how a dropped proxy is noticed by this task.
                            if owner.strong_count() == 0 { return; }
                            let pong = tokio::time::timeout(within, sink.ping::<redis::Value>()).await;
                            // (A subscribed connection answers a PING with ["pong", ""].)
                            if matches!(pong, Ok(Ok(_))) { continue; }
                            None
                        }
                    };
                    let Some(message) = message else { break };
                    let Some(this) = fleet.upgrade() else { return };
                    let payload = message.get_payload_bytes();
                    let Ok(id) = std::str::from_utf8(payload) else {
                        continue;
                    };
                    if message.get_channel_name().ends_with("filled") {
                        this.metrics.message(FleetMessage::Filled);
                        let _ = this.filled.send(Arc::from(id));
                    } else {
                        this.metrics.message(FleetMessage::Invalidate);
                        let Some(owner) = owner.upgrade() else { return };
                        if let Some(at) = id.strip_prefix('*') {
                            // `*:ms`: the purge's time comes with it, so it holds here even if
                            // Redis cannot be read right now.
                            match at.strip_prefix(':').and_then(|ms| ms.parse::<u64>().ok()) {
                                Some(ms) => {
                                    this.purged_before.fetch_max(ms, Ordering::AcqRel);
                                }
                                None => {
                                    if !this.load_purge_time().await {
                                        this.missed_messages.store(true, Ordering::Release);
                                    }
                                }
                            }
                            on_invalidate(owner, None).await;
                        } else {
                            on_invalidate(owner, Some(id.to_string())).await;
                        }
                    }
                }
                if let Some(this) = fleet.upgrade() {
                    this.listening.store(false, Ordering::Release);
                    this.metrics.set_subscribed(false);
                    this.missed_messages.store(true, Ordering::Release);
                }
                tracing::warn!("the fleet subscription was lost; reconnecting");
            }
        });
    }

    /// Learns of purges made while this instance was not listening. (Its success is not
    /// counted as a `get`, which counts image reads.)
    async fn load_purge_time(&self) -> bool {
        let value: Result<Option<String>, ()> = self
            .run(L2Op::Get, redis::cmd("GET").arg(self.purge_key()))
            .await;
        match value {
            Err(()) => false,
            Ok(value) => {
                if let Some(ms) = value.and_then(|v| v.parse::<u64>().ok()) {
                    self.purged_before.fetch_max(ms, Ordering::AcqRel);
                }
                true
            }
        }
    }
}

/// How long an image's generation is kept after its last bump: [`GENERATION_LIFE`], or
/// longer than any value or grant written before the bump can live.
fn generation_life(ttl: Duration) -> Duration {
    GENERATION_LIFE.max(ttl + Duration::from_secs(3600))
}

/// When a grant record (`{generation}:{written at, Unix ms}`) was written, if it still
/// stands: made in the image's current generation, and not before the last purge.
fn grant_holds(grant: Option<&[u8]>, generation: &str, purged_before: u64) -> Option<u64> {
    let grant = std::str::from_utf8(grant?).ok()?;
    let (granted_in, written) = grant.split_once(':')?;
    let written = written.parse::<u64>().ok()?;
    (granted_in == generation && written >= purged_before).then_some(written)
}

/// `BIC1`, produced-at (Unix ms, u64), status (u16), header count (u16), each header as
/// name length (u16), name, value length (u16), value; then the body.
fn encode(produced_ms: u64, answer: &SharedAnswer) -> Vec<u8> {
    let mut out = Vec::with_capacity(answer.body.len() + 64);
    out.extend_from_slice(VALUE_MAGIC);
    out.extend_from_slice(&produced_ms.to_be_bytes());
    out.extend_from_slice(&answer.status.as_u16().to_be_bytes());
    let headers: Vec<_> = answer
        .headers
        .iter()
        .filter(|(name, value)| name.as_str().len() <= 0xffff && value.len() <= 0xffff)
        .take(MAX_SHARED_HEADERS)
        .collect();
    out.extend_from_slice(&(headers.len() as u16).to_be_bytes());
    for (name, value) in headers {
        out.extend_from_slice(&(name.as_str().len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(&answer.body);
    out
}

/// The inverse of [`encode`]; `None` for anything that is not a whole, valid value.
fn decode(value: &[u8]) -> Option<(u64, SharedAnswer)> {
    let mut rest = value.strip_prefix(VALUE_MAGIC.as_slice())?;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head)
    };
    let produced_ms = u64::from_be_bytes(take(8)?.try_into().ok()?);
    let status = StatusCode::from_u16(u16::from_be_bytes(take(2)?.try_into().ok()?)).ok()?;
    let count = u16::from_be_bytes(take(2)?.try_into().ok()?);
    // We never write more; a bigger count is garbage (and must not size an allocation).
    if usize::from(count) > MAX_SHARED_HEADERS {
        return None;
    }
    let mut headers = HeaderMap::new();
    for _ in 0..count {
        let len = u16::from_be_bytes(take(2)?.try_into().ok()?);
        let name = HeaderName::from_bytes(take(usize::from(len))?).ok()?;
        let len = u16::from_be_bytes(take(2)?.try_into().ok()?);
        let value = HeaderValue::from_bytes(take(usize::from(len))?).ok()?;
        headers.try_append(name, value).ok()?;
    }
    let body = Bytes::copy_from_slice(rest);
    Some((
        produced_ms,
        SharedAnswer {
            status,
            headers,
            body,
            age: Duration::ZERO,
            granted_age: Duration::ZERO,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> SharedAnswer {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-extra", HeaderValue::from_static("1"));
        SharedAnswer {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"{\"id\":\"ly5a\",\"status\":\"READY\"}"),
            age: Duration::ZERO,
            granted_age: Duration::ZERO,
        }
    }

    #[test]
    fn values_round_trip() {
        let original = answer();
        let (produced, decoded) = decode(&encode(1_700_000_000_123, &original)).unwrap();
        assert_eq!(produced, 1_700_000_000_123);
        assert_eq!(decoded.status, original.status);
        assert_eq!(decoded.headers, original.headers);
        assert_eq!(decoded.body, original.body);
    }

    #[test]
    fn garbage_and_truncated_values_are_refused() {
        let value = encode(1, &answer());
        assert!(decode(b"").is_none());
        assert!(decode(b"{\"id\":\"ly5a\"}").is_none());
        // Cut inside the header block: refused. (Cut inside the body cannot be told apart
        // from a shorter body; Redis stores values whole.)
        for cut in 0..(4 + 8 + 2 + 2 + 2 + 12 + 2) {
            assert!(decode(&value[..cut]).is_none(), "cut at {cut}");
        }
        let mut bad_status = value.clone();
        bad_status[12] = 0;
        bad_status[13] = 7;
        assert!(decode(&bad_status).is_none());
    }

    #[test]
    fn a_huge_header_count_is_garbage_not_an_allocation() {
        let mut value = Vec::from(&VALUE_MAGIC[..]);
        value.extend_from_slice(&1u64.to_be_bytes());
        value.extend_from_slice(&200u16.to_be_bytes());
        value.extend_from_slice(&u16::MAX.to_be_bytes());
        value.extend_from_slice(&[0u8; 64]);
        assert!(decode(&value).is_none());
    }

    #[test]
    fn a_generation_outlives_every_value_and_grant_of_it() {
        assert_eq!(generation_life(Duration::from_secs(60)), GENERATION_LIFE);
        let month = Duration::from_secs(30 * 24 * 3600);
        assert!(generation_life(month) > month);
    }

    #[test]
    fn grants_hold_only_in_their_generation_and_after_the_last_purge() {
        assert_eq!(grant_holds(Some(b"3:1000"), "3", 999), Some(1000));
        assert_eq!(grant_holds(Some(b"3:1000"), "3", 1000), Some(1000));
        assert_eq!(grant_holds(Some(b"3:1000"), "4", 0), None);
        assert_eq!(grant_holds(Some(b"3:1000"), "3", 1001), None);
        assert_eq!(grant_holds(Some(b"1"), "1", 0), None);
        assert_eq!(grant_holds(None, "0", 0), None);
    }

    #[test]
    fn circuit_opens_after_repeated_failures_and_closes_on_success() {
        let circuit = Circuit {
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            base: Instant::now(),
        };
        assert!(circuit.allows());
        for _ in 1..CIRCUIT_FAILURES {
            assert!(!circuit.failed());
            assert!(circuit.allows());
        }
        assert!(circuit.failed());
        assert!(!circuit.allows());
        assert!(circuit.succeeded());
        assert!(circuit.allows());
        assert!(!circuit.succeeded());
    }
}
