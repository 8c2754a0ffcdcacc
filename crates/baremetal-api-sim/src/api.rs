//! The REST side of the image API: routing on the raw request target, the JSON requests and
//! answers (the rules themselves are in `images.rs`). Pure over the simulator's state; no
//! I/O, no HTTP server types.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::Method;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::images::{self, ImageUpdate, ListQuery, NewImage};
use super::model::{Image, Operation};
use super::{State, IMAGES_PATH};

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
    let caller = images::authenticate(&state.tokens, request.token)?;
    let store = &mut state.store;
    match call {
        Call::Get(id) => to_json(images::get(store, &caller, id)?),
        Call::Update(id) => {
            let change = parse_body::<UpdateImageRequest>(request.body)?.into_update();
            to_json(&images::update(store, &caller, id, change)?)
        }
        Call::Delete(id) => to_json(&images::delete(store, &caller, id)?),
        Call::List => {
            let page_size = match query_param(query, "pageSize").unwrap_or_default() {
                "" => Some(0),
                size => size.parse().ok(),
            };
            let query = ListQuery {
                folder_id: query_param(query, "folderId").unwrap_or_default(),
                page_size,
                page_token: query_param(query, "pageToken").unwrap_or_default(),
            };
            let (images, next_page_token) = images::list(store, &caller, &query)?;
            to_json(&ListImagesResponse {
                images,
                next_page_token,
            })
        }
        Call::Create => {
            let new: NewImage = parse_body(request.body)?;
            to_json(&images::create(store, &caller, new)?)
        }
        Call::ListOperations(id) => to_json(&ListOperationsResponse {
            operations: images::list_operations(store, &caller, id)?,
            next_page_token: "",
        }),
    }
}

/// The JSON body of `PATCH /images/{id}`.
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
    fn into_update(self) -> ImageUpdate {
        let mask = self.update_mask;
        let wanted = |field: &str| mask.is_empty() || mask.split(',').any(|f| f.trim() == field);
        ImageUpdate {
            name: self.name.filter(|_| wanted("name")),
            description: self.description.filter(|_| wanted("description")),
            labels: self.labels.filter(|_| wanted("labels")),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListImagesResponse {
    images: Vec<Image>,
    next_page_token: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListOperationsResponse<'a> {
    operations: &'a [Operation],
    next_page_token: &'a str,
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
        .map_err(|e| ApiError::internal(e.to_string()))
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
        let request: UpdateImageRequest =
            serde_json::from_str(r#"{"updateMask":"description","name":"new","description":"d"}"#)
                .unwrap();
        let change = request.into_update();
        assert_eq!(
            (change.name, change.description.as_deref()),
            (None, Some("d"))
        );
    }
}
