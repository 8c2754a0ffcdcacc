//! Everything that is not the exact Image.Get goes upstream untouched, streamed both ways;
//! upstream failures become the API's own error answers.

use std::time::{Duration, Instant};

use baremetal_api_sim::{Fault, FaultScope};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;

use crate::support::*;

#[tokio::test]
async fn look_alike_paths_always_reach_the_upstream() {
    let h = Harness::start().await;
    let targets = [
        format!("{}/", image_path(IMG)),
        format!("{}?", image_path(IMG)),
        format!("{}?view=full", image_path(IMG)),
        format!("{}/operations", image_path(IMG)),
        "/baremetal/v1alpha/images/%6cy5test0ready0000001".to_string(),
        "/baremetal/v1alpha/images/ly5test0ready%2F0000001".to_string(),
        "/baremetal/v1alpha/images/LY5TEST0READY0000001".to_string(),
        format!("/baremetal/v1alpha/images/../images/{IMG}"),
        format!("/baremetal/v1alpha//images/{IMG}"),
        format!("//baremetal/v1alpha/images/{IMG}"),
        format!("/baremetal/v1alpha/standardImages/{IMG}"),
        format!("/baremetal/v2/folders/{ALICE_FOLDER}/images/{IMG}"),
        format!("/baremetal/v1alpha/images?folderId={ALICE_FOLDER}"),
    ];
    for target in &targets {
        for _ in 0..2 {
            let reply = h.call(Method::GET, target, Some(ALICE), &[]).await;
            assert_eq!(reply.header("x-cache"), None, "{target} is not Image.Get");
        }
        assert_eq!(
            h.sim.count("GET", target),
            2,
            "{target} must reach the upstream each time"
        );
    }
    // None of it touched the cache: the real image is still a miss.
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    h.stop().await;
}

#[tokio::test]
async fn pass_through_is_transparent() {
    let h = Harness::start().await;
    let body = format!(
        r#"{{"folderId":"{ALICE_FOLDER}","name":"new-image","uri":"https://storage.yandexcloud.net/b/i.iso"}}"#
    );
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}/baremetal/v1alpha/images", h.addr))
        .header("authorization", format!("Bearer {ALICE}"))
        .header("content-type", "application/json")
        .header("idempotency-key", "6f1c2d1e-1f7a-4c55-9d5e-1e7f0f7f7a11")
        .header("x-client-request-id", "client-req-1")
        .header("connection", "x-hop-secret")
        .header("x-hop-secret", "must-not-pass")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let reply = h.send(request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["done"], false);
    assert!(
        reply.header("x-request-id").is_some(),
        "upstream headers come back"
    );
    assert_eq!(reply.header("x-cache"), None);

    let recorded = h.sim.recorded();
    let seen = recorded.last().expect("the upstream saw the request");
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.target, "/baremetal/v1alpha/images");
    assert_eq!(seen.body, Bytes::from(body));
    let header = |name: &str| seen.headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(
        header("authorization"),
        Some(format!("Bearer {ALICE}").as_str())
    );
    assert_eq!(
        header("idempotency-key"),
        Some("6f1c2d1e-1f7a-4c55-9d5e-1e7f0f7f7a11")
    );
    assert_eq!(header("x-client-request-id"), Some("client-req-1"));
    assert_eq!(header("x-hop-secret"), None);
    assert_eq!(header("keep-alive"), None);
    assert_eq!(header("proxy-authorization"), None);
    let upstream_authority = h.sim_authority();
    assert_eq!(header("host"), Some(upstream_authority.as_str()));
    h.stop().await;
}

#[tokio::test]
async fn upstream_errors_pass_through_unchanged() {
    let h = Harness::start().await;
    h.sim.set_fault(
        FaultScope::All,
        Fault::Status {
            status: 429,
            retry_after: Some(7),
        },
        Some(1),
    );
    let reply = h
        .call(
            Method::GET,
            &format!("/baremetal/v1alpha/images?folderId={ALICE_FOLDER}"),
            Some(ALICE),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("retry-after"), Some("7"));
    assert_eq!(reply.json()["code"], 8);
    h.stop().await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_fast_502() {
    // A port that was just free: nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let h = Harness::start_against(simulator(), &format!("http://{closed}"), test_config()).await;
    for target in [image_path(IMG), "/baremetal/v1alpha/zones".to_string()] {
        let started = Instant::now();
        let reply = h.call(Method::GET, &target, Some(ALICE), &[]).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{target}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let json = reply.json();
        assert_eq!(json["code"], 14);
        assert!(json["details"].as_array().unwrap().is_empty());
        assert!(
            !json["message"].as_str().unwrap().contains(ALICE),
            "no credential in errors"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "fast, not after the timeout"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn a_hanging_upstream_is_a_504_at_the_timeout() {
    let h = Harness::with_config(baremetal_image_cache::Config {
        upstream_timeout: Duration::from_millis(500),
        ..test_config()
    })
    .await;
    h.sim.set_fault(FaultScope::All, Fault::Hang, None);
    for target in [image_path(IMG), "/baremetal/v1alpha/zones".to_string()] {
        let started = Instant::now();
        let reply = h.call(Method::GET, &target, Some(ALICE), &[]).await;
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{target}");
        assert_eq!(reply.json()["code"], 4);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(5),
            "{elapsed:?}"
        );
    }
    h.sim.clear_faults();
    h.stop().await;
}

#[tokio::test]
async fn a_tls_failure_is_a_502_that_says_so() {
    // The simulator speaks plain HTTP, so a TLS handshake with it fails.
    let sim = simulator();
    let plain = sim.clone().spawn().await.unwrap();
    let h = Harness::start_against(sim, &format!("https://{plain}"), test_config()).await;
    for target in [image_path(IMG), "/baremetal/v1alpha/zones".to_string()] {
        let reply = h.call(Method::GET, &target, Some(ALICE), &[]).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{target}");
        let json = reply.json();
        assert_eq!(json["code"], 14);
        assert!(json["message"].as_str().unwrap().contains("TLS"), "{json}");
    }
    assert_eq!(
        h.get(IMG, Some(ALICE)).await.x_cache(),
        "MISS",
        "nothing was cached"
    );
    h.stop().await;
}
