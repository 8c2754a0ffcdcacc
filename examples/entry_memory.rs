//! Memory per cached entry: the release proxy binary fills its cache with N distinct images
//! (one tenant, so one grant each) and the growth of its resident set is divided by N and
//! compared with the body size. Loopback only; used by `bench/run`.
//!
//! Usage: entry_memory [N=100000] [BINARY=target/release/baremetal-image-cache]

use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use baremetal_image_cache::sim::{Image, Simulator};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const TOKEN: &str = "t1.memory-bench-token";
const FOLDER: &str = "b1gmemoryfolder00001";
const WORKERS: usize = 32;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

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
    let (listen, admin) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let Ok(mut child) = Command::new(&binary)
        .args([
            "--listen",
            &listen,
            "--admin-listen",
            &admin,
            "--upstream",
            &format!("http://{upstream}"),
        ])
        .args([
            "--max-capacity",
            "4GiB",
            "--ttl",
            "1h",
            "--refresh-ahead",
            "0%",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        eprintln!("entry_memory: cannot start {binary}");
        return ExitCode::FAILURE;
    };
    let pid = child.id();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let get = move |path: String| {
        let client = client.clone();
        async move {
            let request = Request::get(path)
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Full::default())
                .ok()?;
            let response = client.request(request).await.ok()?;
            let status = response.status();
            response.into_body().collect().await.ok()?;
            Some(status)
        }
    };
    for _ in 0..200 {
        if get(format!("http://{admin}/readyz")).await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
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
    let _ = child.kill();
    let _ = child.wait();
    ExitCode::SUCCESS
}
