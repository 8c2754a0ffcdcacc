//! The gRPC twin of the REST tests: `ImageService.Get` through the proxy with the
//! simulator's tonic client over h2c. Hits replay the upstream's message bytes (field 50,
//! which no client knows, included); only READY images are stored; tenants are kept apart;
//! a cold burst is one upstream call; Update and Delete invalidate, across protocols too;
//! everything else passes through untouched; no-cache, purges, what a fill sends upstream,
//! and the metrics.

use std::sync::Arc;
use std::time::Duration;

use baremetal_api_sim::grpc::{
    self, image::Status as ImageStatus, protobuf::FieldMask, ListImagesRequest, ListImagesResponse,
    UpdateImageRequest, GET_PATH, LIST_PATH,
};
use baremetal_api_sim::{Fault, FaultScope};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use prost::Message;
use tonic::Code;

use crate::support::grpc::*;
use crate::support::*;

/// An Update of `id`'s description through `client` as `token`.
async fn update_description(
    client: &mut grpc::ImageClient,
    id: &str,
    description: &str,
    token: Option<&str>,
) -> Call<grpc::Operation> {
    let request = UpdateImageRequest {
        image_id: id.to_string(),
        update_mask: Some(FieldMask {
            paths: vec!["description".into()],
        }),
        description: description.to_string(),
        ..UpdateImageRequest::default()
    };
    tokio::time::timeout(Duration::from_secs(30), client.update(request, token, &[]))
        .await
        .expect("an answer within 30 s")
}

/// A REST PATCH of `id`'s description through the proxy, as Alice.
async fn patch_description(h: &Harness, id: &str, description: &str) -> Reply {
    let patch = Request::builder()
        .method(Method::PATCH)
        .uri(format!("http://{}{}", h.addr, image_path(id)))
        .header("authorization", format!("Bearer {ALICE}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!(
            r#"{{"updateMask":"description","description":"{description}"}}"#
        ))))
        .unwrap();
    h.send(patch).await
}

// ---- 1. miss, then hit ------------------------------------------------------------------

#[tokio::test]
async fn grpc_miss_then_hit_replays_the_message_bytes_unknown_field_included() {
    let h = Harness::start().await;
    let mut client = h.grpc().await;
    let first = get_ok(&mut client, IMG, Some(ALICE), "first Get").await;
    assert_eq!(x_cache(&first), "MISS");
    let status = cache_status(&first);
    assert!(
        status.contains("fwd=miss") && status.contains("stored"),
        "{status}"
    );
    assert_eq!(meta(first.metadata(), "age"), None, "no Age on a miss");
    assert!(
        meta(first.metadata(), "x-request-id").is_some(),
        "the call that fetched gets the upstream's own metadata"
    );
    let bytes = first.into_inner();
    assert_eq!(
        grpc::sim_only_field(&bytes).as_deref(),
        Some(format!("sim:{IMG}").as_str()),
        "field 50 reaches the client"
    );
    let decoded = image(&bytes);
    assert_eq!(
        (decoded.id.as_str(), decoded.status()),
        (IMG, ImageStatus::Ready)
    );
    assert_eq!(decoded.name, h.sim.image(IMG).unwrap().name);

    let second = get_ok(&mut client, IMG, Some(ALICE), "second Get").await;
    assert_eq!(x_cache(&second), "HIT");
    assert!(
        cache_status(&second).starts_with("baremetal-image-cache; hit; ttl="),
        "{}",
        cache_status(&second)
    );
    let age: u64 = meta(second.metadata(), "age").unwrap().parse().unwrap();
    assert!(age < 60, "age {age}");
    assert_eq!(
        meta(second.metadata(), "content-type"),
        Some("application/grpc")
    );
    assert_eq!(meta(second.metadata(), "grpc-status"), Some("0"));
    assert_eq!(
        meta(second.metadata(), "x-request-id"),
        None,
        "per-call metadata is not replayed"
    );
    assert_eq!(meta(second.metadata(), "x-server-trace-id"), None);
    assert_eq!(second.into_inner(), bytes, "byte-identical message");
    assert_eq!(h.sim.grpc_image_get_count(IMG), 1);

    // The REST entry of the same image is another entry: a miss of its own.
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    assert_eq!(h.sim.image_get_count(IMG), 1);
    let third = get_ok(&mut client, IMG, Some(ALICE), "third Get").await;
    assert_eq!((x_cache(&third), third.get_ref()), ("HIT", &bytes));
    assert_eq!(h.sim.grpc_image_get_count(IMG), 1);
    h.stop().await;
}

// ---- 2. READY only ----------------------------------------------------------------------

