//! Calls that are not the cacheable Get, passed through to the upstream over HTTP/2: the
//! messages, the status and its trailers (`grpc-status`, `grpc-message`,
//! `grpc-status-details-bin`) as they come. An `UNAUTHENTICATED` status ends every grant of
//! the caller's credential; an `Update` or `Delete` is read to its end, since its status says
//! what became of the image.

use std::sync::Arc;

use http::header::HOST;
use http::{request, HeaderValue, Response, StatusCode, Version};
use tokio::time::Instant;

use super::images::failure;
use super::wire::{code_of_http, status_of, status_trailers, trailers_only, Code};
use super::Grpc;
use crate::flow::MutationEffect;
use crate::http::headers::strip_hop_by_hop;
use crate::http::upload::{UploadFailure, UploadWatch};
use crate::http::ProxyBody;
use crate::metrics::Rejection;
use crate::route::RouteKind;
use crate::upstream::{LimitedBody, Purpose, RequestBody, UpstreamError};

/// Most bytes of a mutation's answer read before it is relayed: an `Operation` is small.
/// A bigger one is streamed, and what it did to the image counts as unknown.
const MUTATION_ANSWER: usize = 1024 * 1024;

impl Grpc {
    /// Passes a call through. `watch`: where a streamed body's failure is told; `mutated`:
    /// the image an `Update` or `Delete` names.
    pub(super) async fn forward(
        self: &Arc<Self>,
        mut parts: request::Parts,
        body: RequestBody,
        watch: Option<UploadWatch>,
        mutated: Option<String>,
    ) -> Response<ProxyBody> {
        let upstream = self.flow.upstream();
        let deadline = Instant::now() + upstream.timeout();
        let route = if mutated.is_some() {
            RouteKind::ImageMutation
        } else {
            RouteKind::Passthrough
        };
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let Ok(uri) = upstream.uri_for(target) else {
            return trailers_only(Code::Internal, "the call's path cannot be forwarded");
        };
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(HOST);
        // gRPC needs it upstream, though it is hop-by-hop.
        parts
            .headers
            .insert("te", HeaderValue::from_static("trailers"));
        let who = self.flow.fingerprint(&parts.headers);
        let reader = mutated
            .as_ref()
            .and_then(|id| self.flow.fleet_reader(id, &parts.headers));
        let mut request = http::Request::new(body);
        *request.method_mut() = parts.method;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = parts.headers;
        let exchange = match upstream
            .send(request, deadline, route, Purpose::Forward)
            .await
        {
            Ok(exchange) => exchange,
            Err(err) => {
                let err = err.or_upload(watch.as_ref());
                if let Some(id) = &mutated {
                    let effect = mutation_effect(Err(&err));
                    self.flow.mutation_answered(id, who, reader, effect).await;
                }
                return match err {
                    UpstreamError::Upload(failure) => self.upload_refused(failure),
                    err => failure(&err),
                };
            }
        };
        let (mut head, body) = exchange.response.into_parts();
        strip_hop_by_hop(&mut head.headers);
        head.version = Version::default();
        if head.status != StatusCode::OK {
            // Not a gRPC answer at all (a gateway's error): said as the status it means.
            if let Some(id) = &mutated {
                let effect = if head.status.is_server_error() {
                    MutationEffect::Unknown
                } else {
                    MutationEffect::NotApplied
                };
                self.flow.mutation_answered(id, who, reader, effect).await;
            }
            let code = code_of_http(head.status);
            return trailers_only(code, &format!("the upstream answered HTTP {}", head.status));
        }
        let refused = move |flow: &crate::flow::Flow, status: Option<u32>| {
            if let (Some(16), Some(who)) = (status, who) {
                flow.credential_refused(who);
            }
        };
        if let Some(id) = mutated {
            let read = upstream
                .read_limited(route, body, MUTATION_ANSWER, deadline)
                .await;
            let (effect, response) = match read {
                Ok(LimitedBody::Complete { data, trailers }) => {
                    let status = status_of(&head.headers, trailers.as_ref());
                    refused(&self.flow, status);
                    let trailers =
                        trailers.unwrap_or_else(|| status_trailers_from(&mut head.headers));
                    (
                        mutation_effect(Ok(status)),
                        Response::from_parts(head, ProxyBody::grpc(data, trailers)),
                    )
                }
                Ok(LimitedBody::TooLarge { prefix, rest }) => {
                    let body = upstream.stream(route, prefix, rest, deadline, exchange.slot);
                    (
                        MutationEffect::Unknown,
                        Response::from_parts(head, ProxyBody::stream(body)),
                    )
                }
                Err(err) => (mutation_effect(Err(&err)), failure(&err)),
            };
            self.flow.mutation_answered(&id, who, reader, effect).await;
            return response;
        }
        // A status already in the headers: an answer without a body.
        refused(&self.flow, status_of(&head.headers, None));
        let flow = self.flow.clone();
        let body = upstream
            .stream(route, bytes::Bytes::new(), body, deadline, exchange.slot)
            .on_trailers(move |trailers| refused(&flow, status_of(trailers, None)));
        Response::from_parts(head, ProxyBody::stream(body))
    }

