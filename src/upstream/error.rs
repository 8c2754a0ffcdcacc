//! What can go wrong talking to the upstream, as kinds the metrics count and the
//! front-ends answer with their own protocol's error.

use std::fmt;
use std::time::Duration;

use http::StatusCode;

use crate::error::{cause_of, describe, is_caused_by};
use crate::http::upload::{UploadFailure, UploadWatch};

/// What went wrong talking to the upstream. Messages never carry request headers.
#[derive(Debug, Clone)]
pub enum UpstreamError {
    /// No connection could be made (refused, unreachable, DNS, connect timeout).
    Connect(String),
    /// The TLS handshake failed.
    Tls(String),
    /// The exchange did not finish before the deadline.
    Timeout(Duration),
    /// The connection broke while the answer was being read.
    Body(String),
    /// `--max-upstream-requests` exchanges are already under way: not sent at all.
    Busy,
    /// The client's request body failed while it was being sent (over the limit, stalled,
    /// broken): the client's fault, not the upstream's.
    Upload(UploadFailure),
}

impl UpstreamError {
    /// The metric label of this kind of failure.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Tls(_) => "tls",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Body(_) => "body",
            UpstreamError::Busy => "busy",
            UpstreamError::Upload(_) => "request_body",
        }
    }

    /// The HTTP status and gRPC code the proxy answers with.
    pub fn status_and_code(&self) -> (StatusCode, u32) {
        match self {
            UpstreamError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, 4),
            UpstreamError::Busy => (StatusCode::SERVICE_UNAVAILABLE, 14),
            UpstreamError::Upload(UploadFailure::TooLarge) => (StatusCode::PAYLOAD_TOO_LARGE, 8),
            UpstreamError::Upload(UploadFailure::Stalled) => (StatusCode::REQUEST_TIMEOUT, 4),
            UpstreamError::Upload(UploadFailure::Broken) => (StatusCode::BAD_REQUEST, 3),
            _ => (StatusCode::BAD_GATEWAY, 14),
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Connect(why) => write!(f, "upstream could not be reached: {why}"),
            UpstreamError::Tls(why) => write!(f, "upstream TLS handshake failed: {why}"),
            UpstreamError::Timeout(after) => write!(
                f,
                "upstream did not answer within {}",
                humantime::format_duration(*after)
            ),
            UpstreamError::Body(why) => write!(f, "upstream answer broke off: {why}"),
            UpstreamError::Busy => {
                f.write_str("too many requests are already waiting for the upstream; retry shortly")
            }
            UpstreamError::Upload(failure) => write!(f, "{failure}"),
        }
    }
}

impl std::error::Error for UpstreamError {}

impl UpstreamError {
    /// This error, or the failure of the request body that caused it: over HTTP/2 a body
    /// that fails resets the stream, and the client's error no longer says why.
    pub fn or_upload(self, watch: Option<&UploadWatch>) -> UpstreamError {
        match watch.and_then(UploadWatch::failure) {
            Some(failure) => UpstreamError::Upload(failure),
            None => self,
        }
    }
}

pub(super) fn classify_client_error(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    if let Some(failure) = cause_of::<UploadFailure>(e) {
        return UpstreamError::Upload(*failure);
    }
    if is_caused_by::<rustls::Error>(e) {
        return UpstreamError::Tls(describe(e));
    }
    if e.is_connect() {
        return UpstreamError::Connect(describe(e));
    }
    // The connection was made but broke before a complete response head arrived.
    UpstreamError::Body(describe(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_api_shape_codes() {
        assert_eq!(
            UpstreamError::Timeout(Duration::from_secs(1)).status_and_code(),
            (StatusCode::GATEWAY_TIMEOUT, 4)
        );
        assert_eq!(
            UpstreamError::Connect("refused".into()).status_and_code(),
            (StatusCode::BAD_GATEWAY, 14)
        );
    }
}