#[tokio::test]
async fn grpc_no_status_but_ready_is_ever_cached() {
    let h = Harness::start().await;
    let mut client = h.grpc().await;
    for (n, (status, expected)) in [
        ("CREATING", ImageStatus::Creating),
        ("UPDATING", ImageStatus::Updating),
        ("DELETING", ImageStatus::Deleting),
        ("ERROR", ImageStatus::Error),
        ("STATUS_UNSPECIFIED", ImageStatus::StatusUnspecified),
        // No Image.Status: sent without field 7, which reads as STATUS_UNSPECIFIED.
        ("SOMETHING_NEW", ImageStatus::StatusUnspecified),
    ]
    .into_iter()
    .enumerate()
    {
        assert!(h.sim.set_status(IMG, status));
        for round in ["first", "second"] {
            let answer = get_ok(&mut client, IMG, Some(ALICE), status).await;
            assert_eq!(x_cache(&answer), "MISS", "{status}, {round} call");
            assert!(!cache_status(&answer).contains("stored"), "{status}");
            let bytes = answer.into_inner();
            assert_eq!(
                image(&bytes).status(),
                expected,
                "the client sees the status"
            );
            assert!(grpc::sim_only_field(&bytes).is_some(), "{status}");
        }
        assert_eq!(
            h.sim.grpc_image_get_count(IMG),
            2 * (n as u64 + 1),
            "{status}"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn grpc_a_ready_image_turning_deleting_is_dropped_in_both_protocols() {
    let h = Harness::start().await;
    let mut client = h.grpc().await;
    for expected in ["MISS", "HIT"] {
        let answer = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
        assert_eq!(x_cache(&answer), expected);
        assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), expected);
    }
    h.sim.set_status(IMG, "DELETING");
    let refreshed = ok(
        get_raw(
            &mut client,
            IMG,
            Some(ALICE),
            &[("cache-control", "no-cache")],
        )
        .await,
        "no-cache Get",
    );
    assert_eq!(x_cache(&refreshed), "BYPASS");
    assert_eq!(image(refreshed.get_ref()).status(), ImageStatus::Deleting);
    // Both READY copies are gone, though their TTL has not run out.
    h.sim.set_status(IMG, "READY");
    let next = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
    assert_eq!(x_cache(&next), "MISS");
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(h.sim.grpc_image_get_count(IMG), 3);
    assert_eq!(h.sim.image_get_count(IMG), 2);
    h.stop().await;
}

#[tokio::test]
async fn grpc_not_found_drops_a_cached_image_and_is_cached_only_with_a_negative_ttl() {
    let h = Harness::start().await;
    let mut client = h.grpc().await;
    for _ in 0..2 {
        get_failed(
            &mut client,
            MISSING,
            Some(ALICE),
            Code::NotFound,
            "a missing image",
        )
        .await;
    }
    assert_eq!(
        h.sim.grpc_image_get_count(MISSING),
        2,
        "not cached by default"
    );
    // A NOT_FOUND for an image Alice could read drops her copy.
    for expected in ["MISS", "HIT"] {
        let answer = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
        assert_eq!(x_cache(&answer), expected);
    }
    h.sim.set_fault(
        FaultScope::Image(IMG.into()),
        Fault::Status {
            status: 404,
            retry_after: None,
        },
        Some(1),
    );
    failed(
        get_raw(
            &mut client,
            IMG,
            Some(ALICE),
            &[("cache-control", "no-cache")],
        )
        .await,
        Code::NotFound,
        "a no-cache Get the API answers NOT_FOUND",
    );
    let after = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
    assert_eq!(x_cache(&after), "MISS", "the NOT_FOUND dropped the entry");
    h.stop().await;

    let h = Harness::with_config(baremetal_image_cache::Config {
        negative_ttl: Duration::from_secs(30),
        ..test_config()
    })
    .await;
    let mut client = h.grpc().await;
    get_failed(
        &mut client,
        MISSING,
        Some(ALICE),
        Code::NotFound,
        "a missing image",
    )
    .await;
    let again = get_failed(
        &mut client,
        MISSING,
        Some(ALICE),
        Code::NotFound,
        "a missing image, again",
    )
    .await;
    assert_eq!(meta(again.metadata(), "x-cache"), Some("HIT"));
    let raw = h
        .grpc_raw(
            GET_PATH,
            &[("authorization", &format!("Bearer {ALICE}"))],
            framed(&get_request(MISSING)),
        )
        .await;
    assert_eq!(raw.header("grpc-status"), Some("5"), "trailers-only");
    assert_eq!(raw.header("x-cache"), Some("HIT"));
    assert!(raw.header("age").is_some());
    assert_eq!(raw.headers.get_all("content-type").iter().count(), 1);
    assert!(raw.body.is_empty() && raw.trailers.is_none(), "no message");
    assert_eq!(h.sim.grpc_image_get_count(MISSING), 1);
    // Another credential is not told by the cache what the API told Alice.
    get_failed(&mut client, MISSING, Some(BOB), Code::NotFound, "Bob").await;
    assert_eq!(h.sim.grpc_image_get_count(MISSING), 2);
    h.stop().await;
}

/// As REST replays the API's 404 body, a NOT_FOUND kept for --negative-ttl is replayed with
/// the API's message and details.
#[tokio::test]
async fn grpc_a_cached_not_found_replays_the_apis_status_message_and_details() {
    let h = Harness::with_config(baremetal_image_cache::Config {
        negative_ttl: Duration::from_secs(30),
        ..test_config()
    })
    .await;
    let mut client = h.grpc().await;
    let first = get_failed(
        &mut client,
        MISSING,
        Some(ALICE),
        Code::NotFound,
        "a missing image",
    )
    .await;
    let cached = get_failed(
        &mut client,
        MISSING,
        Some(ALICE),
        Code::NotFound,
        "a missing image, from the cache",
    )
    .await;
    assert_eq!(meta(cached.metadata(), "x-cache"), Some("HIT"));
    assert_eq!(h.sim.grpc_image_get_count(MISSING), 1);
    assert_eq!(cached.message(), first.message(), "the API's grpc-message");
    let (first, cached) = (
        grpc::status_details(&first).expect("the API's details"),
        grpc::status_details(&cached).expect("the API's details, replayed"),
    );
    assert_eq!(
        cached, first,
        "grpc-status-details-bin, as REST replays the body"
    );
    h.stop().await;
}

// ---- 3. tenants -------------------------------------------------------------------------

#[tokio::test]
async fn grpc_each_credential_gets_what_the_upstream_would_give_it() {
    let h = Harness::start().await;
    let mut client = h.grpc().await;
    let alice = get_ok(&mut client, IMG, Some(ALICE), "Alice").await;
    let alice_bytes = alice.into_inner();
    let again = get_ok(&mut client, IMG, Some(ALICE), "Alice again").await;
    assert_eq!(x_cache(&again), "HIT");

    let bob = get_failed(&mut client, IMG, Some(BOB), Code::PermissionDenied, "Bob").await;
    assert_eq!(
        grpc::status_details(&bob).unwrap().code,
        Code::PermissionDenied as i32
    );
    let forged = get_failed(
        &mut client,
        IMG,
        Some(FORGED),
        Code::Unauthenticated,
        "a forged token",
    )
    .await;
    let almost = format!("{ALICE}x");
    get_failed(
        &mut client,
        IMG,
        Some(&almost),
        Code::Unauthenticated,
        "Alice's token and one more character",
    )
    .await;
    let nobody = get_failed(&mut client, IMG, None, Code::Unauthenticated, "no token").await;
    for status in [&bob, &forged, &nobody] {
        assert_ne!(status.details(), &alice_bytes[..]);
    }
    // The head of an answer without a token: it bypassed the cache.
    let raw = h.grpc_raw(GET_PATH, &[], framed(&get_request(IMG))).await;
    assert_eq!(raw.grpc_status(), Some(16));
    assert_eq!(raw.header("x-cache"), Some("BYPASS"));
    assert!(raw.body.is_empty(), "no message for a refused call");

    assert_eq!(
        h.sim.grpc_image_get_count(IMG),
        6,
        "everyone but Alice's second call went upstream"
    );
    let last = get_ok(&mut client, IMG, Some(ALICE), "Alice last").await;
    assert_eq!((x_cache(&last), last.get_ref()), ("HIT", &alice_bytes));
    h.stop().await;
}

#[tokio::test]
async fn grpc_with_forbidden_images_hidden_another_tenant_gets_not_found_and_evicts_nothing() {
    let h = Harness::start().await;
    h.sim.set_hide_forbidden_as_not_found(true);
    let mut client = h.grpc().await;
    let alice = get_ok(&mut client, IMG, Some(ALICE), "Alice").await;
    for _ in 0..2 {
        get_failed(&mut client, IMG, Some(BOB), Code::NotFound, "Bob").await;
    }
    let again = get_ok(&mut client, IMG, Some(ALICE), "Alice again").await;
    assert_eq!(x_cache(&again), "HIT", "Bob's NOT_FOUND evicted nothing");
    assert_eq!(again.get_ref(), alice.get_ref());
    assert_eq!(h.sim.grpc_image_get_count(IMG), 3);
    h.stop().await;
}

#[tokio::test]
async fn grpc_shared_mode_serves_one_entry_to_any_caller() {
    let h = Harness::with_config(shared_config()).await;
    let mut client = h.grpc().await;
    let first = get_ok(&mut client, IMG, Some(ALICE), "Alice").await;
    assert_eq!(x_cache(&first), "MISS");
    for token in [Some(ALICE2), Some(BOB), None] {
        let answer = ok(get_raw(&mut client, IMG, token, &[]).await, "any caller");
        assert_eq!(x_cache(&answer), "HIT", "{token:?}");
        assert_eq!(answer.get_ref(), first.get_ref());
    }
    assert_eq!(h.sim.grpc_image_get_count(IMG), 1);
    h.stop().await;
}

#[tokio::test]
async fn grpc_a_token_the_api_calls_invalid_on_any_call_loses_every_grant() {
    let h = Harness::start().await;
    let mut client = h.grpc().await;
    for id in [IMG, IMG2] {
        for token in [ALICE2, ALICE] {
            get_ok(&mut client, id, Some(token), "Get").await;
        }
        let hit = get_ok(&mut client, id, Some(ALICE2), "Get").await;
        assert_eq!(x_cache(&hit), "HIT");
    }
    h.sim.revoke_token(ALICE2);
    // A call that has nothing to do with the cache learns that the token is no good.
    let list = ListImagesRequest {
        folder_id: ALICE_FOLDER.into(),
        ..ListImagesRequest::default()
    };
    failed(
        client.list(list, Some(ALICE2), &[]).await,
        Code::Unauthenticated,
        "a List with the revoked token",
    );
    for id in [IMG, IMG2] {
        get_failed(
            &mut client,
            id,
            Some(ALICE2),
            Code::Unauthenticated,
            "a Get with the revoked token",
        )
        .await;
        let alice = get_ok(&mut client, id, Some(ALICE), "Alice").await;
        assert_eq!(x_cache(&alice), "HIT", "{id}: Alice keeps hers");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_shared_mode_keeps_a_refusal_to_its_own_credential() {
    let h = Harness::with_config(shared_config()).await;
    h.sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_millis(600)),
        Some(1),
    );
    let client = h.grpc().await;
    // Bob (refused) leads the flight; Alice joins it while it runs.
    let bob = {
        let mut client = client.clone();
        tokio::spawn(async move { get_raw(&mut client, IMG, Some(BOB), &[]).await })
    };
    h.until_upstream_saw(1).await;
    let alice = get_raw(&mut client.clone(), IMG, Some(ALICE), &[]).await;
    failed(bob.await.unwrap(), Code::PermissionDenied, "Bob");
    let alice = ok(alice, "Alice must not get Bob's PERMISSION_DENIED");
    assert_eq!(image(alice.get_ref()).id, IMG);
    assert_eq!(h.sim.grpc_image_get_count(IMG), 2);
    h.stop().await;
}

// ---- 4. a cold burst --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_a_cold_burst_of_500_is_one_upstream_call() {
    let h = Harness::start().await;
    // The upstream is slow enough that the whole burst arrives while the fetch runs.
    h.sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_millis(500)),
        None,
    );
    // Five connections, a hundred calls each, all at once.
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(h.grpc().await);
    }
    let mut tasks = Vec::new();
    for n in 0..500 {
        let mut client = clients[n % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            get_raw(&mut client, IMG, Some(ALICE), &[]).await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(ok(task.await.unwrap(), "a call of the burst"));
    }
    assert_eq!(h.sim.grpc_image_get_count(IMG), 1, "one upstream call");
    let bytes = answers[0].get_ref().clone();
    assert_eq!(image(&bytes).id, IMG);
    assert!(grpc::sim_only_field(&bytes).is_some());
    for answer in &answers {
        assert_eq!(answer.get_ref(), &bytes, "the same bytes for everyone");
        assert!(
            ["MISS", "HIT"].contains(&x_cache(answer)),
            "{}",
            x_cache(answer)
        );
    }
    let collapsed = answers
        .iter()
        .filter(|a| cache_status(a).contains("collapsed"))
        .count();
    assert!(collapsed > 0, "some calls joined the flight");
    for answer in answers
        .iter()
        .filter(|a| cache_status(a).contains("collapsed"))
    {
        assert_eq!(meta(answer.metadata(), "x-request-id"), None);
    }
    h.sim.clear_faults();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_every_caller_of_a_coalesced_burst_gets_the_status_of_an_error_answer() {
    let h = Harness::start().await;
    let client = h.grpc().await;
    // A slow upstream, so that the waiters join the leader's fetch.
    h.sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_millis(1000)),
        None,
    );
    let cases = [
        (IMG, BOB, Code::PermissionDenied),
        (MISSING, ALICE, Code::NotFound),
        (IMG2, FORGED, Code::Unauthenticated),
    ];
    for (n, (id, token, code)) in cases.into_iter().enumerate() {
        let spawn = || {
            let mut client = client.clone();
            tokio::spawn(async move { get_raw(&mut client, id, Some(token), &[]).await })
        };
        let leader = spawn();
        h.until_upstream_saw(n as u64 + 1).await;
        let waiters: Vec<_> = (0..10).map(|_| spawn()).collect();
        let leader = failed(leader.await.unwrap(), code, "the leader");
        for waiter in waiters {
            let status = failed(waiter.await.unwrap(), code, "a waiter of the flight");
            assert_eq!(status.message(), leader.message(), "{code:?}");
        }
        assert_eq!(h.sim.grpc_image_get_count(id), 1, "{code:?}: one flight");
    }
    h.sim.clear_faults();
    h.stop().await;
}

