//! The fleet scenario: three instances of the release proxy binary sharing one
//! `redis-server` (started here on a free loopback port), in per-credential mode with a grant
//! key, and 300 concurrent requests per image spread over the three, for 10 cold images at
//! once. Prints the upstream requests the simulator saw and the time until the last answer;
//! exits non-zero unless every request was answered 200 and each image cost exactly one
//! upstream request. Used by `bench/run`.
//!
//! Usage: fleet_burst [BINARY=target/release/baremetal-image-cache]
// A load tool: it measures wall time (see .clippy.toml).
#![allow(clippy::disallowed_types)]

use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use baremetal_api_sim::{Image, Simulator};

const TOKEN: &str = "t1.fleet-bench-token";
const FOLDER: &str = "b1gfleetfolder000001";
const GRANT_KEY: &str = "fleet-bench-grant-key-0123456789abcdef";
const INSTANCES: usize = 3;
const IMAGES: usize = 10;
const PER_IMAGE: usize = 300;

mod support;
use support::{burst, free_port, ProxyProcess};

/// `redis-server` on a free port, killed when dropped.
struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_redis() -> Result<(Redis, String), String> {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run redis-server ({e}); apt-get install redis-server"))?;
    let redis = Redis(child);
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok((redis, format!("redis://127.0.0.1:{port}/")));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err("redis-server did not start".to_string())
}

/// Runs the burst against `INSTANCES` fresh proxies (sharing `redis_url` if given) for
/// images with the ID prefix `prefix`; returns (answered 200, upstream requests per image,
/// time until the last answer).
async fn scenario(
    binary: &str,
    sim: &Simulator,
    upstream: std::net::SocketAddr,
    prefix: &str,
    redis_url: Option<&str>,
) -> Result<(usize, Vec<u64>, Duration), String> {
    let ids: Vec<String> = (0..IMAGES).map(|n| format!("{prefix}{n:012}")).collect();
    for id in &ids {
        sim.put_image(Image::ready(id, FOLDER, "fleet-bench"));
    }
    let mut args = vec!["--max-connections", "15000"];
    if let Some(url) = redis_url {
        args.extend(["--redis", url, "--redis-grant-key", GRANT_KEY]);
    }
    let mut proxies = Vec::new();
    for _ in 0..INSTANCES {
        proxies.push(ProxyProcess::start_ready(binary, upstream, &args).await?);
    }
    if redis_url.is_some() {
        for proxy in &proxies {
            if !proxy.wait_listening().await {
                return Err("an instance never subscribed to the fleet".to_string());
            }
        }
    }
    let mut urls = Vec::new();
    for id in &ids {
        for n in 0..PER_IMAGE {
            let listen = &proxies[n % INSTANCES].listen;
            urls.push(format!("http://{listen}/baremetal/v1alpha/images/{id}"));
        }
    }
    // Each request on a connection of its own, as separate provisioning workers would.
    let (ok, took) = burst(urls, TOKEN).await;
    Ok((
        ok,
        ids.iter().map(|id| sim.image_get_count(id)).collect(),
        took,
    ))
}

#[tokio::main]
async fn main() -> ExitCode {
    let binary = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/baremetal-image-cache".to_string());
    let (_redis, redis_url) = match start_redis().await {
        Ok(started) => started,
        Err(e) => {
            eprintln!("fleet_burst: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sim = Simulator::new();
    sim.add_token(TOKEN, &[FOLDER]);
    let Ok(upstream) = sim.clone().spawn().await else {
        eprintln!("fleet_burst: cannot start the simulator");
        return ExitCode::FAILURE;
    };
    let total = IMAGES * PER_IMAGE;
    // The same burst without the tier first: what the fleet would cost the API without it.
    match scenario(&binary, &sim, upstream, "ly5alone", None).await {
        Ok((ok, seen, took)) => println!(
            "fleet without redis: {INSTANCES} instances, {IMAGES} images x {PER_IMAGE} concurrent: {ok} of {total} answered 200, upstream requests {}, last answer after {:.1} ms",
            seen.iter().sum::<u64>(),
            took.as_secs_f64() * 1000.0
        ),
        Err(e) => {
            eprintln!("fleet_burst: {e}");
            return ExitCode::FAILURE;
        }
    }
    let (ok, seen, took) =
        match scenario(&binary, &sim, upstream, "ly5fleet", Some(&redis_url)).await {
            Ok(result) => result,
            Err(e) => {
                eprintln!("fleet_burst: {e}");
                return ExitCode::FAILURE;
            }
        };
    println!(
        "fleet with redis: {INSTANCES} instances, {IMAGES} images x {PER_IMAGE} concurrent (spread over the instances): {ok} of {total} answered 200, upstream requests {} (target {IMAGES}; per image {seen:?}), last answer after {:.1} ms",
        seen.iter().sum::<u64>(),
        took.as_secs_f64() * 1000.0
    );
    if ok == total && seen.iter().all(|&n| n == 1) {
        ExitCode::SUCCESS
    } else {
        println!("fleet_burst: FAILED");
        ExitCode::FAILURE
    }
}
