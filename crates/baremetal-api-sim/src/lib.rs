//! A simulator of the upstream Yandex Cloud BareMetal images API (`/baremetal/v1alpha/images`
//! over REST, and `yandex.cloud.baremetal.v1alpha.ImageService` over gRPC on the same
//! listener), for integration tests, the README try-it-out and benchmarks of the proxy. It
//! answers like the real API (same JSON, messages, error shapes, headers and ID rules; see
//! `upstream-api/baremetal-v1alpha.md` and `upstream-api/grpc.md`), counts and records what it
//! receives, and misbehaves on demand. The proxy never uses this crate; only its tests, examples and benchmarks, and the
//! `baremetal-api-sim` binary.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use baremetal_api_sim::{Fault, FaultScope, Simulator};
//!
//! let sim = Simulator::demo();
//! let addr = sim.clone().spawn().await?;
//! // The next request fails with 503 and `Retry-After: 1`; later ones are answered normally.
//! sim.set_fault(FaultScope::All, Fault::Status { status: 503, retry_after: Some(1) }, Some(1));
//! // ... point the proxy at http://{addr} and send it requests ...
//! println!("the upstream saw {} Image.Get", sim.image_get_count("ly5alice0ready000001"));
//! # Ok(()) }
//! ```
//!
//! # Demo data ([`Simulator::demo`], and the binary without `--empty`)
//!
//! | Token (`Authorization: Bearer …`) | Folder                 | Images                                                                                                          |
//! |-----------------------------------|------------------------|-----------------------------------------------------------------------------------------------------------------|
//! | `t1.alice-demo-token`             | `b1galicefolder000001` | `ly5alice0ready000001` READY `ubuntu-24-04`, `ly5alice0ready000002` READY `debian-12`, `ly5alice0creating001` CREATING `rocky-9` |
//! | `t1.bob-demo-token`               | `b1gbobfolder00000001` | `ly5bob00ready0000001` READY `bob-golden`                                                                       |
//!
//! Images created through the API turn READY 5 s after creation. The same data is in
//! [`DEMO_TENANTS`] and [`DEMO_READY_AFTER`].
//!
//! # The API
//!
//! Routes match the raw request target, never decoded. Under `/baremetal/v1alpha`:
//! `GET`/`HEAD /images/{id}`, `GET /images?folderId=&pageSize=&pageToken=`, `POST /images`,
//! `PATCH /images/{id}`, `DELETE /images/{id}`, `GET /images/{id}/operations`. An `{id}`
//! segment routes when it is non-empty and made of URL-unreserved characters; anything else
//! (other paths, a trailing slash, `%2F`, `:action`, capitals in the fixed part, other
//! methods) gets `404 {"code":5,"message":"Not Found",...}`, and is still counted and
//! recorded. Image routes check, in this order: the token (401, code 16), the ID (exactly 20
//! of `[a-z][a-z0-9]*`, else 400, code 3), existence (404, code 5), the folder (403, code 7,
//! or 404 with [`Simulator::set_hide_forbidden_as_not_found`]). Every API response is
//! `application/json` with a fresh `x-request-id` and `x-server-trace-id`; error bodies are
//! `{"code":N,"message":"…","details":[{"@type":"type.googleapis.com/google.rpc.RequestInfo","requestId":"<x-request-id>"}]}`.
//! Request bodies are read whole, up to 16 MiB (413 beyond). Operations are stored as
//! they were answered: the create operation of an image stays `"done":false` in
//! `/operations` even after the image turns READY.
//!
//! # Faults
//!
//! [`Simulator::set_fault`] arms one [`Fault`] per [`FaultScope`]; an `Image` scope wins over
//! `All`. A fault takes precedence over normal handling, and faulted requests are counted and
//! recorded like any other. `ResetMidBody` and `SlowDrip` deliver the normal answer (a 200 for
//! a readable image), cut in half or one byte at a time; `WrongId` and `HugeBody` answer with
//! the stored image (or a made-up one) as READY.
//!
//! # gRPC (module [`grpc`])
//!
//! Requests whose `content-type` starts with `application/grpc` (over h2c with prior
//! knowledge, as plaintext gRPC clients connect) go to `ImageService`: the unary `Get`,
//! `List`, `Create`, `Update`, `Delete` and `ListOperations`, over the same tokens
//! (`authorization: Bearer …` metadata), folders, images, operations, `ready_after` and
//! hide-forbidden setting as REST, with the same checks in the same order and each error's
//! gRPC code (16, 3, 5, 7 …) and message. Before those checks, a method or service it does
//! not have is UNIMPLEMENTED (12), answered from the call's head without reading its body (so
//! a streaming call gets it while its body is open; the recorded body is empty), a
//! compressed message too, and a body that is not one
//! message, or a message that does not decode, INTERNAL (13). An answer is `200`,
//! `application/grpc`, `x-request-id`, `x-server-trace-id`, the message, then a
//! `grpc-status: 0` trailer; an error is trailers-only (one HEADERS frame): `grpc-status`,
//! `grpc-message` (percent-encoded) and `grpc-status-details-bin`, a `google.rpc.Status` whose
//! `google.rpc.RequestInfo` carries the `x-request-id`. No `Content-Length`, no compression;
//! `grpc-timeout` is ignored (the client enforces its deadline). Where gRPC differs from REST:
//! `next_page_token` is field 100 (as in the official SDKs); Update without an `update_mask`
//! sets the fields that are not empty; mutations answer an `Operation` whose `metadata` is an
//! `Any` of [`grpc::ImageMetadata`] and whose `response` an `Any` of the `Image` (Update) or
//! of `google.protobuf.Empty` (Delete); a status that is no `Image.Status` name (tests may set
//! any) is sent as `STATUS_UNSPECIFIED`.
//!
//! Every `Image` sent over gRPC (Get, List, an Update's response, fault answers) carries
//! field 50 ([`grpc::SIM_ONLY_FIELD`], in the range reserved for newer fields), a string
//! `sim:<image id>` that no client knows: a cache that replays the bytes it received keeps it,
//! one that re-encodes what it decoded does not ([`grpc::sim_only_field`] reads it). The same
//! image always encodes to the same bytes. The other way, [`RecordedRequest::unknown_fields`]
//! lists the fields of a request message that its type does not have.
//!
//! Calls are counted and recorded like REST requests: method `POST`, the gRPC path as target
//! ([`grpc::GET_PATH`] …), the metadata as headers, the message without its 5-byte prefix as
//! body; [`Simulator::grpc_image_get_count`] counts Gets per `image_id`. Faults apply, the
//! `Image` scope matching the `image_id` of a Get, Update or Delete (as REST's `/images/{id}`
//! path; ListOperations is not matched):
//!
//! | Fault | Over gRPC |
//! |-------|-----------|
//! | `Delay` | the answer, that much later |
//! | `Status` | a trailers-only error with the code of that HTTP status (503 and 502 → UNAVAILABLE 14, 500 → INTERNAL 13, 429 → RESOURCE_EXHAUSTED 8, 504 → DEADLINE_EXCEEDED 4, 401 → 16, 403 → 7, 404 → 5, 400 → 3, others UNKNOWN 2), the reason phrase as message, details as above; `retry_after` as `retry-after` metadata |
//! | `Hang` | no answer on that stream; the connection's other streams go on |
//! | `Reset` | the stream is reset (`RST_STREAM`, INTERNAL_ERROR) before any answer |
//! | `ResetMidBody` | the head and half the framed message (whose prefix announces all of it), then the reset, no `grpc-status`; for an error, the head then the reset |
//! | `Garbage` | `grpc-status: 0` with a message that is no `Image` (field 7 = READY, then a field 1 longer than what follows) |
//! | `WrongId` | a READY `Image` with another valid ID |
//! | `HugeBody(n)` | a valid READY `Image` of exactly `n` bytes (the body is 5 more), its description padded, in 64 KiB frames |
//! | `SlowDrip(d)` | the framed message one byte per `d`, then the trailers (an error is not dripped) |
//!
//! [`grpc::ImageClient`] is a client for tests: typed calls, the raw bytes of an answer, its
//! metadata (headers and trailers) and an error's details.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use baremetal_api_sim::grpc::{self, ImageClient};
//! use baremetal_api_sim::Simulator;
//!
//! let sim = Simulator::demo();
//! let addr = sim.clone().spawn().await?;
//! let mut client = ImageClient::connect(&format!("http://{addr}")).await?;
//! let answer = client.get_raw("ly5alice0ready000001", Some("t1.alice-demo-token"), &[]).await?;
//! assert_eq!(grpc::sim_only_field(answer.get_ref()).as_deref(), Some("sim:ly5alice0ready000001"));
//! assert_eq!(sim.grpc_image_get_count("ly5alice0ready000001"), 1);
//! # Ok(()) }
//! ```
//!
//! # Control API (same listener; not counted, not recorded, never faulted)
//!
//! | Call | Body | Answer |
//! |------|------|--------|
//! | `GET /_sim/stats` | | `200 {"requests":N,"image_get":{"<id>":n,…},"grpc_image_get":{"<id>":n,…}}` |
//! | `POST /_sim/images/{id}/status` | `{"status":"DELETING"}` | `204`, `404` unknown image |
//! | `POST /_sim/fault` | `{"scope":…,"fault":…,"times":…}` | `204` |
//! | `DELETE /_sim/fault` | | `204`, every fault cleared |
//! | `POST /_sim/reset` | | `204`, counters, recorded requests and faults cleared |
//!
//! Errors are `400` (or `404`) with `{"error":"<short message>"}`. In `/_sim/fault`,
//! `"times"` is optional (absent or `null`: until cleared; `0`: disarms that scope), and
//! `"scope"` is `"All"` or `{"Image":"<id>"}`. `"fault"` is one of (durations are humantime
//! strings like `"200ms"`, `"2s"`):
//!
//! ```text
//! {"Delay":"200ms"}        {"Status":{"status":503,"retry_after":2}}   ("retry_after" optional)
//! "Hang"   "Reset"   "ResetMidBody"   "Garbage"   "WrongId"
//! {"HugeBody":67108864}    {"SlowDrip":"50ms"}
//! ```
//!
//! For example: `curl -X POST localhost:9000/_sim/fault -d '{"scope":"All","fault":"Hang","times":1}'`.

