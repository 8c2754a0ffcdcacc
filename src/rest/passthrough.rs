//! Everything that is not the cacheable Image.Get: passed through transparently, streamed
//! both ways. Two things are learnt on the way: a 401 ends every grant of the caller's
//! credential, and a mutation's answer decides what happens to its image.

use std::sync::Arc;

use http::header::HOST;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::images::error_response;
use super::Rest;
use crate::error::BoxError;
use crate::flow::MutationEffect;
use crate::http::body::ProxyBody;
use crate::http::errors::api_error;
use crate::http::headers::{content_length, request_id_of, strip_hop_by_hop};
use crate::http::upload::{receive, Received, UploadFailure};
use crate::metrics::Rejection;
use crate::route::RouteKind;
use crate::upstream::{Purpose, UpstreamError};

impl Rest {
    /// Passes a request through. `mutated`: the image a `PATCH`, `DELETE` or `POST` may
    /// change.
    pub(super) async fn forward(
        self: &Arc<Self>,
        request: Request<Incoming>,
        mutated: Option<String>,
    ) -> Response<ProxyBody> {
        let upstream = self.flow.upstream();
        let deadline = Instant::now() + upstream.timeout();
        let route = if mutated.is_some() {
            RouteKind::ImageMutation
        } else {
            RouteKind::Passthrough
        };
        let (mut parts, body) = request.into_parts();
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let Ok(uri) = upstream.uri_for(target) else {
            return api_error(
                StatusCode::BAD_REQUEST,
                3,
                "the request target cannot be forwarded",
            );
        };
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(HOST);
        let request_id = request_id_of(&parts.headers).to_string();
        if content_length(&parts.headers).is_some_and(|len| len > self.limits.uploads().max) {
            return self.upload_refused(UploadFailure::TooLarge);
        }
        let who = self.flow.fingerprint(&parts.headers);
        let mutation = mutated.map(|id| {
            let reader = self.flow.fleet_reader(&id, &parts.headers);
            (id, reader)
        });
        // A small body is read whole before anything goes upstream, so a client that
        // stalls holds no upstream slot; a big one streams under the same limits.
        let (body, watch) = match receive(body, self.limits.uploads()).await {
            Ok(Received::Whole(bytes)) => (
                Full::new(bytes).map_err(|never| match never {}).boxed(),
                None,
            ),
            Ok(Received::Streaming(stream)) => {
                let watch = stream.watch();
                (stream.map_err(BoxError::from).boxed(), Some(watch))
            }
            Err(failure) => return self.upload_refused(failure),
        };
        let mut upstream_request = Request::new(body);
        *upstream_request.method_mut() = parts.method;
        *upstream_request.uri_mut() = uri;
        *upstream_request.headers_mut() = parts.headers;
        let started = Instant::now();
        let result = upstream
            .send(upstream_request, deadline, route, Purpose::Forward)
            .await
            .map_err(|err| err.or_upload(watch.as_ref()));
        if let (Ok(exchange), Some(who)) = (&result, who) {
            if exchange.response.status() == StatusCode::UNAUTHORIZED {
                self.flow.credential_refused(who);
            }
        }
        if let Some((id, reader)) = mutation {
            let effect = mutation_effect(result.as_ref().map(|e| e.response.status()));
            self.flow.mutation_answered(&id, who, reader, effect).await;
        }
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let kind = route;
        let route = route.as_str();
        match result {
            Err(UpstreamError::Upload(failure)) => self.upload_refused(failure),
            Err(err) => {
                tracing::info!(route, request_id, error = %err, kind = err.kind(), elapsed_ms, "upstream request failed");
                error_response(&err)
            }
            Ok(exchange) => {
                let (mut head, body) = exchange.response.into_parts();
                tracing::info!(
                    route,
                    request_id,
                    status = head.status.as_u16(),
                    elapsed_ms,
                    "upstream request"
                );
                strip_hop_by_hop(&mut head.headers);
                head.version = Version::default();
                let body =
                    upstream.stream(kind, bytes::Bytes::new(), body, deadline, exchange.slot);
                Response::from_parts(head, ProxyBody::stream(body))
            }
        }
    }

    /// The answer to a request whose body the proxy would not pass on.
    fn upload_refused(&self, failure: UploadFailure) -> Response<ProxyBody> {
        match failure {
            UploadFailure::TooLarge => {
                self.flow.metrics().rejected(Rejection::RequestBody);
                api_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    8,
                    &format!(
                        "the request body is larger than the proxy's limit of {} bytes",
                        self.limits.uploads().max
                    ),
                )
            }
            UploadFailure::Stalled => {
                self.flow.metrics().rejected(Rejection::RequestBodyTimeout);
                api_error(
                    StatusCode::REQUEST_TIMEOUT,
                    4,
                    &format!(
                        "the request body paused for longer than {}",
                        humantime::format_duration(self.limits.uploads().idle)
                    ),
                )
            }
            UploadFailure::Broken => {
                api_error(StatusCode::BAD_REQUEST, 3, "the request body broke off")
            }
        }
    }
}

/// What the answer to a mutation says happened: a 2xx took it, a 404 follows the Image.Get
/// rule, a 5xx or no answer may or may not have, and a refusal or a request that never
/// reached the API did not.
fn mutation_effect(answer: Result<StatusCode, &UpstreamError>) -> MutationEffect {
    match answer {
        Ok(status) if status.is_success() => MutationEffect::Applied,
        Ok(StatusCode::NOT_FOUND) => MutationEffect::Gone,
        Ok(status) if status.is_server_error() => MutationEffect::Unknown,
        Ok(_) => MutationEffect::NotApplied,
        Err(failure) => MutationEffect::without_answer(failure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_an_answer_that_the_change_may_be_made_counts_as_one() {
        let ok = |code: u16| mutation_effect(Ok(StatusCode::from_u16(code).unwrap()));
        assert_eq!(ok(200), MutationEffect::Applied);
        assert_eq!(ok(404), MutationEffect::Gone);
        assert_eq!(ok(503), MutationEffect::Unknown);
        for refused in [400, 401, 403, 409, 412, 429, 301] {
            assert_eq!(ok(refused), MutationEffect::NotApplied, "{refused}");
        }
        let err = |e: UpstreamError| mutation_effect(Err(&e));
        assert_eq!(err(UpstreamError::Busy), MutationEffect::NotApplied);
        assert_eq!(
            err(UpstreamError::Connect("refused".into())),
            MutationEffect::NotApplied
        );
        assert_eq!(
            err(UpstreamError::Timeout(Duration::from_secs(1))),
            MutationEffect::Unknown
        );
    }
}
