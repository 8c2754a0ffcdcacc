//! The response body type: whole, padded to any size without holding it, dripped slowly,
//! or cut off halfway; optionally ending with trailers (gRPC's status).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{sleep, Sleep};

/// Chunk size for padded bodies: big enough to be fast, small enough to hold once.
const PAD_CHUNK: usize = 64 * 1024;

/// A response body that announces its full length (so hyper sends `Content-Length`; gRPC
/// answers do not) and then sends its segments, optionally paced or cut short.
pub(crate) struct SimBody {
    segments: VecDeque<Segment>,
    /// The length announced in `Content-Length`, if any.
    length: Option<u64>,
    /// Largest data frame to send at once.
    chunk: usize,
    /// Pause between data frames.
    pace: Option<Duration>,
    pause: Option<Pin<Box<Sleep>>>,
    ending: Ending,
    /// Sent after the data of a complete body (a cut body never sends them).
    trailers: Option<HeaderMap>,
}

enum Segment {
    Data(Bytes),
    /// `len` bytes sent as slices of `unit` (which is at most one chunk long).
    Repeat {
        unit: Bytes,
        len: usize,
    },
}

enum Ending {
    Complete,
    /// End with an error, which makes hyper drop the connection. `flushed` records the one
    /// `Pending` we return first, so hyper writes out what was sent before it sees the error.
    Cut {
        flushed: bool,
    },
}

impl SimBody {
    fn new(segments: Vec<Segment>, length: usize) -> SimBody {
        SimBody {
            segments: segments.into(),
            length: Some(length as u64),
            chunk: usize::MAX,
            pace: None,
            pause: None,
            ending: Ending::Complete,
            trailers: None,
        }
    }

    /// `data` in one frame; no frame at all when it is empty, so that hyper ends the stream
    /// with the head (over HTTP/2, a gRPC error's "trailers-only" answer is one HEADERS frame).
    pub(crate) fn whole(data: Bytes) -> SimBody {
        let length = data.len();
        let segments = if data.is_empty() {
            Vec::new()
        } else {
            vec![Segment::Data(data)]
        };
        SimBody::new(segments, length)
    }

    /// `prefix`, `pad` bytes of `x`, `suffix`, streamed in 64 KiB chunks; the filler is one
    /// chunk-sized buffer sliced again and again.
    pub(crate) fn padded(prefix: Bytes, pad: usize, suffix: Bytes) -> SimBody {
        let length = prefix.len() + pad + suffix.len();
        let unit = Bytes::from(vec![b'x'; pad.min(PAD_CHUNK)]);
        let segments = vec![
            Segment::Data(prefix),
            Segment::Repeat { unit, len: pad },
            Segment::Data(suffix),
        ];
        SimBody {
            chunk: PAD_CHUNK,
            ..SimBody::new(segments, length)
        }
    }

    /// `data` sent one byte per `interval`.
    pub(crate) fn dripped(data: Bytes, interval: Duration) -> SimBody {
        SimBody {
            chunk: 1,
            pace: Some(interval),
            ..SimBody::whole(data)
        }
    }

    /// Announces all of `data` but sends only its first half, then fails.
    pub(crate) fn cut_in_half(data: Bytes) -> SimBody {
        let length = data.len();
        let half = data.slice(..length / 2);
        SimBody {
            ending: Ending::Cut { flushed: false },
            ..SimBody::new(vec![Segment::Data(half)], length)
        }
    }

    /// The same body without a `Content-Length`, as gRPC servers send theirs.
    pub(crate) fn unannounced(self) -> SimBody {
        SimBody {
            length: None,
            ..self
        }
    }

    /// The same body, followed by `trailers` once all its data is sent.
    pub(crate) fn with_trailers(self, trailers: HeaderMap) -> SimBody {
        SimBody {
            trailers: Some(trailers),
            ..self
        }
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            let chunk = match self.segments.front_mut()? {
                Segment::Data(data) => data.split_to(data.len().min(self.chunk)),
                Segment::Repeat { unit, len } => {
                    let n = (*len).min(unit.len()).min(self.chunk);
                    *len -= n;
                    unit.slice(..n)
                }
            };
            if segment_is_done(self.segments.front()) {
                self.segments.pop_front();
            }
            if !chunk.is_empty() {
                return Some(chunk);
            }
        }
    }
}

fn segment_is_done(segment: Option<&Segment>) -> bool {
    match segment {
        Some(Segment::Data(data)) => data.is_empty(),
        Some(Segment::Repeat { len, .. }) => *len == 0,
        None => false,
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if let Some(pause) = this.pause.as_mut() {
            ready!(pause.as_mut().poll(cx));
            this.pause = None;
        }
        if let Some(chunk) = this.next_chunk() {
            if let (Some(interval), false) = (this.pace, this.segments.is_empty()) {
                this.pause = Some(Box::pin(sleep(interval)));
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match &mut this.ending {
            Ending::Complete => Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t)))),
            Ending::Cut { flushed } if !*flushed => {
                *flushed = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Ending::Cut { .. } => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "simulated reset mid-body",
            )))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.segments.is_empty()
            && matches!(self.ending, Ending::Complete)
            && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.length
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn frames(mut body: SimBody) -> (Vec<usize>, Option<io::Error>) {
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => sizes.push(frame.into_data().map_or(0, |d| d.len())),
                Err(e) => return (sizes, Some(e)),
            }
        }
        (sizes, None)
    }

    #[tokio::test]
    async fn padded_bodies_stream_in_chunks() {
        let body = SimBody::padded(
            Bytes::from_static(b"{\""),
            150_000,
            Bytes::from_static(b"\"}"),
        );
        assert_eq!(body.size_hint().exact(), Some(150_004));
        let (sizes, error) = frames(body).await;
        assert_eq!(sizes, [2, PAD_CHUNK, PAD_CHUNK, 150_000 - 2 * PAD_CHUNK, 2]);
        assert!(error.is_none());
    }

    #[tokio::test]
    async fn cut_bodies_announce_everything_and_send_half() {
        let body = SimBody::cut_in_half(Bytes::from_static(b"0123456789"));
        assert_eq!(body.size_hint().exact(), Some(10));
        let (sizes, error) = frames(body).await;
        assert_eq!(sizes, [5]);
        assert!(error.is_some());
    }

    #[test]
    fn empty_bodies_end_at_once() {
        assert!(SimBody::whole(Bytes::new()).is_end_stream());
        assert!(!SimBody::whole(Bytes::from_static(b"a")).is_end_stream());
    }

    #[tokio::test]
    async fn trailers_follow_the_data() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let body = SimBody::whole(Bytes::from_static(b"ab")).with_trailers(trailers.clone());
        assert!(!body.is_end_stream());
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), "ab");
    }

    #[tokio::test(start_paused = true)]
    async fn dripped_bodies_send_one_byte_per_interval() {
        let start = tokio::time::Instant::now();
        let (sizes, _) = frames(SimBody::dripped(
            Bytes::from_static(b"abcd"),
            Duration::from_secs(1),
        ))
        .await;
        assert_eq!(sizes, [1, 1, 1, 1]);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }
}
