//! The leader's fetch: from the fleet tier if another instance has (or is getting) the
//! image, else one upstream GET; what the front-end judged of the answer applied to the
//! local cache; and, after the flight is answered, to the fleet.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{response, HeaderMap, StatusCode};
use hyper::body::Incoming;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::flight::FlightKey;
use super::{Answer, Fetched, Flow, FrontEnd, Verdict};
use crate::auth::Fingerprint;
use crate::cache::{EntryKind, Generation, Lookup, Moment, NewEntry};
use crate::coalesce::{Ending, Publisher};
use crate::fleet::{Accept, Claim, Reader, SharedAnswer, Ticket};
use crate::http::headers::{detached, replayable, request_id_of, strip_hop_by_hop};
use crate::image::Protocol;
use crate::metrics::InvalidationReason;
use crate::route::RouteKind;
use crate::upstream::LimitedBody;

/// An upstream answer too big to hold, handed to the leader to stream.
pub(super) struct Oversized {
    pub(super) slot: OwnedSemaphorePermit,
    pub(super) head: response::Parts,
    pub(super) prefix: Bytes,
    pub(super) rest: Incoming,
    pub(super) deadline: Instant,
}

/// What an upstream answer means for the rest of the fleet.
enum FleetEffect {
    /// A READY image: share it.
    Share(SharedAnswer, SystemTime),
    /// The image is no longer what others may hold: drop it everywhere.
    Invalidate,
    /// The API refused this credential: forget that it may read the image.
    Revoke,
    /// A 404 that dropped no copy here: the image is gone for everyone if the fleet holds
    /// it (and, per-credential, this credential could read it); forget the credential's
    /// grant.
    NotFound,
    /// Nothing to tell, and nothing anyone else could be given (too big, or changed while
    /// it was fetched): the instances waiting on this fetch fetch on their own.
    NotShareable,
    /// Nothing to tell: a failure, or an answer for this caller only.
    Nothing,
}

/// What applying an answer to the local cache did.
struct Applied {
    stored: bool,
    effect: FleetEffect,
}

impl Applied {
    fn nothing_stored(effect: FleetEffect) -> Applied {
        Applied {
            stored: false,
            effect,
        }
    }
}

/// The one info event per Image.Get fetch from the upstream.
struct FetchEvent<'a> {
    fetched: &'a Fetched,
    request_id: &'a str,
    elapsed: Duration,
    waiters: usize,
}

impl FetchEvent<'_> {
    fn emit(self) {
        let FetchEvent {
            fetched,
            request_id,
            waiters,
            ..
        } = self;
        let elapsed_ms = self.elapsed.as_secs_f64() * 1000.0;
        let coalesced = waiters > 0;
        match fetched {
            Fetched::Answered(answer) => tracing::info!(
                route = "image_get",
                request_id,
                status = answer.status.as_u16(),
                stored = answer.stored,
                coalesced,
                waiters,
                elapsed_ms,
                "upstream fetch"
            ),
            Fetched::Failed(err) => tracing::info!(
                route = "image_get",
                request_id,
                error = %err,
                kind = err.kind(),
                coalesced,
                waiters,
                elapsed_ms,
                "upstream fetch failed"
            ),
            Fetched::TooLarge => tracing::info!(
                route = "image_get",
                request_id,
                coalesced,
                waiters,
                elapsed_ms,
                "upstream answer too large to cache; streamed through"
            ),
            Fetched::Cached => {}
        }
    }
}

