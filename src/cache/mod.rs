//! The image cache: a moka future cache of upstream answers keyed by image ID, bounded in
//! bytes, with freshness per entry and the authorization record of who may read each one.
//!
//! An entry outlives its freshness by the stale-if-error window so that it can be served
//! while the upstream fails. In `per-credential` mode each entry carries the fingerprints the
//! upstream answered 200 (or 404) for, each with the time it did; a grant is good for one
//! TTL. Grants travel with the entry, so invalidating an image forgets who could read it.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use tokio::time::Instant;

use crate::auth::Fingerprint;
use crate::config::{AuthMode, Config};
use crate::image::Protocol;
use crate::tunable::TunableDuration;

mod entry;
mod header_sets;
mod key;
mod moment;
mod recent;
mod revocations;

use entry::Grant;
pub use entry::{Entry, EntryKind, NewEntry, MAX_GRANTS_PER_ENTRY};
use header_sets::HeaderSets;
use key::{key, protocol_and_id, ImageKey};
pub use moment::Moment;
use recent::RecentLookups;
use revocations::Revocations;

/// The result of looking an image up for one caller.
#[derive(Debug)]
pub enum Lookup {
    /// Fresh and this caller may see it.
    Fresh(Arc<Entry>),
    /// Past its TTL but inside the stale-if-error window, and this caller may see it: only
    /// to be served when the upstream fails.
    Stale(Arc<Entry>),
    /// Nothing this caller may be served.
    Miss,
}

/// Why an eviction happened, as the metrics name it.
pub fn removal_cause_label(cause: RemovalCause) -> &'static str {
    match cause {
        RemovalCause::Expired => "expired",
        RemovalCause::Size => "size",
        RemovalCause::Replaced => "replaced",
        RemovalCause::Explicit => "explicit",
    }
}

/// Number of invalidation generation stripes. An invalidation bumps its ID's stripe; a fill
/// that started before the bump is not stored. Two IDs sharing a stripe only cost a skipped
/// store, and memory stays fixed however many IDs there are.
const GENERATION_STRIPES: usize = 4096;

/// Slots of the refresh-ahead claim table.
const REFRESH_CLAIM_SLOTS: usize = 4096;

/// How long an entry can be of use under `config`: fresh, then stale while the upstream
/// fails (a 404 only fresh).
fn retention(config: &Config) -> Duration {
    (config.ttl + config.stale_if_error).max(config.negative_ttl)
}

/// A point in the invalidation history of one image ID, taken before a fetch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation(u64);

pub struct ImageCache {
    entries: Cache<ImageKey, Arc<Entry>, foldhash::fast::RandomState>,
    /// What lookups found lately, answered without moka's bookkeeping.
    recent: Arc<RecentLookups>,
    header_sets: HeaderSets,
    generations: Box<[AtomicU64]>,
    purges: AtomicU64,
    refresh_claims: Box<[AtomicU64]>,
    revocations: Revocations,
    ttl: TunableDuration,
    stale_if_error: TunableDuration,
    negative_ttl: TunableDuration,
    /// How long moka keeps any entry, fixed when it is built: the longest an entry's
    /// freshness and stale window together can last.
    retention: Duration,
    auth_mode: AuthMode,
}

