//! An upstream body streamed to a client: what was already read of it, then the rest, under
//! the exchange's deadline. A failure part-way is counted like any other upstream failure,
//! and the exchange's concurrency slot is given back when the stream ends or is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use super::{UpstreamError, GRPC_STATUS};
use crate::error::BoxError;
use crate::http::body::size_after;
use crate::metrics::Metrics;
use crate::route::RouteKind;

/// What is told an answer's trailers when they pass.
type TrailersWatch = Box<dyn FnOnce(&HeaderMap) + Send + Sync>;

pub struct UpstreamBody {
    route: RouteKind,
    /// Told the trailers when they pass (a gRPC status is in them).
    on_trailers: Option<TrailersWatch>,
    prefix: Option<Bytes>,
    body: Incoming,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
    metrics: Arc<Metrics>,
    _slot: OwnedSemaphorePermit,
}

impl UpstreamBody {
    pub(super) fn new(
        route: RouteKind,
        prefix: Bytes,
        body: Incoming,
        deadline: Instant,
        timeout: Duration,
        metrics: Arc<Metrics>,
        slot: OwnedSemaphorePermit,
    ) -> UpstreamBody {
        UpstreamBody {
            route,
            on_trailers: None,
            prefix: (!prefix.is_empty()).then_some(prefix),
            body,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            timeout,
            metrics,
            _slot: slot,
        }
    }
}

impl UpstreamBody {
    /// Calls `watch` with the trailers when they pass (if the client reads that far).
    pub fn on_trailers(mut self, watch: impl FnOnce(&HeaderMap) + Send + Sync + 'static) -> Self {
        self.on_trailers = Some(Box::new(watch));
        self
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            let err = UpstreamError::Timeout(this.timeout);
            this.metrics.upstream_failed(err.kind());
            return Poll::Ready(Some(Err(Box::new(err))));
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(trailers) = frame.trailers_ref() {
                if let Some(status) = trailers.get(GRPC_STATUS) {
                    this.metrics.upstream_grpc_status(this.route, status);
                }
                if let Some(watch) = this.on_trailers.take() {
                    watch(trailers);
                }
            }
        }
        polled.map_err(|e| {
            let err = UpstreamError::Body(e.to_string());
            this.metrics.upstream_failed(err.kind());
            Box::new(err) as BoxError
        })
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        size_after(self.prefix.as_ref(), self.body.size_hint())
    }
}
