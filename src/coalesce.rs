//! Request coalescing: one upstream fetch per key at a time, shared by every request that
//! misses on that key while it runs.
//!
//! The first request for a key becomes the leader and gets a [`Publisher`]; it is expected
//! to run the fetch in a task of its own, so the fetch survives its client going away. Every
//! request, leader included, gets a [`Subscription`] and is woken by a `watch` channel when
//! the result is published, each with its own deadline. A publisher dropped without
//! publishing (the task panicked) wakes everyone with [`Wait::Abandoned`]; the flight is gone
//! from the map by then, so the first of them to come back becomes the one new leader and the
//! rest join it, instead of the whole crowd going upstream.
//!
//! Waiters are capped per key and in total; past a cap `join` refuses with [`Overloaded`].
//!
//! [`Ending`] names how a fetch ended for those who waited on it; the fleet tier's lease
//! uses the same words for the instances that wait on one instance's fetch.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::tunable::TunableCount;

struct Flight<V> {
    result: watch::Receiver<Option<Arc<V>>>,
    waiters: AtomicUsize,
}

/// The flights in progress, by key.
pub struct Coalescer<K, V> {
    flights: Mutex<HashMap<K, Arc<Flight<V>>>>,
    max_waiters_per_key: TunableCount,
    max_waiters: TunableCount,
    waiters: Arc<AtomicUsize>,
}

/// A waiter cap was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overloaded {
    PerKey,
    Total,
}

/// What `join` made of a request.
pub enum Joined<K: Hash + Eq + Clone, V> {
    /// No flight was running: this request leads a new one and must fetch and publish.
    Leader(Publisher<K, V>, Subscription<V>),
    /// A flight was running: wait for its result.
    Waiter(Subscription<V>),
}

/// The leader's handle: publishes the flight's result and ends the flight.
pub struct Publisher<K: Hash + Eq + Clone, V> {
    coalescer: Arc<Coalescer<K, V>>,
    flight: Arc<Flight<V>>,
    key: K,
    sender: Option<watch::Sender<Option<Arc<V>>>>,
}

/// A request's place in a flight.
pub struct Subscription<V> {
    result: watch::Receiver<Option<Arc<V>>>,
    counted: Option<(Arc<Flight<V>>, Arc<AtomicUsize>)>,
}

/// How a fetch ended for the requests (or, across the fleet, the instances) that waited on
/// it, and so what they do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// With an answer they may all be given: they take it.
    Shared,
    /// With nothing they could be given (too big to hold, not theirs to see, changed
    /// meanwhile): each fetches on its own at once, rather than queue behind another.
    NotShareable,
    /// Without an answer (a failure, or the leader went away): exactly one of them takes
    /// over, so an ailing upstream is not asked by the whole crowd at once.
    Failed,
}

/// How waiting ended.
pub enum Wait<V> {
    Done(Arc<V>),
    /// The leader went away without a result.
    Abandoned,
    /// This request's own deadline passed first.
    TimedOut,
}

