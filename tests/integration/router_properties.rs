//! Property tests for the router: nothing but the exact Image.Get shape is ever cacheable.

use baremetal_image_cache::route::{classify, is_valid_image_id, Route, IMAGES_PREFIX};
use http::Method;
use proptest::prelude::*;

use crate::support::proptest_config;

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::HEAD),
        Just(Method::POST),
        Just(Method::PATCH),
        Just(Method::DELETE),
        Just(Method::PUT),
        Just(Method::OPTIONS),
    ]
}

/// Targets built from pieces that make look-alikes likely.
fn target() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        Just(IMAGES_PREFIX.to_string()),
        Just("/baremetal/v1alpha/images".to_string()),
        Just("/baremetal/v1alpha//images/".to_string()),
        Just("/baremetal/V1alpha/images/".to_string()),
        Just("/baremetal/v1alpha/standardImages/".to_string()),
        Just("".to_string()),
    ];
    let piece = prop_oneof![
        "[a-z][a-z0-9]{0,70}",
        "[A-Za-z0-9%/.?:=&_-]{0,30}",
        Just("%6c".to_string()),
        Just("%2F".to_string()),
        Just("/".to_string()),
        Just("..".to_string()),
        Just("?".to_string()),
        Just("/operations".to_string()),
    ];
    (prefix, prop::collection::vec(piece, 0..4)).prop_map(|(p, pieces)| p + &pieces.concat())
}

/// The cacheable shape, written independently of the router.
fn cacheable() -> regex::Regex {
    regex::Regex::new(r"^/baremetal/v1alpha/images/[a-z][a-z0-9]{0,63}$").unwrap()
}

proptest! {
    #![proptest_config(proptest_config(5000))]

    #[test]
    fn only_the_exact_shape_is_cacheable(method in method(), target in target()) {
        let get_like = method == Method::GET || method == Method::HEAD;
        let route = classify(&method, &target);
        prop_assert_eq!(
            matches!(route, Route::ImageGet { .. }),
            get_like && cacheable().is_match(&target),
            "{} {}", method, target
        );
        if let Route::ImageGet { id, head } = route {
            prop_assert!(method == Method::GET || method == Method::HEAD);
            prop_assert_eq!(head, method == Method::HEAD);
            prop_assert_eq!(format!("{IMAGES_PREFIX}{id}"), target.clone());
            prop_assert!(is_valid_image_id(id));
            prop_assert!(id.len() <= 64);
            prop_assert!(!target.contains('?') && !target.contains('%'));
        }
    }

    #[test]
    fn every_valid_id_is_cacheable(id in "[a-z][a-z0-9]{0,63}") {
        let target = format!("{IMAGES_PREFIX}{id}");
        prop_assert_eq!(classify(&Method::GET, &target), Route::ImageGet { id: &id, head: false });
    }

    #[test]
    fn arbitrary_bytes_never_panic(method in method(), target in ".{0,200}") {
        let _ = classify(&method, &target);
    }
}
