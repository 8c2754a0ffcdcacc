//! What the simulator received: counters per (method, target) and the latest requests.

use std::collections::{BTreeMap, HashMap, VecDeque};

use http::Method;

use super::IMAGES_PATH;

/// How many requests [`Traffic`] keeps for [`crate::Simulator::recorded`].
const RECORDED_MAX: usize = 10_000;

/// One API request as the simulator received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: http::Method,
    /// The raw request target: path and `?query`, undecoded.
    pub target: String,
    pub version: http::Version,
    /// The metadata of a gRPC call.
    pub headers: http::HeaderMap,
    /// The body; of a gRPC call, its one message without the 5-byte prefix (the whole body
    /// when it is not one uncompressed message).
    pub body: bytes::Bytes,
    /// Of a gRPC call, the top-level field numbers in its message that the request type does
    /// not have, in the order sent; empty for REST.
    pub unknown_fields: Vec<u32>,
}

/// Counters and the recent-request log. Every REST count is derived from `by_target`, so
/// the numbers can never disagree; a gRPC Get's image is in its message, not its target,
/// hence the count of its own.
#[derive(Default)]
pub(crate) struct Traffic {
    total: u64,
    by_target: HashMap<(Method, String), u64>,
    grpc_gets: HashMap<String, u64>,
    recent: VecDeque<RecordedRequest>,
}

impl Traffic {
    /// Counts and keeps `request`; `grpc_get` is the image of a gRPC Get.
    pub(crate) fn record(&mut self, request: RecordedRequest, grpc_get: Option<&str>) {
        self.total += 1;
        *self
            .by_target
            .entry((request.method.clone(), request.target.clone()))
            .or_default() += 1;
        if let Some(id) = grpc_get {
            *self.grpc_gets.entry(id.to_owned()).or_default() += 1;
        }
        if self.recent.len() == RECORDED_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back(request);
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Requests with this method (as sent, case-sensitive) and exact raw target.
    pub(crate) fn count(&self, method: &str, target: &str) -> u64 {
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            return 0;
        };
        self.by_target
            .get(&(method, target.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// GET and HEAD requests per image ID, for targets of exactly `/images/{id}`.
    pub(crate) fn image_gets(&self) -> BTreeMap<&str, u64> {
        let mut gets = BTreeMap::new();
        for ((method, target), n) in &self.by_target {
            if let (true, Some(id)) = (is_get(method), image_get_id(target)) {
                *gets.entry(id).or_default() += n;
            }
        }
        gets
    }

    pub(crate) fn image_get_count(&self, id: &str) -> u64 {
        let target = format!("{IMAGES_PATH}/{id}");
        self.count("GET", &target) + self.count("HEAD", &target)
    }

    /// gRPC Get calls per image ID (the `image_id` of their message).
    pub(crate) fn grpc_image_gets(&self) -> BTreeMap<&str, u64> {
        self.grpc_gets
            .iter()
            .map(|(id, n)| (id.as_str(), *n))
            .collect()
    }

    pub(crate) fn grpc_image_get_count(&self, id: &str) -> u64 {
        self.grpc_gets.get(id).copied().unwrap_or(0)
    }

    pub(crate) fn recorded(&self) -> Vec<RecordedRequest> {
        self.recent.iter().cloned().collect()
    }

    pub(crate) fn reset(&mut self) {
        *self = Traffic::default();
    }
}

fn is_get(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// The `{id}` of a target that is exactly `/baremetal/v1alpha/images/{id}`: no further
/// segment, no query.
fn image_get_id(target: &str) -> Option<&str> {
    let id = target.strip_prefix(IMAGES_PATH)?.strip_prefix('/')?;
    (!id.is_empty() && !id.contains(['/', '?'])).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, Version};

    fn record(traffic: &mut Traffic, method: Method, target: &str) {
        let request = RecordedRequest {
            method,
            target: target.to_owned(),
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            unknown_fields: Vec::new(),
        };
        traffic.record(request, None);
    }

    #[test]
    fn counts_are_exact_per_method_and_target() {
        let mut traffic = Traffic::default();
        let get = "/baremetal/v1alpha/images/ly5a";
        record(&mut traffic, Method::GET, get);
        record(&mut traffic, Method::HEAD, get);
        record(
            &mut traffic,
            Method::GET,
            "/baremetal/v1alpha/images/ly5a?x=1",
        );
        record(
            &mut traffic,
            Method::GET,
            "/baremetal/v1alpha/images/ly5a/operations",
        );
        record(&mut traffic, Method::DELETE, get);
        assert_eq!(traffic.total(), 5);
        assert_eq!(traffic.count("GET", get), 1);
        assert_eq!(traffic.count("get", get), 0);
        assert_eq!(traffic.image_get_count("ly5a"), 2);
        assert_eq!(traffic.image_gets(), BTreeMap::from([("ly5a", 2)]));
        let grpc_get = RecordedRequest {
            method: Method::POST,
            target: "/yandex.cloud.baremetal.v1alpha.ImageService/Get".into(),
            ..traffic.recorded()[0].clone()
        };
        traffic.record(grpc_get, Some("ly5a"));
        assert_eq!(
            (
                traffic.image_get_count("ly5a"),
                traffic.grpc_image_get_count("ly5a")
            ),
            (2, 1)
        );
        assert_eq!(traffic.grpc_image_gets(), BTreeMap::from([("ly5a", 1)]));
        traffic.reset();
        assert_eq!((traffic.total(), traffic.recorded().len()), (0, 0));
        assert_eq!(traffic.grpc_image_get_count("ly5a"), 0);
    }

    #[test]
    fn only_the_latest_requests_are_kept() {
        let mut traffic = Traffic::default();
        for i in 0..RECORDED_MAX + 5 {
            record(&mut traffic, Method::GET, &format!("/{i}"));
        }
        let recorded = traffic.recorded();
        assert_eq!(recorded.len(), RECORDED_MAX);
        assert_eq!(recorded[0].target, "/5");
    }
}
