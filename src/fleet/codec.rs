//! The stored format of a shared value: versioned (`BIC1`), so that anything else under our
//! key, from another program or a future format, is garbage and not a wrong answer.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::SharedAnswer;

/// Most headers a shared value may carry.
const MAX_SHARED_HEADERS: usize = 64;
/// Start of a stored value: a format tag, so that anything else under our key is garbage.
pub(super) const VALUE_MAGIC: &[u8; 4] = b"BIC1";

/// `BIC1`, produced-at (Unix ms, u64), status (u16), header count (u16), each header as
/// name length (u16), name, value length (u16), value; then the body.
pub(super) fn encode(produced_ms: u64, answer: &SharedAnswer) -> Vec<u8> {
    let mut out = Vec::with_capacity(answer.body.len() + 64);
    out.extend_from_slice(VALUE_MAGIC);
    out.extend_from_slice(&produced_ms.to_be_bytes());
    out.extend_from_slice(&answer.status.as_u16().to_be_bytes());
    let headers: Vec<_> = answer
        .headers
        .iter()
        .filter(|(name, value)| name.as_str().len() <= 0xffff && value.len() <= 0xffff)
        .take(MAX_SHARED_HEADERS)
        .collect();
    out.extend_from_slice(&(headers.len() as u16).to_be_bytes());
    for (name, value) in headers {
        out.extend_from_slice(&(name.as_str().len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(&answer.body);
    out
}

/// The inverse of [`encode`]; `None` for anything that is not a whole, valid value.
pub(super) fn decode(value: &[u8]) -> Option<(u64, SharedAnswer)> {
    let mut rest = value.strip_prefix(VALUE_MAGIC.as_slice())?;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head)
    };
    let produced_ms = u64::from_be_bytes(take(8)?.try_into().ok()?);
    let status = StatusCode::from_u16(u16::from_be_bytes(take(2)?.try_into().ok()?)).ok()?;
    let count = u16::from_be_bytes(take(2)?.try_into().ok()?);
    // We never write more; a bigger count is garbage (and must not size an allocation).
    if usize::from(count) > MAX_SHARED_HEADERS {
        return None;
    }
    let mut headers = HeaderMap::new();
    for _ in 0..count {
        let len = u16::from_be_bytes(take(2)?.try_into().ok()?);
        let name = HeaderName::from_bytes(take(usize::from(len))?).ok()?;
        let len = u16::from_be_bytes(take(2)?.try_into().ok()?);
        let value = HeaderValue::from_bytes(take(usize::from(len))?).ok()?;
        headers.try_append(name, value).ok()?;
    }
    let body = Bytes::copy_from_slice(rest);
    Some((
        produced_ms,
        SharedAnswer {
            status,
            headers,
            body,
            age: Duration::ZERO,
            granted_age: Duration::ZERO,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn answer() -> SharedAnswer {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-extra", HeaderValue::from_static("1"));
        SharedAnswer {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"{\"id\":\"ly5a\",\"status\":\"READY\"}"),
            age: Duration::ZERO,
            granted_age: Duration::ZERO,
        }
    }

    #[test]
    fn values_round_trip() {
        let original = answer();
        let (produced, decoded) = decode(&encode(1_700_000_000_123, &original)).unwrap();
        assert_eq!(produced, 1_700_000_000_123);
        assert_eq!(decoded.status, original.status);
        assert_eq!(decoded.headers, original.headers);
        assert_eq!(decoded.body, original.body);
    }

    #[test]
    fn garbage_and_truncated_values_are_refused() {
        let value = encode(1, &answer());
        assert!(decode(b"").is_none());
        assert!(decode(b"{\"id\":\"ly5a\"}").is_none());
        // Cut inside the header block: refused. (Cut inside the body cannot be told apart
        // from a shorter body; Redis stores values whole.)
        for cut in 0..(4 + 8 + 2 + 2 + 2 + 12 + 2) {
            assert!(decode(&value[..cut]).is_none(), "cut at {cut}");
        }
        let mut bad_status = value.clone();
        bad_status[12] = 0;
        bad_status[13] = 7;
        assert!(decode(&bad_status).is_none());
    }

    #[test]
    fn a_huge_header_count_is_garbage_not_an_allocation() {
        let mut value = Vec::from(&VALUE_MAGIC[..]);
        value.extend_from_slice(&1u64.to_be_bytes());
        value.extend_from_slice(&200u16.to_be_bytes());
        value.extend_from_slice(&u16::MAX.to_be_bytes());
        value.extend_from_slice(&[0u8; 64]);
        assert!(decode(&value).is_none());
    }
}
