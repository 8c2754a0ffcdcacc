//! Tenants never see each other's images through the cache: per-credential mode (default)
//! and shared mode.

mod common;

use std::sync::Arc;
use std::time::Duration;

use baremetal_image_cache::sim::{Fault, FaultScope};
use common::*;
use http::StatusCode;

#[tokio::test]
async fn each_credential_gets_what_the_upstream_would_give_it() {
    let h = Harness::start().await;
    let alice = h.get(IMG, Some(ALICE)).await;
    assert_eq!(alice.status, StatusCode::OK);
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");

    let bob = h.get(IMG, Some(BOB)).await;
    assert_eq!(bob.status, StatusCode::FORBIDDEN);
    assert_eq!(bob.json()["code"], 7);
    assert_ne!(bob.body, alice.body);

    let nobody = h.get(IMG, None).await;
    assert_eq!(nobody.status, StatusCode::UNAUTHORIZED);
    assert_eq!(nobody.x_cache(), "BYPASS");
    assert_eq!(nobody.json()["code"], 16);

    let forged = h.get(IMG, Some(FORGED)).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert_ne!(forged.body, alice.body);

    // A token that differs from Alice's by one character is another credential.
    let almost = format!("{ALICE}x");
    assert_eq!(
        h.get(IMG, Some(&almost)).await.status,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(
        h.sim.image_get_count(IMG),
        5,
        "everyone but Alice's second call went upstream"
    );
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    h.stop().await;
}

#[tokio::test]
async fn a_second_credential_is_checked_upstream_before_it_is_served() {
    let h = Harness::start().await;
    h.get(IMG, Some(ALICE)).await;
    let second = h.get(IMG, Some(ALICE2)).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.x_cache(), "MISS");
    assert_eq!(h.get(IMG, Some(ALICE2)).await.x_cache(), "HIT");
    // Both grants survive the second fetch.
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "HIT");
    assert_eq!(h.sim.image_get_count(IMG), 2);
    h.stop().await;
}

#[tokio::test]
async fn a_credential_that_loses_access_is_refused_once_its_grant_runs_out() {
    let h = Harness::with_config(baremetal_image_cache::Config {
        ttl: Duration::from_secs(1),
        stale_if_error: Duration::ZERO,
        ..test_config()
    })
    .await;
    h.get(IMG, Some(ALICE)).await;
    // Alice loses access upstream (the image now lives in Bob's folder).
    let mut moved = h.sim.image(IMG).unwrap();
    moved.folder_id = BOB_FOLDER.into();
    h.sim.put_image(moved);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(h.get(IMG, Some(ALICE)).await.status, StatusCode::FORBIDDEN);
    h.stop().await;
}

#[tokio::test]
async fn shared_mode_serves_one_entry_to_any_caller() {
    let h = Harness::with_config(shared_config()).await;
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    for token in [Some(ALICE2), Some(BOB), None] {
        let reply = h.get(IMG, token).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.x_cache(), "HIT");
    }
    assert_eq!(h.sim.image_get_count(IMG), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mode_keeps_a_refusal_to_its_own_credential() {
    let h = Arc::new(Harness::with_config(shared_config()).await);
    h.sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_millis(600)),
        Some(1),
    );
    // Bob (refused) leads the flight; Alice joins it while it runs.
    let bob = spawn_get(&h, IMG, Some(BOB));
    h.until_upstream_saw(1).await;
    let alice = h.get(IMG, Some(ALICE)).await;
    assert_eq!(bob.await.unwrap().status, StatusCode::FORBIDDEN);
    assert_eq!(alice.status, StatusCode::OK, "Alice must not get Bob's 403");
    assert_eq!(h.sim.image_get_count(IMG), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mode_never_hands_a_caller_anothers_refusal_even_after_many_rounds() {
    let h = Arc::new(Harness::with_config(shared_config()).await);
    h.sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_millis(300)),
        None,
    );
    let mut forged = Vec::new();
    for i in 0..60 {
        let h = h.clone();
        forged.push(tokio::spawn(async move {
            h.get(IMG, Some(&format!("t1.forged-{i}"))).await
        }));
    }
    h.until_upstream_saw(1).await;
    let alice = h.get(IMG, Some(ALICE)).await;
    assert_eq!(alice.status, StatusCode::OK, "{:?}", alice.body);
    assert_eq!(alice.json()["id"], IMG);
    for task in forged {
        // Their own refusal, or — once Alice's answer is in — the one shared entry, which
        // shared mode serves to anyone.
        let reply = task.await.unwrap();
        match reply.status {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::OK => assert_eq!(reply.json()["id"], IMG),
            other => panic!("unexpected {other}"),
        }
    }
}

#[tokio::test]
async fn a_cached_404_belongs_to_its_credential_even_in_shared_mode() {
    let h = Harness::with_config(baremetal_image_cache::Config {
        negative_ttl: Duration::from_secs(30),
        ..shared_config()
    })
    .await;
    // The upstream hides images of other folders behind a 404.
    h.sim.set_hide_forbidden_as_not_found(true);
    assert_eq!(h.get(IMG, Some(BOB)).await.status, StatusCode::NOT_FOUND);
    let bob_again = h.get(IMG, Some(BOB)).await;
    assert_eq!(bob_again.status, StatusCode::NOT_FOUND);
    assert_eq!(bob_again.x_cache(), "HIT");
    let alice = h.get(IMG, Some(ALICE)).await;
    assert_eq!(alice.status, StatusCode::OK, "Bob's 404 is not Alice's");
    assert_eq!(alice.x_cache(), "MISS");
    assert_eq!(
        h.get(IMG, None).await.x_cache(),
        "HIT",
        "the READY image is shared"
    );
    h.stop().await;
}

#[tokio::test]
async fn another_tenants_404_does_not_evict_an_image() {
    let h = Harness::with_config(baremetal_image_cache::Config {
        negative_ttl: Duration::from_secs(30),
        ..test_config()
    })
    .await;
    h.sim.set_hide_forbidden_as_not_found(true);
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(
        h.get(BOB_IMG, Some(ALICE)).await.status,
        StatusCode::NOT_FOUND
    );
    for _ in 0..2 {
        assert_eq!(h.get(IMG, Some(BOB)).await.status, StatusCode::NOT_FOUND);
    }
    let alice = h.get(IMG, Some(ALICE)).await;
    assert_eq!(alice.status, StatusCode::OK);
    assert_eq!(
        alice.x_cache(),
        "HIT",
        "Bob's 404s neither evicted nor replaced it"
    );
    h.stop().await;
}
