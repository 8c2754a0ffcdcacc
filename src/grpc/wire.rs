//! gRPC's wire facts, as far as the proxy needs them: length-prefixed messages, the few
//! fields of the API's messages the cache decides on, statuses in trailers (or in the headers
//! of a trailers-only answer), `grpc-timeout`, and the answers the proxy makes itself.

use std::io::Read;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use prost::Message;

use crate::http::ProxyBody;

/// The service every method of which the proxy knows.
pub const SERVICE: &str = "/yandex.cloud.baremetal.v1alpha.ImageService/";
/// The cacheable method.
pub const GET: &str = "Get";
/// The methods that change an image.
pub const MUTATIONS: [&str; 2] = ["Update", "Delete"];

pub const GRPC_STATUS: &str = "grpc-status";
pub const GRPC_MESSAGE: &str = "grpc-message";
pub const GRPC_STATUS_DETAILS: &str = "grpc-status-details-bin";
pub const GRPC_ENCODING: &str = "grpc-encoding";
pub const GRPC_TIMEOUT: &str = "grpc-timeout";
pub static APPLICATION_GRPC: HeaderValue = HeaderValue::from_static("application/grpc");

/// Most bytes a request message of a cacheable Get or a mutation may have once
/// decompressed: they name an image and a few fields, never more than a few KiB.
const MAX_DECOMPRESSED: u64 = 64 * 1024;

/// The gRPC status codes the proxy answers with or reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Ok = 0,
    Unknown = 2,
    DeadlineExceeded = 4,
    NotFound = 5,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// `GetImageRequest`, `UpdateImageRequest` and `DeleteImageRequest` all name their image in
/// field 1; nothing else of them is decoded.
#[derive(Clone, PartialEq, Message)]
pub struct ImageRef {
    #[prost(string, tag = "1")]
    pub image_id: String,
}

/// The fields of an `Image` the cache decides on: its ID (1) and its status (7). prost
/// skips the rest, which stays in the stored bytes untouched.
#[derive(Clone, PartialEq, Message)]
pub struct ImageHead {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(int32, tag = "7")]
    pub status: i32,
}

/// `Image.Status.READY`.
pub const READY: i32 = 2;

/// The status name of an `Image.Status` number, as the REST API spells it.
pub fn status_name(status: i32) -> Option<&'static str> {
    match status {
        1 => Some("CREATING"),
        2 => Some("READY"),
        3 => Some("ERROR"),
        4 => Some("DELETING"),
        5 => Some("UPDATING"),
        _ => None,
    }
}

/// A message as it travels: flag byte 0 (not compressed), 4-byte big-endian length, bytes.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// Why a body is not the one message a unary call carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Unframed {
    /// Not one whole length-prefixed message.
    Malformed,
    /// Compressed with an encoding the proxy does not read.
    Encoded,
}

/// The message of a unary call's body (one length-prefixed message), decompressed if it is
/// gzip. `encoding` is the call's `grpc-encoding`.
pub fn single_message(body: &[u8], encoding: Option<&HeaderValue>) -> Result<Bytes, Unframed> {
    let (head, rest) = body.split_at_checked(5).ok_or(Unframed::Malformed)?;
    let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if rest.len() != length {
        return Err(Unframed::Malformed);
    }
    match (head[0], encoding.map(HeaderValue::as_bytes)) {
        (0, _) => Ok(Bytes::copy_from_slice(rest)),
        (1, Some(b"gzip")) => {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(rest)
                .take(MAX_DECOMPRESSED + 1)
                .read_to_end(&mut plain)
                .map_err(|_| Unframed::Malformed)?;
            if plain.len() as u64 > MAX_DECOMPRESSED {
                return Err(Unframed::Malformed);
            }
            Ok(Bytes::from(plain))
        }
        (1, _) => Err(Unframed::Encoded),
        _ => Err(Unframed::Malformed),
    }
}

/// The image a request message names, if it names exactly that and nothing else: a
/// message with other fields (or another encoding of the same field) may ask for something
/// else, so it is not the cacheable Get.
pub fn exact_image_ref(message: &[u8]) -> Option<String> {
    let decoded = ImageRef::decode(message).ok()?;
    (decoded.encode_to_vec() == message).then_some(decoded.image_id)
}

