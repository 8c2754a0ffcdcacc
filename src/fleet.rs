//! The fleet tier: an optional Redis second level shared by every instance, so that a whole
//! fleet of sidecars costs the API about one request per image.
//!
//! - **Read:** on a local miss, the value under `{prefix}image:{id}` is taken if it is
//!   fresh (it carries the time the upstream produced it, so `Age` and expiry agree across
//!   instances) and, in per-credential mode, the caller's authorization record
//!   `{prefix}grant:{hmac}` exists.
//! - **Fill:** otherwise one instance wins the lease `{prefix}lease:{id}[:{hmac}]`
//!   (`SET NX PX`) and fetches; it writes the value with the remaining TTL (`SET PX`) and
//!   publishes the ID on `{prefix}filled`. The others wait, woken by that message or by a
//!   bounded poll, and take the lease over if it expires (the winner died).
//! - **Invalidate:** a non-READY answer, a mutation or a purge deletes the value and publishes
//!   the ID on `{prefix}invalidate`; every instance drops it locally. A purge of everything
//!   publishes `*` and records the time in `{prefix}purged-at`: older values are ignored.
//! - **Trouble:** every command has a deadline; after [`CIRCUIT_FAILURES`] failures in a row
//!   the tier is skipped for [`CIRCUIT_COOLDOWN`], then tried again. An instance without Redis
//!   is a single-tier cache, never a broken one.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue};
use tokio::sync::{broadcast, OnceCell};

use crate::auth::GrantHasher;
use crate::config::{redacted_url, AuthMode, RedisConfig};
use crate::metrics::{FleetMessage, FleetWait, L2Metrics, L2Op, L2Result};

/// Failures in a row that open the circuit.
pub const CIRCUIT_FAILURES: u32 = 3;
/// How long an open circuit skips Redis before trying it again.
pub const CIRCUIT_COOLDOWN: Duration = Duration::from_secs(5);
/// A waiter re-reads Redis at least this often, in case the `filled` message was lost.
const FALLBACK_POLL: Duration = Duration::from_millis(200);
/// How long to wait for a pub/sub (re)connection before trying again, at most.
const MAX_RESUBSCRIBE_BACKOFF: Duration = Duration::from_secs(5);
/// Start of a stored value: a format tag, so that anything else under our key is garbage.
const VALUE_MAGIC: &[u8; 4] = b"BIC1";

/// An image answer as the fleet shares it.
#[derive(Debug)]
pub struct SharedAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// How old the answer is now, by the wall clock of the instance that produced it.
    pub age: Duration,
}

/// What the fleet says about a local miss.
pub enum Claim {
    /// Another instance already has it.
    Found(SharedAnswer),
    /// This instance should fetch: with the lease (it must publish or release), or without
    /// one (Redis is unavailable, or the wait ran out).
    Fetch(Option<Lease>),
}

/// A won fill lease.
pub struct Lease {
    key: String,
}

/// Which shared values a reader accepts.
#[derive(Clone, Copy)]
pub enum Accept {
    /// Any fresh one.
    Fresh,
    /// Only one produced less than this long ago (a refresh wants something newer than what
    /// it has).
    YoungerThan(Duration),
}

enum Store {
    Single(ConnectionManager),
    Cluster(Box<ClusterStore>),
}

/// A cluster connection is made on first use (it cannot be made lazily like a single
/// server's), and again after a failed attempt.
struct ClusterStore {
    client: ClusterClient,
    connection: OnceCell<ClusterConnection>,
}

impl Store {
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> redis::RedisResult<T> {
        match self {
            Store::Single(manager) => cmd.query_async(&mut manager.clone()).await,
            Store::Cluster(cluster) => {
                let connection = cluster
                    .connection
                    .get_or_try_init(|| cluster.client.get_async_connection())
                    .await?;
                cmd.query_async(&mut connection.clone()).await
            }
        }
    }
}

/// Skips Redis for a while after repeated failures.
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

    fn allows(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        until == 0 || self.now_ms() >= until
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
            self.open_until.store(until.max(1), Ordering::Release);
            return true;
        }
        false
    }
}