impl ImageCache {
    /// A cache sized and timed by `config`; `on_evict` hears every removal with its cause.
    pub fn new(config: &Config, on_evict: impl Fn(RemovalCause) + Send + Sync + 'static) -> Self {
        let retention = retention(config);
        let recent = Arc::new(RecentLookups::new());
        let forget = Arc::clone(&recent);
        let entries = Cache::builder()
            .max_capacity(config.max_capacity)
            .weigher(|id: &ImageKey, entry: &Arc<Entry>| entry.weight(id))
            // One time-to-live for every entry, long enough for the longest-lived kind; each
            // lookup checks the entry's own window. moka's per-entry expiry would cost a
            // timer-wheel node per entry, about 20 bytes.
            .time_to_live(retention)
            .eviction_listener(move |key: Arc<ImageKey>, _, cause| {
                let (protocol, id) = protocol_and_id(&key);
                forget.changed(protocol, id);
                on_evict(cause)
            })
            .build_with_hasher(foldhash::fast::RandomState::default());
        ImageCache {
            entries,
            recent,
            header_sets: HeaderSets::new(),
            generations: (0..GENERATION_STRIPES).map(|_| AtomicU64::new(0)).collect(),
            purges: AtomicU64::new(0),
            refresh_claims: (0..REFRESH_CLAIM_SLOTS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            revocations: Revocations::new(),
            ttl: TunableDuration::new(config.ttl),
            stale_if_error: TunableDuration::new(config.stale_if_error),
            negative_ttl: TunableDuration::new(config.negative_ttl),
            retention,
            auth_mode: config.auth_mode,
        }
    }

    /// Takes the freshness settings of a reloaded configuration: entries stored from now on
    /// follow them, and lookups hold every entry against the new stale-if-error window and
    /// grants against the new TTL. Returns what cannot take effect without a restart: moka's
    /// retention is fixed when the cache is built, so a window longer than it is cut to it.
    pub fn retune(&self, config: &Config) -> Option<String> {
        self.ttl.set(config.ttl);
        self.stale_if_error.set(config.stale_if_error);
        self.negative_ttl.set(config.negative_ttl);
        let wanted = retention(config);
        (wanted > self.retention).then(|| {
            format!(
                "entries are kept at most {} (the longest of ttl + stale-if-error and \
                 negative-ttl at start-up); the new {} takes a restart to take effect in full",
                humantime::format_duration(self.retention),
                humantime::format_duration(wanted),
            )
        })
    }

    /// Whether `--negative-ttl` asks for 404s to be stored.
    pub fn stores_not_found(&self) -> bool {
        !self.negative_ttl.get().is_zero()
    }

    fn stripe(&self, id: &str) -> &AtomicU64 {
        let mut hasher = std::hash::DefaultHasher::new();
        id.hash(&mut hasher);
        &self.generations[(hasher.finish() as usize) % GENERATION_STRIPES]
    }

    /// The invalidation generation of `id` now; pass it to [`ImageCache::store`] so that an
    /// invalidation that happens while the fetch runs wins over the fetch's answer.
    pub fn generation(&self, id: &str) -> Generation {
        // Both counters only grow, so their sum changes whenever either does.
        Generation(self.stripe(id).load(Ordering::Acquire) + self.purges.load(Ordering::Acquire))
    }

    /// What `who` may be served for image `id` at `now`, if the table of recent lookups
    /// knows, without waiting: the hit path. `None`: ask [`ImageCache::lookup`], which reads
    /// moka (as one lookup in 16 of an image in the table does, for moka's eviction policy).
    pub fn lookup_recent(
        &self,
        protocol: Protocol,
        id: &str,
        who: Option<Fingerprint>,
        now: Moment,
    ) -> Option<Lookup> {
        let entry = self.recent.get(protocol, id)?;
        Some(self.judge(entry, who, now))
    }

    /// What `who` may be served for image `id` at `now`, as moka holds it; the entry found
    /// goes to the table of recent lookups for the next.
    pub async fn lookup(
        &self,
        protocol: Protocol,
        id: &str,
        who: Option<Fingerprint>,
        now: Moment,
    ) -> Lookup {
        let ticket = self.recent.ticket(protocol, id);
        let found = match protocol {
            // The REST key is the ID itself: a lookup builds no key.
            Protocol::Http => self.entries.get(id).await,
            Protocol::Grpc => self.entries.get(&key(protocol, id)).await,
        };
        match found {
            Some(entry) => {
                self.recent.fill(ticket, protocol, id, &entry);
                self.judge(entry, who, now)
            }
            None => {
                // moka's own expiry has not reached its listener yet, say.
                self.recent.changed(protocol, id);
                Lookup::Miss
            }
        }
    }

    /// What `who` may be served of `entry` at `now`.
    fn judge(&self, entry: Arc<Entry>, who: Option<Fingerprint>, now: Moment) -> Lookup {
        // Never past moka's retention, which a reload cannot lengthen: the table of recent
        // lookups may hold an entry moka's expiry has not reported yet.
        if now >= entry.stored.plus(self.retention) {
            return Lookup::Miss;
        }
        if entry.is_fresh(now) {
            if self.may_read(&entry, who, now, self.ttl.get()) {
                return Lookup::Fresh(entry);
            }
            return Lookup::Miss;
        }
        // A stale entry is only worth anything while the upstream fails; its reader must
        // still have been granted it inside the same window.
        let stale_if_error = self.stale_if_error.get();
        if entry.kind == EntryKind::Ready
            && now < entry.fresh_until().plus(stale_if_error)
            && self.may_read(&entry, who, now, self.ttl.get() + stale_if_error)
        {
            return Lookup::Stale(entry);
        }
        Lookup::Miss
    }

    /// Whether `who` may read `entry`. A 404 belongs to the credential it was given to even
    /// in shared mode: the upstream may answer 404 for an image a caller is not allowed to see.
    fn may_read(
        &self,
        entry: &Entry,
        who: Option<Fingerprint>,
        now: Moment,
        within: Duration,
    ) -> bool {
        if self.auth_mode == AuthMode::Shared && entry.kind == EntryKind::Ready {
            return true;
        }
        match who {
            None => false,
            Some(who) => entry.grants.iter().any(|g| {
                g.who == who && now < g.at.plus(within) && !self.revocations.voids(who, g.at)
            }),
        }
    }

    /// Whether this hit by `who` should start the refresh-ahead of `entry` (image `id`): it
    /// falls in the last `percent` of what is left of this caller's freshness (the entry's
    /// TTL, or in per-credential mode this caller's grant if that ends first), and no hit has
    /// claimed the refresh of this freshness before. So at most one refresh is started per
    /// entry and credential however the refresh ends (a 429 is not met with a refresh per
    /// hit), and a refresh needs a credential to fetch with.
    pub fn claim_refresh(
        &self,
        protocol: Protocol,
        id: &str,
        entry: &Entry,
        who: Option<Fingerprint>,
        now: Moment,
        percent: u8,
    ) -> bool {
        if entry.kind != EntryKind::Ready || who.is_none() {
            return false;
        }
        let entry_end = entry.fresh_until();
        let (end, since) = match self.auth_mode {
            AuthMode::Shared => (entry_end, entry.stored),
            AuthMode::PerCredential => {
                let Some(grant) = entry.grants.iter().find(|g| Some(g.who) == who) else {
                    return false;
                };
                (grant.at.plus(self.ttl.get()).min(entry_end), grant.at)
            }
        };
        // The last `percent` of this freshness (not of today's --ttl, which a reload may have
        // changed since), in integer milliseconds.
        if now >= end || end.millis_since(now) > end.millis_since(since) * u64::from(percent) / 100
        {
            return false;
        }
        // The claim marks (image, credential, start of this freshness) in a fixed table
        // rather than in the entry: no per-entry state. Two keys sharing a slot can at worst
        // allow one extra refresh.
        let mut hasher = std::hash::DefaultHasher::new();
        (protocol, id, who, since).hash(&mut hasher);
        let marker = hasher.finish() | 1;
        let slot = &self.refresh_claims[(marker as usize) % REFRESH_CLAIM_SLOTS];
        slot.swap(marker, Ordering::AcqRel) != marker
    }

    fn keeps_grants(&self, kind: EntryKind) -> bool {
        self.auth_mode == AuthMode::PerCredential || kind == EntryKind::NotFound
    }

    /// Stores an answer for `id`, granted to `who`, unless `id` was invalidated since
    /// `generation` was taken, or it is a 404 that would replace a READY entry. A replaced
    /// entry of the same kind passes on its grants that are still good, so two tenants
    /// refreshing one image both keep it. Returns whether it was stored.
    pub async fn store(
        &self,
        protocol: Protocol,
        id: &str,
        new: NewEntry,
        who: Option<Fingerprint>,
        generation: Generation,
    ) -> bool {
        let granted_at = new.received_at;
        self.store_granted(protocol, id, new, who, granted_at, generation)
            .await
    }

    /// [`ImageCache::store`], with `who`'s grant dated `granted_at` rather than when the
    /// answer was produced: an answer from the fleet may be newer than the check that let
    /// `who` read it, and a grant lasts one TTL from that check.
    pub async fn store_granted(
        &self,
        protocol: Protocol,
        id: &str,
        new: NewEntry,
        who: Option<Fingerprint>,
        granted_at: Instant,
        generation: Generation,
    ) -> bool {
        let fresh_for = match new.kind {
            EntryKind::Ready => self.ttl.get(),
            EntryKind::NotFound => self.negative_ttl.get(),
        };
        let grant_life = self.ttl.get() + self.stale_if_error.get();
        let result = self
            .entries
            .entry(key(protocol, id))
            .and_compute_with(|old| {
                let old = old.map(|e| e.into_value());
                let outdated = self.generation(id) != generation;
                let would_hide_ready = new.kind == EntryKind::NotFound
                    && old.as_ref().is_some_and(|o| o.kind == EntryKind::Ready);
                if outdated || would_hide_ready {
                    return std::future::ready(Op::Nop);
                }
                let now = Moment::now();
                let granted_at = Moment::of(granted_at);
                let mut grants: Vec<Grant> = Vec::new();
                if self.keeps_grants(new.kind) {
                    // The new grant first: of grants made in the same millisecond, the sort
                    // below keeps the first.
                    if let Some(who) = who {
                        grants.push(Grant::new(who, granted_at));
                        self.revocations.granted(who);
                    }
                    if let Some(old) = old.filter(|o| o.kind == new.kind) {
                        grants.extend(
                            old.grants
                                .iter()
                                .filter(|g| Some(g.who) != who && now < g.at.plus(grant_life))
                                .copied(),
                        );
                    }
                    if grants.len() > MAX_GRANTS_PER_ENTRY {
                        grants.sort_by_key(|g| std::cmp::Reverse(g.at));
                        grants.truncate(MAX_GRANTS_PER_ENTRY);
                    }
                }
                std::future::ready(Op::Put(Arc::new(Entry {
                    kind: new.kind,
                    status: new.status,
                    headers: self.header_sets.intern(&new.headers),
                    body: new.body.clone(),
                    stored: Moment::of(new.received_at),
                    fresh_for_ms: u32::try_from(fresh_for.as_millis()).unwrap_or(u32::MAX),
                    grants: grants.into_boxed_slice(),
                })))
            })
            .await;
        let stored = matches!(
            result,
            CompResult::Inserted(_) | CompResult::ReplacedWith(_)
        );
        if stored {
            self.recent.changed(protocol, id);
        }
        stored
    }

    /// Ends `who`'s grant of `id`, in every protocol's entry: the API refused it that image
    /// (401, 403). Other credentials keep theirs. Returns whether there was one to end.
    pub async fn revoke(&self, id: &str, who: Fingerprint) -> bool {
        let mut revoked = false;
        for protocol in Protocol::ALL {
            let result = self
                .entries
                .entry(key(protocol, id))
                .and_compute_with(|old| {
                    let op = match old.map(|e| e.into_value()) {
                        Some(old) if old.grants.iter().any(|g| g.who == who) => {
                            Op::Put(Arc::new(old.without_grant_of(who)))
                        }
                        _ => Op::Nop,
                    };
                    std::future::ready(op)
                })
                .await;
            // Whatever moka did: the table may hold what moka has just let go.
            self.recent.changed(protocol, id);
            revoked |= matches!(result, CompResult::ReplacedWith(_));
        }
        revoked
    }

    /// Voids every grant `who` holds, on every image: the API called the credential itself
    /// invalid (401: unknown or expired). Does nothing for a credential that holds none.
    pub fn refuse_credential(&self, who: Fingerprint) -> bool {
        self.revocations.refused(who, Moment::now())
    }

    /// Drops every entry of `id` (one per protocol) and makes fetches already under way for
    /// it unstorable. Returns how many entries there were.
    pub async fn invalidate(&self, id: &str) -> u64 {
        self.stripe(id).fetch_add(1, Ordering::AcqRel);
        let mut dropped = 0;
        for protocol in Protocol::ALL {
            let removed = match protocol {
                Protocol::Http => self.entries.remove(id).await,
                Protocol::Grpc => self.entries.remove(&key(protocol, id)).await,
            };
            self.recent.changed(protocol, id);
            dropped += u64::from(removed.is_some());
        }
        dropped
    }

    /// Drops `id` because the upstream answered `who` with a 404 or a non-READY image: only
    /// if `who` could read one of its entries, so that one tenant's 404 (for an image it may
    /// not see) cannot evict another tenant's entry. Returns how many entries were dropped.
    pub async fn invalidate_for(&self, id: &str, who: Option<Fingerprint>) -> u64 {
        let now = Moment::now();
        let mut allowed = false;
        for protocol in Protocol::ALL {
            let found = match protocol {
                Protocol::Http => self.entries.get(id).await,
                Protocol::Grpc => self.entries.get(&key(protocol, id)).await,
            };
            allowed |= found.is_some_and(|entry| {
                entry.kind == EntryKind::NotFound
                    || self.may_read(&entry, who, now, self.ttl.get() + self.stale_if_error.get())
            });
        }
        if !allowed {
            return 0;
        }
        self.invalidate(id).await
    }

    /// Drops every entry; returns how many there were.
    pub async fn purge_all(&self) -> u64 {
        self.purges.fetch_add(1, Ordering::AcqRel);
        self.entries.run_pending_tasks().await;
        let count = self.entries.entry_count();
        self.entries.invalidate_all();
        self.recent.changed_all();
        self.entries.run_pending_tasks().await;
        count
    }

    /// Entry count and weighted size, settled first (moka's counts are lazy).
    pub async fn usage(&self) -> (u64, u64) {
        self.entries.run_pending_tasks().await;
        (self.entries.entry_count(), self.entries.weighted_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::CredentialHasher;
    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, StatusCode};

    fn config(mode: AuthMode) -> Config {
        Config {
            ttl: Duration::from_secs(60),
            auth_mode: mode,
            ..Config::default()
        }
    }

    fn ready(body: &'static str) -> NewEntry {
        NewEntry {
            kind: EntryKind::Ready,
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
            received_at: Instant::now(),
        }
    }

    async fn store(cache: &ImageCache, id: &str, new: NewEntry, who: Option<Fingerprint>) -> bool {
        cache
            .store(Protocol::Http, id, new, who, cache.generation(id))
            .await
    }

    /// What `who` may be served of "img" over REST now, as moka holds it.
    async fn look_up(cache: &ImageCache, who: Option<Fingerprint>) -> Lookup {
        cache
            .lookup(Protocol::Http, "img", who, Moment::now())
            .await
    }

    fn fingerprints() -> (Fingerprint, Fingerprint) {
        let hasher = CredentialHasher::new_random().unwrap();
        let mut a = HeaderMap::new();
        a.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer a"),
        );
        let mut b = HeaderMap::new();
        b.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer b"),
        );
        (
            hasher.fingerprint(&a).unwrap(),
            hasher.fingerprint(&b).unwrap(),
        )
    }

