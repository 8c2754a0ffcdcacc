//! Reading shared values, and deciding which instance fetches an image nobody has: one
//! instance takes a short lease (`SET NX PX`, a random token so only its owner lets go of
//! it) and renews it while its fetch runs; the others wait, woken by a `filled` message or
//! by a bounded poll, and take the lease over if it expires. How the fetch ended
//! ([`Ending`]) tells the waiters what to do next, as it does the requests waiting on a
//! local flight.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::codec::{decode, encode};
use super::commands::Unavailable;
use super::scripts::{LEASE_SCRIPT, PUBLISH_SCRIPT, RELEASE_SCRIPT, RENEW_SCRIPT};
use super::{random_token, unix_ms, Fleet, Reader, SharedAnswer, Usable};
use crate::coalesce::Ending;
use crate::image::Protocol;
use crate::metrics::{FleetWait, L2Op, L2Result};

/// A waiter re-reads Redis at least this often, in case the `filled` message was lost.
const FALLBACK_POLL: Duration = Duration::from_millis(200);
/// How long waiters fetch on their own after a fetch whose answer was not shared: enough
/// for the current waiters (they look again within [`FALLBACK_POLL`]), short enough that the
/// next burst coalesces again.
const NOT_SHARED_PASS: Duration = Duration::from_secs(1);
/// How much newer a reader's check in Redis must be than the one a refresh already has, to
/// count as a new one: its own check's record is written a moment after it was made.
const NEWER_CHECK_MARGIN: Duration = Duration::from_secs(1);

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

pub(super) struct Lease {
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

/// What one read of an image's keys found.
struct Read {
    /// A value this reader may be given.
    found: Option<SharedAnswer>,
    /// The image's generation when read.
    generation: String,
}

/// What one `MGET` of an image's keys returned.
struct Found<'a> {
    value: Option<Vec<u8>>,
    grant: Option<Vec<u8>>,
    generation: &'a str,
}

/// What a lease attempt found.
enum LeaseTry {
    Won,
    /// Another instance holds it: wait for its fetch.
    Held,
    /// The last fetch's answer was not shared: fetch alone at once.
    Pass,
}

impl Fleet {
    /// Reads the shared answer for `id` that `reader` may be given, if there is one, with
    /// the image's current generation. One `MGET`, counted as a hit only when it is usable.
    async fn read(
        &self,
        protocol: Protocol,
        id: &str,
        reader: &Reader,
        accept: Accept,
        usable: Usable<'_>,
    ) -> Result<Read, Unavailable> {
        let mut mget = redis::cmd("MGET");
        mget.arg(self.keys.image(protocol, id))
            .arg(self.keys.generation(id));
        if let Some(record) = reader.record() {
            mget.arg(self.keys.grant(id, record));
        }
        self.commands
            .run(L2Op::Get, &mget, |values: Vec<Option<Vec<u8>>>| {
                let mut values = values.into_iter();
                let (value, generation, grant) = (
                    values.next().flatten(),
                    values.next().flatten(),
                    values.next().flatten(),
                );
                let generation = generation
                    .and_then(|g| String::from_utf8(g).ok())
                    .unwrap_or_else(|| "0".to_string());
                let found = Found {
                    value,
                    grant,
                    generation: &generation,
                };
                let (result, found) = self.judge(id, reader, accept, usable, found);
                (Some(result), Read { found, generation })
            })
            .await
    }

    /// What a value read for `reader` is worth: usable (`Ok`), absent or not for this reader
    /// (`Miss`), or not a value of ours (`Garbage`).
    fn judge(
        &self,
        id: &str,
        reader: &Reader,
        accept: Accept,
        usable: Usable<'_>,
        found: Found<'_>,
    ) -> (L2Result, Option<SharedAnswer>) {
        let Found {
            value,
            grant,
            generation,
        } = found;
        let Some(value) = value else {
            return (L2Result::Miss, None);
        };
        if !self.listening.load(Ordering::Acquire) {
            return (L2Result::Miss, None);
        }
        let Some((produced_ms, answer)) = decode(&value) else {
            return (L2Result::Garbage, None);
        };
        if !usable(id, &answer) {
            return (L2Result::Garbage, None);
        }
        // Nothing from before the last purge, nor from before an invalidation Redis missed.
        let purged_before = self
            .purged_before
            .load(Ordering::Acquire)
            .max(self.unsent_since(id));
        // Another host's clock may be a little ahead: an answer from the future is new.
        let now_ms = unix_ms(SystemTime::now());
        let age = Duration::from_millis(now_ms.saturating_sub(produced_ms));
        let young_enough = match accept {
            Accept::Fresh => true,
            Accept::Newer { value, .. } => age < value,
        };
        if age >= self.ttl.get() || !young_enough || produced_ms < purged_before {
            return (L2Result::Miss, None);
        }
        let granted_age = match reader {
            Reader::Anyone => age,
            Reader::Credential(_) => {
                match grant_holds(grant.as_deref(), generation, purged_before) {
                    Some(written_ms) => Duration::from_millis(now_ms.saturating_sub(written_ms)),
                    None => return (L2Result::Miss, None),
                }
            }
        };
        let checked_since = match (accept, reader) {
            (Accept::Newer { check, .. }, Reader::Credential(_)) => {
                granted_age + NEWER_CHECK_MARGIN < check
            }
            _ => true,
        };
        if granted_age >= self.ttl.get() || !checked_since {
            return (L2Result::Miss, None);
        }
        let answer = SharedAnswer {
            age,
            granted_age,
            ..answer
        };
        (L2Result::Ok, Some(answer))
    }

