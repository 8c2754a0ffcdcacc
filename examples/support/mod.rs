//! What the benchmark and soak programs share: free loopback ports, the proxy binary as a
//! child process, and its resident memory.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// GETs `url` with a Bearer token and reads the whole answer; its status, or `None` if the
/// exchange failed.
pub async fn get_with_token(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: String,
    token: &str,
) -> Option<StatusCode> {
    let request = Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .ok()?;
    let response = client.request(request).await.ok()?;
    let status = response.status();
    response.into_body().collect().await.ok()?;
    Some(status)
}

/// GETs every URL at once (released together by a barrier), each on a connection of its
/// own as separate workers would; returns how many answered 200 and the time until the last
/// answer.
pub async fn burst(urls: Vec<String>, token: &str) -> (usize, std::time::Duration) {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Full<Bytes>>();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(urls.len()));
    let began = std::time::Instant::now();
    let mut tasks = Vec::new();
    for url in urls {
        let (client, start, token) = (client.clone(), start.clone(), token.to_string());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            get_with_token(&client, url, &token).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        if matches!(task.await, Ok(Some(StatusCode::OK))) {
            ok += 1;
        }
    }
    (ok, began.elapsed())
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Resident memory of a process, in KiB (0 if it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The proxy binary running in front of `upstream` on free ports; killed when dropped.
pub struct ProxyProcess {
    child: Child,
    pub listen: String,
    pub admin: String,
}

impl ProxyProcess {
    pub fn start(binary: &str, upstream: SocketAddr, extra: &[&str]) -> io::Result<ProxyProcess> {
        let listen = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let child = Command::new(binary)
            .args(["--listen", &listen, "--admin-listen", &admin])
            .args(["--upstream", &format!("http://{upstream}")])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(ProxyProcess {
            child,
            listen,
            admin,
        })
    }

    /// Starts the proxy and waits until it is ready; the error says what went wrong.
    pub async fn start_ready(
        binary: &str,
        upstream: SocketAddr,
        extra: &[&str],
    ) -> Result<ProxyProcess, String> {
        let proxy = ProxyProcess::start(binary, upstream, extra)
            .map_err(|e| format!("cannot start {binary}: {e}"))?;
        if !proxy.wait_ready().await {
            return Err(format!("{binary} never became ready"));
        }
        Ok(proxy)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (5 s at most) until `/readyz` answers 200.
    pub async fn wait_ready(&self) -> bool {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        for _ in 0..200 {
            let url = format!("http://{}/readyz", self.admin);
            if let Ok(request) = Request::get(url).body(Full::default()) {
                if matches!(client.request(request).await, Ok(r) if r.status() == StatusCode::OK) {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }
}

impl ProxyProcess {
    /// Waits (5 s at most) until the fleet subscription is up (`l2_subscribed` is 1): only
    /// then does the instance take shared values.
    pub async fn wait_listening(&self) -> bool {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        for _ in 0..200 {
            let url = format!("http://{}/metrics", self.admin);
            if let Ok(request) = Request::get(url).body(Full::default()) {
                if let Ok(response) = client.request(request).await {
                    if let Ok(body) = response.into_body().collect().await {
                        let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
                        if text
                            .lines()
                            .any(|l| l == "baremetal_image_cache_l2_subscribed 1")
                        {
                            return true;
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