// ---- 5. mutations -----------------------------------------------------------------------

#[tokio::test]
async fn grpc_update_and_delete_invalidate_their_image_and_refused_ones_nothing() {
    let h = Harness::start().await;
    let mut client = h.grpc().await;
    let mutation_drops = format!("{P}_invalidations_total{{reason=\"mutation\"}}");
    for expected in ["MISS", "HIT"] {
        let answer = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
        assert_eq!(x_cache(&answer), expected);
    }
    // Refused Updates change nothing upstream, so they drop nothing.
    failed(
        update_description(&mut client, IMG, "by nobody", None).await,
        Code::Unauthenticated,
        "an Update without a token",
    );
    failed(
        update_description(&mut client, IMG, "by Bob", Some(BOB)).await,
        Code::PermissionDenied,
        "Bob's Update",
    );
    failed(
        update_description(&mut client, IMG, "forged", Some(FORGED)).await,
        Code::Unauthenticated,
        "a forged Update",
    );
    let still = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
    assert_eq!(
        x_cache(&still),
        "HIT",
        "a refused Update invalidates nothing"
    );
    assert_eq!(Scrape::take(&h).await.get(&mutation_drops), 0.0);

    let operation = ok(
        update_description(&mut client, IMG, "updated over gRPC", Some(ALICE)).await,
        "Alice's Update",
    );
    assert!(operation.get_ref().done);
    assert_eq!(x_cache(&operation), "", "a mutation is no Image.Get");
    let after = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
    assert_eq!(x_cache(&after), "MISS");
    assert_eq!(image(after.get_ref()).description, "updated over gRPC");
    let hit = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
    assert_eq!(
        (x_cache(&hit), image(hit.get_ref()).description.as_str()),
        ("HIT", "updated over gRPC")
    );
    assert_eq!(Scrape::take(&h).await.get(&mutation_drops), 1.0);

    // Delete: the next Get asks the API, which no longer has the image.
    for expected in ["MISS", "HIT"] {
        let answer = get_ok(&mut client, IMG2, Some(ALICE), "Get").await;
        assert_eq!(x_cache(&answer), expected);
    }
    failed(
        tokio::time::timeout(Duration::from_secs(30), client.delete(IMG2, Some(BOB), &[]))
            .await
            .unwrap(),
        Code::PermissionDenied,
        "Bob's Delete",
    );
    let still = get_ok(&mut client, IMG2, Some(ALICE), "Get").await;
    assert_eq!(
        x_cache(&still),
        "HIT",
        "a refused Delete invalidates nothing"
    );
    ok(
        tokio::time::timeout(
            Duration::from_secs(30),
            client.delete(IMG2, Some(ALICE), &[]),
        )
        .await
        .unwrap(),
        "Alice's Delete",
    );
    get_failed(
        &mut client,
        IMG2,
        Some(ALICE),
        Code::NotFound,
        "a Get after the Delete",
    )
    .await;
    assert_eq!(h.sim.grpc_image_get_count(IMG2), 2);
    h.stop().await;
}

