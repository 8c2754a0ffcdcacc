//! The entries lookups found lately, in a small fixed table in front of moka.
//!
//! moka records every read for its eviction policy: a queued read operation and, every so
//! often, housekeeping that drains the queue. That is over a thousand instructions, most of
//! what a cache hit costs. A lookup of an image found a moment ago is answered from this
//! table instead, and one in [`READ_SAMPLE`] still reads through moka, so that its policy
//! keeps seeing which images are hot.
//!
//! The table only ever holds what moka holds. Every change the cache makes to a key (a
//! store, a revoked grant, an invalidation, a purge) clears the key's slot and advances the
//! slot's version once the change is in moka, and so does every removal moka reports to its
//! eviction listener (size, age, and moka's side of the cache's own changes). A lookup that
//! finds nothing here reads moka and fills the slot only if its version did not move
//! meanwhile, so a value read before a change or a removal cannot be put back after it, and
//! the table keeps nothing alive that moka let go.
//!
//! Memory is fixed: [`SLOTS`] slots of a few words each, whatever the number of entries.
//! Two keys that share a slot take turns in it and cost no more than moka's lookup.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use super::entry::Entry;
use super::key::ImageKey;
use crate::image::Protocol;

/// Slots in the table; a power of two.
const SLOTS: usize = 1024;

/// One lookup in this many of a key held here reads through moka, which records the read.
const READ_SAMPLE: u32 = 16;

pub(super) struct RecentLookups {
    slots: Box<[RwLock<Slot>]>,
    hasher: foldhash::fast::RandomState,
}

#[derive(Default)]
struct Slot {
    /// Advanced by every change to a key of this slot.
    version: u64,
    held: Option<Held>,
}

struct Held {
    protocol: Protocol,
    id: ImageKey,
    entry: Arc<Entry>,
    /// Lookups answered from this slot, for the sampling of reads through moka.
    reads: AtomicU32,
}

/// A key's slot and its version when a lookup was about to read moka.
pub(super) struct Ticket {
    slot: usize,
    version: u64,
}

impl RecentLookups {
    pub(super) fn new() -> Self {
        RecentLookups {
            slots: (0..SLOTS).map(|_| RwLock::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn slot_of(&self, protocol: Protocol, id: &str) -> usize {
        (self.hasher.hash_one(id) as usize).wrapping_add(protocol.index()) & (SLOTS - 1)
    }

    /// moka's current entry for the key, if the table holds it and this is not the lookup
    /// in [`READ_SAMPLE`] that is to read moka.
    pub(super) fn get(&self, protocol: Protocol, id: &str) -> Option<Arc<Entry>> {
        let slot = self.slot_of(protocol, id);
        let guard = self.slots[slot]
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let held = guard.held.as_ref()?;
        (held.protocol == protocol
            && held.id == id
            && held.reads.fetch_add(1, Ordering::Relaxed) % READ_SAMPLE != 0)
            .then(|| Arc::clone(&held.entry))
    }

    /// The slot of a key as it is now, for a fill after a read of moka.
    pub(super) fn ticket(&self, protocol: Protocol, id: &str) -> Ticket {
        let slot = self.slot_of(protocol, id);
        let version = self.slots[slot]
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .version;
        Ticket { slot, version }
    }

    /// Holds `entry`, what moka held for the key after `ticket` was taken, unless the key's
    /// slot changed since.
    pub(super) fn fill(&self, ticket: Ticket, protocol: Protocol, id: &str, entry: &Arc<Entry>) {
        let current = |slot: &Slot| {
            slot.version != ticket.version
                || slot
                    .held
                    .as_ref()
                    .is_some_and(|held| Arc::ptr_eq(&held.entry, entry))
        };
        // Mostly a sampled read of the entry already held: settled under the read lock, so
        // that the hits answered from this slot meanwhile do not wait.
        if current(
            &self.slots[ticket.slot]
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        ) {
            return;
        }
        let mut slot = self.slots[ticket.slot]
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if current(&slot) {
            return;
        }
        slot.held = Some(Held {
            protocol,
            id: ImageKey::from(id),
            entry: Arc::clone(entry),
            reads: AtomicU32::new(1),
        });
    }

    /// The key's entry in moka changed or is gone: forget it, and refuse fills with tickets
    /// taken before. Call once moka has the change.
    pub(super) fn changed(&self, protocol: Protocol, id: &str) {
        self.clear(self.slot_of(protocol, id));
    }

    /// Every entry changed.
    pub(super) fn changed_all(&self) {
        (0..SLOTS).for_each(|slot| self.clear(slot));
    }

    fn clear(&self, slot: usize) {
        let mut slot = self.slots[slot]
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        slot.version = slot.version.wrapping_add(1);
        slot.held = None;
    }
}
