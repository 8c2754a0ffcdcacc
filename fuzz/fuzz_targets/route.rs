//! The router never panics, and only the exact Image.Get shape is ever cacheable.
#![no_main]

use baremetal_image_cache::route::{classify, is_valid_image_id, Route, IMAGES_PREFIX};
use http::Method;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let Ok(target) = std::str::from_utf8(rest) else { return };
    let method = match selector % 6 {
        0 => Method::GET,
        1 => Method::HEAD,
        2 => Method::POST,
        3 => Method::PATCH,
        4 => Method::DELETE,
        _ => Method::PUT,
    };
    match classify(&method, target) {
        Route::ImageGet { id, .. } => {
            assert!(method == Method::GET || method == Method::HEAD);
            assert_eq!(format!("{IMAGES_PREFIX}{id}"), target);
            assert!(is_valid_image_id(id));
        }
        Route::ImageMutation { id } => assert!(is_valid_image_id(&id)),
        Route::Passthrough => {}
    }
});
