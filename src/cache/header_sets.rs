//! Header lists shared between entries.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

/// A list of replayable headers, shared between entries. An `Arc<Vec>` rather than an
/// `Arc<[_]>`: a thin pointer, which keeps `Entry` in a smaller allocation class.
pub type HeaderSet = Arc<Vec<(HeaderName, HeaderValue)>>;

/// Slots of [`HeaderSets`].
const HEADER_SET_SLOTS: usize = 16;

/// The last few distinct header lists stored. Nearly every image answer carries the same
/// replayable headers (`content-type: application/json`), so entries share one list instead
/// of holding a copy each, which saves about 100 bytes per entry. Bounded: a new list takes
/// a slot in turn, and an evicted list lives on only in the entries that use it.
pub(super) struct HeaderSets {
    slots: std::sync::Mutex<(usize, Vec<HeaderSet>)>,
}

impl HeaderSets {
    pub(super) fn new() -> Self {
        HeaderSets {
            slots: std::sync::Mutex::new((0, Vec::with_capacity(HEADER_SET_SLOTS))),
        }
    }

    pub(super) fn intern(&self, headers: &HeaderMap) -> HeaderSet {
        let same = |set: &HeaderSet| {
            set.len() == headers.len()
                && set
                    .iter()
                    .zip(headers.iter())
                    .all(|((n1, v1), (n2, v2))| n1 == n2 && v1 == v2)
        };
        // Held only for a scan of at most 16 short lists, never across an await; a poisoned
        // lock only means a panic elsewhere left the list as it was, which is still valid.
        let mut guard = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (next, sets) = &mut *guard;
        if let Some(set) = sets.iter().find(|set| same(set)) {
            return Arc::clone(set);
        }
        let set: HeaderSet = Arc::new(
            headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
        );
        if sets.len() < HEADER_SET_SLOTS {
            sets.push(Arc::clone(&set));
        } else {
            sets[*next] = Arc::clone(&set);
            *next = (*next + 1) % HEADER_SET_SLOTS;
        }
        set
    }
}
