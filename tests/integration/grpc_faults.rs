//! gRPC calls when the upstream misbehaves: each fault's gRPC status (the proxy's own in a
//! trailers-only answer, or the upstream's relayed), how fast it comes, that nothing broken is
//! cached, the caller's own `grpc-timeout`, stale-if-error, and the waiter cap.

use std::time::{Duration, Instant};

use baremetal_api_sim::grpc::{self, ListImagesRequest, GET_PATH};
use baremetal_api_sim::{Fault, FaultScope};
use baremetal_image_cache::Config;
use http::StatusCode;
use tonic::Code;

use crate::support::grpc::*;
use crate::support::*;

fn list_alices_folder() -> ListImagesRequest {
    ListImagesRequest {
        folder_id: ALICE_FOLDER.into(),
        ..ListImagesRequest::default()
    }
}

/// A Get of `id` as Alice, the raw way: the answer's head as it came.
async fn raw_get(h: &Harness, id: &str) -> RawAnswer {
    let authorization = format!("Bearer {ALICE}");
    h.grpc_raw(
        GET_PATH,
        &[("authorization", &authorization)],
        framed(&get_request(id)),
    )
    .await
}

/// Asserts that the next two Gets of `id` are a miss and a hit of the image: whatever came
/// before left nothing in the cache.
async fn then_miss_and_hit(h: &Harness, id: &str, what: &str) {
    let mut client = h.grpc().await;
    for expected in ["MISS", "HIT"] {
        let answer = get_ok(&mut client, id, Some(ALICE), what).await;
        assert_eq!(x_cache(&answer), expected, "after {what}");
        assert_eq!(image(answer.get_ref()).id, id);
    }
}

#[tokio::test]
async fn grpc_an_unreachable_upstream_is_unavailable_fast() {
    // A port that was just free: nothing listens there.
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
    let mut client = h.grpc().await;
    let started = Instant::now();
    let get = get_failed(&mut client, IMG, Some(ALICE), Code::Unavailable, "a Get").await;
    assert!(!get.message().contains(ALICE), "no credential in errors");
    let list = failed(
        client.list(list_alices_folder(), Some(ALICE), &[]).await,
        Code::Unavailable,
        "a List",
    );
    assert!(!list.message().contains(ALICE));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "fast, not after the 5 s timeout: {:?}",
        started.elapsed()
    );
    // The proxy's own answer: trailers-only (HTTP 200, the status in the one HEADERS frame).
    let raw = raw_get(&h, IMG).await;
    assert_eq!(raw.status, StatusCode::OK);
    assert_eq!(raw.header("grpc-status"), Some("14"));
    assert_eq!(raw.header("x-cache"), Some("MISS"));
    assert!(
        raw.body.is_empty() && raw.trailers.is_none(),
        "trailers-only"
    );
    h.stop().await;
}

#[tokio::test]
async fn grpc_a_hanging_upstream_is_deadline_exceeded_at_the_upstream_timeout() {
    let h = Harness::with_config(fault_config(|c| {
        c.upstream_timeout = Duration::from_millis(500)
    }))
    .await;
    h.sim.set_fault(FaultScope::All, Fault::Hang, None);
    let mut client = h.grpc().await;
    let within_the_timeout = |started: Instant, what: &str| {
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(5),
            "{what}: {elapsed:?}"
        );
    };
    let started = Instant::now();
    get_failed(
        &mut client,
        IMG,
        Some(ALICE),
        Code::DeadlineExceeded,
        "a Get",
    )
    .await;
    within_the_timeout(started, "a Get");
    let started = Instant::now();
    let list = tokio::time::timeout(
        Duration::from_secs(30),
        client.list(list_alices_folder(), Some(ALICE), &[]),
    );
    failed(list.await.unwrap(), Code::DeadlineExceeded, "a List");
    within_the_timeout(started, "a List");
    let started = Instant::now();
    let delete = tokio::time::timeout(
        Duration::from_secs(30),
        client.delete(IMG2, Some(ALICE), &[]),
    );
    failed(delete.await.unwrap(), Code::DeadlineExceeded, "a Delete");
    within_the_timeout(started, "a Delete");
    h.sim.clear_faults();
    let next = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
    assert_eq!(x_cache(&next), "MISS", "the hang left nothing in the cache");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_ends_that_callers_wait_and_the_fetch_goes_on_for_the_others() {
    let h = Harness::with_config(fault_config(|c| {
        c.upstream_timeout = Duration::from_secs(20)
    }))
    .await;
    // The fetch takes 5 s; the first caller gives it 300 ms.
    h.sim.set_fault(
        FaultScope::Image(IMG.into()),
        Fault::Delay(Duration::from_secs(5)),
        Some(1),
    );
    let mut client = h.grpc().await;
    let started = Instant::now();
    let impatient = failed(
        get_raw(&mut client, IMG, Some(ALICE), &[("grpc-timeout", "300m")]).await,
        Code::DeadlineExceeded,
        "a Get with a 300 ms deadline",
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(4),
        "at the caller's deadline, not the upstream's: {elapsed:?}"
    );
    assert_eq!(meta(impatient.metadata(), "x-cache"), Some("MISS"));
    // The fetch it started runs on: the next caller is answered by it, not by a fetch of its own.
    let patient = get_ok(&mut client, IMG, Some(ALICE), "a patient Get").await;
    assert!(
        x_cache(&patient) == "HIT" || cache_status(&patient).contains("collapsed"),
        "{}",
        cache_status(&patient)
    );
    assert_eq!(image(patient.get_ref()).id, IMG);
    let hit = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
    assert_eq!(x_cache(&hit), "HIT");
    assert_eq!(
        h.sim.grpc_image_get_count(IMG),
        1,
        "one fetch for all three"
    );
    h.stop().await;
}