#[tokio::test]
async fn grpc_and_rest_mutations_invalidate_each_others_entries() {
    let h = Harness::start().await;
    let reader = h.grpc().await;
    let mut client = h.grpc().await;
    let cache_both = |expected: &'static str| {
        let h = &h;
        let mut client = reader.clone();
        async move {
            let answer = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
            assert_eq!(x_cache(&answer), expected, "gRPC");
            let rest = h.get(IMG, Some(ALICE)).await;
            assert_eq!(rest.x_cache(), expected, "REST");
            (
                image(answer.get_ref()).description,
                rest.json()["description"].clone(),
            )
        }
    };
    cache_both("MISS").await;
    cache_both("HIT").await;
    // A gRPC Update drops the REST entry too.
    ok(
        update_description(&mut client, IMG, "from gRPC", Some(ALICE)).await,
        "Update",
    );
    let (grpc_seen, rest_seen) = cache_both("MISS").await;
    assert_eq!(
        (grpc_seen.as_str(), rest_seen.as_str()),
        ("from gRPC", Some("from gRPC"))
    );
    cache_both("HIT").await;
    // A REST PATCH drops the gRPC entry too.
    assert_eq!(
        patch_description(&h, IMG, "from REST").await.status,
        StatusCode::OK
    );
    let (grpc_seen, rest_seen) = cache_both("MISS").await;
    assert_eq!(
        (grpc_seen.as_str(), rest_seen.as_str()),
        ("from REST", Some("from REST"))
    );
    cache_both("HIT").await;
    assert_eq!(h.sim.grpc_image_get_count(IMG), 3);
    assert_eq!(h.sim.image_get_count(IMG), 3);
    h.stop().await;
}

