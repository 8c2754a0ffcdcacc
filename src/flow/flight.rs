//! The miss path: one flight per key, and the refresh ahead of a hot entry.
//!
//! A request that misses joins the flight for its key, or leads a new one whose fetch runs
//! in a task of its own (so it completes for the others even if its client goes away).
//! Every member then waits, with its own deadline, and settles one round at a time: it is
//! answered, or it goes into the next round (the leader failed or went away, and exactly
//! one member leads a new fetch), or it fetches on its own (the answer was too big to hold,
//! or not its to take).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::HeaderMap;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::fallback::hit;
use super::fill::Oversized;
use super::{Fetched, Flow, FrontEnd, ImageGet, Reply, Served, Verdict};
use crate::auth::Fingerprint;
use crate::cache::{Entry, Lookup, Moment};
use crate::coalesce::{Joined, Publisher, Wait};
use crate::config::AuthMode;
use crate::fleet::Accept;
use crate::image::Protocol;
use crate::metrics::Rejection;
use crate::outcome::{CacheResult, Forward, Outcome};
use crate::upstream::UpstreamError;

/// How many flights one request may take part in: its first, a hand-over after a failed
/// leader, and one more for a shared-mode answer that was not its to take.
const MAX_ROUNDS: usize = 3;

/// Who shares a flight: the image in one protocol and, in per-credential mode, the
/// credential.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct FlightKey {
    protocol: Protocol,
    id: Arc<str>,
    who: Option<Fingerprint>,
}

/// One request's part in the flights of its miss.
pub(super) struct Miss<'a> {
    pub(super) front: &'a Arc<dyn FrontEnd>,
    pub(super) id: Arc<str>,
    key: FlightKey,
    /// What a fill of this request sends upstream.
    pub(super) headers: HeaderMap,
    pub(super) who: Option<Fingerprint>,
    pub(super) forward: Forward,
    started: Instant,
    /// When a fetch this request leads must be done (`--upstream-timeout`): the fetch is
    /// everyone's, so the leader's own deadline does not cut it short.
    fetch_deadline: Instant,
    /// How long this request waits, and how long a fetch of its own may take: the sooner
    /// of the fetch deadline and its own.
    pub(super) deadline: Instant,
}

impl Miss<'_> {
    pub(super) fn protocol(&self) -> Protocol {
        self.front.protocol()
    }

    /// The outcome of a request of this miss that goes upstream.
    pub(super) fn outcome(&self) -> Outcome {
        let result = match self.forward {
            Forward::Miss => CacheResult::Miss,
            _ => CacheResult::Bypass,
        };
        Outcome::forwarded(result, self.forward)
    }
}

/// How one round of a flight settled for one request.
enum Settled {
    /// Answered.
    Reply(Reply),
    /// Not settled: the request joins (or leads) the next round. The error is what it is
    /// answered with if no round is left.
    NextRound(Option<UpstreamError>),
    /// Nothing it could be given: it fetches on its own, uncached.
    Alone(Outcome),
}

impl Flow {
    fn flight_key(&self, protocol: Protocol, id: &Arc<str>, who: Option<Fingerprint>) -> FlightKey {
        FlightKey {
            protocol,
            id: id.clone(),
            who: match self.auth_mode {
                AuthMode::PerCredential => who,
                AuthMode::Shared => None,
            },
        }
    }

    /// The miss path of Image.Get: the rounds of flights until one settles.
    pub(super) async fn miss(
        self: &Arc<Self>,
        request: ImageGet<'_>,
        who: Option<Fingerprint>,
        forward: Forward,
    ) -> Reply {
        let id: Arc<str> = Arc::from(request.id);
        let fetch_deadline = request.started + self.upstream.timeout();
        let miss = Miss {
            front: request.front,
            key: self.flight_key(request.front.protocol(), &id, who),
            id,
            headers: request.front.fill_headers(request.headers),
            who,
            forward,
            started: request.started,
            fetch_deadline,
            deadline: request
                .deadline
                .map_or(fetch_deadline, |own| own.min(fetch_deadline)),
        };
        let mut last_error = UpstreamError::Connect("the upstream fetch was abandoned".into());
        for round in 1..=MAX_ROUNDS {
            match self.round(&miss, round == MAX_ROUNDS).await {
                Settled::Reply(reply) => return reply,
                Settled::Alone(outcome) => return self.fetch_alone(&miss, outcome).await,
                Settled::NextRound(error) => {
                    if let Some(error) = error {
                        last_error = error;
                    }
                }
            }
        }
        self.failed(&miss, last_error, miss.outcome()).await
    }

