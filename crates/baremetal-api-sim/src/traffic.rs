//! What the simulator received: counters per (method, target) and the latest requests.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use http::{HeaderMap, Method, Version};

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
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

/// Counters and the recent-request log. Every other count is derived from `by_target`, so
/// the numbers can never disagree.
#[derive(Default)]
pub(crate) struct Traffic {
    total: u64,
    by_target: HashMap<(Method, String), u64>,
    recent: VecDeque<RecordedRequest>,
}

impl Traffic {
    pub(crate) fn record(
        &mut self,
        method: &Method,
        target: &str,
        version: Version,
        headers: &HeaderMap,
        body: Bytes,
    ) {
        self.total += 1;
        *self
            .by_target
            .entry((method.clone(), target.to_owned()))
            .or_default() += 1;
        if self.recent.len() == RECORDED_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back(RecordedRequest {
            method: method.clone(),
            target: target.to_owned(),
            version,
            headers: headers.clone(),
            body,
        });
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

    fn record(traffic: &mut Traffic, method: Method, target: &str) {
        traffic.record(
            &method,
            target,
            Version::HTTP_11,
            &HeaderMap::new(),
            Bytes::new(),
        );
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
        traffic.reset();
        assert_eq!((traffic.total(), traffic.recorded().len()), (0, 0));
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
