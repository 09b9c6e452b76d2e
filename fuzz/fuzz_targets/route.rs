//! http::router::route on any `METHOD path` request line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chatd::http::fuzz::route(data);
});
