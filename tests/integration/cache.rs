//! Image.Get served from the cache: hits, expiry, READY-only storage, invalidation, purges,
//! no-cache, negative caching, stale-if-error, and bodies that must not be stored.

use std::time::Duration;

use baremetal_api_sim::{Fault, FaultScope};
use http::{Method, StatusCode};

use crate::support::*;

/// A proxy whose entry for Alice's image has just gone past its 1 s TTL, and that entry's
/// body as first served.
async fn with_an_expired_entry(stale_if_error: Duration) -> (Harness, Reply) {
    let h = Harness::with_config(baremetal_image_cache::Config {
        ttl: Duration::from_secs(1),
        stale_if_error,
        ..test_config()
    })
    .await;
    let fresh = h.get(IMG, Some(ALICE)).await;
    assert_eq!(fresh.x_cache(), "MISS");
    // Expiry is about real time passing (moka's clock ignores tokio's paused time).
    tokio::time::sleep(Duration::from_millis(1300)).await;
    (h, fresh)
}

fn fail_everything_with_503(h: &Harness) {
    let fault = Fault::Status {
        status: 503,
        retry_after: None,
    };
    h.sim.set_fault(FaultScope::All, fault, None);
}

#[tokio::test]
async fn miss_then_hit_with_identical_bytes() {
    let h = Harness::start().await;
    let first = h.get(IMG, Some(ALICE)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.x_cache(), "MISS");
    assert!(first.header("cache-status").unwrap().contains("fwd=miss"));
    assert!(first.header("cache-status").unwrap().contains("stored"));
    assert_eq!(first.json(), expected_body(&h.sim, IMG));
    assert!(
        first.header("x-request-id").is_some(),
        "the leader gets the upstream's own headers"
    );

    let second = h.get(IMG, Some(ALICE)).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.body, first.body, "byte-identical body");
    assert_eq!(second.header("content-type"), Some("application/json"));
    assert!(second.header("age").is_some());
    assert!(second
        .header("cache-status")
        .unwrap()
        .starts_with("baremetal-image-cache; hit; ttl="));
    assert_eq!(
        second.header("x-request-id"),
        None,
        "per-request headers are not replayed"
    );
    assert_eq!(second.header("x-server-trace-id"), None);
    assert_eq!(h.sim.image_get_count(IMG), 1);
    h.stop().await;
}

#[tokio::test]
async fn head_is_answered_from_the_cache() {
    let h = Harness::start().await;
    let get = h.get(IMG, Some(ALICE)).await;
    let head = h
        .call(Method::HEAD, &image_path(IMG), Some(ALICE), &[])
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.x_cache(), "HIT");
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
    assert_eq!(h.sim.image_get_count(IMG), 1);
    h.stop().await;
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let h = Harness::with_config(baremetal_image_cache::Config {
        ttl: Duration::from_secs(1),
        stale_if_error: Duration::ZERO,
        ..test_config()
    })
    .await;
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    // Expiry is about real time passing (moka's clock ignores tokio's paused time).
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(h.sim.image_get_count(IMG), 2);
    h.stop().await;
}

#[tokio::test]
async fn stale_is_served_while_the_upstream_fails_and_only_to_a_granted_credential() {
    let (h, fresh) = with_an_expired_entry(Duration::from_secs(60)).await;
    fail_everything_with_503(&h);

    let stale = h.get(IMG, Some(ALICE)).await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.x_cache(), "STALE");
    assert_eq!(stale.body, fresh.body);
    let cache_status = stale.header("cache-status").unwrap();
    assert!(
        cache_status.contains("fwd=stale; fwd-status=503; ttl=-"),
        "{cache_status}"
    );
    assert!(stale.header("age").is_some());

    // Alice's second token was never granted the image: it gets the upstream's 503.
    let other = h.get(IMG, Some(ALICE2)).await;
    assert_eq!(other.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_ne!(other.body, fresh.body);
    let anonymous = h.get(IMG, None).await;
    assert_eq!(anonymous.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.sim.image_get_count(IMG), 4);

    // Once the upstream heals, the entry is refreshed.
    h.sim.clear_faults();
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    h.stop().await;
}

#[tokio::test]
async fn stale_if_error_zero_turns_it_off() {
    let (h, _) = with_an_expired_entry(Duration::ZERO).await;
    fail_everything_with_503(&h);
    let reply = h.get(IMG, Some(ALICE)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.x_cache(), "MISS");
    h.stop().await;
}

