//! The REST front-end: every HTTP request that is not gRPC. It admits the request (or
//! refuses it, [`crate::http::admission`]), routes it by its raw target ([`crate::route`]),
//! hands an Image.Get to the flow and renders what it serves ([`images`]), and passes
//! everything else through ([`passthrough`]). Each request ends in one
//! [`RequestEvent`](crate::metrics::RequestEvent).

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::flow::{Flow, FrontEnd, ImageGet, Reply};
use crate::http::admission::admit;
use crate::http::body::ProxyBody;
use crate::http::errors::api_error;
use crate::http::headers::{ensure_request_id, X_REQUEST_ID};
use crate::http::limits::RequestLimits;
use crate::image::Protocol;
use crate::metrics::RequestEvent;
use crate::route::{classify, Route};

mod images;
mod passthrough;

pub use images::RestImages;

/// The REST front-end's state.
pub struct Rest {
    flow: Arc<Flow>,
    front: Arc<dyn FrontEnd>,
    limits: Arc<RequestLimits>,
}

impl Rest {
    pub fn new(flow: Arc<Flow>, limits: Arc<RequestLimits>) -> Arc<Rest> {
        Arc::new(Rest {
            flow,
            front: Arc::new(RestImages),
            limits,
        })
    }

    /// Answers one client request. Never fails: every problem becomes an API-shaped error.
    pub async fn handle(self: Arc<Self>, mut request: Request<Incoming>) -> Response<ProxyBody> {
        let started = Instant::now();
        // Upstream-bound requests get an ID when they are forwarded; a hit only needs one
        // when its debug event is going to be written.
        let debug = tracing::enabled!(tracing::Level::DEBUG);
        if debug {
            ensure_request_id(request.headers_mut());
        }
        let request_id = debug
            .then(|| request.headers().get(&X_REQUEST_ID).cloned())
            .flatten();
        if let Err(refusal) = admit(
            request.method(),
            request.uri(),
            request.headers(),
            self.limits.max_headers(),
        ) {
            self.flow.metrics().rejected(refusal.rejection());
            let (status, code, message) = refusal.answer();
            return api_error(status, code, &message);
        }
        let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let route = classify(request.method(), target);
        let kind = route.kind();
        let (response, outcome) = match route {
            Route::ImageGet { id, head } => {
                let Reply { served, outcome } = self
                    .flow
                    .get(ImageGet {
                        front: &self.front,
                        id,
                        headers: request.headers(),
                        started,
                        deadline: None,
                    })
                    .await;
                (images::render(served, &outcome, head), Some(outcome))
            }
            Route::ImageMutation { id } => {
                ensure_request_id(request.headers_mut());
                (self.forward(request, Some(id)).await, None)
            }
            Route::Passthrough => {
                ensure_request_id(request.headers_mut());
                (self.forward(request, None).await, None)
            }
        };
        RequestEvent {
            protocol: Protocol::Http,
            route: kind,
            outcome: outcome.as_ref(),
            status: response.status().as_u16(),
            elapsed: started.elapsed(),
            request_id: request_id.as_ref(),
        }
        .emit(self.flow.metrics());
        response
    }
}
