//! The cache's key: one entry per image and protocol.

use crate::image::Protocol;

/// The cache key: an image ID, and for the gRPC entry a suffix no ID can contain. Up to 24
/// bytes (every real ID, suffix included) it is held inline, so the key costs no allocation
/// of its own beside the `Arc` moka wraps every key in.
pub(super) type ImageKey = compact_str::CompactString;

/// What follows an image ID in the key of its gRPC entry (`/` is not in any valid ID). Short,
/// so that a 20-character ID and its suffix still fit inline.
const GRPC_SUFFIX: &str = "/g";

/// The key of `id`'s entry in `protocol`.
pub(super) fn key(protocol: Protocol, id: &str) -> ImageKey {
    match protocol {
        Protocol::Http => ImageKey::from(id),
        Protocol::Grpc => {
            let mut key = ImageKey::with_capacity(id.len() + GRPC_SUFFIX.len());
            key.push_str(id);
            key.push_str(GRPC_SUFFIX);
            key
        }
    }
}

/// The protocol and image ID of a key: the inverse of [`key`].
pub(super) fn protocol_and_id(key: &str) -> (Protocol, &str) {
    match key.strip_suffix(GRPC_SUFFIX) {
        Some(id) => (Protocol::Grpc, id),
        None => (Protocol::Http, key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_protocol_and_id_again_and_fits_inline() {
        for protocol in Protocol::ALL {
            let key = key(protocol, "ly5alice0ready000001");
            assert_eq!(protocol_and_id(&key), (protocol, "ly5alice0ready000001"));
            assert!(!key.is_heap_allocated());
        }
    }
}
