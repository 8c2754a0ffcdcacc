//! Which headers travel where. Every list here is an allow-list or a standard's own list:
//! - hop-by-hop headers (RFC 9110 7.6.1) never cross the proxy in either direction;
//! - a fill (a fetch whose answer may be shared and stored) sends the upstream only
//!   [`FILL_HEADERS`], so that nothing shapes the answer for one caller;
//! - only [`REPLAYED_HEADERS`], those that describe the body, are replayed from the cache or
//!   handed to a request that shared another's fetch.

use http::header::{
    CACHE_CONTROL, CONNECTION, CONTENT_ENCODING, CONTENT_LANGUAGE, CONTENT_LENGTH, CONTENT_TYPE,
    ETAG, LAST_MODIFIED, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING,
    UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The cache's own answer headers.
pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The upstream headers replayed from the cache, or to a request that shared another's
/// fetch: those that describe the body itself (RFC 9110 representation metadata). An
/// allow-list, so whatever a gateway or tracer adds to one exchange (`set-cookie`,
/// `traceparent`, `server-timing`, an echoed request ID, `cache-control: private` ...) never
/// reaches another caller.
pub const REPLAYED_HEADERS: [HeaderName; 5] = [
    CONTENT_TYPE,
    CONTENT_ENCODING,
    CONTENT_LANGUAGE,
    ETAG,
    LAST_MODIFIED,
];

/// Request headers a fill passes upstream. A fill's answer is shared and may be stored, so
/// nothing that could shape it for one caller (`Range`, `If-None-Match`, `Accept-Encoding`,
/// `Expect`, a body's `Content-Length`) goes with it.
pub const FILL_HEADERS: &[&str] = &[
    "authorization",
    "accept",
    "accept-language",
    "user-agent",
    "x-request-id",
    "x-client-request-id",
    "x-client-trace-id",
];

/// Headers that describe one connection, not the message, plus those the `Connection`
/// header names. They are never forwarded in either direction.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        CONNECTION,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// The headers of an answer (from the upstream, or another instance through Redis) that may
/// be replayed to another caller: [`REPLAYED_HEADERS`], and nothing else.
pub fn replayable(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in REPLAYED_HEADERS {
        for value in headers.get_all(&name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// A copy of `headers` that owns its bytes. hyper parses header values as slices of the
/// connection's read buffer, so keeping them in a long-lived entry would pin that whole
/// buffer (kilobytes) for each few-byte header.
pub fn detached(headers: &HeaderMap) -> HeaderMap {
    let mut owned = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name =
            HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        let value = match value.as_bytes() {
            b"application/json" => HeaderValue::from_static("application/json"),
            b"application/json; charset=utf-8" => {
                HeaderValue::from_static("application/json; charset=utf-8")
            }
            bytes => HeaderValue::from_bytes(bytes).unwrap_or_else(|_| value.clone()),
        };
        owned.append(name, value);
    }
    owned
}

/// The headers a fill sends upstream: [`FILL_HEADERS`], plus a request ID.
pub fn fill_headers(headers: &HeaderMap) -> HeaderMap {
    let mut fill = HeaderMap::with_capacity(FILL_HEADERS.len() + 1);
    for name in FILL_HEADERS {
        for value in headers.get_all(*name) {
            fill.append(*name, value.clone());
        }
    }
    ensure_request_id(&mut fill);
    fill
}

/// Whether the client asked for a fresh answer (`Cache-Control: no-cache` or `max-age=0`).
pub fn wants_no_cache(headers: &HeaderMap) -> bool {
    // Rarely sent: one pass over the names (a comparison of known names is an integer's)
    // spares looking it up.
    if !headers.keys().any(|name| name == CACHE_CONTROL) {
        return false;
    }
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|d| d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("max-age=0"))
}

/// The announced body length, if any and well-formed.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The request's `x-request-id`, for logs ("" if it has none or it is not text).
pub fn request_id_of(headers: &HeaderMap) -> &str {
    headers.get(&X_REQUEST_ID).map_or("", header_text)
}

/// A header value as text, for logs ("" if it is not text).
pub fn header_text(value: &HeaderValue) -> &str {
    value.to_str().unwrap_or("")
}

/// Gives the request an `x-request-id` if it has none, so that the upstream's logs and ours
/// can be joined.
pub fn ensure_request_id(headers: &mut HeaderMap) {
    if !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID.clone(), new_request_id());
    }
}

/// The request's ID for its debug event, given one if it has none; `None` (and the request
/// left alone) unless debug events are written. Upstream-bound requests get an ID when they
/// are forwarded; a hit only needs one for its debug event.
pub fn request_id_for_debug(headers: &mut HeaderMap) -> Option<HeaderValue> {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return None;
    }
    ensure_request_id(headers);
    headers.get(&X_REQUEST_ID).cloned()
}

/// A random UUID (version 4).
fn new_request_id() -> HeaderValue {
    let bits: u128 = rand::random();
    let bits = (bits & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    let id = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_representation_headers_are_replayed() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("r"));
        h.insert("date", HeaderValue::from_static("d"));
        h.insert("x-anything-new", HeaderValue::from_static("n"));
        h.insert("connection", HeaderValue::from_static("close"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.append("etag", HeaderValue::from_static("\"a\""));
        let kept = replayable(&h);
        assert_eq!(kept.len(), 2);
        assert!(kept.contains_key("content-type") && kept.contains_key("etag"));
    }

    #[test]
    fn no_cache_is_recognised() {
        let mut h = HeaderMap::new();
        assert!(!wants_no_cache(&h));
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("max-stale, No-Cache"),
        );
        assert!(wants_no_cache(&h));
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("close, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        h.insert("x-request-id", HeaderValue::from_static("r"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["authorization", "x-request-id"]);
    }

    #[test]
    fn fills_send_only_their_allow_list_and_a_request_id() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        h.insert("range", HeaderValue::from_static("bytes=0-1"));
        let fill = fill_headers(&h);
        assert!(fill.contains_key("authorization") && fill.contains_key("x-request-id"));
        assert!(!fill.contains_key("range"));
    }
}
