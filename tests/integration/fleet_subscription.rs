//! The fleet subscription as an operator reads it in the binary's log: an instance that
//! cannot subscribe warns once, and once its subscription is up says so once, at info, so
//! the warning is never the last word; an instance that subscribes at once says neither.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use http::{Request, StatusCode};

use crate::support::redis_server::RedisServer;
use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_baremetal-image-cache");

const CANNOT_SUBSCRIBE: &str = "cannot subscribe to the fleet";
const RECOVERED: &str = "the fleet subscription has recovered";

/// The binary with `--redis`, and what it has logged so far.
struct Instance {
    child: std::process::Child,
    admin: String,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Instance {
    /// Starts the binary against `upstream` with the fleet tier on `redis_url`, and waits
    /// until it is ready (which does not wait for Redis).
    async fn start(upstream: &str, redis_url: &str) -> Instance {
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port")
        };
        let admin = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(BIN)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--admin-listen", &admin, "--upstream", upstream])
            .args(["--redis", redis_url])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let reader = std::thread::spawn({
            let lines = lines.clone();
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            }
        });
        let instance = Instance {
            child,
            admin,
            lines,
            reader: Some(reader),
        };
        instance.until_metric("l2_subscribed", None).await;
        instance
    }

    /// The lines logged so far that contain `text`.
    fn logged(&self, text: &str) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| l.contains(text)).cloned().collect()
    }

    /// Waits until a line containing `text` has been logged, and returns it.
    async fn until_logged(&self, text: &str) -> String {
        eventually(&format!("the proxy logs {text:?}"), || async move {
            self.logged(text)
                .into_iter()
                .next()
                .ok_or_else(|| format!("its log so far: {:?}", self.lines.lock().unwrap()))
        })
        .await
    }

    /// Waits until the metric `baremetal_image_cache_{name}` is scraped (at `value`, if given).
    async fn until_metric(&self, name: &str, value: Option<f64>) {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        let series = format!("{P}_{name}");
        eventually(&format!("{series} is {value:?}"), || {
            let request = Request::get(format!("http://{}/metrics", self.admin))
                .body(Default::default())
                .unwrap();
            let answer = client.request(request);
            let series = series.clone();
            async move {
                let answer = answer.await.map_err(|e| format!("/metrics: {e}"))?;
                if answer.status() != StatusCode::OK {
                    return Err(format!("/metrics answered {}", answer.status()));
                }
                let body = http_body_util::BodyExt::collect(answer.into_body())
                    .await
                    .map_err(|e| format!("/metrics body: {e}"))?
                    .to_bytes();
                let text = String::from_utf8_lossy(&body);
                let seen = text
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{series} ")))
                    .map(|v| v.parse::<f64>().unwrap());
                match (seen, value) {
                    (Some(seen), Some(value)) if seen == value => Ok(()),
                    (Some(_), None) => Ok(()),
                    _ => Err(format!("scraped {seen:?}")),
                }
            }
        })
        .await
    }

    /// Stops the binary (SIGTERM), waits for it, and returns everything it logged.
    fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let lines = self.lines.lock().unwrap().clone();
        lines
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_could_not_subscribe_says_once_that_it_has_recovered() {
    // A port of our own with nothing on it: the server is started, then killed.
    let mut redis = RedisServer::start().await;
    redis.kill();
    let upstream = simulator().spawn().await.unwrap();
    let proxy = Instance::start(&format!("http://{upstream}"), &redis.url()).await;
    proxy.until_logged(CANNOT_SUBSCRIBE).await;
    proxy.until_metric("l2_subscribed", Some(0.0)).await;
    assert!(proxy.logged(RECOVERED).is_empty(), "not up yet");

    redis.restart().await;
    let recovered = proxy.until_logged(RECOVERED).await;
    proxy.until_metric("l2_subscribed", Some(1.0)).await;
    let failed: u32 = recovered
        .split("failed_attempts=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the line names its failed attempts: {recovered}"));
    assert!(failed >= 1, "{recovered}");
    assert!(recovered.contains("INFO"), "logged at info: {recovered}");

    let lines = proxy.stop();
    let count = |text: &str| lines.iter().filter(|l| l.contains(text)).count();
    assert_eq!(
        count(CANNOT_SUBSCRIBE),
        1,
        "one warning per streak: {lines:#?}"
    );
    assert_eq!(count(RECOVERED), 1, "one recovery line: {lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_subscribes_at_once_says_nothing_about_it() {
    let redis = RedisServer::start().await;
    let upstream = simulator().spawn().await.unwrap();
    let proxy = Instance::start(&format!("http://{upstream}"), &redis.url()).await;
    proxy.until_metric("l2_subscribed", Some(1.0)).await;

    let lines = proxy.stop();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(CANNOT_SUBSCRIBE) || l.contains(RECOVERED)),
        "{lines:#?}"
    );
}
