//! Sending commands to Redis: the connection (made on first use, remade when the circuit
//! opens), the deadlines, the circuit breaker, and one [`RedisEvent`] per command that both
//! logs and counts it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue};
use tokio::time::Instant;

use crate::metrics::{L2Metrics, L2Op, L2Result};

/// Failures in a row that open the circuit.
pub const CIRCUIT_FAILURES: u32 = 3;
/// How long an open circuit skips Redis before one probe tries it again.
pub const CIRCUIT_COOLDOWN: Duration = Duration::from_secs(5);
/// Connecting may take this many command deadlines (TLS, a remote cluster's topology).
pub(super) const CONNECT_DEADLINES: u32 = 4;

/// Redis could not be asked: down, slow, refusing, or skipped while the circuit is open.
/// Counted and logged where it happened; callers only decide what to do without Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unavailable;

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// What a command connection is made from.
pub(super) enum Servers {
    Single(Box<(redis::Client, ConnectionManagerConfig)>),
    Cluster(Box<ClusterClient>),
}

/// One Redis command, as it is logged and counted: exactly once, whatever happened.
struct RedisEvent {
    op: L2Op,
    /// `None` for the success of a bookkeeping command (the purge time, a lease renewal),
    /// which is not an image read or a lease won: logged, not counted.
    result: Option<L2Result>,
    elapsed: Duration,
    /// Why it failed, when Redis said.
    error: Option<redis::ErrorKind>,
}

impl RedisEvent {
    fn emit(self, metrics: &L2Metrics) {
        let op = self.op.as_str();
        let Some(result) = self.result else {
            tracing::trace!(op, "redis bookkeeping command");
            return;
        };
        metrics.operation(self.op, result, self.elapsed);
        match result {
            L2Result::Error | L2Result::Timeout => tracing::debug!(
                op,
                result = result.as_str(),
                error = ?self.error,
                "redis command failed"
            ),
            L2Result::Garbage => tracing::warn!(
                op,
                "a value in Redis is not ours, or not a READY image of its ID; ignoring it"
            ),
            _ => tracing::trace!(
                op,
                result = result.as_str(),
                elapsed_us = self.elapsed.as_micros() as u64,
                "redis command"
            ),
        }
    }
}

/// The command side of the tier.
pub(super) struct Commands {
    servers: Servers,
    current: RwLock<Option<Connection>>,
    circuit: Circuit,
    timeout: Duration,
    metrics: L2Metrics,
}

impl Commands {
    pub(super) fn new(servers: Servers, timeout: Duration, metrics: L2Metrics) -> Commands {
        Commands {
            servers,
            current: RwLock::new(None),
            circuit: Circuit::new(),
            timeout,
            metrics,
        }
    }

    pub(super) fn metrics(&self) -> &L2Metrics {
        &self.metrics
    }

    /// Runs one command under the deadlines and the circuit, and emits its one event:
    /// `judge` turns what Redis answered into the result it is counted as (a hit or a miss,
    /// a lease won or held by another, garbage; `None` for bookkeeping) and the value the
    /// caller gets.
    pub(super) async fn run<T: FromRedisValue, R>(
        &self,
        op: L2Op,
        cmd: &Cmd,
        judge: impl FnOnce(T) -> (Option<L2Result>, R),
    ) -> Result<R, Unavailable> {
        if !self.circuit.allows() {
            RedisEvent {
                op,
                result: Some(L2Result::Skipped),
                elapsed: Duration::ZERO,
                error: None,
            }
            .emit(&self.metrics);
            return Err(Unavailable);
        }
        let started = Instant::now();
        let answered = self.query::<T>(cmd).await;
        let elapsed = started.elapsed();
        let (result, error) = match answered {
            Ok(Ok(value)) => {
                if self.circuit.succeeded() {
                    self.metrics.set_circuit_open(false);
                    tracing::info!("redis is answering again; the fleet tier is back");
                }
                let (result, value) = judge(value);
                RedisEvent {
                    op,
                    result,
                    elapsed,
                    error: None,
                }
                .emit(&self.metrics);
                return Ok(value);
            }
            Ok(Err(e)) => (L2Result::Error, Some(e.kind())),
            Err(_elapsed) => (L2Result::Timeout, None),
        };
        RedisEvent {
            op,
            result: Some(result),
            elapsed,
            error,
        }
        .emit(&self.metrics);
        if self.circuit.failed() {
            // A connection that stopped answering is not replaced by the client library.
            self.reset();
            self.metrics.set_circuit_open(true);
            tracing::warn!(
                op = op.as_str(),
                result = result.as_str(),
                "redis keeps failing; skipping the fleet tier for {CIRCUIT_COOLDOWN:?}"
            );
        }
        Err(Unavailable)
    }

    /// [`Commands::run`] for a command whose success needs no telling apart: counted `ok`.
    pub(super) async fn run_ok<T: FromRedisValue>(
        &self,
        op: L2Op,
        cmd: &Cmd,
    ) -> Result<T, Unavailable> {
        self.run(op, cmd, |value| (Some(L2Result::Ok), value)).await
    }

    /// [`Commands::run`] for bookkeeping: its failures count, its successes do not.
    pub(super) async fn run_uncounted<T: FromRedisValue>(
        &self,
        op: L2Op,
        cmd: &Cmd,
    ) -> Result<T, Unavailable> {
        self.run(op, cmd, |value| (None, value)).await
    }

    /// Sends `cmd`, connecting first if need be; `Err` if a deadline passed.
    async fn query<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
    ) -> Result<redis::RedisResult<T>, tokio::time::error::Elapsed> {
        // Twice the clients' own connect timeout: a cluster client tries its seeds in turn.
        let connect_within = self.timeout * (2 * CONNECT_DEADLINES);
        let connection = match tokio::time::timeout(connect_within, self.connection()).await? {
            Ok(connection) => connection,
            Err(e) => return Ok(Err(e)),
        };
        tokio::time::timeout(self.timeout, async {
            match connection {
                Connection::Single(mut manager) => cmd.query_async(&mut manager).await,
                Connection::Cluster(mut cluster) => cmd.query_async(&mut cluster).await,
            }
        })
        .await
    }

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

/// Skips Redis for a while after repeated failures, then lets one probe through.
struct Circuit {
    failures: AtomicU32,
    /// Milliseconds since `base` until which Redis is skipped; 0 = closed.
    open_until: AtomicU64,
    base: Instant,
}

impl Circuit {
    fn new() -> Circuit {
        Circuit {
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_opens_after_repeated_failures_and_closes_on_success() {
        let circuit = Circuit::new();
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