mod api;
mod body;
mod control;
mod error;
mod fault;
pub mod grpc;
mod images;
mod model;
mod server;
mod store;
mod traffic;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub use fault::{Fault, FaultScope};
pub use model::Image;
pub use traffic::RecordedRequest;

use fault::Faults;
use store::ImageStore;
use traffic::Traffic;

/// The path of the images collection; every API route is under it.
const IMAGES_PATH: &str = "/baremetal/v1alpha/images";

/// One tenant of the demo data: its token, its folder and the images in it.
pub struct DemoTenant {
    pub token: &'static str,
    pub folder_id: &'static str,
    pub images: &'static [DemoImage],
}

/// An image of the demo data.
pub struct DemoImage {
    pub id: &'static str,
    pub name: &'static str,
    pub status: &'static str,
}

/// The demo data [`Simulator::demo`] loads (the table in the crate docs).
pub const DEMO_TENANTS: &[DemoTenant] = &[
    DemoTenant {
        token: "t1.alice-demo-token",
        folder_id: "b1galicefolder000001",
        images: &[
            DemoImage {
                id: "ly5alice0ready000001",
                name: "ubuntu-24-04",
                status: model::READY,
            },
            DemoImage {
                id: "ly5alice0ready000002",
                name: "debian-12",
                status: model::READY,
            },
            DemoImage {
                id: "ly5alice0creating001",
                name: "rocky-9",
                status: model::CREATING,
            },
        ],
    },
    DemoTenant {
        token: "t1.bob-demo-token",
        folder_id: "b1gbobfolder00000001",
        images: &[DemoImage {
            id: "ly5bob00ready0000001",
            name: "bob-golden",
            status: model::READY,
        }],
    },
];

