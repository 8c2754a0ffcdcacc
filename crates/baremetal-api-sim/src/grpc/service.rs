//! `ImageService` itself: which method a call names, its one request message (unframed and
//! decoded), and the answer message, with the same rules as REST (`images.rs`). Pure over the
//! simulator's state; no I/O.

use bytes::{Buf, Bytes};
use prost::encoding::{decode_key, skip_field, DecodeContext};
use prost::Message;

use super::convert::{self, SimListImagesResponse};
use super::messages::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, ListImageOperationsRequest,
    ListImageOperationsResponse, ListImagesRequest, UpdateImageRequest,
};
use super::{CREATE_PATH, DELETE_PATH, GET_PATH, LIST_OPERATIONS_PATH, LIST_PATH, UPDATE_PATH};
use crate::error::ApiError;
use crate::images::{self, ImageUpdate, ListQuery, NewImage};
use crate::State;

/// The methods of `ImageService`, all unary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    List,
    Create,
    Update,
    Delete,
    ListOperations,
}

impl Method {
    const ALL: [Method; 6] = [
        Method::Get,
        Method::List,
        Method::Create,
        Method::Update,
        Method::Delete,
        Method::ListOperations,
    ];

    /// The HTTP/2 path, `/{SERVICE}/{name}`.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Method::Get => GET_PATH,
            Method::List => LIST_PATH,
            Method::Create => CREATE_PATH,
            Method::Update => UPDATE_PATH,
            Method::Delete => DELETE_PATH,
            Method::ListOperations => LIST_OPERATIONS_PATH,
        }
    }

    pub(crate) fn from_path(path: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|method| method.path() == path)
    }

    /// The field numbers of the method's request message.
    fn known_fields(self) -> &'static [u32] {
        match self {
            Method::Get | Method::Delete => &[1],
            Method::List => &[1, 100, 101, 102, 103],
            Method::Create => &[1, 2, 3, 11, 200],
            Method::Update => &[1, 2, 3, 4, 200],
            Method::ListOperations => &[1, 100, 101],
        }
    }
}

/// One gRPC call as received: its method and its request message.
pub(crate) struct Call {
    /// `None`: a path `ImageService` does not have (UNIMPLEMENTED).
    pub(crate) method: Option<Method>,
    /// The one message of the body, or why the body is not one uncompressed message.
    pub(crate) message: Result<Bytes, Unframed>,
    /// `image_id` of a Get, Update or Delete: what a [`crate::FaultScope::Image`] matches,
    /// as the `/images/{id}` path does for REST.
    pub(crate) image_id: Option<String>,
    /// Top-level field numbers of the message that its type does not have.
    pub(crate) unknown_fields: Vec<u32>,
}

/// Why a request body is not one uncompressed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unframed {
    Compressed,
    Malformed,
}

impl Call {
    pub(crate) fn parse(path: &str, body: &Bytes) -> Call {
        let method = Method::from_path(path);
        let message = unframe(body);
        let (mut image_id, mut unknown_fields) = (None, Vec::new());
        if let (Some(method), Ok(message)) = (method, &message) {
            unknown_fields = unknown_field_numbers(message, method.known_fields());
            if matches!(method, Method::Get | Method::Update | Method::Delete) {
                // The three requests have `image_id` as field 1.
                image_id = GetImageRequest::decode(message.clone())
                    .ok()
                    .map(|request| request.image_id);
            }
        }
        Call {
            method,
            message,
            image_id,
            unknown_fields,
        }
    }

    /// The request as recorded: the message bytes, or the whole body if it is not one message.
    pub(crate) fn recorded_body(&self, body: &Bytes) -> Bytes {
        self.message.clone().unwrap_or_else(|_| body.clone())
    }

    pub(crate) fn is_get(&self) -> bool {
        self.method == Some(Method::Get)
    }
}

