//! sanitize_file_name on any UTF-8 string.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chatd::attach::fuzz::file_name(data);
});