/// How long images created through the API stay CREATING in the demo.
pub const DEMO_READY_AFTER: Duration = Duration::from_secs(5);

/// A simulated upstream. Clones share the same state, so a test keeps one clone to arrange
/// and inspect while another serves.
#[derive(Clone, Default)]
pub struct Simulator {
    state: Arc<Mutex<State>>,
}

/// Everything the simulator knows, behind one lock (held briefly, never across an await).
#[derive(Default)]
pub(crate) struct State {
    /// Bearer token -> the folders it may read and write.
    tokens: HashMap<String, HashSet<String>>,
    store: ImageStore,
    faults: Faults,
    traffic: Traffic,
    /// Headers added to every API answer (see [`Simulator::set_extra_headers`]).
    extra_headers: Vec<(String, String)>,
}

impl Simulator {
    /// No tokens, no images, no faults.
    pub fn new() -> Simulator {
        Simulator::default()
    }

    /// The demo data of the crate docs ([`DEMO_TENANTS`]); created images turn READY after 5 s.
    pub fn demo() -> Simulator {
        let sim = Simulator::new();
        for tenant in DEMO_TENANTS {
            sim.add_token(tenant.token, &[tenant.folder_id]);
            for demo in tenant.images {
                let mut image = Image::ready(demo.id, tenant.folder_id, demo.name);
                if demo.status != model::READY {
                    image.status = demo.status.to_owned();
                    image.checksum.clear();
                }
                sim.put_image(image);
            }
        }
        sim.set_ready_after(Some(DEMO_READY_AFTER));
        sim
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // A panic elsewhere while holding the lock leaves consistent-enough test data; keep
        // serving rather than poisoning every later request.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }

    /// Allows `token` (sent as `Authorization: Bearer <token>`) to read and write images in
    /// `folders`, in addition to what it could already.
    pub fn add_token(&self, token: &str, folders: &[&str]) {
        self.with_state(|state| {
            let allowed = state.tokens.entry(token.to_owned()).or_default();
            allowed.extend(folders.iter().map(|folder| (*folder).to_owned()));
        });
    }

    /// Forgets `token`: from now on the API answers it 401, as it does an expired token.
    pub fn revoke_token(&self, token: &str) {
        self.with_state(|state| state.tokens.remove(token));
    }

    /// Adds these headers to every API answer from now on (replacing earlier ones), as a
    /// real deployment's gateways and tracers do (`set-cookie`, `server-timing`, echoed
    /// request IDs ...).
    pub fn set_extra_headers(&self, headers: &[(&str, &str)]) {
        let headers = headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        self.with_state(|state| state.extra_headers = headers);
    }

    /// Inserts the image, or replaces the one with its ID.
    pub fn put_image(&self, image: Image) {
        self.with_state(|state| state.store.put(image));
    }

    /// The image as the API would show it now.
    pub fn image(&self, id: &str) -> Option<Image> {
        self.with_state(|state| state.store.get_mut(id).map(|image| image.clone()))
    }

    /// Sets an image's status (any string); `false` if there is no such image.
    pub fn set_status(&self, id: &str, status: &str) -> bool {
        self.with_state(|state| state.store.set_status(id, status))
    }

    /// Images created through the API turn READY this long after creation; `None` (the
    /// default): they stay CREATING until [`Simulator::set_status`].
    pub fn set_ready_after(&self, after: Option<Duration>) {
        self.with_state(|state| state.store.ready_after = after);
    }

    /// Answer 404 instead of 403 for images in folders the token may not read (Yandex does
    /// both).
    pub fn set_hide_forbidden_as_not_found(&self, on: bool) {
        self.with_state(|state| state.store.hide_forbidden = on);
    }

    /// Arms `fault` for `scope`, replacing the fault armed there. `times`: only the next N
    /// matching requests (`Some(0)` disarms the scope); `None`: until cleared.
    pub fn set_fault(&self, scope: FaultScope, fault: Fault, times: Option<u32>) {
        self.with_state(|state| state.faults.set(scope, fault, times));
    }

    pub fn clear_faults(&self) {
        self.with_state(|state| state.faults.clear());
    }

    /// Every API request received, faulted ones included (control calls are not).
    pub fn request_count(&self) -> u64 {
        self.with_state(|state| state.traffic.total())
    }

    /// Requests with this method and this exact raw target (path and `?query` as received).
    pub fn count(&self, method: &str, target: &str) -> u64 {
        self.with_state(|state| state.traffic.count(method, target))
    }

    /// `GET` and `HEAD` requests on exactly `/baremetal/v1alpha/images/{id}` (no query).
    pub fn image_get_count(&self, id: &str) -> u64 {
        self.with_state(|state| state.traffic.image_get_count(id))
    }

    /// gRPC `ImageService/Get` calls whose message asks for image `id`.
    pub fn grpc_image_get_count(&self, id: &str) -> u64 {
        self.with_state(|state| state.traffic.grpc_image_get_count(id))
    }

    /// The last 10 000 API requests, oldest first.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.with_state(|state| state.traffic.recorded())
    }

