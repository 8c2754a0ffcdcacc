//! The one way the tests wait for what they cannot await: a metric that moves after the
//! answer, a lease released in Redis, a request arriving at the simulator, a process coming
//! up. A check is tried again every [`INTERVAL`] until it holds or [`PATIENCE`] runs out (as
//! linkerd's integration tests do with `assert_eventually!`).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How long to wait between two tries of a check.
pub const INTERVAL: Duration = Duration::from_millis(10);

/// How long a check may take to hold. A check that holds returns at once, so only a failing
/// test waits this long; it is generous because the tests share two cores with other builds.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// What one try of a check saw: `Some(value)`/`Ok(value)` once it holds; `None`, or
/// `Err(what it saw instead)` for the failure message, while it does not.
pub trait Observation {
    type Value;
    fn into_result(self) -> Result<Self::Value, String>;
}

impl<T> Observation for Option<T> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(|| "not yet".to_string())
    }
}

impl<T> Observation for Result<T, String> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self
    }
}

/// Tries `check` until it holds, and returns its value; panics naming `what` (what should
/// have come true) and the last observation once [`PATIENCE`] has passed.
pub async fn eventually<F, Fut>(what: &str, check: F) -> <Fut::Output as Observation>::Value
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Observation,
{
    match try_eventually(check).await {
        Ok(value) => value,
        Err(last) => panic!("{what}: still not so after {PATIENCE:?}; last seen: {last}"),
    }
}

/// The loop behind [`eventually`], for a caller that handles running out of time itself (a
/// `redis-server` that does not come up is tried again on another port): the check's value,
/// or its last observation once [`PATIENCE`] has passed.
pub async fn try_eventually<F, Fut>(
    mut check: F,
) -> Result<<Fut::Output as Observation>::Value, String>
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Observation,
{
    // Tokio's clock, so that a test with a paused clock still gives up.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let last = match check().await.into_result() {
            Ok(value) => return Ok(value),
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_check_is_tried_until_it_holds_and_its_value_returned() {
        let mut tries = 0;
        let value = eventually("the third try", || {
            tries += 1;
            let this_try = tries;
            async move { (this_try == 3).then_some(this_try) }
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "the sky falls: still not so after 20s; last seen: it did not")]
    async fn a_check_that_never_holds_fails_naming_what_and_the_last_observation() {
        eventually("the sky falls", || async {
            Err::<(), _>("it did not".to_string())
        })
        .await;
    }
}