    #[tokio::test]
    async fn per_credential_entries_are_served_only_to_granted_callers() {
        let cache = ImageCache::new(&config(AuthMode::PerCredential), |_| {});
        let (a, b) = fingerprints();
        store(&cache, "img", ready("{}"), Some(a)).await;
        assert!(matches!(look_up(&cache, Some(a)).await, Lookup::Fresh(_)));
        assert!(matches!(look_up(&cache, Some(b)).await, Lookup::Miss));
        assert!(matches!(look_up(&cache, None).await, Lookup::Miss));
        // b's own fetch adds b and keeps a.
        store(&cache, "img", ready("{}"), Some(b)).await;
        assert!(matches!(look_up(&cache, Some(a)).await, Lookup::Fresh(_)));
        assert!(matches!(look_up(&cache, Some(b)).await, Lookup::Fresh(_)));
        assert_eq!(cache.invalidate("img").await, 1);
        assert!(matches!(look_up(&cache, Some(a)).await, Lookup::Miss));
    }

    #[tokio::test]
    async fn shared_entries_are_served_to_anyone() {
        let cache = ImageCache::new(&config(AuthMode::Shared), |_| {});
        let (a, _) = fingerprints();
        store(&cache, "img", ready("{}"), Some(a)).await;
        assert!(matches!(look_up(&cache, None).await, Lookup::Fresh(_)));
    }

