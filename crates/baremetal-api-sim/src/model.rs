//! The API's resources as JSON (Image, Operation) and the generators for realistic values:
//! IDs, checksums, timestamps, request and trace IDs.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Image statuses the simulator itself sets (any other string may be set by a test).
pub(crate) const READY: &str = "READY";
pub(crate) const CREATING: &str = "CREATING";

/// Length every image ID must have (`image_service.proto`: `(length)="20"`).
const IMAGE_ID_LEN: usize = 20;
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// An Image resource, serialized exactly as the API sends it (field order as in `image-get.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    pub id: String,
    pub folder_id: String,
    pub name: String,
    pub description: String,
    pub checksum: String,
    pub status: String,
    pub created_at: String,
    pub labels: BTreeMap<String, String>,
}

impl Image {
    /// A READY image with an empty description and no labels. Checksum and `createdAt` are
    /// derived from the ID, so the same call always gives the same bytes.
    pub fn ready(id: &str, folder_id: &str, name: &str) -> Image {
        Image {
            id: id.to_owned(),
            folder_id: folder_id.to_owned(),
            name: name.to_owned(),
            description: String::new(),
            checksum: checksum(id),
            status: READY.to_owned(),
            created_at: past_timestamp(id),
            labels: BTreeMap::new(),
        }
    }
}

/// The validation rule of every `imageId` path parameter: exactly 20 of `[a-z][a-z0-9]*`.
pub(crate) fn is_valid_image_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == IMAGE_ID_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A fresh BareMetal-style ID: `ly5` and 17 random `[a-z0-9]` (images and operations alike).
pub(crate) fn new_id() -> String {
    let mut rng = rand::thread_rng();
    let tail: String = (0..IMAGE_ID_LEN - 3)
        .map(|_| char::from(ID_ALPHABET[rng.gen_range(0..ID_ALPHABET.len())]))
        .collect();
    format!("ly5{tail}")
}

/// A valid image ID that differs from `id` (only its last character changes when `id` is
/// valid), for answers that must carry the wrong resource.
pub(crate) fn other_image_id(id: &str) -> String {
    if !is_valid_image_id(id) {
        return "ly5wrongid0000000000".to_owned();
    }
    let (head, last) = id.split_at(IMAGE_ID_LEN - 1);
    let replacement = if last == "0" { '1' } else { '0' };
    format!("{head}{replacement}")
}

/// An MD5-looking checksum (32 lowercase hex), stable per image ID.
pub(crate) fn checksum(id: &str) -> String {
    format!(
        "{:016x}{:016x}",
        fnv1a(0xcbf2_9ce4_8422_2325, id.as_bytes()),
        fnv1a(0x6c62_272e_07bb_0142, id.as_bytes())
    )
}

/// An account ID (`createdBy`) for a token: `aje` and 17 hex digits, stable per token.
pub(crate) fn account_id(token: &str) -> String {
    format!("aje{}", &checksum(token)[..17])
}

/// Now, in the API's timestamp format (microseconds, `Z`).
pub(crate) fn now_timestamp() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// A creation time up to 90 days before 2025-12-07T20:31:52.845955Z, stable per image ID.
fn past_timestamp(id: &str) -> String {
    const BASE_MICROS: u64 = 1_765_139_512_845_955;
    const SPREAD_MICROS: u64 = 90 * 24 * 3600 * 1_000_000;
    let micros = BASE_MICROS - fnv1a(0x5bd1_e995, id.as_bytes()) % SPREAD_MICROS;
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(micros)).to_string()
}

/// A UUID v4-shaped string, as Yandex uses for `x-request-id`.
pub(crate) fn request_id() -> String {
    let n: u128 = rand::thread_rng().gen();
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..]
    )
}

/// 16 random hex digits, the shape of `x-server-trace-id`.
pub(crate) fn trace_id() -> String {
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

/// FNV-1a: a tiny, dependency-free hash; good enough to make stable fake values.
fn fnv1a(seed: u64, data: &[u8]) -> u64 {
    data.iter().fold(seed, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `google.protobuf.Any` in JSON: the payload's fields next to an `@type` URL.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Any<T> {
    #[serde(rename = "@type")]
    pub(crate) type_url: &'static str,
    #[serde(flatten)]
    pub(crate) value: T,
}

impl<T> Any<T> {
    pub(crate) fn new(type_url: &'static str, value: T) -> Any<T> {
        Any { type_url, value }
    }
}

/// Metadata of every image operation: which image it is about.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImageRef {
    pub(crate) image_id: String,
}

/// What a finished operation returns.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Payload {
    Image(Image),
    Empty {},
}

