//! The Redis fleet tier: several proxy instances against one simulator and one real
//! `redis-server`, as a fleet of sidecars would run.

use std::sync::Arc;
use std::time::Duration;

use baremetal_api_sim::{Fault, FaultScope, Simulator};
use baremetal_image_cache::config::RedisConfig;
use baremetal_image_cache::Config;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;

use crate::support::fleet::*;
use crate::support::redis_server::{RedisCluster, RedisServer};
use crate::support::*;

/// Waits until no fill lease is held: every fetch under way has finished with Redis.
async fn until_no_leases(redis: &RedisServer) {
    let connection = redis.connection().await;
    eventually("every fill lease is released", || {
        let mut connection = connection.clone();
        async move {
            let leases: Vec<String> = redis::cmd("KEYS")
                .arg("bic-test:*:lease:*")
                .query_async(&mut connection)
                .await
                .unwrap();
            if leases.is_empty() {
                Ok(())
            } else {
                Err(format!("held: {leases:?}"))
            }
        }
    })
    .await
}

/// Writes `value` under `key`, as another (or a misbehaving) instance would.
async fn redis_set(redis: &RedisServer, key: &str, value: &[u8]) {
    let mut connection = redis.connection().await;
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut connection)
        .await
        .unwrap();
}

/// Deletes the image straight at the API (not through a proxy), so that only a 404 can tell
/// the proxies.
async fn delete_behind_the_proxies(h: &Harness, id: &str) {
    let delete = http::Request::builder()
        .method(Method::DELETE)
        .uri(format!("http://{}{}", h.upstream, image_path(id)))
        .header("authorization", format!("Bearer {ALICE}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert!(h.send(delete).await.status.is_success());
}

/// A PATCH of the image's description through `h`.
fn patch_description(h: &Harness, id: &str, description: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(Method::PATCH)
        .uri(format!("http://{}{}", h.addr, image_path(id)))
        .header("authorization", format!("Bearer {ALICE}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!(
            r#"{{"updateMask":"description","description":"{description}"}}"#
        ))))
        .unwrap()
}

/// `n` of Alice's GETs of `id` at once, spread over `instances`; asserts each answers the
/// image.
async fn burst_over(instances: &[Arc<Harness>], sim: &Simulator, id: &str, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|round| spawn_get(&instances[round % instances.len()], id, Some(ALICE)))
        .collect();
    let expected = expected_body(sim, id);
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json(), expected);
    }
}

/// Waits for another instance's fill that ended as `outcome`, over all of `instances`.
async fn fleet_waits(instances: &[Arc<Harness>], outcome: &str) -> f64 {
    let series = format!("{P}_l2_fleet_waits_total{{outcome=\"{outcome}\"}}");
    let mut total = 0.0;
    for h in instances {
        total += Scrape::take(h).await.get(&series);
    }
    total
}

/// Waits until `h` has failed to read Redis at least once (an error, or a timeout when the
/// failure is slow, as on a loaded machine), and asserts no read succeeded.
async fn until_reads_fail(h: &Harness) {
    let failed = |scrape: &Scrape| {
        assert_eq!(scrape.get(&l2_series("get", "ok")), 0.0, "a read succeeded");
        scrape.get(&l2_series("get", "error")) + scrape.get(&l2_series("get", "timeout"))
    };
    eventually("a read of Redis fails", || async move {
        (failed(&Scrape::take(h).await) >= 1.0).then_some(())
    })
    .await
}

#[tokio::test]
async fn a_burst_spread_over_three_instances_is_one_upstream_request() {
    let (_redis, sim, instances) = start_fleet(3, shared_config(), None).await;
    burst_over(&instances, &sim, IMG, 300).await;
    assert_eq!(
        sim.image_get_count(IMG),
        1,
        "one upstream request for the whole fleet"
    );
    // Each instance that did not fetch took it from Redis, and serves it from memory now.
    for h in &instances {
        assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    }
    stop_all(instances).await;
}