    /// Finds `id` in the fleet, or decides who fetches it: this instance with the lease,
    /// after waiting for the instance that holds it, or alone when Redis is unavailable or
    /// `wait_until` comes.
    pub async fn claim(
        self: &Arc<Self>,
        protocol: Protocol,
        id: &str,
        reader: &Reader,
        accept: Accept,
        wait_until: Instant,
        usable: Usable<'_>,
    ) -> Claim {
        // Subscribed before the first read, so a fill that lands in between still wakes us.
        let mut filled = self.filled.subscribe();
        let lease_key = self.keys.lease(protocol, id, reader);
        let pass_key = self.keys.pass(protocol, id, reader);
        let token = random_token();
        let mut waited = false;
        let fetch_alone = |waited: bool, how: FleetWait, generation: Option<String>| {
            if waited {
                self.metrics().waited(how);
            }
            Claim::Fetch(Ticket {
                generation,
                lease: None,
            })
        };
        loop {
            let generation = match self.read(protocol, id, reader, accept, usable).await {
                Ok(Read {
                    found: Some(found), ..
                }) => {
                    if waited {
                        self.metrics().waited(FleetWait::Filled);
                    }
                    return Claim::Found(found);
                }
                Ok(Read { generation, .. }) => generation,
                Err(Unavailable) => return fetch_alone(waited, FleetWait::GaveUp, None),
            };
            if !self.listening.load(Ordering::Acquire) {
                // Whatever another instance fills could not be taken: no use waiting for it.
                return fetch_alone(waited, FleetWait::GaveUp, Some(generation));
            }
            match self.try_lease(&lease_key, &pass_key, &token).await {
                Ok(LeaseTry::Won) => {
                    let lease = Lease {
                        renewal: Some(self.keep_alive(&lease_key, &token)),
                        key: lease_key,
                        pass_key,
                        token,
                    };
                    // The previous holder may have published and let go of the lease between
                    // our read and our win: look once more before fetching.
                    let generation = match self.read(protocol, id, reader, accept, usable).await {
                        Ok(Read {
                            found: Some(found), ..
                        }) => {
                            self.release_lease(lease, Ending::Shared).await;
                            if waited {
                                self.metrics().waited(FleetWait::Filled);
                            }
                            return Claim::Found(found);
                        }
                        Ok(Read { generation, .. }) => Some(generation),
                        Err(Unavailable) => None,
                    };
                    if waited {
                        self.metrics().waited(FleetWait::TakenOver);
                    }
                    return Claim::Fetch(Ticket {
                        generation,
                        lease: Some(lease),
                    });
                }
                // The last fetch's answer was not shared: queueing would only serialise the
                // fleet's fetches of something no one can share.
                Ok(LeaseTry::Pass) => {
                    return fetch_alone(waited, FleetWait::NotShared, Some(generation))
                }
                Ok(LeaseTry::Held) => {}
                Err(Unavailable) => {
                    return fetch_alone(waited, FleetWait::GaveUp, Some(generation))
                }
            }
            let now = Instant::now();
            if now >= wait_until {
                return fetch_alone(true, FleetWait::GaveUp, Some(generation));
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
                            tokio::time::sleep_until(poll_until).await;
                            break;
                        }
                    },
                    _ = tokio::time::sleep_until(poll_until) => break,
                }
            }
        }
    }

    /// One attempt at the lease: won, held by another, or a pass to fetch alone.
    async fn try_lease(
        &self,
        lease_key: &str,
        pass_key: &str,
        token: &str,
    ) -> Result<LeaseTry, Unavailable> {
        let mut script = redis::cmd("EVAL");
        script
            .arg(LEASE_SCRIPT)
            .arg(2)
            .arg(lease_key)
            .arg(pass_key)
            .arg(token)
            .arg(self.lease.as_millis() as u64);
        self.commands
            .run(L2Op::Lease, &script, |answer: i64| match answer {
                1 => (Some(L2Result::Ok), LeaseTry::Won),
                -1 => (Some(L2Result::Miss), LeaseTry::Pass),
                _ => (Some(L2Result::Miss), LeaseTry::Held),
            })
            .await
    }

    /// A ticket for a fetch that does not read the fleet first (`no-cache`): it may still
    /// share its answer, if the image is not invalidated meanwhile.
    pub async fn ticket(&self, id: &str) -> Ticket {
        let generation = self
            .commands
            .run(
                L2Op::Get,
                redis::cmd("GET").arg(self.keys.generation(id)),
                |generation: Option<String>| {
                    (
                        Some(L2Result::Miss),
                        generation.unwrap_or_else(|| "0".to_string()),
                    )
                },
            )
            .await
            .ok();
        Ticket {
            generation,
            lease: None,
        }
    }

    /// Shares a READY answer produced at `produced` (by this host's wall clock), grants it to
    /// `reader`, and wakes the instances waiting for it; only if the image was not
    /// invalidated since `ticket` was taken. The lease, if any, is given up either way.
    pub async fn publish(
        &self,
        protocol: Protocol,
        id: &str,
        reader: &Reader,
        answer: &SharedAnswer,
        produced: SystemTime,
        ticket: Ticket,
    ) {
        let left = self.ttl.get().saturating_sub(answer.age);
        let px = left.as_millis() as u64;
        let mut ending = Ending::Failed;
        if let (Some(generation), true) = (&ticket.generation, px > 0) {
            let produced_ms = unix_ms(produced);
            let mut script = redis::cmd("EVAL");
            script
                .arg(PUBLISH_SCRIPT)
                .arg(if reader.record().is_some() { 3 } else { 2 })
                .arg(self.keys.image(protocol, id))
                .arg(self.keys.generation(id));
            if let Some(record) = reader.record() {
                script.arg(self.keys.grant(id, record));
            }
            script
                .arg(encode(produced_ms, answer))
                .arg(generation)
                .arg(px)
                .arg(format!("{generation}:{produced_ms}"));
            let stored = self
                .commands
                .run(L2Op::Set, &script, |stored: i64| {
                    if stored == 1 {
                        (Some(L2Result::Ok), Ending::Shared)
                    } else {
                        // Invalidated while we fetched: what we have may be the old image.
                        (Some(L2Result::Miss), Ending::NotShareable)
                    }
                })
                .await;
            if let Ok(stored) = stored {
                ending = stored;
            }
        }
        self.release(ticket, id, ending).await;
    }

    /// Gives up the ticket's lease, if any, telling its waiters how the fetch ended.
    pub async fn release(&self, ticket: Ticket, id: &str, ending: Ending) {
        let held_lease = ticket.lease.is_some();
        if let Some(lease) = ticket.lease {
            self.release_lease(lease, ending).await;
        }
        // Waiters look again at once: they find the value, the pass to fetch on their own,
        // or a free lease. (A no-cache fetch holds no lease, but its value may end a wait.)
        if ending == Ending::Shared || held_lease {
            self.announce("filled", id).await;
        }
    }

    async fn release_lease(&self, lease: Lease, ending: Ending) {
        let pass = match ending {
            Ending::NotShareable => NOT_SHARED_PASS.min(self.lease).as_millis() as u64,
            Ending::Shared | Ending::Failed => 0,
        };
        let _: Result<i64, Unavailable> = self
            .commands
            .run_ok(
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
                let renewed: Result<i64, Unavailable> = this
                    .commands
                    .run_uncounted(
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
}

/// When a grant record (`{generation}:{written at, Unix ms}`) was written, if it still
/// stands: made in the image's current generation, and not before the last purge.
fn grant_holds(grant: Option<&[u8]>, generation: &str, purged_before: u64) -> Option<u64> {
    let grant = std::str::from_utf8(grant?).ok()?;
    let (granted_in, written) = grant.split_once(':')?;
    let written = written.parse::<u64>().ok()?;
    (granted_in == generation && written >= purged_before).then_some(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_hold_only_in_their_generation_and_after_the_last_purge() {
        assert_eq!(grant_holds(Some(b"3:1000"), "3", 999), Some(1000));
        assert_eq!(grant_holds(Some(b"3:1000"), "3", 1000), Some(1000));
        assert_eq!(grant_holds(Some(b"3:1000"), "4", 0), None);
        assert_eq!(grant_holds(Some(b"3:1000"), "3", 1001), None);
        assert_eq!(grant_holds(Some(b"1"), "1", 0), None);
        assert_eq!(grant_holds(None, "0", 0), None);
    }
}
