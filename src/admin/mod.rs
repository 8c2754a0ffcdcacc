//! The admin listener: Prometheus metrics, liveness, readiness and cache purges.
//!
//! It is a separate listener so that it can be bound to another address than the proxy and
//! kept away from API clients.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};

use crate::flow::Flow;
use crate::http::{api_error, ProxyBody};
use crate::metrics::InvalidationReason;
use crate::route::is_valid_image_id;

/// What the admin endpoints act on.
pub struct Admin {
    flow: Arc<Flow>,
    ready: Arc<AtomicBool>,
}

impl Admin {
    pub fn new(flow: Arc<Flow>, ready: Arc<AtomicBool>) -> Arc<Admin> {
        Arc::new(Admin { flow, ready })
    }

    pub async fn handle<B>(self: Arc<Self>, request: Request<B>) -> Response<ProxyBody> {
        let path = request.uri().path();
        let method = request.method();
        match (method, path) {
            (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET | &Method::HEAD, "/readyz") => {
                if self.ready.load(Ordering::Relaxed) {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }
            (&Method::GET, "/metrics") => self.metrics().await,
            (&Method::DELETE, "/cache") => {
                let purged = self.flow.purge_all().await;
                tracing::info!(purged, "cache purged");
                json(serde_json::json!({ "purged": purged }))
            }
            (&Method::DELETE, _) if path.starts_with("/cache/images/") => {
                let id = &path["/cache/images/".len()..];
                if !is_valid_image_id(id) {
                    return api_error(StatusCode::BAD_REQUEST, 3, "not an image ID: expected [a-z][a-z0-9]*, at most 64 characters");
                }
                let purged = self.flow.invalidate(id, InvalidationReason::Purge).await;
                tracing::info!(purged, "image purged");
                json(serde_json::json!({ "purged": purged }))
            }
            (_, "/healthz" | "/readyz" | "/cache" | "/metrics") => method_not_allowed(),
            (_, _) if path.starts_with("/cache/images/") => method_not_allowed(),
            _ => api_error(StatusCode::NOT_FOUND, 5, "no such admin endpoint: try /metrics, /healthz, /readyz, DELETE /cache or DELETE /cache/images/{id}"),
        }
    }

    /// The Prometheus scrape, with the gauges settled first.
    async fn metrics(&self) -> Response<ProxyBody> {
        self.flow.refresh_gauges().await;
        match self.flow.metrics().encode() {
            Ok(text) => {
                let mut response = Response::new(ProxyBody::full(Bytes::from(text)));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode metrics");
                api_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    13,
                    "cannot encode metrics",
                )
            }
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(value: serde_json::Value) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(Bytes::from(value.to_string())));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn method_not_allowed() -> Response<ProxyBody> {
    api_error(
        StatusCode::METHOD_NOT_ALLOWED,
        12,
        "method not allowed on this admin endpoint",
    )
}
