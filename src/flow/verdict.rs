//! The vocabulary between the front-ends and the flow. A front-end judges each upstream
//! answer ([`Verdict`]); the flow acts on the verdict and hands back what to serve
//! ([`Served`]), which the front-end renders in its protocol. The flow itself never parses
//! JSON or protobuf.

use std::sync::Arc;

use bytes::Bytes;
use http::{response, HeaderMap, StatusCode};

use crate::auth::Fingerprint;
use crate::cache::Entry;
use crate::coalesce::Overloaded;
use crate::metrics::InvalidationReason;
use crate::upstream::{UpstreamBody, UpstreamError};

/// What an upstream answer to an Image.Get means, as the front-end of its protocol judged
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The image asked for, READY: stored, and shared with the fleet.
    Ready,
    /// The image asked for, in another status: not stored, and a cached copy the caller
    /// could read is dropped, here and in the fleet.
    NotReady(InvalidationReason),
    /// Not found: a cached copy the caller could read is dropped; kept for
    /// `--negative-ttl`, for the caller alone.
    Gone,
    /// The API refused the caller: its grant of the image ends. `credential_invalid`: the
    /// credential itself is unknown or expired (401), so every grant it holds ends.
    Refused { credential_invalid: bool },
    /// The upstream is failing (a 5xx): a stale copy may be served instead.
    Failing,
    /// Relayed as it is, changing nothing (a 429, a body that is not an image of this ID, a
    /// 400 ...). `anyone`: whether requests of other credentials in the same flight may be
    /// given it (a 429 or an unreadable 200 may; a 400 is the caller's own).
    Relayed { anyone: bool },
}

impl Verdict {
    /// Whether requests of other credentials that joined the flight may be given the
    /// answer (in shared mode; per-credential flights hold one credential): the image's
    /// state and outages are everyone's, refusals and not-founds the caller's alone.
    pub fn for_anyone(self) -> bool {
        match self {
            Verdict::Ready | Verdict::NotReady(_) | Verdict::Failing => true,
            Verdict::Gone | Verdict::Refused { .. } => false,
            Verdict::Relayed { anyone } => anyone,
        }
    }
}

/// The upstream's answer to a fetch, as every member of its flight sees it.
pub struct Answer {
    pub status: StatusCode,
    /// All of the upstream's headers but hop-by-hop ones; only the request that made the
    /// exchange is given them all, the others only the replayable ones.
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The answer's trailers, if it had any (a gRPC answer's status is in them).
    pub trailers: Option<HeaderMap>,
    pub verdict: Verdict,
    /// Who the exchange was made for.
    pub fetched_by: Option<Fingerprint>,
    /// Whether it was stored.
    pub stored: bool,
}

/// How a flight's fetch ended, as every member of the flight sees it.
pub enum Fetched {
    /// The cache holds a fresh answer now (filled just before the leader would have
    /// fetched, or from the fleet). It carries no entry: each member looks the cache up for
    /// its own credential, so an entry only some may read is never handed to the others.
    Cached,
    /// The upstream answered.
    Answered(Arc<Answer>),
    /// No answer.
    Failed(UpstreamError),
    /// The answer is too big to hold: the leader streams it, the others fetch on their own.
    TooLarge,
}

/// What the flow hands a front-end to answer an Image.Get with.
pub enum Served {
    /// A cached entry: fresh (a hit), or stale because the upstream failed.
    Entry(Arc<Entry>),
    /// The upstream's answer. `own`: this request made the exchange, so it is given every
    /// header, not only the replayable ones.
    Answer { answer: Arc<Answer>, own: bool },
    /// An answer streamed from the upstream, not held (too big, or this request's alone).
    /// Boxed: it is rare, and the hit path moves this enum around.
    Stream(Box<(response::Parts, UpstreamBody)>),
    /// No answer: the front-end says so in its protocol.
    Failed(UpstreamError),
    /// Too many requests are waiting already.
    Overloaded(Overloaded),
}
