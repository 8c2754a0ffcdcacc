//! The gRPC front-end: every request whose `content-type` is `application/grpc*` (the `yc`
//! CLI and every SDK). `ImageService.Get` with one message naming exactly a valid image ID is
//! handed to the same Image.Get flow as REST ([`images`]); `Update` and `Delete` pass through
//! and invalidate their image by the status they get; everything else passes through
//! untouched, streamed both ways, trailers and all ([`passthrough`]). Failures the proxy makes
//! itself are gRPC statuses, never an HTTP error a gRPC client cannot read ([`wire`]).

use std::sync::Arc;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::error::BoxError;
use crate::flow::{Flow, FrontEnd, ImageGet, Reply};
use crate::http::handling::{later, Handling};
use crate::http::headers::{ensure_request_id, request_id_for_debug};
use crate::http::limits::RequestLimits;
use crate::http::upload::{receive, Received, Upload};
use crate::http::ProxyBody;
use crate::image::Protocol;
use crate::metrics::{Rejection, RequestEvent};
use crate::route::{is_valid_image_id, RouteKind};
use crate::upstream::RequestBody;

mod images;
mod passthrough;
mod wire;

pub use images::GrpcImages;
use wire::{
    exact_image_ref, mutated_image, single_message, trailers_only, Code, GET, GRPC_ENCODING,
    MUTATIONS, SERVICE,
};

/// Whether a request is a gRPC call: gRPC says so by its content type.
pub fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// What a call is to the proxy, by its path and its message.
enum Call {
    /// `ImageService.Get` of one valid image, nothing else asked: the cacheable Get.
    Get(String),
    /// `ImageService.Update` or `Delete` of an image.
    Mutation(String),
    /// Anything else.
    Other,
}

/// The gRPC front-end's state.
pub struct Grpc {
    flow: Arc<Flow>,
    front: Arc<dyn FrontEnd>,
    limits: Arc<RequestLimits>,
}

impl Grpc {
    pub fn new(flow: Arc<Flow>, limits: Arc<RequestLimits>) -> Arc<Grpc> {
        Arc::new(Grpc {
            flow,
            front: Arc::new(GrpcImages),
            limits,
        })
    }

    /// Answers one call. Never fails: every problem becomes a gRPC status. Boxed: its
    /// message has to be read first, so it is never answered at once, and the future hyper
    /// moves around is then one pointer.
    pub fn handle(self: &Arc<Self>, request: Request<Incoming>) -> Handling {
        later(Arc::clone(self).handle_call(request))
    }

    async fn handle_call(self: Arc<Self>, mut request: Request<Incoming>) -> Response<ProxyBody> {
        let started = Instant::now();
        let request_id = request_id_for_debug(request.headers_mut());
        if let Some(refused) = self.refuse(&request) {
            return refused;
        }
        let (mut parts, body) = request.into_parts();
        let (call, body, watch): (Call, RequestBody, _) = if is_read_whole(parts.uri.path()) {
            // A unary call's message is small: read it whole (within the limits on uploads),
            // so the cacheable Get and the mutations can be told by what they ask for.
            match receive(body, self.limits.uploads()).await {
                Ok(Received::Whole(bytes)) => (
                    classify(parts.uri.path(), &bytes, &parts.headers),
                    Full::new(bytes).map_err(|never| match never {}).boxed(),
                    None,
                ),
                Ok(Received::Streaming(stream)) => {
                    let watch = stream.watch();
                    (
                        Call::Other,
                        stream.map_err(BoxError::from).boxed(),
                        Some(watch),
                    )
                }
                Err(failure) => return self.upload_refused(failure),
            }
        } else {
            // Any other call may stream both ways: its client may wait for an answer before
            // it ends its body, so nothing of it is held back.
            let stream = Upload::streamed(body, self.limits.uploads());
            let watch = stream.watch();
            (
                Call::Other,
                stream.map_err(BoxError::from).boxed(),
                Some(watch),
            )
        };
        let (kind, response, outcome) = match call {
            Call::Get(id) => {
                let get = ImageGet {
                    front: &self.front,
                    id: &id,
                    headers: &parts.headers,
                    started,
                    deadline: wire::timeout(&parts.headers).map(|t| started + t),
                };
                let Reply { served, outcome } = match self.flow.hit(&get) {
                    Some(reply) => reply,
                    // Boxed, so that a hit's future has no room for a miss's.
                    None => Box::pin(self.flow.get(get)).await,
                };
                let response = images::render(served, &outcome);
                (RouteKind::ImageGet, response, Some(outcome))
            }
            Call::Mutation(id) => {
                ensure_request_id(&mut parts.headers);
                let response = Box::pin(self.forward(parts, body, watch, Some(id))).await;
                (RouteKind::ImageMutation, response, None)
            }
            Call::Other => {
                ensure_request_id(&mut parts.headers);
                let response = Box::pin(self.forward(parts, body, watch, None)).await;
                (RouteKind::Passthrough, response, None)
            }
        };
        RequestEvent {
            protocol: Protocol::Grpc,
            route: kind,
            outcome: outcome.as_ref(),
            status: response.status().as_u16(),
            elapsed: started.elapsed(),
            request_id: request_id.as_ref(),
        }
        .emit(self.flow.metrics());
        response
    }

    /// A call the proxy does not take at all: too much metadata, or not a POST.
    fn refuse<B>(&self, request: &Request<B>) -> Option<Response<ProxyBody>> {
        if request.headers().len() > self.limits.max_headers() {
            self.flow.metrics().rejected(Rejection::Headers);
            return Some(trailers_only(
                Code::ResourceExhausted,
                "the call has more metadata than the proxy allows",
            ));
        }
        if request.method() != Method::POST {
            self.flow.metrics().rejected(Rejection::NotImplemented);
            return Some(trailers_only(Code::Unimplemented, "a gRPC call is a POST"));
        }
        None
    }
}

/// Whether the proxy reads a call's message before it decides what to do with the call:
/// only for the ImageService methods it caches or invalidates by, all of them unary.
fn is_read_whole(path: &str) -> bool {
    path.strip_prefix(SERVICE)
        .is_some_and(|method| method == GET || MUTATIONS.contains(&method))
}

/// What a call with this path and this whole body is.
fn classify(path: &str, body: &[u8], headers: &HeaderMap) -> Call {
    let Some(method) = path.strip_prefix(SERVICE) else {
        return Call::Other;
    };
    let Ok(message) = single_message(body, headers.get(GRPC_ENCODING)) else {
        return Call::Other;
    };
    if method == GET {
        return match exact_image_ref(&message) {
            Some(id) if is_valid_image_id(&id) => Call::Get(id),
            _ => Call::Other,
        };
    }
    if MUTATIONS.contains(&method) {
        // Invalidating too much is harmless and too little serves a stale image: any valid
        // ID the message names, whatever else it holds.
        if let Some(id) = mutated_image(&message).filter(|id| is_valid_image_id(id)) {
            return Call::Mutation(id);
        }
    }
    Call::Other
}
