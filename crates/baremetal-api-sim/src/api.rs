//! The image API itself: routing on the raw request target, authorization, validation and
//! the JSON answers. Pure over the simulator's state; no I/O, no HTTP server types.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::model::{
    is_valid_image_id, new_id, now_timestamp, Any, Image, Operation, OperationKind, Payload,
    CREATING,
};
use super::store::ImageStore;
use super::{State, IMAGES_PATH};

/// `pageSize` when the request gives none (`ListImagesRequest`: "Default value is 20").
const DEFAULT_PAGE_SIZE: usize = 20;
const MAX_PAGE_SIZE: usize = 1000;

/// An API error: the HTTP status and the `google.rpc.Status` body fields.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    code: u32,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: u32, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn not_found_route() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, 5, "Not Found")
    }

    fn unauthenticated() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            16,
            "Token is invalid or has expired.",
        )
    }

    fn permission_denied() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, 7, "Permission denied")
    }

    fn image_not_found(id: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, 5, format!("Image {id} not found"))
    }

    fn invalid(field: &str, problem: impl std::fmt::Display) -> ApiError {
        let message = format!("Request validation error: {field}: {problem}");
        ApiError::new(StatusCode::BAD_REQUEST, 3, message)
    }

    /// The error body, its `RequestInfo` carrying the response's `x-request-id`.
    pub(crate) fn body(&self, request_id: &str) -> Bytes {
        let body = ErrorBody {
            code: self.code,
            message: &self.message,
            details: [Any::new(
                "type.googleapis.com/google.rpc.RequestInfo",
                RequestInfo { request_id },
            )],
        };
        // Serializing strings and numbers cannot fail.
        serde_json::to_vec(&body)
            .map(Bytes::from)
            .unwrap_or_default()
    }
}

/// `google.rpc.Status`, fields in the order the API sends them.
#[derive(Serialize)]
struct ErrorBody<'a> {
    code: u32,
    message: &'a str,
    details: [Any<RequestInfo<'a>>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestInfo<'a> {
    request_id: &'a str,
}

/// The parts of a request the API looks at.
pub(crate) struct ApiRequest<'a> {
    pub(crate) method: &'a Method,
    /// Raw request target, path and query.
    pub(crate) target: &'a str,
    /// The `Bearer` token, if the request carried one.
    pub(crate) token: Option<&'a str>,
    pub(crate) body: &'a [u8],
}

/// The routes of the image API, parsed from the raw path.
#[derive(Debug, PartialEq)]
enum Route<'a> {
    Images,
    Image(&'a str),
    ImageOperations(&'a str),
}

/// Routes `path` (no query). An `{id}` segment must be non-empty and made of URL-unreserved
/// characters: percent-escapes, `:action` suffixes and empty segments (a trailing slash) do
/// not route, they get the plain 404 a path the API doesn't have gets.
fn route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix(IMAGES_PATH)?;
    if rest.is_empty() {
        return Some(Route::Images);
    }
    let mut segments = rest.strip_prefix('/')?.split('/');
    let id = segments.next().filter(|id| is_routable_segment(id))?;
    match (segments.next(), segments.next()) {
        (None, _) => Some(Route::Image(id)),
        (Some("operations"), None) => Some(Route::ImageOperations(id)),
        _ => None,
    }
}

fn is_routable_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// The image ID of a request on exactly `/images/{id}` (any query), which is what a
/// [`super::FaultScope::Image`] matches.
pub(crate) fn image_path_id(target: &str) -> Option<&str> {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    match route(path)? {
        Route::Image(id) => Some(id),
        _ => None,
    }
}

