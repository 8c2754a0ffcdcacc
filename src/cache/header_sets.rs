//! Header blocks shared between entries: what an entry's answer carries, kept once for every
//! entry with the same headers, both as a list and as the map a hit answers with.

use std::sync::Arc;

use http::header::AGE;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::http::headers::{CACHE_STATUS, X_CACHE};

/// An entry's replayable headers, shared between entries.
pub type HeaderSet = Arc<HeaderBlock>;

/// The replayable headers of some entries, and the same headers ready to answer with.
#[derive(Debug)]
pub struct HeaderBlock {
    list: Vec<(HeaderName, HeaderValue)>,
    /// The headers followed by the cache's own (`x-cache`, `cache-status`, `age`) with
    /// placeholder values: a hit clones the map and sets those three in place, rather than
    /// building a map and hashing every name into it each time.
    ready: HeaderMap,
}

impl HeaderBlock {
    fn new(headers: &HeaderMap) -> HeaderBlock {
        let list: Vec<(HeaderName, HeaderValue)> = headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let mut ready = HeaderMap::with_capacity(list.len() + 3);
        for (name, value) in &list {
            ready.append(name.clone(), value.clone());
        }
        let placeholder = HeaderValue::from_static("");
        ready.insert(X_CACHE.clone(), placeholder.clone());
        ready.insert(CACHE_STATUS.clone(), placeholder.clone());
        ready.insert(AGE, placeholder);
        HeaderBlock { list, ready }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.list.iter().map(|(name, value)| (name, value))
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether the block holds a header of this (lower-case) name.
    pub fn contains(&self, name: &str) -> bool {
        self.list.iter().any(|(n, _)| n.as_str() == name)
    }

    /// The headers of an answer from the entry: its own, and the cache's with these values.
    pub fn answer(
        &self,
        x_cache: HeaderValue,
        cache_status: HeaderValue,
        age: HeaderValue,
    ) -> HeaderMap {
        let mut headers = self.ready.clone();
        // Set in place, by name: each of the three names has one value in the map (an
        // entry's own header of such a name was replaced when the map was made).
        let mut values = [Some(x_cache), Some(cache_status), Some(age)];
        for (name, value) in headers.iter_mut() {
            let slot = if name == AGE {
                2
            } else if name == X_CACHE {
                0
            } else if name == CACHE_STATUS {
                1
            } else {
                continue;
            };
            if let Some(new) = values[slot].take() {
                *value = new;
            }
        }
        headers
    }
}

/// Slots of [`HeaderSets`].
const HEADER_SET_SLOTS: usize = 16;

/// The last few distinct header blocks stored. Nearly every image answer carries the same
/// replayable headers (`content-type: application/json`), so entries share one block instead
/// of holding a copy each, which saves about 100 bytes per entry. Bounded: a new block takes
/// a slot in turn, and an evicted block lives on only in the entries that use it.
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
        let set: HeaderSet = Arc::new(HeaderBlock::new(headers));
        if sets.len() < HEADER_SET_SLOTS {
            sets.push(Arc::clone(&set));
        } else {
            sets[*next] = Arc::clone(&set);
            *next = (*next + 1) % HEADER_SET_SLOTS;
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CONTENT_TYPE;

    #[test]
    fn an_answer_is_the_headers_then_the_caches_own() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.append("etag", HeaderValue::from_static("\"1\""));
        headers.append("etag", HeaderValue::from_static("\"2\""));
        // An upstream `age` is the cache's to set.
        headers.insert(AGE, HeaderValue::from_static("99"));
        let block = HeaderBlock::new(&headers);
        let answer = block.answer(
            HeaderValue::from_static("HIT"),
            HeaderValue::from_static("c; hit"),
            HeaderValue::from_static("7"),
        );
        let all: Vec<(&str, &str)> = answer
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            all,
            [
                ("content-type", "application/json"),
                ("etag", "\"1\""),
                ("etag", "\"2\""),
                ("age", "7"),
                ("x-cache", "HIT"),
                ("cache-status", "c; hit"),
            ]
        );
        assert_eq!(block.len(), 4);
    }
}
