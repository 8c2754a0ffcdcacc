//! What answers when the fetch does not: a hit, a stale copy while the upstream fails, the
//! failure itself, or a fetch of the request's own, streamed and uncached.

use std::sync::Arc;

use bytes::Bytes;
use http::{StatusCode, Version};

use super::fill::Oversized;
use super::flight::Miss;
use super::{Flow, Reply, Served};
use crate::cache::{Entry, Lookup, Moment};
use crate::http::headers::strip_hop_by_hop;
use crate::outcome::{CacheResult, Forward, Outcome};
use crate::route::RouteKind;
use crate::upstream::UpstreamError;

/// A fresh entry, as a hit at `now`.
pub(super) fn hit(entry: Arc<Entry>, now: Moment) -> Reply {
    Reply {
        outcome: Outcome::hit(entry.ttl_secs(now), entry.age_secs(now)),
        served: Served::Entry(entry),
    }
}

impl Flow {
    /// The stale entry, if the upstream failed and this caller may have it.
    pub(super) async fn stale(
        &self,
        miss: &Miss<'_>,
        upstream_status: Option<StatusCode>,
    ) -> Option<Reply> {
        let now = Moment::now();
        match self
            .cache
            .lookup(miss.protocol(), &miss.id, miss.who, now)
            .await
        {
            Lookup::Stale(entry) => {
                let mut outcome = Outcome::forwarded(CacheResult::Stale, Forward::Stale);
                outcome.upstream_status = upstream_status.map(|s| s.as_u16());
                outcome.ttl = Some(entry.ttl_secs(now));
                outcome.age = Some(entry.age_secs(now));
                Some(Reply {
                    served: Served::Entry(entry),
                    outcome,
                })
            }
            // Someone refreshed it meanwhile.
            Lookup::Fresh(entry) => Some(hit(entry, now)),
            Lookup::Miss => None,
        }
    }

    /// No answer came: a stale copy if there is one for this caller (unless it asked for a
    /// fresh answer), else the failure.
    pub(super) async fn failed(
        &self,
        miss: &Miss<'_>,
        err: UpstreamError,
        outcome: Outcome,
    ) -> Reply {
        if outcome.forward != Some(Forward::Request) {
            if let Some(stale) = self.stale(miss, None).await {
                return stale;
            }
        }
        tracing::info!(route = "image_get", error = %err, kind = err.kind(), "answered with an error");
        Reply {
            served: Served::Failed(err),
            outcome,
        }
    }

    /// Fetches by itself, streamed and uncached: for a request whose flight's answer was too
    /// big to share, or belonged to another credential.
    pub(super) async fn fetch_alone(&self, miss: &Miss<'_>, mut outcome: Outcome) -> Reply {
        let sent = self
            .upstream
            .send_fill(
                || {
                    miss.front
                        .fill_request(&self.upstream, &miss.id, miss.headers.clone())
                },
                miss.deadline,
            )
            .await;
        let served = match sent {
            Err(err) => Served::Failed(err),
            Ok(exchange) => {
                let (mut head, rest) = exchange.response.into_parts();
                strip_hop_by_hop(&mut head.headers);
                outcome.upstream_status = Some(head.status.as_u16());
                self.streamed(Oversized {
                    slot: exchange.slot,
                    head,
                    prefix: Bytes::new(),
                    rest,
                    deadline: miss.deadline,
                })
            }
        };
        Reply { served, outcome }
    }

    /// An answer streamed from the upstream as it arrives.
    pub(super) fn streamed(&self, big: Oversized) -> Served {
        let mut head = big.head;
        head.version = Version::default();
        let body = self.upstream.stream(
            RouteKind::ImageGet,
            big.prefix,
            big.rest,
            big.deadline,
            big.slot,
        );
        Served::Stream(Box::new((head, body)))
    }
}
