//! Values a reload may change while requests read them: an atomic each, so a request pays
//! one relaxed load and never a lock. A reload stores new values one by one; a request that
//! reads two of them during a reload may see one old and one new, which for independent
//! limits and timeouts is harmless.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A duration, held in nanoseconds (every setting's range is far below 584 years).
#[derive(Debug)]
pub struct TunableDuration(AtomicU64);

impl TunableDuration {
    pub fn new(value: Duration) -> TunableDuration {
        TunableDuration(AtomicU64::new(nanos(value)))
    }

    pub fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, value: Duration) {
        self.0.store(nanos(value), Ordering::Relaxed);
    }
}

fn nanos(value: Duration) -> u64 {
    u64::try_from(value.as_nanos()).unwrap_or(u64::MAX)
}

/// A count or a size.
#[derive(Debug)]
pub struct TunableCount(AtomicU64);

impl TunableCount {
    pub fn new(value: u64) -> TunableCount {
        TunableCount(AtomicU64::new(value))
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// The value as a `usize`, saturated (a 32-bit host cannot hold more anyway).
    pub fn get_usize(&self) -> usize {
        usize::try_from(self.get()).unwrap_or(usize::MAX)
    }

    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_as_set() {
        let d = TunableDuration::new(Duration::from_millis(1500));
        assert_eq!(d.get(), Duration::from_millis(1500));
        d.set(Duration::from_secs(30 * 24 * 3600));
        assert_eq!(d.get(), Duration::from_secs(30 * 24 * 3600));
        let n = TunableCount::new(7);
        n.set(u64::MAX);
        assert_eq!(n.get(), u64::MAX);
        assert_eq!(n.get_usize(), usize::MAX);
    }
}
