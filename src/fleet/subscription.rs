//! Listening to the other instances: `filled` messages wake the local waiters of a lease,
//! `invalidate` messages drop local copies. The subscription is pinged; if it drops or goes
//! silent it is made again and, since messages may have been missed meanwhile, the local
//! cache is dropped. Only while it is up are shared values taken.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;

use super::commands::{Unavailable, CONNECT_DEADLINES};
use super::Fleet;
use crate::metrics::{FleetMessage, L2Op};

/// How long to wait before the first retry of a pub/sub (re)connection (doubled each time).
const FIRST_RESUBSCRIBE_BACKOFF: Duration = Duration::from_millis(50);
/// How long to wait for a pub/sub (re)connection before trying again, at most.
const MAX_RESUBSCRIBE_BACKOFF: Duration = Duration::from_secs(5);
/// The subscription is pinged this often; a ping unanswered within a few command deadlines
/// means the connection went silent, and it is remade.
const SUBSCRIPTION_PING: Duration = Duration::from_secs(5);

/// How the subscription fares between two times it is up. A streak of failures is warned of
/// once, at its start, so its end is told once too, or an operator who saw the warning would
/// never learn that shared values are taken again; a subscription that comes up at the first
/// attempt says nothing.
#[derive(Debug, Default)]
struct Streak {
    /// Attempts that failed since the subscription was last up (or since start-up).
    failed_attempts: u32,
    /// Whether the subscription was up and then lost since it was last up.
    lost: bool,
}

impl Streak {
    /// Counts a failed attempt; true if it is the first of its streak, the one to warn of.
    fn failed(&mut self) -> bool {
        self.failed_attempts = self.failed_attempts.saturating_add(1);
        self.failed_attempts == 1
    }

    /// The subscription, which was up, is lost (the caller warns).
    fn lost(&mut self) {
        self.lost = true;
    }

    /// The subscription is up: `Some(failed attempts)` if that ends a streak that was
    /// warned of, and the streak starts over.
    fn up(&mut self) -> Option<u32> {
        let recovered = (self.failed_attempts > 0 || self.lost).then_some(self.failed_attempts);
        *self = Streak::default();
        recovered
    }
}