#[tokio::test]
async fn no_status_but_ready_is_ever_cached() {
    let h = Harness::start().await;
    for (n, status) in [
        "CREATING",
        "UPDATING",
        "DELETING",
        "ERROR",
        "STATUS_UNSPECIFIED",
        "SOMETHING_NEW",
        "",
    ]
    .into_iter()
    .enumerate()
    {
        assert!(h.sim.set_status(IMG, status));
        let first = h.get(IMG, Some(ALICE)).await;
        let second = h.get(IMG, Some(ALICE)).await;
        assert_eq!(first.status, StatusCode::OK);
        assert_eq!(
            first.json()["status"],
            status,
            "the client sees the upstream's status"
        );
        assert_eq!(first.x_cache(), "MISS", "{status}");
        assert_eq!(second.x_cache(), "MISS", "{status}");
        assert!(!first.header("cache-status").unwrap().contains("stored"));
        assert_eq!(h.sim.image_get_count(IMG), 2 * (n as u64 + 1), "{status}");
    }
    h.stop().await;
}

#[tokio::test]
async fn a_ready_image_turning_deleting_is_dropped() {
    let h = Harness::start().await;
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    h.sim.set_status(IMG, "DELETING");
    let refreshed = h.get_fresh(IMG, Some(ALICE)).await;
    assert_eq!(refreshed.x_cache(), "BYPASS");
    assert_eq!(refreshed.json()["status"], "DELETING");
    // The READY copy is gone: the next request goes upstream even though the TTL has not run out.
    h.sim.set_status(IMG, "READY");
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(h.sim.image_get_count(IMG), 3);
    h.stop().await;
}

#[tokio::test]
async fn no_cache_fetches_and_refreshes_the_entry() {
    let h = Harness::start().await;
    h.get(IMG, Some(ALICE)).await;
    let mut image = h.sim.image(IMG).unwrap();
    image.description = "changed upstream".into();
    h.sim.put_image(image);
    let refreshed = h.get_fresh(IMG, Some(ALICE)).await;
    assert_eq!(refreshed.x_cache(), "BYPASS");
    assert!(refreshed
        .header("cache-status")
        .unwrap()
        .contains("fwd=request"));
    assert_eq!(refreshed.json()["description"], "changed upstream");
    let hit = h.get(IMG, Some(ALICE)).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.json()["description"], "changed upstream");
    assert_eq!(h.sim.image_get_count(IMG), 2);
    h.stop().await;
}

