//! Which requests the proxy takes at all, decided before routing: a pure function of the
//! request head, so that what is refused and why is in one place.
//!
//! Allow-lists, not deny-lists: the methods the API has, an origin-form target, no transfer
//! coding but `chunked`, no protocol upgrade but the `h2c` one a client may offer (and that
//! the proxy, like any server, may ignore), at most `--max-headers` headers (hyper enforces
//! that on HTTP/1 itself, not on HTTP/2).

use http::header::{HeaderName, CONNECTION, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, Method, StatusCode, Uri};

use crate::metrics::Rejection;

/// Why a request was turned away before routing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// More headers than `--max-headers`.
    TooManyHeaders,
    /// A method the API does not have (`CONNECT`, `TRACE`, anything unknown).
    Method(Method),
    /// A target that is not a path (`OPTIONS *`, an authority).
    Target,
    /// A transfer coding other than `chunked`, which the proxy would otherwise drop.
    TransferCoding,
    /// An upgrade to another protocol (WebSocket ...): the API has none.
    Upgrade,
}

impl Refusal {
    /// How the metrics count it.
    pub fn rejection(&self) -> Rejection {
        match self {
            Refusal::TooManyHeaders => Rejection::Headers,
            Refusal::Target => Rejection::Target,
            Refusal::Method(_) | Refusal::TransferCoding | Refusal::Upgrade => {
                Rejection::NotImplemented
            }
        }
    }

    /// The HTTP status, the API error code and the message of the answer.
    pub fn answer(&self) -> (StatusCode, u32, String) {
        match self {
            Refusal::TooManyHeaders => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                3,
                "the request has more headers than the proxy allows".to_string(),
            ),
            Refusal::Method(method) => (
                StatusCode::NOT_IMPLEMENTED,
                12,
                format!("method {method} is not supported"),
            ),
            Refusal::Target => (
                StatusCode::BAD_REQUEST,
                3,
                "the request target must be a path".to_string(),
            ),
            Refusal::TransferCoding => (
                StatusCode::NOT_IMPLEMENTED,
                12,
                "no transfer coding but chunked is supported".to_string(),
            ),
            Refusal::Upgrade => (
                StatusCode::NOT_IMPLEMENTED,
                12,
                "protocol upgrades are not supported".to_string(),
            ),
        }
    }
}

/// The methods that are routed: those of the API, and `OPTIONS` for a path.
fn known_method(method: &Method) -> bool {
    *method == Method::GET
        || *method == Method::HEAD
        || *method == Method::POST
        || *method == Method::PUT
        || *method == Method::PATCH
        || *method == Method::DELETE
        || *method == Method::OPTIONS
}

/// Whether a request with this head is taken.
pub fn admit(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    max_headers: usize,
) -> Result<(), Refusal> {
    if headers.len() > max_headers {
        return Err(Refusal::TooManyHeaders);
    }
    if !known_method(method) {
        return Err(Refusal::Method(method.clone()));
    }
    if !uri.path().starts_with('/') {
        return Err(Refusal::Target);
    }
    // Nearly every request has neither header: one pass over the names (a comparison of
    // known names is an integer's) spares looking each one up.
    if !headers
        .keys()
        .any(|name| name == TRANSFER_ENCODING || name == CONNECTION)
    {
        return Ok(());
    }
    if tokens(headers, TRANSFER_ENCODING).any(|coding| !coding.eq_ignore_ascii_case(b"chunked")) {
        return Err(Refusal::TransferCoding);
    }
    // An upgrade is asked for only with `Connection: upgrade` (RFC 9110 7.8); a bare
    // `Upgrade` header is a hop-by-hop header like any other, dropped on the way.
    let asks_upgrade = tokens(headers, CONNECTION).any(|t| t.eq_ignore_ascii_case(b"upgrade"));
    if asks_upgrade && tokens(headers, UPGRADE).any(|p| !p.eq_ignore_ascii_case(b"h2c")) {
        return Err(Refusal::Upgrade);
    }
    Ok(())
}

/// The comma-separated elements of every `name` header, trimmed, empty ones left out.
fn tokens(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn head(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    fn check(
        method: Method,
        target: &str,
        pairs: &[(&'static str, &'static str)],
    ) -> Result<(), Refusal> {
        let uri: Uri = target.parse().unwrap();
        admit(&method, &uri, &head(pairs), 100)
    }

    #[test]
    fn the_apis_requests_are_taken() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
        ] {
            assert_eq!(check(method, "/baremetal/v1alpha/images", &[]), Ok(()));
        }
        assert_eq!(
            check(Method::POST, "/x", &[("transfer-encoding", "chunked")]),
            Ok(())
        );
        // An h2c upgrade offer is ignored, as a server may.
        assert_eq!(
            check(
                Method::GET,
                "/x",
                &[
                    ("connection", "Upgrade, HTTP2-Settings"),
                    ("upgrade", "h2c")
                ]
            ),
            Ok(())
        );
        // Without `Connection: upgrade` nothing is asked for: the header is dropped.
        assert_eq!(
            check(Method::GET, "/x", &[("upgrade", "websocket")]),
            Ok(())
        );
        // A proxy-style absolute target still names a path.
        assert_eq!(check(Method::GET, "http://host/x", &[]), Ok(()));
    }

    #[test]
    fn everything_else_is_refused_with_a_reason() {
        assert_eq!(
            check(Method::CONNECT, "/x", &[]),
            Err(Refusal::Method(Method::CONNECT))
        );
        assert_eq!(
            check(Method::TRACE, "/x", &[]),
            Err(Refusal::Method(Method::TRACE))
        );
        let custom = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(
            check(custom.clone(), "/x", &[]),
            Err(Refusal::Method(custom))
        );
        assert_eq!(check(Method::OPTIONS, "*", &[]), Err(Refusal::Target));
        assert_eq!(
            check(
                Method::POST,
                "/x",
                &[("transfer-encoding", "gzip, chunked")]
            ),
            Err(Refusal::TransferCoding)
        );
        assert_eq!(
            check(
                Method::GET,
                "/x",
                &[("connection", "upgrade"), ("upgrade", "websocket")]
            ),
            Err(Refusal::Upgrade)
        );
        let mut many = HeaderMap::new();
        for i in 0..101 {
            many.append(
                http::HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        assert_eq!(
            admit(&Method::GET, &"/x".parse().unwrap(), &many, 100),
            Err(Refusal::TooManyHeaders)
        );
    }
}
