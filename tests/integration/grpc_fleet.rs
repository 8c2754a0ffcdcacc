//! The Redis fleet tier over gRPC: proxies sharing one `redis-server` share gRPC entries as
//! they share REST ones, an Update through one instance drops every instance's entries of
//! the image in both protocols, and a credential never checked is not served the shared
//! value.

use std::sync::Arc;
use std::time::Duration;

use baremetal_api_sim::grpc::{self, protobuf::FieldMask, ImageClient, UpdateImageRequest};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use tonic::Code;

use crate::support::fleet::*;
use crate::support::grpc::*;
use crate::support::*;

/// Each instance's gRPC client.
async fn clients(instances: &[Arc<Harness>]) -> Vec<ImageClient> {
    let mut clients = Vec::new();
    for h in instances {
        clients.push(h.grpc().await);
    }
    clients
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_burst_spread_over_three_instances_is_one_upstream_call() {
    let (_redis, sim, instances) = start_fleet(3, shared_config(), None).await;
    let clients = clients(&instances).await;
    let tasks: Vec<_> = (0..300)
        .map(|n| {
            let mut client = clients[n % clients.len()].clone();
            tokio::spawn(async move { get_raw(&mut client, IMG, Some(ALICE), &[]).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for task in tasks {
        bodies.push(ok(task.await.unwrap(), "a call of the burst").into_inner());
    }
    assert_eq!(
        sim.grpc_image_get_count(IMG),
        1,
        "one upstream call for the fleet"
    );
    assert!(grpc::sim_only_field(&bodies[0]).is_some());
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "the same bytes everywhere"
    );
    for mut client in clients {
        let answer = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
        assert_eq!(x_cache(&answer), "HIT");
    }
    stop_all(instances).await;
}

#[tokio::test]
async fn a_grpc_miss_on_one_instance_is_a_hit_on_another() {
    let (_redis, sim, instances) = start_fleet(2, test_config(), Some(GRANT_KEY)).await;
    let (a, b) = (&instances[0], &instances[1]);
    let (mut on_a, mut on_b) = (a.grpc().await, b.grpc().await);
    let first = get_ok(&mut on_a, IMG, Some(ALICE), "Get on A").await;
    assert_eq!(x_cache(&first), "MISS");
    until_metric(a, &l2_series("set", "ok"), 1.0).await;
    let second = get_ok(&mut on_b, IMG, Some(ALICE), "Get on B").await;
    assert_eq!(x_cache(&second), "HIT", "{}", cache_status(&second));
    assert_eq!(
        second.get_ref(),
        first.get_ref(),
        "the message bytes, field 50 included"
    );
    assert!(meta(second.metadata(), "age").is_some());
    assert_eq!(meta(second.metadata(), "x-request-id"), None);
    assert_eq!(sim.grpc_image_get_count(IMG), 1, "no second upstream call");
    // The REST entry of the image is another value: B asks the API for it.
    assert_eq!(b.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(sim.image_get_count(IMG), 1);
    assert_eq!(sim.grpc_image_get_count(IMG), 1);
    stop_all(instances).await;
}

/// An Update of `id`'s description through `client`, as Alice.
async fn update(client: &mut ImageClient, id: &str, description: &str) {
    let request = UpdateImageRequest {
        image_id: id.to_string(),
        update_mask: Some(FieldMask {
            paths: vec!["description".into()],
        }),
        description: description.to_string(),
        ..UpdateImageRequest::default()
    };
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        client.update(request, Some(ALICE), &[]),
    )
    .await
    .unwrap();
    assert!(ok(answer, "Update").get_ref().done);
}

/// Caches `id` in both protocols on `h` (as Alice), and checks both are hits now.
async fn cache_both(h: &Harness, client: &mut ImageClient, id: &str) {
    ok(get_raw(client, id, Some(ALICE), &[]).await, "Get");
    h.get(id, Some(ALICE)).await;
    let hit = ok(get_raw(client, id, Some(ALICE), &[]).await, "Get");
    assert_eq!(x_cache(&hit), "HIT");
    assert_eq!(h.get(id, Some(ALICE)).await.x_cache(), "HIT");
}

/// The description `h` serves now in each protocol, and their `x-cache`.
async fn seen(h: &Harness, client: &mut ImageClient, id: &str) -> [(String, String); 2] {
    let answer = ok(get_raw(client, id, Some(ALICE), &[]).await, "Get");
    let rest = h.get(id, Some(ALICE)).await;
    [
        (
            x_cache(&answer).to_string(),
            image(answer.get_ref()).description,
        ),
        (
            rest.x_cache().to_string(),
            rest.json()["description"].as_str().unwrap().to_string(),
        ),
    ]
}

#[tokio::test]
async fn a_mutation_through_one_instance_drops_the_others_grpc_and_rest_entries() {
    let (_redis, _sim, instances) = start_fleet(2, test_config(), Some(GRANT_KEY)).await;
    let (a, b) = (&instances[0], &instances[1]);
    let (mut on_a, mut on_b) = (a.grpc().await, b.grpc().await);
    let messages = format!("{P}_l2_messages_total{{kind=\"invalidate\"}}");
    cache_both(a, &mut on_a, IMG).await;
    cache_both(b, &mut on_b, IMG).await;

    // A gRPC Update through A.
    update(&mut on_a, IMG, "updated through A").await;
    until_metric(b, &messages, 1.0).await;
    assert_eq!(
        Scrape::take(b).await.get(&fleet_drops()),
        2.0,
        "B dropped its gRPC and its REST entry"
    );
    let want = |description: &str| {
        [
            ("MISS".to_string(), description.to_string()),
            ("MISS".to_string(), description.to_string()),
        ]
    };
    assert_eq!(seen(b, &mut on_b, IMG).await, want("updated through A"));

    // A REST PATCH through B, the other way round.
    cache_both(a, &mut on_a, IMG).await;
    let patch = Request::builder()
        .method(Method::PATCH)
        .uri(format!("http://{}{}", b.addr, image_path(IMG)))
        .header("authorization", format!("Bearer {ALICE}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            r#"{"updateMask":"description","description":"patched through B"}"#,
        )))
        .unwrap();
    assert_eq!(b.send(patch).await.status, StatusCode::OK);
    until_metric(a, &messages, 2.0).await;
    assert_eq!(Scrape::take(a).await.get(&fleet_drops()), 2.0);
    assert_eq!(seen(a, &mut on_a, IMG).await, want("patched through B"));
    stop_all(instances).await;
}

#[tokio::test]
async fn another_tenant_is_not_served_the_shared_grpc_value() {
    let (_redis, sim, instances) = start_fleet(2, test_config(), Some(GRANT_KEY)).await;
    let (a, b) = (&instances[0], &instances[1]);
    let (mut on_a, mut on_b) = (a.grpc().await, b.grpc().await);
    let alice = get_ok(&mut on_a, IMG, Some(ALICE), "Alice on A").await;
    until_metric(a, &l2_series("set", "ok"), 1.0).await;

    get_failed(
        &mut on_b,
        IMG,
        Some(BOB),
        Code::PermissionDenied,
        "Bob on B",
    )
    .await;
    for token in [None, Some(FORGED)] {
        failed(
            get_raw(&mut on_b, IMG, token, &[]).await,
            Code::Unauthenticated,
            "no or a forged token on B",
        );
    }
    assert_eq!(sim.grpc_image_get_count(IMG), 4, "each went to the API");
    // Another token of the same tenant is checked at the API before it is served.
    let second = get_ok(&mut on_b, IMG, Some(ALICE2), "Alice's second token").await;
    assert_eq!(x_cache(&second), "MISS");
    assert_eq!(sim.grpc_image_get_count(IMG), 5);
    let on_b_alice = get_ok(&mut on_b, IMG, Some(ALICE), "Alice on B").await;
    assert_eq!(x_cache(&on_b_alice), "HIT");
    assert_eq!(on_b_alice.get_ref(), alice.get_ref());
    assert_eq!(sim.grpc_image_get_count(IMG), 5);
    stop_all(instances).await;
}