// ---- 6. pass-through --------------------------------------------------------------------

#[tokio::test]
async fn grpc_list_and_its_errors_pass_through_untouched() {
    let h = Harness::start().await;
    let mut client = h.grpc().await;
    let mut direct = h.grpc_upstream().await;
    let list = ListImagesRequest {
        folder_id: ALICE_FOLDER.into(),
        page_size: 100,
        ..ListImagesRequest::default()
    };
    let message = Bytes::from(list.encode_to_vec());
    let through = ok(
        client
            .call_raw(LIST_PATH, message.clone(), Some(ALICE), &[])
            .await,
        "List through the proxy",
    );
    let upstream = ok(
        direct
            .call_raw(LIST_PATH, message.clone(), Some(ALICE), &[])
            .await,
        "List at the API",
    );
    assert_eq!(
        through.get_ref(),
        upstream.get_ref(),
        "the same message bytes"
    );
    let images = ListImagesResponse::decode(through.get_ref().clone()).unwrap();
    assert!(images.images.iter().any(|i| i.id == IMG));
    assert_eq!(x_cache(&through), "", "no x-cache on a pass-through");
    assert_eq!(meta(through.metadata(), "cache-status"), None);
    assert!(meta(through.metadata(), "x-request-id").is_some());

    // An error: its message and details as the API made them.
    let refused = failed(
        client
            .call_raw(LIST_PATH, message.clone(), Some(BOB), &[])
            .await,
        Code::PermissionDenied,
        "Bob lists Alice's folder",
    );
    let at_api = failed(
        direct.call_raw(LIST_PATH, message, Some(BOB), &[]).await,
        Code::PermissionDenied,
        "Bob lists Alice's folder at the API",
    );
    assert_eq!(refused.message(), at_api.message());
    assert!(!refused.message().is_empty());
    let details = grpc::status_details(&refused).expect("grpc-status-details-bin");
    assert_eq!(
        (details.code, details.message.as_str()),
        (Code::PermissionDenied as i32, refused.message())
    );
    let request_id = meta(refused.metadata(), "x-request-id").expect("the API's request ID");
    assert_eq!(
        grpc::status_request_id(&refused).as_deref(),
        Some(request_id),
        "the details are the API's own"
    );
    assert_eq!(meta(refused.metadata(), "x-cache"), None);
    // A message that needs percent-encoding survives it.
    let bad_page = ListImagesRequest {
        folder_id: ALICE_FOLDER.into(),
        page_token: "%ü".into(),
        ..ListImagesRequest::default()
    };
    let bad_page = Bytes::from(bad_page.encode_to_vec());
    let through = client
        .call_raw(LIST_PATH, bad_page.clone(), Some(ALICE), &[])
        .await;
    let direct_answer = direct.call_raw(LIST_PATH, bad_page, Some(ALICE), &[]).await;
    match (through, direct_answer) {
        (Err(through), Err(direct_answer)) => {
            assert_eq!(through.code(), direct_answer.code());
            assert_eq!(through.message(), direct_answer.message());
        }
        (Ok(through), Ok(direct_answer)) => assert_eq!(through.get_ref(), direct_answer.get_ref()),
        (through, direct_answer) => panic!("{through:?} vs {direct_answer:?}"),
    }

    // Methods and services the proxy does not know pass through as well.
    let unknown = "/yandex.cloud.baremetal.v1alpha.ImageService/Frobnicate";
    let status = failed(
        client
            .call_raw(unknown, Bytes::new(), Some(ALICE), &[])
            .await,
        Code::Unimplemented,
        "an unknown method",
    );
    assert_eq!(meta(status.metadata(), "x-cache"), None);
    let operations = ok(
        client.list_operations(IMG, Some(ALICE), &[]).await,
        "ListOperations",
    );
    assert_eq!(x_cache(&operations), "");
    assert_eq!(h.sim.count("POST", LIST_PATH), 6);
    assert_eq!(h.sim.count("POST", unknown), 1);
    assert_eq!(h.sim.grpc_image_get_count(IMG), 0);
    h.stop().await;
}

