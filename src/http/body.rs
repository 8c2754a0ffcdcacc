//! The body of every response the proxy sends: bytes it already holds (a cached or shared
//! answer, an error it made), or a body streamed from elsewhere (the upstream). An enum, so
//! that a cache hit allocates nothing; only a streamed answer boxes its body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;

use crate::error::BoxError;

pub enum ProxyBody {
    /// A body held in memory (`None` once sent, or for an empty body).
    Full(Option<Bytes>),
    /// A gRPC answer held in memory: its message frames, then its trailers (each `None`
    /// once sent).
    Grpc {
        message: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    /// A body streamed through.
    Stream(BoxBody<Bytes, BoxError>),
}

impl ProxyBody {
    pub fn full(bytes: Bytes) -> ProxyBody {
        ProxyBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }

    /// A gRPC answer: `message` (already framed; may be empty), then `trailers`.
    pub fn grpc(message: Bytes, trailers: HeaderMap) -> ProxyBody {
        ProxyBody::Grpc {
            message: (!message.is_empty()).then_some(message),
            trailers: Some(trailers),
        }
    }

    /// Streams `body` through.
    pub fn stream<B>(body: B) -> ProxyBody
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        ProxyBody::Stream(body.map_err(Into::into).boxed())
    }
}

/// The size of a body that starts with `prefix` (already read) and goes on with `rest`.
pub fn size_after(prefix: Option<&Bytes>, rest: SizeHint) -> SizeHint {
    let extra = prefix.map_or(0, |p| p.len() as u64);
    let mut hint = SizeHint::new();
    hint.set_lower(rest.lower() + extra);
    if let Some(upper) = rest.upper() {
        hint.set_upper(upper + extra);
    }
    hint
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
            ProxyBody::Grpc { message, trailers } => Poll::Ready(
                message
                    .take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            ProxyBody::Stream(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(data) => data.is_none(),
            ProxyBody::Grpc { message, trailers } => message.is_none() && trailers.is_none(),
            ProxyBody::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(data) | ProxyBody::Grpc { message: data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ProxyBody::Stream(body) => body.size_hint(),
        }
    }
}
