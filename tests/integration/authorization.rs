//! Tenants never see each other's images through the cache: per-credential mode (default)
//! and shared mode.

use std::sync::Arc;
use std::time::Duration;

use baremetal_api_sim::{Fault, FaultScope};
use http::StatusCode;

use crate::support::*;

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

/// Moves `id` into Bob's folder at the API, so that from now on it refuses Alice (403).
fn hand_to_bob(h: &Harness, id: &str) {
    let mut moved = h.sim.image(id).unwrap();
    moved.folder_id = BOB_FOLDER.into();
    h.sim.put_image(moved);
}

#[tokio::test]
async fn a_refusal_ends_that_credentials_grant_at_once_hits_and_stale_alike() {
    let h = Harness::with_config(baremetal_image_cache::Config {
        ttl: Duration::from_secs(1),
        stale_if_error: Duration::from_secs(300),
        ..test_config()
    })
    .await;
    // 403: the API stops letting Alice read the image.
    assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
    hand_to_bob(&h, IMG);
    assert_eq!(
        h.get_fresh(IMG, Some(ALICE)).await.status,
        StatusCode::FORBIDDEN
    );
    let after = h.get(IMG, Some(ALICE)).await;
    assert_eq!(after.status, StatusCode::FORBIDDEN, "{:?}", after.body);
    assert_eq!(after.x_cache(), "MISS");

    // 401: Alice's second token expires; her first still reads the same entry.
    assert_eq!(h.get(IMG2, Some(ALICE)).await.x_cache(), "MISS");
    assert_eq!(h.get(IMG2, Some(ALICE2)).await.x_cache(), "MISS");
    h.sim.revoke_token(ALICE2);
    assert_eq!(
        h.get_fresh(IMG2, Some(ALICE2)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.get(IMG2, Some(ALICE2)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.get(IMG2, Some(ALICE)).await.x_cache(), "HIT");

    // Past the TTL, with the API failing: the refused token gets no stale copy, Alice does.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    h.sim.set_fault(
        FaultScope::All,
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        None,
    );
    let refused = h.get(IMG2, Some(ALICE2)).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_ne!(refused.x_cache(), "STALE");
    let alice = h.get(IMG2, Some(ALICE)).await;
    assert_eq!(alice.x_cache(), "STALE");
    assert_eq!(alice.status, StatusCode::OK);
    h.stop().await;
}

#[tokio::test]
async fn a_token_the_api_calls_invalid_on_any_route_loses_every_grant() {
    let h = Harness::start().await;
    for id in [IMG, IMG2] {
        assert_eq!(h.get(id, Some(ALICE2)).await.x_cache(), "MISS");
        assert_eq!(h.get(id, Some(ALICE2)).await.x_cache(), "HIT");
        assert_eq!(h.get(id, Some(ALICE)).await.x_cache(), "MISS");
    }
    h.sim.revoke_token(ALICE2);
    // A call that has nothing to do with the cache learns that the token is no good.
    let list = h
        .call(
            http::Method::GET,
            &format!("/baremetal/v1alpha/images?folderId={ALICE_FOLDER}"),
            Some(ALICE2),
            &[],
        )
        .await;
    assert_eq!(list.status, StatusCode::UNAUTHORIZED);
    for id in [IMG, IMG2] {
        let reply = h.get(id, Some(ALICE2)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{id}");
        assert_eq!(reply.x_cache(), "MISS");
        assert_eq!(h.get(id, Some(ALICE)).await.x_cache(), "HIT", "{id}");
    }
    // Refusals of a credential that was never granted anything end nobody's grants.
    for i in 0..200 {
        let forged = format!("t1.forged-{i}");
        let list = h
            .call(
                http::Method::GET,
                &format!("/baremetal/v1alpha/images?folderId={ALICE_FOLDER}"),
                Some(&forged),
                &[],
            )
            .await;
        assert_eq!(list.status, StatusCode::UNAUTHORIZED);
    }
    for id in [IMG, IMG2] {
        assert_eq!(h.get(id, Some(ALICE)).await.x_cache(), "HIT", "{id}");
    }
    h.stop().await;
}
