//! Micro-benchmarks of the pieces of a cache hit: routing the raw target, fingerprinting the
//! credential, and looking the entry up. `cargo bench --bench hit_path`.

use std::time::{Duration, Instant};

use baremetal_image_cache::auth::CredentialHasher;
use baremetal_image_cache::cache::{EntryKind, ImageCache, Lookup, NewEntry};
use baremetal_image_cache::config::{AuthMode, Config};
use baremetal_image_cache::route::classify;
use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

const TARGET: &str = "/baremetal/v1alpha/images/ly5alice0ready000001";

/// An IAM token of the real shape and length (about 280 bytes).
fn iam_token() -> HeaderValue {
    let token = format!("Bearer t1.{}.{}", "A".repeat(180), "b".repeat(86));
    HeaderValue::from_str(&token).expect("ASCII")
}

fn router(c: &mut Criterion) {
    c.bench_function("route/image_get", |b| {
        b.iter(|| classify(black_box(&Method::GET), black_box(TARGET)))
    });
    c.bench_function("route/look_alike", |b| {
        b.iter(|| {
            classify(
                black_box(&Method::GET),
                black_box("/baremetal/v1alpha/images/ly5alice0ready000001/"),
            )
        })
    });
}

fn credential(c: &mut Criterion) {
    let hasher = CredentialHasher::new_random().expect("randomness");
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, iam_token());
    c.bench_function("auth/fingerprint_iam_token", |b| {
        b.iter(|| hasher.fingerprint(black_box(&headers)))
    });
    // What an HMAC-SHA256 of the same token would cost, for comparison.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7u8; 32]);
    let token = iam_token();
    c.bench_function("auth/hmac_sha256_reference", |b| {
        b.iter(|| ring::hmac::sign(&key, black_box(token.as_bytes())))
    });
}

fn cache_lookup(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = Config {
        ttl: Duration::from_secs(3600),
        auth_mode: AuthMode::PerCredential,
        ..Config::default()
    };
    let cache = ImageCache::new(&config, |_| {});
    let hasher = CredentialHasher::new_random().expect("randomness");
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, iam_token());
    let who = hasher.fingerprint(&headers);
    let body = Bytes::from(vec![b'x'; 220]);
    runtime.block_on(async {
        for n in 0..10_000 {
            let id = format!("ly5bench{n:012}");
            let entry = NewEntry {
                kind: EntryKind::Ready,
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: body.clone(),
                received_at: Instant::now(),
            };
            cache.store(&id, entry, who, cache.generation(&id)).await;
        }
    });
    c.bench_function("cache/lookup_hit_per_credential", |b| {
        b.to_async(&runtime).iter(|| async {
            let found = cache
                .lookup(black_box("ly5bench000000000042"), who, Instant::now())
                .await;
            assert!(matches!(found, Lookup::Fresh(_)));
        })
    });
}

criterion_group!(benches, router, credential, cache_lookup);
criterion_main!(benches);
