//! The image API's rules, whatever the protocol: who may call, which checks an image call
//! makes and in what order, and what each call does to the store. REST (`api.rs`) and gRPC
//! (`grpc/service.rs`) parse their requests into these calls and render what they return.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;

use super::error::ApiError;
use super::model::{
    is_valid_image_id, new_id, now_timestamp, Image, Operation, OperationKind, Payload, CREATING,
};
use super::store::ImageStore;

/// The page size when a request gives none or 0 (`ListImagesRequest`: "Default value is 20").
const DEFAULT_PAGE_SIZE: usize = 20;
const MAX_PAGE_SIZE: u64 = 1000;

/// An authenticated caller: its token and the folders it may use.
pub(crate) struct Caller<'a> {
    token: &'a str,
    folders: &'a HashSet<String>,
}

/// The caller behind `token`: none or an unknown one is UNAUTHENTICATED (401, code 16).
pub(crate) fn authenticate<'a>(
    tokens: &'a HashMap<String, HashSet<String>>,
    token: Option<&str>,
) -> Result<Caller<'a>, ApiError> {
    let (token, folders) = token
        .and_then(|token| tokens.get_key_value(token))
        .ok_or_else(ApiError::unauthenticated)?;
    Ok(Caller { token, folders })
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

/// The checks every call on one image makes, in the API's order: the ID's format, the
/// image's existence, the caller's access to its folder. Get is exactly these checks.
pub(crate) fn get<'s>(
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

/// What Create takes (REST reads it straight from the JSON body).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct NewImage {
    pub(crate) folder_id: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) uri: String,
    pub(crate) labels: BTreeMap<String, String>,
}

/// A new CREATING image; its operation stays running (`done: false`).
pub(crate) fn create(
    store: &mut ImageStore,
    caller: &Caller<'_>,
    new: NewImage,
) -> Result<Operation, ApiError> {
    if new.folder_id.is_empty() {
        return Err(ApiError::invalid("folder_id", "required"));
    }
    if new.uri.is_empty() {
        return Err(ApiError::invalid("uri", "required"));
    }
    caller.require_folder(&new.folder_id)?;
    let image = Image {
        id: new_id(),
        folder_id: new.folder_id,
        name: new.name,
        description: new.description,
        checksum: String::new(),
        status: CREATING.to_owned(),
        created_at: now_timestamp(),
        labels: new.labels,
    };
    let operation = Operation::new(OperationKind::Create, &image.id, caller.token, None);
    store.add_operation(&image.id, operation.clone());
    store.create(image);
    Ok(operation)
}

/// The fields an Update changes, the update mask already applied (`None`: unchanged).
#[derive(Default)]
pub(crate) struct ImageUpdate {
    pub(crate) name: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) labels: Option<BTreeMap<String, String>>,
}

impl ImageUpdate {
    fn apply(self, image: &mut Image) {
        if let Some(name) = self.name {
            image.name = name;
        }
        if let Some(description) = self.description {
            image.description = description;
        }
        if let Some(labels) = self.labels {
            image.labels = labels;
        }
    }
}

/// Changes the image at once; the operation is done and answers the updated image.
pub(crate) fn update(
    store: &mut ImageStore,
    caller: &Caller<'_>,
    id: &str,
    change: ImageUpdate,
) -> Result<Operation, ApiError> {
    let image = get(store, caller, id)?;
    change.apply(image);
    let response = Payload::Image(image.clone());
    let operation = Operation::new(OperationKind::Update, id, caller.token, Some(response));
    store.add_operation(id, operation.clone());
    Ok(operation)
}

/// Removes the image (and its operations) at once; the operation is done.
pub(crate) fn delete(
    store: &mut ImageStore,
    caller: &Caller<'_>,
    id: &str,
) -> Result<Operation, ApiError> {
    get(store, caller, id)?;
    store.remove(id);
    let empty = Some(Payload::Empty {});
    Ok(Operation::new(
        OperationKind::Delete,
        id,
        caller.token,
        empty,
    ))
}

/// What List takes.
pub(crate) struct ListQuery<'a> {
    pub(crate) folder_id: &'a str,
    /// `Some(0)`: the default; `None`: the request's value is no non-negative number.
    pub(crate) page_size: Option<u64>,
    pub(crate) page_token: &'a str,
}

/// A page of the folder's images in ID order, and the next page's token (empty on the last).
pub(crate) fn list(
    store: &mut ImageStore,
    caller: &Caller<'_>,
    query: &ListQuery<'_>,
) -> Result<(Vec<Image>, String), ApiError> {
    if query.folder_id.is_empty() {
        return Err(ApiError::invalid("folder_id", "required"));
    }
    let page_size = match query.page_size {
        Some(0) => DEFAULT_PAGE_SIZE,
        Some(size) if size <= MAX_PAGE_SIZE => size as usize,
        _ => {
            return Err(ApiError::invalid(
                "page_size",
                "must be a number up to 1000",
            ))
        }
    };
    caller.require_folder(query.folder_id)?;
    Ok(store.list(query.folder_id, query.page_token, page_size))
}

/// The image's operations, oldest first, as they were answered (all on one page).
pub(crate) fn list_operations<'s>(
    store: &'s mut ImageStore,
    caller: &Caller<'_>,
    id: &str,
) -> Result<&'s [Operation], ApiError> {
    get(store, caller, id)?;
    Ok(store.operations(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_change_only_the_given_fields() {
        let mut image = Image::ready("ly5a", "f", "old");
        let change = ImageUpdate {
            description: Some("d".into()),
            ..ImageUpdate::default()
        };
        change.apply(&mut image);
        assert_eq!(
            (image.name.as_str(), image.description.as_str()),
            ("old", "d")
        );
    }

    #[test]
    fn unknown_and_missing_tokens_are_unauthenticated() {
        let tokens = HashMap::from([("t1.a".to_owned(), HashSet::new())]);
        assert!(authenticate(&tokens, Some("t1.a")).is_ok());
        for token in [None, Some("t1.b")] {
            let error = authenticate(&tokens, token).err().map(|e| e.code);
            assert_eq!(error, Some(16));
        }
    }
}