#[tokio::test]
async fn grpc_garbage_is_internal_and_a_wrong_image_is_relayed_neither_cached() {
    let h = Harness::with_config(fault_config(|_| {})).await;
    let mut client = h.grpc().await;
    h.sim
        .set_fault(FaultScope::Image(IMG.into()), Fault::Garbage, Some(1));
    let garbage = get_failed(
        &mut client,
        IMG,
        Some(ALICE),
        Code::Internal,
        "a message that is no Image",
    )
    .await;
    assert_eq!(meta(garbage.metadata(), "x-cache"), Some("MISS"));
    then_miss_and_hit(&h, IMG, "garbage").await;

    h.sim
        .set_fault(FaultScope::Image(IMG2.into()), Fault::WrongId, Some(1));
    let wrong = get_ok(&mut client, IMG2, Some(ALICE), "an Image of another ID").await;
    assert_eq!(x_cache(&wrong), "MISS");
    assert!(!cache_status(&wrong).contains("stored"));
    assert_ne!(image(wrong.get_ref()).id, IMG2, "relayed as it came");
    then_miss_and_hit(&h, IMG2, "a wrong ID").await;
    assert_eq!(h.sim.grpc_image_get_count(IMG), 2);
    assert_eq!(h.sim.grpc_image_get_count(IMG2), 2);
    h.stop().await;
}

#[tokio::test]
async fn grpc_an_image_bigger_than_an_entry_is_streamed_through_and_not_cached() {
    let h = Harness::with_config(fault_config(|_| {})).await;
    let mut client = h.grpc().await;
    let size = 3 * 1024 * 1024;
    h.sim.set_fault(
        FaultScope::Image(IMG.into()),
        Fault::HugeBody(size),
        Some(1),
    );
    let huge = get_ok(&mut client, IMG, Some(ALICE), "a 3 MiB Image").await;
    assert_eq!(x_cache(&huge), "MISS");
    assert!(!cache_status(&huge).contains("stored"));
    assert_eq!(
        meta(huge.metadata(), "grpc-status"),
        Some("0"),
        "its trailers came too"
    );
    assert_eq!(huge.get_ref().len(), size, "every byte of the message");
    assert_eq!(image(huge.get_ref()).id, IMG);
    assert!(grpc::sim_only_field(huge.get_ref()).is_some());
    then_miss_and_hit(&h, IMG, "a message bigger than an entry").await;
    assert_eq!(h.sim.grpc_image_get_count(IMG), 2);
    h.stop().await;
}

#[tokio::test]
async fn grpc_a_reset_is_unavailable_and_not_cached() {
    let h = Harness::with_config(fault_config(|_| {})).await;
    let mut client = h.grpc().await;
    for fault in [Fault::Reset, Fault::ResetMidBody] {
        h.sim.reset_counts();
        h.sim
            .set_fault(FaultScope::Image(IMG.into()), fault.clone(), Some(1));
        let status = get_failed(
            &mut client,
            IMG,
            Some(ALICE),
            Code::Unavailable,
            &format!("{fault:?}"),
        )
        .await;
        assert_eq!(meta(status.metadata(), "x-cache"), Some("MISS"));
        then_miss_and_hit(&h, IMG, &format!("{fault:?}")).await;
        assert_eq!(h.sim.grpc_image_get_count(IMG), 2, "{fault:?}: no retry");
        h.admin(http::Method::DELETE, "/cache").await;
    }
    h.stop().await;
}