impl<K: Hash + Eq + Clone, V> Coalescer<K, V> {
    pub fn new(max_waiters_per_key: usize, max_waiters: usize) -> Arc<Self> {
        Arc::new(Coalescer {
            flights: Mutex::new(HashMap::new()),
            max_waiters_per_key: TunableCount::new(max_waiters_per_key as u64),
            max_waiters: TunableCount::new(max_waiters as u64),
            waiters: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// New waiter limits (a reload): they hold for the next waiter to join; those waiting
    /// already stay.
    pub fn set_limits(&self, max_waiters_per_key: usize, max_waiters: usize) {
        self.max_waiters_per_key.set(max_waiters_per_key as u64);
        self.max_waiters.set(max_waiters as u64);
    }

    fn flights(&self) -> MutexGuard<'_, HashMap<K, Arc<Flight<V>>>> {
        // The map is never left half-updated, so a panic elsewhere cannot poison its meaning.
        self.flights.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the flight for `key`, or starts one.
    pub fn join(self: &Arc<Self>, key: K) -> Result<Joined<K, V>, Overloaded> {
        let mut flights = self.flights();
        if let Some(flight) = flights.get(&key) {
            if flight.waiters.load(Ordering::Relaxed) >= self.max_waiters_per_key.get_usize() {
                return Err(Overloaded::PerKey);
            }
            if self.waiters.load(Ordering::Relaxed) >= self.max_waiters.get_usize() {
                return Err(Overloaded::Total);
            }
            flight.waiters.fetch_add(1, Ordering::Relaxed);
            self.waiters.fetch_add(1, Ordering::Relaxed);
            return Ok(Joined::Waiter(Subscription {
                result: flight.result.clone(),
                counted: Some((flight.clone(), self.waiters.clone())),
            }));
        }
        let (sender, receiver) = watch::channel(None);
        let flight = Arc::new(Flight {
            result: receiver.clone(),
            waiters: AtomicUsize::new(0),
        });
        flights.insert(key.clone(), flight.clone());
        Ok(Joined::Leader(
            Publisher {
                coalescer: self.clone(),
                flight,
                key,
                sender: Some(sender),
            },
            Subscription {
                result: receiver,
                counted: None,
            },
        ))
    }

    /// Flights now running.
    pub fn inflight(&self) -> usize {
        self.flights().len()
    }

    /// Requests now waiting on another's flight.
    pub fn waiters(&self) -> usize {
        self.waiters.load(Ordering::Relaxed)
    }
}

impl<K: Hash + Eq + Clone, V> Publisher<K, V> {
    /// Requests now waiting on this flight besides the leader.
    pub fn waiters(&self) -> usize {
        self.flight.waiters.load(Ordering::Relaxed)
    }

    /// Ends the flight and wakes everyone in it with `value`. The flight leaves the map
    /// first, so a request arriving after this starts afresh (and normally hits the cache the
    /// leader has just filled).
    pub fn publish(mut self, value: V) {
        self.coalescer.flights().remove(&self.key);
        if let Some(sender) = self.sender.take() {
            // No receivers left is fine: everyone gave up.
            let _ = sender.send(Some(Arc::new(value)));
        }
    }
}

impl<K: Hash + Eq + Clone, V> Drop for Publisher<K, V> {
    fn drop(&mut self) {
        if self.sender.is_some() {
            // Dropping the sender after removal wakes every waiter with Abandoned.
            self.coalescer.flights().remove(&self.key);
        }
    }
}

impl<V> Subscription<V> {
    /// Waits for the flight's result until `deadline`.
    pub async fn wait(mut self, deadline: Instant) -> Wait<V> {
        let waited = tokio::time::timeout_at(deadline, self.result.wait_for(Option::is_some));
        match waited.await {
            Err(_) => Wait::TimedOut,
            Ok(Err(_)) => Wait::Abandoned,
            Ok(Ok(value)) => match value.as_ref() {
                Some(v) => Wait::Done(v.clone()),
                None => Wait::Abandoned,
            },
        }
    }

    /// Whether this request joined another's flight (rather than leading it).
    pub fn is_waiter(&self) -> bool {
        self.counted.is_some()
    }
}

impl<V> Drop for Subscription<V> {
    fn drop(&mut self) {
        if let Some((flight, total)) = self.counted.take() {
            flight.waiters.fetch_sub(1, Ordering::Relaxed);
            total.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn one_leader_many_waiters_one_result() {
        let c: Arc<Coalescer<&str, u32>> = Coalescer::new(100, 100);
        let Ok(Joined::Leader(publisher, lead)) = c.join("k") else {
            panic!("first must lead")
        };
        let mut subs = Vec::new();
        for _ in 0..10 {
            match c.join("k") {
                Ok(Joined::Waiter(s)) => subs.push(s),
                _ => panic!("later ones wait"),
            }
        }
        assert_eq!(c.waiters(), 10);
        assert_eq!(c.inflight(), 1);
        let waiting = tokio::spawn(async move {
            let mut got = 0;
            for s in subs {
                if let Wait::Done(v) = s.wait(far()).await {
                    got += *v;
                }
            }
            got
        });
        publisher.publish(7);
        assert_eq!(waiting.await.unwrap(), 70);
        assert!(matches!(lead.wait(far()).await, Wait::Done(v) if *v == 7));
        assert_eq!(c.waiters(), 0);
        assert_eq!(c.inflight(), 0);
    }

    #[tokio::test]
    async fn abandoned_flight_hands_over_to_one_new_leader() {
        let c: Arc<Coalescer<&str, u32>> = Coalescer::new(100, 100);
        let Ok(Joined::Leader(publisher, _)) = c.join("k") else {
            panic!()
        };
        let Ok(Joined::Waiter(a)) = c.join("k") else {
            panic!()
        };
        let Ok(Joined::Waiter(b)) = c.join("k") else {
            panic!()
        };
        drop(publisher);
        assert!(matches!(a.wait(far()).await, Wait::Abandoned));
        assert!(matches!(b.wait(far()).await, Wait::Abandoned));
        assert!(matches!(c.join("k"), Ok(Joined::Leader(..))));
    }

    #[tokio::test]
    async fn caps_refuse_extra_waiters() {
        let c: Arc<Coalescer<&str, u32>> = Coalescer::new(2, 3);
        let _lead = c.join("a");
        let _b = c.join("b");
        let w1 = c.join("a");
        let w2 = c.join("a");
        assert!(matches!(c.join("a"), Err(Overloaded::PerKey)));
        let w3 = c.join("b");
        assert!(matches!(c.join("b"), Err(Overloaded::Total)));
        drop((w1, w2, w3));
        assert_eq!(c.waiters(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn each_waiter_has_its_own_deadline() {
        let c: Arc<Coalescer<&str, u32>> = Coalescer::new(10, 10);
        let Ok(Joined::Leader(publisher, _)) = c.join("k") else {
            panic!()
        };
        let Ok(Joined::Waiter(early)) = c.join("k") else {
            panic!()
        };
        let Ok(Joined::Waiter(late)) = c.join("k") else {
            panic!()
        };
        let start = Instant::now();
        let early = tokio::spawn(early.wait(start + Duration::from_secs(1)));
        let late = tokio::spawn(late.wait(start + Duration::from_secs(10)));
        // The leader publishes at 5 s: the first waiter has given up by then, the second
        // gets the result. (The clock is paused: no real time passes.)
        tokio::time::sleep(Duration::from_secs(5)).await;
        publisher.publish(9);
        assert!(matches!(early.await.unwrap(), Wait::TimedOut));
        assert!(matches!(late.await.unwrap(), Wait::Done(v) if *v == 9));
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        assert_eq!(c.waiters(), 0);
    }
}