    #[tokio::test]
    async fn expired_entries_are_stale_within_the_window() {
        let cache = ImageCache::new(&config(AuthMode::Shared), |_| {});
        let mut old = ready("{}");
        old.received_at = Instant::now() - Duration::from_secs(90);
        store(&cache, "img", old, None).await;
        match look_up(&cache, None).await {
            Lookup::Stale(entry) => assert!(entry.ttl_secs(Moment::now()) <= -29),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_invalidation_during_a_fetch_wins() {
        let cache = ImageCache::new(&config(AuthMode::Shared), |_| {});
        let before = cache.generation("img");
        cache.invalidate("img").await;
        assert!(
            !cache
                .store(Protocol::Http, "img", ready("{}"), None, before)
                .await
        );
        assert!(matches!(look_up(&cache, None).await, Lookup::Miss));
        let before = cache.generation("img");
        cache.purge_all().await;
        assert!(
            !cache
                .store(Protocol::Http, "img", ready("{}"), None, before)
                .await
        );
        assert!(store(&cache, "img", ready("{}"), None).await);
    }

    #[tokio::test]
    async fn one_tenants_404_neither_evicts_nor_hides_anothers_image() {
        let cache = ImageCache::new(
            &Config {
                negative_ttl: Duration::from_secs(30),
                ..config(AuthMode::PerCredential)
            },
            |_| {},
        );
        let (a, b) = fingerprints();
        store(&cache, "img", ready("{}"), Some(a)).await;
        assert_eq!(cache.invalidate_for("img", Some(b)).await, 0);
        let not_found = NewEntry {
            kind: EntryKind::NotFound,
            status: StatusCode::NOT_FOUND,
            ..ready("{}")
        };
        assert!(!store(&cache, "img", not_found, Some(b)).await);
        assert!(matches!(look_up(&cache, Some(a)).await, Lookup::Fresh(_)));
        assert_eq!(cache.invalidate_for("img", Some(a)).await, 1);
    }

    #[tokio::test]
    async fn a_404_is_only_shared_with_its_credential_even_in_shared_mode() {
        let cache = ImageCache::new(
            &Config {
                negative_ttl: Duration::from_secs(30),
                ..config(AuthMode::Shared)
            },
            |_| {},
        );
        let (a, b) = fingerprints();
        let not_found = NewEntry {
            kind: EntryKind::NotFound,
            status: StatusCode::NOT_FOUND,
            ..ready("{}")
        };
        store(&cache, "img", not_found, Some(b)).await;
        assert!(matches!(look_up(&cache, Some(b)).await, Lookup::Fresh(_)));
        assert!(matches!(look_up(&cache, Some(a)).await, Lookup::Miss));
        assert!(matches!(look_up(&cache, None).await, Lookup::Miss));
    }

    #[tokio::test]
    async fn grants_are_bounded() {
        let cache = ImageCache::new(&config(AuthMode::PerCredential), |_| {});
        let hasher = CredentialHasher::new_random().unwrap();
        for i in 0..(MAX_GRANTS_PER_ENTRY + 10) {
            let mut h = HeaderMap::new();
            h.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {i}")).unwrap(),
            );
            store(&cache, "img", ready("{}"), hasher.fingerprint(&h)).await;
            let Lookup::Fresh(entry) = cache
                .lookup(Protocol::Http, "img", hasher.fingerprint(&h), Moment::now())
                .await
            else {
                panic!("the newest grant is kept")
            };
            assert!(entry.grants.len() <= MAX_GRANTS_PER_ENTRY);
        }
    }

    #[tokio::test]
    async fn entries_with_the_same_headers_share_one_list() {
        let cache = ImageCache::new(&config(AuthMode::Shared), |_| {});
        let with_type = |body| {
            let mut new = ready(body);
            new.headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            new
        };
        assert!(store(&cache, "ly5a", with_type("a"), None).await);
        assert!(store(&cache, "ly5b", with_type("b"), None).await);
        let mut other = with_type("c");
        other
            .headers
            .insert("x-other", HeaderValue::from_static("1"));
        assert!(store(&cache, "ly5c", other, None).await);
        let now = Instant::now();
        let (Lookup::Fresh(a), Lookup::Fresh(b), Lookup::Fresh(c)) = (
            cache
                .lookup(Protocol::Http, "ly5a", None, Moment::of(now))
                .await,
            cache
                .lookup(Protocol::Http, "ly5b", None, Moment::of(now))
                .await,
            cache
                .lookup(Protocol::Http, "ly5c", None, Moment::of(now))
                .await,
        ) else {
            panic!("all three are fresh");
        };
        assert!(Arc::ptr_eq(&a.headers, &b.headers));
        assert!(!Arc::ptr_eq(&a.headers, &c.headers));
        assert_eq!(c.headers.len(), 2);
    }

    #[tokio::test]
    async fn an_answer_older_than_the_stale_window_is_never_served() {
        // moka keeps every entry for one fixed time after it was stored, so an answer that
        // was already old when stored (from another instance) must be bounded by lookup.
        let cache = ImageCache::new(
            &Config {
                stale_if_error: Duration::from_secs(30),
                ..config(AuthMode::Shared)
            },
            |_| {},
        );
        let now = Instant::now();
        let mut old = ready("old");
        old.received_at = now - Duration::from_secs(60 + 31);
        assert!(store(&cache, "ly5old", old, None).await);
        assert!(matches!(
            cache
                .lookup(Protocol::Http, "ly5old", None, Moment::of(now))
                .await,
            Lookup::Miss
        ));
        let mut stale = ready("stale");
        stale.received_at = now - Duration::from_secs(60 + 29);
        assert!(store(&cache, "ly5stale", stale, None).await);
        assert!(matches!(
            cache
                .lookup(Protocol::Http, "ly5stale", None, Moment::of(now))
                .await,
            Lookup::Stale(_)
        ));
    }

    #[tokio::test]
    async fn a_grant_lasts_one_ttl_from_the_check_not_from_the_answer() {
        let cache = ImageCache::new(&config(AuthMode::PerCredential), |_| {});
        let (alice, _) = fingerprints();
        let now = Instant::now();
        let mut answer = ready("newer answer");
        answer.received_at = now;
        let checked = now - Duration::from_secs(50);
        assert!(
            cache
                .store_granted(
                    Protocol::Http,
                    "ly5a",
                    answer,
                    Some(alice),
                    checked,
                    cache.generation("ly5a")
                )
                .await
        );
        assert!(matches!(
            cache
                .lookup(Protocol::Http, "ly5a", Some(alice), Moment::of(now))
                .await,
            Lookup::Fresh(_)
        ));
        // The entry is fresh for 60 s more, but Alice was checked 50 s before it arrived.
        assert!(matches!(
            cache
                .lookup(
                    Protocol::Http,
                    "ly5a",
                    Some(alice),
                    Moment::of(now + Duration::from_secs(11))
                )
                .await,
            Lookup::Miss
        ));
    }

    /// The body `who` is served for `id` in `protocol`, or `None` on a miss.
    async fn served(
        cache: &ImageCache,
        protocol: Protocol,
        who: Option<Fingerprint>,
    ) -> Option<Bytes> {
        // As the flow asks: the table first, then moka.
        let now = Moment::now();
        let found = match cache.lookup_recent(protocol, "img", who, now) {
            Some(found) => found,
            None => cache.lookup(protocol, "img", who, now).await,
        };
        match found {
            Lookup::Fresh(entry) => Some(entry.body.clone()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn lookups_answered_from_the_recent_table_see_every_change() {
        let cache = ImageCache::new(&config(AuthMode::PerCredential), |_| {});
        let (a, b) = fingerprints();
        for protocol in Protocol::ALL {
            let put = |body: &'static str, who| {
                let generation = cache.generation("img");
                cache.store(protocol, "img", ready(body), who, generation)
            };
            let one = Some(Bytes::from("one"));
            let two = Some(Bytes::from("two"));
            assert!(put("one", Some(a)).await);
            assert_eq!(lookups(&cache, protocol, Some(a)).await, [one]);
            assert!(put("two", Some(a)).await);
            assert_eq!(
                lookups(&cache, protocol, Some(a)).await,
                std::slice::from_ref(&two)
            );
            assert!(put("two", Some(b)).await);
            assert_eq!(
                lookups(&cache, protocol, Some(b)).await,
                std::slice::from_ref(&two)
            );
            assert!(cache.revoke("img", b).await);
            assert_eq!(lookups(&cache, protocol, Some(b)).await, [None]);
            assert_eq!(lookups(&cache, protocol, Some(a)).await, [two]);
            cache.invalidate("img").await;
            assert_eq!(lookups(&cache, protocol, Some(a)).await, [None]);
            assert!(put("three", Some(a)).await);
            let three = Some(Bytes::from("three"));
            assert_eq!(lookups(&cache, protocol, Some(a)).await, [three]);
            cache.purge_all().await;
            assert_eq!(lookups(&cache, protocol, Some(a)).await, [None]);
        }
    }

    /// What 40 lookups in a row served, repeats removed: enough that most are answered by
    /// the table of recent lookups.
    async fn lookups(
        cache: &ImageCache,
        protocol: Protocol,
        who: Option<Fingerprint>,
    ) -> Vec<Option<Bytes>> {
        let mut bodies = Vec::new();
        for _ in 0..40 {
            bodies.push(served(cache, protocol, who).await);
        }
        bodies.dedup();
        bodies
    }

    #[tokio::test]
    async fn an_entry_read_before_a_change_is_not_put_back_after_it() {
        let cache = ImageCache::new(&config(AuthMode::Shared), |_| {});
        assert!(store(&cache, "img", ready("old"), None).await);
        let ticket = cache.recent.ticket(Protocol::Http, "img");
        let old = cache.entries.get("img").await.expect("stored");
        assert!(store(&cache, "img", ready("new"), None).await);
        cache.recent.fill(ticket, Protocol::Http, "img", &old);
        for _ in 0..40 {
            assert_eq!(
                served(&cache, Protocol::Http, None).await,
                Some(Bytes::from("new"))
            );
        }
    }

    #[tokio::test]
    async fn an_entry_read_before_moka_removes_it_is_not_put_back_after() {
        let cache = ImageCache::new(&config(AuthMode::Shared), |_| {});
        assert!(store(&cache, "img", ready("{}"), None).await);
        let ticket = cache.recent.ticket(Protocol::Http, "img");
        let held = cache.entries.get("img").await.expect("stored");
        // Removed by moka alone (as by size or age): only its eviction listener hears of it.
        cache.entries.invalidate("img").await;
        cache.recent.fill(ticket, Protocol::Http, "img", &held);
        assert!(cache.recent.get(Protocol::Http, "img").is_none());
        assert_eq!(served(&cache, Protocol::Http, None).await, None);
        cache.entries.run_pending_tasks().await;
        assert_eq!(Arc::strong_count(&held), 1, "only this test holds it");
    }

    #[tokio::test]
    async fn one_lookup_in_sixteen_of_a_held_image_reads_moka() {
        let cache = ImageCache::new(&config(AuthMode::Shared), |_| {});
        assert!(store(&cache, "img", ready("{}"), None).await);
        let recent =
            |cache: &ImageCache| cache.lookup_recent(Protocol::Http, "img", None, Moment::now());
        assert!(recent(&cache).is_none(), "held only once moka was read");
        let found = look_up(&cache, None).await;
        assert!(matches!(found, Lookup::Fresh(_)));
        let read_through = (0..160).filter(|_| recent(&cache).is_none()).count();
        assert_eq!(read_through, 160 / 16);
    }
}
