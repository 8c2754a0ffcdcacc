//! Property tests against the running proxy: for arbitrary request targets and headers it
//! always answers, never serves a cached body to anything but the exact Image.Get shape, and
//! never forwards a hop-by-hop header.

use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use crate::support::*;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// One proxy for all cases, with Alice's image already cached.
fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        runtime().block_on(async {
            let h = Harness::with_config(test_config()).await;
            assert_eq!(h.get(IMG, Some(ALICE)).await.x_cache(), "MISS");
            h
        })
    })
}

fn target() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        3 => Just(format!("/baremetal/v1alpha/images/{IMG}")),
        2 => Just("/baremetal/v1alpha/images/".to_string()),
        1 => Just("/baremetal/v1alpha/".to_string()),
        1 => Just("/".to_string()),
    ];
    // Visible ASCII that may appear in a request target, escapes and separators included.
    let tail = prop::collection::vec(
        prop_oneof![
            Just("%2F".to_string()),
            Just("%6c".to_string()),
            Just("/".to_string()),
            Just("..".to_string()),
            Just("?".to_string()),
            Just("/operations".to_string()),
            "[A-Za-z0-9._~!$&'()*+,;=:@%-]{1,8}",
        ],
        0..4,
    );
    (prefix, tail).prop_map(|(p, t)| p + &t.concat())
}

const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "te",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "trailer",
];

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        prop::sample::select(HOP_BY_HOP).prop_map(str::to_string),
        "x-hop-[a-z]{1,6}",
        "x-keep-[a-z]{1,6}",
    ];
    prop::collection::vec((name, "[a-zA-Z0-9 ._-]{0,20}"), 0..6)
}

proptest! {
    #![proptest_config(proptest_config(300))]

    #[test]
    fn the_proxy_always_answers_never_leaks_the_cache_and_drops_hop_headers(
        target in target(),
        extra in headers(),
    ) {
        let h = harness();
        let exact = target == image_path(IMG);
        let (status_line, x_cache, forwarded) = runtime().block_on(async {
            let hop_named: Vec<&str> = extra
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| n.starts_with("x-hop-"))
                .collect();
            let mut request = format!("GET {target} HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {ALICE}\r\n");
            for (name, value) in &extra {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
            request.push_str(&format!("Connection: close, {}\r\n\r\n", hop_named.join(", ")));
            let before = h.sim.recorded().len();
            let mut stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
                .await
                .expect("answered")
                .unwrap();
            let answer = String::from_utf8_lossy(&answer).into_owned();
            let status_line = answer.lines().next().unwrap_or("").to_string();
            let x_cache = answer
                .lines()
                .find_map(|l| l.strip_prefix("x-cache: "))
                .map(str::to_string);
            let recorded = h.sim.recorded();
            let forwarded = recorded.get(before..).and_then(|new| new.last().cloned());
            (status_line, x_cache, forwarded)
        });
        prop_assert!(status_line.starts_with("HTTP/1.1 "), "no answer: {status_line:?}");
        let image_get = regex::Regex::new(r"^/baremetal/v1alpha/images/[a-z][a-z0-9]{0,63}$")
            .unwrap()
            .is_match(&target);
        if exact {
            prop_assert_eq!(x_cache.as_deref(), Some("HIT"));
        } else if image_get {
            // Another ID of the right shape: none of them exists, and 404s are not cached.
            prop_assert!(x_cache.is_some() && x_cache.as_deref() != Some("HIT"), "{}", target);
        } else {
            prop_assert_eq!(x_cache, None, "{} is not Image.Get", target);
        }
        if let Some(seen) = forwarded {
            for name in HOP_BY_HOP.iter().copied().chain(["connection"]) {
                prop_assert!(seen.headers.get(name).is_none(), "{} was forwarded", name);
            }
            for (name, _) in &extra {
                if name.starts_with("x-hop-") {
                    prop_assert!(seen.headers.get(name.as_str()).is_none(), "{} was forwarded", name);
                }
                // Pass-through forwards end-to-end headers; an Image.Get fill sends only its
                // allow-list.
                if name.starts_with("x-keep-") && !image_get {
                    prop_assert!(seen.headers.get(name.as_str()).is_some(), "{} was dropped", name);
                }
            }
        }
    }
}