#[tokio::test]
async fn mutations_invalidate_their_image() {
    let h = Harness::start().await;
    let patch_body = r#"{"updateMask":"description","description":"patched"}"#;
    for (method, suffix, body) in [
        (Method::PATCH, "", patch_body),
        (Method::POST, ":restore", ""),
        (Method::DELETE, "", ""),
    ] {
        assert_eq!(h.get(IMG2, Some(ALICE)).await.status, StatusCode::OK);
        assert_eq!(h.get(IMG2, Some(ALICE)).await.x_cache(), "HIT");
        let before = h.sim.image_get_count(IMG2);
        let request = http::Request::builder()
            .method(method.clone())
            .uri(format!("http://{}{}{}", h.addr, image_path(IMG2), suffix))
            .header("authorization", format!("Bearer {ALICE}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let reply = h.send(request).await;
        assert_eq!(reply.header("x-cache"), None, "mutations are not Image.Get");
        assert_eq!(
            h.sim
                .count(method.as_str(), &format!("{}{}", image_path(IMG2), suffix)),
            1
        );
        let after = h.get(IMG2, Some(ALICE)).await;
        assert_ne!(after.x_cache(), "HIT", "{method} must invalidate");
        assert_eq!(h.sim.image_get_count(IMG2), before + 1);
        if method == Method::PATCH {
            assert_eq!(after.json()["description"], "patched");
        }
        if method == Method::DELETE {
            assert_eq!(after.status, StatusCode::NOT_FOUND);
            h.sim.put_image(baremetal_api_sim::Image::ready(
                IMG2,
                ALICE_FOLDER,
                "debian-12",
            ));
        }
    }
    h.stop().await;
}

/// A mutation of `id` through the proxy, with `token` (or none).
fn mutation(
    h: &Harness,
    method: Method,
    id: &str,
    suffix: &str,
    token: Option<&str>,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{}{}", h.addr, image_path(id), suffix))
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = r#"{"updateMask":"description","description":"vandalised"}"#;
    request
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap()
}

#[tokio::test]
async fn a_mutation_the_api_refused_invalidates_nothing() {
    let h = Harness::start().await;
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    for (method, suffix, token, status) in [
        (Method::DELETE, "", None, StatusCode::UNAUTHORIZED),
        (Method::PATCH, "", Some(FORGED), StatusCode::UNAUTHORIZED),
        (Method::PATCH, "", Some(BOB), StatusCode::FORBIDDEN),
        (Method::DELETE, "", Some(BOB), StatusCode::FORBIDDEN),
    ] {
        let reply = h
            .send(mutation(&h, method.clone(), IMG, suffix, token))
            .await;
        assert_eq!(reply.status, status, "{method}{suffix} {token:?}");
        assert_eq!(
            h.get(IMG, Some(ALICE)).await.x_cache(),
            "HIT",
            "a refused {method}{suffix} by {token:?} dropped the image"
        );
    }
    // A 404 to a token that cannot read the image may only mean "not for you".
    h.sim.set_hide_forbidden_as_not_found(true);
    let hidden = h
        .send(mutation(&h, Method::DELETE, IMG, "", Some(BOB)))
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    // A 404 to Alice, who could read it: the image is gone.
    h.sim.set_status(IMG, "DELETING");
    let gone = h.sim.image(IMG).unwrap();
    h.sim.put_image(baremetal_api_sim::Image {
        folder_id: ALICE_FOLDER.into(),
        ..gone
    });
    let delete = h
        .send(mutation(&h, Method::DELETE, IMG, "", Some(ALICE)))
        .await;
    assert!(delete.status.is_success(), "{}", delete.status);
    let again = h
        .send(mutation(&h, Method::DELETE, IMG, "", Some(ALICE)))
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(
        h.sim.image_get_count(IMG),
        1,
        "nothing was fetched meanwhile"
    );
    let after = h.get(IMG, Some(ALICE)).await;
    assert_eq!(after.status, StatusCode::NOT_FOUND);
    assert_eq!(after.x_cache(), "MISS");
    h.stop().await;
}

#[tokio::test]
async fn a_mutation_the_api_accepted_invalidates_even_a_readers_copy() {
    // Bob may write Alice's folder too (say, an operator's token); Alice's copy goes.
    let h = Harness::start().await;
    h.sim.add_token(BOB, &[ALICE_FOLDER]);
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    let patched = h
        .send(mutation(&h, Method::PATCH, IMG, "", Some(BOB)))
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    let after = h.get(IMG, Some(ALICE)).await;
    assert_eq!(after.x_cache(), "MISS");
    assert_eq!(after.json()["description"], "vandalised");
    h.stop().await;
}

#[tokio::test]
async fn only_headers_that_describe_the_body_are_replayed() {
    let h = std::sync::Arc::new(Harness::with_config(shared_config()).await);
    // What gateways and tracers add to one exchange's answer, and what describes the body.
    h.sim.set_extra_headers(&[
        ("x-client-request-id", "callers-a-request"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("server-timing", "db;dur=53"),
        ("www-authenticate", "Bearer realm=\"a\""),
        ("cache-control", "private"),
        ("set-cookie", "session=a"),
        ("x-gateway-node", "node-7"),
        ("etag", "\"v1\""),
        ("content-language", "en"),
    ]);
    let first = h.get(IMG, Some(ALICE)).await;
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(
        first.header("x-client-request-id"),
        Some("callers-a-request"),
        "the fetcher's own"
    );
    // (`date` is the proxy's own, as on every answer it sends.)
    let replayed: &[&str] = &[
        "date",
        "content-type",
        "content-language",
        "etag",
        "content-length",
        "age",
        "x-cache",
        "cache-status",
    ];
    let names = |reply: &Reply| {
        let mut names: Vec<String> = reply
            .headers
            .keys()
            .map(|k| k.as_str().to_string())
            .collect();
        names.sort();
        names
    };
    let mut expected: Vec<String> = replayed.iter().map(|n| n.to_string()).collect();
    expected.sort();
    let hit = h.get(IMG, Some(BOB)).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(names(&hit), expected);
    assert_eq!(hit.header("etag"), Some("\"v1\""));
    // A request that shared another's fetch gets the same, and no `age`. (The fetch is slow
    // enough for the waiter to join it even on a loaded machine.)
    h.sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_millis(1500)),
        None,
    );
    let leader = spawn_get(&h, IMG2, Some(ALICE));
    h.until_upstream_saw(2).await;
    let waiter = h.get(IMG2, Some(BOB)).await;
    assert!(waiter.header("cache-status").unwrap().contains("collapsed"));
    expected.retain(|n| n != "age");
    assert_eq!(names(&waiter), expected);
    assert_eq!(
        leader.await.unwrap().header("x-gateway-node"),
        Some("node-7")
    );
}

#[tokio::test]
async fn admin_purges_one_image_or_all() {
    let h = Harness::start().await;
    h.get(IMG, Some(ALICE)).await;
    h.get(IMG2, Some(ALICE)).await;
    let purged = h
        .admin(Method::DELETE, &format!("/cache/images/{IMG}"))
        .await;
    assert_eq!(purged.status, StatusCode::OK);
    assert_eq!(purged.json()["purged"], 1);
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(h.get(IMG2, Some(ALICE)).await.x_cache(), "HIT");

    let all = h.admin(Method::DELETE, "/cache").await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.json()["purged"], 2);
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(h.get(IMG2, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(h.sim.image_get_count(IMG), 3);
    assert_eq!(h.sim.image_get_count(IMG2), 2);

    let bad = h.admin(Method::DELETE, "/cache/images/NOT%2Fan-id").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["code"], 3);
    h.stop().await;
}

#[tokio::test]
async fn not_found_is_cached_only_with_a_negative_ttl() {
    let h = Harness::start().await;
    assert_eq!(
        h.get(MISSING, Some(ALICE)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(h.get(MISSING, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(h.sim.image_get_count(MISSING), 2);
    h.stop().await;

    let h = Harness::with_config(baremetal_image_cache::Config {
        negative_ttl: Duration::from_secs(30),
        ..test_config()
    })
    .await;
    let first = h.get(MISSING, Some(ALICE)).await;
    assert_eq!(first.status, StatusCode::NOT_FOUND);
    let second = h.get(MISSING, Some(ALICE)).await;
    assert_eq!(second.status, StatusCode::NOT_FOUND);
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.body, first.body);
    // Another credential is not told by the cache what the upstream told Alice.
    assert_eq!(h.get(MISSING, Some(BOB)).await.x_cache(), "MISS");
    assert_eq!(h.sim.image_get_count(MISSING), 2);
    h.stop().await;
}

#[tokio::test]
async fn a_404_drops_a_cached_image() {
    let h = Harness::start().await;
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    h.sim.set_fault(
        FaultScope::Image(IMG.into()),
        Fault::Status {
            status: 404,
            retry_after: None,
        },
        Some(1),
    );
    let not_found = h.get_fresh(IMG, Some(ALICE)).await;
    assert_eq!(not_found.status, StatusCode::NOT_FOUND);
    assert_eq!(not_found.json()["code"], 5);
    let after = h.get(IMG, Some(ALICE)).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.x_cache(), "MISS");
    assert_eq!(h.sim.image_get_count(IMG), 3);
    h.stop().await;
}

#[tokio::test]
async fn garbage_and_wrong_id_bodies_are_passed_on_but_not_cached() {
    let h = Harness::start().await;
    for fault in [Fault::Garbage, Fault::WrongId] {
        h.sim.reset_counts();
        h.sim
            .set_fault(FaultScope::Image(IMG.into()), fault.clone(), Some(1));
        let bad = h.get(IMG, Some(ALICE)).await;
        assert_eq!(
            bad.status,
            StatusCode::OK,
            "{fault:?}: the upstream's answer is relayed"
        );
        assert_eq!(bad.x_cache(), "MISS");
        assert!(!bad.header("cache-status").unwrap().contains("stored"));
        let next = h.get(IMG, Some(ALICE)).await;
        assert_eq!(next.x_cache(), "MISS", "{fault:?} must not be cached");
        assert_eq!(next.json(), expected_body(&h.sim, IMG));
        assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
        assert_eq!(h.sim.image_get_count(IMG), 2);
        h.admin(Method::DELETE, "/cache").await;
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_that_races_a_mutation_does_not_bring_the_old_image_back() {
    let h = std::sync::Arc::new(Harness::start().await);
    // The GET's body drips slowly, so the PATCH lands while the fill is still reading it.
    h.sim.set_fault(
        FaultScope::Image(IMG.into()),
        Fault::SlowDrip(Duration::from_millis(5)),
        Some(1),
    );
    let fill = spawn_get(&h, IMG, Some(ALICE));
    h.until_upstream_saw(1).await;
    let patch = http::Request::builder()
        .method(Method::PATCH)
        .uri(format!("http://{}{}", h.addr, image_path(IMG)))
        .header("authorization", format!("Bearer {ALICE}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            r#"{"updateMask":"name","name":"renamed"}"#,
        )))
        .unwrap();
    assert_eq!(h.send(patch).await.status, StatusCode::OK);
    let old = fill.await.unwrap();
    assert_eq!(
        old.json()["name"],
        "ubuntu-24-04",
        "the fill read the old image"
    );
    let next = h.get(IMG, Some(ALICE)).await;
    assert_eq!(next.x_cache(), "MISS", "the old image was not stored");
    assert_eq!(next.json()["name"], "renamed");
}

#[tokio::test]
async fn head_on_a_miss_has_the_content_length_of_the_get() {
    let h = Harness::start().await;
    let head = h
        .call(Method::HEAD, &image_path(IMG), Some(ALICE), &[])
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.x_cache(), "MISS");
    assert!(head.body.is_empty());
    let get = h.get(IMG, Some(ALICE)).await;
    assert_eq!(get.x_cache(), "HIT", "the HEAD miss filled the cache");
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
    assert_eq!(
        h.sim.count("GET", &image_path(IMG)),
        1,
        "a HEAD miss is fetched with GET"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_request_body_on_image_get_is_not_sent_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start().await;
    let mut stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        image_path(IMG)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer))
        .await
        .expect("answered without waiting for the upstream timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = h.sim.recorded();
    let fill = seen.last().unwrap();
    assert!(fill.body.is_empty());
    assert_eq!(fill.headers.get("content-length"), None);
    h.stop().await;
}

#[tokio::test]
async fn an_oversized_body_is_streamed_through_and_not_stored() {
    let h = Harness::with_config(baremetal_image_cache::Config {
        max_entry_size: 64 * 1024,
        ..test_config()
    })
    .await;
    h.sim.set_fault(
        FaultScope::Image(IMG.into()),
        Fault::HugeBody(1024 * 1024),
        None,
    );
    for _ in 0..2 {
        let big = h.get(IMG, Some(ALICE)).await;
        assert_eq!(big.status, StatusCode::OK);
        assert_eq!(big.body.len(), 1024 * 1024);
        assert_eq!(big.json()["id"], IMG);
        assert_eq!(big.x_cache(), "MISS");
        assert!(!big.header("cache-status").unwrap().contains("stored"));
    }
    assert_eq!(h.sim.image_get_count(IMG), 2);
    h.stop().await;
}

#[tokio::test]
async fn a_body_cut_off_mid_way_is_a_502_and_not_cached() {
    let h = Harness::start().await;
    h.sim
        .set_fault(FaultScope::Image(IMG.into()), Fault::ResetMidBody, Some(1));
    let cut = h.get(IMG, Some(ALICE)).await;
    assert_eq!(cut.status, StatusCode::BAD_GATEWAY);
    assert_eq!(cut.json()["code"], 14);
    let next = h.get(IMG, Some(ALICE)).await;
    assert_eq!(next.x_cache(), "MISS");
    assert_eq!(next.json(), expected_body(&h.sim, IMG));
    h.stop().await;
}

#[tokio::test]
async fn stale_is_served_when_the_upstream_drops_the_connection() {
    let (h, fresh) = with_an_expired_entry(Duration::from_secs(60)).await;
    h.sim.set_fault(FaultScope::All, Fault::Reset, None);
    let stale = h.get(IMG, Some(ALICE)).await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.x_cache(), "STALE");
    assert_eq!(stale.body, fresh.body);
    assert!(!stale.header("cache-status").unwrap().contains("fwd-status"));
    let stale_head = h
        .call(Method::HEAD, &image_path(IMG), Some(ALICE), &[])
        .await;
    assert_eq!(stale_head.x_cache(), "STALE");
    assert!(stale_head.body.is_empty());
    assert_eq!(
        stale_head.header("content-length"),
        Some(fresh.body.len().to_string().as_str())
    );
    // A client that insists on a fresh answer gets the failure instead.
    let insisting = h.get_fresh(IMG, Some(ALICE)).await;
    assert_eq!(insisting.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        h.get(IMG, Some(ALICE2)).await.status,
        StatusCode::BAD_GATEWAY
    );
    h.sim.clear_faults();
    h.stop().await;
}
