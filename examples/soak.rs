//! Soak test: the release proxy binary under mixed traffic for a bounded time, with upstream
//! faults switched on and off, many credentials and 100,000 image IDs. Loopback only.
//!
//! Every answer is checked against what the simulator would say: a tenant's own image must
//! be that image (never another tenant's), a foreign image must be refused, a forged token
//! must be refused; while a fault is on, the API's error answers (or a STALE copy of the
//! right image) are accepted too. It prints RSS over time, answer and error counts, and the
//! upstream requests per image, and exits non-zero if any answer was wrong or memory grew
//! past `--max-capacity` plus a fixed overhead.
//!
//! Run it with `bench/soak` (which builds the release binaries first).
// A load tool: it measures wall time (see .clippy.toml).
#![allow(clippy::disallowed_types)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baremetal_api_sim::{Fault, FaultScope, Image, Simulator};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TENANTS: usize = 20;
const IMAGES: usize = 100_000;
const HOT: usize = 200;
const WORKERS: usize = 48;
const CAPACITY_MIB: u64 = 32;
/// Runtime, allocator slack, connection buffers, metrics: what the process may use beyond
/// the cache's own bound.
const FIXED_OVERHEAD_MIB: u64 = 96;

mod support;
use support::{rss_kib, ProxyProcess};

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    refused: AtomicU64,
    upstream_errors: AtomicU64,
    stale: AtomicU64,
    hits: AtomicU64,
    wrong: AtomicU64,
}

fn token(tenant: usize) -> String {
    format!("t1.soak-tenant-{tenant:02}")
}

fn folder(tenant: usize) -> String {
    format!("b1gsoakfolder{tenant:07}")
}

fn image_id(n: usize) -> String {
    format!("ly5soak{n:013}")
}

fn owner(n: usize) -> usize {
    n % TENANTS
}

fn rss_mib(pid: u32) -> f64 {
    rss_kib(pid) as f64 / 1024.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let duration = std::env::args()
        .nth(1)
        .and_then(|d| humantime::parse_duration(&d).ok())
        .unwrap_or(Duration::from_secs(600));
    let binary = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "target/release/baremetal-image-cache".to_string());

    let sim = Simulator::new();
    for tenant in 0..TENANTS {
        sim.add_token(&token(tenant), &[&folder(tenant)]);
    }
    for n in 0..IMAGES {
        sim.put_image(Image::ready(&image_id(n), &folder(owner(n)), "soak-image"));
    }
    let upstream = match sim.clone().spawn().await {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("soak: cannot start the simulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let capacity = format!("{CAPACITY_MIB}MiB");
    let extra = [
        "--max-capacity",
        &capacity,
        "--ttl",
        "30s",
        "--upstream-timeout",
        "2s",
        "--stale-if-error",
        "2m",
    ];
    let proxy = match ProxyProcess::start_ready(&binary, upstream, &extra).await {
        Ok(proxy) => proxy,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pid = proxy.pid();
    let listen = proxy.listen.clone();
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(WORKERS)
        .build_http();
    println!(
        "soak: {} against {binary} (pid {pid}), {TENANTS} tenants, {IMAGES} images ({HOT} hot), {WORKERS} workers, --max-capacity {CAPACITY_MIB}MiB",
        humantime::format_duration(duration)
    );
    let tally = Arc::new(Tally::default());
    let fault_on = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (client, tally, fault_on, listen) = (
            client.clone(),
            tally.clone(),
            fault_on.clone(),
            listen.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(worker as u64);
            while Instant::now() < deadline {
                one_request(&client, &listen, &mut rng, &tally, &fault_on).await;
            }
        }));
    }

    // Faults: every 30 s one is switched on for 10 s, in turn.
    let faults = [
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        Fault::Delay(Duration::from_millis(300)),
        Fault::Reset,
        Fault::Hang,
        Fault::Garbage,
    ];
    let mut peak_rss: f64 = 0.0;
    let mut tick = 0u64;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(5)).await;
        tick += 1;
        let phase = tick % 6;
        if phase == 4 {
            let fault = faults[((tick / 6) as usize) % faults.len()].clone();
            println!("  fault on: {fault:?}");
            fault_on.store(true, Ordering::SeqCst);
            sim.set_fault(FaultScope::All, fault, None);
        } else if phase == 0 {
            sim.clear_faults();
            // Answers already under way may still carry the fault.
            tokio::time::sleep(Duration::from_secs(3)).await;
            fault_on.store(false, Ordering::SeqCst);
        }
        let rss = rss_mib(pid);
        peak_rss = peak_rss.max(rss);
        let elapsed = started.elapsed().as_secs_f64();
        let answered = tally.ok.load(Ordering::Relaxed)
            + tally.refused.load(Ordering::Relaxed)
            + tally.upstream_errors.load(Ordering::Relaxed);
        println!(
            "  t={elapsed:>5.0}s rss={rss:>6.1}MiB answered={answered} ({:.0}/s) hits={} stale={} errors={} wrong={}",
            answered as f64 / elapsed,
            tally.hits.load(Ordering::Relaxed),
            tally.stale.load(Ordering::Relaxed),
            tally.upstream_errors.load(Ordering::Relaxed),
            tally.wrong.load(Ordering::Relaxed),
        );
    }
    sim.clear_faults();
    for w in workers {
        let _ = w.await;
    }

    let mut counts: Vec<u64> = (0..HOT)
        .map(|n| sim.image_get_count(&image_id(n)))
        .collect();
    counts.sort_unstable();
    let per_image = |q: f64| counts[((counts.len() - 1) as f64 * q) as usize];
    let bound = (CAPACITY_MIB + FIXED_OVERHEAD_MIB) as f64;
    let wrong = tally.wrong.load(Ordering::Relaxed);
    println!("soak result after {:.0}s:", started.elapsed().as_secs_f64());
    println!(
        "  answers: ok={} refused(401/403)={} upstream-errors(502/503/504)={} stale={} hits={} wrong={wrong}",
        tally.ok.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.upstream_errors.load(Ordering::Relaxed),
        tally.stale.load(Ordering::Relaxed),
        tally.hits.load(Ordering::Relaxed),
    );
    println!(
        "  upstream requests per hot image (all tenants, all causes): min={} median={} p99={} max={}; all upstream requests: {}",
        per_image(0.0), per_image(0.5), per_image(0.99), per_image(1.0), sim.request_count()
    );
    println!("  rss: peak={peak_rss:.1}MiB bound={bound:.0}MiB (--max-capacity {CAPACITY_MIB}MiB + {FIXED_OVERHEAD_MIB}MiB)");
    drop(proxy);
    if wrong > 0 || peak_rss > bound {
        println!("soak: FAILED");
        return ExitCode::FAILURE;
    }
    println!("soak: passed");
    ExitCode::SUCCESS
}

