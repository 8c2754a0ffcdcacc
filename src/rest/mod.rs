//! The REST front-end: every HTTP request that is not gRPC. It admits the request (or
//! refuses it, [`crate::http::admission`]), routes it by its raw target ([`crate::route`]),
//! hands an Image.Get to the flow and renders what it serves ([`images`]), and passes
//! everything else through ([`passthrough`]). Each request ends in one
//! [`RequestEvent`](crate::metrics::RequestEvent).

use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::flow::{Flow, FrontEnd, ImageGet, Reply};
use crate::http::admission::admit;
use crate::http::body::ProxyBody;
use crate::http::errors::api_error;
use crate::http::handling::{at_once, later, Handling};
use crate::http::headers::{ensure_request_id, request_id_for_debug};
use crate::http::limits::RequestLimits;
use crate::image::Protocol;
use crate::metrics::RequestEvent;
use crate::outcome::Outcome;
use crate::route::{classify, Route, RouteKind};

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
    /// A refusal, and a hit the cache's table of recent lookups answers, are answered at
    /// once; anything else is [`Rest::handle_further`], boxed.
    pub fn handle(self: &Arc<Self>, mut request: Request<Incoming>) -> Handling {
        let started = Instant::now();
        let request_id = request_id_for_debug(request.headers_mut());
        if let Err(refusal) = admit(
            request.method(),
            request.uri(),
            request.headers(),
            self.limits.max_headers(),
        ) {
            self.flow.metrics().rejected(refusal.rejection());
            let (status, code, message) = refusal.answer();
            return at_once(api_error(status, code, &message));
        }
        let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let route = classify(request.method(), target);
        if let Route::ImageGet { id, head } = route {
            let get = ImageGet {
                front: &self.front,
                id,
                headers: request.headers(),
                started,
                deadline: None,
            };
            if let Some(Reply { served, outcome }) = self.flow.hit(&get) {
                let response = images::render(served, &outcome, head);
                return at_once(self.finish(
                    route.kind(),
                    response,
                    Some(&outcome),
                    started,
                    request_id,
                ));
            }
        }
        later(Arc::clone(self).handle_further(request, started, request_id))
    }

    /// Answers what [`Rest::handle`] could not at once: an Image.Get the cache's table does
    /// not answer, and everything passed through.
    async fn handle_further(
        self: Arc<Self>,
        mut request: Request<Incoming>,
        started: Instant,
        request_id: Option<HeaderValue>,
    ) -> Response<ProxyBody> {
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
        self.finish(kind, response, outcome.as_ref(), started, request_id)
    }

    /// Ends a request: its one [`RequestEvent`].
    fn finish(
        &self,
        route: RouteKind,
        response: Response<ProxyBody>,
        outcome: Option<&Outcome>,
        started: Instant,
        request_id: Option<HeaderValue>,
    ) -> Response<ProxyBody> {
        RequestEvent {
            protocol: Protocol::Http,
            route,
            outcome,
            status: response.status().as_u16(),
            elapsed: started.elapsed(),
            request_id: request_id.as_ref(),
        }
        .emit(self.flow.metrics());
        response
    }
}
