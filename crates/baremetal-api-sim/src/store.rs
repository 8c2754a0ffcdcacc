//! The images the simulator holds, the operations run on them, and the clock that turns
//! created images READY.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::time::Duration;

use tokio::time::Instant;

use super::model::{checksum, Image, Operation, READY};

/// Images by ID (ordered, which gives List its `id asc` order for free) and their operations.
#[derive(Default)]
pub(crate) struct ImageStore {
    images: BTreeMap<String, StoredImage>,
    operations: HashMap<String, Vec<Operation>>,
    /// How long a created image stays CREATING; `None`: until a test sets its status.
    pub(crate) ready_after: Option<Duration>,
    /// Answer 404 rather than 403 for images of folders the caller may not read.
    pub(crate) hide_forbidden: bool,
}

struct StoredImage {
    image: Image,
    /// When a created image turns READY. Applied lazily on every read, so no timer task.
    ready_at: Option<Instant>,
}

impl StoredImage {
    fn settle(&mut self) {
        if self.ready_at.is_some_and(|at| at <= Instant::now()) {
            self.set_status(READY);
        }
    }

    /// An explicit status, which ends any pending change. An image that becomes READY gets
    /// its checksum, as the upstream computes it once the upload is done.
    fn set_status(&mut self, status: &str) {
        self.ready_at = None;
        self.image.status = status.to_owned();
        if status == READY && self.image.checksum.is_empty() {
            self.image.checksum = checksum(&self.image.id);
        }
    }
}

impl ImageStore {
    /// Inserts or replaces an image as it is, with no pending status change.
    pub(crate) fn put(&mut self, image: Image) {
        self.insert(image, None);
    }

    /// Inserts a newly created image that turns READY after `ready_after`, if set.
    pub(crate) fn create(&mut self, image: Image) {
        let ready_at = self.ready_after.map(|after| Instant::now() + after);
        self.insert(image, ready_at);
    }

    fn insert(&mut self, image: Image, ready_at: Option<Instant>) {
        self.images
            .insert(image.id.clone(), StoredImage { image, ready_at });
    }

    /// The image as it is now (a created image may have turned READY since the last read).
    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut Image> {
        let stored = self.images.get_mut(id)?;
        stored.settle();
        Some(&mut stored.image)
    }

    /// Sets the status explicitly; it then no longer changes by itself.
    pub(crate) fn set_status(&mut self, id: &str, status: &str) -> bool {
        let Some(stored) = self.images.get_mut(id) else {
            return false;
        };
        stored.set_status(status);
        true
    }

    /// Removes an image together with its operations.
    pub(crate) fn remove(&mut self, id: &str) {
        self.images.remove(id);
        self.operations.remove(id);
    }

    /// Up to `limit` images of `folder_id` with IDs after `after` (all when empty), and the
    /// token of the next page (empty on the last page).
    pub(crate) fn list(
        &mut self,
        folder_id: &str,
        after: &str,
        limit: usize,
    ) -> (Vec<Image>, String) {
        let start = match after {
            "" => Bound::Unbounded,
            after => Bound::Excluded(after),
        };
        let mut page = Vec::new();
        for stored in self
            .images
            .range_mut::<str, _>((start, Bound::Unbounded))
            .map(|(_, s)| s)
        {
            if stored.image.folder_id != folder_id {
                continue;
            }
            if page.len() == limit {
                let next = page
                    .last()
                    .map(|i: &Image| i.id.clone())
                    .unwrap_or_default();
                return (page, next);
            }
            stored.settle();
            page.push(stored.image.clone());
        }
        (page, String::new())
    }

    pub(crate) fn add_operation(&mut self, image_id: &str, operation: Operation) {
        self.operations
            .entry(image_id.to_owned())
            .or_default()
            .push(operation);
    }

    pub(crate) fn operations(&self, image_id: &str) -> &[Operation] {
        self.operations.get(image_id).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CREATING;

    fn creating(id: &str) -> Image {
        Image {
            status: CREATING.to_owned(),
            checksum: String::new(),
            ..Image::ready(id, "folder", "name")
        }
    }

    #[test]
    fn created_images_turn_ready_after_the_delay() {
        let mut store = ImageStore {
            ready_after: Some(Duration::ZERO),
            ..ImageStore::default()
        };
        store.create(creating("ly5created0000000001"));
        let image = store.get_mut("ly5created0000000001").unwrap();
        assert_eq!(image.status, READY);
        assert_eq!(image.checksum.len(), 32);
    }

    #[test]
    fn created_images_stay_creating_without_a_delay() {
        let mut store = ImageStore::default();
        store.create(creating("ly5created0000000001"));
        assert_eq!(
            store.get_mut("ly5created0000000001").unwrap().status,
            CREATING
        );
    }

    #[test]
    fn list_pages_by_id_within_the_folder() {
        let mut store = ImageStore::default();
        for id in ["ly5a", "ly5b", "ly5c", "ly5d"] {
            store.put(Image::ready(id, "folder", "n"));
        }
        store.put(Image::ready("ly5bb", "other", "n"));
        let ids = |page: &[Image]| page.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
        let (page, next) = store.list("folder", "", 2);
        assert_eq!(
            (ids(&page), next.as_str()),
            (vec!["ly5a".into(), "ly5b".into()], "ly5b")
        );
        let (page, next) = store.list("folder", &next, 2);
        assert_eq!(
            (ids(&page), next.as_str()),
            (vec!["ly5c".into(), "ly5d".into()], "")
        );
    }
}