/// The Redis tier of one instance.
pub struct Fleet {
    store: Store,
    subscribe_to: Vec<redis::Client>,
    prefix: String,
    grants: Option<GrantHasher>,
    auth_mode: AuthMode,
    ttl: Duration,
    timeout: Duration,
    lease: Duration,
    circuit: Circuit,
    metrics: L2Metrics,
    filled: broadcast::Sender<Arc<str>>,
    /// Values produced before this (Unix ms) were purged.
    purged_before: AtomicU64,
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

impl Fleet {
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
        let subscribe_to = config
            .urls
            .iter()
            .map(|url| redis::Client::open(url.as_str()).map_err(|e| bad(url, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let store = if config.is_cluster() {
            let client = ClusterClient::builder(config.urls.clone())
                .connection_timeout(config.timeout)
                .response_timeout(config.timeout)
                .retries(1)
                .build()
                .map_err(|e| bad(&config.urls[0], e))?;
            Store::Cluster(Box::new(ClusterStore {
                client,
                connection: OnceCell::new(),
            }))
        } else {
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.timeout))
                .set_response_timeout(Some(config.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(1));
            let manager =
                ConnectionManager::new_lazy_with_config(subscribe_to[0].clone(), manager_config)
                    .map_err(|e| bad(&config.urls[0], e))?;
            Store::Single(manager)
        };
        metrics.set_enabled();
        let (filled, _) = broadcast::channel(1024);
        Ok(Fleet {
            store,
            subscribe_to,
            prefix: config.prefix.clone(),
            grants: config
                .grant_key
                .as_ref()
                .map(|key| GrantHasher::new(key.expose())),
            auth_mode,
            ttl,
            timeout: config.timeout,
            lease: config.lease,
            circuit: Circuit {
                failures: AtomicU32::new(0),
                open_until: AtomicU64::new(0),
                base: Instant::now(),
            },
            metrics,
            filled,
            purged_before: AtomicU64::new(0),
        })
    }

    fn image_key(&self, id: &str) -> String {
        format!("{}image:{id}", self.prefix)
    }

    fn grant_key(&self, record: &str) -> String {
        format!("{}grant:{record}", self.prefix)
    }

    fn channel(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
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

    /// Runs one command under the deadline and the circuit; failures are counted here,
    /// successes by the caller (who knows whether it was a hit).
    async fn run<T: FromRedisValue>(&self, op: L2Op, cmd: &Cmd) -> Result<T, ()> {
        if !self.circuit.allows() {
            self.metrics
                .operation(op, L2Result::Skipped, Duration::ZERO);
            return Err(());
        }
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.store.query::<T>(cmd)).await;
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
            self.metrics.set_circuit_open(true);
            tracing::warn!(
                op = op.as_str(),
                result = failure.as_str(),
                "redis keeps failing; skipping the fleet tier for {CIRCUIT_COOLDOWN:?}"
            );
        }
        Err(())
    }

    /// Reads the shared answer for `id` that `reader` may be given, if there is one.
    async fn read(&self, id: &str, reader: Option<&str>, accept: Accept) -> Option<SharedAnswer> {
        let started = Instant::now();
        let value: Option<Vec<u8>> = self
            .run(L2Op::Get, redis::cmd("GET").arg(self.image_key(id)))
            .await
            .ok()?;
        let Some(value) = value else {
            self.metrics
                .operation(L2Op::Get, L2Result::Miss, started.elapsed());
            return None;
        };
        let Some((produced_ms, answer)) = decode(&value) else {
            self.metrics
                .operation(L2Op::Get, L2Result::Garbage, started.elapsed());
            tracing::warn!("the shared value of an image does not decode; ignoring it");
            return None;
        };
        let now_ms = unix_ms(SystemTime::now());
        // Another host's clock may be a little ahead: an answer from the future is new.
        let age = Duration::from_millis(now_ms.saturating_sub(produced_ms));
        let young_enough = match accept {
            Accept::Fresh => true,
            Accept::YoungerThan(limit) => age < limit,
        };
        if age >= self.ttl
            || !young_enough
            || produced_ms < self.purged_before.load(Ordering::Acquire)
        {
            self.metrics
                .operation(L2Op::Get, L2Result::Miss, started.elapsed());
            return None;
        }
        if let Some(record) = reader {
            let granted: Option<Vec<u8>> = self
                .run(L2Op::Get, redis::cmd("GET").arg(self.grant_key(record)))
                .await
                .ok()?;
            if granted.is_none() {
                self.metrics
                    .operation(L2Op::Get, L2Result::Miss, started.elapsed());
                return None;
            }
        }
        self.metrics
            .operation(L2Op::Get, L2Result::Ok, started.elapsed());
        Some(SharedAnswer { age, ..answer })
    }

