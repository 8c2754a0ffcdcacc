//! The gRPC `ImageService.Get`: how a fill asks the upstream (always HTTP/2), what its answer
//! means (a [`Verdict`] from its status and fields 1 and 7 of the `Image`), and how what the
//! flow serves becomes a gRPC answer: the message bytes exactly as the upstream sent them
//! (unknown fields included), the status in trailers, `x-cache` / `cache-status` / `age` in
//! the response metadata.

use http::header::{AGE, CONTENT_TYPE};
use std::sync::OnceLock;

use http::{response, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use prost::Message;

use super::wire::{
    code_of_http, frame, single_message, status_name, status_of, status_trailers, trailers_only,
    Code, ImageHead, ImageRef, APPLICATION_GRPC, GET, GRPC_MESSAGE, GRPC_STATUS,
    GRPC_STATUS_DETAILS, READY, SERVICE,
};
use crate::cache::{Entry, EntryKind};
use crate::coalesce::Overloaded;
use crate::fleet::SharedAnswer;
use crate::flow::{Answer, FrontEnd, Served, Verdict};
use crate::http::headers::{ensure_request_id, replayable, CACHE_STATUS, X_CACHE};
use crate::http::upload::UploadFailure;
use crate::http::ProxyBody;
use crate::image::Protocol;
use crate::metrics::InvalidationReason;
use crate::outcome::Outcome;
use crate::upstream::{RequestBody, Upstream, UpstreamError};

/// Metadata a gRPC fill passes upstream: the credential, who is calling and the request IDs.
/// A fill's answer is shared and may be stored, so nothing else of one caller's goes along.
const FILL_METADATA: &[&str] = &[
    "authorization",
    "user-agent",
    "x-request-id",
    "x-client-request-id",
    "x-client-trace-id",
];

/// The gRPC protocol of Image.Get, as the flow needs to know it.
pub struct GrpcImages;

impl FrontEnd for GrpcImages {
    fn protocol(&self) -> Protocol {
        Protocol::Grpc
    }

    fn fill_headers(&self, headers: &HeaderMap) -> HeaderMap {
        let mut fill = HeaderMap::with_capacity(FILL_METADATA.len() + 4);
        for name in FILL_METADATA {
            for value in headers.get_all(*name) {
                fill.append(*name, value.clone());
            }
        }
        ensure_request_id(&mut fill);
        fill.insert(CONTENT_TYPE, APPLICATION_GRPC.clone());
        fill.insert("te", HeaderValue::from_static("trailers"));
        // What is stored must be replayable to anyone: no compression.
        fill.insert("grpc-accept-encoding", HeaderValue::from_static("identity"));
        fill
    }

    fn fill_request(
        &self,
        upstream: &Upstream,
        id: &str,
        headers: HeaderMap,
    ) -> Result<Request<RequestBody>, UpstreamError> {
        let uri = upstream
            .uri_for(&format!("{SERVICE}{GET}"))
            .map_err(|e| UpstreamError::Connect(format!("bad upstream URI: {e}")))?;
        let message = ImageRef {
            image_id: id.to_string(),
        }
        .encode_to_vec();
        let body = Full::new(frame(&message))
            .map_err(|never| match never {})
            .boxed();
        let mut request = Request::new(body);
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = headers;
        Ok(request)
    }

    fn judge(
        &self,
        id: &str,
        head: &response::Parts,
        body: &[u8],
        trailers: Option<&HeaderMap>,
    ) -> Verdict {
        let Some(status) = status_of(&head.headers, trailers) else {
            // No gRPC status at all: an HTTP-level answer (a gateway's error).
            return if head.status.is_server_error() {
                Verdict::Failing
            } else {
                Verdict::Relayed { anyone: false }
            };
        };
        match status {
            0 => match image_head(body) {
                Some(image) if image.id == id => match image.status {
                    READY => Verdict::Ready,
                    other => Verdict::NotReady(InvalidationReason::for_status(status_name(other))),
                },
                // Not an Image, or not the image asked for: relayed, never stored.
                _ => Verdict::Relayed { anyone: true },
            },
            5 => Verdict::Gone,
            16 => Verdict::Refused {
                credential_invalid: true,
            },
            7 => Verdict::Refused {
                credential_invalid: false,
            },
            8 => Verdict::Relayed { anyone: true },
            // UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE: the upstream failing.
            2 | 4 | 13 | 14 => Verdict::Failing,
            _ => Verdict::Relayed { anyone: false },
        }
    }

    fn is_ready(&self, id: &str, answer: &SharedAnswer) -> bool {
        answer.status == StatusCode::OK
            && image_head(&answer.body).is_some_and(|image| image.id == id && image.status == READY)
    }

    /// An error's status, message and details are kept (the API's words replayed, as REST
    /// replays its error body); an OK's status is not, since a hit says it itself.
    fn kept_headers(&self, head: &response::Parts, trailers: Option<&HeaderMap>) -> HeaderMap {
        let mut kept = replayable(&head.headers);
        if status_of(&head.headers, trailers).is_some_and(|code| code != 0) {
            for name in [GRPC_STATUS, GRPC_MESSAGE, GRPC_STATUS_DETAILS] {
                let value = trailers
                    .and_then(|t| t.get(name))
                    .or_else(|| head.headers.get(name));
                if let Some(value) = value {
                    kept.insert(name, value.clone());
                }
            }
        }
        kept
    }
}

/// The `Image` of an answer's body: exactly one uncompressed message (the fill asked for no
/// compression, and a stored message is replayed without a `grpc-encoding`).
fn image_head(body: &[u8]) -> Option<ImageHead> {
    let message = single_message(body, None).ok()?;
    ImageHead::decode(message).ok()
}

/// The gRPC answer for what the flow served, with the cache's own metadata set from the
/// outcome (the only place it is set).
pub fn render(served: Served, outcome: &Outcome) -> Response<ProxyBody> {
    let mut response = match served {
        // Its cache headers included: the hot path, built from the entry's ready headers.
        Served::Entry(entry) if entry.kind == EntryKind::Ready => {
            return ready_response(&entry, outcome)
        }
        Served::Entry(entry) => entry_response(&entry, outcome),
        Served::Answer { answer, own } => answer_response(&answer, own),
        Served::Stream(stream) => {
            let (parts, body) = *stream;
            if parts.status != StatusCode::OK {
                let code = code_of_http(parts.status);
                trailers_only(
                    code,
                    &format!("the upstream answered HTTP {}", parts.status),
                )
            } else {
                Response::from_parts(parts, ProxyBody::stream(body))
            }
        }
        Served::Failed(err) => failure(&err),
        Served::Overloaded(over) => trailers_only(
            Code::ResourceExhausted,
            match over {
                Overloaded::PerKey => "too many calls are waiting for this image; retry shortly",
                Overloaded::Total => "too many calls are waiting for the upstream; retry shortly",
            },
        ),
    };
    let headers = response.headers_mut();
    headers.insert(X_CACHE.clone(), outcome.result.x_cache());
    headers.insert(CACHE_STATUS.clone(), outcome.cache_status());
    response
}

fn entry_response(entry: &Entry, outcome: &Outcome) -> Response<ProxyBody> {
    let mut response = match entry.kind {
        // A NOT_FOUND kept for --negative-ttl: trailers-only, as the API said it, with its
        // status, message and details.
        EntryKind::NotFound if entry.headers.contains(GRPC_STATUS) => {
            let mut response = Response::new(ProxyBody::empty());
            let headers = response.headers_mut();
            for (name, value) in entry.headers.iter() {
                headers.append(name, value.clone());
            }
            headers.insert(CONTENT_TYPE, APPLICATION_GRPC.clone());
            response
        }
        EntryKind::NotFound => trailers_only(Code::NotFound, "the image was not found (cached)"),
        EntryKind::Ready => ready_response(entry, outcome),
    };
    let headers = response.headers_mut();
    headers.insert(AGE, HeaderValue::from(outcome.age.unwrap_or(0)));
    response
}

/// A READY entry: its message, and `grpc-status: 0` in trailers made once.
fn ready_response(entry: &Entry, outcome: &Outcome) -> Response<ProxyBody> {
    static OK: OnceLock<HeaderMap> = OnceLock::new();
    let ok = OK.get_or_init(|| status_trailers(Code::Ok, "")).clone();
    let mut response = Response::new(ProxyBody::grpc(entry.body.clone(), ok));
    *response.headers_mut() = entry.headers.answer(
        outcome.result.x_cache(),
        outcome.cache_status(),
        HeaderValue::from(outcome.age.unwrap_or(0)),
    );
    response
}

/// An upstream answer replayed: its message bytes as they came, its status (from its
/// trailers, or its headers if it had no body) in trailers. Only the call that made the
/// exchange gets the upstream's other metadata; the status is every caller's.
fn answer_response(answer: &Answer, own: bool) -> Response<ProxyBody> {
    if answer.status != StatusCode::OK {
        let code = code_of_http(answer.status);
        return trailers_only(
            code,
            &format!("the upstream answered HTTP {}", answer.status),
        );
    }
    let ok = status_of(&answer.headers, answer.trailers.as_ref()) == Some(0);
    if ok && answer.verdict != Verdict::Ready && image_head(&answer.body).is_none() {
        return trailers_only(Code::Internal, "the upstream's answer is not an Image");
    }
    let mut headers = if own {
        answer.headers.clone()
    } else {
        replayable(&answer.headers)
    };
    let mut trailers = answer.trailers.clone().unwrap_or_default();
    for name in [GRPC_STATUS, GRPC_MESSAGE, GRPC_STATUS_DETAILS] {
        // From the upstream's headers, not `headers`: a trailers-only answer's status is
        // there, and it is no header a waiter's replayable ones keep.
        if let Some(value) = answer.headers.get(name) {
            trailers.entry(name).or_insert_with(|| value.clone());
        }
        headers.remove(name);
    }
    if !trailers.contains_key(GRPC_STATUS) {
        trailers = status_trailers(Code::Unknown, "the upstream's answer carried no status");
    }
    headers.insert(CONTENT_TYPE, APPLICATION_GRPC.clone());
    let mut response = Response::new(ProxyBody::grpc(answer.body.clone(), trailers));
    *response.headers_mut() = headers;
    response
}

/// A failure as a gRPC status: `UNAVAILABLE` when the upstream cannot be reached or its
/// connection breaks, `DEADLINE_EXCEEDED` when it does not answer in time,
/// `RESOURCE_EXHAUSTED` past a limit of the proxy's.
pub fn failure(err: &UpstreamError) -> Response<ProxyBody> {
    let code = match err {
        UpstreamError::Connect(_) | UpstreamError::Tls(_) | UpstreamError::Body(_) => {
            Code::Unavailable
        }
        UpstreamError::Timeout(_) | UpstreamError::Upload(UploadFailure::Stalled) => {
            Code::DeadlineExceeded
        }
        UpstreamError::Busy | UpstreamError::Upload(UploadFailure::TooLarge) => {
            Code::ResourceExhausted
        }
        UpstreamError::Upload(UploadFailure::Broken) => Code::Internal,
    };
    trailers_only(code, &err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn every_caller_of_a_flight_gets_the_status_of_a_trailers_only_answer() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, APPLICATION_GRPC.clone());
        headers.insert(GRPC_STATUS, HeaderValue::from_static("7"));
        headers.insert(GRPC_MESSAGE, HeaderValue::from_static("denied"));
        headers.insert("x-request-id", HeaderValue::from_static("r-1"));
        let answer = Answer {
            status: StatusCode::OK,
            headers,
            body: Bytes::new(),
            trailers: None,
            verdict: Verdict::Refused {
                credential_invalid: false,
            },
            fetched_by: None,
            stored: false,
        };
        // The call that made the exchange, and one that joined it.
        for own in [true, false] {
            let response = answer_response(&answer, own);
            assert_eq!(response.headers().contains_key("x-request-id"), own);
            assert!(!response.headers().contains_key(GRPC_STATUS));
            let body = response.into_body().collect().await.unwrap();
            let trailers = body.trailers().expect("trailers");
            assert_eq!(trailers[GRPC_STATUS], "7", "own: {own}");
            assert_eq!(trailers[GRPC_MESSAGE], "denied", "own: {own}");
        }
    }
}