/// What a request was, so its answer can be judged.
enum Asked {
    Own(String),
    Foreign,
    Forged,
    List,
}

async fn one_request(
    client: &Client<HttpConnector, Full<Bytes>>,
    listen: &str,
    rng: &mut StdRng,
    tally: &Tally,
    fault_on: &std::sync::atomic::AtomicBool,
) {
    let tenant = rng.gen_range(0..TENANTS);
    let roll: f64 = rng.gen();
    let pick_image = |rng: &mut StdRng| {
        if rng.gen_bool(0.8) {
            rng.gen_range(0..HOT)
        } else {
            rng.gen_range(0..IMAGES)
        }
    };
    let (path, auth, asked) = if roll < 0.85 {
        // A tenant's own image: pick one of its images.
        let n = pick_image(rng);
        let n = n - owner(n) + tenant;
        let n = if n >= IMAGES { n - TENANTS } else { n };
        (
            format!("/baremetal/v1alpha/images/{}", image_id(n)),
            Some(token(tenant)),
            Asked::Own(image_id(n)),
        )
    } else if roll < 0.93 {
        let n = pick_image(rng);
        let other = (owner(n) + 1 + rng.gen_range(0..TENANTS - 1)) % TENANTS;
        (
            format!("/baremetal/v1alpha/images/{}", image_id(n)),
            Some(token(other)),
            Asked::Foreign,
        )
    } else if roll < 0.97 {
        let n = pick_image(rng);
        (
            format!("/baremetal/v1alpha/images/{}", image_id(n)),
            Some(format!("t1.forged-{}", rng.gen::<u32>())),
            Asked::Forged,
        )
    } else {
        (
            format!(
                "/baremetal/v1alpha/images?folderId={}&pageSize=5",
                folder(tenant)
            ),
            Some(token(tenant)),
            Asked::List,
        )
    };
    let mut builder = Request::get(format!("http://{listen}{path}"));
    if let Some(auth) = auth {
        builder = builder.header("authorization", format!("Bearer {auth}"));
    }
    let Ok(request) = builder.body(Full::default()) else {
        return;
    };
    let during_fault = fault_on.load(Ordering::SeqCst);
    let result = tokio::time::timeout(Duration::from_secs(10), client.request(request)).await;
    let Ok(Ok(response)) = result else {
        // A connection-level failure to the proxy is always wrong.
        tally.wrong.fetch_add(1, Ordering::Relaxed);
        return;
    };
    // The fault may have been switched on while this request was under way.
    let during_fault = during_fault || fault_on.load(Ordering::SeqCst);
    let status = response.status();
    let x_cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Ok(body) = response.into_body().collect().await.map(|b| b.to_bytes()) else {
        if !during_fault {
            tally.wrong.fetch_add(1, Ordering::Relaxed);
        }
        return;
    };
    let upstream_error = matches!(status.as_u16(), 502..=504);
    let right = match (&asked, status) {
        (Asked::Own(id), StatusCode::OK) => {
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            // During a Garbage fault a miss relays the upstream's garbage as is.
            json["id"] == id.as_str() || (during_fault && json.is_null())
        }
        (Asked::Foreign, StatusCode::FORBIDDEN) | (Asked::Forged, StatusCode::UNAUTHORIZED) => true,
        (Asked::List, StatusCode::OK) => true,
        (Asked::Foreign | Asked::Forged, StatusCode::OK) => {
            during_fault && serde_json::from_slice::<serde_json::Value>(&body).is_err()
        }
        _ => during_fault && upstream_error,
    };
    if !right {
        tally.wrong.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "  wrong answer: {status} {x_cache} for {path}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        return;
    }
    match x_cache.as_str() {
        "HIT" => tally.hits.fetch_add(1, Ordering::Relaxed),
        "STALE" => tally.stale.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    if upstream_error {
        tally.upstream_errors.fetch_add(1, Ordering::Relaxed);
    } else if status.is_success() {
        tally.ok.fetch_add(1, Ordering::Relaxed);
    } else {
        tally.refused.fetch_add(1, Ordering::Relaxed);
    }
}