    /// Zeroes every counter and forgets the recorded requests.
    pub fn reset_counts(&self) {
        self.with_state(|state| state.traffic.reset());
    }

    /// Serves HTTP/1.1 and h2c (prior knowledge) on `listener` until `shutdown` resolves;
    /// then stops accepting, ends every connection (hung requests too) and returns.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        server::serve(self, listener, shutdown).await
    }

    /// Serves on a fresh `127.0.0.1` port in a background task for as long as the runtime
    /// lives, and returns the address.
    pub async fn spawn(self) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(self.serve(listener, std::future::pending()));
        Ok(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_data_matches_the_docs() {
        let sim = Simulator::demo();
        let image = sim.image("ly5alice0ready000001").unwrap();
        assert_eq!(
            (
                image.folder_id.as_str(),
                image.name.as_str(),
                image.status.as_str()
            ),
            ("b1galicefolder000001", "ubuntu-24-04", "READY")
        );
        let creating = sim.image("ly5alice0creating001").unwrap();
        assert_eq!(
            (creating.status.as_str(), creating.checksum.as_str()),
            ("CREATING", "")
        );
        assert_eq!(
            sim.image("ly5bob00ready0000001").unwrap().folder_id,
            "b1gbobfolder00000001"
        );
        for tenant in DEMO_TENANTS {
            assert!(tenant
                .images
                .iter()
                .all(|image| model::is_valid_image_id(image.id)));
        }
    }

    #[test]
    fn set_status_reports_unknown_images() {
        let sim = Simulator::demo();
        assert!(sim.set_status("ly5alice0creating001", "READY"));
        assert_eq!(sim.image("ly5alice0creating001").unwrap().status, "READY");
        assert!(!sim.set_status("ly5nosuchimage000001", "READY"));
    }
}