/// The message of a body that is exactly one length-prefixed, uncompressed message.
fn unframe(body: &Bytes) -> Result<Bytes, Unframed> {
    let Some(&[flag, a, b, c, d]) = body.get(..5) else {
        return Err(Unframed::Malformed);
    };
    let length = u32::from_be_bytes([a, b, c, d]) as usize;
    match (flag, body.len() - 5 == length) {
        (0, true) => Ok(body.slice(5..)),
        (0, false) => Err(Unframed::Malformed),
        _ => Err(Unframed::Compressed),
    }
}

/// The top-level field numbers of `message` that are not in `known`, in the order sent; stops
/// at the first malformed field.
pub(crate) fn unknown_field_numbers(message: &[u8], known: &[u32]) -> Vec<u32> {
    let mut buf = message;
    let mut unknown = Vec::new();
    while buf.has_remaining() {
        let Ok((tag, wire_type)) = decode_key(&mut buf) else {
            break;
        };
        if skip_field(wire_type, tag, &mut buf, DecodeContext::default()).is_err() {
            break;
        }
        if !known.contains(&tag) {
            unknown.push(tag);
        }
    }
    unknown
}

/// A decoded request.
enum Request {
    Get(GetImageRequest),
    List(ListImagesRequest),
    Create(CreateImageRequest),
    Update(UpdateImageRequest),
    Delete(DeleteImageRequest),
    ListOperations(ListImageOperationsRequest),
}

impl Request {
    fn decode(method: Method, message: Bytes) -> Result<Request, prost::DecodeError> {
        Ok(match method {
            Method::Get => Request::Get(Message::decode(message)?),
            Method::List => Request::List(Message::decode(message)?),
            Method::Create => Request::Create(Message::decode(message)?),
            Method::Update => Request::Update(Message::decode(message)?),
            Method::Delete => Request::Delete(Message::decode(message)?),
            Method::ListOperations => Request::ListOperations(Message::decode(message)?),
        })
    }
}

/// Answers one call: the answer message's bytes, or the error. In the order a gRPC server
/// checks: the method, the message, then (as REST) the token and the API's rules.
pub(crate) fn respond(
    state: &mut State,
    call: &Call,
    token: Option<&str>,
) -> Result<Bytes, ApiError> {
    let method = call.method.ok_or_else(unimplemented)?;
    let message = match &call.message {
        Ok(message) => message.clone(),
        Err(Unframed::Compressed) => {
            return Err(ApiError::new(
                http::StatusCode::NOT_IMPLEMENTED,
                12,
                "Compressed messages are not supported",
            ))
        }
        Err(Unframed::Malformed) => {
            return Err(ApiError::internal(
                "The request body is not one length-prefixed message",
            ))
        }
    };
    let request = Request::decode(method, message)
        .map_err(|e| ApiError::internal(format!("Error unmarshalling the request: {e}")))?;
    let caller = images::authenticate(&state.tokens, token)?;
    let store = &mut state.store;
    let answer = match request {
        Request::Get(request) => {
            convert::image(images::get(store, &caller, &request.image_id)?).encode_to_vec()
        }
        Request::List(request) => {
            let query = ListQuery {
                folder_id: &request.folder_id,
                page_size: u64::try_from(request.page_size).ok(),
                page_token: &request.page_token,
            };
            let (images, next_page_token) = images::list(store, &caller, &query)?;
            SimListImagesResponse {
                images: images.iter().map(convert::image).collect(),
                next_page_token,
            }
            .encode_to_vec()
        }
        Request::Create(request) => {
            let new = NewImage {
                folder_id: request.folder_id,
                name: request.name,
                description: request.description,
                uri: request.uri,
                labels: request.labels,
            };
            let operation = images::create(store, &caller, new)?;
            convert::operation(&operation).encode_to_vec()
        }
        Request::Update(request) => {
            let id = request.image_id.clone();
            let operation = images::update(store, &caller, &id, image_update(request))?;
            convert::operation(&operation).encode_to_vec()
        }
        Request::Delete(request) => {
            let operation = images::delete(store, &caller, &request.image_id)?;
            convert::operation(&operation).encode_to_vec()
        }
        Request::ListOperations(request) => {
            let operations = images::list_operations(store, &caller, &request.image_id)?;
            ListImageOperationsResponse {
                operations: operations.iter().map(convert::operation).collect(),
                next_page_token: String::new(),
            }
            .encode_to_vec()
        }
    };
    Ok(Bytes::from(answer))
}

