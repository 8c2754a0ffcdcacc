//! The REST Image.Get: how a fill asks the upstream (`GET /baremetal/v1alpha/images/{id}`),
//! what its JSON answer means ([`Verdict`]), and how what the flow serves becomes an HTTP
//! response with `X-Cache`, `Cache-Status` and `Age`.

use std::sync::OnceLock;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, RETRY_AFTER};
use http::{response, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};

use crate::cache::Entry;
use crate::coalesce::Overloaded;
use crate::fleet::SharedAnswer;
use crate::flow::{FrontEnd, Served, Verdict};
use crate::http::body::ProxyBody;
use crate::http::errors::{api_error, retry_shortly};
use crate::http::headers::{fill_headers, replayable, CACHE_STATUS, X_CACHE};
use crate::image::{is_ready_json, json_state, Protocol, READY};
use crate::metrics::InvalidationReason;
use crate::outcome::Outcome;
use crate::route::IMAGES_PREFIX;
use crate::upstream::{RequestBody, Upstream, UpstreamError};

/// Header values for numbers below this are made once and shared.
const PRECOMPUTED_NUMBERS: u64 = 4096;

/// The REST protocol of Image.Get, as the flow needs to know it.
pub struct RestImages;

impl FrontEnd for RestImages {
    fn protocol(&self) -> Protocol {
        Protocol::Http
    }

    fn fill_headers(&self, headers: &HeaderMap) -> HeaderMap {
        fill_headers(headers)
    }

    fn fill_request(
        &self,
        upstream: &Upstream,
        id: &str,
        headers: HeaderMap,
    ) -> Result<Request<RequestBody>, UpstreamError> {
        let uri = upstream
            .uri_for(&format!("{IMAGES_PREFIX}{id}"))
            .map_err(|e| UpstreamError::Connect(format!("bad upstream URI: {e}")))?;
        let mut request = Request::new(Empty::new().map_err(|never| match never {}).boxed());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }

    fn judge(
        &self,
        id: &str,
        head: &response::Parts,
        body: &[u8],
        _trailers: Option<&HeaderMap>,
    ) -> Verdict {
        match head.status {
            StatusCode::OK => match json_state(body) {
                Some(state) if state.id.as_deref() == Some(id) => match state.status.as_deref() {
                    Some(READY) => Verdict::Ready,
                    other => Verdict::NotReady(InvalidationReason::for_status(other)),
                },
                // Not JSON, or not the image asked for: relayed, never stored, and no
                // reason to believe the cached image changed.
                _ => Verdict::Relayed { anyone: true },
            },
            StatusCode::NOT_FOUND => Verdict::Gone,
            StatusCode::UNAUTHORIZED => Verdict::Refused {
                credential_invalid: true,
            },
            StatusCode::FORBIDDEN => Verdict::Refused {
                credential_invalid: false,
            },
            StatusCode::TOO_MANY_REQUESTS => Verdict::Relayed { anyone: true },
            status if status.is_server_error() => Verdict::Failing,
            _ => Verdict::Relayed { anyone: false },
        }
    }

    fn is_ready(&self, id: &str, answer: &SharedAnswer) -> bool {
        answer.status == StatusCode::OK && is_ready_json(id, &answer.body)
    }
}

/// The HTTP response for what the flow served, with the cache's own headers set from the
/// outcome (the only place they are set). `head`: a HEAD request, answered without a body
/// but with the length a GET would have.
pub fn render(served: Served, outcome: &Outcome, head: bool) -> Response<ProxyBody> {
    let mut response = match served {
        // Its cache headers included: the hot path, built from the entry's ready headers.
        Served::Entry(entry) => return entry_response(&entry, outcome, head),
        Served::Answer { answer, own } => {
            let mut response = Response::new(ProxyBody::empty());
            *response.status_mut() = answer.status;
            // A waiter did not make this exchange: it gets no other request's IDs or cookies.
            *response.headers_mut() = if own {
                answer.headers.clone()
            } else {
                replayable(&answer.headers)
            };
            with_body(response, answer.body.clone(), head)
        }
        Served::Stream(stream) => {
            let (parts, body) = *stream;
            let body = if head {
                ProxyBody::empty()
            } else {
                ProxyBody::stream(body)
            };
            Response::from_parts(parts, body)
        }
        Served::Failed(err) => error_response(&err),
        Served::Overloaded(over) => overloaded_response(over),
    };
    let headers = response.headers_mut();
    headers.insert(X_CACHE.clone(), outcome.result.x_cache());
    headers.insert(CACHE_STATUS.clone(), outcome.cache_status());
    response
}

fn entry_response(entry: &Entry, outcome: &Outcome, head: bool) -> Response<ProxyBody> {
    let headers = entry.headers.answer(
        outcome.result.x_cache(),
        outcome.cache_status(),
        number_value(outcome.age.unwrap_or(0)),
    );
    let body = if head {
        ProxyBody::empty()
    } else {
        // hyper writes the Content-Length of a body of known length itself.
        ProxyBody::full(entry.body.clone())
    };
    let mut response = Response::new(body);
    *response.status_mut() = entry.status;
    *response.headers_mut() = headers;
    if head {
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, number_value(entry.body.len() as u64));
    }
    response
}

/// A header value for a number; the small ones are made once, so a hit does not format and
/// allocate its `Age` or (for bodies under 4 KiB) its `Content-Length`.
fn number_value(number: u64) -> HeaderValue {
    static SMALL: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let small = SMALL.get_or_init(|| (0..PRECOMPUTED_NUMBERS).map(HeaderValue::from).collect());
    usize::try_from(number)
        .ok()
        .and_then(|n| small.get(n))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(number))
}

/// Puts `body` in the response, or for HEAD no body but the `Content-Length` a GET would
/// have.
fn with_body(mut response: Response<ProxyBody>, body: Bytes, head: bool) -> Response<ProxyBody> {
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    if !head {
        *response.body_mut() = ProxyBody::full(body);
    }
    response
}

/// An upstream failure as the API would answer it: 502 (code 14), 504 (code 4), 503 with
/// `Retry-After` when the proxy is busy, 413/408/400 for a body the client failed to send.
pub fn error_response(err: &UpstreamError) -> Response<ProxyBody> {
    let (status, code) = err.status_and_code();
    let mut response = api_error(status, code, &err.to_string());
    if matches!(err, UpstreamError::Busy) {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn overloaded_response(over: Overloaded) -> Response<ProxyBody> {
    retry_shortly(match over {
        Overloaded::PerKey => "too many requests are waiting for this image; retry shortly",
        Overloaded::Total => "too many requests are waiting for the upstream; retry shortly",
    })
}
