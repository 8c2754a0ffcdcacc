//! One cached answer and who may read it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

use super::header_sets::HeaderSet;
use super::moment::Moment;
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
    pub(super) at: Moment,
}

impl Grant {
    pub(super) fn new(who: Fingerprint, at: Moment) -> Grant {
        Grant { who, at }
    }
}

/// One cached upstream answer.
#[derive(Debug)]
pub struct Entry {
    pub kind: EntryKind,
    pub status: StatusCode,
    /// How long after `stored` the entry is fresh, in milliseconds: 4 bytes that fit in the
    /// padding beside `kind` and `status`. `--ttl` and `--negative-ttl` are capped at 30 days so it always fits.
    pub(super) fresh_for_ms: u32,
    /// The upstream's headers that may be replayed (no per-request or hop-by-hop ones): a
    /// plain list shared by every entry with the same headers, see [`HeaderSets`].
    pub headers: HeaderSet,
    pub body: Bytes,
    /// When the upstream's answer arrived: the base of `Age` and of freshness.
    pub stored: Moment,
    pub(super) grants: Box<[Grant]>,
}

impl Entry {
    /// How long ago the upstream produced the body.
    pub fn age(&self, now: Moment) -> Duration {
        now.since(self.stored)
    }

    /// Whole seconds since the upstream produced the body.
    pub fn age_secs(&self, now: Moment) -> u64 {
        now.millis_since(self.stored) / 1000
    }

    /// How long ago the API last let `who` read this entry (per-credential mode); `None` if
    /// it never did.
    pub fn checked_age(&self, who: Option<Fingerprint>, now: Moment) -> Option<Duration> {
        let grant = self.grants.iter().find(|g| Some(g.who) == who)?;
        Some(now.since(grant.at))
    }

    /// When freshness ends. The entry is kept past it by the stale-if-error window.
    pub(super) fn fresh_until(&self) -> Moment {
        self.stored.plus_millis(u64::from(self.fresh_for_ms))
    }

    /// Remaining freshness in whole seconds; negative once stale.
    pub fn ttl_secs(&self, now: Moment) -> i64 {
        let expires = self.fresh_until();
        if now <= expires {
            (expires.millis_since(now) / 1000) as i64
        } else {
            // Rounded away from zero, so a stale entry never reads as ttl=0.
            -(now.millis_since(expires).div_ceil(1000) as i64)
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
            stored: self.stored,
            grants: self
                .grants
                .iter()
                .filter(|g| g.who != who)
                .copied()
                .collect(),
        }
    }

    pub(super) fn is_fresh(&self, now: Moment) -> bool {
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
    pub received_at: tokio::time::Instant,
}
