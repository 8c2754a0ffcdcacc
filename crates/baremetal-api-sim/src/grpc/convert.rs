//! The simulator's resources as gRPC messages: images (with the field clients do not know),
//! operations and timestamps.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use prost::Message;

use super::messages::{image, protobuf, ImageMetadata, Operation, OperationResult};
use super::SIM_ONLY_FIELD;
use crate::model::{self, Payload};

/// An `Image` as the simulator sends it: the fields of [`super::Image`] and field 50
/// ([`SIM_ONLY_FIELD`]), a string no client knows, in field-number order like any encoder.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SimImage {
    #[prost(string, tag = "1")]
    pub(crate) id: String,
    #[prost(string, tag = "2")]
    pub(crate) folder_id: String,
    #[prost(string, tag = "4")]
    pub(crate) name: String,
    #[prost(string, tag = "5")]
    pub(crate) description: String,
    #[prost(string, tag = "6")]
    pub(crate) checksum: String,
    #[prost(enumeration = "image::Status", tag = "7")]
    pub(crate) status: i32,
    #[prost(string, tag = "50")]
    pub(crate) sim_only: String,
    #[prost(message, optional, tag = "100")]
    pub(crate) created_at: Option<protobuf::Timestamp>,
    #[prost(btree_map = "string, string", tag = "200")]
    pub(crate) labels: BTreeMap<String, String>,
}

// Keep the tag in the attribute above and the documented constant together.
const _: () = assert!(SIM_ONLY_FIELD == 50);

/// `ListImagesResponse` with [`SimImage`]s.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SimListImagesResponse {
    #[prost(message, repeated, tag = "1")]
    pub(crate) images: Vec<SimImage>,
    #[prost(string, tag = "100")]
    pub(crate) next_page_token: String,
}

/// The value of field 50 in the image `id`.
pub(crate) fn sim_only_value(id: &str) -> String {
    format!("sim:{id}")
}

/// The image as the simulator sends it over gRPC. A status that is no `Image.Status` name
/// (tests may set any string) is sent as `STATUS_UNSPECIFIED`, i.e. no field 7.
pub(crate) fn image(image: &model::Image) -> SimImage {
    let status =
        image::Status::from_str_name(&image.status).unwrap_or(image::Status::StatusUnspecified);
    SimImage {
        id: image.id.clone(),
        folder_id: image.folder_id.clone(),
        name: image.name.clone(),
        description: image.description.clone(),
        checksum: image.checksum.clone(),
        status: status as i32,
        sim_only: sim_only_value(&image.id),
        created_at: timestamp(&image.created_at),
        labels: image.labels.clone(),
    }
}

/// An RFC 3339 UTC time (the simulator's own format) as a `Timestamp`; `None` if it is not one.
pub(crate) fn timestamp(time: &str) -> Option<protobuf::Timestamp> {
    let since_epoch = humantime::parse_rfc3339(time)
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?;
    Some(protobuf::Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).ok()?,
        nanos: i32::try_from(since_epoch.subsec_nanos()).ok()?,
    })
}

pub(crate) fn operation(operation: &model::Operation) -> Operation {
    let metadata = ImageMetadata {
        image_id: operation.metadata.value.image_id.clone(),
    };
    let response = operation.response.as_ref().map(|response| {
        let value = match &response.value {
            Payload::Image(response) => image(response).encode_to_vec(),
            Payload::Empty {} => Vec::new(),
        };
        OperationResult::Response(any(response.type_url, value))
    });
    Operation {
        id: operation.id.clone(),
        description: operation.description.to_owned(),
        created_at: timestamp(&operation.created_at),
        created_by: operation.created_by.clone(),
        modified_at: timestamp(&operation.modified_at),
        done: operation.done,
        metadata: Some(any(operation.metadata.type_url, metadata.encode_to_vec())),
        result: response,
    }
}

fn any(type_url: &str, value: Vec<u8>) -> protobuf::Any {
    protobuf::Any {
        type_url: type_url.to_owned(),
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::Image;
    use crate::model::OperationKind;

    #[test]
    fn timestamps_keep_the_microseconds() {
        let time = timestamp("2025-12-07T20:31:52.845955Z").unwrap();
        assert_eq!((time.seconds, time.nanos), (1_765_139_512, 845_955_000));
        assert_eq!(timestamp("yesterday"), None);
    }

    #[test]
    fn images_carry_the_sim_only_field_that_clients_drop() {
        let stored = model::Image::ready("ly5alice0ready000001", "b1gfolder", "ubuntu");
        let bytes = image(&stored).encode_to_vec();
        let known = Image::decode(bytes.as_slice()).unwrap();
        assert_eq!(known.id, stored.id);
        assert_eq!(known.status(), image::Status::Ready);
        assert!(known.encode_to_vec().len() < bytes.len());
        assert_eq!(
            crate::grpc::sim_only_field(&bytes).as_deref(),
            Some("sim:ly5alice0ready000001")
        );
        let odd = model::Image {
            status: "BROKEN".into(),
            ..stored
        };
        assert_eq!(image(&odd).status, 0);
    }

    #[test]
    fn operations_carry_their_metadata_and_response() {
        let stored = model::Image::ready("ly5alice0ready000001", "b1gfolder", "ubuntu");
        let done = model::Operation::new(
            OperationKind::Update,
            &stored.id,
            "t1.x",
            Some(Payload::Image(stored.clone())),
        );
        let message = operation(&done);
        assert!(message.done && message.created_at.is_some());
        let metadata = message.metadata.unwrap();
        assert!(metadata.type_url.ends_with("UpdateImageMetadata"));
        let metadata = ImageMetadata::decode(metadata.value.as_slice()).unwrap();
        assert_eq!(metadata.image_id, stored.id);
        let Some(OperationResult::Response(response)) = message.result else {
            panic!("no response");
        };
        assert_eq!(response.value, image(&stored).encode_to_vec());
        let running = model::Operation::new(OperationKind::Create, &stored.id, "t1.x", None);
        assert_eq!(operation(&running).result, None);
    }
}
