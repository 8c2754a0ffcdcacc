//! Concurrent misses share one upstream request: cold bursts, non-cacheable answers, a client
//! that leaves, a leader that fails, and the waiter caps.

use std::sync::Arc;
use std::time::Duration;

use baremetal_api_sim::{Fault, FaultScope};
use http::StatusCode;

use crate::support::*;

async fn burst(h: &Arc<Harness>, id: &'static str, n: usize) -> Vec<Reply> {
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        tasks.push(spawn_get(h, id, Some(ALICE)));
    }
    let mut replies = Vec::with_capacity(n);
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_burst_of_500_is_one_upstream_request() {
    let h = Arc::new(Harness::start().await);
    // The upstream is slow enough that the whole burst arrives while the fetch runs.
    h.sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_millis(500)),
        None,
    );
    let replies = burst(&h, IMG, 500).await;
    let expected = expected_body(&h.sim, IMG);
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json(), expected);
    }
    assert_eq!(h.sim.image_get_count(IMG), 1);
    let collapsed = replies
        .iter()
        .filter(|r| r.header("cache-status").unwrap().contains("collapsed"))
        .count();
    assert!(collapsed > 0, "some requests joined the flight");
    assert!(replies
        .iter()
        .all(|r| r.x_cache() == "MISS" || r.x_cache() == "HIT"));
    // Waiters never see the leader's per-request headers.
    for reply in replies
        .iter()
        .filter(|r| r.header("cache-status").unwrap().contains("collapsed"))
    {
        assert_eq!(reply.header("x-request-id"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_a_creating_image_collapses_but_is_not_cached() {
    let h = Arc::new(Harness::start().await);
    h.sim.set_status(IMG, "CREATING");
    // Nothing is cached here, so the burst must land while the one flight runs: start it
    // once the upstream holds the leader's request, and keep that request slow.
    h.sim
        .set_fault(FaultScope::All, Fault::Delay(Duration::from_secs(2)), None);
    let leader = spawn_get(&h, IMG, Some(ALICE));
    h.until_upstream_saw(1).await;
    let mut replies = burst(&h, IMG, 200).await;
    replies.push(leader.await.unwrap());
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["status"], "CREATING");
        assert_eq!(reply.x_cache(), "MISS");
    }
    assert_eq!(
        h.sim.image_get_count(IMG),
        1,
        "one upstream call for the whole flight"
    );
    h.sim.clear_faults();
    assert_eq!(
        h.get(IMG, Some(ALICE)).await.x_cache(),
        "MISS",
        "CREATING was not stored"
    );
    assert_eq!(h.sim.image_get_count(IMG), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fetch_outlives_a_client_that_disconnects() {
    let h = Arc::new(Harness::start().await);
    h.sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_millis(700)),
        None,
    );
    let leaver = spawn_get(&h, IMG, Some(ALICE));
    h.until_upstream_saw(1).await;
    leaver.abort();
    let _ = leaver.await;
    h.sim.clear_faults();
    // Whether this joins the still-running flight or hits the entry it filled, the upstream
    // is not asked again.
    let reply = h.get(IMG, Some(ALICE)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(h.sim.image_get_count(IMG), 1);
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    assert_eq!(h.sim.image_get_count(IMG), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_leader_hands_over_to_exactly_one_new_leader() {
    let h = Arc::new(
        Harness::with_config(baremetal_image_cache::Config {
            upstream_timeout: Duration::from_secs(4),
            stale_if_error: Duration::ZERO,
            ..test_config()
        })
        .await,
    );
    // The first fetch hangs; the new leader's takes a second, so that the hung leader has
    // given its answer (a timeout) long before the new leader's entry could serve it a hit.
    h.sim
        .set_fault(FaultScope::Image(IMG.into()), Fault::Hang, Some(1));
    h.sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_secs(1)),
        Some(1),
    );
    let leader = spawn_get(&h, IMG, Some(ALICE));
    h.until_upstream_saw(1).await;
    // These join the hanging flight; each has its own deadline, 1.5 s after the leader's:
    // time enough for the handover and the second fetch on a loaded machine.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let waiters = burst(&h, IMG, 50);
    let (leader, waiters) = tokio::join!(leader, waiters);
    let leader = leader.unwrap();
    assert_eq!(leader.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(leader.json()["code"], 4);
    for reply in &waiters {
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }
    assert_eq!(
        h.sim.image_get_count(IMG),
        2,
        "the hung fetch and one new leader's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_past_the_cap_get_503_with_retry_after() {
    let h = Arc::new(
        Harness::with_config(baremetal_image_cache::Config {
            max_waiters_per_key: 5,
            ..test_config()
        })
        .await,
    );
    h.sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_millis(1500)),
        None,
    );
    let leader = spawn_get(&h, IMG, Some(ALICE));
    h.until_upstream_saw(1).await;
    let replies = burst(&h, IMG, 15).await;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let refused: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(ok, 5);
    assert_eq!(refused.len(), 10);
    for reply in refused {
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert_eq!(reply.json()["code"], 14);
    }
    assert_eq!(leader.await.unwrap().status, StatusCode::OK);
    assert_eq!(h.sim.image_get_count(IMG), 1);
}
