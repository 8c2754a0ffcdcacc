//! Metrics: known traffic moves each counter by exactly its number of events, gauges are
//! current at scrape time, and the dashboard and alert rules only name metrics that a real
//! scrape exports.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use baremetal_api_sim::{Fault, FaultScope};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_traffic_moves_each_counter_exactly() {
    let h = Arc::new(
        Harness::with_config(baremetal_image_cache::Config {
            upstream_timeout: Duration::from_secs(3),
            stale_if_error: Duration::ZERO,
            ..test_config()
        })
        .await,
    );
    let before = Scrape::take(&h).await;
    assert_eq!(
        before.get(&format!(
            "{P}_requests_total{{protocol=\"http\",result=\"miss\"}}"
        )),
        0.0
    );

    // 1 miss, then 3 hits.
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    for _ in 0..3 {
        assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    }
    // A flight of 1 leader and 5 waiters: 6 misses, 5 coalesced. The fetch is slow enough for
    // the waiters to join it, and quick enough for the timeout, even on a loaded machine.
    h.sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_millis(1500)),
        None,
    );
    let leader = spawn_get(&h, IMG2, Some(ALICE));
    h.until_upstream_saw(2).await;
    let mut waiters = Vec::new();
    for _ in 0..5 {
        waiters.push(spawn_get(&h, IMG2, Some(ALICE)));
    }
    for w in waiters {
        assert_eq!(w.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(leader.await.unwrap().status, StatusCode::OK);
    h.sim.clear_faults();
    // A mutation: one invalidation, one upstream mutation answered 200.
    let patch = Request::builder()
        .method(Method::PATCH)
        .uri(format!("http://{}{}", h.addr, image_path(IMG)))
        .header("authorization", format!("Bearer {ALICE}"))
        .body(Full::new(Bytes::from(
            r#"{"updateMask":"name","name":"renamed"}"#,
        )))
        .unwrap();
    assert_eq!(h.send(patch).await.status, StatusCode::OK);
    // An upstream 503, then a timeout, then a healthy miss.
    h.sim.set_fault(
        FaultScope::All,
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        Some(1),
    );
    assert_eq!(
        h.get(IMG, Some(ALICE)).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    h.sim.set_fault(FaultScope::All, Fault::Hang, Some(1));
    assert_eq!(
        h.get(IMG, Some(ALICE)).await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    // A pass-through request.
    let zones = h
        .call(Method::GET, "/baremetal/v1alpha/zones", Some(ALICE), &[])
        .await;
    assert_eq!(zones.header("x-cache"), None);

    let after = Scrape::take(&h).await;
    let expect = |series: String, value: f64| {
        assert_eq!(after.get(&series), value, "{series}");
    };
    expect(
        format!("{P}_requests_total{{protocol=\"http\",result=\"hit\"}}"),
        3.0,
    );
    expect(
        format!("{P}_requests_total{{protocol=\"http\",result=\"miss\"}}"),
        10.0,
    );
    expect(
        format!("{P}_requests_total{{protocol=\"http\",result=\"stale\"}}"),
        0.0,
    );
    expect(
        format!("{P}_requests_total{{protocol=\"http\",result=\"bypass\"}}"),
        0.0,
    );
    expect(format!("{P}_coalesced_total{{protocol=\"http\"}}"), 5.0);
    expect(
        format!("{P}_invalidations_total{{reason=\"mutation\"}}"),
        1.0,
    );
    expect(
        format!("{P}_invalidations_total{{reason=\"not_found\"}}"),
        0.0,
    );
    expect(format!("{P}_evictions_total{{cause=\"explicit\"}}"), 1.0);
    expect(format!("{P}_evictions_total{{cause=\"size\"}}"), 0.0);
    expect(
        format!("{P}_upstream_requests_total{{code=\"200\",route=\"image_get\"}}"),
        3.0,
    );
    expect(
        format!("{P}_upstream_requests_total{{code=\"503\",route=\"image_get\"}}"),
        1.0,
    );
    expect(
        format!("{P}_upstream_requests_total{{code=\"200\",route=\"image_mutation\"}}"),
        1.0,
    );
    expect(
        format!("{P}_upstream_requests_total{{code=\"404\",route=\"passthrough\"}}"),
        1.0,
    );
    expect(
        format!("{P}_upstream_errors_total{{kind=\"timeout\"}}"),
        1.0,
    );
    expect(
        format!("{P}_upstream_errors_total{{kind=\"connect\"}}"),
        0.0,
    );
    expect(
        format!("{P}_upstream_request_duration_seconds_count{{route=\"image_get\"}}"),
        4.0,
    );
    expect(
        format!("{P}_request_duration_seconds_count{{protocol=\"http\",result=\"hit\",route=\"image_get\"}}"),
        3.0,
    );
    expect(
        format!("{P}_request_duration_seconds_count{{protocol=\"http\",result=\"miss\",route=\"image_get\"}}"),
        10.0,
    );
    expect(
        format!("{P}_request_duration_seconds_count{{protocol=\"http\",result=\"bypass\",route=\"image_mutation\"}}"),
        1.0,
    );
    expect(
        format!("{P}_request_duration_seconds_count{{protocol=\"http\",result=\"bypass\",route=\"passthrough\"}}"),
        1.0,
    );
    // IMG (refilled) and IMG2 are cached now; nothing is in flight.
    expect(format!("{P}_entries"), 2.0);
    expect(format!("{P}_inflight_fetches"), 0.0);
    expect(format!("{P}_waiters"), 0.0);
    assert!(after.get(&format!("{P}_size_bytes")) > 0.0);
    expect(format!("{P}_capacity_bytes"), (256u64 * 1024 * 1024) as f64);
    expect(
        format!(
            "{P}_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        ),
        1.0,
    );
    assert!(after.get("process_resident_memory_bytes") > 0.0);
    // Hits resolve in the lowest buckets: all 3 under 10 ms.
    expect(
        format!(
            "{P}_request_duration_seconds_bucket{{protocol=\"http\",result=\"hit\",route=\"image_get\",le=\"0.01\"}}"
        ),
        3.0,
    );
    // No label carries a request's values.
    for series in after.0.keys() {
        for secret in [ALICE, IMG, IMG2, "zones", "/baremetal"] {
            assert!(!series.contains(secret), "{series}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_fetches_and_waiters_are_current_at_scrape_time() {
    let h = Arc::new(Harness::start().await);
    h.sim.set_fault(FaultScope::All, Fault::Hang, Some(1));
    let mut requests = Vec::new();
    let leader = spawn_get(&h, IMG, Some(ALICE));
    h.until_upstream_saw(1).await;
    for _ in 0..3 {
        requests.push(spawn_get(&h, IMG, Some(ALICE)));
    }
    let h = &h;
    let scrape = eventually("three waiters join the flight", || async move {
        let scrape = Scrape::take(h).await;
        let waiters = scrape.get(&format!("{P}_waiters"));
        if waiters == 3.0 {
            Ok(scrape)
        } else {
            Err(format!("{waiters} waiters"))
        }
    })
    .await;
    assert_eq!(scrape.get(&format!("{P}_inflight_fetches")), 1.0);
    assert_eq!(scrape.get(&format!("{P}_waiters")), 3.0);
    leader.abort();
    for r in requests {
        r.abort();
    }
}

#[tokio::test]
async fn purges_count_as_invalidations_and_entries_follow() {
    let h = Harness::start().await;
    h.get(IMG, Some(ALICE)).await;
    h.get(IMG2, Some(ALICE)).await;
    assert_eq!(Scrape::take(&h).await.get(&format!("{P}_entries")), 2.0);
    h.admin(Method::DELETE, &format!("/cache/images/{IMG}"))
        .await;
    h.admin(Method::DELETE, "/cache").await;
    let scrape = Scrape::take(&h).await;
    assert_eq!(
        scrape.get(&format!("{P}_invalidations_total{{reason=\"purge\"}}")),
        2.0
    );
    assert_eq!(scrape.get(&format!("{P}_entries")), 0.0);
    assert_eq!(scrape.get(&format!("{P}_size_bytes")), 0.0);
    h.stop().await;
}

#[tokio::test]
async fn non_ready_statuses_count_their_reason() {
    let h = Harness::start().await;
    for (status, reason) in [
        ("CREATING", "creating"),
        ("UPDATING", "updating"),
        ("DELETING", "deleting"),
        ("ERROR", "error"),
        ("STATUS_UNSPECIFIED", "unspecified"),
    ] {
        h.sim.set_status(IMG, "READY");
        h.get(IMG, Some(ALICE)).await;
        h.sim.set_status(IMG, status);
        h.get_fresh(IMG, Some(ALICE)).await;
        let scrape = Scrape::take(&h).await;
        assert_eq!(
            scrape.get(&format!("{P}_invalidations_total{{reason=\"{reason}\"}}")),
            1.0,
            "{status}"
        );
    }
    let scrape = Scrape::take(&h).await;
    assert_eq!(
        scrape.get(&format!(
            "{P}_requests_total{{protocol=\"http\",result=\"bypass\"}}"
        )),
        5.0
    );
    h.stop().await;
}

/// Every metric name in `text` (a dashboard or a rules file).
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let pattern =
        regex::Regex::new(r"\b(baremetal_image_cache_[a-z_]+|process_[a-z_]+)\b").unwrap();
    pattern
        .find_iter(text)
        .map(|m| m.as_str().to_string())
        .collect()
}

#[tokio::test]
async fn the_dashboard_and_alerts_only_name_exported_metrics() {
    let h = Harness::start().await;
    h.get(IMG, Some(ALICE)).await;
    h.get(IMG, Some(ALICE)).await;
    h.call(Method::GET, "/baremetal/v1alpha/zones", Some(ALICE), &[])
        .await;
    let exported = Scrape::take(&h).await.names();
    h.stop().await;

    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/dashboards/baremetal-image-cache.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(dashboard["id"], serde_json::Value::Null);
    assert_eq!(dashboard["uid"], "baremetal-image-cache");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() > 15, "the dashboard has its panels");
    let dashboard_names = metric_names_in(&exprs.join("\n"));
    let alerts = std::fs::read_to_string(format!("{root}/dashboards/alerts.yml")).unwrap();
    let alert_names = metric_names_in(&alerts);
    for name in dashboard_names.iter().chain(&alert_names) {
        assert!(exported.contains(name), "{name} is used but not exported");
    }
    // And the panels cover what operators watch.
    for wanted in [
        "requests_total",
        "coalesced_total",
        "upstream_errors_total",
        "evictions_total",
        "invalidations_total",
        "waiters",
        "inflight_fetches",
        "capacity_bytes",
    ] {
        assert!(
            dashboard_names.contains(&format!("{P}_{wanted}")),
            "no panel uses {wanted}"
        );
    }
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                if key == "expr" {
                    if let Some(s) = v.as_str() {
                        out.push(s.to_string());
                    }
                }
                collect_exprs(v, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}