#[tokio::test]
async fn grpc_upstream_errors_are_relayed_never_cached_and_keep_the_entry() {
    let h = Harness::with_config(fault_config(|_| {})).await;
    let mut client = h.grpc().await;
    for (status, code) in [
        (503, Code::Unavailable),
        (500, Code::Internal),
        (429, Code::ResourceExhausted),
    ] {
        h.sim.reset_counts();
        h.sim.set_fault(
            FaultScope::Image(IMG2.into()),
            Fault::Status {
                status,
                retry_after: Some(3),
            },
            Some(1),
        );
        let relayed = get_failed(
            &mut client,
            IMG2,
            Some(ALICE),
            code,
            &format!("an upstream {status}"),
        )
        .await;
        // The API's own status: its message and its details.
        let details = grpc::status_details(&relayed).expect("the upstream's details");
        assert_eq!(
            (details.code, details.message.as_str()),
            (code as i32, relayed.message()),
            "{status}"
        );
        assert!(grpc::status_request_id(&relayed).is_some(), "{status}");
        assert_eq!(
            meta(relayed.metadata(), "retry-after"),
            Some("3"),
            "{status}"
        );
        then_miss_and_hit(&h, IMG2, &format!("an upstream {status}")).await;
        assert_eq!(h.sim.grpc_image_get_count(IMG2), 2, "{status}");
        h.admin(http::Method::DELETE, "/cache").await;
    }
    // A cached image survives an UNAVAILABLE on a refresh.
    get_ok(&mut client, IMG, Some(ALICE), "Get").await;
    h.sim.set_fault(
        FaultScope::Image(IMG.into()),
        Fault::Status {
            status: 503,
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
        Code::Unavailable,
        "a no-cache Get the upstream fails",
    );
    let hit = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
    assert_eq!(x_cache(&hit), "HIT");
    h.stop().await;
}

#[tokio::test]
async fn grpc_an_expired_entry_is_served_stale_while_the_upstream_fails() {
    let h = Harness::with_config(Config {
        ttl: Duration::from_secs(1),
        stale_if_error: Duration::from_secs(60),
        upstream_timeout: Duration::from_secs(2),
        ..test_config()
    })
    .await;
    let mut client = h.grpc().await;
    let fresh = get_ok(&mut client, IMG, Some(ALICE), "Get").await;
    assert_eq!(x_cache(&fresh), "MISS");
    // Expiry is about real time passing (moka's clock ignores tokio's paused time).
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let failures = [
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        Fault::Reset,
        Fault::Hang,
    ];
    for fault in failures {
        h.sim.set_fault(FaultScope::All, fault.clone(), None);
        let stale = get_ok(&mut client, IMG, Some(ALICE), &format!("{fault:?}")).await;
        assert_eq!(x_cache(&stale), "STALE", "{fault:?}");
        let status = cache_status(&stale);
        assert!(
            status.contains("fwd=stale") && status.contains("detail=stale-if-error"),
            "{fault:?}: {status}"
        );
        assert!(meta(stale.metadata(), "age").is_some());
        assert_eq!(
            stale.get_ref(),
            fresh.get_ref(),
            "{fault:?}: the stored bytes"
        );
    }
    // Alice's second token was never granted the image: it gets the failure.
    h.sim.set_fault(
        FaultScope::All,
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        None,
    );
    get_failed(
        &mut client,
        IMG,
        Some(ALICE2),
        Code::Unavailable,
        "another credential",
    )
    .await;
    get_failed(&mut client, IMG, None, Code::Unavailable, "no credential").await;
    h.sim.clear_faults();
    then_miss_and_hit(&h, IMG, "the upstream heals").await;
    h.stop().await;
}

#[tokio::test]
async fn grpc_stale_if_error_zero_turns_it_off() {
    let h = Harness::with_config(Config {
        ttl: Duration::from_secs(1),
        stale_if_error: Duration::ZERO,
        ..test_config()
    })
    .await;
    let mut client = h.grpc().await;
    get_ok(&mut client, IMG, Some(ALICE), "Get").await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    h.sim.set_fault(
        FaultScope::All,
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        None,
    );
    get_failed(
        &mut client,
        IMG,
        Some(ALICE),
        Code::Unavailable,
        "an expired entry without stale-if-error",
    )
    .await;
    let raw = raw_get(&h, IMG).await;
    assert_eq!(raw.grpc_status(), Some(14));
    assert_eq!(raw.header("x-cache"), Some("MISS"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_waiters_past_the_cap_get_resource_exhausted() {
    let h = Harness::with_config(Config {
        max_waiters_per_key: 5,
        ..test_config()
    })
    .await;
    h.sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_millis(1500)),
        None,
    );
    let client = h.grpc().await;
    let spawn = || {
        let mut client = client.clone();
        tokio::spawn(async move { get_raw(&mut client, IMG, Some(ALICE), &[]).await })
    };
    let leader = spawn();
    h.until_upstream_saw(1).await;
    let burst: Vec<_> = (0..15).map(|_| spawn()).collect();
    let (mut answered, mut refused) = (0, 0);
    for task in burst {
        match task.await.unwrap() {
            Ok(answer) => {
                assert_eq!(image(answer.get_ref()).id, IMG);
                answered += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((answered, refused), (5, 10));
    ok(leader.await.unwrap(), "the leader");
    assert_eq!(h.sim.grpc_image_get_count(IMG), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_a_failed_leader_hands_over_to_exactly_one_new_leader() {
    let h = Harness::with_config(fault_config(|c| {
        c.upstream_timeout = Duration::from_secs(4)
    }))
    .await;
    // The first fetch hangs; the new leader's takes a second, so that the hung leader has
    // given its answer (a timeout) long before the new leader's entry could serve it a hit.
    h.sim
        .set_fault(FaultScope::Image(IMG.into()), Fault::Hang, Some(1));
    h.sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_secs(1)),
        Some(1),
    );
    let client = h.grpc().await;
    let spawn = || {
        let mut client = client.clone();
        tokio::spawn(async move { get_raw(&mut client, IMG, Some(ALICE), &[]).await })
    };
    let leader = spawn();
    h.until_upstream_saw(1).await;
    // These join the hanging flight, each with its own deadline, 1.5 s after the leader's:
    // time enough for the handover and the second fetch on a loaded machine.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let waiters: Vec<_> = (0..50).map(|_| spawn()).collect();
    failed(
        leader.await.unwrap(),
        Code::DeadlineExceeded,
        "the hung leader",
    );
    for waiter in waiters {
        let answer = ok(waiter.await.unwrap(), "a waiter");
        assert_eq!(image(answer.get_ref()).id, IMG);
    }
    assert_eq!(
        h.sim.grpc_image_get_count(IMG),
        2,
        "the hung fetch and one new leader's"
    );
}

/// Waits until a Get of Alice's image is answered from an entry renewed just now.
async fn until_renewed(h: &Harness) {
    let client = h.grpc().await;
    eventually("the entry is renewed", || {
        let mut client = client.clone();
        async move {
            let answer = get_raw(&mut client, IMG, Some(ALICE), &[]).await;
            match answer.as_ref().map(|a| meta(a.metadata(), "age")) {
                Ok(Some("0")) => Ok(()),
                seen => Err(format!("{seen:?}")),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_a_hot_entry_is_refreshed_once_before_it_expires() {
    // A 10 s TTL whose last 95 % is the refresh window: hits from 0.5 s on refresh it, and
    // nothing here comes near expiry, however slow the machine.
    let h = Harness::with_config(fault_config(|c| {
        c.ttl = Duration::from_secs(10);
        c.refresh_ahead = 95;
    }))
    .await;
    let client = h.grpc().await;
    let first = ok(
        get_raw(&mut client.clone(), IMG, Some(ALICE), &[]).await,
        "Get",
    );
    assert_eq!(x_cache(&first), "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let hits: Vec<_> = (0..20)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { get_raw(&mut client, IMG, Some(ALICE), &[]).await })
        })
        .collect();
    for hit in hits {
        let hit = ok(hit.await.unwrap(), "a hit");
        assert_eq!(x_cache(&hit), "HIT");
        assert_eq!(hit.get_ref(), first.get_ref());
    }
    h.until_upstream_saw(2).await;
    until_renewed(&h).await;
    assert_eq!(
        h.sim.grpc_image_get_count(IMG),
        2,
        "one refresh for the whole burst"
    );
    let refill = h.sim.recorded().pop().unwrap();
    assert_eq!(
        refill.body,
        get_request(IMG),
        "a gRPC refresh of a gRPC entry"
    );
    assert_eq!(h.sim.image_get_count(IMG), 0);
    let scrape = Scrape::take(&h).await;
    assert_eq!(scrape.get(&format!("{P}_refreshes_total")), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_a_fill_that_races_a_mutation_does_not_bring_the_old_image_back() {
    let h = Harness::start().await;
    let client = h.grpc().await;
    for (n, through_grpc) in [true, false].into_iter().enumerate() {
        // The Get's message drips slowly, so the mutation lands while the fill reads it.
        h.sim.set_fault(
            FaultScope::Image(IMG.into()),
            Fault::SlowDrip(Duration::from_millis(5)),
            Some(1),
        );
        h.admin(http::Method::DELETE, "/cache").await;
        let old_name = h.sim.image(IMG).unwrap().name;
        let seen = h.sim.request_count();
        let fill = {
            let mut client = client.clone();
            tokio::spawn(async move { get_raw(&mut client, IMG, Some(ALICE), &[]).await })
        };
        h.until_upstream_saw(seen + 1).await;
        let new_name = format!("renamed-{n}");
        if through_grpc {
            let update = grpc::UpdateImageRequest {
                image_id: IMG.into(),
                name: new_name.clone(),
                ..grpc::UpdateImageRequest::default()
            };
            ok(
                client.clone().update(update, Some(ALICE), &[]).await,
                "an Update",
            );
        } else {
            let patch = http::Request::builder()
                .method(http::Method::PATCH)
                .uri(format!("http://{}{}", h.addr, image_path(IMG)))
                .header("authorization", format!("Bearer {ALICE}"))
                .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                    r#"{{"updateMask":"name","name":"{new_name}"}}"#
                ))))
                .unwrap();
            assert_eq!(h.send(patch).await.status, StatusCode::OK);
        }
        let old = ok(fill.await.unwrap(), "the slow Get");
        assert_eq!(
            image(old.get_ref()).name,
            old_name,
            "the fill read the old image"
        );
        let next = ok(
            get_raw(&mut client.clone(), IMG, Some(ALICE), &[]).await,
            "Get",
        );
        let via = if through_grpc { "gRPC" } else { "REST" };
        assert_eq!(
            x_cache(&next),
            "MISS",
            "{via}: the old image was not stored"
        );
        assert_eq!(image(next.get_ref()).name, new_name, "{via}");
    }
}

#[tokio::test]
async fn grpc_calls_past_the_proxys_limits_get_a_status_and_reach_nobody() {
    let h = Harness::with_config(fault_config(|c| {
        c.max_headers = 20;
        c.max_request_body = 1024;
    }))
    .await;
    let authorization = format!("Bearer {ALICE}");
    let get = framed(&get_request(IMG));
    // Too much metadata.
    let names: Vec<String> = (0..30).map(|i| format!("x-extra-{i}")).collect();
    let mut crowded: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    crowded.push(("authorization", &authorization));
    let answer = h.grpc_raw(GET_PATH, &crowded, get.clone()).await;
    assert_eq!(
        (answer.status, answer.header("grpc-status")),
        (StatusCode::OK, Some("8"))
    );
    // A message over the upload limit: an Update, read whole before anything is sent, and a
    // List, streamed as it comes (any call but Get/Update/Delete may stream both ways), whose
    // cut the API sees only as a cancelled call.
    let update = grpc::UpdateImageRequest {
        image_id: IMG.into(),
        description: "x".repeat(4096),
        ..grpc::UpdateImageRequest::default()
    };
    let big = framed(&prost::Message::encode_to_vec(&update));
    let answer = h
        .grpc_raw(grpc::UPDATE_PATH, &[("authorization", &authorization)], big)
        .await;
    assert_eq!(answer.header("grpc-status"), Some("8"));
    let list = grpc::ListImagesRequest {
        folder_id: "x".repeat(4096),
        ..grpc::ListImagesRequest::default()
    };
    let big = framed(&prost::Message::encode_to_vec(&list));
    let answer = h
        .grpc_raw(grpc::LIST_PATH, &[("authorization", &authorization)], big)
        .await;
    assert_eq!(answer.header("grpc-status"), Some("8"));
    assert!(
        h.sim.recorded().iter().all(|r| r.body.len() < 1024),
        "no message over the limit reached the API"
    );
    // Not a POST.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let request = http::Request::get(format!("http://{}{GET_PATH}", h.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.headers().get("grpc-status").unwrap(), "12");
    for path in [GET_PATH, grpc::UPDATE_PATH] {
        assert_eq!(h.sim.count("POST", path), 0, "{path} reached the API");
    }
    let scrape = Scrape::take(&h).await;
    for (reason, count) in [
        ("headers", 1.0),
        ("request_body", 2.0),
        ("not_implemented", 1.0),
    ] {
        assert_eq!(
            scrape.get(&format!("{P}_rejected_total{{reason=\"{reason}\"}}")),
            count,
            "{reason}"
        );
    }
    h.stop().await;
}