    /// Finds `id` in the fleet, or decides who fetches it: this instance with the lease,
    /// after waiting for the instance that holds it, or alone when Redis is unavailable or
    /// `wait_until` comes.
    pub async fn claim(
        &self,
        id: &str,
        reader: Option<&str>,
        accept: Accept,
        wait_until: Instant,
    ) -> Claim {
        // Subscribed before the first read, so a fill that lands in between still wakes us.
        let mut filled = self.filled.subscribe();
        let lease_key = match reader {
            Some(record) => format!("{}lease:{id}:{record}", self.prefix),
            None => format!("{}lease:{id}", self.prefix),
        };
        let mut waited = false;
        loop {
            if let Some(found) = self.read(id, reader, accept).await {
                if waited {
                    self.metrics.waited(FleetWait::Filled);
                }
                return Claim::Found(found);
            }
            let started = Instant::now();
            let won: Result<bool, ()> = self
                .run(
                    L2Op::Lease,
                    redis::cmd("SET")
                        .arg(&lease_key)
                        .arg(b"1".as_slice())
                        .arg("PX")
                        .arg(self.lease.as_millis() as u64)
                        .arg("NX"),
                )
                .await;
            match won {
                Ok(true) => {
                    self.metrics
                        .operation(L2Op::Lease, L2Result::Ok, started.elapsed());
                    if waited {
                        self.metrics.waited(FleetWait::TakenOver);
                    }
                    return Claim::Fetch(Some(Lease { key: lease_key }));
                }
                Ok(false) => {
                    self.metrics
                        .operation(L2Op::Lease, L2Result::Miss, started.elapsed());
                }
                Err(()) => {
                    if waited {
                        self.metrics.waited(FleetWait::GaveUp);
                    }
                    return Claim::Fetch(None);
                }
            }
            let now = Instant::now();
            if now >= wait_until {
                self.metrics.waited(FleetWait::GaveUp);
                return Claim::Fetch(None);
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

    /// Shares a READY answer produced at `produced` (by this host's wall clock), grants it to
    /// `reader`, and wakes the instances waiting for it.
    pub async fn publish(
        &self,
        id: &str,
        reader: Option<&str>,
        answer: &SharedAnswer,
        produced: SystemTime,
    ) {
        let left = self.ttl.saturating_sub(answer.age);
        let px = left.as_millis() as u64;
        if px == 0 {
            return;
        }
        let value = encode(unix_ms(produced), answer);
        let started = Instant::now();
        let stored: Result<(), ()> = self
            .run(
                L2Op::Set,
                redis::cmd("SET")
                    .arg(self.image_key(id))
                    .arg(value)
                    .arg("PX")
                    .arg(px),
            )
            .await;
        if stored.is_err() {
            return;
        }
        self.metrics
            .operation(L2Op::Set, L2Result::Ok, started.elapsed());
        if let Some(record) = reader {
            let started = Instant::now();
            let granted: Result<(), ()> = self
                .run(
                    L2Op::Set,
                    redis::cmd("SET")
                        .arg(self.grant_key(record))
                        .arg(b"1".as_slice())
                        .arg("PX")
                        .arg(px),
                )
                .await;
            if granted.is_ok() {
                self.metrics
                    .operation(L2Op::Set, L2Result::Ok, started.elapsed());
            }
        }
        self.announce("filled", id).await;
    }

    /// Gives up a lease without a value (the fetch failed or the answer is not shareable),
    /// so that waiting instances stop waiting.
    pub async fn release(&self, lease: Lease, id: &str) {
        self.delete(&lease.key).await;
        self.announce("filled", id).await;
    }

    /// Drops a lease whose value is published: should the value be invalidated soon after,
    /// the next miss need not wait for the lease to run out. (If this fill outlived its lease
    /// and another instance holds it now, that costs at most one more fetch.)
    pub async fn drop_lease(&self, lease: Lease) {
        self.delete(&lease.key).await;
    }

    /// Drops `id` everywhere: the shared value, and (by message) every instance's copy.
    pub async fn invalidate(&self, id: &str) {
        self.delete(&self.image_key(id)).await;
        self.announce("invalidate", id).await;
    }

    /// Drops every image everywhere: values produced before now are ignored from now on.
    pub async fn invalidate_all(&self) {
        let now = unix_ms(SystemTime::now());
        self.purged_before.fetch_max(now, Ordering::AcqRel);
        let started = Instant::now();
        let set: Result<(), ()> = self
            .run(
                L2Op::Set,
                redis::cmd("SET")
                    .arg(self.channel("purged-at"))
                    .arg(now.to_string()),
            )
            .await;
        if set.is_ok() {
            self.metrics
                .operation(L2Op::Set, L2Result::Ok, started.elapsed());
        }
        self.announce("invalidate", "*").await;
    }

    async fn delete(&self, key: &str) {
        let started = Instant::now();
        let deleted: Result<i64, ()> = self.run(L2Op::Delete, redis::cmd("DEL").arg(key)).await;
        if deleted.is_ok() {
            self.metrics
                .operation(L2Op::Delete, L2Result::Ok, started.elapsed());
        }
    }

    async fn announce(&self, channel: &str, id: &str) {
        let started = Instant::now();
        let sent: Result<i64, ()> = self
            .run(
                L2Op::Publish,
                redis::cmd("PUBLISH").arg(self.channel(channel)).arg(id),
            )
            .await;
        if sent.is_ok() {
            self.metrics
                .operation(L2Op::Publish, L2Result::Ok, started.elapsed());
        }
    }

    /// Listens to the fleet until `owner` is dropped: `filled` messages wake local waiters,
    /// `invalidate` messages reach `on_invalidate` (`None` = everything). After a gap in the
    /// subscription, messages may have been missed, so everything local is dropped too.
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
            let mut backoff = Duration::from_millis(50);
            let mut connected_before = false;
            let mut seed = 0usize;
            loop {
                let Some(this) = fleet.upgrade() else { return };
                let client = this.subscribe_to[seed % this.subscribe_to.len()].clone();
                seed = seed.wrapping_add(1);
                let channels = [this.channel("invalidate"), this.channel("filled")];
                let connect_within = this.timeout * 4;
                drop(this);
                let subscribed = tokio::time::timeout(connect_within, async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channels).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                })
                .await;
                let Ok(Ok(pubsub)) = subscribed else {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RESUBSCRIBE_BACKOFF);
                    continue;
                };
                backoff = Duration::from_millis(50);
                {
                    let Some(this) = fleet.upgrade() else { return };
                    this.load_purge_time().await;
                    if connected_before {
                        this.metrics.message(FleetMessage::Resync);
                        let Some(owner) = owner.upgrade() else { return };
                        on_invalidate(owner, None).await;
                    }
                }
                connected_before = true;
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        // Wakes now and then to notice that the proxy is gone.
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {
                            if owner.strong_count() == 0 { return; }
                            continue;
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
                        if id == "*" {
                            this.load_purge_time().await;
                            on_invalidate(owner, None).await;
                        } else {
                            on_invalidate(owner, Some(id.to_string())).await;
                        }
                    }
                }
                tracing::warn!("the fleet subscription was lost; reconnecting");
            }
        });
    }

    /// Learns of purges made while this instance was not listening. (Its success is not
    /// counted as a `get`, which counts image reads.)
    async fn load_purge_time(&self) {
        let value: Result<Option<String>, ()> = self
            .run(L2Op::Get, redis::cmd("GET").arg(self.channel("purged-at")))
            .await;
        if let Ok(value) = value {
            if let Some(ms) = value.and_then(|v| v.parse::<u64>().ok()) {
                self.purged_before.fetch_max(ms, Ordering::AcqRel);
            }
        }
    }
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
        .take(0xffff)
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
    let mut headers = HeaderMap::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = u16::from_be_bytes(take(2)?.try_into().ok()?);
        let name = HeaderName::from_bytes(take(usize::from(len))?).ok()?;
        let len = u16::from_be_bytes(take(2)?.try_into().ok()?);
        let value = HeaderValue::from_bytes(take(usize::from(len))?).ok()?;
        headers.append(name, value);
    }
    let body = Bytes::copy_from_slice(rest);
    Some((
        produced_ms,
        SharedAnswer {
            status,
            headers,
            body,
            age: Duration::ZERO,
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
