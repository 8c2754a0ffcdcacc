//! Burst scenarios against the release proxy binary: a cold burst of 1,000 concurrent
//! requests for one image, and 100 images x 100 concurrent requests. Prints the upstream
//! requests the simulator saw and the time until the last answer; exits non-zero unless the
//! upstream saw exactly one request per image. Loopback only; used by `bench/run`.
//!
//! Usage: bursts [BINARY=target/release/baremetal-image-cache]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use baremetal_image_cache::sim::{Image, Simulator};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const TOKEN: &str = "t1.burst-bench-token";
const FOLDER: &str = "b1gburstfolder000001";

mod support;
use support::{get_with_token, ProxyProcess};

fn image_id(n: usize) -> String {
    format!("ly5burst{n:012}")
}

/// Fires `per_image` concurrent requests at each of `images`, all at once; returns how many
/// answered 200 and the time until the last answer.
async fn burst(listen: &str, images: &[String], per_image: usize) -> (usize, Duration) {
    // A fresh client, so every request opens its own connection as a fleet's would.
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Full<Bytes>>();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(images.len() * per_image));
    let began = Instant::now();
    let mut tasks = Vec::new();
    for id in images {
        for _ in 0..per_image {
            let (client, start) = (client.clone(), start.clone());
            let url = format!("http://{listen}/baremetal/v1alpha/images/{id}");
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                get_with_token(&client, url, TOKEN).await
            }));
        }
    }
    let mut ok = 0;
    for task in tasks {
        if matches!(task.await, Ok(Some(StatusCode::OK))) {
            ok += 1;
        }
    }
    (ok, began.elapsed())
}

#[tokio::main]
async fn main() -> ExitCode {
    let binary = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/baremetal-image-cache".to_string());
    let sim = Simulator::new();
    sim.add_token(TOKEN, &[FOLDER]);
    for n in 0..101 {
        sim.put_image(Image::ready(&image_id(n), FOLDER, "burst-bench"));
    }
    let Ok(upstream) = sim.clone().spawn().await else {
        eprintln!("bursts: cannot start the simulator");
        return ExitCode::FAILURE;
    };
    // 10,000 clients at once, each on its own connection.
    let proxy =
        match ProxyProcess::start_ready(&binary, upstream, &["--max-connections", "15000"]).await {
            Ok(proxy) => proxy,
            Err(e) => {
                eprintln!("bursts: {e}");
                return ExitCode::FAILURE;
            }
        };
    let listen = proxy.listen.clone();
    let mut passed = true;

    let cold = [image_id(100)];
    let (ok, took) = burst(&listen, &cold, 1000).await;
    let seen = sim.image_get_count(&cold[0]);
    println!("cold burst: 1000 concurrent requests for 1 image: {ok} answered 200, upstream requests {seen}, last answer after {:.1} ms", took.as_secs_f64() * 1000.0);
    passed &= ok == 1000 && seen == 1;

    let images: Vec<String> = (0..100).map(image_id).collect();
    let (ok, took) = burst(&listen, &images, 100).await;
    let seen: u64 = images.iter().map(|id| sim.image_get_count(id)).sum();
    println!("100 images x 100 concurrent: {ok} of 10000 answered 200, upstream requests {seen} (target 100), last answer after {:.1} ms", took.as_secs_f64() * 1000.0);
    passed &= ok == 10_000 && seen == 100;

    drop(proxy);
    if passed {
        ExitCode::SUCCESS
    } else {
        println!("bursts: FAILED");
        ExitCode::FAILURE
    }
}