/// What a request asks for: a route and a method that go together.
enum Call<'a> {
    Get(&'a str),
    Update(&'a str),
    Delete(&'a str),
    List,
    Create,
    ListOperations(&'a str),
}

fn call<'a>(method: &Method, route: Route<'a>) -> Option<Call<'a>> {
    match (method.as_str(), route) {
        ("GET" | "HEAD", Route::Image(id)) => Some(Call::Get(id)),
        ("PATCH", Route::Image(id)) => Some(Call::Update(id)),
        ("DELETE", Route::Image(id)) => Some(Call::Delete(id)),
        ("GET", Route::Images) => Some(Call::List),
        ("POST", Route::Images) => Some(Call::Create),
        ("GET", Route::ImageOperations(id)) => Some(Call::ListOperations(id)),
        _ => None,
    }
}

/// Answers one API request: the 200 body, or the error.
pub(crate) fn respond(state: &mut State, request: &ApiRequest<'_>) -> Result<Bytes, ApiError> {
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target, ""));
    let call = route(path)
        .and_then(|route| call(request.method, route))
        .ok_or_else(ApiError::not_found_route)?;
    let token = request.token.ok_or_else(ApiError::unauthenticated)?;
    let folders = state
        .tokens
        .get(token)
        .ok_or_else(ApiError::unauthenticated)?;
    let caller = Caller { token, folders };
    let store = &mut state.store;
    match call {
        Call::Get(id) => get(store, &caller, id),
        Call::Update(id) => update(store, &caller, id, request.body),
        Call::Delete(id) => delete(store, &caller, id),
        Call::List => list(store, &caller, query),
        Call::Create => create(store, &caller, request.body),
        Call::ListOperations(id) => list_operations(store, &caller, id),
    }
}

/// An authenticated caller: its token and the folders it may use.
struct Caller<'a> {
    token: &'a str,
    folders: &'a HashSet<String>,
}

impl Caller<'_> {
    fn require_folder(&self, folder_id: &str) -> Result<(), ApiError> {
        if self.folders.contains(folder_id) {
            Ok(())
        } else {
            Err(ApiError::permission_denied())
        }
    }
}

/// The checks every `/images/{id}` call makes, in the API's order: the ID's format, the
/// image's existence, the caller's access to its folder.
fn visible_image<'s>(
    store: &'s mut ImageStore,
    caller: &Caller<'_>,
    id: &str,
) -> Result<&'s mut Image, ApiError> {
    if !is_valid_image_id(id) {
        return Err(ApiError::invalid(
            "image_id",
            "must be exactly 20 characters matching [a-z][a-z0-9]*",
        ));
    }
    let hide_forbidden = store.hide_forbidden;
    let image = store
        .get_mut(id)
        .ok_or_else(|| ApiError::image_not_found(id))?;
    if caller.folders.contains(&image.folder_id) {
        Ok(image)
    } else if hide_forbidden {
        Err(ApiError::image_not_found(id))
    } else {
        Err(ApiError::permission_denied())
    }
}