/// A call outside the methods the proxy caches or invalidates by may be a stream both ways:
/// it reaches the API, and its answer the client, while the client's body is still open.
#[tokio::test]
async fn grpc_other_calls_reach_the_api_before_their_body_ends() {
    let h = Harness::with_config(baremetal_image_cache::Config {
        request_body_timeout: Duration::from_secs(120),
        ..test_config()
    })
    .await;
    let path = "/yandex.cloud.operation.OperationService/Watch";
    let (send, receive) = tokio::sync::mpsc::channel::<Bytes>(1);
    let frames = Box::pin(futures_util::stream::unfold(
        receive,
        |mut receive| async move {
            let data = receive.recv().await?;
            Some((
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(data)),
                receive,
            ))
        },
    ));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request = Request::post(format!("http://{}{path}", h.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {ALICE}"))
        .body(http_body_util::StreamBody::new(frames))
        .unwrap();
    send.send(framed(b"")).await.unwrap();
    // The body stays open (`send` is alive) while the answer is awaited.
    let answer = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .expect("an answer while the body is open, not after --request-body-timeout")
        .expect("an h2c answer");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        answer.headers().get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"12"[..]),
        "the API's UNIMPLEMENTED, relayed"
    );
    assert_eq!(h.sim.count("POST", path), 1);
    drop(send);
    h.stop().await;
}

// ---- 8. no-cache ------------------------------------------------------------------------

#[tokio::test]
async fn grpc_no_cache_metadata_fetches_and_refreshes_the_entry() {
    let h = Harness::start().await;
    let mut client = h.grpc().await;
    get_ok(&mut client, IMG, Some(ALICE), "Get").await;
    let mut changed = h.sim.image(IMG).unwrap();
    changed.description = "changed upstream".into();
    h.sim.put_image(changed);
    let stale_hit = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
    assert_eq!(x_cache(&stale_hit), "HIT");
    assert_ne!(image(stale_hit.get_ref()).description, "changed upstream");

    let refreshed = ok(
        get_raw(
            &mut client,
            IMG,
            Some(ALICE),
            &[("cache-control", "no-cache")],
        )
        .await,
        "no-cache Get",
    );
    assert_eq!(x_cache(&refreshed), "BYPASS");
    assert!(
        cache_status(&refreshed).contains("fwd=request"),
        "{}",
        cache_status(&refreshed)
    );
    assert_eq!(image(refreshed.get_ref()).description, "changed upstream");
    let hit = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
    assert_eq!(x_cache(&hit), "HIT");
    assert_eq!(hit.get_ref(), refreshed.get_ref());
    assert_eq!(h.sim.grpc_image_get_count(IMG), 2);
    h.stop().await;
}

// ---- 9. purges --------------------------------------------------------------------------

#[tokio::test]
async fn grpc_purges_on_the_admin_listener_drop_grpc_entries() {
    let h = Harness::start().await;
    let mut client = h.grpc().await;
    for id in [IMG, IMG2] {
        get_ok(&mut client, id, Some(ALICE), "Get").await;
    }
    h.get(IMG, Some(ALICE)).await;
    let purge = h
        .admin(Method::DELETE, &format!("/cache/images/{IMG}"))
        .await;
    assert_eq!(purge.status, StatusCode::OK);
    let purged = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
    assert_eq!(x_cache(&purged), "MISS", "the gRPC entry is gone");
    assert_eq!(
        h.get(IMG, Some(ALICE)).await.x_cache(),
        "MISS",
        "and the REST one"
    );
    let other = get_ok(&mut client, IMG2, Some(ALICE), "Get").await;
    assert_eq!(x_cache(&other), "HIT", "only that image is purged");

    assert_eq!(
        h.admin(Method::DELETE, "/cache").await.status,
        StatusCode::OK
    );
    for id in [IMG, IMG2] {
        let answer = get_ok(&mut client, id, Some(ALICE), "Get").await;
        assert_eq!(x_cache(&answer), "MISS", "{id} after a purge of everything");
    }
    assert_eq!(h.sim.grpc_image_get_count(IMG), 3);
    assert_eq!(h.sim.grpc_image_get_count(IMG2), 2);
    h.stop().await;
}

// ---- 10. what a fill sends, and calls that are not the cacheable Get ---------------------

