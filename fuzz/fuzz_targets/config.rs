//! Configuration parsing never panics: any file text is either a valid Config or an error.
#![no_main]

use baremetal_image_cache::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = Config::from_toml(text) {
            assert!(config.validate().is_ok());
        }
    }
});
