//! Times inside the cache: whole milliseconds since a fixed epoch. An entry's age, its
//! freshness and its grants are compared on every hit; as integers that is an instruction
//! each, where every sum or difference of two `Instant`s is a checked seconds-and-nanoseconds
//! computation. A request's time is turned into a `Moment` once.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// How far before the first moment asked for the epoch lies: every time the cache is given
/// (a fleet answer produced before start-up, say) is within a TTL or a stale window, at most
/// this long, of a moment.
const EPOCH_MARGIN: Duration = Duration::from_secs(61 * 24 * 3600);

/// A point in time, in milliseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Moment(u64);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(EPOCH_MARGIN).unwrap_or(now)
    })
}

/// A duration in whole milliseconds (saturating).
pub fn millis(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(duration.subsec_millis()))
}

impl Moment {
    pub fn of(instant: Instant) -> Moment {
        Moment(millis(instant.saturating_duration_since(epoch())))
    }

    /// Now.
    pub fn now() -> Moment {
        Moment::of(Instant::now())
    }

    pub fn plus(self, duration: Duration) -> Moment {
        Moment(self.0.saturating_add(millis(duration)))
    }

    pub fn plus_millis(self, millis: u64) -> Moment {
        Moment(self.0.saturating_add(millis))
    }

    /// Milliseconds from `earlier` to this moment (0 if `earlier` is later).
    pub fn millis_since(self, earlier: Moment) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    pub fn since(self, earlier: Moment) -> Duration {
        Duration::from_millis(self.millis_since(earlier))
    }

    /// The moment as a number that is never 0 (for tables where 0 means "never").
    pub fn nonzero(self) -> u64 {
        self.0.saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn moments_follow_the_clock_to_the_millisecond() {
        let start = Instant::now();
        let a = Moment::of(start);
        let b = Moment::of(start + Duration::from_millis(1500));
        assert_eq!(b.millis_since(a), 1500);
        assert_eq!(a.millis_since(b), 0);
        assert_eq!(
            a.plus(Duration::from_secs(2)).since(a),
            Duration::from_secs(2)
        );
        assert!(a < b && a.nonzero() > 0);
        // Before the epoch's first use, within the margin, is still a distinct moment.
        let earlier = Moment::of(start - Duration::from_secs(3600));
        assert_eq!(a.millis_since(earlier), 3_600_000);
    }
}
