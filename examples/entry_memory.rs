//! Memory per cached entry: the release proxy binary fills its cache with N distinct images
//! (one tenant, so one grant each) and the growth of its resident set is divided by N and
//! compared with the body size. Loopback only; used by `bench/run`.
//!
//! Usage: entry_memory [N=100000] [BINARY=target/release/baremetal-image-cache]
// A load tool: it measures wall time (see .clippy.toml).
#![allow(clippy::disallowed_types)]

use std::process::ExitCode;
use std::time::Duration;

use baremetal_api_sim::{Image, Simulator};
use bytes::Bytes;

use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const TOKEN: &str = "t1.memory-bench-token";
const FOLDER: &str = "b1gmemoryfolder00001";
const WORKERS: usize = 32;

mod support;
use support::{get_with_token, rss_kib, ProxyProcess};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let binary = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "target/release/baremetal-image-cache".to_string());
    let sim = Simulator::new();
    sim.add_token(TOKEN, &[FOLDER]);
    let ids: Vec<String> = (0..n).map(|i| format!("ly5mem{i:014}")).collect();
    for id in &ids {
        sim.put_image(Image::ready(id, FOLDER, "memory-bench"));
    }
    let body_len = serde_json::to_vec(&sim.image(&ids[0]).expect("image")).map_or(0, |b| b.len());
    let Ok(upstream) = sim.clone().spawn().await else {
        eprintln!("entry_memory: cannot start the simulator");
        return ExitCode::FAILURE;
    };
    let proxy = match ProxyProcess::start_ready(
        &binary,
        upstream,
        &[
            "--max-capacity",
            "4GiB",
            "--ttl",
            "1h",
            "--refresh-ahead",
            "0%",
        ],
    )
    .await
    {
        Ok(proxy) => proxy,
        Err(e) => {
            eprintln!("entry_memory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pid = proxy.pid();
    let listen = proxy.listen.clone();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let get = move |url: String| {
        let client = client.clone();
        async move { get_with_token(&client, url, TOKEN).await }
    };
    // Warm the connection pools and allocator with a first, small batch before the baseline.
    let warm = 1000.min(n);
    for id in &ids[..warm] {
        get(format!("http://{listen}/baremetal/v1alpha/images/{id}")).await;
    }
    let before = rss_kib(pid);
    let chunks: Vec<Vec<String>> = ids[warm..]
        .chunks(ids.len().div_ceil(WORKERS).max(1))
        .map(<[String]>::to_vec)
        .collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let get = get.clone();
        let listen = listen.clone();
        tasks.push(tokio::spawn(async move {
            let mut failed = 0;
            for id in chunk {
                if get(format!("http://{listen}/baremetal/v1alpha/images/{id}")).await
                    != Some(http::StatusCode::OK)
                {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await.unwrap_or(1);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    let filled = (n - warm) as f64;
    let per_entry = (after.saturating_sub(before) as f64 * 1024.0) / filled;
    println!(
        "entries={} body={body_len}B rss_before={:.1}MiB rss_after={:.1}MiB per_entry={per_entry:.0}B overhead={:.0}B failed={failed}",
        n,
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        per_entry - body_len as f64
    );
    drop(proxy);
    ExitCode::SUCCESS
}
