//! Burst scenarios against the release proxy binary: a cold burst of 1,000 concurrent
//! requests for one image, 100 images x 100 concurrent requests, and a cold burst of 1,000
//! concurrent gRPC `ImageService.Get` calls for one image (over 8 h2c connections). Prints
//! the upstream requests the simulator saw and the time until the last answer; exits
//! non-zero unless the upstream saw exactly one request per image. Loopback only; used by
//! `bench/run`.
//!
//! Usage: bursts [BINARY=target/release/baremetal-image-cache]
// A load tool: it measures wall time (see .clippy.toml).
#![allow(clippy::disallowed_types)]

use std::process::ExitCode;
use std::time::Duration;

use baremetal_api_sim::grpc::ImageClient;
use baremetal_api_sim::{Image, Simulator};

const TOKEN: &str = "t1.burst-bench-token";
const FOLDER: &str = "b1gburstfolder000001";

mod support;
use support::{burst, ProxyProcess};

fn image_id(n: usize) -> String {
    format!("ly5burst{n:012}")
}

/// Fires `per_image` concurrent requests at each of `images`, all at once; returns how many
/// answered 200 and the time until the last answer.
async fn burst_images(listen: &str, images: &[String], per_image: usize) -> (usize, Duration) {
    let urls = images
        .iter()
        .flat_map(|id| {
            std::iter::repeat_n(
                format!("http://{listen}/baremetal/v1alpha/images/{id}"),
                per_image,
            )
        })
        .collect();
    burst(urls, TOKEN).await
}

/// Fires `n` gRPC Get calls for `id` at once over 8 h2c connections; returns how many
/// answered OK and the time until the last answer.
async fn grpc_burst(listen: &str, id: &str, n: usize) -> (usize, Duration) {
    let mut clients = Vec::new();
    for _ in 0..8 {
        match ImageClient::connect(&format!("http://{listen}")).await {
            Ok(client) => clients.push(client),
            Err(e) => {
                eprintln!("bursts: {e}");
                return (0, Duration::ZERO);
            }
        }
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n + 1));
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let (barrier, id) = (barrier.clone(), id.to_string());
            tokio::spawn(async move {
                barrier.wait().await;
                client.get(&id, Some(TOKEN), &[]).await.is_ok()
            })
        })
        .collect();
    barrier.wait().await;
    let began = std::time::Instant::now();
    let mut ok = 0;
    for call in calls {
        ok += usize::from(matches!(call.await, Ok(true)));
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
    for n in 0..102 {
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
    let (ok, took) = burst_images(&listen, &cold, 1000).await;
    let seen = sim.image_get_count(&cold[0]);
    println!("cold burst: 1000 concurrent requests for 1 image: {ok} answered 200, upstream requests {seen}, last answer after {:.1} ms", took.as_secs_f64() * 1000.0);
    passed &= ok == 1000 && seen == 1;

    let images: Vec<String> = (0..100).map(image_id).collect();
    let (ok, took) = burst_images(&listen, &images, 100).await;
    let seen: u64 = images.iter().map(|id| sim.image_get_count(id)).sum();
    println!("100 images x 100 concurrent: {ok} of 10000 answered 200, upstream requests {seen} (target 100), last answer after {:.1} ms", took.as_secs_f64() * 1000.0);
    passed &= ok == 10_000 && seen == 100;

    let grpc_image = image_id(101);
    let (ok, took) = grpc_burst(&listen, &grpc_image, 1000).await;
    let seen = sim.grpc_image_get_count(&grpc_image);
    println!("cold gRPC burst: 1000 concurrent ImageService.Get calls for 1 image: {ok} answered OK, upstream calls {seen}, last answer after {:.1} ms", took.as_secs_f64() * 1000.0);
    passed &= ok == 1000 && seen == 1;

    drop(proxy);
    if passed {
        ExitCode::SUCCESS
    } else {
        println!("bursts: FAILED");
        ExitCode::FAILURE
    }
}
