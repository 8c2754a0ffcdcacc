//! The timer hyper's header-read timeout runs on: one per HTTP/1 connection.
//!
//! hyper arms a new sleep for every request head and drops it once the head is in. On
//! tokio's timer (hyper-util's `TokioTimer`) that is an allocation, a timer-wheel insertion
//! and removal under the driver's lock, and a clock read each way: about a tenth of what a
//! cache hit costs (`bench/callgrind`). Here the sleeps of one connection all wait on the
//! same tokio `Sleep`, registered once. A head's sleep moves it only when it fires before
//! that head's deadline; a connection's deadlines only grow (each is when a head read began
//! plus the same timeout), so the shared sleep is never late, and fires early at most once
//! per timeout, to be re-armed.
//!
//! The shared sleep wakes whichever task polled it last, so a timer serves one connection:
//! hyper polls all of a connection's sleeps from that connection's task.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
// hyper's `Timer` speaks std's `Instant`; every one made here comes from tokio's clock.
use std::time::Duration;
#[allow(clippy::disallowed_types)]
use std::time::Instant;

use hyper::rt::{Sleep, Timer};

/// Far enough ahead to mean never, near enough not to overflow an `Instant`.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

type SharedSleep = Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>;

/// The timer of one HTTP/1 connection.
#[derive(Clone, Default)]
pub(super) struct HeadTimer {
    shared: SharedSleep,
}

#[allow(clippy::disallowed_types)]
impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        let now = self.now();
        let deadline = now
            .checked_add(duration)
            .unwrap_or_else(|| now + NEVER.min(duration));
        self.sleep_until(deadline)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(HeadSleep {
            deadline: tokio::time::Instant::from_std(deadline),
            shared: Arc::clone(&self.shared),
        })
    }

    /// tokio's clock, so that a test's paused time holds here too.
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// One sleep of a connection: done when the shared sleep fires at or after its deadline.
struct HeadSleep {
    deadline: tokio::time::Instant,
    shared: SharedSleep,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let sleep = shared.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        // A later sleep of this connection set it past this deadline: bring it forward.
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        loop {
            match sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if sleep.deadline() >= deadline => return Poll::Ready(()),
                // It fired for an earlier head's deadline: wait on for this one.
                Poll::Ready(()) => sleep.as_mut().reset(deadline),
            }
        }
    }
}

impl Sleep for HeadSleep {}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll_once(sleep: &mut Pin<Box<dyn Sleep>>) -> Poll<()> {
        let waker = std::task::Waker::noop();
        sleep.as_mut().poll(&mut Context::from_waker(waker))
    }

    #[tokio::test(start_paused = true)]
    async fn each_sleep_ends_at_its_own_deadline() {
        let timer = HeadTimer::default();
        let start = timer.now();
        let mut first = timer.sleep_until(start + Duration::from_secs(10));
        assert!(poll_once(&mut first).is_pending());
        // The next head, two seconds on: the shared sleep still waits for the first deadline.
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(first);
        let mut second = timer.sleep(Duration::from_secs(10));
        assert!(poll_once(&mut second).is_pending());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(
            poll_once(&mut second).is_pending(),
            "fired at the first deadline"
        );
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(poll_once(&mut second).is_pending());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(poll_once(&mut second).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_is_not_missed() {
        let timer = HeadTimer::default();
        let mut late = timer.sleep(Duration::from_secs(30));
        assert!(poll_once(&mut late).is_pending());
        let mut early = timer.sleep(Duration::from_secs(5));
        assert!(poll_once(&mut early).is_pending());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(poll_once(&mut early).is_ready());
        assert!(poll_once(&mut late).is_pending());
        tokio::time::advance(Duration::from_secs(25)).await;
        assert!(poll_once(&mut late).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_past_the_end_of_time_never_fires() {
        let timer = HeadTimer::default();
        let mut sleep = timer.sleep(Duration::MAX);
        assert!(poll_once(&mut sleep).is_pending());
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(poll_once(&mut sleep).is_pending());
    }
}
