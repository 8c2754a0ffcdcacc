//! Errors the proxy makes itself, in the API's own shape:
//! `{"code": N, "message": "...", "details": []}` with `application/json`, where `code` is
//! the gRPC status code the API would use.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use super::body::ProxyBody;

/// The API's error body, its fields in the API's order.
#[derive(serde::Serialize)]
struct ApiErrorBody<'a> {
    code: u32,
    message: &'a str,
    details: [(); 0],
}

/// An error made by the proxy itself, in the API's own shape.
pub fn api_error(status: StatusCode, code: u32, message: &str) -> Response<ProxyBody> {
    let body = serde_json::to_vec(&ApiErrorBody {
        code,
        message,
        details: [],
    })
    .unwrap_or_default();
    let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A 503 (code 14, UNAVAILABLE) that asks the client to come back in a second.
pub fn retry_shortly(message: &str) -> Response<ProxyBody> {
    let mut response = api_error(StatusCode::SERVICE_UNAVAILABLE, 14, message);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_the_apis_shape_in_its_order() {
        let body = serde_json::to_string(&ApiErrorBody {
            code: 14,
            message: "a \"quoted\" message",
            details: [],
        })
        .unwrap();
        assert_eq!(
            body,
            r#"{"code":14,"message":"a \"quoted\" message","details":[]}"#
        );
    }
}
