//! Reliability: one test per upstream fault, client fault and limit. Each asserts the
//! client's answer, the cache state afterwards (the next request's `X-Cache` and the
//! upstream count) and the metric that counted it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baremetal_api_sim::{Fault, FaultScope, Image};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

async fn metric(h: &Harness, series: &str) -> f64 {
    Scrape::take(h).await.get(&format!("{P}_{series}"))
}

/// Sends raw bytes on a new connection and reads until the server closes it.
async fn raw(h: &Harness, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

// ---- upstream faults -------------------------------------------------------------------

#[tokio::test]
async fn connection_refused_is_a_502_after_bounded_retries_of_gets_only() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = Harness::start_against(
        simulator(),
        &format!("http://{closed}"),
        fault_config(|_| {}),
    )
    .await;
    let reply = h.get(IMG, Some(ALICE)).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.json()["code"], 14);
    // One attempt and two retries, each counted.
    assert_eq!(
        metric(&h, "upstream_errors_total{kind=\"connect\"}").await,
        3.0
    );
    let post = h
        .call(Method::POST, "/baremetal/v1alpha/images", Some(ALICE), &[])
        .await;
    assert_eq!(post.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        metric(&h, "upstream_errors_total{kind=\"connect\"}").await,
        4.0,
        "a POST is never retried"
    );
    assert_eq!(
        h.get(IMG, Some(ALICE)).await.x_cache(),
        "MISS",
        "nothing was cached"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_reset_mid_body_is_a_502_counted_as_body() {
    let h = Harness::with_config(fault_config(|_| {})).await;
    h.sim
        .set_fault(FaultScope::Image(IMG.into()), Fault::ResetMidBody, Some(1));
    assert_eq!(
        h.get(IMG, Some(ALICE)).await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        metric(&h, "upstream_errors_total{kind=\"body\"}").await,
        1.0
    );
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    assert_eq!(h.sim.image_get_count(IMG), 2);
    h.stop().await;
}

#[tokio::test]
async fn a_tls_failure_is_counted_as_tls() {
    let sim = simulator();
    let plain = sim.clone().spawn().await.unwrap();
    let h = Harness::start_against(sim, &format!("https://{plain}"), fault_config(|_| {})).await;
    assert_eq!(
        h.get(IMG, Some(ALICE)).await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(metric(&h, "upstream_errors_total{kind=\"tls\"}").await, 1.0);
    assert_eq!(
        metric(&h, "upstream_errors_total{kind=\"connect\"}").await,
        0.0,
        "no retry of a TLS failure"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_hang_and_a_slow_drip_end_at_the_deadline_with_504() {
    let h = Harness::with_config(fault_config(|c| {
        c.upstream_timeout = Duration::from_millis(800)
    }))
    .await;
    for (n, fault) in [Fault::Hang, Fault::SlowDrip(Duration::from_millis(50))]
        .into_iter()
        .enumerate()
    {
        h.sim
            .set_fault(FaultScope::Image(IMG.into()), fault.clone(), Some(1));
        let started = Instant::now();
        let reply = h.get(IMG, Some(ALICE)).await;
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{fault:?}");
        assert_eq!(reply.json()["code"], 4);
        assert!(started.elapsed() < Duration::from_secs(5), "{fault:?}");
        assert_eq!(
            metric(&h, "upstream_errors_total{kind=\"timeout\"}").await,
            n as f64 + 1.0,
            "{fault:?}"
        );
        let next = h.get(IMG, Some(ALICE)).await;
        assert_eq!(
            next.x_cache(),
            "MISS",
            "{fault:?} left nothing in the cache"
        );
        assert_eq!(next.json(), expected_body(&h.sim, IMG));
        h.admin(Method::DELETE, "/cache").await;
    }
    h.stop().await;
}

#[tokio::test]
async fn upstream_5xx_and_429_are_relayed_never_cached_and_keep_the_entry() {
    let h = Harness::with_config(fault_config(|_| {})).await;
    for (status, retry_after) in [(500, None), (503, Some(3)), (429, Some(7))] {
        h.sim.reset_counts();
        h.sim.set_fault(
            FaultScope::Image(IMG2.into()),
            Fault::Status {
                status,
                retry_after,
            },
            Some(1),
        );
        let reply = h.get(IMG2, Some(ALICE)).await;
        assert_eq!(reply.status.as_u16(), status);
        let expected_retry_after = retry_after.map(|s| s.to_string());
        assert_eq!(reply.header("retry-after"), expected_retry_after.as_deref());
        assert!(
            reply.json()["code"].as_u64().is_some(),
            "the upstream's error body"
        );
        let next = h.get(IMG2, Some(ALICE)).await;
        assert_eq!(next.status, StatusCode::OK);
        assert_eq!(next.x_cache(), "MISS", "{status} was not cached");
        assert_eq!(h.sim.image_get_count(IMG2), 2);
        h.admin(Method::DELETE, "/cache").await;
    }
    let scrape = Scrape::take(&h).await;
    for code in ["500", "503", "429"] {
        assert_eq!(
            scrape.get(&format!(
                "{P}_upstream_requests_total{{code=\"{code}\",route=\"image_get\"}}"
            )),
            1.0
        );
    }
    // A cached image survives an upstream 5xx on its refresh.
    h.get(IMG, Some(ALICE)).await;
    h.sim.set_fault(
        FaultScope::Image(IMG.into()),
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        Some(1),
    );
    let refused = h.get_fresh(IMG, Some(ALICE)).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    h.stop().await;
}

#[tokio::test]
async fn a_64_mib_body_is_streamed_through_and_never_held() {
    let h = Harness::with_config(fault_config(|_| {})).await;
    h.sim.set_fault(
        FaultScope::Image(IMG.into()),
        Fault::HugeBody(64 * 1024 * 1024),
        Some(1),
    );
    let big = h.get(IMG, Some(ALICE)).await;
    assert_eq!(big.status, StatusCode::OK);
    assert_eq!(big.body.len(), 64 * 1024 * 1024);
    assert_eq!(big.x_cache(), "MISS");
    assert_eq!(
        metric(&h, "size_bytes").await,
        0.0,
        "nothing of it is cached"
    );
    let next = h.get(IMG, Some(ALICE)).await;
    assert_eq!(next.x_cache(), "MISS");
    assert_eq!(next.json(), expected_body(&h.sim, IMG));
    h.stop().await;
}

// ---- client faults ---------------------------------------------------------------------

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let h = Harness::with_config(fault_config(|_| {})).await;
    let one = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\n\r\n",
        image_path(IMG)
    );
    let last = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\nConnection: close\r\n\r\n",
        image_path(IMG)
    );
    let answer = raw(&h, format!("{one}{one}{last}").as_bytes()).await;
    let statuses: Vec<&str> = answer.matches("HTTP/1.1 200 OK").collect();
    assert_eq!(statuses.len(), 3, "{answer}");
    let x_cache: Vec<&str> = answer
        .lines()
        .filter_map(|l| l.strip_prefix("x-cache: "))
        .collect();
    assert_eq!(x_cache, ["MISS", "HIT", "HIT"]);
    assert_eq!(h.sim.image_get_count(IMG), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_http2_streams_on_one_connection_share_one_fetch() {
    let h = Harness::with_config(fault_config(|_| {})).await;
    h.sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_millis(300)),
        None,
    );
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut streams = Vec::new();
    for _ in 0..200 {
        let client = client.clone();
        let request = Request::get(format!("http://{}{}", h.addr, image_path(IMG)))
            .header("authorization", format!("Bearer {ALICE}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        streams.push(tokio::spawn(async move { send(&client, request).await }));
    }
    for stream in streams {
        let reply = stream.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["id"], IMG);
    }
    assert_eq!(h.sim.image_get_count(IMG), 1);
    h.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_a_400_and_the_proxy_carries_on() {
    let h = Harness::with_config(fault_config(|_| {})).await;
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /baremetal/v1alpha/images/x HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    ] {
        let answer = raw(&h, garbage).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{answer:?}"
        );
    }
    assert_eq!(h.sim.request_count(), 0, "none of it went upstream");
    assert_eq!(h.get(IMG, Some(ALICE)).await.status, StatusCode::OK);
    h.stop().await;
}

#[tokio::test]
async fn oversized_ids_and_heads_are_refused_or_passed_through_never_cached() {
    let h = Harness::with_config(fault_config(|c| c.max_header_size = 16 * 1024)).await;
    let long_id = format!("ly5{}", "a".repeat(62));
    assert_eq!(long_id.len(), 65);
    for _ in 0..2 {
        let reply = h.get(&long_id, Some(ALICE)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "the upstream's validation answer"
        );
        assert_eq!(reply.header("x-cache"), None, "not Image.Get");
    }
    assert_eq!(h.sim.count("GET", &image_path(&long_id)), 2);
    let huge_header = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        image_path(IMG),
        "a".repeat(32 * 1024)
    );
    let answer = raw(&h, huge_header.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    let mut many = format!("GET {} HTTP/1.1\r\nHost: x\r\n", image_path(IMG));
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("Connection: close\r\n\r\n");
    let answer = raw(&h, many.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert_eq!(h.sim.image_get_count(IMG), 0);
    h.stop().await;
}

#[tokio::test]
async fn many_distinct_ids_stay_within_max_capacity() {
    let capacity = 256 * 1024;
    let h = Harness::with_config(fault_config(|c| c.max_capacity = capacity)).await;
    let ids: Vec<String> = (0..2000).map(|i| format!("ly5bulk{i:013}")).collect();
    for id in &ids {
        h.sim.put_image(Image::ready(id, ALICE_FOLDER, "bulk"));
    }
    for id in &ids {
        assert_eq!(h.get(id, Some(ALICE)).await.status, StatusCode::OK);
    }
    let scrape = Scrape::take(&h).await;
    let size = scrape.get(&format!("{P}_size_bytes"));
    let entries = scrape.get(&format!("{P}_entries"));
    assert!(
        size <= capacity as f64,
        "{size} bytes in a {capacity}-byte cache"
    );
    assert!(entries > 100.0 && entries < 2000.0, "{entries} entries");
    assert!(scrape.get(&format!("{P}_evictions_total{{cause=\"size\"}}")) > 0.0);
    h.stop().await;
}

// ---- limits and overload ---------------------------------------------------------------

#[tokio::test]
async fn past_the_connection_limit_a_connection_gets_503_and_hits_keep_flowing() {
    let h = Harness::with_config(fault_config(|c| c.max_connections = 2)).await;
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    // The harness's client holds one pooled connection; hold a second one open.
    let _held = TcpStream::connect(h.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = raw(
        &h,
        b"GET /baremetal/v1alpha/zones HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains("retry-after: 1"));
    assert!(answer.contains(r#""code":14"#));
    assert_eq!(
        metric(&h, "rejected_total{reason=\"connections\"}").await,
        1.0
    );
    // The pooled connection still serves hits.
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_upstream_limit_misses_get_503_at_once_and_hits_keep_flowing() {
    let h = Arc::new(Harness::with_config(fault_config(|c| c.max_upstream_requests = 1)).await);
    assert_eq!(h.get(IMG2, Some(ALICE)).await.x_cache(), "MISS");
    h.sim
        .set_fault(FaultScope::Image(IMG.into()), Fault::Hang, Some(1));
    let hanging = spawn_get(&h, IMG, Some(ALICE));
    h.until_upstream_saw(2).await;
    let started = Instant::now();
    let busy = h.get(BOB_IMG, Some(BOB)).await;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert_eq!(busy.json()["code"], 14);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once, not queued"
    );
    let passthrough = h
        .call(Method::GET, "/baremetal/v1alpha/zones", Some(ALICE), &[])
        .await;
    assert_eq!(passthrough.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        h.get(IMG2, Some(ALICE)).await.x_cache(),
        "HIT",
        "hits need no upstream slot"
    );
    assert_eq!(
        metric(&h, "rejected_total{reason=\"upstream_busy\"}").await,
        2.0
    );
    assert_eq!(h.sim.image_get_count(BOB_IMG), 0);
    hanging.abort();
}

#[tokio::test]
async fn a_request_body_over_the_limit_gets_413_streamed_or_declared() {
    let h = Harness::with_config(fault_config(|c| c.max_request_body = 1024)).await;
    let declared = Request::post(format!("http://{}/baremetal/v1alpha/images", h.addr))
        .header("authorization", format!("Bearer {ALICE}"))
        .body(Full::new(Bytes::from(vec![b'x'; 2048])))
        .unwrap();
    let reply = h.send(declared).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.json()["code"], 8);
    assert_eq!(
        h.sim.request_count(),
        0,
        "refused before anything went upstream"
    );
    // Chunked, with no length announced: cut off as it streams.
    let mut chunked = String::from("POST /baremetal/v1alpha/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    for _ in 0..4 {
        chunked.push_str(&format!("200\r\n{}\r\n", "y".repeat(512)));
    }
    chunked.push_str("0\r\n\r\n");
    let answer = raw(&h, chunked.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert_eq!(
        metric(&h, "rejected_total{reason=\"request_body\"}").await,
        2.0
    );
    assert_eq!(
        metric(&h, "upstream_errors_total{kind=\"body\"}").await,
        0.0,
        "a client's oversized body is not the upstream's error"
    );
    // Within the limit it goes through.
    let small =
        format!(r#"{{"folderId":"{ALICE_FOLDER}","name":"small","uri":"https://s/i.iso"}}"#);
    let ok = Request::post(format!("http://{}/baremetal/v1alpha/images", h.addr))
        .header("authorization", format!("Bearer {ALICE}"))
        .body(Full::new(Bytes::from(small)))
        .unwrap();
    assert_eq!(h.send(ok).await.status, StatusCode::OK);
    h.stop().await;
}

/// Sends the start of a request head that never ends, and waits (at most 5 s) for the proxy
/// to close the connection. Returns what it sent meanwhile.
async fn stalled_head(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .write_all(b"GET /baremetal/v1alpha/zones HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let mut sent = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut sent)).await;
    assert!(read.is_ok(), "the proxy did not close the connection");
    sent
}

#[tokio::test]
async fn a_slow_client_is_cut_off_by_the_header_read_timeout() {
    let h = Harness::with_config(fault_config(|c| {
        c.header_read_timeout = Duration::from_millis(500)
    }))
    .await;
    // The clock starts before the proxy's can (at the connection), so a slow test thread can
    // only make the wait it measures longer, never shorter.
    let started = Instant::now();
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    stalled_head(&mut stream).await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    let mut buf = Vec::new();
    assert_eq!(h.sim.request_count(), 0);
    // A client that connects and sends nothing, or stalls in the HTTP/2 preface.
    for opening in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut silent = TcpStream::connect(h.addr).await.unwrap();
        silent.write_all(opening).await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "{opening:?}: the proxy closed the connection");
    }
    // A kept-alive connection that goes idle after a request is closed the same way.
    let mut idle = TcpStream::connect(h.addr).await.unwrap();
    idle.write_all(b"GET /baremetal/v1alpha/zones HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 404"));
    let started = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut buf)).await;
    assert!(read.is_ok() && started.elapsed() >= Duration::from_millis(300));
    h.stop().await;
}

#[tokio::test]
async fn a_kept_alive_connection_is_timed_from_its_latest_request_head() {
    let h = Harness::with_config(fault_config(|c| {
        c.header_read_timeout = Duration::from_secs(1)
    }))
    .await;
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    // Requests 300 ms apart, for longer than the timeout: each head is timed on its own;
    // then one slower upstream than the timeout: in flight, the connection is not idle.
    for request in 0..6 {
        if request == 5 {
            let delay = Fault::Delay(Duration::from_millis(1500));
            h.sim.set_fault(FaultScope::All, delay, Some(1));
        }
        stream
            .write_all(b"GET /baremetal/v1alpha/zones HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = vec![0u8; 4096];
        let n = stream.read(&mut answer).await.unwrap();
        assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 404"));
        if request < 5 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    // Then a head that never ends: cut off one timeout after it began.
    let started = Instant::now();
    assert!(stalled_head(&mut stream).await.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(h.sim.request_count(), 6);
    h.stop().await;
}

// ---- refresh ahead ---------------------------------------------------------------------

/// Hits until one shows the entry was renewed (`Age: 0`).
async fn until_renewed(h: &Harness) {
    eventually("the entry is renewed", || async move {
        match h.get(IMG, Some(ALICE)).await.header("age") {
            Some("0") => Ok(()),
            age => Err(format!("Age: {age:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_entry_is_refreshed_once_before_it_expires() {
    // A 10 s TTL whose last 95 % is the refresh window: hits from 0.5 s on refresh it, and
    // nothing here comes near expiry, however slow the machine.
    let h = Arc::new(
        Harness::with_config(fault_config(|c| {
            c.ttl = Duration::from_secs(10);
            c.refresh_ahead = 95;
        }))
        .await,
    );
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut hits = Vec::new();
    for _ in 0..20 {
        hits.push(spawn_get(&h, IMG, Some(ALICE)));
    }
    for hit in hits {
        assert_eq!(hit.await.unwrap().x_cache(), "HIT");
    }
    h.until_upstream_saw(2).await;
    until_renewed(&h).await;
    assert_eq!(
        h.sim.image_get_count(IMG),
        2,
        "one refresh for the whole burst"
    );
    assert_eq!(metric(&h, "refreshes_total").await, 1.0);
}

#[tokio::test]
async fn a_refused_refresh_is_not_retried_by_every_hit() {
    let h = Harness::with_config(fault_config(|c| {
        c.ttl = Duration::from_secs(10);
        c.refresh_ahead = 95;
    }))
    .await;
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    h.sim.set_fault(
        FaultScope::Image(IMG.into()),
        Fault::Status {
            status: 429,
            retry_after: Some(30),
        },
        None,
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..50 {
        assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    }
    h.until_upstream_saw(2).await;
    assert_eq!(metric(&h, "refreshes_total").await, 1.0);
    assert_eq!(
        h.sim.image_get_count(IMG),
        2,
        "the 429 was not answered with a storm"
    );
    h.sim.clear_faults();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_sees_a_non_ready_status_drops_the_entry() {
    let h = Harness::with_config(fault_config(|c| {
        c.ttl = Duration::from_secs(30);
        c.refresh_ahead = 99;
    }))
    .await;
    h.get(IMG, Some(ALICE)).await;
    h.sim.set_status(IMG, "DELETING");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    h.until_upstream_saw(2).await;
    let dropped = {
        let h = &h;
        eventually("the refresh drops the entry", || async move {
            let dropped = metric(h, "invalidations_total{reason=\"deleting\"}").await;
            (dropped == 1.0).then_some(dropped)
        })
        .await
    };
    assert_eq!(dropped, 1.0, "the refresh dropped the entry");
    let next = h.get(IMG, Some(ALICE)).await;
    assert_eq!(next.x_cache(), "MISS", "well inside the 30 s TTL");
    assert_eq!(next.json()["status"], "DELETING");
    h.stop().await;
}

#[tokio::test]
async fn each_credential_refreshes_before_its_own_grant_runs_out() {
    let h = Harness::with_config(fault_config(|c| {
        c.ttl = Duration::from_secs(10);
        c.refresh_ahead = 95;
    }))
    .await;
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Alice's second token refills the entry: the entry is young again, Alice's grant is not.
    assert_eq!(h.get(IMG, Some(ALICE2)).await.x_cache(), "MISS");
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    h.until_upstream_saw(3).await;
    assert_eq!(
        metric(&h, "refreshes_total").await,
        1.0,
        "Alice's own window started a refresh"
    );
    h.stop().await;
}

// ---- hardening: admin listener, uploads, request heads ----------------------------------

/// Reads from `stream` until it is closed or `within` passes; what was read, and whether it
/// was closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(within, stream.read_to_end(&mut answer))
        .await
        .is_ok();
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_caps_connections_and_closes_idle_ones() {
    let h = Harness::with_config(fault_config(|c| {
        c.header_read_timeout = Duration::from_millis(500)
    }))
    .await;
    // 40 connections that send nothing, one stalled in the HTTP/2 preface.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(TcpStream::connect(h.admin).await.unwrap());
    }
    let mut preface = TcpStream::connect(h.admin).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    idle.push(preface);
    let mut refused = 0;
    for stream in &mut idle {
        let (answer, closed) = read_until_closed(stream, Duration::from_secs(5)).await;
        assert!(closed, "an idle admin connection was kept open");
        if answer.starts_with("HTTP/1.1 503") {
            refused += 1;
        }
    }
    assert_eq!(
        refused,
        41 - 32,
        "past the cap of 32, connections get a 503"
    );
    assert_eq!(
        metric(&h, "rejected_total{reason=\"admin_connections\"}").await,
        9.0
    );
    assert_eq!(h.get(IMG, Some(ALICE)).await.status, StatusCode::OK);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_hold_no_upstream_slot_and_get_408() {
    let h = Harness::with_config(fault_config(|c| {
        c.max_upstream_requests = 16;
        c.request_body_timeout = Duration::from_secs(1);
    }))
    .await;
    // Sixteen anonymous POSTs that send one byte of a 1,000-byte body, then nothing.
    let mut stalled = Vec::new();
    for _ in 0..16 {
        let mut stream = TcpStream::connect(h.addr).await.unwrap();
        stream
            .write_all(b"POST /baremetal/v1alpha/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
            .await
            .unwrap();
        stalled.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let miss = h.get(IMG, Some(ALICE)).await;
    assert_eq!(miss.status, StatusCode::OK, "{:?}", miss.body);
    assert_eq!(miss.x_cache(), "MISS");
    for stream in &mut stalled {
        let (answer, _) = read_until_closed(stream, Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        assert!(answer.contains(r#""code":4"#), "{answer:?}");
    }
    assert_eq!(h.sim.count("POST", "/baremetal/v1alpha/images"), 0);
    assert_eq!(
        metric(&h, "rejected_total{reason=\"request_body_timeout\"}").await,
        16.0
    );
    // A big body is streamed; when it stalls half-way the exchange is cut at the deadline.
    let mut big = TcpStream::connect(h.addr).await.unwrap();
    big.write_all(
        b"POST /baremetal/v1alpha/images HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n",
    )
    .await
    .unwrap();
    big.write_all(&[b' '; 100_000]).await.unwrap();
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut big, Duration::from_secs(10)).await;
    assert!(closed && answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_cannot_take_the_upstream_capacity_kept_for_fills() {
    let h = Arc::new(Harness::with_config(fault_config(|c| c.max_upstream_requests = 4)).await);
    // Pass-through requests that the upstream never answers.
    h.sim
        .set_fault(FaultScope::Image(IMG.into()), Fault::Hang, None);
    let target = format!("{}?view=full", image_path(IMG));
    let mut hanging = Vec::new();
    for _ in 0..3 {
        let (h, target) = (h.clone(), target.clone());
        hanging.push(tokio::spawn(async move {
            h.call(Method::GET, &target, Some(ALICE), &[]).await
        }));
    }
    h.until_upstream_saw(3).await;
    let fourth = h.call(Method::GET, &target, Some(ALICE), &[]).await;
    assert_eq!(fourth.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(fourth.json()["code"], 14);
    // A miss still has the quarter kept for fills.
    let miss = h.get(IMG2, Some(ALICE)).await;
    assert_eq!(miss.status, StatusCode::OK);
    assert_eq!(miss.x_cache(), "MISS");
    for task in hanging {
        task.abort();
    }
}

#[tokio::test]
async fn too_many_headers_over_http2_get_431_as_over_http1() {
    let h = Harness::with_config(fault_config(|_| {})).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut request = Request::get(format!("http://{}{}", h.addr, image_path(IMG)))
        .header("authorization", format!("Bearer {ALICE}"));
    for i in 0..150 {
        request = request.header(format!("x-extra-{i}"), "1");
    }
    let reply = send(&client, request.body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(reply.json()["code"], 3);
    assert_eq!(h.sim.request_count(), 0);
    assert_eq!(metric(&h, "rejected_total{reason=\"headers\"}").await, 1.0);
    // HTTP/1, as before: hyper's own 431.
    let mut head = format!("GET {} HTTP/1.1\r\nHost: x\r\n", image_path(IMG));
    for i in 0..150 {
        head.push_str(&format!("x-extra-{i}: 1\r\n"));
    }
    head.push_str("\r\n");
    assert!(raw(&h, head.as_bytes()).await.starts_with("HTTP/1.1 431"));
    h.stop().await;
}

#[tokio::test]
async fn methods_targets_codings_and_upgrades_the_api_has_not_are_refused_not_forwarded() {
    let h = Harness::with_config(fault_config(|_| {})).await;
    for (request, status) in [
        (&b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n"[..], "501"),
        (b"TRACE /baremetal/v1alpha/zones HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "501"),
        (b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "400"),
        (
            b"POST /baremetal/v1alpha/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "501",
        ),
        (
            b"GET /baremetal/v1alpha/zones HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            "501",
        ),
    ] {
        let answer = raw(&h, request).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{}: {answer:?}",
            String::from_utf8_lossy(request)
        );
        assert!(answer.contains(r#""code":"#), "{answer:?}");
    }
    assert_eq!(h.sim.request_count(), 0, "none of it went upstream");
    assert_eq!(
        metric(&h, "rejected_total{reason=\"not_implemented\"}").await,
        4.0
    );
    // An h2c upgrade offer (curl --http2 on http://) is ignored: answered over HTTP/1.1.
    let answer = raw(
        &h,
        format!(
            "GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
            image_path(IMG)
        )
        .as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    h.stop().await;
}

#[tokio::test]
async fn an_upstream_switching_protocols_is_not_relayed() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nraw bytes of another protocol")
                    .await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    let h =
        Harness::start_against(simulator(), &format!("http://{addr}"), fault_config(|_| {})).await;
    for target in ["/baremetal/v1alpha/zones".to_string(), image_path(IMG)] {
        let reply = h.call(Method::GET, &target, Some(ALICE), &[]).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{target}");
        assert_eq!(reply.json()["code"], 14);
    }
    h.stop().await;
}