impl Fleet {
    /// Listens to the fleet until `owner` is dropped: `filled` messages wake local waiters,
    /// `invalidate` messages reach `on_invalidate` (`None` = everything). After a gap in the
    /// subscription (or if it could not be made at first), messages may have been missed, so
    /// everything local is dropped too.
    pub fn listen<T, F>(
        self: &Arc<Self>,
        owner: Weak<T>,
        on_invalidate: impl Fn(Arc<T>, Option<String>) -> F + Send + Sync + 'static,
    ) where
        T: Send + Sync + 'static,
        F: std::future::Future<Output = ()> + Send,
    {
        let fleet = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = FIRST_RESUBSCRIBE_BACKOFF;
            let mut streak = Streak::default();
            let mut seed = 0usize;
            loop {
                let Some(this) = fleet.upgrade() else { return };
                let Some(client) = this
                    .subscribe_to
                    .get(seed % this.subscribe_to.len().max(1))
                    .cloned()
                else {
                    return;
                };
                seed = seed.wrapping_add(1);
                let channels = [this.keys.channel("invalidate"), this.keys.channel("filled")];
                // Both connecting and a ping's answer may take a few command deadlines.
                let within = this.timeout * CONNECT_DEADLINES;
                drop(this);
                let subscribed = tokio::time::timeout(within, async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channels).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                })
                .await;
                let Ok(Ok(pubsub)) = subscribed else {
                    // Once per streak of failures (a wrong URL, TLS or ACL would else be silent).
                    if streak.failed() {
                        match &subscribed {
                            Ok(Err(e)) => tracing::warn!(
                                error = %e,
                                "cannot subscribe to the fleet; retrying (no shared values meanwhile)"
                            ),
                            _ => tracing::warn!(
                                "cannot subscribe to the fleet: no answer in {within:?}; retrying \
                                 (no shared values meanwhile)"
                            ),
                        }
                    }
                    if let Some(this) = fleet.upgrade() {
                        this.missed_messages.store(true, Ordering::Release);
                    }
                    if owner.strong_count() == 0 {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RESUBSCRIBE_BACKOFF);
                    continue;
                };
                backoff = FIRST_RESUBSCRIBE_BACKOFF;
                {
                    let Some(this) = fleet.upgrade() else { return };
                    // Without the time of the last purge, older values could be served: try
                    // the whole subscription again rather than go on without it.
                    if !this.load_purge_time().await {
                        streak.failed();
                        this.missed_messages.store(true, Ordering::Release);
                        drop(this);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_RESUBSCRIBE_BACKOFF);
                        continue;
                    }
                    if this.missed_messages.swap(false, Ordering::AcqRel) {
                        this.metrics().message(FleetMessage::Resync);
                        let Some(owner) = owner.upgrade() else { return };
                        on_invalidate(owner, None).await;
                    }
                    this.listening.store(true, Ordering::Release);
                    this.metrics().set_subscribed(true);
                    if let Some(failed_attempts) = streak.up() {
                        tracing::info!(
                            failed_attempts,
                            "the fleet subscription has recovered; shared values are taken again"
                        );
                    }
                }
                let (mut sink, mut messages) = pubsub.split();
                let mut ping = tokio::time::interval(SUBSCRIPTION_PING);
                ping.tick().await;
                loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        _ = ping.tick() => {
                            // Also how a dropped proxy is noticed by this task.
                            if owner.strong_count() == 0 { return; }
                            let pong = tokio::time::timeout(within, sink.ping::<redis::Value>()).await;
                            // (A subscribed connection answers a PING with ["pong", ""].)
                            if matches!(pong, Ok(Ok(_))) { continue; }
                            None
                        }
                    };
                    let Some(message) = message else { break };
                    let Some(this) = fleet.upgrade() else { return };
                    let payload = message.get_payload_bytes();
                    let Ok(id) = std::str::from_utf8(payload) else {
                        continue;
                    };
                    if message.get_channel_name().ends_with("filled") {
                        this.metrics().message(FleetMessage::Filled);
                        let _ = this.filled.send(Arc::from(id));
                    } else {
                        this.metrics().message(FleetMessage::Invalidate);
                        let Some(owner) = owner.upgrade() else { return };
                        if let Some(at) = id.strip_prefix('*') {
                            // `*:ms`: the purge's time comes with it, so it holds here even if
                            // Redis cannot be read right now.
                            match at.strip_prefix(':').and_then(|ms| ms.parse::<u64>().ok()) {
                                Some(ms) => {
                                    this.purged_before.fetch_max(ms, Ordering::AcqRel);
                                }
                                None => {
                                    if !this.load_purge_time().await {
                                        this.missed_messages.store(true, Ordering::Release);
                                    }
                                }
                            }
                            on_invalidate(owner, None).await;
                        } else {
                            on_invalidate(owner, Some(id.to_string())).await;
                        }
                    }
                }
                if let Some(this) = fleet.upgrade() {
                    this.listening.store(false, Ordering::Release);
                    this.metrics().set_subscribed(false);
                    this.missed_messages.store(true, Ordering::Release);
                }
                streak.lost();
                tracing::warn!("the fleet subscription was lost; reconnecting");
            }
        });
    }

    /// Learns of purges made while this instance was not listening. (Its success is not
    /// counted as a `get`, which counts image reads.)
    async fn load_purge_time(&self) -> bool {
        let value: Result<Option<String>, Unavailable> = self
            .commands
            .run_uncounted(L2Op::Get, redis::cmd("GET").arg(self.keys.purged_at()))
            .await;
        match value {
            Err(Unavailable) => false,
            Ok(value) => {
                if let Some(ms) = value.and_then(|v| v.parse::<u64>().ok()) {
                    self.purged_before.fetch_max(ms, Ordering::AcqRel);
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_attempt_that_succeeds_says_nothing() {
        let mut streak = Streak::default();
        assert_eq!(streak.up(), None);
        assert_eq!(streak.up(), None);
    }

    #[test]
    fn a_streak_of_failures_is_warned_of_once_and_its_end_told_once() {
        let mut streak = Streak::default();
        assert!(streak.failed(), "the first failure is warned of");
        assert!(!streak.failed());
        assert!(!streak.failed());
        assert_eq!(streak.up(), Some(3));
        assert_eq!(streak.up(), None, "told once");
        assert!(streak.failed(), "a new streak is warned of again");
        assert_eq!(streak.up(), Some(1));
    }

    #[test]
    fn a_lost_subscription_that_comes_back_is_told() {
        let mut streak = Streak::default();
        assert_eq!(streak.up(), None);
        streak.lost();
        assert_eq!(streak.up(), Some(0), "back at the first attempt");
        streak.lost();
        assert!(streak.failed());
        assert!(!streak.failed());
        assert_eq!(streak.up(), Some(2));
        assert_eq!(streak.up(), None);
    }
}
