//! What an image answer says, decoded no further than the cache decides on: the image's ID
//! and its status. A leaf, used by the front-ends (to judge an answer) and by nothing else.

use std::borrow::Cow;

use serde::Deserialize;

/// The status of a READY image.
pub const READY: &str = "READY";

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
