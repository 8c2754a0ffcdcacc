//! What the test modules share: the real proxy (`baremetal_image_cache::run`) on
//! `127.0.0.1:0` in front of the upstream simulator, a small HTTP client, gRPC clients
//! ([`grpc`]), metric scrapes, the one way to wait for what a test cannot await
//! ([`eventually`]), real `redis-server` processes ([`redis_server`]) and fleets of proxies
//! sharing one ([`fleet`]).

mod eventually;
pub mod fleet;
pub mod grpc;
pub mod redis_server;

pub use eventually::{eventually, try_eventually};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use baremetal_api_sim::{Image, Simulator};
use baremetal_image_cache::config::{AuthMode, Config, UpstreamUrl};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ALICE: &str = "t1.alice-test-token";
pub const ALICE2: &str = "t1.alice-second-token";
pub const BOB: &str = "t1.bob-test-token";
pub const FORGED: &str = "t1.forged-token";
pub const ALICE_FOLDER: &str = "b1galicefolder000001";
pub const BOB_FOLDER: &str = "b1gbobfolder00000001";
/// Alice's READY image.
pub const IMG: &str = "ly5test0ready0000001";
/// A second READY image of Alice's.
pub const IMG2: &str = "ly5test0ready0000002";
/// Bob's READY image.
pub const BOB_IMG: &str = "ly5test0bobimage0001";
/// An ID nobody has.
pub const MISSING: &str = "ly5test0missing00001";

pub fn image_path(id: &str) -> String {
    format!("/baremetal/v1alpha/images/{id}")
}

/// A simulator with two tenants, Alice (two tokens) and Bob.
pub fn simulator() -> Simulator {
    let sim = Simulator::new();
    sim.add_token(ALICE, &[ALICE_FOLDER]);
    sim.add_token(ALICE2, &[ALICE_FOLDER]);
    sim.add_token(BOB, &[BOB_FOLDER]);
    sim.put_image(Image::ready(IMG, ALICE_FOLDER, "ubuntu-24-04"));
    sim.put_image(Image::ready(IMG2, ALICE_FOLDER, "debian-12"));
    sim.put_image(Image::ready(BOB_IMG, BOB_FOLDER, "bob-golden"));
    sim
}

pub struct Harness {
    pub sim: Simulator,
    pub upstream: String,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub client: Client<HttpConnector, Full<Bytes>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn x_cache(&self) -> &str {
        self.header("x-cache").unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A config for tests: everything default but what a test changes.
pub fn test_config() -> Config {
    Config {
        upstream_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

/// The fault tests' configuration: [`test_config`] without stale-if-error (a failure is
/// seen as such), then `change`.
pub fn fault_config(change: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config {
        stale_if_error: Duration::ZERO,
        ..test_config()
    };
    change(&mut config);
    config
}

pub fn shared_config() -> Config {
    Config {
        auth_mode: AuthMode::Shared,
        ..test_config()
    }
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(simulator(), test_config()).await
    }

    pub async fn with_config(config: Config) -> Harness {
        Harness::start_with(simulator(), config).await
    }

    pub async fn start_with(sim: Simulator, config: Config) -> Harness {
        let upstream = sim.clone().spawn().await.expect("simulator starts");
        Harness::start_against(sim, &format!("http://{upstream}"), config).await
    }

    /// The proxy in front of `upstream_url` (which need not be the simulator's).
    pub async fn start_against(sim: Simulator, upstream_url: &str, mut config: Config) -> Harness {
        config.upstream = UpstreamUrl::parse(upstream_url).expect("upstream URL");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            baremetal_image_cache::run(config, listener, admin_listener, async {
                let _ = rx.await;
            })
            .await
            .expect("proxy runs");
        });
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .build_http();
        Harness {
            sim,
            upstream: upstream_url.trim_start_matches("http://").to_string(),
            addr,
            admin,
            client,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// The `host:port` of the upstream the proxy talks to.
    pub fn sim_authority(&self) -> String {
        self.upstream.clone()
    }

    pub async fn send(&self, request: Request<Full<Bytes>>) -> Reply {
        send(&self.client, request).await
    }

    /// GET (or another method without a body) on the proxy with an optional token.
    pub async fn call(
        &self,
        method: Method,
        target: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Reply {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, target));
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in extra {
            builder = builder.header(*name, *value);
        }
        self.send(builder.body(Full::new(Bytes::new())).unwrap())
            .await
    }

    pub async fn get(&self, id: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, &image_path(id), token, &[]).await
    }

    /// GET of an image with `Cache-Control: no-cache`: a fresh answer, whatever is cached.
    pub async fn get_fresh(&self, id: &str, token: Option<&str>) -> Reply {
        self.call(
            Method::GET,
            &image_path(id),
            token,
            &[("cache-control", "no-cache")],
        )
        .await
    }

    pub async fn admin(&self, method: Method, path: &str) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.admin, path))
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.send(request).await
    }

    /// Waits until the simulator has seen `n` requests (by its own counter).
    pub async fn until_upstream_saw(&self, n: u64) {
        let sim = &self.sim;
        eventually(&format!("the upstream sees {n} requests"), || async move {
            match sim.request_count() {
                seen if seen >= n => Ok(()),
                seen => Err(format!("it saw {seen}")),
            }
        })
        .await
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(40), task)
                .await
                .expect("proxy stops")
                .expect("proxy task");
        }
    }
}

/// Starts `h.get(id, token)` in its own task, for requests that must be in flight together.
pub fn spawn_get(h: &Arc<Harness>, id: &str, token: Option<&str>) -> JoinHandle<Reply> {
    let (h, id, token) = (h.clone(), id.to_string(), token.map(str::to_string));
    tokio::spawn(async move { h.get(&id, token.as_deref()).await })
}

pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Reply {
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .expect("answer within 30s")
        .expect("request succeeds");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// The image's JSON as the simulator serves it.
pub fn expected_body(sim: &Simulator, id: &str) -> serde_json::Value {
    serde_json::to_value(sim.image(id).expect("image exists")).unwrap()
}

/// Proptest's settings with `cases` cases. A failing case is kept in a file beside the test
/// module (`request_properties.rs` -> `request_properties.proptest-regressions`) and tried
/// first from then on; proptest's default would look for it under `tests/proptest-regressions/`
/// instead, because `main.rs` sits beside the modules.
pub fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// The metric name prefix.
pub const P: &str = "baremetal_image_cache";

/// A scrape: `name{labels}` (labels sorted as the encoder writes them) to value.
pub struct Scrape(pub BTreeMap<String, f64>);

impl Scrape {
    pub async fn take(h: &Harness) -> Scrape {
        let reply = h.admin(Method::GET, "/metrics").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        let text = String::from_utf8(reply.body.to_vec()).unwrap();
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').unwrap();
            samples.insert(series.to_string(), value.parse().unwrap());
        }
        Scrape(samples)
    }

    pub fn get(&self, series: &str) -> f64 {
        *self
            .0
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in the scrape"))
    }

    /// Metric names (without labels) in the scrape.
    pub fn names(&self) -> BTreeSet<String> {
        self.0
            .keys()
            .map(|k| k.split('{').next().unwrap().to_string())
            .collect()
    }
}
