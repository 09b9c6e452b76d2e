//! static_files::resolve on any raw request path.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chatd::http::static_files::fuzz_static_path(data);
});