#[tokio::test]
async fn answers_from_another_instance_keep_their_age_and_ttl() {
    let config = Config {
        ttl: Duration::from_secs(30),
        ..shared_config()
    };
    let (_redis, sim, instances) = start_fleet(2, config, None).await;
    assert_eq!(instances[0].get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    // The Redis write happens just after the answer: wait for it, bounded.
    until_metric(&instances[0], &l2_series("set", "ok"), 1.0).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let second = instances[1].get(IMG, Some(ALICE)).await;
    assert_eq!(second.x_cache(), "HIT");
    // The replayed headers came along (and the per-exchange ones did not).
    assert_eq!(second.header("content-type"), Some("application/json"));
    assert_eq!(second.header("x-server-trace-id"), None);
    assert_eq!(second.json(), expected_body(&sim, IMG));
    let age: u64 = second.header("age").unwrap().parse().unwrap();
    assert!((2..=4).contains(&age), "age {age}");
    let status = second.header("cache-status").unwrap();
    let ttl: i64 = status.rsplit("ttl=").next().unwrap().parse().unwrap();
    assert!((25..=28).contains(&ttl), "{status}");
    assert_eq!(sim.image_get_count(IMG), 1);
    stop_all(instances).await;
}

#[tokio::test]
async fn an_invalidation_on_one_instance_is_seen_by_the_others() {
    let (_redis, sim, instances) = start_fleet(3, shared_config(), None).await;
    for h in &instances {
        assert_eq!(h.get(IMG, Some(ALICE)).await.status, StatusCode::OK);
        assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    }
    assert_eq!(sim.image_get_count(IMG), 1);

    // A mutation through the first instance: once the API has taken it, it invalidates.
    let patch = patch_description(&instances[0], IMG, "patched");
    assert_eq!(instances[0].send(patch).await.status, StatusCode::OK);
    let messages = format!("{P}_l2_messages_total{{kind=\"invalidate\"}}");
    let drops = fleet_drops();
    for h in &instances {
        until_metric(h, &messages, 1.0).await;
    }
    for h in &instances[1..] {
        assert_eq!(Scrape::take(h).await.get(&drops), 1.0);
        // From the upstream or from the instance that fetched it first: the new image.
        let after = h.get(IMG, Some(ALICE)).await;
        assert_eq!(after.json()["description"], "patched");
    }
    // One fetch of the new image for the whole fleet (the other came through Redis).
    assert_eq!(sim.image_get_count(IMG), 2);

    // An admin purge on the last instance reaches the first.
    assert_eq!(
        instances[0].get(IMG2, Some(ALICE)).await.status,
        StatusCode::OK
    );
    assert_eq!(instances[0].get(IMG2, Some(ALICE)).await.x_cache(), "HIT");
    let dropped_before = Scrape::take(&instances[0]).await.get(&drops);
    let purge = instances[2]
        .admin(Method::DELETE, &format!("/cache/images/{IMG2}"))
        .await;
    assert_eq!(purge.status, StatusCode::OK);
    until_metric(&instances[0], &drops, dropped_before + 1.0).await;
    assert_ne!(instances[0].get(IMG2, Some(ALICE)).await.x_cache(), "HIT");

    // A purge of everything, too: values in Redis from before it are not used again.
    assert_eq!(instances[2].get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    let dropped_before = Scrape::take(&instances[2]).await.get(&drops);
    let purge_all = instances[1].admin(Method::DELETE, "/cache").await;
    assert_eq!(purge_all.status, StatusCode::OK);
    until_metric(&instances[2], &drops, dropped_before + 1.0).await;
    let before = sim.image_get_count(IMG);
    assert_eq!(instances[2].get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(sim.image_get_count(IMG), before + 1);
    stop_all(instances).await;
}

#[tokio::test]
async fn a_credential_checked_on_one_instance_is_a_hit_on_another() {
    let (redis, sim, instances) = start_fleet(2, test_config(), Some(GRANT_KEY)).await;
    let (a, b) = (&instances[0], &instances[1]);
    assert_eq!(a.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    until_metric(a, &l2_series("set", "ok"), 1.0).await;
    let on_b = b.get(IMG, Some(ALICE)).await;
    assert_eq!(on_b.x_cache(), "HIT");
    assert_eq!(on_b.json(), expected_body(&sim, IMG));
    assert_eq!(sim.image_get_count(IMG), 1);

    // Another token of the same tenant has not been checked: the API is asked.
    assert_eq!(b.get(IMG, Some(ALICE2)).await.x_cache(), "MISS");
    assert_eq!(sim.image_get_count(IMG), 2);
    // Another tenant is never served Alice's image from the fleet.
    let bob = b.get(IMG, Some(BOB)).await;
    assert_eq!(bob.status, StatusCode::FORBIDDEN);
    assert_eq!(sim.image_get_count(IMG), 3);
    // No token at all is not served either.
    assert_ne!(b.get(IMG, None).await.status, StatusCode::OK);

    // Raw tokens never reach Redis: neither in keys nor in values.
    let mut connection = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(keys
        .iter()
        .any(|k| k.starts_with("bic-test:per-credential:grant:")));
    for key in &keys {
        assert!(!key.contains("alice") && !key.contains("t1."), "{key}");
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap_or(None);
        let value = String::from_utf8_lossy(&value.unwrap_or_default()).to_string();
        assert!(!value.contains("t1."), "{key}: {value}");
    }
    stop_all(instances).await;
}

#[tokio::test]
async fn without_a_grant_key_credentials_are_checked_on_each_instance() {
    let (_redis, sim, instances) = start_fleet(2, test_config(), None).await;
    assert_eq!(instances[0].get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(instances[1].get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(sim.image_get_count(IMG), 2);
    assert_eq!(instances[1].get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    stop_all(instances).await;
}

#[tokio::test]
async fn redis_killed_mid_burst_every_request_is_still_answered() {
    let (mut redis, sim, instances) = start_fleet(3, shared_config(), None).await;
    let ids = [IMG, IMG2];
    let mut tasks = Vec::new();
    for round in 0..600 {
        if round == 300 {
            redis.kill();
        }
        tasks.push(spawn_get(
            &instances[round % 3],
            ids[round % 2],
            Some(ALICE),
        ));
        if round % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for (round, task) in tasks.into_iter().enumerate() {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "request {round}");
        assert_eq!(reply.json(), expected_body(&sim, ids[round % 2]));
    }
    // Without Redis each instance still coalesces its own misses: at most one per instance
    // and image.
    for id in ids {
        assert!(
            sim.image_get_count(id) <= 3,
            "{id}: {}",
            sim.image_get_count(id)
        );
    }
    // With Redis gone, new misses are still answered, and the failures are counted.
    for h in &instances {
        assert_eq!(h.get_fresh(IMG, Some(ALICE)).await.status, StatusCode::OK);
    }
    let mut failures = 0.0;
    for h in &instances {
        let scrape = Scrape::take(h).await;
        for result in ["error", "timeout", "skipped"] {
            for op in ["get", "set", "lease", "delete", "publish"] {
                failures += scrape.get(&l2_series(op, result));
            }
        }
    }
    assert!(failures > 0.0);

    // Redis back: the tier is used again once the circuit lets it (within its cooldown).
    redis.restart().await;
    let h = &instances[0];
    let set_ok = &l2_series("set", "ok");
    let before = Scrape::take(h).await.get(set_ok);
    eventually("the tier came back after Redis did", || async move {
        assert_eq!(h.get_fresh(IMG, Some(ALICE)).await.status, StatusCode::OK);
        // (Its write to Redis comes just after the answer.)
        tokio::time::sleep(Duration::from_millis(100)).await;
        (Scrape::take(h).await.get(set_ok) > before).then_some(())
    })
    .await;
    assert_eq!(
        Scrape::take(h).await.get(&format!("{P}_l2_circuit_open")),
        0.0
    );
    stop_all(instances).await;
}

#[tokio::test]
async fn garbage_in_redis_is_ignored_and_counted() {
    let (redis, sim, instances) = start_fleet(1, shared_config(), None).await;
    for garbage in [&b"not ours"[..], b"BIC1\x00\x01", b"BIC1"] {
        // (A purge deletes the shared value too, so it comes first.)
        instances[0]
            .admin(Method::DELETE, &format!("/cache/images/{IMG}"))
            .await;
        redis_set(&redis, &format!("bic-test:shared:image:{{{IMG}}}"), garbage).await;
        let reply = instances[0].get(IMG, Some(ALICE)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json(), expected_body(&sim, IMG));
    }
    // A well-formed value that is not a READY image of that ID is not served either.
    instances[0]
        .admin(Method::DELETE, &format!("/cache/images/{IMG}"))
        .await;
    let wrong_id = [
        &b"BIC1"[..],
        &u64::MAX.to_be_bytes(),
        &200u16.to_be_bytes(),
        &0u16.to_be_bytes(),
        br#"{"id":"ly5other","status":"READY"}"#,
    ]
    .concat();
    redis_set(
        &redis,
        &format!("bic-test:shared:image:{{{IMG}}}"),
        &wrong_id,
    )
    .await;
    let reply = instances[0].get(IMG, Some(ALICE)).await;
    assert_eq!(reply.json(), expected_body(&sim, IMG));
    assert_eq!(sim.image_get_count(IMG), 4);
    // ...and the fetch replaced it in Redis with the real image.
    let connection = redis.connection().await;
    eventually("the unusable value was replaced", || {
        let mut connection = connection.clone();
        async move {
            let value: Option<Vec<u8>> = redis::cmd("GET")
                .arg(format!("bic-test:shared:image:{{{IMG}}}"))
                .query_async(&mut connection)
                .await
                .unwrap();
            value
                .is_some_and(|v| String::from_utf8_lossy(&v).contains(IMG))
                .then_some(())
        }
    })
    .await;
    // Each value was read twice (before and after winning the lease), and never as a hit.
    let scrape = Scrape::take(&instances[0]).await;
    assert_eq!(scrape.get(&l2_series("get", "garbage")), 8.0);
    assert_eq!(scrape.get(&l2_series("get", "ok")), 0.0);
    stop_all(instances).await;
}

#[tokio::test]
async fn an_unresponsive_redis_costs_at_most_its_timeout_and_then_is_skipped() {
    // Accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let sim = simulator();
    let instances = fleet(
        1,
        &sim,
        fleet_config(
            shared_config(),
            vec![format!("redis://{silent_addr}/")],
            None,
        ),
    )
    .await;
    let h = &instances[0];
    for (id, token) in [(IMG, ALICE), (IMG2, ALICE), (BOB_IMG, BOB)] {
        let started = std::time::Instant::now();
        let reply = h.get(id, Some(token)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json(), expected_body(&sim, id));
        // One read, bounded by the 250 ms timeout (the connection is made in 1 s at most).
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    // Three failures in a row (a read per miss) open the circuit.
    until_metric(h, &format!("{P}_l2_circuit_open"), 1.0).await;
    let scrape = Scrape::take(h).await;
    let skipped_before = scrape.get(&l2_series("get", "skipped"));
    let reply = h.get_fresh(IMG, Some(ALICE)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        h.get(MISSING, Some(ALICE)).await.status,
        StatusCode::NOT_FOUND
    );
    let reply = h.get(IMG2, Some(ALICE)).await;
    assert_eq!(reply.x_cache(), "HIT");
    h.admin(Method::DELETE, &format!("/cache/images/{IMG}"))
        .await;
    assert_eq!(h.get(IMG, Some(ALICE)).await.status, StatusCode::OK);
    let scrape = Scrape::take(h).await;
    assert!(scrape.get(&l2_series("get", "skipped")) > skipped_before);
    held.abort();
    stop_all(instances).await;
}

#[tokio::test]
async fn a_dead_instances_lease_is_taken_over() {
    let (redis, sim, instances) = start_fleet(1, shared_config(), None).await;
    let h = &instances[0];
    // An instance took the lease and died before publishing anything.
    let lease = format!("bic-test:shared:lease:{{{IMG}}}");
    let mut connection = redis.connection().await;
    redis_set(&redis, &lease, b"a-dead-instance").await;
    let waiting = spawn_get(&instances[0], IMG, Some(ALICE));
    // It waits: the lease attempt lost, and nothing went upstream.
    until_metric(h, &l2_series("lease", "miss"), 1.0).await;
    assert_eq!(sim.image_get_count(IMG), 0);
    // The dead instance's lease runs out.
    let _: () = redis::cmd("PEXPIRE")
        .arg(&lease)
        .arg(1)
        .query_async(&mut connection)
        .await
        .unwrap();
    let reply = waiting.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), expected_body(&sim, IMG));
    assert_eq!(sim.image_get_count(IMG), 1);
    let scrape = Scrape::take(h).await;
    assert_eq!(
        scrape.get(&format!(
            "{P}_l2_fleet_waits_total{{outcome=\"taken_over\"}}"
        )),
        1.0
    );
    stop_all(instances).await;
}

#[tokio::test]
async fn a_redis_cluster_works_as_the_fleet_tier() {
    let cluster = RedisCluster::start().await;
    let sim = simulator();
    let config = fleet_config(shared_config(), cluster.urls(), None);
    assert!(config.redis.as_ref().is_some_and(RedisConfig::is_cluster));
    let instances = fleet(3, &sim, config).await;
    // Every instance subscribes on the first seed node (the next on failure); PUBLISH to any
    // node of a cluster reaches it.
    until_listening(&instances).await;
    let mut tasks = Vec::new();
    for round in 0..300 {
        let id = [IMG, IMG2][round % 2];
        tasks.push((id, spawn_get(&instances[round % 3], id, Some(ALICE))));
    }
    for (id, task) in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json(), expected_body(&sim, id));
    }
    assert_eq!(sim.image_get_count(IMG), 1);
    assert_eq!(sim.image_get_count(IMG2), 1);

    // Invalidation crosses the cluster too.
    let purge = instances[0]
        .admin(Method::DELETE, &format!("/cache/images/{IMG}"))
        .await;
    assert_eq!(purge.status, StatusCode::OK);
    for h in &instances[1..] {
        until_metric(h, &fleet_drops(), 1.0).await;
    }
    assert_eq!(instances[1].get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(sim.image_get_count(IMG), 2);
    stop_all(instances).await;
}

#[tokio::test]
async fn a_miss_right_after_an_invalidation_does_not_wait_for_the_fillers_lease() {
    let redis = RedisServer::start().await;
    let sim = simulator();
    let mut config = fleet_config(shared_config(), vec![redis.url()], None);
    if let Some(redis) = config.redis.as_mut() {
        redis.lease = Duration::from_secs(10);
    }
    let instances = fleet(2, &sim, config).await;
    assert_eq!(instances[0].get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    // The filler's writes (value, then lease dropped) happen just after its answer.
    until_no_leases(&redis).await;
    let purge = instances[0]
        .admin(Method::DELETE, &format!("/cache/images/{IMG}"))
        .await;
    assert_eq!(purge.status, StatusCode::OK);
    let started = std::time::Instant::now();
    let reply = instances[1].get(IMG, Some(ALICE)).await;
    assert_eq!(reply.status, StatusCode::OK);
    // Far below the 10 s lease it would have waited out.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let waits = Scrape::take(&instances[1]).await;
    for outcome in ["filled", "taken_over", "gave_up"] {
        assert_eq!(
            waits.get(&format!(
                "{P}_l2_fleet_waits_total{{outcome=\"{outcome}\"}}"
            )),
            0.0
        );
    }
    assert_eq!(sim.image_get_count(IMG), 2);
    stop_all(instances).await;
}

#[tokio::test]
async fn a_credential_the_api_refused_is_not_served_from_the_fleet() {
    let (_redis, sim, instances) = start_fleet(3, test_config(), Some(GRANT_KEY)).await;
    let set_ok = l2_series("set", "ok");
    assert_eq!(instances[0].get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    until_metric(&instances[0], &set_ok, 1.0).await;
    // The image moves to Bob's folder: the API now refuses Alice.
    sim.put_image(baremetal_api_sim::Image::ready(
        IMG,
        BOB_FOLDER,
        "ubuntu-24-04",
    ));
    let refused = instances[1].get_fresh(IMG, Some(ALICE)).await;
    assert!(refused.status.is_client_error(), "{}", refused.status);
    let delete_ok = l2_series("delete", "ok");
    until_metric(&instances[1], &delete_ok, 1.0).await;
    // Bob reads it, which shares the image again.
    assert_eq!(
        instances[0].get(IMG, Some(BOB)).await.status,
        StatusCode::OK
    );
    until_metric(&instances[0], &set_ok, 2.0).await;
    // On a third instance Alice is sent to the API, which refuses her.
    let before = sim.image_get_count(IMG);
    let alice = instances[2].get(IMG, Some(ALICE)).await;
    assert!(alice.status.is_client_error(), "{}", alice.status);
    assert_eq!(sim.image_get_count(IMG), before + 1);
    // And Bob is a hit there.
    assert_eq!(instances[2].get(IMG, Some(BOB)).await.x_cache(), "HIT");
    stop_all(instances).await;
}

#[tokio::test]
async fn a_fetch_that_raced_a_mutation_is_not_shared() {
    let (redis, sim, instances) = start_fleet(3, shared_config(), None).await;
    // The first fetch gets the old image, dripped slowly: the mutation lands meanwhile.
    sim.set_fault(
        baremetal_api_sim::FaultScope::Image(IMG.to_string()),
        baremetal_api_sim::Fault::SlowDrip(Duration::from_millis(5)),
        Some(1),
    );
    let slow = spawn_get(&instances[0], IMG, Some(ALICE));
    instances[0].until_upstream_saw(1).await;
    let patch = patch_description(&instances[1], IMG, "patched");
    assert_eq!(instances[1].send(patch).await.status, StatusCode::OK);
    let old = slow.await.unwrap();
    assert_eq!(old.status, StatusCode::OK);
    assert_ne!(old.json()["description"], "patched");
    // Wait until the slow fetch has finished with Redis (its lease is released).
    until_no_leases(&redis).await;
    // Nobody is served the old image from the fleet.
    for h in &instances[1..] {
        assert_eq!(
            h.get(IMG, Some(ALICE)).await.json()["description"],
            "patched"
        );
    }
    stop_all(instances).await;
}

#[tokio::test]
async fn with_a_negative_ttl_a_404_still_invalidates_the_fleet() {
    let config = Config {
        negative_ttl: Duration::from_secs(30),
        ..shared_config()
    };
    let (_redis, _sim, instances) = start_fleet(2, config, None).await;
    for h in &instances {
        assert_eq!(h.get(IMG, Some(ALICE)).await.status, StatusCode::OK);
    }
    assert_eq!(instances[1].get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    delete_behind_the_proxies(&instances[0], IMG).await;
    assert_eq!(
        instances[0].get_fresh(IMG, Some(ALICE)).await.status,
        StatusCode::NOT_FOUND
    );
    until_metric(&instances[1], &fleet_drops(), 1.0).await;
    assert_eq!(
        instances[1].get(IMG, Some(ALICE)).await.status,
        StatusCode::NOT_FOUND
    );
    stop_all(instances).await;
}

#[tokio::test]
async fn rediss_with_a_private_ca_works_as_the_fleet_tier() {
    let redis = RedisServer::start_tls().await;
    assert!(redis.url().starts_with("rediss://"));
    let sim = simulator();
    let mut config = fleet_config(shared_config(), vec![redis.url()], None);
    if let Some(tier) = config.redis.as_mut() {
        tier.ca_file = redis.ca_file.clone();
    }
    let instances = fleet(2, &sim, config).await;
    until_listening(&instances).await;
    burst_over(&instances, &sim, IMG, 100).await;
    assert_eq!(sim.image_get_count(IMG), 1);
    // Without the CA the server is not trusted: no fleet tier, but every answer still comes.
    let untrusted = fleet(
        1,
        &sim,
        fleet_config(shared_config(), vec![redis.url()], None),
    )
    .await;
    assert_eq!(
        untrusted[0].get(IMG2, Some(ALICE)).await.status,
        StatusCode::OK
    );
    until_reads_fail(&untrusted[0]).await;
    stop_all(untrusted).await;
    stop_all(instances).await;
}

#[tokio::test]
async fn in_shared_mode_a_404_anywhere_invalidates_the_fleet() {
    let (_redis, sim, instances) = start_fleet(2, shared_config(), None).await;
    assert_eq!(instances[0].get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(instances[0].get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    // The second instance, which holds no copy, hears the 404.
    delete_behind_the_proxies(&instances[0], IMG).await;
    assert_eq!(
        instances[1].get_fresh(IMG, Some(ALICE)).await.status,
        StatusCode::NOT_FOUND
    );
    until_metric(&instances[0], &fleet_drops(), 1.0).await;
    assert_eq!(
        instances[0].get(IMG, Some(ALICE)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(sim.image_get_count(IMG), 3);
    stop_all(instances).await;
}

#[tokio::test]
async fn a_quiet_fleet_keeps_its_subscription_and_its_local_caches() {
    let (_redis, sim, instances) = start_fleet(2, shared_config(), None).await;
    for h in &instances {
        assert_eq!(h.get(IMG, Some(ALICE)).await.status, StatusCode::OK);
    }
    // Past the subscription's 5 s ping (a ping that failed would resubscribe and drop the
    // local caches).
    tokio::time::sleep(Duration::from_secs(7)).await;
    for h in &instances {
        assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
        let scrape = Scrape::take(h).await;
        assert_eq!(
            scrape.get(&format!("{P}_l2_messages_total{{kind=\"resync\"}}")),
            0.0
        );
    }
    assert_eq!(sim.image_get_count(IMG), 1);
    stop_all(instances).await;
}

#[tokio::test]
async fn an_instance_starts_and_answers_while_redis_is_down() {
    // A port nothing listens on: every connection is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let sim = simulator();
    let instances = fleet(
        1,
        &sim,
        fleet_config(shared_config(), vec![format!("redis://{closed}/")], None),
    )
    .await;
    let h = &instances[0];
    for (id, token) in [(IMG, ALICE), (IMG2, ALICE), (BOB_IMG, BOB)] {
        let reply = h.get(id, Some(token)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json(), expected_body(&sim, id));
    }
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    until_metric(h, &format!("{P}_l2_circuit_open"), 1.0).await;
    assert!(Scrape::take(h).await.get(&l2_series("get", "error")) >= 1.0);
    stop_all(instances).await;
}

/// Waits until `series` on `h` is exactly `value`.
async fn until_metric_is(h: &Harness, series: &str, value: f64) {
    eventually(&format!("{series} comes to {value}"), || async move {
        match Scrape::take(h).await.get(series) {
            now if now == value => Ok(()),
            now => Err(format!("{now}")),
        }
    })
    .await
}

#[tokio::test]
async fn an_invalidation_redis_missed_is_sent_when_it_is_back() {
    let (redis, sim, instances) = start_fleet(2, shared_config(), None).await;
    let (a, b) = (&instances[0], &instances[1]);
    assert_eq!(a.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    until_metric(a, &l2_series("set", "ok"), 1.0).await;
    until_no_leases(&redis).await;
    assert_eq!(b.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    // Redis takes no writes (nor publishes) for a while: the PATCH's invalidation fails.
    let mut connection = redis.connection().await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("WRITE")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(
        a.send(patch_description(a, IMG, "patched")).await.status,
        StatusCode::OK
    );
    let unsent = format!("{P}_l2_unsent_invalidations");
    assert_eq!(Scrape::take(a).await.get(&unsent), 1.0);
    // Meanwhile the old value, still in Redis, is not trusted by the instance that knows.
    assert_eq!(
        a.get(IMG, Some(ALICE)).await.json()["description"],
        "patched"
    );
    // Once Redis is back, the invalidation is sent, and reaches the other instance's copy.
    until_metric_is(a, &unsent, 0.0).await;
    until_metric(b, &fleet_drops(), 1.0).await;
    assert_eq!(
        b.get(IMG, Some(ALICE)).await.json()["description"],
        "patched"
    );
    assert_eq!(sim.image_get_count(IMG), 3);
    stop_all(instances).await;
}

#[tokio::test]
async fn a_404_to_a_credential_that_could_read_the_shared_copy_drops_it_everywhere() {
    let (redis, sim, instances) = start_fleet(3, test_config(), Some(GRANT_KEY)).await;
    let (a, b, c) = (&instances[0], &instances[1], &instances[2]);
    assert_eq!(a.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    until_metric(a, &l2_series("set", "ok"), 1.0).await;
    assert_eq!(a.get(IMG, Some(ALICE2)).await.x_cache(), "MISS");
    until_metric(a, &l2_series("set", "ok"), 2.0).await;
    until_no_leases(&redis).await;
    delete_behind_the_proxies(a, IMG).await;
    // Alice asks B, which holds no copy, to check: the API says 404.
    assert_eq!(
        b.get_fresh(IMG, Some(ALICE)).await.status,
        StatusCode::NOT_FOUND
    );
    // Her grant held, so the image is gone for everyone: the copy A holds too.
    until_metric(a, &fleet_drops(), 1.0).await;
    assert_eq!(c.get(IMG, Some(ALICE2)).await.status, StatusCode::NOT_FOUND);
    assert_eq!(a.get(IMG, Some(ALICE2)).await.status, StatusCode::NOT_FOUND);
    // A 404 to a token that was never shown the image ends no one else's copy: it may only
    // mean "not for you".
    assert_eq!(a.get(IMG2, Some(ALICE)).await.x_cache(), "MISS");
    until_metric(a, &l2_series("set", "ok"), 3.0).await;
    until_no_leases(&redis).await;
    delete_behind_the_proxies(a, IMG2).await;
    assert_eq!(
        b.get_fresh(IMG2, Some(ALICE2)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(c.get(IMG2, Some(ALICE)).await.x_cache(), "HIT");
    assert_eq!(sim.image_get_count(IMG2), 2);
    stop_all(instances).await;
}

#[tokio::test]
async fn instances_in_different_modes_on_one_prefix_invalidate_each_other() {
    let redis = RedisServer::start().await;
    let sim = simulator();
    let shared = fleet(
        1,
        &sim,
        fleet_config(shared_config(), vec![redis.url()], None),
    )
    .await;
    let per_credential = fleet(
        2,
        &sim,
        fleet_config(test_config(), vec![redis.url()], Some(GRANT_KEY)),
    )
    .await;
    until_listening(&shared).await;
    until_listening(&per_credential).await;
    let (first, second) = (&per_credential[0], &per_credential[1]);
    assert_eq!(first.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    until_metric(first, &l2_series("set", "ok"), 1.0).await;
    until_no_leases(&redis).await;
    // A mutation through the shared-mode instance ends the per-credential value too.
    let patch = patch_description(&shared[0], IMG, "patched");
    assert_eq!(shared[0].send(patch).await.status, StatusCode::OK);
    until_metric(first, &fleet_drops(), 1.0).await;
    assert_eq!(
        second.get(IMG, Some(ALICE)).await.json()["description"],
        "patched"
    );
    // So does a purge of everything.
    until_metric(second, &l2_series("set", "ok"), 1.0).await;
    until_no_leases(&redis).await;
    assert_eq!(first.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    shared[0].admin(Method::DELETE, "/cache").await;
    until_metric(first, &fleet_drops(), 2.0).await;
    assert_eq!(first.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    stop_all(shared).await;
    stop_all(per_credential).await;
}

#[tokio::test]
async fn when_the_answer_is_not_shared_the_fleet_does_not_queue_for_it() {
    let (_redis, sim, instances) = start_fleet(4, shared_config(), None).await;
    sim.set_status(IMG, "CREATING");
    // Long enough that all four ask while the first fetch is under way.
    sim.set_fault(
        FaultScope::Image(IMG.to_string()),
        Fault::Delay(Duration::from_millis(1000)),
        None,
    );
    let tasks: Vec<_> = instances
        .iter()
        .map(|h| spawn_get(h, IMG, Some(ALICE)))
        .collect();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["status"], "CREATING");
    }
    assert_eq!(sim.image_get_count(IMG), 4);
    // The three that waited fetched as soon as the first answer turned out unshareable,
    // not one after another behind the lease.
    assert_eq!(fleet_waits(&instances, "taken_over").await, 0.0);
    assert_eq!(fleet_waits(&instances, "gave_up").await, 0.0);
    assert_eq!(fleet_waits(&instances, "not_shared").await, 3.0);
    stop_all(instances).await;
}

#[tokio::test]
async fn a_fetch_slower_than_the_lease_keeps_it_and_stays_one_request() {
    let redis = RedisServer::start().await;
    let sim = simulator();
    let base = Config {
        upstream_timeout: Duration::from_secs(15),
        ..shared_config()
    };
    let mut config = fleet_config(base, vec![redis.url()], None);
    if let Some(tier) = config.redis.as_mut() {
        tier.lease = Duration::from_secs(2);
    }
    let instances = fleet(3, &sim, config).await;
    until_listening(&instances).await;
    // Two and a half lease lengths (and within the waiters' half of the upstream timeout):
    // without renewal, other instances would take the lease over and fetch again. (Renewed
    // every 500 ms, it is lost only if four renewals in a row fail.)
    sim.set_fault(
        FaultScope::Image(IMG.to_string()),
        Fault::Delay(Duration::from_millis(5000)),
        None,
    );
    burst_over(&instances, &sim, IMG, 30).await;
    assert_eq!(sim.image_get_count(IMG), 1);
    stop_all(instances).await;
}

/// Per-credential, with a 6 s TTL whose second half is refreshed ahead.
fn refreshing_config() -> Config {
    Config {
        ttl: Duration::from_secs(6),
        refresh_ahead: 50,
        ..test_config()
    }
}

#[tokio::test]
async fn a_per_credential_refresh_asks_the_api_even_when_the_fleet_has_a_newer_value() {
    let (redis, sim, instances) = start_fleet(2, refreshing_config(), Some(GRANT_KEY)).await;
    assert_eq!(instances[0].get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    // Alice's check is at least as old as this clock says (it starts once the check is made),
    // however long the first request took.
    let started = std::time::Instant::now();
    until_metric(&instances[0], &l2_series("set", "ok"), 1.0).await;
    until_no_leases(&redis).await;
    // Another token, on another instance, a little later: a newer value in Redis.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(instances[1].get(IMG, Some(ALICE2)).await.x_cache(), "MISS");
    assert_eq!(sim.image_get_count(IMG), 2);
    // In the last half of Alice's check: the hit refreshes it, at the API.
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(started.elapsed())).await;
    assert_eq!(instances[0].get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    let sim = &sim;
    eventually("the refresh asks the API", || async move {
        (sim.image_get_count(IMG) == 3).then_some(())
    })
    .await;
    assert_eq!(sim.image_get_count(IMG), 3, "the refresh asked the API");
    // So Alice's check was renewed: past the first one's TTL she still hits.
    tokio::time::sleep(Duration::from_millis(6500).saturating_sub(started.elapsed())).await;
    assert_eq!(instances[0].get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    stop_all(instances).await;
}

#[tokio::test]
async fn a_redis_that_checks_client_certificates_takes_ours() {
    let redis = RedisServer::start_tls_checking_clients().await;
    let sim = simulator();
    let with_certificate = |certificate: bool| {
        let mut config = fleet_config(shared_config(), vec![redis.url()], None);
        if let Some(tier) = config.redis.as_mut() {
            tier.ca_file = redis.ca_file.clone();
            tier.client_cert = redis.client_cert.clone().filter(|_| certificate);
        }
        config
    };
    let instances = fleet(2, &sim, with_certificate(true)).await;
    until_listening(&instances).await;
    burst_over(&instances, &sim, IMG, 100).await;
    assert_eq!(sim.image_get_count(IMG), 1);
    // Without one the server refuses us: no fleet tier, but every answer still comes.
    let refused = fleet(1, &sim, with_certificate(false)).await;
    assert_eq!(
        refused[0].get(IMG2, Some(ALICE)).await.status,
        StatusCode::OK
    );
    until_reads_fail(&refused[0]).await;
    stop_all(refused).await;
    stop_all(instances).await;
}

#[tokio::test]
async fn a_hot_credential_is_refreshed_once_per_fleet() {
    let (_redis, sim, instances) = start_fleet(3, refreshing_config(), Some(GRANT_KEY)).await;
    assert_eq!(instances[0].get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    // Alice's check is at least as old as this clock says (it starts once the check is made),
    // however long the first request took.
    let started = std::time::Instant::now();
    until_metric(&instances[0], &l2_series("set", "ok"), 1.0).await;
    for h in &instances[1..] {
        assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    }
    // In the last half of Alice's check, the first instance's hit refreshes it at the API...
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(started.elapsed())).await;
    assert_eq!(instances[0].get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    until_metric(&instances[0], &l2_series("set", "ok"), 2.0).await;
    assert_eq!(sim.image_get_count(IMG), 2);
    // ...and the others' refreshes take that newer check from Redis.
    for h in &instances[1..] {
        assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
        until_metric(h, &l2_series("get", "ok"), 2.0).await;
    }
    assert_eq!(sim.image_get_count(IMG), 2);
    // Past the first check's TTL every instance still hits.
    tokio::time::sleep(Duration::from_millis(6500).saturating_sub(started.elapsed())).await;
    for h in &instances {
        assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    }
    stop_all(instances).await;
}

#[tokio::test]
async fn a_refused_token_leading_a_burst_hands_the_lease_to_one_waiter() {
    let (_redis, sim, instances) = start_fleet(4, shared_config(), None).await;
    sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_millis(500)),
        None,
    );
    let forged = spawn_get(&instances[0], IMG, Some(FORGED));
    instances[0].until_upstream_saw(1).await;
    let tasks: Vec<_> = instances[1..]
        .iter()
        .map(|h| spawn_get(h, IMG, Some(ALICE)))
        .collect();
    assert!(forged.await.unwrap().status.is_client_error());
    for task in tasks {
        assert_eq!(task.await.unwrap().status, StatusCode::OK);
    }
    // The refusal was the forged token's alone: one waiter took the lease, the rest its
    // answer (not every instance at once).
    assert_eq!(sim.image_get_count(IMG), 2);
    stop_all(instances).await;
}

#[tokio::test]
async fn a_404_for_an_id_never_shared_leaves_nothing_in_redis_nor_to_retry() {
    let (redis, _sim, instances) = start_fleet(1, shared_config(), None).await;
    let h = &instances[0];
    assert_eq!(
        h.get(MISSING, Some(ALICE)).await.status,
        StatusCode::NOT_FOUND
    );
    until_metric(h, &l2_series("delete", "ok"), 1.0).await;
    until_no_leases(&redis).await;
    let mut connection = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("bic-test:*")
        .query_async(&mut connection)
        .await
        .unwrap();
    // Only the waiters' one-second pass (a 404 is no one's to share).
    for key in keys.iter().filter(|k| k.contains(MISSING)) {
        assert!(key.contains(":pass:"), "written for it: {key}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(
            (0..=1000).contains(&ttl) || ttl == -2,
            "{key} lives {ttl} ms"
        );
    }
    // Nor, when Redis takes no writes, is it kept to send later: it may not exist at all.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1000)
        .arg("WRITE")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(
        h.get_fresh(MISSING, Some(ALICE)).await.status,
        StatusCode::NOT_FOUND
    );
    let failed = || async {
        let scrape = Scrape::take(h).await;
        scrape.get(&l2_series("delete", "timeout")) + scrape.get(&l2_series("delete", "error"))
    };
    eventually("the 404's script fails", || async {
        (failed().await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(failed().await, 1.0, "the 404's script was not taken");
    assert_eq!(
        Scrape::take(h)
            .await
            .get(&format!("{P}_l2_unsent_invalidations")),
        0.0
    );
    stop_all(instances).await;
}

#[tokio::test]
async fn an_instance_that_cannot_listen_neither_takes_shared_values_nor_waits_for_them() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    // A Redis user that may do everything but subscribe.
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "deaf",
            "on",
            ">pw",
            "~*",
            "&*",
            "+@all",
            "-subscribe",
            "-psubscribe",
            "-ssubscribe",
        ])
        .query_async(&mut connection)
        .await
        .unwrap();
    let sim = simulator();
    let listening = fleet(
        1,
        &sim,
        fleet_config(shared_config(), vec![redis.url()], None),
    )
    .await;
    let deaf_url = redis.url().replace("redis://", "redis://deaf:pw@");
    let deaf = fleet(1, &sim, fleet_config(shared_config(), vec![deaf_url], None)).await;
    until_listening(&listening).await;
    sim.set_fault(
        FaultScope::Image(IMG.to_string()),
        Fault::Delay(Duration::from_millis(1000)),
        None,
    );
    let on_listening = spawn_get(&listening[0], IMG, Some(ALICE));
    listening[0].until_upstream_saw(1).await;
    // It could not hear that a shared value was invalidated: it fetches on its own at once.
    let on_deaf = deaf[0].get(IMG, Some(ALICE)).await;
    assert_eq!(on_deaf.status, StatusCode::OK);
    assert_eq!(on_listening.await.unwrap().status, StatusCode::OK);
    assert_eq!(sim.image_get_count(IMG), 2);
    let scrape = Scrape::take(&deaf[0]).await;
    assert_eq!(scrape.get(&format!("{P}_l2_subscribed")), 0.0);
    for outcome in ["filled", "taken_over", "gave_up", "not_shared"] {
        let waits = format!("{P}_l2_fleet_waits_total{{outcome=\"{outcome}\"}}");
        assert_eq!(scrape.get(&waits), 0.0, "{outcome}");
    }
    // Nor does it take a value that is in Redis already.
    assert_eq!(listening[0].get(IMG2, Some(ALICE)).await.x_cache(), "MISS");
    until_metric(&listening[0], &l2_series("set", "ok"), 2.0).await;
    assert_eq!(deaf[0].get(IMG2, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(sim.image_get_count(IMG2), 2);
    assert_eq!(
        Scrape::take(&deaf[0]).await.get(&l2_series("get", "ok")),
        0.0
    );
    stop_all(deaf).await;
    stop_all(listening).await;
}

#[tokio::test]
async fn in_shared_mode_a_404_reaches_copies_that_redis_no_longer_holds() {
    let (redis, _sim, instances) = start_fleet(3, shared_config(), None).await;
    let (a, b, c) = (&instances[0], &instances[1], &instances[2]);
    assert_eq!(a.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    until_metric(a, &l2_series("set", "ok"), 1.0).await;
    until_no_leases(&redis).await;
    assert_eq!(b.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    // Redis loses the value (evicted, say) while A and B hold copies.
    let mut connection = redis.connection().await;
    let _: i64 = redis::cmd("DEL")
        .arg(format!("bic-test:shared:image:{{{IMG}}}"))
        .query_async(&mut connection)
        .await
        .unwrap();
    delete_behind_the_proxies(a, IMG).await;
    // C, which holds no copy, sees the 404, and tells the others.
    assert_eq!(
        c.get_fresh(IMG, Some(ALICE)).await.status,
        StatusCode::NOT_FOUND
    );
    for h in [a, b] {
        until_metric(h, &fleet_drops(), 1.0).await;
        assert_eq!(h.get(IMG, Some(ALICE)).await.status, StatusCode::NOT_FOUND);
    }
    stop_all(instances).await;
}

#[tokio::test]
async fn a_token_refused_on_every_instance_does_not_queue_the_fleet() {
    let (_redis, sim, instances) = start_fleet(4, test_config(), Some(GRANT_KEY)).await;
    sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_millis(1000)),
        None,
    );
    let first = spawn_get(&instances[0], IMG, Some(FORGED));
    instances[0].until_upstream_saw(1).await;
    let rest: Vec<_> = instances[1..]
        .iter()
        .map(|h| spawn_get(h, IMG, Some(FORGED)))
        .collect();
    assert!(first.await.unwrap().status.is_client_error());
    for task in rest {
        assert!(task.await.unwrap().status.is_client_error());
    }
    // The lease was that token's, so its refusal was every waiter's: they asked at once
    // rather than one after another.
    assert_eq!(fleet_waits(&instances, "taken_over").await, 0.0);
    assert_eq!(fleet_waits(&instances, "not_shared").await, 3.0);
    stop_all(instances).await;
}

#[tokio::test]
async fn a_shared_value_replays_only_headers_that_describe_the_body() {
    let (redis, sim, instances) = start_fleet(1, shared_config(), None).await;
    let body = serde_json::to_vec(&expected_body(&sim, IMG)).unwrap();
    let headers: [(&str, &str); 6] = [
        ("content-type", "application/json"),
        ("etag", "\"v7\""),
        ("x-not-kept", "no"),
        ("set-cookie", "session=someone-elses"),
        ("connection", "x-hop"),
        ("x-hop", "1"),
    ];
    let produced = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // A value as another instance (or anyone with access to Redis) could have written it.
    let mut value = [&b"BIC1"[..], &produced.to_be_bytes(), &200u16.to_be_bytes()].concat();
    value.extend_from_slice(&(headers.len() as u16).to_be_bytes());
    for (name, header_value) in headers {
        for part in [name, header_value] {
            value.extend_from_slice(&(part.len() as u16).to_be_bytes());
            value.extend_from_slice(part.as_bytes());
        }
    }
    value.extend_from_slice(&body);
    redis_set(&redis, &format!("bic-test:shared:image:{{{IMG}}}"), &value).await;
    let reply = instances[0].get(IMG, Some(ALICE)).await;
    assert_eq!(reply.x_cache(), "HIT");
    assert_eq!(reply.header("etag"), Some("\"v7\""));
    for name in ["x-not-kept", "set-cookie", "x-hop"] {
        assert_eq!(reply.header(name), None, "{name}");
    }
    assert_eq!(sim.image_get_count(IMG), 0);
    stop_all(instances).await;
}

#[tokio::test]
async fn a_refusal_on_one_instance_ends_the_credentials_copies_on_the_others() {
    let (_redis, sim, instances) = start_fleet(2, test_config(), Some(GRANT_KEY)).await;
    assert_eq!(instances[0].get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    until_metric(&instances[0], &l2_series("set", "ok"), 1.0).await;
    // The second instance takes Alice's grant from the fleet into its own cache.
    assert_eq!(instances[1].get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    assert_eq!(instances[1].get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    // The API stops letting Alice read it, and the first instance learns so.
    let mut moved = sim.image(IMG).unwrap();
    moved.folder_id = BOB_FOLDER.into();
    sim.put_image(moved);
    assert_eq!(
        instances[0].get_fresh(IMG, Some(ALICE)).await.status,
        StatusCode::FORBIDDEN
    );
    until_metric(&instances[1], &fleet_drops(), 1.0).await;
    let before = sim.image_get_count(IMG);
    let elsewhere = instances[1].get(IMG, Some(ALICE)).await;
    assert_eq!(elsewhere.status, StatusCode::FORBIDDEN);
    assert_eq!(sim.image_get_count(IMG), before + 1);
    stop_all(instances).await;
}

#[tokio::test]
async fn refused_mutations_write_nothing_to_redis_and_drop_nothing() {
    let (redis, sim, instances) = start_fleet(2, test_config(), Some(GRANT_KEY)).await;
    assert_eq!(instances[0].get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    until_metric(&instances[0], &l2_series("set", "ok"), 1.0).await;
    until_no_leases(&redis).await;
    let mut connection = redis.connection().await;
    let keys = |connection: &mut redis::aio::MultiplexedConnection| {
        let mut connection = connection.clone();
        async move {
            let mut keys: Vec<String> = redis::cmd("KEYS")
                .arg("*")
                .query_async(&mut connection)
                .await
                .unwrap();
            keys.sort();
            keys
        }
    };
    let before = keys(&mut connection).await;
    // Anonymous and forged mutations of made-up IDs and of the cached image, and another
    // tenant's, all refused by the API.
    for i in 0..100 {
        let h = &instances[i % 2];
        let id = if i % 4 == 0 {
            IMG.to_string()
        } else {
            format!("ly5madeup{i:011}")
        };
        let token = match i % 3 {
            0 => None,
            1 => Some(FORGED),
            _ => Some(BOB),
        };
        let mut request = http::Request::builder()
            .method(if i % 2 == 0 {
                Method::DELETE
            } else {
                Method::PATCH
            })
            .uri(format!("http://{}{}", h.addr, image_path(&id)));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let reply = h
            .send(request.body(Full::new(Bytes::from_static(b"{}"))).unwrap())
            .await;
        assert!(reply.status.is_client_error(), "{}", reply.status);
    }
    assert_eq!(keys(&mut connection).await, before);
    for h in &instances {
        assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
        let scrape = Scrape::take(h).await;
        assert_eq!(scrape.get(&fleet_drops()), 0.0);
        assert_eq!(
            scrape.get(&format!("{P}_invalidations_total{{reason=\"mutation\"}}")),
            0.0
        );
    }
    assert_eq!(sim.image_get_count(IMG), 1);
    stop_all(instances).await;
}
