//! What happened to one request, as one value: the response headers (`X-Cache`,
//! `Cache-Status`), the metrics and the logs are all derived from it, so they cannot disagree.

use std::sync::OnceLock;

use http::HeaderValue;

/// The name this cache uses in `Cache-Status` (RFC 9211).
pub const CACHE_NAME: &str = "baremetal-image-cache";

/// Hit `Cache-Status` values for TTLs below this many seconds are made once and shared.
const PRECOMPUTED_TTLS: i64 = 4096;

fn hit_cache_status(ttl: i64) -> HeaderValue {
    Outcome::hit(ttl, 0).format_cache_status()
}

/// How an Image.Get request was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheResult {
    /// From a fresh entry this caller may see.
    Hit,
    /// Fetched from the upstream (alone or in a shared flight).
    Miss,
    /// From an expired entry, because the upstream failed.
    Stale,
    /// The cache was not consulted: `Cache-Control: no-cache`, or no credential in
    /// per-credential mode.
    Bypass,
}

impl CacheResult {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Stale => "stale",
            CacheResult::Bypass => "bypass",
        }
    }

    /// The `X-Cache` value.
    pub fn x_cache(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            CacheResult::Hit => "HIT",
            CacheResult::Miss => "MISS",
            CacheResult::Stale => "STALE",
            CacheResult::Bypass => "BYPASS",
        })
    }
}

/// Why the request went to the upstream (RFC 9211 `fwd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// Nothing usable was cached for this caller.
    Miss,
    /// The client asked for a fresh answer (`no-cache`).
    Request,
    /// The cache does not handle this request (no credential in per-credential mode).
    Bypass,
    /// The entry was stale (served anyway because the upstream failed).
    Stale,
}

impl Forward {
    fn as_str(self) -> &'static str {
        match self {
            Forward::Miss => "miss",
            Forward::Request => "request",
            Forward::Bypass => "bypass",
            Forward::Stale => "stale",
        }
    }
}

/// The outcome of one Image.Get request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub result: CacheResult,
    /// Set when the request went upstream.
    pub forward: Option<Forward>,
    /// The upstream's status, when one was seen.
    pub upstream_status: Option<u16>,
    /// The answer was stored in the cache.
    pub stored: bool,
    /// The request shared another request's fetch.
    pub coalesced: bool,
    /// Remaining freshness of the entry served, in seconds (negative when stale).
    pub ttl: Option<i64>,
    /// Seconds since the upstream produced the entry served (the `Age` header).
    pub age: Option<u64>,
}

impl Outcome {
    pub fn hit(ttl: i64, age: u64) -> Outcome {
        Outcome {
            result: CacheResult::Hit,
            forward: None,
            upstream_status: None,
            stored: false,
            coalesced: false,
            ttl: Some(ttl),
            age: Some(age),
        }
    }

    pub fn forwarded(result: CacheResult, forward: Forward) -> Outcome {
        Outcome {
            result,
            forward: Some(forward),
            upstream_status: None,
            stored: false,
            coalesced: false,
            ttl: None,
            age: None,
        }
    }

    /// The RFC 9211 `Cache-Status` value.
    pub fn cache_status(&self) -> HeaderValue {
        // Hits are the hot path: their values are made once per TTL second.
        if let (CacheResult::Hit, Some(ttl)) = (self.result, self.ttl) {
            static HITS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
            let hits = HITS.get_or_init(|| (0..PRECOMPUTED_TTLS).map(hit_cache_status).collect());
            if let Some(value) = usize::try_from(ttl).ok().and_then(|t| hits.get(t)) {
                return value.clone();
            }
        }
        self.format_cache_status()
    }

    fn format_cache_status(&self) -> HeaderValue {
        let mut value = String::with_capacity(64);
        value.push_str(CACHE_NAME);
        if self.result == CacheResult::Hit {
            value.push_str("; hit");
        }
        if let Some(forward) = self.forward {
            value.push_str("; fwd=");
            value.push_str(forward.as_str());
        }
        if let Some(status) = self.upstream_status {
            value.push_str(&format!("; fwd-status={status}"));
        }
        if let Some(ttl) = self.ttl {
            value.push_str(&format!("; ttl={ttl}"));
        }
        if self.stored {
            value.push_str("; stored");
        }
        if self.coalesced {
            value.push_str("; collapsed");
        }
        if self.result == CacheResult::Stale {
            value.push_str("; detail=stale-if-error");
        }
        // Only ASCII from fixed strings and numbers goes in, so this cannot fail.
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(CACHE_NAME))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_status_values() {
        assert_eq!(
            Outcome::hit(42, 7).cache_status(),
            "baremetal-image-cache; hit; ttl=42"
        );
        let mut miss = Outcome::forwarded(CacheResult::Miss, Forward::Miss);
        miss.upstream_status = Some(200);
        miss.stored = true;
        miss.coalesced = true;
        assert_eq!(
            miss.cache_status(),
            "baremetal-image-cache; fwd=miss; fwd-status=200; stored; collapsed"
        );
        let mut stale = Outcome::forwarded(CacheResult::Stale, Forward::Stale);
        stale.upstream_status = Some(503);
        stale.ttl = Some(-30);
        assert_eq!(
            stale.cache_status(),
            "baremetal-image-cache; fwd=stale; fwd-status=503; ttl=-30; detail=stale-if-error"
        );
    }
}
