//! The same API over gRPC: `yandex.cloud.baremetal.v1alpha.ImageService` on the simulator's
//! listener, its messages, and [`ImageClient`], a client for tests.
//!
//! See the crate docs for how calls are served, what they answer and how faults act on them.

mod answer;
mod client;
mod convert;
mod messages;
mod service;

use prost::Message;

pub use client::ImageClient;
pub use messages::{
    image, protobuf, rpc, CreateImageRequest, DeleteImageRequest, GetImageRequest, Image,
    ImageMetadata, ListImageOperationsRequest, ListImageOperationsResponse, ListImagesRequest,
    ListImagesResponse, Operation, OperationResult, UpdateImageRequest,
};

pub(crate) use answer::{answer, error};
pub(crate) use service::Call;

/// Whether `path` is a method of `ImageService` (the simulator's only service).
pub(crate) fn has_method(path: &str) -> bool {
    service::Method::from_path(path).is_some()
}

/// The service's full name.
pub const SERVICE: &str = "yandex.cloud.baremetal.v1alpha.ImageService";
/// The HTTP/2 paths of its methods (the targets [`crate::Simulator::count`] and
/// [`crate::RecordedRequest`] show, with method `POST`).
pub const GET_PATH: &str = "/yandex.cloud.baremetal.v1alpha.ImageService/Get";
pub const LIST_PATH: &str = "/yandex.cloud.baremetal.v1alpha.ImageService/List";
pub const CREATE_PATH: &str = "/yandex.cloud.baremetal.v1alpha.ImageService/Create";
pub const UPDATE_PATH: &str = "/yandex.cloud.baremetal.v1alpha.ImageService/Update";
pub const DELETE_PATH: &str = "/yandex.cloud.baremetal.v1alpha.ImageService/Delete";
pub const LIST_OPERATIONS_PATH: &str =
    "/yandex.cloud.baremetal.v1alpha.ImageService/ListOperations";

/// The field, in `Image`'s reserved range, that every image the simulator sends over gRPC
/// carries and no client knows: a string, `sim:<image id>`. A cache that replays the bytes
/// it received keeps it; one that re-encodes a decoded `Image` loses it.
pub const SIM_ONLY_FIELD: u32 = 50;

/// The value of [`SIM_ONLY_FIELD`] in an encoded `Image`, if it has one.
pub fn sim_only_field(image: &[u8]) -> Option<String> {
    /// Only field 50; decoding skips every other field.
    #[derive(Clone, PartialEq, prost::Message)]
    struct SimOnly {
        #[prost(string, tag = "50")]
        value: String,
    }
    let value = SimOnly::decode(image).ok()?.value;
    (!value.is_empty()).then_some(value)
}

/// The `google.rpc.Status` a failed call carried in `grpc-status-details-bin`.
pub fn status_details(status: &tonic::Status) -> Option<rpc::Status> {
    rpc::Status::decode(status.details()).ok()
}

/// The request ID of a failed call: that of the `google.rpc.RequestInfo` in its details.
pub fn status_request_id(status: &tonic::Status) -> Option<String> {
    let details = status_details(status)?;
    let info = details
        .details
        .iter()
        .find(|any| any.type_url == crate::error::REQUEST_INFO_TYPE)?;
    Some(
        rpc::RequestInfo::decode(info.value.as_slice())
            .ok()?
            .request_id,
    )
}

/// Whether a request with these headers is a gRPC call (`application/grpc`, `+proto` ...).
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}