impl Flow {
    /// The leader's fetch: from the fleet tier if another instance has (or is getting) the
    /// image and `accept` allows reading it, else one upstream GET; its effect on the cache
    /// and the fleet; and what every member of the flight is answered from.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fetch(
        self: &Arc<Self>,
        front: &Arc<dyn FrontEnd>,
        id: &str,
        headers: &HeaderMap,
        who: Option<Fingerprint>,
        accept: Option<Accept>,
        deadline: Instant,
        hand_over: oneshot::Sender<Oversized>,
        publisher: &Publisher<FlightKey, Fetched>,
    ) -> Fetched {
        let started = Instant::now();
        let generation = self.cache.generation(id);
        let reader = self.fleet.as_ref().and_then(|f| f.reader(id, headers));
        let mut ticket = Ticket::default();
        if let (Some(fleet), Some(reader)) = (&self.fleet, &reader) {
            match accept {
                Some(accept) => {
                    // Half of the time left at most, so that a fetch of our own still fits.
                    let now = Instant::now();
                    let wait_until = now + deadline.saturating_duration_since(now) / 2;
                    let max_entry_size = self.max_entry_size();
                    let usable = |id: &str, answer: &SharedAnswer| {
                        answer.body.len() <= max_entry_size && front.is_ready(id, answer)
                    };
                    let claimed = fleet
                        .claim(front.protocol(), id, reader, accept, wait_until, &usable)
                        .await;
                    match claimed {
                        Claim::Found(shared) => {
                            let protocol = front.protocol();
                            if self
                                .store_shared(protocol, id, shared, who, generation)
                                .await
                            {
                                return Fetched::Cached;
                            }
                            // Invalidated meanwhile: fetch, and replace it.
                            ticket = fleet.ticket(id).await;
                        }
                        Claim::Fetch(fetch) => ticket = fetch,
                    }
                }
                // A no-cache fetch does not read the fleet, but may refresh it.
                None => ticket = fleet.ticket(id).await,
            }
        }
        // The fetch starts now: an invalidation during the wait for the fleet is behind it.
        let generation = self.cache.generation(id);
        let (fetched, effect) = self
            .fetch_upstream(front, id, headers, who, deadline, hand_over, generation)
            .await;
        FetchEvent {
            fetched: &fetched,
            request_id: request_id_of(headers),
            elapsed: started.elapsed(),
            waiters: publisher.waiters(),
        }
        .emit();
        if let Some(fleet) = &self.fleet {
            // Redis is not waited for: the flight is answered now, the fleet hears a moment
            // later.
            let fleet = fleet.clone();
            let id = id.to_string();
            let protocol = front.protocol();
            tokio::spawn(async move {
                let ending = match (effect, reader) {
                    (FleetEffect::Share(answer, produced), Some(reader)) => {
                        return fleet
                            .publish(protocol, &id, &reader, &answer, produced, ticket)
                            .await;
                    }
                    (FleetEffect::Invalidate, _) => {
                        fleet.invalidate(&id).await;
                        Ending::NotShareable
                    }
                    (FleetEffect::NotFound, Some(reader)) => {
                        fleet.not_found(&id, &reader).await;
                        Ending::NotShareable
                    }
                    // A per-credential lease is this token's alone: its waiters would be
                    // refused too, so they need not queue for it.
                    (FleetEffect::Revoke, Some(Reader::Credential(record))) => {
                        fleet.revoke(&id, &record).await;
                        Ending::NotShareable
                    }
                    (FleetEffect::NotShareable, _) => Ending::NotShareable,
                    _ => Ending::Failed,
                };
                fleet.release(ticket, &id, ending).await;
            });
        }
        fetched
    }

    /// Takes another instance's answer into the local cache, for `who`; whether `who` can
    /// now be served it (not if it was invalidated meanwhile).
    async fn store_shared(
        &self,
        protocol: Protocol,
        id: &str,
        shared: SharedAnswer,
        who: Option<Fingerprint>,
        generation: Generation,
    ) -> bool {
        // (The fleet let through only a READY image of this ID within --max-entry-size.)
        let now = Instant::now();
        let entry = NewEntry {
            kind: EntryKind::Ready,
            status: shared.status,
            headers: replayable(&shared.headers),
            body: shared.body,
            received_at: now.checked_sub(shared.age).unwrap_or(now),
        };
        let granted_at = now.checked_sub(shared.granted_age).unwrap_or(now);
        self.cache
            .store_granted(protocol, id, entry, who, granted_at, generation)
            .await
            && matches!(
                self.cache.lookup(protocol, id, who, Moment::of(now)).await,
                Lookup::Fresh(_)
            )
    }

    /// One upstream GET for the image and its effect on the local cache; what it means for
    /// the fleet is returned for the caller to tell.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_upstream(
        &self,
        front: &Arc<dyn FrontEnd>,
        id: &str,
        headers: &HeaderMap,
        who: Option<Fingerprint>,
        deadline: Instant,
        hand_over: oneshot::Sender<Oversized>,
        generation: Generation,
    ) -> (Fetched, FleetEffect) {
        let failed = |err| (Fetched::Failed(err), FleetEffect::Nothing);
        let sent = self
            .upstream
            .send_fill(
                || front.fill_request(&self.upstream, id, headers.clone()),
                deadline,
            )
            .await;
        let (response, slot) = match sent {
            Ok(exchange) => (exchange.response, exchange.slot),
            Err(err) => return failed(err),
        };
        let (mut head, body) = response.into_parts();
        strip_hop_by_hop(&mut head.headers);
        let received_at = Instant::now();
        let (body, trailers) = match self
            .upstream
            .read_limited(RouteKind::ImageGet, body, self.max_entry_size(), deadline)
            .await
        {
            Err(err) => return failed(err),
            Ok(LimitedBody::TooLarge { prefix, rest }) => {
                // If the leader's client has gone, dropping the body closes the exchange.
                let _ = hand_over.send(Oversized {
                    slot,
                    head,
                    prefix,
                    rest,
                    deadline,
                });
                return (Fetched::TooLarge, FleetEffect::NotShareable);
            }
            Ok(LimitedBody::Complete { data, trailers }) => (data, trailers),
        };
        let verdict = front.judge(id, &head, &body, trailers.as_ref());
        let kept = front.kept_headers(&head, trailers.as_ref());
        let applied = self
            .apply(
                front.protocol(),
                id,
                verdict,
                head.status,
                &kept,
                &body,
                who,
                received_at,
                generation,
            )
            .await;
        let answer = Answer {
            status: head.status,
            headers: head.headers,
            body,
            trailers,
            verdict,
            fetched_by: who,
            stored: applied.stored,
        };
        (Fetched::Answered(Arc::new(answer)), applied.effect)
    }

    /// What an upstream answer does to the local cache, by its verdict: whether it was
    /// stored, and what the fleet should hear of it.
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        protocol: Protocol,
        id: &str,
        verdict: Verdict,
        status: StatusCode,
        kept: &HeaderMap,
        body: &Bytes,
        who: Option<Fingerprint>,
        received_at: Instant,
        mut generation: Generation,
    ) -> Applied {
        let mut not_found_effect = FleetEffect::Nothing;
        let kind = match verdict {
            Verdict::Ready => EntryKind::Ready,
            Verdict::NotReady(reason) => {
                // The caller was shown the image, so it is theirs to report on.
                self.invalidate_for(id, who, reason).await;
                return Applied::nothing_stored(FleetEffect::Invalidate);
            }
            Verdict::Gone => {
                // A 404 may only mean "not for you": it drops the fleet's copy only when it
                // dropped a copy this caller could read (here, or by its grant in Redis; in
                // shared mode every caller may read every image).
                not_found_effect = FleetEffect::NotFound;
                if self
                    .invalidate_for(id, who, InvalidationReason::NotFound)
                    .await
                {
                    // Our own invalidation must not stop us storing the 404 that caused it.
                    generation = self.cache.generation(id);
                    not_found_effect = FleetEffect::Invalidate;
                }
                if !self.cache.stores_not_found() {
                    return Applied::nothing_stored(not_found_effect);
                }
                EntryKind::NotFound
            }
            Verdict::Refused { credential_invalid } => {
                self.refused(id, who, credential_invalid).await;
                return Applied::nothing_stored(FleetEffect::Revoke);
            }
            // Answered, never stored, and no reason to believe the cached image changed.
            Verdict::Failing | Verdict::Relayed { .. } => {
                return Applied::nothing_stored(FleetEffect::Nothing)
            }
        };
        // Without a credential an entry could never be served in per-credential mode.
        if self.auth_mode == crate::config::AuthMode::PerCredential && who.is_none() {
            return Applied::nothing_stored(not_found_effect);
        }
        let headers = detached(kept);
        let shared = (kind == EntryKind::Ready).then(|| SharedAnswer {
            status,
            headers: headers.clone(),
            body: body.clone(),
            age: received_at.elapsed(),
            granted_age: received_at.elapsed(),
        });
        let entry = NewEntry {
            kind,
            status,
            headers,
            body: body.clone(),
            received_at,
        };
        let stored = self.cache.store(protocol, id, entry, who, generation).await;
        let effect = match shared {
            // Not stored here means invalidated while it was fetched: not for others either.
            Some(answer) if stored => {
                let produced = SystemTime::now()
                    .checked_sub(answer.age)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                FleetEffect::Share(answer, produced)
            }
            Some(_) => FleetEffect::NotShareable,
            // A stored 404: what it did to the fleet was decided above.
            None => not_found_effect,
        };
        Applied { stored, effect }
    }
}