fn get(store: &mut ImageStore, caller: &Caller<'_>, id: &str) -> Result<Bytes, ApiError> {
    to_json(visible_image(store, caller, id)?)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct CreateImageRequest {
    folder_id: String,
    name: String,
    description: String,
    uri: String,
    labels: BTreeMap<String, String>,
}

fn create(store: &mut ImageStore, caller: &Caller<'_>, body: &[u8]) -> Result<Bytes, ApiError> {
    let request: CreateImageRequest = parse_body(body)?;
    if request.folder_id.is_empty() {
        return Err(ApiError::invalid("folder_id", "required"));
    }
    if request.uri.is_empty() {
        return Err(ApiError::invalid("uri", "required"));
    }
    caller.require_folder(&request.folder_id)?;
    let image = Image {
        id: new_id(),
        folder_id: request.folder_id,
        name: request.name,
        description: request.description,
        checksum: String::new(),
        status: CREATING.to_owned(),
        created_at: now_timestamp(),
        labels: request.labels,
    };
    let operation = Operation::new(OperationKind::Create, &image.id, caller.token, None);
    store.add_operation(&image.id, operation.clone());
    store.create(image);
    to_json(&operation)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct UpdateImageRequest {
    /// Comma-separated field names; empty means every field present in the body.
    update_mask: String,
    name: Option<String>,
    description: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

impl UpdateImageRequest {
    fn apply(self, image: &mut Image) {
        let wanted = |field: &str| {
            self.update_mask.is_empty() || self.update_mask.split(',').any(|f| f.trim() == field)
        };
        if let Some(name) = self.name.filter(|_| wanted("name")) {
            image.name = name;
        }
        if let Some(description) = self.description.filter(|_| wanted("description")) {
            image.description = description;
        }
        if let Some(labels) = self.labels.filter(|_| wanted("labels")) {
            image.labels = labels;
        }
    }
}

fn update(
    store: &mut ImageStore,
    caller: &Caller<'_>,
    id: &str,
    body: &[u8],
) -> Result<Bytes, ApiError> {
    let request: UpdateImageRequest = parse_body(body)?;
    let image = visible_image(store, caller, id)?;
    request.apply(image);
    let response = Payload::Image(image.clone());
    let operation = Operation::new(OperationKind::Update, id, caller.token, Some(response));
    store.add_operation(id, operation.clone());
    to_json(&operation)
}

fn delete(store: &mut ImageStore, caller: &Caller<'_>, id: &str) -> Result<Bytes, ApiError> {
    visible_image(store, caller, id)?;
    store.remove(id);
    let operation = Operation::new(
        OperationKind::Delete,
        id,
        caller.token,
        Some(Payload::Empty {}),
    );
    to_json(&operation)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListImagesResponse {
    images: Vec<Image>,
    next_page_token: String,
}

fn list(store: &mut ImageStore, caller: &Caller<'_>, query: &str) -> Result<Bytes, ApiError> {
    let folder_id = query_param(query, "folderId").unwrap_or_default();
    if folder_id.is_empty() {
        return Err(ApiError::invalid("folder_id", "required"));
    }
    let page_size = match query_param(query, "pageSize").unwrap_or_default() {
        "" | "0" => DEFAULT_PAGE_SIZE,
        size => size
            .parse()
            .ok()
            .filter(|size| *size <= MAX_PAGE_SIZE)
            .ok_or_else(|| ApiError::invalid("page_size", "must be a number up to 1000"))?,
    };
    caller.require_folder(folder_id)?;
    let page_token = query_param(query, "pageToken").unwrap_or_default();
    let (images, next_page_token) = store.list(folder_id, page_token, page_size);
    to_json(&ListImagesResponse {
        images,
        next_page_token,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListOperationsResponse<'a> {
    operations: &'a [Operation],
    next_page_token: &'a str,
}

fn list_operations(
    store: &mut ImageStore,
    caller: &Caller<'_>,
    id: &str,
) -> Result<Bytes, ApiError> {
    visible_image(store, caller, id)?;
    to_json(&ListOperationsResponse {
        operations: store.operations(id),
        next_page_token: "",
    })
}

/// The first value of `name` in a raw query string. Values are used undecoded: every value
/// the API takes here (folder IDs, page tokens, numbers) is plain ASCII.
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid("body", e))
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, 13, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_raw_path() {
        assert_eq!(route("/baremetal/v1alpha/images"), Some(Route::Images));
        assert_eq!(
            route("/baremetal/v1alpha/images/ly5a"),
            Some(Route::Image("ly5a"))
        );
        assert_eq!(
            route("/baremetal/v1alpha/images/ly5a/operations"),
            Some(Route::ImageOperations("ly5a"))
        );
        for path in [
            "/baremetal/v1alpha/images/",
            "/baremetal/v1alpha/images/ly5a/",
            "/baremetal/v1alpha/images/ly5a%2Fb",
            "/baremetal/v1alpha/images/ly5a:reboot",
            "/baremetal/v1alpha/images/ly5a/other",
            "/baremetal/v1alpha/imagesx",
            "/Baremetal/v1alpha/images/ly5a",
            "/baremetal/v1alpha/images//ly5a",
        ] {
            assert_eq!(route(path), None, "{path}");
        }
    }

    #[test]
    fn image_path_id_ignores_the_query_but_not_extra_segments() {
        assert_eq!(
            image_path_id("/baremetal/v1alpha/images/ly5a?x=1"),
            Some("ly5a")
        );
        assert_eq!(
            image_path_id("/baremetal/v1alpha/images/ly5a/operations"),
            None
        );
        assert_eq!(image_path_id("/baremetal/v1alpha/images"), None);
    }

    #[test]
    fn query_params_match_whole_names() {
        let query = "folderIdx=no&folderId=b1g&pageSize=5";
        assert_eq!(query_param(query, "folderId"), Some("b1g"));
        assert_eq!(query_param(query, "pageSize"), Some("5"));
        assert_eq!(query_param(query, "pageToken"), None);
    }

    #[test]
    fn update_mask_limits_the_fields() {
        let mut image = Image::ready("ly5a", "f", "old");
        let request: UpdateImageRequest =
            serde_json::from_str(r#"{"updateMask":"description","name":"new","description":"d"}"#)
                .unwrap();
        request.apply(&mut image);
        assert_eq!(
            (image.name.as_str(), image.description.as_str()),
            ("old", "d")
        );
    }
}