/// The image a mutation's message names, whatever else it holds.
pub fn mutated_image(message: &[u8]) -> Option<String> {
    ImageRef::decode(message).ok().map(|r| r.image_id)
}

/// A call's status: from its trailers, or from its headers when it came without a body.
pub fn status_of(headers: &HeaderMap, trailers: Option<&HeaderMap>) -> Option<u32> {
    trailers
        .and_then(|t| t.get(GRPC_STATUS))
        .or_else(|| headers.get(GRPC_STATUS))
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The caller's deadline (`grpc-timeout`: up to 8 digits and a unit), if it gave one.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// `grpc-message` is percent-encoded: every byte outside printable ASCII, and `%`.
pub fn percent_encoded(message: &str) -> HeaderValue {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("error"))
}

/// The trailers of a call that ended with `code` and `message`.
pub fn status_trailers(code: Code, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(2);
    trailers.insert(GRPC_STATUS, HeaderValue::from(code as u32));
    if !message.is_empty() {
        trailers.insert(GRPC_MESSAGE, percent_encoded(message));
    }
    trailers
}

/// An answer the proxy makes itself: "trailers-only", one HEADERS frame with the status
/// (HTTP 200, as gRPC wants whatever the status).
pub fn trailers_only(code: Code, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, APPLICATION_GRPC.clone());
    headers.extend(status_trailers(code, message));
    response
}

/// The gRPC status of an HTTP answer that carries none (a gateway's error page, say), as
/// the gRPC specification maps it.
pub fn code_of_http(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unary_body_is_one_whole_message() {
        let message = ImageRef {
            image_id: "ly5a".into(),
        }
        .encode_to_vec();
        let body = frame(&message);
        assert_eq!(single_message(&body, None).unwrap(), message);
        assert_eq!(single_message(&body[..4], None), Err(Unframed::Malformed));
        let mut two = body.to_vec();
        two.extend_from_slice(&body);
        assert_eq!(single_message(&two, None), Err(Unframed::Malformed));
        let mut compressed = body.to_vec();
        compressed[0] = 1;
        let snappy = HeaderValue::from_static("snappy");
        assert_eq!(
            single_message(&compressed, Some(&snappy)),
            Err(Unframed::Encoded)
        );
    }

    #[test]
    fn gzip_messages_are_read() {
        use std::io::Write;
        let message = ImageRef {
            image_id: "ly5a".into(),
        }
        .encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&message).unwrap();
        let packed = gz.finish().unwrap();
        let mut body = vec![1];
        body.extend_from_slice(&(packed.len() as u32).to_be_bytes());
        body.extend_from_slice(&packed);
        let gzip = HeaderValue::from_static("gzip");
        assert_eq!(single_message(&body, Some(&gzip)).unwrap(), message);
    }

    #[test]
    fn only_a_message_naming_just_the_image_is_the_cacheable_get() {
        let exact = ImageRef {
            image_id: "ly5a".into(),
        }
        .encode_to_vec();
        assert_eq!(exact_image_ref(&exact).as_deref(), Some("ly5a"));
        // The same, and an unknown field 2.
        let mut more = exact.clone();
        more.extend_from_slice(&[0x10, 0x01]);
        assert_eq!(exact_image_ref(&more), None);
        assert_eq!(mutated_image(&more).as_deref(), Some("ly5a"));
        assert_eq!(exact_image_ref(b"\xff\xff"), None);
    }

    #[test]
    fn timeouts_are_read_as_the_spec_writes_them() {
        let mut h = HeaderMap::new();
        for (text, expected) in [
            ("100m", Some(Duration::from_millis(100))),
            ("5S", Some(Duration::from_secs(5))),
            ("2M", Some(Duration::from_secs(120))),
            ("1H", Some(Duration::from_secs(3600))),
            ("7u", Some(Duration::from_micros(7))),
            ("123456789S", None),
            ("S", None),
            ("10x", None),
            ("-1S", None),
        ] {
            h.insert(GRPC_TIMEOUT, HeaderValue::from_static(text));
            assert_eq!(timeout(&h), expected, "{text}");
        }
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encoded("a b"), "a b");
        assert_eq!(percent_encoded("100%"), "100%25");
        assert_eq!(percent_encoded("é"), "%C3%A9");
    }
}
