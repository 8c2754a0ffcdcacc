//! Request bodies on their way upstream. A small body (the API's are a few hundred bytes of
//! JSON) is read whole before anything is sent, so that a client that stalls in the middle
//! of it holds no upstream slot at all; a big one is streamed, never buffered, under the
//! `--max-request-body` limit and with a deadline between two of its pieces
//! (`--request-body-timeout`), so that it cannot hold a slot for long either.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::body::size_after;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Bodies up to this size are read whole before the request goes upstream.
pub const BUFFERED_BODY: usize = 64 * 1024;

/// Why a client's body was not passed on whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadFailure {
    /// It went over `--max-request-body`.
    TooLarge,
    /// Nothing of it arrived for `--request-body-timeout`.
    Stalled,
    /// The client went away or sent a malformed body.
    Broken,
}

impl std::fmt::Display for UploadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UploadFailure::TooLarge => "the request body is over the proxy's limit",
            UploadFailure::Stalled => "the request body stalled",
            UploadFailure::Broken => "the request body broke off",
        })
    }
}

impl std::error::Error for UploadFailure {}

/// A client's body, as far as it has been read.
pub enum Received {
    /// All of it.
    Whole(Bytes),
    /// More than [`BUFFERED_BODY`]: what was read, and the rest to stream.
    Streaming(Upload),
}

/// Limits on one body.
#[derive(Clone, Copy, Debug)]
pub struct UploadLimits {
    /// Most bytes in all.
    pub max: u64,
    /// Longest pause between two pieces of it.
    pub idle: Duration,
}

/// Reads `body` whole if it is small, or its first [`BUFFERED_BODY`] bytes if not.
pub async fn receive(mut body: Incoming, limits: UploadLimits) -> Result<Received, UploadFailure> {
    let mut buffer = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(limits.idle, body.frame()).await {
            Err(_) => return Err(UploadFailure::Stalled),
            Ok(None) => return Ok(Received::Whole(buffer.freeze())),
            Ok(Some(Err(_))) => return Err(UploadFailure::Broken),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers on a request body are dropped: the API takes none.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        if buffer.len() as u64 > limits.max {
            return Err(UploadFailure::TooLarge);
        }
        if buffer.len() > BUFFERED_BODY {
            return Ok(Received::Streaming(Upload::new(
                Some(buffer.freeze()),
                body,
                limits,
            )));
        }
    }
}

/// What became of a streamed body, for the code that sent it: over HTTP/2 the upstream client
/// answers a failed body with the stream's reset, not with the body's own error.
#[derive(Clone, Debug, Default)]
pub struct UploadWatch(Arc<OnceLock<UploadFailure>>);

impl UploadWatch {
    /// Why the body was cut, if it was.
    pub fn failure(&self) -> Option<UploadFailure> {
        self.0.get().copied()
    }
}

impl Upload {
    /// All of `body` streamed as it arrives, nothing read first: a call that may be a
    /// stream both ways must reach the upstream before its client's body ends.
    pub fn streamed(body: Incoming, limits: UploadLimits) -> Upload {
        Upload::new(None, body, limits)
    }

    fn new(prefix: Option<Bytes>, rest: Incoming, limits: UploadLimits) -> Upload {
        Upload {
            prefix,
            seen: 0,
            rest,
            limits,
            deadline: Box::pin(tokio::time::sleep(limits.idle)),
            watch: UploadWatch::default(),
        }
    }

    /// Where this body's failure will be told.
    pub fn watch(&self) -> UploadWatch {
        self.watch.clone()
    }

    fn fail(&self, failure: UploadFailure) -> Poll<Option<Result<Frame<Bytes>, UploadFailure>>> {
        let _ = self.watch.0.set(failure);
        Poll::Ready(Some(Err(failure)))
    }
}

/// A big body streamed upstream: what was read first, then the rest as it arrives, failing
/// past the size limit or after a pause longer than the idle deadline. The failure travels
/// in the upstream client's error where it can (HTTP/1.1), and always in its [`UploadWatch`].
pub struct Upload {
    prefix: Option<Bytes>,
    /// Bytes passed on so far.
    seen: u64,
    rest: Incoming,
    limits: UploadLimits,
    deadline: Pin<Box<Sleep>>,
    watch: UploadWatch,
}

impl Body for Upload {
    type Data = Bytes;
    type Error = UploadFailure;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UploadFailure>>> {
        let this = self.get_mut();
        if let Some(prefix) = this.prefix.take() {
            this.seen = prefix.len() as u64;
            // The pause is counted from when the upstream starts taking the body.
            this.deadline
                .as_mut()
                .reset(Instant::now() + this.limits.idle);
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        match Pin::new(&mut this.rest).poll_frame(cx) {
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    return this.fail(UploadFailure::Stalled);
                }
                Poll::Pending
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(_))) => this.fail(UploadFailure::Broken),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limits.max {
                        return this.fail(UploadFailure::TooLarge);
                    }
                }
                this.deadline
                    .as_mut()
                    .reset(Instant::now() + this.limits.idle);
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        size_after(self.prefix.as_ref(), self.rest.size_hint())
    }
}
