//! The body of every response the proxy sends: bytes it already holds (a cached or shared
//! answer, an error it made), or an upstream body streamed through under the exchange's
//! deadline. An enum rather than a boxed trait object, so a cache hit allocates no box.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;

use crate::metrics::Metrics;
use crate::upstream::{BoxError, UpstreamError};

pub enum ProxyBody {
    /// A body held in memory (`None` once sent, or for an empty body).
    Full(Option<Bytes>),
    /// An upstream body, after `prefix` (what was already read from it).
    Upstream {
        prefix: Option<Bytes>,
        body: Incoming,
        deadline: Pin<Box<Sleep>>,
        timeout: std::time::Duration,
        metrics: Arc<Metrics>,
        /// The upstream concurrency slot, given back when the stream ends or is dropped.
        _slot: OwnedSemaphorePermit,
    },
}

impl ProxyBody {
    pub fn full(bytes: Bytes) -> ProxyBody {
        ProxyBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }

    /// Streams `body` after `prefix`, failing the stream if it is not done by `deadline`.
    pub fn upstream(
        prefix: Bytes,
        body: Incoming,
        deadline: Instant,
        timeout: std::time::Duration,
        metrics: Arc<Metrics>,
        slot: OwnedSemaphorePermit,
    ) -> ProxyBody {
        ProxyBody::Upstream {
            prefix: (!prefix.is_empty()).then_some(prefix),
            body,
            deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
            timeout,
            metrics,
            _slot: slot,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Upstream {
                prefix,
                body,
                deadline,
                timeout,
                metrics,
                ..
            } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                if deadline.as_mut().poll(cx).is_ready() {
                    let err = UpstreamError::Timeout(*timeout);
                    metrics.upstream_failed(err.kind());
                    return Poll::Ready(Some(Err(Box::new(err))));
                }
                Pin::new(body).poll_frame(cx).map_err(|e| {
                    let err = UpstreamError::Body(e.to_string());
                    metrics.upstream_failed(err.kind());
                    Box::new(err) as BoxError
                })
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(data) => data.is_none(),
            ProxyBody::Upstream { prefix, body, .. } => prefix.is_none() && body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ProxyBody::Upstream { prefix, body, .. } => {
                let extra = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let inner = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + extra);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
        }
    }
}
