//! The admin listener: Prometheus metrics, liveness, readiness and cache purges.
//!
//! It is a separate listener so that it can be bound to another address than the proxy and
//! kept away from API clients. Scrapes and probes are open to whoever reaches it; purges are
//! not ([`access`]).
//!
//! `/readyz` says whether this process takes requests (503 while it starts and drains); it
//! does not probe the upstream or Redis. A sidecar that turned unready whenever the API was
//! unreachable would take its worker out of service exactly when cached and stale answers
//! are what keeps it going, and every replica of a shared service would go unready at once.
//! The upstream's health is in the metrics and the alerts instead.

mod access;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};

use crate::config::{Config, Secret};
use crate::flow::Flow;
use crate::http::{api_error, ProxyBody};
use crate::metrics::{InvalidationReason, Rejection};
use crate::route::is_valid_image_id;
use access::{Denied, PurgeAccess};

/// What the admin endpoints act on.
pub struct Admin {
    flow: Arc<Flow>,
    ready: Arc<AtomicBool>,
    access: PurgeAccess,
}

impl Admin {
    pub fn new(flow: Arc<Flow>, ready: Arc<AtomicBool>, token: Option<&Secret>) -> Arc<Admin> {
        Arc::new(Admin {
            flow,
            ready,
            access: PurgeAccess::new(token),
        })
    }

    /// Takes the admin token of a reloaded configuration.
    pub fn set_token(&self, token: Option<&Secret>) {
        self.access.set_token(token);
    }

    /// Answers one request from `peer`.
    pub async fn handle<B>(
        self: Arc<Self>,
        request: Request<B>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let path = request.uri().path();
        let method = request.method();
        let purge = method == Method::DELETE && (path == "/cache" || path.starts_with("/cache/"));
        if purge {
            if let Err(denied) = self.access.check(peer, request.headers()) {
                return self.refused(denied, peer);
            }
        }
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

    /// A purge that was not allowed, counted and logged (without what it carried).
    fn refused(&self, denied: Denied, peer: SocketAddr) -> Response<ProxyBody> {
        let ip = peer.ip().to_canonical();
        match denied {
            Denied::NoToken => {
                self.flow.metrics().rejected(Rejection::AdminUnauthorized);
                tracing::warn!(%ip, "purge refused: no valid admin token");
                let mut response = api_error(
                    StatusCode::UNAUTHORIZED,
                    16,
                    "a purge needs the admin token: Authorization: Bearer <token>",
                );
                response.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"baremetal-image-cache admin\""),
                );
                response
            }
            Denied::NotLoopback => {
                self.flow.metrics().rejected(Rejection::AdminForbidden);
                tracing::warn!(%ip, "purge refused: not a loopback client and no admin token set");
                api_error(
                    StatusCode::FORBIDDEN,
                    7,
                    "purges are taken only from loopback clients unless an admin token is set \
                     (--admin-token-file)",
                )
            }
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

/// Warns when the admin listener can be reached beyond loopback without an admin token: the
/// scrape and the probes are open to that network, purges only to loopback clients.
pub fn warn_if_exposed(config: &Config) {
    if !config.admin_listen.ip().is_loopback() && config.admin_token.is_none() {
        tracing::warn!(
            admin = %config.admin_listen,
            "the admin listener is not on loopback and no admin token is set: /metrics, /healthz \
             and /readyz are open to its network, purges only to loopback clients; set \
             --admin-token-file to take purges from elsewhere"
        );
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

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::metrics::Metrics;

    fn admin(token: Option<&str>) -> Arc<Admin> {
        let config = Config::default();
        let metrics = Arc::new(Metrics::new(config.max_capacity).unwrap());
        let flow = Flow::new(&config, metrics).unwrap();
        let token = token.map(|t| Secret::new(t.to_string()));
        Admin::new(flow, Arc::new(AtomicBool::new(true)), token.as_ref())
    }

    async fn call(admin: &Arc<Admin>, method: Method, path: &str, peer: &str) -> (u16, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        let response = admin.clone().handle(request, peer.parse().unwrap()).await;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn rejected(admin: &Admin, reason: &str, times: u32) -> bool {
        let text = String::from_utf8(admin.flow.metrics().encode().unwrap()).unwrap();
        text.contains(&format!(
            "baremetal_image_cache_rejected_total{{reason=\"{reason}\"}} {times}\n"
        ))
    }

    #[tokio::test]
    async fn without_a_token_a_client_off_loopback_may_scrape_but_not_purge() {
        let admin = admin(None);
        for path in ["/cache", "/cache/images/ly5test0ready0000001"] {
            let (status, body) = call(&admin, Method::DELETE, path, "10.1.2.3:40000").await;
            assert_eq!(status, 403, "{path}");
            assert!(body.contains("\"code\":7"), "{body}");
        }
        assert!(rejected(&admin, "admin_forbidden", 2));
        for path in ["/metrics", "/healthz", "/readyz"] {
            let (status, _) = call(&admin, Method::GET, path, "10.1.2.3:40000").await;
            assert_eq!(status, 200, "{path}");
        }
        let (status, body) = call(&admin, Method::DELETE, "/cache", "127.0.0.1:40000").await;
        assert_eq!((status, body.as_str()), (200, "{\"purged\":0}"));
    }

    #[tokio::test]
    async fn with_a_token_a_client_off_loopback_may_purge_with_it() {
        let token = "an-admin-token-for-tests-0001";
        let admin = admin(Some(token));
        let from = "[fd00::7]:40000";
        let (status, _) = call(&admin, Method::DELETE, "/cache", from).await;
        assert_eq!(status, 401);
        assert!(rejected(&admin, "admin_unauthorized", 1));
        let request = Request::delete("/cache")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
        let response = admin.clone().handle(request, from.parse().unwrap()).await;
        assert_eq!(response.status(), 200);
    }
}