fn unimplemented() -> ApiError {
    ApiError::new(http::StatusCode::NOT_IMPLEMENTED, 12, "Method not found")
}

/// The fields an `UpdateImageRequest` sets: those its mask names, or without a mask those
/// with a non-default value.
fn image_update(request: UpdateImageRequest) -> ImageUpdate {
    let paths = request
        .update_mask
        .map(|mask| mask.paths)
        .unwrap_or_default();
    let wanted = |field: &str, set: bool| {
        if paths.is_empty() {
            set
        } else {
            paths.iter().any(|path| path == field)
        }
    };
    ImageUpdate {
        name: wanted("name", !request.name.is_empty()).then_some(request.name),
        description: wanted("description", !request.description.is_empty())
            .then_some(request.description),
        labels: wanted("labels", !request.labels.is_empty()).then_some(request.labels),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::messages::protobuf::FieldMask;
    use crate::grpc::SERVICE;

    fn framed(message: &[u8]) -> Bytes {
        let mut body = vec![0];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(message);
        Bytes::from(body)
    }

    #[test]
    fn paths_name_the_methods() {
        let path = |name: &str| format!("/{SERVICE}/{name}");
        assert_eq!(Method::from_path(&path("Get")), Some(Method::Get));
        assert_eq!(
            Method::from_path(&path("ListOperations")),
            Some(Method::ListOperations)
        );
        assert_eq!(Method::from_path(&path("get")), None);
        assert_eq!(Method::from_path(&path("Get/")), None);
        assert_eq!(
            Method::from_path("/yandex.cloud.operation.OperationService/Get"),
            None
        );
    }

    #[test]
    fn bodies_must_be_one_uncompressed_message() {
        let message = GetImageRequest {
            image_id: "ly5a".into(),
        }
        .encode_to_vec();
        assert_eq!(unframe(&framed(&message)).unwrap(), message);
        assert_eq!(unframe(&framed(b"")).unwrap(), "");
        let mut two = framed(&message).to_vec();
        two.extend_from_slice(&framed(&message));
        assert_eq!(unframe(&Bytes::from(two)), Err(Unframed::Malformed));
        assert_eq!(
            unframe(&Bytes::from_static(b"\0\0")),
            Err(Unframed::Malformed)
        );
        let mut compressed = framed(&message).to_vec();
        compressed[0] = 1;
        assert_eq!(unframe(&Bytes::from(compressed)), Err(Unframed::Compressed));
    }

    #[test]
    fn calls_know_their_image_and_unknown_fields() {
        // image_id = "ly5a", then field 77 (a varint) that GetImageRequest does not have.
        let mut message = GetImageRequest {
            image_id: "ly5a".into(),
        }
        .encode_to_vec();
        message.extend_from_slice(&[0xe8, 0x04, 0x01]);
        let call = Call::parse(&format!("/{SERVICE}/Get"), &framed(&message));
        assert_eq!(call.image_id.as_deref(), Some("ly5a"));
        assert_eq!(call.unknown_fields, [77]);
        assert!(call.is_get());
        let list = Call::parse(&format!("/{SERVICE}/ListOperations"), &framed(&message));
        assert_eq!((list.image_id, list.unknown_fields), (None, vec![77]));
    }

    #[test]
    fn updates_follow_the_mask_or_the_set_fields() {
        let request = UpdateImageRequest {
            image_id: "ly5a".into(),
            name: "n".into(),
            description: String::new(),
            ..UpdateImageRequest::default()
        };
        let unmasked = image_update(request.clone());
        assert_eq!(
            (unmasked.name.as_deref(), unmasked.description),
            (Some("n"), None)
        );
        let masked = image_update(UpdateImageRequest {
            update_mask: Some(FieldMask {
                paths: vec!["description".into()],
            }),
            ..request
        });
        assert_eq!(
            (masked.name, masked.description.as_deref()),
            (None, Some(""))
        );
    }
}