    /// The answer to a call whose message the proxy would not pass on.
    pub(super) fn upload_refused(&self, failure: UploadFailure) -> Response<ProxyBody> {
        let metrics = self.flow.metrics();
        match failure {
            UploadFailure::TooLarge => {
                metrics.rejected(Rejection::RequestBody);
                trailers_only(
                    Code::ResourceExhausted,
                    &format!(
                        "the call's messages are larger than the proxy's limit of {} bytes",
                        self.limits.uploads().max
                    ),
                )
            }
            UploadFailure::Stalled => {
                metrics.rejected(Rejection::RequestBodyTimeout);
                trailers_only(Code::DeadlineExceeded, "the call's message stalled")
            }
            UploadFailure::Broken => trailers_only(Code::Internal, "the call's message broke off"),
        }
    }
}

/// The status of an answer that came without a body, moved from its headers to trailers
/// (a body, however short, now comes first).
fn status_trailers_from(headers: &mut http::HeaderMap) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    for name in [
        super::wire::GRPC_STATUS,
        super::wire::GRPC_MESSAGE,
        super::wire::GRPC_STATUS_DETAILS,
    ] {
        if let Some(value) = headers.remove(name) {
            trailers.insert(name, value);
        }
    }
    if trailers.is_empty() {
        return status_trailers(Code::Unknown, "the upstream's answer carried no status");
    }
    trailers
}

/// What the status of a mutation says happened: `OK` took it, `NOT_FOUND` follows the
/// Image.Get rule, the upstream failing (or no answer) may or may not have, and a refusal or a
/// call that never reached the API did not.
fn mutation_effect(answer: Result<Option<u32>, &UpstreamError>) -> MutationEffect {
    match answer {
        Ok(Some(0)) => MutationEffect::Applied,
        Ok(Some(5)) => MutationEffect::Gone,
        Ok(Some(2 | 4 | 13 | 14) | None) => MutationEffect::Unknown,
        Ok(Some(_)) => MutationEffect::NotApplied,
        Err(failure) => MutationEffect::without_answer(failure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_status_that_the_change_may_be_made_counts_as_one() {
        assert_eq!(mutation_effect(Ok(Some(0))), MutationEffect::Applied);
        assert_eq!(mutation_effect(Ok(Some(5))), MutationEffect::Gone);
        assert_eq!(mutation_effect(Ok(Some(14))), MutationEffect::Unknown);
        for refused in [3, 7, 8, 9, 16] {
            assert_eq!(
                mutation_effect(Ok(Some(refused))),
                MutationEffect::NotApplied
            );
        }
        assert_eq!(
            mutation_effect(Err(&UpstreamError::Busy)),
            MutationEffect::NotApplied
        );
    }
}
