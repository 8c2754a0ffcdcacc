//! Images as the API sends them, in each protocol it speaks, decoded no further than the
//! cache decides on: the image's ID and its status. A leaf: the front-ends judge answers with
//! it, and the cache, the flights and the fleet keep one entry per [`Protocol`].

use std::borrow::Cow;

use serde::Deserialize;

/// The status of a READY image.
pub const READY: &str = "READY";

/// The protocols an Image.Get arrives in. An image has one entry per protocol (their bytes
/// differ), and an invalidation of the image drops them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// REST: JSON over HTTP/1.1 or HTTP/2.
    Http,
    /// gRPC `ImageService.Get`: protobuf over HTTP/2.
    Grpc,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Http, Protocol::Grpc];

    /// The `protocol` label of the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }

    /// The position in [`Protocol::ALL`], for metrics resolved up front.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The fields of an image's JSON that decide whether it is cached.
#[derive(Deserialize)]
pub struct ImageState<'a> {
    #[serde(borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub status: Option<Cow<'a, str>>,
}

/// Parses the whole body (so invalid JSON anywhere is caught) but keeps only `id` and
/// `status`; `None` if it is not a JSON object.
pub fn json_state(body: &[u8]) -> Option<ImageState<'_>> {
    serde_json::from_slice(body).ok()
}

/// Whether `body` is the JSON of image `id` in status READY: the only answer that is stored.
pub fn is_ready_json(id: &str, body: &[u8]) -> bool {
    json_state(body).is_some_and(|state| {
        state.id.as_deref() == Some(id) && state.status.as_deref() == Some(READY)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_state_reads_id_and_status_of_valid_json_only() {
        let state = json_state(br#"{"id":"ly5a","status":"READY","labels":{"a":"b"}}"#).unwrap();
        assert_eq!(state.id.as_deref(), Some("ly5a"));
        assert_eq!(state.status.as_deref(), Some("READY"));
        assert!(json_state(br#"{"id":"ly5a","status":"READY""#).is_none());
        assert!(json_state(b"[1,2]").is_none());
        assert!(json_state(br#"{"id":"ly5a"} trailing"#).is_none());
        assert!(is_ready_json("ly5a", br#"{"id":"ly5a","status":"READY"}"#));
        assert!(!is_ready_json("ly5b", br#"{"id":"ly5a","status":"READY"}"#));
        assert!(!is_ready_json(
            "ly5a",
            br#"{"id":"ly5a","status":"CREATING"}"#
        ));
    }
}