#[tokio::test]
async fn grpc_a_fill_sends_upstream_only_the_credential_and_request_ids() {
    let h = Harness::start().await;
    let mut client = h.grpc().await;
    let metadata = [
        ("x-request-id", "req-1"),
        ("x-client-request-id", "client-req-1"),
        ("x-client-trace-id", "trace-1"),
        ("user-agent", "grpc-python/1.75.0 yc-test"),
        ("grpc-timeout", "20S"),
        ("grpc-accept-encoding", "gzip"),
        ("cookie", "session=alice"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-tenant-hint", "alice"),
        ("cache-control", "max-age=0"),
    ];
    ok(
        get_raw(&mut client, IMG, Some(ALICE), &metadata).await,
        "Get",
    );
    let recorded = h.sim.recorded();
    let fill = recorded
        .iter()
        .find(|r| r.target == GET_PATH)
        .expect("the fill reached the API");
    assert_eq!(fill.method, Method::POST);
    assert_eq!(
        fill.version,
        http::Version::HTTP_2,
        "gRPC upstream is HTTP/2"
    );
    let allowed = [
        "authorization",
        "te",
        "content-type",
        "user-agent",
        "x-request-id",
        "x-client-request-id",
        "x-client-trace-id",
        "grpc-accept-encoding",
    ];
    let header = |name: &str| fill.headers.get(name).map(|v| v.to_str().unwrap());
    for name in fill.headers.keys() {
        // hyper frames the fill's one message with a length of its own making.
        if name == "content-length" {
            assert_eq!(header("content-length"), Some("27"));
            continue;
        }
        assert!(allowed.contains(&name.as_str()), "{name} went upstream");
    }
    assert_eq!(
        header("authorization"),
        Some(format!("Bearer {ALICE}").as_str())
    );
    assert_eq!(header("x-request-id"), Some("req-1"));
    assert_eq!(header("x-client-request-id"), Some("client-req-1"));
    assert_eq!(header("x-client-trace-id"), Some("trace-1"));
    assert_eq!(header("grpc-accept-encoding"), Some("identity"));
    assert_eq!(header("user-agent"), Some("grpc-python/1.75.0 yc-test"));
    assert_eq!(header("te"), Some("trailers"));
    assert_eq!(header("content-type"), Some("application/grpc"));
    assert_eq!(fill.body, get_request(IMG), "the fill's own message");
    assert!(fill.unknown_fields.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn grpc_a_gzip_message_is_read_and_answered_from_the_same_entry() {
    let h = Harness::start().await;
    let gzipped = framed_with(1, &gzip(&get_request(IMG)));
    let headers = [
        ("authorization", &*format!("Bearer {ALICE}")),
        ("grpc-encoding", "gzip"),
        ("grpc-accept-encoding", "gzip"),
    ];
    let first = h.grpc_raw(GET_PATH, &headers, gzipped.clone()).await;
    assert_eq!(
        (first.status, first.grpc_status()),
        (StatusCode::OK, Some(0))
    );
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(
        first.header("grpc-encoding"),
        None,
        "the answer is not compressed"
    );
    let bytes = first.message();
    assert_eq!(image(&bytes).id, IMG);
    assert!(grpc::sim_only_field(&bytes).is_some());
    // The fill asked the API with a plain message of its own.
    let fill = h.sim.recorded().pop().unwrap();
    assert_eq!(fill.body, get_request(IMG));
    assert_eq!(fill.headers.get("grpc-encoding"), None);

    let second = h.grpc_raw(GET_PATH, &headers, gzipped).await;
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.message(), bytes);
    let mut client = h.grpc().await;
    let plain = get_ok(&mut client, IMG, Some(ALICE), "plain Get").await;
    assert_eq!((x_cache(&plain), plain.get_ref()), ("HIT", &bytes));
    assert_eq!(h.sim.grpc_image_get_count(IMG), 1);
    h.stop().await;
}

#[tokio::test]
async fn grpc_another_encoding_passes_through_uncached() {
    let h = Harness::start().await;
    // Whatever the bytes are, the proxy cannot read them: they go to the API as they came.
    let body = framed_with(1, b"\x0a\x14not-really-snappy...");
    let headers = [
        ("authorization", &*format!("Bearer {ALICE}")),
        ("grpc-encoding", "snappy"),
    ];
    let mut direct_headers = headers.to_vec();
    direct_headers.push(("x-request-id", "direct"));
    let direct = raw_exchange(
        &format!("http://{}{GET_PATH}", h.upstream),
        &direct_headers,
        body.clone(),
    )
    .await;
    for _ in 0..2 {
        let through = h.grpc_raw(GET_PATH, &headers, body.clone()).await;
        assert_eq!(through.header("x-cache"), None, "not the cacheable Get");
        assert_eq!(through.grpc_status(), direct.grpc_status());
        assert_eq!(
            through.header("grpc-message"),
            direct.header("grpc-message")
        );
        assert_eq!(through.body, direct.body);
    }
    assert_eq!(
        h.sim.count("POST", GET_PATH),
        3,
        "each call reached the API"
    );
    let recorded = h.sim.recorded();
    assert_eq!(recorded[1].body, body, "passed on as it came");
    assert_eq!(recorded[1].headers.get("grpc-encoding").unwrap(), "snappy");
    let mut client = h.grpc().await;
    let plain = get_ok(&mut client, IMG, Some(ALICE), "plain Get").await;
    assert_eq!(x_cache(&plain), "MISS", "nothing was cached");
    h.stop().await;
}

#[tokio::test]
async fn grpc_gets_that_are_not_the_cacheable_get_pass_through_uncached() {
    let h = Harness::start().await;
    let mut client = h.grpc().await;
    // image_id, then a field 77 that GetImageRequest does not have.
    let mut message = get_request(IMG);
    message.extend_from_slice(&[0xe8, 0x04, 0x01]);
    let plain = get_ok(&mut client, IMG, Some(ALICE), "plain Get").await;
    for _ in 0..2 {
        let answer = ok(
            client
                .call_raw(GET_PATH, Bytes::from(message.clone()), Some(ALICE), &[])
                .await,
            "Get with field 77",
        );
        assert_eq!(x_cache(&answer), "", "not served from the cache");
        assert_eq!(answer.get_ref(), plain.get_ref(), "the API's answer");
    }
    assert_eq!(h.sim.grpc_image_get_count(IMG), 3);
    let recorded = h.sim.recorded();
    assert_eq!(recorded.len(), 3);
    for call in &recorded[1..] {
        assert_eq!(call.body, message, "the message went upstream untouched");
        assert_eq!(call.unknown_fields, [77]);
    }
    let hit = get_ok(&mut client, IMG, Some(ALICE), "plain Get").await;
    assert_eq!(x_cache(&hit), "HIT", "the plain Get's entry is untouched");

    // An ID the proxy's rule refuses is the API's to judge, every time.
    for id in ["Ly5TEST0READY0000001", "ly5test0ready0000001/", ""] {
        for _ in 0..2 {
            let status = get_failed(
                &mut client,
                id,
                Some(ALICE),
                Code::InvalidArgument,
                &format!("a Get of {id:?}"),
            )
            .await;
            assert_eq!(meta(status.metadata(), "x-cache"), None, "{id:?}");
        }
        assert_eq!(h.sim.grpc_image_get_count(id), 2, "{id:?}");
    }
    h.stop().await;
}

// ---- 11. metrics ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_known_traffic_moves_each_counter_exactly() {
    let h = Arc::new(
        Harness::with_config(baremetal_image_cache::Config {
            upstream_timeout: Duration::from_secs(5),
            stale_if_error: Duration::ZERO,
            ..test_config()
        })
        .await,
    );
    let mut client = h.grpc().await;
    // 1 miss, then 3 hits.
    for expected in ["MISS", "HIT", "HIT", "HIT"] {
        let answer = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
        assert_eq!(x_cache(&answer), expected);
    }
    // A flight of 1 leader and 5 waiters: 6 misses, 5 coalesced.
    h.sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_millis(1500)),
        None,
    );
    let spawn = |client: &grpc::ImageClient| {
        let mut client = client.clone();
        tokio::spawn(async move { get_raw(&mut client, IMG2, Some(ALICE), &[]).await })
    };
    let leader = spawn(&client);
    h.until_upstream_saw(2).await;
    let waiters: Vec<_> = (0..5).map(|_| spawn(&client)).collect();
    for waiter in waiters {
        let answer = ok(waiter.await.unwrap(), "a waiter");
        assert!(cache_status(&answer).contains("collapsed"));
    }
    ok(leader.await.unwrap(), "the leader");
    h.sim.clear_faults();
    // No token: a bypass, refused upstream.
    get_failed(&mut client, IMG, None, Code::Unauthenticated, "no token").await;
    // An Update: one invalidation.
    ok(
        update_description(&mut client, IMG, "counted", Some(ALICE)).await,
        "Update",
    );
    // An upstream UNAVAILABLE, then a healthy miss.
    h.sim.set_fault(
        FaultScope::All,
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        Some(1),
    );
    get_failed(
        &mut client,
        IMG,
        Some(ALICE),
        Code::Unavailable,
        "an upstream 503",
    )
    .await;
    let healthy = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
    assert_eq!(x_cache(&healthy), "MISS");
    // A pass-through call.
    let list = ListImagesRequest {
        folder_id: ALICE_FOLDER.into(),
        ..ListImagesRequest::default()
    };
    ok(client.list(list.clone(), Some(ALICE), &[]).await, "List");
    // A pass-through error and a refused Update: one each, their status counted once.
    failed(
        client.list(list, Some(BOB), &[]).await,
        Code::PermissionDenied,
        "Bob's List",
    );
    failed(
        update_description(&mut client, IMG, "by Bob", Some(BOB)).await,
        Code::PermissionDenied,
        "Bob's Update",
    );

    let after = Scrape::take(&h).await;
    let expect = |series: String, value: f64| {
        assert_eq!(after.get(&series), value, "{series}");
    };
    let requests = |protocol: &str, result: &str| {
        format!("{P}_requests_total{{protocol=\"{protocol}\",result=\"{result}\"}}")
    };
    expect(requests("grpc", "hit"), 3.0);
    expect(requests("grpc", "miss"), 9.0);
    expect(requests("grpc", "bypass"), 1.0);
    expect(requests("grpc", "stale"), 0.0);
    for result in ["hit", "miss", "bypass", "stale"] {
        expect(requests("http", result), 0.0);
    }
    expect(format!("{P}_coalesced_total{{protocol=\"grpc\"}}"), 5.0);
    expect(format!("{P}_coalesced_total{{protocol=\"http\"}}"), 0.0);
    let grpc_status = |route: &str, status: &str| {
        format!("{P}_upstream_grpc_responses_total{{grpc_status=\"{status}\",route=\"{route}\"}}")
    };
    expect(grpc_status("image_get", "OK"), 3.0);
    expect(grpc_status("image_get", "UNAUTHENTICATED"), 1.0);
    expect(grpc_status("image_get", "UNAVAILABLE"), 1.0);
    expect(grpc_status("image_get", "INTERNAL"), 0.0);
    expect(grpc_status("image_mutation", "OK"), 1.0);
    expect(grpc_status("passthrough", "OK"), 1.0);
    expect(grpc_status("passthrough", "PERMISSION_DENIED"), 1.0);
    expect(grpc_status("image_mutation", "PERMISSION_DENIED"), 1.0);
    let total: f64 = after
        .0
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{P}_upstream_grpc_responses_total{{")))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, 9.0, "no other upstream gRPC answer was counted");
    // Every gRPC answer is HTTP 200, whatever its status.
    expect(
        format!("{P}_upstream_requests_total{{code=\"200\",route=\"image_get\"}}"),
        5.0,
    );
    expect(
        format!("{P}_upstream_requests_total{{code=\"200\",route=\"image_mutation\"}}"),
        2.0,
    );
    expect(
        format!("{P}_upstream_requests_total{{code=\"200\",route=\"passthrough\"}}"),
        2.0,
    );
    expect(
        format!("{P}_invalidations_total{{reason=\"mutation\"}}"),
        1.0,
    );
    let duration = |result: &str, route: &str| {
        format!(
            "{P}_request_duration_seconds_count{{protocol=\"grpc\",result=\"{result}\",route=\"{route}\"}}"
        )
    };
    expect(duration("hit", "image_get"), 3.0);
    expect(duration("miss", "image_get"), 9.0);
    expect(duration("bypass", "image_get"), 1.0);
    expect(duration("bypass", "image_mutation"), 2.0);
    expect(duration("bypass", "passthrough"), 2.0);
    expect(format!("{P}_inflight_fetches"), 0.0);
    expect(format!("{P}_waiters"), 0.0);
    for series in after.0.keys() {
        for secret in [ALICE, IMG, IMG2, "ImageService"] {
            assert!(!series.contains(secret), "{series}");
        }
    }
}
