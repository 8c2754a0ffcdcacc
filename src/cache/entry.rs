//! One cached answer and who may read it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::time::Instant;

use super::header_sets::HeaderSet;
use crate::auth::Fingerprint;

/// Fixed cost charged to each entry beyond its body and headers: the key, the `Entry`
/// struct and moka's own nodes.
const ENTRY_OVERHEAD: usize = 256;

/// Most credentials remembered per image. Past this the oldest grant is forgotten, which
/// only costs that credential one upstream request.
pub const MAX_GRANTS_PER_ENTRY: usize = 32;

/// What an entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A 200 whose body is the requested image in status READY.
    Ready,
    /// A 404, kept for `--negative-ttl`.
    NotFound,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Grant {
    pub(super) who: Fingerprint,
    pub(super) at: Instant,
}

impl Grant {
    pub(super) fn new(who: Fingerprint, at: Instant) -> Grant {
        Grant { who, at }
    }
}

/// One cached upstream answer.
#[derive(Debug)]
pub struct Entry {
    pub kind: EntryKind,
    pub status: StatusCode,
    /// How long after `stored_at` the entry is fresh, in milliseconds: 4 bytes that fit in
    /// the padding beside `kind` and `status`, where an `Instant` would cost 16 more per
    /// entry. `--ttl` and `--negative-ttl` are capped at 30 days so it always fits.
    pub(super) fresh_for_ms: u32,
    /// The upstream's headers that may be replayed (no per-request or hop-by-hop ones): a
    /// plain list shared by every entry with the same headers, see [`HeaderSets`].
    pub headers: HeaderSet,
    pub body: Bytes,
    /// When the upstream's answer arrived: the base of `Age` and of freshness.
    pub stored_at: Instant,
    pub(super) grants: Box<[Grant]>,
}

impl Entry {
    /// Seconds since the upstream produced the body.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored_at)
    }

    /// How long ago the API last let `who` read this entry (per-credential mode); `None` if
    /// it never did.
    pub fn checked_age(&self, who: Option<Fingerprint>, now: Instant) -> Option<Duration> {
        let grant = self.grants.iter().find(|g| Some(g.who) == who)?;
        Some(now.saturating_duration_since(grant.at))
    }

    /// When freshness ends. The entry is kept past it by the stale-if-error window.
    pub(super) fn fresh_until(&self) -> Instant {
        self.stored_at + Duration::from_millis(u64::from(self.fresh_for_ms))
    }

    /// Remaining freshness in whole seconds; negative once stale.
    pub fn ttl_secs(&self, now: Instant) -> i64 {
        let expires = self.fresh_until();
        if now <= expires {
            (expires - now).as_secs() as i64
        } else {
            // Rounded away from zero, so a stale entry never reads as ttl=0.
            let over = now - expires;
            -((over.as_secs() + u64::from(over.subsec_nanos() > 0)) as i64)
        }
    }

    /// This entry as it would be had `who` never been granted it.
    pub(super) fn without_grant_of(&self, who: Fingerprint) -> Entry {
        Entry {
            kind: self.kind,
            status: self.status,
            fresh_for_ms: self.fresh_for_ms,
            headers: Arc::clone(&self.headers),
            body: self.body.clone(),
            stored_at: self.stored_at,
            grants: self
                .grants
                .iter()
                .filter(|g| g.who != who)
                .copied()
                .collect(),
        }
    }

    pub(super) fn is_fresh(&self, now: Instant) -> bool {
        now < self.fresh_until()
    }

    pub(super) fn weight(&self, id: &str) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 2 * std::mem::size_of::<HeaderValue>())
            .sum();
        let total = ENTRY_OVERHEAD
            + id.len()
            + self.body.len()
            + headers
            + self.grants.len() * std::mem::size_of::<Grant>();
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

/// A new answer to store.
pub struct NewEntry {
    pub kind: EntryKind,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub received_at: Instant,
}
