//! The API's error: an HTTP status for REST, a gRPC code for gRPC, and a message, in the
//! `google.rpc.Status` shape either way.

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;

use super::fault::grpc_code;
use super::model::Any;

/// The `@type` of the one detail every error carries.
pub(crate) const REQUEST_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RequestInfo";

/// An API error: the HTTP status and the `google.rpc.Status` fields.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    /// The gRPC code (`errors-handling.md` pairs it with `status`).
    pub(crate) code: u32,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: u32, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn not_found_route() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, 5, "Not Found")
    }

    pub(crate) fn unauthenticated() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            16,
            "Token is invalid or has expired.",
        )
    }

    pub(crate) fn permission_denied() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, 7, "Permission denied")
    }

    pub(crate) fn image_not_found(id: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, 5, format!("Image {id} not found"))
    }

    pub(crate) fn invalid(field: &str, problem: impl std::fmt::Display) -> ApiError {
        let message = format!("Request validation error: {field}: {problem}");
        ApiError::new(StatusCode::BAD_REQUEST, 3, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, 13, message)
    }

    /// What a `Status` fault answers: that HTTP status (500 if it is none), the gRPC code the
    /// API pairs with it, its reason phrase.
    pub(crate) fn simulated(status: u16) -> ApiError {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = status.canonical_reason().unwrap_or("Simulated error");
        ApiError::new(status, grpc_code(status.as_u16()), message)
    }

    /// The REST error body, its `RequestInfo` carrying the response's `x-request-id`.
    pub(crate) fn json_body(&self, request_id: &str) -> Bytes {
        let body = ErrorBody {
            code: self.code,
            message: &self.message,
            details: [Any::new(REQUEST_INFO_TYPE, RequestInfo { request_id })],
        };
        // Serializing strings and numbers cannot fail.
        serde_json::to_vec(&body)
            .map(Bytes::from)
            .unwrap_or_default()
    }
}

/// `google.rpc.Status`, fields in the order the API sends them.
#[derive(Serialize)]
struct ErrorBody<'a> {
    code: u32,
    message: &'a str,
    details: [Any<RequestInfo<'a>>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestInfo<'a> {
    request_id: &'a str,
}
