//! The messages of `yandex.cloud.baremetal.v1alpha.ImageService`, written by hand from the
//! field numbers in `upstream-api/grpc.md` (checked against the official Python SDK's
//! descriptors), and the few well-known types they use. Maps are `BTreeMap`s, so one value
//! always encodes to the same bytes.

use std::collections::BTreeMap;

/// `google.protobuf` types.
pub mod protobuf {
    /// `google.protobuf.Timestamp`.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    /// `google.protobuf.Any`: a message's bytes and its type URL.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    /// `google.protobuf.FieldMask`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FieldMask {
        #[prost(string, repeated, tag = "1")]
        pub paths: Vec<String>,
    }
}

/// `google.rpc` types: the error details of a gRPC status.
pub mod rpc {
    use super::protobuf::Any;

    /// `google.rpc.Status`, what `grpc-status-details-bin` carries (base64).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }

    /// `google.rpc.RequestInfo`: the request ID (`x-request-id`) of a failed call.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RequestInfo {
        #[prost(string, tag = "1")]
        pub request_id: String,
        #[prost(string, tag = "2")]
        pub serving_data: String,
    }
}

/// `yandex.cloud.baremetal.v1alpha.Image`. Numbers 3, 8-99 and 101-199 are reserved for
/// fields a newer API may add; the simulator always sends one of them (see
/// [`super::SIM_ONLY_FIELD`]), which this type, like every client's, does not know.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Image {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub folder_id: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "5")]
    pub description: String,
    #[prost(string, tag = "6")]
    pub checksum: String,
    #[prost(enumeration = "image::Status", tag = "7")]
    pub status: i32,
    #[prost(message, optional, tag = "100")]
    pub created_at: Option<protobuf::Timestamp>,
    #[prost(btree_map = "string, string", tag = "200")]
    pub labels: BTreeMap<String, String>,
}

/// Types nested in [`Image`].
pub mod image {
    /// `Image.Status`. In proto3 a READY image has field 7 = 2 on the wire; an absent field 7
    /// is `StatusUnspecified`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum Status {
        StatusUnspecified = 0,
        Creating = 1,
        Ready = 2,
        Error = 3,
        Deleting = 4,
        Updating = 5,
    }

    impl Status {
        /// The name in the proto (and in REST's JSON).
        pub fn as_str_name(self) -> &'static str {
            match self {
                Status::StatusUnspecified => "STATUS_UNSPECIFIED",
                Status::Creating => "CREATING",
                Status::Ready => "READY",
                Status::Error => "ERROR",
                Status::Deleting => "DELETING",
                Status::Updating => "UPDATING",
            }
        }

        pub fn from_str_name(name: &str) -> Option<Status> {
            [
                Status::StatusUnspecified,
                Status::Creating,
                Status::Ready,
                Status::Error,
                Status::Deleting,
                Status::Updating,
            ]
            .into_iter()
            .find(|status| status.as_str_name() == name)
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetImageRequest {
    #[prost(string, tag = "1")]
    pub image_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListImagesRequest {
    #[prost(string, tag = "1")]
    pub folder_id: String,
    #[prost(int64, tag = "100")]
    pub page_size: i64,
    #[prost(string, tag = "101")]
    pub page_token: String,
    #[prost(string, tag = "102")]
    pub order_by: String,
    #[prost(string, tag = "103")]
    pub filter: String,
}

/// `next_page_token` is field 100, as in the official SDKs (grpc.md says 2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListImagesResponse {
    #[prost(message, repeated, tag = "1")]
    pub images: Vec<Image>,
    #[prost(string, tag = "100")]
    pub next_page_token: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateImageRequest {
    #[prost(string, tag = "1")]
    pub folder_id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "11")]
    pub uri: String,
    #[prost(btree_map = "string, string", tag = "200")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateImageRequest {
    #[prost(string, tag = "1")]
    pub image_id: String,
    /// Which of name, description and labels to set; without it, those with a non-default
    /// value (a proto3 message cannot tell "absent" from "empty").
    #[prost(message, optional, tag = "2")]
    pub update_mask: Option<protobuf::FieldMask>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(btree_map = "string, string", tag = "200")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteImageRequest {
    #[prost(string, tag = "1")]
    pub image_id: String,
}

/// `CreateImageMetadata`, `UpdateImageMetadata` and `DeleteImageMetadata`: the three have
/// this one field. An operation's `metadata` [`protobuf::Any`] names which in its type URL.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageMetadata {
    #[prost(string, tag = "1")]
    pub image_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListImageOperationsRequest {
    #[prost(string, tag = "1")]
    pub image_id: String,
    #[prost(int64, tag = "100")]
    pub page_size: i64,
    #[prost(string, tag = "101")]
    pub page_token: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListImageOperationsResponse {
    #[prost(message, repeated, tag = "1")]
    pub operations: Vec<Operation>,
    #[prost(string, tag = "100")]
    pub next_page_token: String,
}

/// `yandex.cloud.operation.Operation`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Operation {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub description: String,
    #[prost(message, optional, tag = "3")]
    pub created_at: Option<protobuf::Timestamp>,
    #[prost(string, tag = "4")]
    pub created_by: String,
    #[prost(message, optional, tag = "5")]
    pub modified_at: Option<protobuf::Timestamp>,
    #[prost(bool, tag = "6")]
    pub done: bool,
    /// An [`ImageMetadata`].
    #[prost(message, optional, tag = "7")]
    pub metadata: Option<protobuf::Any>,
    #[prost(oneof = "OperationResult", tags = "8, 9")]
    pub result: Option<OperationResult>,
}

/// `Operation.result`: how a done operation ended.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum OperationResult {
    #[prost(message, tag = "8")]
    Error(rpc::Status),
    /// An [`Image`] (Update) or a `google.protobuf.Empty` (Delete).
    #[prost(message, tag = "9")]
    Response(protobuf::Any),
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_ready_status_is_field_7_equal_to_2() {
        let image = Image {
            status: image::Status::Ready as i32,
            ..Image::default()
        };
        assert_eq!(image.encode_to_vec(), [0x38, 0x02]);
        assert_eq!(Image::default().encode_to_vec(), b"");
        assert_eq!(image.status(), image::Status::Ready);
    }

    #[test]
    fn status_names_round_trip() {
        for n in 0..6 {
            let status = image::Status::try_from(n).unwrap();
            assert_eq!(
                image::Status::from_str_name(status.as_str_name()),
                Some(status)
            );
        }
        assert_eq!(image::Status::from_str_name("BROKEN"), None);
    }

    #[test]
    fn labels_encode_in_key_order() {
        let labels = |pairs: &[(&str, &str)]| {
            let labels = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            Image {
                labels,
                ..Image::default()
            }
            .encode_to_vec()
        };
        assert_eq!(
            labels(&[("b", "2"), ("a", "1")]),
            labels(&[("a", "1"), ("b", "2")])
        );
    }
}