    /// One round: join or lead the flight, wait for its fetch, and see what it means for
    /// this request.
    async fn round(self: &Arc<Self>, miss: &Miss<'_>, last_round: bool) -> Settled {
        let mut outcome = miss.outcome();
        let (subscription, oversized) = match self.flights.join(miss.key.clone()) {
            Err(over) => {
                self.metrics.rejected(Rejection::Waiters);
                return Settled::Reply(Reply {
                    served: Served::Overloaded(over),
                    outcome,
                });
            }
            Ok(Joined::Waiter(subscription)) => (subscription, None),
            Ok(Joined::Leader(publisher, subscription)) => {
                if miss.forward == Forward::Miss {
                    // The flight before this one may have just filled the cache.
                    let now = Moment::now();
                    if let Lookup::Fresh(entry) = self
                        .cache
                        .lookup(miss.protocol(), &miss.id, miss.who, now)
                        .await
                    {
                        publisher.publish(Fetched::Cached);
                        return Settled::Reply(hit(entry, now));
                    }
                }
                let accept = (miss.forward == Forward::Miss).then_some(Accept::Fresh);
                (subscription, Some(self.lead(miss, publisher, accept)))
            }
        };
        outcome.coalesced = subscription.is_waiter();
        let fetched = match subscription.wait(miss.deadline).await {
            Wait::Done(fetched) => fetched,
            Wait::Abandoned => return Settled::NextRound(None),
            Wait::TimedOut => {
                let err = UpstreamError::Timeout(miss.deadline - miss.started);
                return Settled::Reply(self.failed(miss, err, outcome).await);
            }
        };
        match &*fetched {
            Fetched::Cached => {
                // A caller that asked for a fresh answer does not take the cached one.
                if miss.forward == Forward::Request && !last_round {
                    return Settled::NextRound(None);
                }
                let now = Moment::now();
                match self
                    .cache
                    .lookup(miss.protocol(), &miss.id, miss.who, now)
                    .await
                {
                    Lookup::Fresh(entry) => Settled::Reply(hit(entry, now)),
                    // Not this caller's to read, or gone again already.
                    _ if last_round => Settled::Alone(outcome),
                    _ => Settled::NextRound(None),
                }
            }
            Fetched::Answered(answer) => {
                let may_take = self.auth_mode == AuthMode::PerCredential
                    || answer.fetched_by == miss.who
                    || answer.verdict.for_anyone();
                if !may_take {
                    return if last_round {
                        Settled::Alone(outcome)
                    } else {
                        Settled::NextRound(None)
                    };
                }
                if answer.verdict == Verdict::Failing && miss.forward != Forward::Request {
                    if let Some(stale) = self.stale(miss, Some(answer.status)).await {
                        return Settled::Reply(stale);
                    }
                }
                outcome.upstream_status = Some(answer.status.as_u16());
                outcome.stored = answer.stored;
                Settled::Reply(Reply {
                    served: Served::Answer {
                        answer: answer.clone(),
                        own: !outcome.coalesced,
                    },
                    outcome,
                })
            }
            Fetched::Failed(err) => {
                // A waiter of a failed leader hands over to the next round (one of them
                // leads it), unless a stale copy can answer it now.
                if outcome.coalesced && !last_round {
                    if miss.forward != Forward::Request {
                        if let Some(stale) = self.stale(miss, None).await {
                            return Settled::Reply(stale);
                        }
                    }
                    return Settled::NextRound(Some(err.clone()));
                }
                Settled::Reply(self.failed(miss, err.clone(), outcome).await)
            }
            // The leader streams what it fetched; the others fetch on their own.
            Fetched::TooLarge => match oversized {
                Some(receiver) => Settled::Reply(Reply {
                    served: match receiver.await {
                        Ok(big) => self.streamed(big),
                        Err(_) => Served::Failed(UpstreamError::Body(
                            "the oversized answer was lost".into(),
                        )),
                    },
                    outcome,
                }),
                None => Settled::Alone(outcome),
            },
        }
    }

    /// Starts the leader's fetch in a task of its own; the answer comes back by the flight,
    /// and an answer too big to hold by the returned channel.
    fn lead(
        self: &Arc<Self>,
        miss: &Miss<'_>,
        publisher: Publisher<FlightKey, Fetched>,
        accept: Option<Accept>,
    ) -> oneshot::Receiver<Oversized> {
        let (hand_over, oversized) = oneshot::channel();
        let flow = self.clone();
        let front = miss.front.clone();
        let (id, headers, who, deadline) = (
            miss.id.clone(),
            miss.headers.clone(),
            miss.who,
            miss.fetch_deadline,
        );
        tokio::spawn(async move {
            let fetched = flow
                .fetch(
                    &front, &id, &headers, who, accept, deadline, hand_over, &publisher,
                )
                .await;
            publisher.publish(fetched);
        });
        oversized
    }

    /// Starts the refresh of a hot entry near the end of this caller's freshness, if this
    /// hit claims it and no fetch is running for the key: the entry is renewed (or dropped,
    /// if the image is no longer READY) before it can expire, so a hot image never misses.
    pub(super) fn maybe_refresh(
        self: &Arc<Self>,
        request: &ImageGet<'_>,
        entry: &Entry,
        who: Option<Fingerprint>,
        now: Moment,
    ) {
        let percent = self.refresh_ahead.load(Ordering::Relaxed);
        if percent == 0
            || !self.cache.claim_refresh(
                request.front.protocol(),
                request.id,
                entry,
                who,
                now,
                percent,
            )
        {
            return;
        }
        let id: Arc<str> = Arc::from(request.id);
        let key = self.flight_key(request.front.protocol(), &id, who);
        let Ok(Joined::Leader(publisher, _)) = self.flights.join(key) else {
            return;
        };
        self.metrics.refresh_started();
        let age = entry.age(now);
        let checked_age = entry.checked_age(who, now).unwrap_or(age);
        // Another instance may have refreshed it already: take theirs if it is newer (in
        // per-credential mode, with a newer check of this caller: a newer value fetched for
        // someone else does not renew the caller's).
        let accept = Some(Accept::Newer {
            value: age,
            check: checked_age,
        });
        let flow = self.clone();
        let front = request.front.clone();
        let headers = request.front.fill_headers(request.headers);
        let deadline = Instant::now() + self.upstream.timeout();
        tokio::spawn(async move {
            // Nobody streams an oversized refresh: dropping the receiver drops the body.
            let (hand_over, _) = oneshot::channel();
            let fetched = flow
                .fetch(
                    &front, &id, &headers, who, accept, deadline, hand_over, &publisher,
                )
                .await;
            publisher.publish(fetched);
        });
    }
}
