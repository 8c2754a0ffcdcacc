//! Burst scenarios against the release proxy binary: a cold burst of 1,000 concurrent
//! requests for one image, and 100 images x 100 concurrent requests. Prints the upstream
//! requests the simulator saw and the time until the last answer; exits non-zero unless the
//! upstream saw exactly one request per image. Loopback only; used by `bench/run`.
//!
//! Usage: bursts [BINARY=target/release/baremetal-image-cache]
// A load tool: it measures wall time (see .clippy.toml).
#![allow(clippy::disallowed_types)]

use std::process::ExitCode;
use std::time::Duration;

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
    let (ok, took) = burst_images(&listen, &cold, 1000).await;
    let seen = sim.image_get_count(&cold[0]);
    println!("cold burst: 1000 concurrent requests for 1 image: {ok} answered 200, upstream requests {seen}, last answer after {:.1} ms", took.as_secs_f64() * 1000.0);
    passed &= ok == 1000 && seen == 1;

    let images: Vec<String> = (0..100).map(image_id).collect();
    let (ok, took) = burst_images(&listen, &images, 100).await;
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