impl Payload {
    fn type_url(&self) -> &'static str {
        match self {
            Payload::Image(_) => "type.googleapis.com/yandex.cloud.baremetal.v1alpha.Image",
            Payload::Empty {} => "type.googleapis.com/google.protobuf.Empty",
        }
    }
}

/// The kinds of image operation, with their descriptions and `@type` URLs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum OperationKind {
    Create,
    Update,
    Delete,
}

impl OperationKind {
    fn description(self) -> &'static str {
        match self {
            OperationKind::Create => "User image create",
            OperationKind::Update => "User image update",
            OperationKind::Delete => "User image delete",
        }
    }

    fn metadata_type(self) -> &'static str {
        match self {
            OperationKind::Create => {
                "type.googleapis.com/yandex.cloud.baremetal.v1alpha.CreateImageMetadata"
            }
            OperationKind::Update => {
                "type.googleapis.com/yandex.cloud.baremetal.v1alpha.UpdateImageMetadata"
            }
            OperationKind::Delete => {
                "type.googleapis.com/yandex.cloud.baremetal.v1alpha.DeleteImageMetadata"
            }
        }
    }
}

/// A `yandex.cloud.operation.Operation`, field order as in the proto.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Operation {
    pub(crate) id: String,
    pub(crate) description: &'static str,
    pub(crate) created_at: String,
    pub(crate) created_by: String,
    pub(crate) modified_at: String,
    pub(crate) done: bool,
    pub(crate) metadata: Any<ImageRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) response: Option<Any<Payload>>,
}

impl Operation {
    /// An operation started now by `token`'s account on `image_id`; `None` leaves it running.
    pub(crate) fn new(
        kind: OperationKind,
        image_id: &str,
        token: &str,
        response: Option<Payload>,
    ) -> Operation {
        let now = now_timestamp();
        Operation {
            id: new_id(),
            description: kind.description(),
            created_at: now.clone(),
            created_by: account_id(token),
            modified_at: now,
            done: response.is_some(),
            metadata: Any::new(
                kind.metadata_type(),
                ImageRef {
                    image_id: image_id.to_owned(),
                },
            ),
            response: response.map(|value| Any::new(value.type_url(), value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid() {
        let id = new_id();
        assert!(id.starts_with("ly5") && is_valid_image_id(&id), "{id}");
        assert_ne!(id, new_id());
    }

    #[test]
    fn id_validation_follows_the_proto_rule() {
        assert!(is_valid_image_id("ly5alice0ready000001"));
        assert!(!is_valid_image_id("ly5alice0ready00001"));
        assert!(!is_valid_image_id("1y5alice0ready000001"));
        assert!(!is_valid_image_id("ly5Alice0ready000001"));
        assert!(!is_valid_image_id("ly5alice-ready000001"));
    }

    #[test]
    fn other_image_id_is_valid_and_different() {
        for id in ["ly5alice0ready000001", "ly5alice0ready000000", "bad"] {
            let other = other_image_id(id);
            assert!(is_valid_image_id(&other) && other != id, "{id} -> {other}");
        }
    }

    #[test]
    fn ready_images_are_deterministic_and_realistic() {
        let image = Image::ready("ly5alice0ready000001", "b1gfolder", "ubuntu");
        assert_eq!(
            image,
            Image::ready("ly5alice0ready000001", "b1gfolder", "ubuntu")
        );
        assert_eq!(image.checksum.len(), 32);
        assert!(image
            .checksum
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(image.created_at.len(), "2025-12-07T20:31:52.845955Z".len());
        assert!(image.created_at.ends_with('Z'));
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = request_id();
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert_eq!(trace_id().len(), 16);
    }

    #[test]
    fn finished_operations_carry_typed_responses() {
        let op = Operation::new(OperationKind::Delete, "ly5x", "t", Some(Payload::Empty {}));
        let json = serde_json::to_value(&op).unwrap();
        assert_eq!(json["done"], true);
        assert_eq!(
            json["response"]["@type"],
            "type.googleapis.com/google.protobuf.Empty"
        );
        assert_eq!(json["metadata"]["imageId"], "ly5x");
        let running = Operation::new(OperationKind::Create, "ly5x", "t", None);
        assert!(serde_json::to_value(&running)
            .unwrap()
            .get("response")
            .is_none());
    }
}
