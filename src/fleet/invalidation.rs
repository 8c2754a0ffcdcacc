//! Ending an image everywhere: its shared value, every grant of it, and (by a message on
//! `invalidate`) every instance's copy. An invalidation Redis does not take (down, slow) is
//! kept and sent again every second until it does; meanwhile this instance trusts no shared
//! value of that image from before it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::commands::Unavailable;
use super::scripts::{INVALIDATE_SCRIPT, NOT_FOUND_SCRIPT, PURGE_SCRIPT};
use super::{unix_ms, Fleet, Reader};
use crate::metrics::L2Op;

/// How often unsent invalidations are tried again.
const RETRY_UNSENT: Duration = Duration::from_secs(1);
/// Most unsent invalidations kept one by one; past that they become one purge of everything.
const MAX_UNSENT: usize = 10_000;

/// Invalidations Redis did not take (down or slow when they were sent): retried until it
/// does; meanwhile shared values from before them are not trusted here.
#[derive(Default)]
pub(super) struct Unsent {
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

impl Fleet {
    /// Drops `id` everywhere: the shared value and every grant of it, and (by message)
    /// every instance's copy.
    pub async fn invalidate(&self, id: &str) {
        let at = unix_ms(SystemTime::now());
        if !self.send_invalidation(id).await {
            self.keep_unsent(Some(id), at);
        }
    }

    /// An EVAL of one of the scripts that end an image's values (their calling convention):
    /// KEYS the image's generation, its values in every mode and protocol, and `grant` if
    /// given; ARGV the generation's life and the number of values.
    fn image_script(&self, script: &str, id: &str, grant: Option<String>) -> redis::Cmd {
        let values = self.keys.image_everywhere(id);
        let mut eval = redis::cmd("EVAL");
        eval.arg(script)
            .arg(1 + values.len() + usize::from(grant.is_some()))
            .arg(self.keys.generation(id))
            .arg(&values[..]);
        if let Some(grant) = grant {
            eval.arg(grant);
        }
        eval.arg(self.generation_life.get().as_millis() as u64)
            .arg(values.len());
        eval
    }

    /// Deletes the values, bumps the generation and tells the fleet; whether Redis took it.
    async fn send_invalidation(&self, id: &str) -> bool {
        let script = self.image_script(INVALIDATE_SCRIPT, id, None);
        let deleted: Result<i64, Unavailable> = self.commands.run_ok(L2Op::Delete, &script).await;
        deleted.is_ok() && self.announce("invalidate", id).await
    }

    /// Forgets that `reader` may read `id`: the API refused it (401, 403). If the fleet
    /// held that grant, other instances may have taken it into their own caches, so they
    /// are told to drop their copies of `id` (and take the others' grants from Redis again,
    /// where this one is gone). A credential that never held a grant (forged, another
    /// tenant's) tells no one anything.
    pub async fn revoke(&self, id: &str, record: &str) {
        let deleted: Result<i64, Unavailable> = self
            .commands
            .run_ok(
                L2Op::Delete,
                redis::cmd("DEL").arg(self.keys.grant(id, record)),
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
        let script = self.image_script(NOT_FOUND_SCRIPT, id, None);
        let invalidated: Result<i64, Unavailable> =
            self.commands.run_ok(L2Op::Delete, &script).await;
        if invalidated == Ok(1) {
            self.announce("invalidate", id).await;
        }
    }

    /// The API answered 404 for `id`, and this instance dropped no copy of it: ends the
    /// shared value if there is one (and, per-credential, `reader`'s grant held), and tells
    /// the fleet (in shared mode, always). Forgets `reader`'s grant either way. If Redis
    /// cannot be asked, nothing is kept for later: such a 404 may be for an ID that never
    /// existed.
    pub async fn not_found(&self, id: &str, reader: &Reader) {
        let grant = reader.record().map(|record| self.keys.grant(id, record));
        let script = self.image_script(NOT_FOUND_SCRIPT, id, grant);
        let invalidated: Result<i64, Unavailable> =
            self.commands.run_ok(L2Op::Delete, &script).await;
        // In shared mode the 404 is everyone's: other instances may hold copies that Redis
        // does not (evicted, or filled while Redis was away), so they hear it either way.
        // The message writes nothing, unlike the generation.
        if invalidated == Ok(1) || (*reader == Reader::Anyone && invalidated.is_ok()) {
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
        let recorded: Result<i64, Unavailable> = self
            .commands
            .run_ok(
                L2Op::Set,
                redis::cmd("EVAL")
                    .arg(PURGE_SCRIPT)
                    .arg(1)
                    .arg(self.keys.purged_at())
                    .arg(at),
            )
            .await;
        recorded.is_ok() && self.announce("invalidate", &format!("*:{at}")).await
    }

    /// Keeps an invalidation of `id` (`None`: of everything) made at `at` that Redis did
    /// not take, for [`Fleet::retry_unsent`].
    pub(super) fn keep_unsent(&self, id: Option<&str>, at: u64) {
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
        self.metrics().set_unsent(unsent.count());
    }

    /// Since when shared values of `id` are not to be trusted here (an invalidation of it
    /// has not reached Redis yet); 0 if none.
    pub(super) fn unsent_since(&self, id: &str) -> u64 {
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
                    this.metrics().set_unsent(unsent.count());
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
                    this.metrics().set_unsent(unsent.count());
                }
            }
        });
    }

    /// Whether Redis took the message.
    pub(super) async fn announce(&self, channel: &str, id: &str) -> bool {
        let published: Result<i64, Unavailable> = self
            .commands
            .run_ok(
                L2Op::Publish,
                redis::cmd("PUBLISH")
                    .arg(self.keys.channel(channel))
                    .arg(id),
            )
            .await;
        published.is_ok()
    }
}
